"""The delivery worker: queued MPPS messages go upstream in order per UID.

Each round takes the UIDs whose head message is due (the oldest message of a UID is the
only one that may go next, so a Create always precedes its Updates) and drains those UIDs
concurrently, each under its UID lock: a slow or refused UID never holds up the others.
A "not performed" failure trips the backend's :class:`~.breaker.Breaker` (the upstream is
down; hammering it helps nobody): the worker pauses with exponential backoff and jitter,
then sends one UID as the probe, and drains everything again once the upstream answers.
Messages live only in SQLite, so a restart continues where the last process stopped.
"""

from __future__ import annotations

import random
import sqlite3
import time
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from gateway.backends.outbox import store as sql
from gateway.backends.outbox.policy import CONFLICTS, backoff_s, upstream_matches, verdict
from gateway.backends.outbox.store import Message
from gateway.errors import GatewayError
from gateway.logging import get_logger

if TYPE_CHECKING:
    from gateway.backends.outbox.backend import StoreAndForwardBackend

log = get_logger("backends.outbox")

CONCURRENCY = 16  # UIDs delivered at once
ROUND_SIZE = 256  # head messages fetched per round
POLL_S = 2.0  # longest sleep: picks up `outbox retry` from the CLI (another process)
REPORT_S = 60.0  # backlog log line interval while messages are queued


class Delivery:
    """Delivers one backend's outbox; ``run()`` until cancelled."""

    def __init__(self, owner: StoreAndForwardBackend) -> None:
        self._owner = owner
        self._wake = anyio.Event()
        self._rng = random.Random()
        self._inflight: set[str] = set()
        self._limiter = anyio.CapacityLimiter(CONCURRENCY)
        self._last_report = 0.0

    def wake(self) -> None:
        """New work: end the current wait."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver rounds forever; cancellation lets in-flight deliveries finish (grace)."""
        owner = self._owner
        breaker = owner.breaker
        async with anyio.create_task_group() as tg:
            while True:
                self._wake = anyio.Event()
                now = time.time()
                await self._report(now)
                # Half-open: one UID probes the upstream, the others wait for its answer.
                probing = breaker.tripped
                if breaker.worker_may_send() and not (probing and self._inflight):
                    limit = 1 if probing else ROUND_SIZE
                    uids = await owner.outbox.read(partial(_due_uids, owner.name, now, limit))
                    for uid in uids:
                        if uid not in self._inflight:
                            self._inflight.add(uid)
                            tg.start_soon(self._drain, uid)
                await self._sleep()

    async def _sleep(self) -> None:
        owner = self._owner
        pause_s = owner.breaker.paused_for()
        if pause_s > 0:
            # The upstream is down: nothing may go before the pause ends, unless a
            # modality's write finds it up again (the breaker closes and wakes us).
            with anyio.move_on_after(min(pause_s, POLL_S)):
                await self._wake.wait()
            return
        if self._inflight:
            with anyio.move_on_after(POLL_S):
                await self._wake.wait()  # a finished drain or a new message wakes us
            return
        now = time.time()
        due = await owner.outbox.read(lambda c: sql.next_due(c, owner.name))
        wait = POLL_S
        if due is not None:
            wait = min(wait, due - now)
        if wait > 0:
            with anyio.move_on_after(wait):
                await self._wake.wait()
        else:
            await anyio.lowlevel.checkpoint()

    async def _report(self, now: float) -> None:
        if now - self._last_report < REPORT_S:
            return
        self._last_report = now
        stats = await self._owner.queue_stats()
        if stats.queued or stats.dead:
            log.info("outbox backlog", backend=self._owner.name, **stats.as_dict(now))

    async def _drain(self, uid: str) -> None:
        """Send ``uid``'s messages in order until it is empty, blocked or postponed."""
        try:
            async with self._limiter:
                while await self._deliver_head(uid):
                    pass
        finally:
            self._inflight.discard(uid)
            self.wake()

    async def _deliver_head(self, uid: str) -> bool:
        """Deliver the head message of ``uid``; True when the next one may go at once."""
        owner = self._owner
        breaker = owner.breaker
        async with owner.locks.hold(uid):
            if not breaker.worker_may_send():
                return False
            message = await owner.outbox.read(lambda c: sql.head(c, owner.name, uid))
            now = time.time()
            if message is None:
                owner.backlog.discard(uid)
                return False
            if message.state != "queued" or message.next_at > now:
                return False
            if now - message.created_at > owner.policy.max_queue_age_h * 3600:
                await self._kill(message, "older than max_queue_age_h")
                return False
            if not breaker.worker_may_send():  # a modality's write became the probe meanwhile
                return False
            # Shielded with a deadline: at shutdown the in-flight delivery may finish within
            # the grace period; if it cannot, its outcome is unknown and it is re-sent later.
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(owner.policy.grace_s):
                    return await self._attempt(message)
                await self._postpone(message, "delivery interrupted", backoff=True)
            return False

    async def _attempt(self, message: Message) -> bool:
        owner = self._owner
        upstream = owner.upstream
        error: GatewayError | None = None
        with owner.breaker.attempt() as attempt:
            try:
                if message.op == "create":
                    await upstream.create_mpps(message.uid, message.body)
                else:
                    await upstream.update_mpps(message.uid, message.body)
            except GatewayError as exc:
                owner.breaker.record(attempt, exc)
                error = exc
            else:
                owner.breaker.record(attempt, None)
        if error is not None:
            return await self._failed(message, error)
        await self._delivered(message, "delivered")
        return True

    async def _failed(self, message: Message, exc: GatewayError) -> bool:
        if exc.kind in CONFLICTS and await self._landed_before(message):
            await self._delivered(message, "delivered earlier")
            return True
        decision = verdict(exc, http=self._owner.http_upstream)
        if decision == "dead":
            await self._kill(message, _reason(exc))
            return False
        # "Not performed" is paced by the breaker (the whole backend waits), so the message
        # stays due and goes first once the upstream is back; an unknown outcome waits on
        # its own backoff.
        await self._postpone(message, _reason(exc), backoff=decision == "uncertain")
        return False

    async def _landed_before(self, message: Message) -> bool:
        """A conflict after an earlier attempt: does the upstream already hold this message?"""
        try:
            copy = await self._owner.upstream.retrieve_mpps(message.uid)
        except GatewayError:
            return False
        return upstream_matches(copy.dataset, message.body)

    async def _delivered(self, message: Message, how: str) -> None:
        await self._owner.outbox.write(lambda c: sql.delete_message(c, message.id))
        log.info(
            "MPPS " + how,
            backend=message.backend,
            uid=message.uid,
            op=message.op,
            message=message.id,
            attempts=message.attempts + 1,
        )

    async def _postpone(self, message: Message, reason: str, *, backoff: bool) -> None:
        policy = self._owner.policy
        attempts = message.attempts + 1
        delay = 0.0
        if backoff:
            delay = backoff_s(attempts, policy.retry_initial_s, policy.retry_max_s, self._rng)
        next_at = time.time() + delay
        await self._owner.outbox.write(
            lambda c: sql.postpone(c, message.id, attempts, next_at, reason)
        )
        log.info(
            "MPPS delivery postponed",
            backend=message.backend,
            message=message.id,
            attempts=attempts,
            retry_in_s=round(max(delay, self._owner.breaker.paused_for()), 2),
            reason=reason,
        )

    async def _kill(self, message: Message, reason: str) -> None:
        attempts = message.attempts + 1
        await self._owner.outbox.write(lambda c: sql.kill(c, message.id, attempts, reason))
        log.warning(
            "MPPS dead-lettered",
            backend=message.backend,
            uid=message.uid,
            op=message.op,
            message=message.id,
            reason=reason,
        )


def _reason(exc: GatewayError) -> str:
    """Kind, message and upstream status: never patient data (no upstream body text)."""
    status = "" if exc.upstream_status is None else f" (upstream status {exc.upstream_status})"
    return f"{exc.kind.value}: {exc.message}{status}"


def _due_uids(backend: str, now: float, limit: int, conn: sqlite3.Connection) -> list[str]:
    return sql.due_uids(conn, backend, now, limit)
