"""Structured logging with patient data kept out unless the operator opts in.

Code logs patient-identifying values only under the keys in :data:`PHI_KEYS`; a processor
replaces them with ``"[redacted]"`` unless ``log_phi = true``. Everything else (AE titles,
UIDs of steps, counts, statuses) is logged as is.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import pydicom.config
import structlog
from pynetdicom import _config as pynetdicom_config

PHI_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "other_patient_ids",
        "accession_number",
        "identifier",
        "dataset",
        "query",
        "body",
    }
)
REDACTED = "[redacted]"


def _redact_phi(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in PHI_KEYS.intersection(event):
        event[key] = REDACTED
    return event


class _UtcTimestamp:
    """``timestamp`` as ISO 8601 UTC with microseconds (``2026-11-23T23:13:40.123456Z``).

    structlog's ``TimeStamper(fmt="iso", utc=True)`` writes the same text but builds a
    datetime and formats all of it for every line (a sixth of a line's cost); this formats
    the date and time once per second.
    """

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Any:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event["timestamp"] = f"{self._text}.{int((now - second) * 1e6):06d}Z"
        return event


def _dumps(event: Any, default: Callable[[Any], Any]) -> str:
    """One JSON log line; orjson since every request logs a few (the json module took
    about a third of a line's cost), the json module for what orjson refuses (big ints)."""
    try:
        return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(event, default=default)


def configure_logging(*, level: str = "info", fmt: str = "console", log_phi: bool = False) -> None:
    """Set up structlog (and route stdlib logging such as pynetdicom's through it)."""
    numeric = logging.getLevelName(level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _UtcTimestamp(),
    ]
    if not log_phi:
        processors.append(_redact_phi)
    processors.append(structlog.processors.format_exc_info)
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=_dumps))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # pynetdicom logs whole datasets at DEBUG; keep it at WARNING unless PHI is allowed.
    pynetdicom_level = numeric if log_phi else max(numeric, logging.WARNING)
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(pynetdicom_level)
    # pynetdicom renders every C-FIND identifier for an INFO record even when INFO is off;
    # that costs more than receiving the item, and the text is patient data.
    identifiers_logged = log_phi and pynetdicom_level <= logging.INFO
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = identifiers_logged
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = identifiers_logged
    # Its standard handlers format a summary of every PDU and DIMSE message for DEBUG
    # records, even when DEBUG is off; only bind them when those records are kept.
    debug = pynetdicom_level <= logging.DEBUG
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if debug else "none"
    # pydicom's value-validation warnings quote the offending value (patient data).
    if not log_phi:
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


class _ComponentLogger:
    """structlog's lazy logger proxy, without building a new logger for every line.

    ``structlog.get_logger()`` returns a proxy that binds a fresh logger on each call
    (half the cost of a line). This one keeps the bound logger until the configuration
    changes: :func:`configure_logging`, or ``structlog.testing.capture_logs`` in tests,
    both install a new processor list, which is what is compared.
    """

    __slots__ = ("_bound", "_component", "_processors")

    def __init__(self, component: str) -> None:
        self._component = component
        self._bound: Any = None
        self._processors: object = None

    def __getattr__(self, name: str) -> Any:
        processors = structlog.get_config()["processors"]
        if processors is not self._processors:
            self._bound = structlog.get_logger().bind(component=self._component)
            self._processors = processors
        return getattr(self._bound, name)


def get_logger(name: str) -> Any:
    """A structlog logger bound to a component name."""
    return _ComponentLogger(name)
