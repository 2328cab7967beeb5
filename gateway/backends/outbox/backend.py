"""``StoreAndForwardBackend``: an upstream backend whose MPPS writes are never lost.

A decorator over a ``dicomweb`` or ``dimse`` backend (proxy directions D->W and W->D).
Search passes through. An MPPS Create/Update is forwarded; when the upstream certainly did
not perform it (unreachable, 503/0213, transient association reject, busy), it is checked
against the gateway's own copy of that MPPS with the shared rules, committed to the outbox
and answered as a success. A UID that already has queued messages gets its new messages
queued behind them, so the order per UID holds; while the circuit breaker is open
(:mod:`.breaker`) new writes are queued without trying the upstream. Every other upstream
verdict passes through unchanged. The delivery worker is in :mod:`.delivery`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.backends.base import Backend, MppsResult
from gateway.backends.outbox import store as sql
from gateway.backends.outbox.breaker import Breaker
from gateway.backends.outbox.delivery import Delivery
from gateway.backends.outbox.locks import KeyedLocks
from gateway.backends.outbox.policy import not_performed
from gateway.backends.outbox.store import OutboxStore, QueueStats
from gateway.errors import DuplicateInstance, GatewayError, NoSuchInstance
from gateway.logging import get_logger
from gateway.model import mpps as rules
from gateway.model.query import WorklistQuery
from gateway.model.types import JsonDataset
from gateway.settings import DicomwebBackendSettings, DimseBackendSettings

log = get_logger("backends.outbox")

MIRROR_WARNING = "served from the gateway's copy; the upstream copy is not up to date"


@dataclass(frozen=True)
class RetryPolicy:
    """The per-backend store-and-forward keys of the settings."""

    max_queue_age_h: float = 72.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    grace_s: float = 10.0  # how long an in-flight delivery may finish at shutdown
    circuit_breaker_s: float = 30.0  # longest queue-at-once stretch; 0 = off (see .breaker)

    @classmethod
    def from_settings(
        cls, settings: DicomwebBackendSettings | DimseBackendSettings, grace_s: float
    ) -> RetryPolicy:
        """The policy of one ``[backends.NAME]`` table."""
        return cls(
            max_queue_age_h=settings.max_queue_age_h,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
            grace_s=grace_s,
            circuit_breaker_s=settings.circuit_breaker_s,
        )


class StoreAndForwardBackend:
    """The Backend protocol with a durable outbox in front of ``upstream``'s MPPS writes."""

    def __init__(self, upstream: Backend, outbox: OutboxStore, policy: RetryPolicy) -> None:
        """Use :meth:`open`; this wires an opened outbox."""
        self.upstream = upstream
        self.name = upstream.name
        self.cheap_remaining_count = upstream.cheap_remaining_count
        self.outbox = outbox
        self.policy = policy
        self.locks = KeyedLocks()
        self.backlog: set[str] = set()  # UIDs with queued or dead messages
        self.delivery = Delivery(self)
        self.breaker = Breaker.with_jitter(
            policy.retry_initial_s,
            policy.retry_max_s,
            policy.circuit_breaker_s,
            on_close=self.delivery.wake,  # the backlog may go at once
        )
        self.http_upstream = _is_http(upstream)

    @classmethod
    async def open(
        cls, upstream: Backend, store_path: Path, policy: RetryPolicy
    ) -> StoreAndForwardBackend:
        """Open the outbox tables in the store file and learn the current backlog."""
        outbox = await OutboxStore.open(store_path)
        backend = cls(upstream, outbox, policy)
        backend.backlog = await outbox.read(lambda c: sql.backlog_uids(c, backend.name))
        stats = await backend.queue_stats()
        log.info("outbox ready", backend=backend.name, **stats.as_dict(time.time()))
        return backend

    # --- Backend protocol -------------------------------------------------------------------

    def search_worklist(self, query: WorklistQuery) -> AsyncIterator[JsonDataset]:
        """Search is not queued: it passes through."""
        return self.upstream.search_worklist(query)

    async def create_mpps(self, uid: str, attributes: JsonDataset) -> MppsResult:
        """Forward, or queue when the upstream certainly did not perform it."""

        def expected(mirror: JsonDataset | None) -> JsonDataset:
            if mirror is not None:
                raise DuplicateInstance("the gateway already holds an MPPS with this UID")
            return rules.validate_create(uid, attributes)

        return await self._write(
            uid, "create", attributes, expected, lambda: self.upstream.create_mpps(uid, attributes)
        )

    async def update_mpps(self, uid: str, changes: JsonDataset) -> MppsResult:
        """Forward, or queue (behind this UID's backlog) after checking the gateway's copy."""

        def expected(mirror: JsonDataset | None) -> JsonDataset:
            if mirror is None:
                raise NoSuchInstance("the gateway holds no copy of this MPPS")
            return rules.apply_update(mirror, changes)

        return await self._write(
            uid, "update", changes, expected, lambda: self.upstream.update_mpps(uid, changes)
        )

    async def retrieve_mpps(self, uid: str, tags: Sequence[int] | None = None) -> MppsResult:
        """The upstream's copy, or the gateway's while messages of ``uid`` are queued.

        With a backlog the upstream copy is behind what the modality was told, so the
        gateway answers from its own copy (with a warning). When the upstream is down, the
        gateway's copy is served too, if it has one; otherwise the error passes through.
        """
        if uid in self.backlog:
            mirrored = await self._mirror(uid)
            if mirrored is not None:
                return _from_copy(mirrored, tags)
        try:
            return await self.upstream.retrieve_mpps(uid, tags)
        except GatewayError as exc:
            if not not_performed(exc):
                raise
            mirrored = await self._mirror(uid)
            if mirrored is None:
                raise
            return _from_copy(mirrored, tags)

    async def check_ready(self) -> None:
        """Ready when the upstream is (Search cannot be queued)."""
        await self.upstream.check_ready()

    async def aclose(self) -> None:
        """Close the upstream and the outbox."""
        try:
            await self.upstream.aclose()
        finally:
            await self.outbox.aclose()

    # --- outbox ------------------------------------------------------------------------------

    async def run_delivery(self) -> None:
        """The delivery worker; runs until cancelled (see :mod:`.delivery`)."""
        await self.delivery.run()

    async def queue_stats(self) -> QueueStats:
        """Queued and dead-lettered messages of this backend, and the oldest one's age."""
        return await self.outbox.read(lambda c: sql.stats(c, self.name))

    async def health(self) -> dict[str, object]:
        """Extra facts for ``/ready``: the outbox depth and oldest age."""
        stats = await self.queue_stats()
        return {"outbox": stats.as_dict(time.time())}

    # --- internals ---------------------------------------------------------------------------

    async def _mirror(self, uid: str) -> JsonDataset | None:
        return await self.outbox.read(lambda c: sql.mirror_get(c, self.name, uid))

    async def _write(
        self,
        uid: str,
        op: sql.Op,
        body: JsonDataset,
        expected: Callable[[JsonDataset | None], JsonDataset],
        forward: Callable[[], Awaitable[MppsResult]],
    ) -> MppsResult:
        async with self.locks.hold(uid):
            if uid in self.backlog:
                return await self._enqueue(uid, op, body, expected, reason="backlog")
            if self.breaker.queue_at_once():
                # Open: the upstream said "not performed" moments ago (or a probe is out);
                # queue at once rather than wait for another refusal.
                try:
                    return await self._enqueue(uid, op, body, expected, reason="upstream down")
                except NoSuchInstance:
                    pass  # no copy to check an update against: let the upstream answer
            try:
                result = await self._forward(forward)
            except GatewayError as exc:
                if not not_performed(exc):
                    raise
                try:
                    return await self._enqueue(uid, op, body, expected, reason=exc.kind.value)
                except NoSuchInstance:
                    raise exc from None  # no copy to check an update against: not performed
            await self._remember(uid, expected)
            return result

    async def _forward(self, forward: Callable[[], Awaitable[MppsResult]]) -> MppsResult:
        """Send a modality's write upstream, counting its outcome in the breaker."""
        with self.breaker.attempt() as attempt:
            try:
                result = await forward()
            except GatewayError as exc:
                self.breaker.record(attempt, exc)
                raise
            self.breaker.record(attempt, None)
            return result

    async def _enqueue(
        self,
        uid: str,
        op: sql.Op,
        body: JsonDataset,
        expected: Callable[[JsonDataset | None], JsonDataset],
        *,
        reason: str,
    ) -> MppsResult:
        name = self.name

        def work(conn: sqlite3.Connection) -> tuple[int, JsonDataset]:
            now = time.time()
            new = expected(sql.mirror_get(conn, name, uid))
            message_id = sql.insert_message(conn, name, uid, op, body, now)
            sql.mirror_put(conn, name, uid, new, now)
            return message_id, new

        message_id, new = await self.outbox.write(work)
        self.backlog.add(uid)
        if not self.breaker.tripped:
            self.delivery.wake()  # while tripped the worker waits for the breaker anyway
        log.info("MPPS queued", backend=name, uid=uid, op=op, message=message_id, reason=reason)
        # Plain success, no warning: the DIMSE front can only say "warning" with 0116
        # (attribute value out of range), which would mislead; logs, /ready and the CLI
        # say what happened.
        return MppsResult(new)

    async def _remember(
        self, uid: str, expected: Callable[[JsonDataset | None], JsonDataset]
    ) -> None:
        """Keep the gateway's copy in step after a forwarded write (failures only log)."""
        name = self.name

        def work(conn: sqlite3.Connection) -> None:
            try:
                new: JsonDataset | None = expected(sql.mirror_get(conn, name, uid))
            except GatewayError:
                new = None  # the upstream accepted what our rules refuse: state unknown
            sql.mirror_put(conn, name, uid, new, time.time())

        try:
            await self.outbox.write(work)
        except GatewayError as exc:
            log.warning("outbox copy not updated", backend=name, uid=uid, error=str(exc))


def _from_copy(mirrored: JsonDataset, tags: Sequence[int] | None) -> MppsResult:
    warnings = [MIRROR_WARNING]
    missing = rules.missing_requested(mirrored, tags)
    if missing:
        names = ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in missing)
        warnings.append(f"requested attributes not held for this MPPS: {names}")
    return MppsResult(rules.select_attributes(mirrored, tags), tuple(warnings))


def _is_http(upstream: Backend) -> bool:
    """Whether upstream statuses are HTTP codes (else DIMSE statuses)."""
    from gateway.backends.dicomweb import DicomwebBackend

    return isinstance(upstream, DicomwebBackend)
