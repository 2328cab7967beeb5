"""The static checks are part of the test command, so CI and developers run the same gate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_tool_installed(tool: str) -> None:
    assert shutil.which(tool), f"{tool} missing: install with pip install '.[test]'"


def test_ruff_and_mypy_strict_are_clean() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lint")], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
