"""The DICOMweb front: PS3.18 ch. 14/15 origin server (MWL Search, MPPS Create/Update/Retrieve)."""

from gateway.web.app import create_web_app, make_runner, start_site

__all__ = ["create_web_app", "make_runner", "start_site"]
