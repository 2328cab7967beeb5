"""Contract: MPPS create / update / retrieve and the error kinds, for every backend."""

from __future__ import annotations

import pytest

from gateway.backends.base import Backend
from gateway.errors import ErrorKind, GatewayError
from tests.contract.conftest import Harness
from tests.unit.mpps_examples import (
    MPPS_UID,
    attr,
    completed_update,
    discontinued_update,
    minimal_create,
    series_update,
)

STATUS = "00400252"
SOP_INSTANCE_UID = "00080018"
SOP_CLASS_UID = "00080016"
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
OTHER_UID = "1.2.826.0.1.3680043.10.2.77"


async def _kind_of(coro: object) -> ErrorKind:
    with pytest.raises(GatewayError) as caught:
        await coro  # type: ignore[misc]
    return caught.value.kind


async def test_create_returns_and_keeps_the_instance(backend: Backend) -> None:
    created = await backend.create_mpps(MPPS_UID, minimal_create())
    assert created.dataset[STATUS]["Value"] == ["IN PROGRESS"]
    assert created.dataset[SOP_INSTANCE_UID]["Value"] == [MPPS_UID]
    assert created.dataset[SOP_CLASS_UID]["Value"] == [MPPS_SOP_CLASS]
    retrieved = await backend.retrieve_mpps(MPPS_UID)
    assert retrieved.dataset == created.dataset
    assert retrieved.warnings == ()


async def test_update_then_complete(backend: Backend) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    updated = await backend.update_mpps(MPPS_UID, series_update())
    assert updated.dataset["00400340"] == series_update()["00400340"]
    assert updated.dataset[STATUS]["Value"] == ["IN PROGRESS"]
    done = await backend.update_mpps(MPPS_UID, completed_update())
    assert done.dataset[STATUS]["Value"] == ["COMPLETED"]
    assert done.dataset["00400250"]["Value"] == ["20250101"]
    assert (await backend.retrieve_mpps(MPPS_UID)).dataset == done.dataset


async def test_discontinue(backend: Backend) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    done = await backend.update_mpps(MPPS_UID, discontinued_update())
    assert done.dataset[STATUS]["Value"] == ["DISCONTINUED"]


async def test_final_instance_refuses_updates(backend: Backend) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    await backend.update_mpps(MPPS_UID, completed_update())
    kind = await _kind_of(backend.update_mpps(MPPS_UID, series_update()))
    assert kind is ErrorKind.FINAL_STATE
    assert (await backend.retrieve_mpps(MPPS_UID)).dataset[STATUS]["Value"] == ["COMPLETED"]


async def test_retrieve_selected_attributes_warns_about_absent_ones(backend: Backend) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    result = await backend.retrieve_mpps(MPPS_UID, [0x00400252, 0x00100020, 0x00400280])
    assert set(result.dataset) == {STATUS, "00100020"}
    assert len(result.warnings) == 1
    assert "0040,0280" in result.warnings[0]


async def test_duplicate_create_is_refused(backend: Backend) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    kind = await _kind_of(backend.create_mpps(MPPS_UID, minimal_create()))
    assert kind is ErrorKind.DUPLICATE_INSTANCE


async def test_unknown_instance(backend: Backend) -> None:
    assert await _kind_of(backend.retrieve_mpps(OTHER_UID)) is ErrorKind.NO_SUCH_INSTANCE
    kind = await _kind_of(backend.update_mpps(OTHER_UID, series_update()))
    assert kind is ErrorKind.NO_SUCH_INSTANCE


async def test_invalid_uid(backend: Backend) -> None:
    kind = await _kind_of(backend.create_mpps("1.02.3", minimal_create()))
    assert kind is ErrorKind.INVALID_INSTANCE_UID


async def test_create_must_be_in_progress(backend: Backend) -> None:
    attributes = minimal_create()
    attributes[STATUS] = attr("CS", "COMPLETED")
    kind = await _kind_of(backend.create_mpps(MPPS_UID, attributes))
    assert kind is ErrorKind.INVALID_ATTRIBUTE_VALUE
    assert await _kind_of(backend.retrieve_mpps(MPPS_UID)) is ErrorKind.NO_SUCH_INSTANCE


async def test_create_missing_attribute(backend: Backend) -> None:
    attributes = minimal_create()
    del attributes["00400253"]  # Performed Procedure Step ID, 1/1
    kind = await _kind_of(backend.create_mpps(MPPS_UID, attributes))
    assert kind is ErrorKind.MISSING_ATTRIBUTE


async def test_update_with_not_allowed_attribute_changes_nothing(backend: Backend) -> None:
    created = await backend.create_mpps(MPPS_UID, minimal_create())
    kind = await _kind_of(backend.update_mpps(MPPS_UID, {"00100020": attr("LO", "OTHER")}))
    assert kind is ErrorKind.NOT_ALLOWED_ATTRIBUTE
    assert (await backend.retrieve_mpps(MPPS_UID)).dataset == created.dataset


async def test_deleted_instance_is_gone(harness: Harness) -> None:
    if harness.delete_mpps is None:
        pytest.skip("this backend cannot delete MPPS instances")
    backend = harness.backend
    await backend.create_mpps(MPPS_UID, minimal_create())
    await harness.delete_mpps(MPPS_UID)
    assert await _kind_of(backend.retrieve_mpps(MPPS_UID)) is ErrorKind.INSTANCE_GONE
    kind = await _kind_of(backend.update_mpps(MPPS_UID, series_update()))
    assert kind is ErrorKind.INSTANCE_GONE
    kind = await _kind_of(backend.create_mpps(MPPS_UID, minimal_create()))
    assert kind is ErrorKind.DUPLICATE_INSTANCE
