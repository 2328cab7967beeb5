"""``modality-gateway worklist ...`` and ``mpps ...`` as an operator runs them.

The new-user path (import DCMTK's worklist, list it) runs the real console command in a
subprocess; the other cases call :func:`gateway.cli.main` in-process to keep the suite
fast (each interpreter start costs seconds of imports).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from gateway.backends.local import LocalBackend
from gateway.cli import main
from gateway.settings import StoreSettings
from tests.contract.worklist_examples import WORKLIST
from tests.unit.mpps_examples import MPPS_UID, minimal_create

ROOT = Path(__file__).resolve().parents[2]


class Cli:
    """Runs the command line against one configuration file (in-process by default)."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.db = tmp_path / "store" / "gateway.sqlite3"
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(f'[store]\npath = "{self.db}"\n', encoding="utf-8")
        self._capsys = capsys

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self._capsys.readouterr()
        code = main(["--config", str(self.config), *args])
        out, err = self._capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    def subprocess(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed-style entry point in a fresh interpreter."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
        env.pop("MODALITY_GATEWAY_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            env=env,
            timeout=120,
            check=False,
        )


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    # In-process runs must not point the process-wide logging at pytest's capture stream
    # (it is closed after the test); the subprocess runs cover the real logging setup.
    monkeypatch.setattr("gateway.cli.configure_logging", lambda **_: None)
    return Cli(tmp_path, capsys)


def _table_rows(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    assert lines and lines[0].startswith("DATE"), stdout
    return lines[1:]


@pytest.mark.dcmtk
def test_import_dcmtk_worklist_then_list(cli: Cli, dcmtk_worklist: Path) -> None:
    done = cli.subprocess("worklist", "import", str(dcmtk_worklist))
    assert done.returncode == 0, done.stderr
    assert "imported 10 scheduled steps from 10 file(s): 10 new, 0 updated" in done.stdout
    listed = cli.subprocess("worklist", "list")
    assert listed.returncode == 0, listed.stderr
    rows = _table_rows(listed.stdout)
    assert len(rows) == 10
    assert sum("VIVALDI^ANTONIO" in row for row in rows) == 3
    assert any("1.2.276.0.7230010.3.2.101" in row and "SPD3445" in row for row in rows)
    assert rows[0].startswith("1993-06-06")  # ordered by SPS start date/time

    filtered = cli("worklist", "list", "--modality", "CT", "--date", "19960101-19961231")
    assert len(_table_rows(filtered.stdout)) == 2  # wklist2 and wklist8
    station = cli("worklist", "list", "--station", "NN77")
    assert len(_table_rows(station.stdout)) == 2  # multi-valued station AE titles


@pytest.mark.dcmtk
def test_reimport_updates_instead_of_duplicating(cli: Cli, dcmtk_worklist: Path) -> None:
    assert cli("worklist", "import", str(dcmtk_worklist)).returncode == 0
    again = cli("worklist", "import", str(dcmtk_worklist / "OFFIS"))
    assert again.returncode == 0, again.stderr
    assert "0 new, 10 updated" in again.stdout
    assert len(_table_rows(cli("worklist", "list").stdout)) == 10


@pytest.mark.dcmtk
def test_bad_files_are_reported_and_the_rest_imported(
    cli: Cli, dcmtk_worklist: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(dcmtk_worklist / "OFFIS", folder)
    (folder / "broken.json").write_text('{"0020000D": {"vr": "UI", "Value": [', encoding="utf-8")
    (folder / "no-study.json").write_text(json.dumps({"00100010": {"vr": "PN"}}), "utf-8")
    (folder / "garbage.wl").write_bytes(b"\x00" * 64 + b"not dicom at all")
    done = cli("worklist", "import", str(folder), str(tmp_path / "missing.json"))
    assert done.returncode == 1
    assert "imported 10 scheduled steps from 10 file(s)" in done.stdout
    for name in ("broken.json", "no-study.json", "garbage.wl", "missing.json"):
        assert name in done.stderr, done.stderr
    assert "malformed JSON" in done.stderr
    assert "Study Instance UID (0020,000D) is missing" in done.stderr
    assert "no such file or directory" in done.stderr


def test_json_import_list_as_json_and_delete(cli: Cli, tmp_path: Path) -> None:
    array = tmp_path / "worklist.json"
    array.write_text(json.dumps(WORKLIST[:4], ensure_ascii=False), encoding="utf-8")
    single = tmp_path / "one.json"
    single.write_text(json.dumps(WORKLIST[6], ensure_ascii=False), encoding="utf-8")
    done = cli("worklist", "import", str(array), str(single))
    assert done.returncode == 0, done.stderr
    assert "imported 6 scheduled steps from 2 file(s): 6 new, 0 updated" in done.stdout

    found = cli("worklist", "list", "--patient-name", "M?ller*", "--json")
    items = json.loads(found.stdout)
    assert [i["00100010"]["Value"][0]["Alphabetic"] for i in items] == ["Müller^Jürgen"]

    study = WORKLIST[6]["0020000D"]["Value"][0]
    assert cli("worklist", "delete", study, "S7a").returncode == 0
    assert cli("worklist", "delete", study, "S7a").returncode == 1
    assert len(_table_rows(cli("worklist", "list").stdout)) == 5
    refused = cli("worklist", "delete", "--all")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli("worklist", "delete", "--all", "--yes").stdout.strip() == (
        "deleted 5 scheduled step(s)"
    )
    assert _table_rows(cli("worklist", "list").stdout) == []


def test_list_rejects_a_bad_date(cli: Cli) -> None:
    done = cli("worklist", "list", "--date", "2025-01-01")
    assert done.returncode == 2
    assert "--date must be" in done.stderr


def test_mpps_show(cli: Cli) -> None:
    async def create() -> None:
        backend = await LocalBackend.open(StoreSettings(path=cli.db))
        try:
            await backend.create_mpps(MPPS_UID, minimal_create())
        finally:
            await backend.aclose()

    anyio.run(create)
    shown = cli("mpps", "show", MPPS_UID)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["00080018"]["Value"] == [MPPS_UID]
    listed = cli("mpps", "list")
    assert MPPS_UID in listed.stdout and "IN PROGRESS" in listed.stdout
    unknown = cli("mpps", "show", "1.2.3.4")
    assert unknown.returncode == 1 and "no MPPS instance" in unknown.stderr
    assert cli("mpps", "delete", MPPS_UID, "--yes").returncode == 0
    gone = cli("mpps", "show", MPPS_UID)
    assert gone.returncode == 1 and "deleted" in gone.stderr
