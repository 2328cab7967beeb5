"""The embedded store finds the same worklist items as DCMTK's wlmscpfs.

wlmscpfs serves DCMTK's example worklist; the local store imports the very same ``.wl``
files. For each of DCMTK's example queries (plus a few richer ones of ours: multi-valued
station AE, ranges, wildcards), ``findscu -W`` against wlmscpfs and a search of the store
must find the same set of items. Items are told apart by Study Instance UID (unique in the
example worklist); it is added to each query as a zero-length return key, which by
definition (universal matching) does not change which items match.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from gateway.backends.local import LocalBackend
from gateway.backends.local.importer import import_paths
from gateway.model.query import WorklistQuery
from gateway.settings import StoreSettings
from tests.conftest import require_tool
from tests.fakes.dcmtk import Wlmscpfs

pytestmark = pytest.mark.dcmtk

CALLED_AE = "OFFIS"  # wlmscpfs serves <data dir>/<called AE title>/*.wl
READY_DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def wlmscpfs(dcmtk_worklist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wlmscpfs]:
    log = tmp_path_factory.mktemp("wlmscpfs") / "wlmscpfs.log"
    with Wlmscpfs(require_tool("wlmscpfs"), dcmtk_worklist, log) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path, dcmtk_worklist: Path) -> AsyncIterator[LocalBackend]:
    backend = await LocalBackend.open(StoreSettings(path=tmp_path / "interop.sqlite3"))
    try:
        summary = await import_paths(backend, [dcmtk_worklist])
        assert summary.failures == [] and summary.steps == 10
        yield backend
    finally:
        await backend.aclose()


def _with_study_uid(query: Dataset) -> Dataset:
    if "StudyInstanceUID" not in query:
        query.StudyInstanceUID = ""
    return query


def _findscu(server: Wlmscpfs, query: Dataset, workdir: Path) -> set[str]:
    findscu = require_tool("findscu")
    workdir.mkdir(parents=True, exist_ok=True)
    query_file = workdir / "query.dcm"
    query.save_as(query_file)
    out = workdir / "responses"
    out.mkdir()
    done = subprocess.run(
        [
            str(findscu),
            "-W",
            "-aec",
            CALLED_AE,
            "-to",
            "10",
            "-X",
            "-od",
            str(out),
            "127.0.0.1",
            str(server.port),
            str(query_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {str(dcmread(path).StudyInstanceUID) for path in sorted(out.glob("*.dcm"))}


async def _local(store: LocalBackend, query: Dataset) -> set[str]:
    parsed = WorklistQuery.from_identifier(query)
    found = set()
    async for item in store.search_worklist(parsed):
        found.add(item["0020000D"]["Value"][0])
    return found


def _ours(sps: dict[str, str], **top: str) -> Dataset:
    """A query of our own: SPS keys (keyword -> value) plus top-level keys."""
    query = Dataset()
    query.file_meta = FileMetaDataset()
    query.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    query.PatientName = ""
    for keyword, value in top.items():
        setattr(query, keyword, value)
    item = Dataset()
    for keyword in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate"):
        setattr(item, keyword, "")
    item.ScheduledProcedureStepStartTime = ""
    for keyword, value in sps.items():
        setattr(item, keyword, value)
    query.ScheduledProcedureStepSequence = [item]
    return query


OUR_QUERIES = {
    "multi-valued station": _ours({"ScheduledStationAETitle": "AA32"}),
    "station of a multi-valued list": _ours({"ScheduledStationAETitle": "NN77"}),
    "modality": _ours({"Modality": "CT"}),
    "date range": _ours({"ScheduledProcedureStepStartDate": "19960101-19960430"}),
    "open date range": _ours({"ScheduledProcedureStepStartDate": "-19951231"}),
    "modality + date": _ours(
        {"Modality": "CT", "ScheduledProcedureStepStartDate": "19960101-19961231"}
    ),
    "time range": _ours({"ScheduledProcedureStepStartTime": "080000-120000"}),
    "patient name wildcard": _ours({}, PatientName="VIVALDI*"),
    "patient name ?": _ours({}, PatientName="HAYDN^FRANZ^JOSE?H"),
    "patient id": _ours({}, PatientID="AV35674"),
    "no match": _ours({"Modality": "DX"}),
}


async def test_dcmtk_example_queries_find_the_same_items(
    wlmscpfs: Wlmscpfs, store: LocalBackend, dcmtk_queries: list[Path], tmp_path: Path
) -> None:
    assert len(dcmtk_queries) >= 10
    mismatches = {}
    for path in dcmtk_queries:
        query = _with_study_uid(dcmread(path))
        theirs = _findscu(wlmscpfs, query, tmp_path / path.stem)
        ours = await _local(store, query)
        if theirs != ours:
            mismatches[path.name] = (sorted(theirs), sorted(ours))
    assert mismatches == {}


@pytest.mark.parametrize("name", sorted(OUR_QUERIES))
async def test_richer_queries_find_the_same_items(
    wlmscpfs: Wlmscpfs, store: LocalBackend, tmp_path: Path, name: str
) -> None:
    query = _with_study_uid(OUR_QUERIES[name])
    theirs = _findscu(wlmscpfs, query, tmp_path / "q")
    ours = await _local(store, query)
    assert ours == theirs
    if name != "no match":
        assert ours, "the query should find something in the example worklist"
