"""Logging: the JSON renderer (orjson, json fallback, PHI redacted) and what logging costs."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import pydicom.config
import pytest
import structlog
from pynetdicom import _config as pynetdicom_config
from structlog.processors import JSONRenderer
from structlog.testing import capture_logs

from gateway.logging import (
    REDACTED,
    _dumps,
    _redact_phi,
    _UtcTimestamp,
    configure_logging,
    get_logger,
)


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


def test_component_loggers_follow_each_reconfiguration() -> None:
    log = get_logger("unit")
    with capture_logs() as first:
        log.info("one", n=1)
    with capture_logs() as second:
        log.info("two")
    assert first == [{"event": "one", "n": 1, "component": "unit", "log_level": "info"}]
    assert [event["event"] for event in second] == ["two"]


def test_pynetdicom_debug_summaries_are_built_only_when_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pynetdicom formats every PDU and message for DEBUG records unless told not to."""
    saved = structlog.get_config()
    for name in ("LOG_HANDLER_LEVEL", "LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS"):
        monkeypatch.setattr(pynetdicom_config, name, getattr(pynetdicom_config, name))
    settings = pydicom.config.settings
    monkeypatch.setattr(settings, "reading_validation_mode", settings.reading_validation_mode)
    for logger in (logging.getLogger(), logging.getLogger("pynetdicom")):
        monkeypatch.setattr(logger, "level", logger.level)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    try:
        configure_logging(level="info", fmt="json")
        assert pynetdicom_config.LOG_HANDLER_LEVEL == "none"
        configure_logging(level="debug", fmt="json", log_phi=True)
        assert pynetdicom_config.LOG_HANDLER_LEVEL == "standard"
    finally:
        structlog.configure(**saved)


def test_timestamp_is_iso_utc_with_microseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-second cache must not carry a second over into the next one."""
    stamp = _UtcTimestamp()
    for now, text in (
        (1795647220.25, "2026-11-25T22:53:40.250000Z"),
        (1795647220.999999, "2026-11-25T22:53:40.999999Z"),
        (1795647221.0, "2026-11-25T22:53:41.000000Z"),
    ):
        monkeypatch.setattr("gateway.logging.time.time", lambda now=now: now)
        event = stamp(None, "info", {})
        assert event["timestamp"] == text
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert parsed.timestamp() == pytest.approx(now, abs=1e-6)
