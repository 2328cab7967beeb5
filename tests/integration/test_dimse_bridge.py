"""The bridge from association threads to the event loop, on a real BlockingPortal."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Iterator

import anyio
import anyio.lowlevel
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from gateway.dimse.bridge import Bridge, Cancelled
from gateway.errors import Busy, UpstreamFailure, UpstreamTimeout


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as running:
        yield running


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``target()`` in a thread (like an association thread); collect its outcome."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_calls_run_on_the_loop_and_time_out(portal: BlockingPortal) -> None:
    bridge = Bridge(portal, timeout_s=0.2)

    async def answer(value: int) -> int:
        await anyio.lowlevel.checkpoint()
        return value * 2

    assert bridge.call(answer, 21) == 42
    with pytest.raises(UpstreamTimeout):
        bridge.call(anyio.sleep_forever)


def test_drain_waits_for_operations_then_refuses_new_ones(portal: BlockingPortal) -> None:
    bridge = Bridge(portal, timeout_s=5)
    assert bridge.drain(0) is True  # idle: nothing to wait for
    bridge = Bridge(portal, timeout_s=5)
    bridge.begin((1, 1))
    drainer, drained = _in_thread(lambda: bridge.drain(30))
    bridge.end((1, 1))
    drainer.join(timeout=30)
    assert drained == [True]
    with pytest.raises(Busy):
        bridge.begin((1, 2))


def test_drain_gives_up_at_the_deadline_and_cancel_all_stops_calls(portal: BlockingPortal) -> None:
    bridge = Bridge(portal, timeout_s=60)
    started = threading.Event()

    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    bridge.begin((1, 1))
    caller, outcome = _in_thread(lambda: bridge.call(stuck))
    assert started.wait(30)
    assert bridge.drain(0.05) is False
    assert bridge.cancel_all(lambda: UpstreamTimeout("grace period ended")) == 1
    caller.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], UpstreamTimeout)
    bridge.end_association(1)
    assert bridge.operations_in_flight == 0


class _Source:
    """An async generator that records whether it was closed."""

    def __init__(self, count: int, error: Exception | None = None) -> None:
        self.count = count
        self.error = error
        self.closed = threading.Event()
        self.waiting = threading.Event()

    async def items(self) -> AsyncGenerator[int, None]:
        try:
            for n in range(self.count):
                yield n
            if self.error is not None:
                raise self.error
            self.waiting.set()
            await anyio.sleep_forever()
            yield -1  # pragma: no cover - never reached
        finally:
            self.closed.set()


def test_stream_delivers_in_order_then_the_backend_error(portal: BlockingPortal) -> None:
    bridge = Bridge(portal, timeout_s=5)
    source = _Source(150, error=UpstreamFailure("broke"))
    stream = bridge.open_stream(source.items)
    received = []
    with pytest.raises(UpstreamFailure):
        for item in stream:
            received.append(item)
    stream.close()
    assert received == list(range(150))
    assert source.closed.is_set()


def test_stream_cancel_stops_a_waiting_backend_and_closes_it(portal: BlockingPortal) -> None:
    bridge = Bridge(portal, timeout_s=60)
    source = _Source(3)
    stream = bridge.open_stream(source.items)
    assert [next(stream), next(stream), next(stream)] == [0, 1, 2]
    consumer, outcome = _in_thread(lambda: next(stream))  # blocks: the source waits
    assert source.waiting.wait(30)
    stream.cancel()  # e.g. from the DUL thread
    consumer.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    stream.close()
    assert source.closed.is_set()
    with pytest.raises(Cancelled):
        next(stream)


def test_stream_that_was_never_read_closes_cleanly(portal: BlockingPortal) -> None:
    bridge = Bridge(portal, timeout_s=5)
    source = _Source(3)
    stream = bridge.open_stream(source.items)
    stream.close()
    assert not source.closed.is_set()  # never created, nothing to close
