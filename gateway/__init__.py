"""modality-gateway: Modality Worklist and MPPS between DIMSE and DICOMweb."""

__version__ = "0.1.0"
