"""What an upstream outcome means for a queued MPPS message, and when to try again.

Pure functions. Three verdicts (status-mapping §2 and §4):

* ``queue`` / ``retry``: "not performed, may work later" — unreachable, 503/429/0213,
  transient A-ASSOCIATE-RJ, our own pool busy, or a connect timeout (nothing was sent).
* ``uncertain``: the request may have landed (timeout after sending, connection lost,
  5xx); a delivery is retried, and a later 409/0111 is checked against the upstream copy.
* ``dead``: the upstream refused the message itself (4xx / failure status): an operator
  must look, so it moves to the dead-letter list.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import aiohttp

from gateway.errors import ErrorKind, GatewayError
from gateway.model import mpps as rules
from gateway.model.status import HttpStatus
from gateway.model.types import JsonDataset, tag_key

Verdict = Literal["retry", "uncertain", "dead"]

_RETRY = frozenset({ErrorKind.UPSTREAM_UNAVAILABLE, ErrorKind.BUSY})
_UNCERTAIN = frozenset(
    {ErrorKind.UPSTREAM_TIMEOUT, ErrorKind.UPSTREAM_FAILURE, ErrorKind.UPSTREAM_BAD_RESPONSE}
)
# Answers to a re-sent message that its earlier, unanswered attempt may explain.
CONFLICTS = frozenset(
    {ErrorKind.DUPLICATE_INSTANCE, ErrorKind.FINAL_STATE, ErrorKind.INCOMPATIBLE_UPDATE}
)
_IGNORED = frozenset(
    {
        tag_key(rules.SOP_CLASS_UID),
        tag_key(rules.SOP_INSTANCE_UID),
        tag_key(0x00080005),  # Specific Character Set: the upstream may use its own
    }
)


def not_performed(exc: GatewayError) -> bool:
    """True when the upstream certainly did not perform the write: safe to queue it.

    A timeout counts only when it happened while connecting (nothing was sent); any other
    timeout leaves the outcome unknown and is answered as such, never queued.
    """
    if exc.kind in _RETRY:
        return True
    return exc.kind is ErrorKind.UPSTREAM_TIMEOUT and isinstance(
        exc.__cause__, aiohttp.ConnectionTimeoutError
    )


def verdict(exc: GatewayError, *, http: bool) -> Verdict:
    """How the delivery worker treats a failed attempt.

    An upstream failure that carries the upstream's own status is a refusal of this
    message (HTTP 4xx, or a DIMSE failure status): dead. HTTP 5xx and failures without a
    status (connection lost after sending) leave the outcome unknown: tried again.
    """
    if not_performed(exc):
        return "retry"
    if exc.kind is ErrorKind.UPSTREAM_FAILURE and exc.upstream_status is not None:
        server_side = http and exc.upstream_status >= HttpStatus.INTERNAL_SERVER_ERROR
        return "uncertain" if server_side else "dead"
    if exc.kind in _UNCERTAIN:
        return "uncertain"
    return "dead"


def backoff_s(attempts: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped."""
    exponent = min(max(attempts - 1, 0), 30)
    delay = min(max_s, initial_s * float(2**exponent))
    return delay / 2 + rng.uniform(0.0, delay / 2)


def upstream_matches(upstream: JsonDataset, sent: JsonDataset) -> bool:
    """Does the upstream copy hold every attribute value ``sent`` (compared loosely)?

    Loosely: VR, number-versus-string spelling and trailing padding are ignored, since a
    round trip through DIMSE or another server may change them but not the meaning.
    """
    for key, attr in sent.items():
        if key in _IGNORED:
            continue
        if _norm(_value(attr)) != _norm(_value(upstream.get(key))):
            return False
    return True


def _value(attr: Any) -> Any:
    if isinstance(attr, dict):
        return attr.get("Value", [])
    return []


def _norm(value: Any) -> Any:
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        if "vr" in value or any(len(k) == 8 for k in value):  # a sequence item
            return {k: _norm(_value(v)) for k, v in sorted(value.items()) if _value(v) != []}
        return {k: _norm(v) for k, v in sorted(value.items())}  # a PN object
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return str(int(number)) if number.is_integer() else repr(number)
    return value
