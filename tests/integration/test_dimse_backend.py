"""The ``dimse`` backend's Search against DCMTK's wlmscpfs, compared with findscu.

Each of DCMTK's example queries goes through the same translation the DICOMweb front uses
(identifier -> Search parameters -> query) and the backend's results must equal what
``findscu -W`` gets from the same wlmscpfs: same items, same values.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from gateway.backends.dimse import DimseBackend
from gateway.errors import UpstreamUnavailable
from gateway.model.dicom_json import dataset_to_json
from gateway.model.mwl_keys import DICOMWEB_REQUIRED_RETURN_KEYS
from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset
from gateway.settings import DimseBackendSettings, StoreSettings
from tests.conftest import DCMTK_EXAMPLES, require_tool
from tests.fakes.mpps_scp import (
    WLMSCPFS_MATCHING_KEYS,
    Wlmscpfs,
    findscu,
    free_port,
    write_big_worklist,
)

pytestmark = pytest.mark.dcmtk

QUERY_NAMES = sorted(p.stem for p in (DCMTK_EXAMPLES / "wlistqry").glob("*.dump")) or ["none"]
SPS = "00400100"
STATION_NAME = "00400010"
BIG_WORKLIST = 10_000


# --- helpers ---------------------------------------------------------------------------------


def restrict(item: JsonDataset, ref: JsonDataset) -> JsonDataset:
    """``item`` limited to the attributes ``ref`` has, recursively into sequence items."""
    out: JsonDataset = {}
    for key, ref_attr in ref.items():
        attr = item.get(key)
        if attr is None:
            out[key] = None
            continue
        ref_items = ref_attr.get("Value") if ref_attr.get("vr") == "SQ" else None
        if ref_items and attr.get("Value"):
            keys: dict[str, Any] = {}
            for ref_item in ref_items:
                keys.update(ref_item)
            out[key] = {"vr": "SQ", "Value": [restrict(i, keys) for i in attr["Value"]]}
        else:
            out[key] = attr
    return out


def reference(responses: list[Dataset]) -> list[JsonDataset]:
    """findscu's responses as DICOM JSON, without the response's character set element."""
    items = [dataset_to_json(ds) for ds in responses]
    for item in items:
        item.pop("00080005", None)
    return items


def same_items(got: list[JsonDataset], expected: list[JsonDataset]) -> bool:
    """Equal as multisets, comparing ``got`` only on the attributes findscu received."""
    if len(got) != len(expected):
        return False
    if not expected:
        return True
    shape: dict[str, Any] = {}
    for item in expected:
        shape.update(item)
    canon = sorted(json.dumps(restrict(i, shape), sort_keys=True) for i in got)
    return canon == sorted(json.dumps(restrict(i, shape), sort_keys=True) for i in expected)


def as_web_query(identifier: Dataset, **extra: str) -> WorklistQuery:
    """The query the DICOMweb front builds from the Search parameters of ``identifier``."""
    params = WorklistQuery.from_identifier(identifier).to_query_params()
    params += list(extra.items())
    query = WorklistQuery.from_query_params(params)
    return query.with_return_keys(DICOMWEB_REQUIRED_RETURN_KEYS)


async def collect(backend: DimseBackend, query: WorklistQuery) -> list[JsonDataset]:
    results = backend.search_worklist(query)
    try:
        return [item async for item in results]
    finally:
        await results.aclose()  # type: ignore[attr-defined]


def settings_for(port: int, **kw: Any) -> DimseBackendSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "called_ae_title": "OFFIS",
        "calling_ae_title": "GW_TEST",
        "timeout_s": 30.0,
        "max_associations": 4,
        "matching_keys": WLMSCPFS_MATCHING_KEYS,
    }
    values.update(kw)
    return DimseBackendSettings(**values)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ris(dcmtk_worklist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wlmscpfs]:
    """wlmscpfs serving DCMTK's example worklist (called AE title OFFIS)."""
    log = tmp_path_factory.mktemp("wlmscpfs") / "wlmscpfs.log"
    with Wlmscpfs(require_tool("wlmscpfs"), dcmtk_worklist, log) as server:
        yield server


@pytest.fixture(scope="module")
def big_ris(dcmtk_worklist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wlmscpfs]:
    """wlmscpfs serving a 10,000-item worklist."""
    root = tmp_path_factory.mktemp("bigwl")
    write_big_worklist(dcmtk_worklist / "OFFIS" / "wklist1.wl", root / "OFFIS", BIG_WORKLIST)
    with Wlmscpfs(require_tool("wlmscpfs"), root, root / "wlmscpfs.log") as server:
        yield server


@pytest.fixture
async def backend(ris: Wlmscpfs, tmp_path: Path) -> AsyncIterator[DimseBackend]:
    store = StoreSettings(path=tmp_path / "gateway.sqlite3")
    opened = await DimseBackend.open("ris", settings_for(ris.port), store)
    try:
        yield opened
    finally:
        await opened.aclose()


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUERY_NAMES)
async def test_search_equals_findscu(
    name: str,
    ris: Wlmscpfs,
    backend: DimseBackend,
    dcmtk_queries: list[Path],
    tmp_path: Path,
) -> None:
    query_file = next(p for p in dcmtk_queries if p.stem == name)
    expected = reference(findscu(require_tool("findscu"), ris.port, query_file, tmp_path / "f"))

    got = await collect(backend, as_web_query(dcmread(query_file)))

    assert same_items(got, expected), (name, len(got), len(expected))
    for item in got:  # Search results are complete: every Type 1/2 key is present
        assert {"00100010", "00100020", "0020000D", SPS} <= item.keys()


async def test_key_the_ris_cannot_match_is_matched_by_the_gateway(
    ris: Wlmscpfs, backend: DimseBackend, tmp_path: Path
) -> None:
    """wlmscpfs ignores Scheduled Station Name; the gateway matches it on the results."""
    query = WorklistQuery.from_query_params(
        [(f"{SPS}.{STATION_NAME}", "STN456"), ("includefield", "00100010")]
    ).with_return_keys(DICOMWEB_REQUIRED_RETURN_KEYS)
    # Reference: everything wlmscpfs has, filtered here by plain dictionary access.
    everything = dcmtk_query(tmp_path, "wlistqry3")
    expected = [
        item
        for item in reference(
            findscu(require_tool("findscu"), ris.port, everything, tmp_path / "f")
        )
        if item[SPS]["Value"][0].get(STATION_NAME, {}).get("Value") == ["STN456"]
    ]
    assert len(expected) == 1

    got = await collect(backend, query)

    assert [step_id(item) for item in got] == [step_id(item) for item in expected]
    assert got[0]["00100010"] == expected[0]["00100010"]
    assert got[0][SPS]["Value"][0][STATION_NAME]["Value"] == ["STN456"]
    # Trusting the RIS with every key (matching_keys = []) would have returned all items.
    trusting = await DimseBackend.open(
        "trusting", settings_for(ris.port, matching_keys=()), StoreSettings(tmp_path / "t.db")
    )
    try:
        assert len(await collect(trusting, query)) == 10
    finally:
        await trusting.aclose()


def step_id(item: JsonDataset) -> str:
    """The Scheduled Procedure Step ID of a worklist item."""
    return str(item[SPS]["Value"][0]["00400009"]["Value"][0])


def dcmtk_query(tmp_path: Path, stem: str) -> Path:
    """One of DCMTK's example queries as a DICOM file."""
    target = tmp_path / f"{stem}.dcm"
    dump = DCMTK_EXAMPLES / "wlistqry" / f"{stem}.dump"
    subprocess.run([str(require_tool("dump2dcm")), "-q", str(dump), str(target)], check=True)
    return target


async def test_wildcard_and_range_matching_by_the_ris(backend: DimseBackend) -> None:
    query = WorklistQuery.from_query_params(
        [("PatientName", "HAYDN*"), (f"{SPS}.00400002", "19951201-19961231")]
    ).with_return_keys(DICOMWEB_REQUIRED_RETURN_KEYS)

    got = await collect(backend, query)

    dates = sorted(item[SPS]["Value"][0]["00400002"]["Value"][0] for item in got)
    assert dates == ["19951206", "19960103"]


async def test_answers_in_another_character_set_are_decoded(
    dcmtk_worklist: Path, tmp_path: Path
) -> None:
    """A RIS answering in ISO_IR 100 (Latin-1): values arrive as proper Unicode."""
    root = tmp_path / "latin"
    (root / "LATIN").mkdir(parents=True)
    (root / "LATIN" / "lockfile").touch()
    ds = dcmread(dcmtk_worklist / "OFFIS" / "wklist1.wl")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.save_as(root / "LATIN" / "latin.wl", enforce_file_format=True)
    raw = (root / "LATIN" / "latin.wl").read_bytes()
    assert "Müller".encode("latin-1") in raw  # really stored as Latin-1, not UTF-8

    with Wlmscpfs(require_tool("wlmscpfs"), root, tmp_path / "latin.log", args=("-csk",)) as ris:
        store = StoreSettings(path=tmp_path / "gateway.sqlite3")
        backend = await DimseBackend.open(
            "ris", settings_for(ris.port, called_ae_title="LATIN"), store
        )
        try:
            got = await collect(
                backend,
                WorklistQuery.from_query_params([("PatientName", "M*")]).with_return_keys(
                    DICOMWEB_REQUIRED_RETURN_KEYS
                ),
            )
        finally:
            await backend.aclose()

    assert [item["00100010"]["Value"] for item in got] == [[{"Alphabetic": "Müller^Jürgen"}]]
    assert "00080005" not in got[0]  # the answer's charset is spent: JSON is Unicode
    assert "ISO_IR 100" in (root / "LATIN" / "latin.wl").read_bytes().decode("latin-1")


async def test_limit_sends_c_cancel_and_returns_early(
    big_ris: Wlmscpfs, tmp_path: Path, dcmtk_queries: list[Path]
) -> None:
    """Taking 5 of 10,000 results and closing: C-CANCEL, fast, association reused."""
    query_file = next(p for p in dcmtk_queries if p.stem == "wlistqry3")
    started = time.monotonic()
    direct = findscu(require_tool("findscu"), big_ris.port, query_file, tmp_path / "direct")
    full_direct_s = time.monotonic() - started
    assert len(direct) == BIG_WORKLIST

    store = StoreSettings(path=tmp_path / "gateway.sqlite3")
    backend = await DimseBackend.open("ris", settings_for(big_ris.port), store)
    try:
        query = as_web_query(dcmread(query_file))
        started = time.monotonic()
        results = backend.search_worklist(query)
        first: list[JsonDataset] = []
        async for item in results:
            first.append(item)
            if len(first) == 5:
                break
        await results.aclose()  # type: ignore[attr-defined]
        limited_s = time.monotonic() - started

        assert len({item["00100020"]["Value"][0] for item in first}) == 5
        # Well under the full query, even under findscu (C, no JSON) doing the full one.
        assert limited_s < 0.8 * full_direct_s, (limited_s, full_direct_s)
        assert backend.pool.idle_count == 1  # cancelled cleanly: the association is kept
        log = big_ris.log_text()
        assert "Cancel" in log and "MatchingTerminatedDueToCancelRequest" in log
        # The kept association serves the next search.
        narrow = as_web_query(dcmread(query_file), PatientID="PID000007")
        assert len(await collect(backend, narrow)) == 1
    finally:
        await backend.aclose()


async def test_client_gone_mid_search_sends_c_cancel(
    big_ris: Wlmscpfs, tmp_path: Path, dcmtk_queries: list[Path]
) -> None:
    """The consuming task is cancelled (HTTP client went away): C-CANCEL, no hang."""
    query_file = next(p for p in dcmtk_queries if p.stem == "wlistqry3")
    store = StoreSettings(path=tmp_path / "gateway.sqlite3")
    backend = await DimseBackend.open("ris", settings_for(big_ris.port), store)
    cancels_before = big_ris.log_text().count("MatchingTerminatedDueToCancelRequest")
    received = 0
    try:
        with anyio.CancelScope() as scope:
            async for _ in backend.search_worklist(as_web_query(dcmread(query_file))):
                received += 1
                if received == 3:
                    scope.cancel()
        assert scope.cancelled_caught
        assert received == 3
        assert backend.pool.idle_count == 1
        log = big_ris.log_text()
        assert log.count("MatchingTerminatedDueToCancelRequest") == cancels_before + 1
    finally:
        await backend.aclose()


async def test_ris_down_then_back(tmp_path: Path, dcmtk_worklist: Path) -> None:
    """Nothing listening: 503-class error; once the RIS is up, the same backend serves."""
    port = free_port()
    server = Wlmscpfs(require_tool("wlmscpfs"), dcmtk_worklist, tmp_path / "w.log", port=port)
    store = StoreSettings(path=tmp_path / "gateway.sqlite3")
    backend = await DimseBackend.open("ris", settings_for(port, timeout_s=2.0), store)
    query = WorklistQuery.from_query_params([("PatientID", "*")])
    try:
        with pytest.raises(UpstreamUnavailable):
            await collect(backend, query)
        server.start()
        assert len(await collect(backend, query)) == 10
    finally:
        server.stop()
        await backend.aclose()
