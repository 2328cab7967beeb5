"""The one place where pynetdicom's association threads reach the async backend.

Every backend coroutine runs on the application's event loop through the injected
:class:`anyio.from_thread.BlockingPortal` (never ``asyncio.run`` in a handler, never
``anyio.from_thread.run``, which needs an anyio worker thread). Each call:

* runs under ``operation_timeout_s`` (``anyio.fail_after``); a timeout becomes
  :class:`gateway.errors.UpstreamTimeout`, so writes report "outcome unknown";
* runs in its own cancel scope, so a C-CANCEL (seen on pynetdicom's DUL thread) or the end
  of the shutdown grace period can stop it from another thread without blocking there.

A worklist search is one task on the event loop (:class:`BackendStream`) that drives the
backend's async generator from start to ``aclose()`` and hands results over through a
small buffer; the association thread takes whatever is ready per portal call.

The bridge also counts DIMSE operations in flight so :meth:`Bridge.drain` can let them
finish within the grace period, and refuses new ones (``Busy``) once draining.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Generic, TypeVar, cast

import anyio
from anyio.from_thread import BlockingPortal

from gateway.errors import Busy, UpstreamTimeout
from gateway.logging import get_logger

T = TypeVar("T")
log = get_logger("dimse.bridge")

OperationKey = tuple[int, int]
"""(id of the association, Message ID of the request): one DIMSE operation in flight."""

STREAM_BUFFER = 64
"""Results a search may run ahead of the SCU; also the most taken per portal call."""


class Cancelled(Exception):
    """The SCU sent C-CANCEL for the operation (control flow, not an error)."""


class _Call:
    """One task on the event loop, cancellable from any thread with a reason."""

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.reason: BaseException | None = None  # touched in the event loop thread only

    def enter(self, scope: anyio.CancelScope) -> None:
        """Attach the task's scope (event loop thread); honours an earlier cancel."""
        self.scope = scope
        if self.reason is not None:
            scope.cancel()

    def cancel_in_loop(self, reason: BaseException) -> None:
        if self.reason is None:
            self.reason = reason
        if self.scope is not None:
            self.scope.cancel()


def _in_async_context() -> bool:
    """True on an event loop thread (where waiting on the portal would deadlock)."""
    try:
        anyio.get_current_task()
    except RuntimeError:  # anyio.NoEventLoopError (older anyio: sniffio's error), both RuntimeError
        return False
    return True


class Bridge:
    """Run backend coroutines from association threads, with timeouts and cancellation."""

    def __init__(self, portal: BlockingPortal, timeout_s: float) -> None:
        self._portal = portal
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._calls: set[_Call] = set()
        self._operations: set[OperationKey] = set()
        self._draining = False

    # --- operations (for draining) -------------------------------------------------

    def begin(self, key: OperationKey) -> None:
        """Count one DIMSE operation in flight; refuse it with ``Busy`` once draining.

        The operation counts until :meth:`end` is called for ``key``, which the front
        does once the final response has been handed to pynetdicom, so that a stop
        never aborts an association before the answer to a finished operation is out.
        """
        with self._cond:
            if self._draining:
                raise Busy("the gateway is shutting down")
            self._operations.add(key)

    def end(self, key: OperationKey) -> None:
        """The operation ``key`` has answered (idempotent)."""
        with self._cond:
            self._operations.discard(key)
            self._cond.notify_all()

    def end_association(self, owner: int) -> None:
        """The association ``owner`` is gone: none of its operations can answer any more."""
        with self._cond:
            self._operations = {key for key in self._operations if key[0] != owner}
            self._cond.notify_all()

    @property
    def operations_in_flight(self) -> int:
        with self._cond:
            return len(self._operations)

    def drain(self, grace_s: float) -> bool:
        """Refuse new operations and wait up to ``grace_s`` for those in flight.

        Returns True when none is left. Blocking: call it from a worker thread.
        """
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._draining = True
            while self._operations:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def cancel_all(self, reason: Callable[[], BaseException]) -> int:
        """Cancel every backend task in flight (after the grace period); returns how many.

        ``reason`` makes the exception each cancelled call raises in its thread.
        """
        with self._cond:
            calls = list(self._calls)
        for call in calls:
            self.cancel(call, reason())
        return len(calls)

    # --- calls ---------------------------------------------------------------------

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await func(*args)`` on the event loop and wait for its result."""
        return self._run_call(_Call(), func, *args)

    def cancel(self, call: _Call, reason: BaseException) -> None:
        """Cancel ``call`` from any thread without waiting for it to stop."""
        try:
            self._portal.start_task_soon(self._cancel_async, call, reason)
        except RuntimeError:  # the portal is gone: nothing left to cancel
            log.debug("cancel after the portal stopped")

    @staticmethod
    async def _cancel_async(call: _Call, reason: BaseException) -> None:
        call.cancel_in_loop(reason)

    def _track(self, call: _Call) -> None:
        with self._cond:
            self._calls.add(call)

    def _untrack(self, call: _Call) -> None:
        with self._cond:
            self._calls.discard(call)

    def _run_call(self, call: _Call, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._track(call)
        try:
            future = self._portal.start_task_soon(self._guarded, call, func, *args)
            return cast(T, future.result())
        finally:
            self._untrack(call)

    async def _guarded(self, call: _Call, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        with anyio.CancelScope() as scope:
            call.enter(scope)
            try:
                with anyio.fail_after(self.timeout_s):
                    return await func(*args)
            except TimeoutError:
                raise UpstreamTimeout(
                    f"backend gave no answer within {self.timeout_s:g} s"
                ) from None
        # Only reached when our own scope was cancelled (C-CANCEL or shutdown).
        raise call.reason if call.reason is not None else Cancelled()

    def _start_task(self, call: _Call, func: Callable[[_Call], Awaitable[None]]) -> Future[None]:
        """Start a long-lived task (a search pump); tracked until it ends."""
        self._track(call)
        future = self._portal.start_task_soon(func, call)
        future.add_done_callback(lambda _: self._untrack(call))
        return future

    def open_stream(self, factory: Callable[[], AsyncIterator[T]]) -> BackendStream[T]:
        """A blocking iterator over the async iterator ``factory()`` creates."""
        return BackendStream(self, factory)


class _End:
    """Marks the end of a stream in the hand-over buffer."""


class _Failure:
    """Carries the backend's exception through the hand-over buffer, in order."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class BackendStream(Generic[T]):
    """Iterate a backend's async generator from an association thread.

    A pump task on the event loop creates the generator, iterates it and always closes
    it (``aclose()``) in that same task; results wait in a buffer of
    :data:`STREAM_BUFFER`. :meth:`cancel` (any thread, never blocks) stops the pump and
    makes the next :meth:`__next__` raise :class:`Cancelled`; :meth:`close` (the
    iterating thread) stops the pump and waits until the generator is closed.
    """

    def __init__(self, bridge: Bridge, factory: Callable[[], AsyncIterator[T]]) -> None:
        self._bridge = bridge
        self._factory = factory
        self._send, self._receive = anyio.create_memory_object_stream[object](STREAM_BUFFER)
        self._ready: collections.deque[object] = collections.deque()
        self._pump = _Call()
        self._pump_future: Future[None] | None = None
        self._lock = threading.Lock()
        self._take_call: _Call | None = None
        self._cancelled = False
        self._done = False
        self._completed = False  # the generator ran to its end (event loop thread)

    def __iter__(self) -> BackendStream[T]:
        return self

    def __next__(self) -> T:
        with self._lock:
            if self._cancelled:
                raise Cancelled()
        if self._done:
            raise StopIteration
        if self._pump_future is None:
            self._pump_future = self._bridge._start_task(self._pump, self._run_pump)
        if not self._ready:
            self._ready.extend(self._take_batch())
        with self._lock:
            if self._cancelled:
                raise Cancelled()
        item = self._ready.popleft()
        if isinstance(item, _End):
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return cast(T, item)

    def _take_batch(self) -> list[object]:
        call = _Call()
        with self._lock:
            if self._cancelled:
                raise Cancelled()
            self._take_call = call
        try:
            return self._bridge._run_call(call, self._take)
        finally:
            with self._lock:
                self._take_call = None

    async def _take(self) -> list[object]:
        """Wait for one result, then take whatever else is ready (event loop thread)."""
        batch: list[object] = []
        try:
            batch.append(await self._receive.receive())
            while len(batch) < STREAM_BUFFER:
                batch.append(self._receive.receive_nowait())
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            reason = self._pump.reason
            if not self._completed and reason is not None:
                raise reason from None  # stopped by C-CANCEL or at shutdown: not the end
            batch.append(_End())
        return batch

    async def _run_pump(self, call: _Call) -> None:
        """Drive the backend's generator to the end, a failure or a cancel; then close it."""
        iterator: AsyncIterator[T] | None = None
        async with self._send:
            with anyio.CancelScope() as scope:
                call.enter(scope)
                try:
                    iterator = self._factory()
                    async for item in iterator:
                        await self._put(item)
                    self._completed = True
                except Exception as exc:
                    await self._send.send(_Failure(exc))
                finally:
                    await self._aclose(iterator)

    async def _put(self, item: object) -> None:
        """Hand ``item`` over; wait only while the buffer is full.

        ``send()`` would yield to the event loop for every result. The association thread
        encoding the responses holds the GIL meanwhile, so each such round trip cost the
        loop up to a switch interval (5 ms): a page of results trickled over, and the next
        page was requested that much later. Cancellation still lands: the backend checks
        for it between results, and a full buffer waits.
        """
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            await self._send.send(item)

    async def _aclose(self, iterator: AsyncIterator[T] | None) -> None:
        aclose = getattr(iterator, "aclose", None)
        if aclose is None:
            return
        with anyio.move_on_after(self._bridge.timeout_s, shield=True):
            try:
                await aclose()
            except Exception as exc:  # closing must never mask the operation's status
                log.warning("closing the backend stream failed", error=type(exc).__name__)

    @property
    def cancelled(self) -> bool:
        with self._lock:
            return self._cancelled

    def cancel(self) -> None:
        """Stop the stream (C-CANCEL); safe from any thread, never blocks."""
        with self._lock:
            self._cancelled = True
            take = self._take_call
            started = self._pump_future is not None
        if take is not None:
            self._bridge.cancel(take, Cancelled())
        if started:
            self._bridge.cancel(self._pump, Cancelled())

    def close(self) -> None:
        """Stop the pump, wait until the backend's generator is closed, free the buffer."""
        future = self._pump_future
        if future is None:
            self._send.close()
            self._receive.close()
            return
        if not future.done():
            self._bridge.cancel(self._pump, Cancelled())
        if _in_async_context():  # only when garbage-collected on the loop: do not block it
            return
        try:
            future.result(timeout=self._bridge.timeout_s + 1)
            self._bridge.call(self._close_receive)
        except FutureTimeout:
            log.warning("backend stream did not close in time")
        except Exception as exc:
            log.warning("backend stream ended with an error", error=type(exc).__name__)

    async def _close_receive(self) -> None:
        self._receive.close()
