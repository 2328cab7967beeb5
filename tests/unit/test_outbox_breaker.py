"""The store-and-forward circuit breaker as a state machine, on a fake clock."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.backends.outbox import RetryPolicy
from gateway.backends.outbox.breaker import Breaker
from gateway.errors import (
    Busy,
    ConfigError,
    GatewayError,
    InvalidAttributeValue,
    UpstreamFailure,
    UpstreamTimeout,
)
from gateway.errors import UpstreamUnavailable as Unavailable
from gateway.settings import DicomwebBackendSettings, settings_from_mapping


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, *, open_max_s: float = 30.0, closed: list[int] | None = None) -> Breaker:
    """Pauses of 1, 2, 4, ... s (no jitter, to be checkable)."""
    calls = closed if closed is not None else []
    return Breaker(
        backoff=lambda n: float(2 ** (n - 1)),
        open_max_s=open_max_s,
        clock=clock,
        on_close=lambda: calls.append(1),
    )


def refused_503() -> Unavailable:
    return Unavailable("HTTP 503", upstream_status=503)


def trip(b: Breaker) -> None:
    with b.attempt() as attempt:
        b.record(attempt, refused_503())


def test_closed_forwards_everything() -> None:
    b = breaker(Clock())
    assert not b.tripped
    assert not b.queue_at_once()
    assert b.worker_may_send()
    with b.attempt() as attempt:
        assert not attempt.probe  # nothing to probe while closed
        assert not b.queue_at_once()


def test_not_performed_opens_for_the_pause() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    assert b.tripped and b.failures == 1
    assert b.queue_at_once()
    assert not b.worker_may_send()
    assert b.paused_for() == pytest.approx(1.0)
    clock.now += 0.99
    assert b.queue_at_once()
    clock.now += 0.02  # the pause is over: half-open
    assert b.paused_for() == 0.0
    assert not b.queue_at_once()  # the next write is the probe
    assert b.worker_may_send()


def test_half_open_lets_one_probe_out_at_a_time() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.now += 1.5
    with b.attempt() as probe:
        assert probe.probe
        assert b.queue_at_once()  # others are queued while the probe is out
        assert not b.worker_may_send()
    assert not b.queue_at_once()  # the probe ended without a verdict: next one may go
    assert b.worker_may_send()


def test_failed_probe_reopens_for_a_longer_pause() -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.now += 1.5
    trip(b)
    assert b.failures == 2
    assert b.paused_for() == pytest.approx(2.0)
    assert b.queue_at_once()


def test_concurrent_failures_count_once() -> None:
    """Requests already out when the breaker opened do not each double the pause."""
    b = breaker(Clock())
    with b.attempt() as first, b.attempt() as second, b.attempt() as third:
        b.record(first, refused_503())
        b.record(second, refused_503())
        b.record(third, refused_503())
    assert b.failures == 1
    assert b.paused_for() == pytest.approx(1.0)


def test_an_answer_from_the_upstream_closes() -> None:
    clock = Clock()
    closed: list[int] = []
    b = breaker(clock, closed=closed)
    trip(b)
    clock.now += 1.5
    with b.attempt() as probe:
        b.record(probe, None)
    assert not b.tripped and not b.queue_at_once() and b.worker_may_send()
    assert b.paused_for() == 0.0
    assert closed == [1]  # the worker is woken: the backlog may go at once
    trip(b)
    assert b.failures == 1  # the backoff starts over


def test_a_refusal_with_a_status_closes_too() -> None:
    """A 409 or a DIMSE failure status means the upstream is reachable."""
    b = breaker(Clock())
    trip(b)
    with b.attempt() as attempt:
        b.record(attempt, UpstreamFailure("HTTP 400", upstream_status=400))
    assert not b.tripped


@pytest.mark.parametrize(
    "error",
    [
        UpstreamTimeout("no answer in time"),  # sent: the outcome is unknown
        UpstreamFailure("connection lost"),  # no status: the outcome is unknown
        InvalidAttributeValue("refused by our own rules before sending"),
    ],
)
def test_an_unknown_outcome_leaves_the_state(error: GatewayError) -> None:
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.now += 1.5
    with b.attempt() as probe:
        b.record(probe, error)
    assert b.tripped and b.failures == 1
    assert b.worker_may_send()  # half-open again: another probe may go


def test_connect_timeout_and_busy_count_as_not_performed() -> None:
    b = breaker(Clock())
    timeout = UpstreamTimeout("connect")
    timeout.__cause__ = aiohttp.ConnectionTimeoutError()
    with b.attempt() as attempt:
        b.record(attempt, timeout)
    assert b.failures == 1
    b2 = breaker(Clock())
    with b2.attempt() as attempt:
        b2.record(attempt, Busy("our association pool is busy"))
    assert b2.failures == 1


def test_open_max_s_bounds_how_long_writes_skip_the_upstream() -> None:
    """The worker may back off for minutes; modality writes probe again after open_max_s."""
    clock = Clock()
    b = breaker(clock, open_max_s=2.0)
    for _ in range(4):  # pause now 8 s
        clock.now += 100
        trip(b)
    assert b.paused_for() == pytest.approx(8.0)
    clock.now += 2.5
    assert not b.queue_at_once()  # a modality's write probes
    assert not b.worker_may_send()  # the worker still waits


def test_zero_turns_queue_at_once_off() -> None:
    clock = Clock()
    b = breaker(clock, open_max_s=0.0)
    trip(b)
    assert not b.queue_at_once()
    with b.attempt():
        assert not b.queue_at_once()  # not even while a probe is out
    assert not b.worker_may_send()  # the worker still pauses


def test_with_jitter_stays_within_the_retry_settings() -> None:
    clock = Clock()
    b = Breaker.with_jitter(1.0, 4.0, 30.0)
    b._clock = clock
    for n in range(1, 8):
        with b.attempt() as attempt:
            b.record(attempt, refused_503())
        expected = min(4.0, 2.0 ** (n - 1))
        assert expected / 2 <= b.paused_for() <= expected
        clock.now += 10


def test_policy_from_settings() -> None:
    settings = settings_from_mapping(
        {"backends": {"up": {"type": "dicomweb", "url": "http://x", "circuit_breaker_s": 5}}}
    )
    config = settings.backends["up"]
    assert isinstance(config, DicomwebBackendSettings)
    assert DicomwebBackendSettings(url="http://x").circuit_breaker_s == 30.0
    policy = RetryPolicy.from_settings(config, grace_s=3.0)
    assert (policy.circuit_breaker_s, policy.grace_s, policy.retry_max_s) == (5.0, 3.0, 300.0)


@pytest.mark.parametrize("kind", ["dicomweb", "dimse"])
def test_negative_circuit_breaker_s_is_refused(kind: str) -> None:
    table: dict[str, object] = {"type": kind, "circuit_breaker_s": -1}
    if kind == "dicomweb":
        table["url"] = "http://x"
    else:
        table.update(host="ris", port=104, called_ae_title="RIS")
    with pytest.raises(ConfigError, match="circuit_breaker_s"):
        settings_from_mapping({"backends": {"up": table}})
