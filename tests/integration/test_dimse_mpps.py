"""MPPS N-CREATE / N-SET / N-GET over real associations, with the exact statuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pynetdicom import evt
from pynetdicom.association import Association

from gateway.backends.base import MppsResult
from gateway.backends.local import LocalBackend
from gateway.dimse.association import MPPS, MPPS_RETRIEVE
from gateway.model.dicom_json import json_to_dataset
from gateway.model.status import DimseStatus, ErrorId
from gateway.model.types import JsonDataset
from gateway.model.uids import is_valid_uid
from tests.integration import dimse_fixtures as fx
from tests.integration.dimse_fixtures import DelegatingBackend, DimseHarness
from tests.unit import mpps_examples as ex

dimse = fx.dimse
dimse_factory = fx.dimse_factory

S = DimseStatus
Factory = Callable[..., DimseHarness]
UID = ex.MPPS_UID
PPS_STATUS = Tag(0x00400252)
PATIENT_NAME = Tag(0x00100010)
PERFORMED_SERIES = 0x00400340


def _create_attributes() -> JsonDataset:
    attributes = ex.minimal_create()
    # Performed Location is SH (16 characters at most); the example's longer value makes
    # pydicom warn on read, which this test suite turns into an error.
    attributes["00400243"] = ex.attr("SH", "CT ROOM 1")
    return attributes


def _ds(attributes: JsonDataset) -> Dataset:
    return json_to_dataset(attributes)


def _create(assoc: Association, uid: str | None = UID, **changes: Any) -> Dataset:
    attributes = _create_attributes()
    attributes.update(changes)
    status, _ = assoc.send_n_create(_ds(attributes), MPPS, uid)
    return status


def _set(assoc: Association, changes: JsonDataset, uid: str = UID) -> Dataset:
    status, _ = assoc.send_n_set(_ds(changes), MPPS, uid)
    return status


def test_full_mpps_lifecycle(dimse: DimseHarness) -> None:
    assoc = dimse.associate(calling_ae="CTSCANNER")
    try:
        assert _create(assoc).Status == S.SUCCESS
        assert _set(assoc, ex.series_update()).Status == S.SUCCESS
        assert _set(assoc, ex.completed_update()).Status == S.SUCCESS
        refused = _set(assoc, ex.series_update())
        status, final = assoc.send_n_get([], MPPS_RETRIEVE, UID)
    finally:
        assoc.release()
    assert refused.Status == S.PROCESSING_FAILURE
    assert refused.ErrorID == ErrorId.MPPS_MAY_NO_LONGER_BE_UPDATED
    assert refused.ErrorComment == "Performed Procedure Step Object may no longer be updated"
    assert status.Status == S.SUCCESS
    assert final is not None
    assert final.PerformedProcedureStepStatus == "COMPLETED"
    assert final.PerformedProcedureStepEndTime == "1300"
    (series,) = final.PerformedSeriesSequence
    assert series.SeriesInstanceUID == ex.SERIES_UID
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ex.IMAGE_UID
    # What the other front's Retrieve reads: the same final state in the store.
    stored = dimse.portal.call(dimse.backend.retrieve_mpps, UID, [PPS_STATUS])
    assert stored.dataset["00400252"]["Value"] == ["COMPLETED"]


def test_n_get_honours_the_attribute_identifier_list(dimse: DimseHarness) -> None:
    assoc = dimse.associate()
    try:
        assert _create(assoc).Status == S.SUCCESS
        status, found = assoc.send_n_get([PPS_STATUS, PATIENT_NAME], MPPS_RETRIEVE, UID)
        # Comments on the PPS (0040,0280) were never created: a warning, values still sent.
        warn, partial = assoc.send_n_get([PPS_STATUS, Tag(0x00400280)], MPPS_RETRIEVE, UID)
    finally:
        assoc.release()
    assert status.Status == S.SUCCESS
    assert found is not None
    assert [elem.keyword for elem in found] == ["PatientName", "PerformedProcedureStepStatus"]
    assert warn.Status == S.ATTRIBUTE_NOT_SUPPORTED_WARNING
    assert partial is not None
    assert [elem.keyword for elem in partial] == ["PerformedProcedureStepStatus"]


def test_n_create_without_uid_generates_and_returns_one(dimse: DimseHarness) -> None:
    commands: list[Dataset] = []

    def on_recv(event: evt.Event) -> None:
        commands.append(event.message.command_set)

    assoc = dimse.associate(evt_handlers=[(evt.EVT_DIMSE_RECV, on_recv)])
    try:
        status = _create(assoc, uid=None)
        generated = str(commands[-1].AffectedSOPInstanceUID)
        got, found = assoc.send_n_get([PPS_STATUS], MPPS_RETRIEVE, generated)
    finally:
        assoc.release()
    assert status.Status == S.SUCCESS
    assert is_valid_uid(generated)
    assert got.Status == S.SUCCESS
    assert found is not None
    assert found.PerformedProcedureStepStatus == "IN PROGRESS"


def test_n_create_statuses(dimse: DimseHarness) -> None:
    missing = _create_attributes()
    del missing["00400244"]  # Performed Procedure Step Start Date, 1/1
    assoc = dimse.associate()
    try:
        first = _create(assoc)
        duplicate = _create(assoc)
        not_in_progress = _create(assoc, "1.2.3.1", **{"00400252": ex.attr("CS", "COMPLETED")})
        missing_attr, _ = assoc.send_n_create(_ds(missing), MPPS, "1.2.3.2")
        empty_type1 = _create(assoc, "1.2.3.3", **{"00400253": ex.attr("SH")})
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):  # pydicom, SCU side
            bad_uid = _create(assoc, "1.2.03.4")
        assert assoc.send_c_echo().Status == S.SUCCESS
    finally:
        assoc.release()
    assert first.Status == S.SUCCESS
    assert duplicate.Status == S.DUPLICATE_SOP_INSTANCE
    assert not_in_progress.Status == S.INVALID_ATTRIBUTE_VALUE
    assert missing_attr.Status == S.MISSING_ATTRIBUTE
    assert "PerformedProcedureStepStartDate" in missing_attr.ErrorComment
    assert empty_type1.Status == S.MISSING_ATTRIBUTE_VALUE
    assert bad_uid.Status == S.INVALID_SOP_INSTANCE
    for failure in (duplicate, not_in_progress, missing_attr, empty_type1, bad_uid):
        assert failure.ErrorComment


def test_n_set_and_n_get_statuses(dimse: DimseHarness) -> None:
    assoc = dimse.associate()
    try:
        assert _create(assoc).Status == S.SUCCESS
        unknown = _set(assoc, ex.series_update(), uid="1.2.3.999")
        not_allowed = _set(assoc, {"00100010": ex.pn("OTHER^NAME")})
        bad_status = _set(assoc, {"00400252": ex.attr("CS", "PAUSED")})
        get_unknown, nothing = assoc.send_n_get([], MPPS_RETRIEVE, "1.2.3.999")
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):  # pydicom, SCU side
            get_bad_uid, _ = assoc.send_n_get([], MPPS_RETRIEVE, "1..2")
    finally:
        assoc.release()
    assert unknown.Status == S.NO_SUCH_SOP_INSTANCE
    assert not_allowed.Status == S.NO_SUCH_ATTRIBUTE
    assert _tags(not_allowed.AttributeIdentifierList) == [0x00100010]
    assert bad_status.Status == S.INVALID_ATTRIBUTE_VALUE
    assert get_unknown.Status == S.NO_SUCH_SOP_INSTANCE
    assert nothing is None
    assert get_bad_uid.Status == S.INVALID_SOP_INSTANCE


def _tags(value: Any) -> list[int]:
    """An AT element's value as a list (pydicom gives a single tag as a plain int)."""
    return [int(tag) for tag in value] if isinstance(value, MultiValue | list) else [int(value)]


def test_n_get_answers_in_the_stored_character_set(dimse: DimseHarness) -> None:
    attributes = _create_attributes()
    attributes["00080005"] = ex.attr("CS", "ISO_IR 100")
    attributes["00100010"] = ex.pn("Müller^Jörg")
    assoc = dimse.associate()
    try:
        created, _ = assoc.send_n_create(_ds(attributes), MPPS, UID)
        status, found = assoc.send_n_get([PATIENT_NAME], MPPS_RETRIEVE, UID)
    finally:
        assoc.release()
    assert (created.Status, status.Status) == (S.SUCCESS, S.SUCCESS)
    assert found is not None
    assert found.SpecificCharacterSet == "ISO_IR 100"
    assert str(found.PatientName) == "Müller^Jörg"


class _Faulty(DelegatingBackend):
    """Creates fail unexpectedly, updates succeed with a warning, retrieves stall."""

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        raise RuntimeError("a bug")

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        return MppsResult(changes, warnings=("value coerced",))

    async def retrieve_mpps(self, uid: str, tags: Any = None) -> MppsResult:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


def test_backend_faults_map_to_statuses_and_keep_the_association(dimse_factory: Factory) -> None:
    def wrap(inner: LocalBackend) -> _Faulty:
        return _Faulty(inner)

    harness = dimse_factory(wrap=wrap, operation_timeout_s=0.5)
    assoc = harness.associate()
    try:
        crashed = _create(assoc)
        warned = _set(assoc, ex.series_update())
        timed_out, _ = assoc.send_n_get([], MPPS_RETRIEVE, UID)
        assert assoc.send_c_echo().Status == S.SUCCESS
    finally:
        assoc.release()
    assert crashed.Status == S.PROCESSING_FAILURE
    assert crashed.ErrorComment
    assert warned.Status == S.ATTRIBUTE_VALUE_OUT_OF_RANGE
    assert warned.ErrorComment == "value coerced"
    assert timed_out.Status == S.RESOURCE_LIMITATION


def test_a_create_that_times_out_reports_outcome_unknown(dimse_factory: Factory) -> None:
    class _Slow(DelegatingBackend):
        async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    harness = dimse_factory(wrap=_Slow, operation_timeout_s=0.5)
    assoc = harness.associate()
    try:
        status = _create(assoc)
    finally:
        assoc.release()
    assert status.Status == S.PROCESSING_FAILURE
    assert "outcome unknown" in status.ErrorComment


@pytest.mark.parametrize("uid", [UID, None])
def test_generated_uid_is_only_returned_on_success(dimse: DimseHarness, uid: str | None) -> None:
    commands: list[Dataset] = []

    def on_recv(event: evt.Event) -> None:
        commands.append(event.message.command_set)

    assoc = dimse.associate(evt_handlers=[(evt.EVT_DIMSE_RECV, on_recv)])
    try:
        status = _create(assoc, uid, **{"00400252": ex.attr("CS", "COMPLETED")})
    finally:
        assoc.release()
    assert status.Status == S.INVALID_ATTRIBUTE_VALUE
    returned = commands[-1].get("AffectedSOPInstanceUID")
    assert returned == uid  # echoed when sent, never invented for a failed create
