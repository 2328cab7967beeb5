"""DCMTK against the DIMSE front: echoscu, and findscu -W compared with wlmscpfs.

The gateway's local store is loaded with DCMTK's example worklist (the very ``.wl`` files
wlmscpfs serves). Each of DCMTK's example queries goes to both SCPs with
``/usr/bin/findscu -W -X``; the response data sets are compared as sets of DICOM JSON.

One normalisation: attributes without a value are left out before comparing. For a key
the item does not hold, wlmscpfs sometimes omits it and sometimes returns it zero-length
(it expands an empty sequence item to its own key list); the gateway returns exactly the
requested keys, zero-length when absent. Both mean "no value" to an MWL SCU.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from gateway.model.dicom_json import dataset_to_json
from gateway.model.types import JsonDataset
from tests.conftest import require_tool
from tests.fakes.dcmtk import Wlmscpfs
from tests.integration import dimse_fixtures as fx
from tests.integration.dimse_fixtures import GATEWAY_AE, DimseHarness

pytestmark = pytest.mark.dcmtk

dimse = fx.dimse

WLMSCPFS_AE = "OFFIS"  # wlmscpfs serves <data dir>/<called AE title>/*.wl
READY_DEADLINE_S = 15.0


def _echo(port: int, called_ae: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(require_tool("echoscu")), "-aec", called_ae, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def wlmscpfs_port(dcmtk_worklist: Path, tmp_path: Path) -> Iterator[int]:
    """A running wlmscpfs over DCMTK's example worklist."""
    with Wlmscpfs(require_tool("wlmscpfs"), dcmtk_worklist, tmp_path / "wlmscpfs.log") as server:
        yield server.port


@pytest.fixture
def gateway(dimse: DimseHarness, dcmtk_worklist: Path) -> DimseHarness:
    """The DIMSE front over a store holding the same example worklist."""
    files = sorted((dcmtk_worklist / WLMSCPFS_AE).glob("*.wl"))
    assert len(files) >= 10
    dimse.load_worklist(dataset_to_json(dcmread(path)) for path in files)
    return dimse


def _valued(dataset: JsonDataset) -> JsonDataset:
    """``dataset`` without attributes that have no value (recursively)."""
    out: JsonDataset = {}
    for key, attr in dataset.items():
        values = attr.get("Value")
        if not values:
            continue
        if attr.get("vr") == "SQ":
            values = [_valued(item) for item in values]
        out[key] = {**attr, "Value": values}
    return out


def _findscu(port: int, called_ae: str, query: Path, out: Path) -> list[str]:
    """Responses of ``findscu -W`` as sorted, normalised DICOM JSON texts."""
    out.mkdir(parents=True)
    done = subprocess.run(
        [
            str(require_tool("findscu")),
            "-W",
            "-aec",
            called_ae,
            "-to",
            "30",
            "-X",
            "-od",
            str(out),
            "127.0.0.1",
            str(port),
            str(query),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: list[Any] = [_valued(dataset_to_json(dcmread(p))) for p in sorted(out.glob("*.dcm"))]
    return sorted(json.dumps(item, sort_keys=True) for item in found)


def test_echoscu_verifies_the_gateway(dimse: DimseHarness) -> None:
    done = _echo(dimse.port, GATEWAY_AE)
    assert done.returncode == 0, done.stderr


def test_findscu_gets_what_wlmscpfs_answers_for_each_example_query(
    gateway: DimseHarness, wlmscpfs_port: int, dcmtk_queries: list[Path], tmp_path: Path
) -> None:
    assert len(dcmtk_queries) >= 10
    answered = 0
    differences = {}
    for query in dcmtk_queries:
        reference = _findscu(wlmscpfs_port, WLMSCPFS_AE, query, tmp_path / "ref" / query.stem)
        ours = _findscu(gateway.port, GATEWAY_AE, query, tmp_path / "gw" / query.stem)
        answered += bool(reference)
        if ours != reference:
            differences[query.name] = {
                "wlmscpfs only": sorted(set(reference) - set(ours)),
                "gateway only": sorted(set(ours) - set(reference)),
            }
    assert not differences, json.dumps(differences, indent=1)
    assert answered >= 5, "the example queries should mostly find items"
