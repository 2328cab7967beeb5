"""The JSON log renderer: orjson for speed, the json module as fallback, PHI redacted."""

from __future__ import annotations

import json
from pathlib import Path

from structlog.processors import JSONRenderer

from gateway.logging import REDACTED, _dumps, _redact_phi


def render(**event: object) -> dict[str, object]:
    line = JSONRenderer(serializer=_dumps)(None, "info", _redact_phi(None, "info", event))
    assert isinstance(line, str) and "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_patient_data_is_redacted() -> None:
    parsed = render(event="MPPS queued", uid="1.2.3", patient_name="Doe^Jane", query="X")
    assert parsed == {
        "event": "MPPS queued",
        "uid": "1.2.3",
        "patient_name": REDACTED,
        "query": REDACTED,
    }


def test_what_orjson_refuses_is_still_logged() -> None:
    parsed = render(event="x", big=2**70, path=Path("/a"), error=ValueError("boom"), n={1: "a"})
    assert parsed["big"] == 2**70
    assert parsed["path"] == repr(Path("/a"))
    assert parsed["error"] == "ValueError('boom')"
    assert parsed["n"] == {"1": "a"}
