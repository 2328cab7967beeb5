"""MPPS rules of PS3.4 Annex F, Table F.7.2-1: create, update, final state.

Pure functions over DICOM JSON datasets; violations raise the typed errors of
:mod:`gateway.errors` carrying the offending tags, so every backend and front gives the
same verdict.
"""

from __future__ import annotations

import enum

from gateway.model.types import JsonDataset

MPPS_SOP_CLASS_UID = "1.2.840.10008.3.1.2.3.3"
MPPS_RETRIEVE_SOP_CLASS_UID = "1.2.840.10008.3.1.2.3.4"


class PpsStatus(enum.Enum):
    """Performed Procedure Step Status (0040,0252)."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


def validate_create(uid: str, attributes: JsonDataset) -> JsonDataset:
    """Check an N-CREATE / Create and return the dataset to store (with SOP UIDs)."""
    raise NotImplementedError


def apply_update(stored: JsonDataset, changes: JsonDataset) -> JsonDataset:
    """Check an N-SET / Update against the stored MPPS and return the new stored dataset."""
    raise NotImplementedError


def status_of(mpps: JsonDataset) -> PpsStatus | None:
    """The Performed Procedure Step Status of a stored MPPS, if valid."""
    raise NotImplementedError
