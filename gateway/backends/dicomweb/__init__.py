"""The ``dicomweb`` backend: an upstream DICOMweb origin server (PS3.18 ch. 14/15)."""

from gateway.backends.dicomweb.backend import DicomwebBackend

__all__ = ["DicomwebBackend"]
