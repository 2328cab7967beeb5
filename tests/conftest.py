"""Shared fixtures: a real local store on a temporary SQLite file and DCMTK's examples."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from gateway.backends.local import LocalBackend
from gateway.dicom_scu import guard_responses
from gateway.settings import StoreSettings

DCMTK_BIN = Path("/usr/bin")


@pytest.fixture(autouse=True)
def _guarded_scu_associations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pynetdicom association a test requests (the modalities and RIS peers the tests
    play) is guarded against pynetdicom's requestor race (see gateway/dicom_scu.py), which
    otherwise drops a response about once in a few thousand back-to-back operations."""
    associate = AE.associate

    def guarded(self: AE, *args: Any, **kwargs: Any) -> Association:
        return guard_responses(associate(self, *args, **kwargs))

    monkeypatch.setattr(AE, "associate", guarded)


DCMTK_EXAMPLES = Path("/usr/share/doc/dcmtk/examples")


def require_tool(name: str) -> Path:
    """Absolute path of a DCMTK tool; skip on a developer machine without it, fail in CI."""
    path = DCMTK_BIN / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: .ci/run must install dcmtk")
        pytest.skip(f"{path} not installed (apt-get install dcmtk)")
    return path


def _convert_dumps(src: Path, dst: Path, suffix: str) -> list[Path]:
    dump2dcm = require_tool("dump2dcm")
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for dump in sorted(src.glob("*.dump")):
        target = dst / (dump.stem + suffix)
        subprocess.run([str(dump2dcm), "-q", str(dump), str(target)], check=True)
        out.append(target)
    if not out:
        pytest.fail(f"no DCMTK example dumps found in {src}")
    return out


@pytest.fixture(scope="session")
def dcmtk_worklist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DCMTK's example worklist as a wlmscpfs data directory: <dir>/OFFIS/*.wl."""
    root = tmp_path_factory.mktemp("wlistdb")
    _convert_dumps(DCMTK_EXAMPLES / "wlistdb" / "OFFIS", root / "OFFIS", ".wl")
    (root / "OFFIS" / "lockfile").touch()
    return root


@pytest.fixture(scope="session")
def dcmtk_queries(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """DCMTK's example worklist queries converted to DICOM files."""
    root = tmp_path_factory.mktemp("wlistqry")
    return _convert_dumps(DCMTK_EXAMPLES / "wlistqry", root, ".dcm")


@pytest.fixture
async def local_backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    """A real local store on a fresh SQLite file."""
    backend = await LocalBackend.open(StoreSettings(path=tmp_path / "gateway.sqlite3"))
    try:
        yield backend
    finally:
        await backend.aclose()


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a directory tree (helper for tests that mutate fixtures)."""
    shutil.copytree(src, dst)
    return dst
