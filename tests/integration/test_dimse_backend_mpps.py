"""The ``dimse`` backend's MPPS against a pynetdicom MPPS SCP: lifecycle, mirror, retrieve."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from gateway.backends.dimse import DimseBackend
from gateway.backends.dimse.outcomes import response_to_json
from gateway.errors import (
    FinalStateViolation,
    GatewayError,
    InstanceGone,
    NoSuchInstance,
    NotSupported,
)
from gateway.model import mpps as rules
from gateway.model.dicom_json import json_to_dataset
from gateway.model.status import Operation, http_status
from gateway.model.types import JsonDataset
from gateway.settings import DimseBackendSettings, StoreSettings
from tests.fakes.mpps_scp import FakeRis
from tests.unit.mpps_examples import (
    MPPS_UID,
    completed_update,
    minimal_create,
    pn,
    series_update,
)

SOP_UIDS = ("00080016", "00080018")
CHARSET = "00080005"


def settings_for(ris: FakeRis, **kw: Any) -> DimseBackendSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": ris.port,
        "called_ae_title": ris.ae_title,
        "calling_ae_title": "GW_TEST",
        "timeout_s": 5.0,
        "max_associations": 2,
    }
    values.update(kw)
    return DimseBackendSettings(**values)


def without(dataset: JsonDataset, *keys: str) -> JsonDataset:
    return {k: v for k, v in dataset.items() if k not in keys}


def as_json(ds: Dataset | None) -> JsonDataset:
    """A dataset the fake RIS received, as DICOM JSON (the examples hold a too-long SH)."""
    assert ds is not None
    return response_to_json(ds, "a dataset")


def at_ris(ris: FakeRis, uid: str) -> JsonDataset:
    """What the RIS holds for ``uid``, as DICOM JSON."""
    return as_json(ris.store[uid])


@pytest.fixture
def ris() -> Iterator[FakeRis]:
    with FakeRis() as server:
        yield server


@pytest.fixture
async def backend(ris: FakeRis, tmp_path: Path) -> AsyncIterator[DimseBackend]:
    opened = await DimseBackend.open(
        "ris", settings_for(ris), StoreSettings(path=tmp_path / "gateway.sqlite3")
    )
    try:
        yield opened
    finally:
        await opened.aclose()


async def open_backend(ris: FakeRis, tmp_path: Path, **kw: Any) -> DimseBackend:
    return await DimseBackend.open(
        "ris", settings_for(ris, **kw), StoreSettings(path=tmp_path / "gateway.sqlite3")
    )


async def test_lifecycle_reaches_the_ris_intact(ris: FakeRis, backend: DimseBackend) -> None:
    create = minimal_create()
    create["00100010"] = pn("Müller^Jürgen")  # needs the configured ISO_IR 192

    created = await backend.create_mpps(MPPS_UID, create)
    [request] = ris.ops("create")
    assert request.uid == MPPS_UID  # the URL's UID is the Affected SOP Instance UID
    sent = as_json(request.dataset)
    assert sent[CHARSET]["Value"] == ["ISO_IR 192"]
    assert without(sent, CHARSET) == without(rules.validate_create(MPPS_UID, create), *SOP_UIDS)
    assert created.dataset == rules.validate_create(MPPS_UID, create)
    assert created.warnings == ()

    await backend.update_mpps(MPPS_UID, series_update())
    done = await backend.update_mpps(MPPS_UID, completed_update())

    assert [r.uid for r in ris.ops("set")] == [MPPS_UID, MPPS_UID]
    series = as_json(ris.ops("set")[0].dataset)
    assert without(series, CHARSET) == series_update()
    # The RIS and the gateway's mirror hold the same completed MPPS.
    assert without(at_ris(ris, MPPS_UID), CHARSET) == without(done.dataset, *SOP_UIDS, CHARSET)
    assert rules.status_of(done.dataset) is rules.PpsStatus.COMPLETED
    assert ris.associations == 1  # three operations, one pooled association


@pytest.mark.parametrize("mode", ["n-get", "mirror"])
async def test_retrieve_in_both_modes(ris: FakeRis, tmp_path: Path, mode: str) -> None:
    backend = await open_backend(ris, tmp_path, mpps_retrieve=mode)
    try:
        await backend.create_mpps(MPPS_UID, minimal_create())
        await backend.update_mpps(MPPS_UID, completed_update())
        whole = await backend.retrieve_mpps(MPPS_UID)
        some = await backend.retrieve_mpps(MPPS_UID, [0x00400252, 0x00100010, 0x00400340])
    finally:
        await backend.aclose()

    assert rules.status_of(whole.dataset) is rules.PpsStatus.COMPLETED
    assert without(whole.dataset, *SOP_UIDS, CHARSET) == without(at_ris(ris, MPPS_UID), CHARSET)
    assert set(some.dataset) == {"00100010", "00400252", "00400340"}
    assert some.dataset["00400340"] == completed_update()["00400340"]
    gets = ris.ops("get")
    if mode == "mirror":
        assert gets == []
    else:
        assert [g.tags for g in gets] == [[], [0x00400252, 0x00100010, 0x00400340]]


async def test_retrieve_from_the_mirror_when_the_ris_offers_no_n_get(tmp_path: Path) -> None:
    with FakeRis(offer_retrieve=False) as ris:
        backend = await open_backend(ris, tmp_path)
        try:
            await backend.create_mpps(MPPS_UID, minimal_create())
            got = await backend.retrieve_mpps(MPPS_UID, [0x00400252])
            with pytest.raises(NotSupported) as unknown:
                await backend.retrieve_mpps("1.2.3.4")
        finally:
            await backend.aclose()
    assert got.dataset == {"00400252": {"vr": "CS", "Value": ["IN PROGRESS"]}}
    assert http_status(unknown.value, Operation.RETRIEVE) == 501


async def test_final_mpps_is_refused_before_reaching_the_ris(
    ris: FakeRis, backend: DimseBackend
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    await backend.update_mpps(MPPS_UID, completed_update())
    with pytest.raises(FinalStateViolation) as err:
        await backend.update_mpps(MPPS_UID, series_update())
    assert http_status(err.value, Operation.UPDATE) == 409
    assert len(ris.ops("set")) == 1


async def test_final_state_reported_by_the_ris(ris: FakeRis, backend: DimseBackend) -> None:
    """An MPPS the gateway never saw: the RIS's 0110 + A710 becomes 409."""
    done = rules.apply_update(rules.validate_create(MPPS_UID, minimal_create()), completed_update())
    ris.store[MPPS_UID] = json_to_dataset(without(done, *SOP_UIDS))
    with pytest.raises(FinalStateViolation) as err:
        await backend.update_mpps(MPPS_UID, series_update())
    assert http_status(err.value, Operation.UPDATE) == 409
    assert err.value.upstream_status == 0x0110


async def test_unknown_and_vanished_mpps(ris: FakeRis, backend: DimseBackend) -> None:
    with pytest.raises(NoSuchInstance) as unknown:
        await backend.update_mpps("1.2.3.4", series_update())
    assert http_status(unknown.value, Operation.UPDATE) == 404
    await backend.create_mpps(MPPS_UID, minimal_create())
    del ris.store[MPPS_UID]  # the RIS lost what the gateway forwarded
    with pytest.raises(InstanceGone) as gone:
        await backend.update_mpps(MPPS_UID, series_update())
    assert http_status(gone.value, Operation.UPDATE) == 410
    with pytest.raises(InstanceGone):
        await backend.retrieve_mpps(MPPS_UID)


async def test_mirror_is_its_own_table_in_the_store_file(
    ris: FakeRis, backend: DimseBackend, tmp_path: Path
) -> None:
    await backend.create_mpps(MPPS_UID, minimal_create())
    with sqlite3.connect(tmp_path / "gateway.sqlite3") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        rows = conn.execute("SELECT backend, uid FROM dimse_mpps_mirror").fetchall()
    assert "dimse_mpps_mirror" in tables
    assert mode == "wal"
    assert rows == [("ris", MPPS_UID)]


async def test_invalid_create_is_refused_before_reaching_the_ris(
    ris: FakeRis, backend: DimseBackend
) -> None:
    create = minimal_create()
    create["00400252"] = {"vr": "CS", "Value": ["COMPLETED"]}
    with pytest.raises(GatewayError) as err:
        await backend.create_mpps(MPPS_UID, create)
    assert http_status(err.value, Operation.CREATE) == 400
    assert ris.ops("create") == []
