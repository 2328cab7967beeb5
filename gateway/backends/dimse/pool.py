"""A small pool of DIMSE associations to one RIS, driven from async code.

Why a pool: negotiating an association costs a round trip or two and a pair of pynetdicom
threads; consecutive operations reuse one. The pool is bounded by ``max_associations``;
waiting for a free association is bounded too and ends in :class:`gateway.errors.Busy`
(HTTP 503 + Retry-After), never a hang. Associations idle longer than ``idle_timeout_s``
are released; one the RIS dropped while idle is noticed and replaced transparently.

Every blocking pynetdicom call (associate, release, abort, DIMSE messages) runs in a worker
thread via :func:`anyio.to_thread.run_sync` under the pool's own
:class:`anyio.CapacityLimiter`, never on the event loop. Thread work cannot be cancelled,
so each such call is bounded by pynetdicom's own timeouts (``timeout_s``).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from gateway import dicom_wire
from gateway.backends.dimse.outcomes import association_failure
from gateway.dicom_net import SOCKET_TUNING
from gateway.dicom_scu import guard_responses
from gateway.errors import Busy, UpstreamUnavailable
from gateway.logging import get_logger
from gateway.settings import DimseBackendSettings

T = TypeVar("T")

log = get_logger("backends.dimse.pool")

DEFAULT_IDLE_TIMEOUT_S = 30.0
TRANSFER_SYNTAXES: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# pynetdicom releases an association on its own once it has been idle this much longer than
# the pool keeps it, so an association the pool forgot about never stays open for good,
# while one the pool may still hand out is never released under its feet.
_NETWORK_TIMEOUT_FACTOR = 2.0


def requested_contexts(sop_classes: Sequence[str]) -> list[PresentationContext]:
    """One presentation context per SOP class, offering Explicit and Implicit VR LE."""
    return [build_context(uid, TRANSFER_SYNTAXES) for uid in sop_classes]


@dataclass
class _Idle:
    assoc: Association
    since: float


class Lease:
    """One association lent to one operation; blocking calls go through :meth:`run`."""

    def __init__(self, pool: AssociationPool, assoc: Association, *, reused: bool) -> None:
        self._pool = pool
        self.assoc = assoc
        self.reused = reused  # True when taken from the idle list (it may be stale)
        self.broken = False

    async def run(self, func: Callable[[Association], T]) -> T:
        """Run ``func(assoc)`` in a worker thread under the pool's capacity limit."""
        return await anyio.to_thread.run_sync(func, self.assoc, limiter=self._pool.limiter)

    def discard(self) -> None:
        """Do not return this association to the pool (it failed or its state is unknown)."""
        self.broken = True


class AssociationPool:
    """Associations to one RIS, at most ``settings.max_associations`` at a time."""

    def __init__(
        self,
        settings: DimseBackendSettings,
        sop_classes: Sequence[str],
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        acquire_timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.idle_timeout_s = idle_timeout_s
        self.acquire_timeout_s = (
            settings.timeout_s if acquire_timeout_s is None else acquire_timeout_s
        )
        self.limiter = anyio.CapacityLimiter(settings.max_associations)
        self._slots = anyio.Semaphore(settings.max_associations)
        self._idle: list[_Idle] = []
        self._live: set[Association] = set()
        self._closed = False
        self._where = f"{settings.called_ae_title}@{settings.host}:{settings.port}"
        dicom_wire.install()
        ae = AE(ae_title=settings.calling_ae_title)
        ae.requested_contexts = requested_contexts(sop_classes)
        ae.acse_timeout = settings.timeout_s
        ae.dimse_timeout = settings.timeout_s
        ae.connection_timeout = settings.timeout_s
        ae.network_timeout = idle_timeout_s * _NETWORK_TIMEOUT_FACTOR
        ae.maximum_associations = settings.max_associations
        self._ae = ae

    @property
    def where(self) -> str:
        """``CALLED@host:port``, for messages and logs."""
        return self._where

    @property
    def idle_count(self) -> int:
        """Associations open and waiting in the pool."""
        return len(self._idle)

    @property
    def saturated(self) -> bool:
        """Every association is lent out right now."""
        return self._slots.value == 0

    @property
    def open_count(self) -> int:
        """Associations currently open (idle or lent)."""
        return sum(1 for assoc in self._live if assoc.is_established)

    @asynccontextmanager
    async def lease(self, *, fresh: bool = False) -> AsyncIterator[Lease]:
        """Lend one established association; ``fresh`` skips idle ones.

        Raises :class:`Busy` (with ``retry_after_s``) when no association frees up within
        ``acquire_timeout_s``, and the upstream errors of :mod:`.outcomes` when a new
        association cannot be established.
        """
        if self._closed:
            raise Busy("the gateway is shutting down", retry_after_s=self._retry_after())
        with anyio.move_on_after(self.acquire_timeout_s) as waited:
            await self._slots.acquire()
        if waited.cancelled_caught:
            raise Busy(
                f"all {self.settings.max_associations} associations to the RIS are in use",
                retry_after_s=self._retry_after(),
            )
        lease: Lease | None = None
        try:
            lease = await self._take(fresh=fresh)
            yield lease
        finally:
            try:
                if lease is not None:
                    with anyio.CancelScope(shield=True):
                        await self._give_back(lease)
            finally:
                self._slots.release()

    async def aclose(self) -> None:
        """Release idle associations and abort any still lent (shutdown)."""
        self._closed = True
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            for entry in idle:
                await anyio.to_thread.run_sync(_release, entry.assoc, limiter=self.limiter)
                self._live.discard(entry.assoc)
            for assoc in list(self._live):
                await anyio.to_thread.run_sync(_abort, assoc, limiter=self.limiter)
            self._live.clear()

    # -- internals (event loop only; the lists are never touched from threads) ------------

    async def _take(self, *, fresh: bool) -> Lease:
        now = time.monotonic()
        while self._idle and not fresh:
            entry = self._idle.pop()  # most recently used first: least likely to be stale
            if not entry.assoc.is_established:
                self._live.discard(entry.assoc)
                log.info("dropped association noticed", ris=self._where)
                continue
            if now - entry.since >= self.idle_timeout_s:
                await self._retire(entry.assoc)
                continue
            return Lease(self, entry.assoc, reused=True)
        await self._expire_idle(now)
        assoc = await anyio.to_thread.run_sync(self._associate, limiter=self.limiter)
        self._live.add(assoc)
        return Lease(self, assoc, reused=False)

    async def _give_back(self, lease: Lease) -> None:
        assoc = lease.assoc
        if lease.broken or self._closed or not assoc.is_established:
            if assoc.is_established:
                await anyio.to_thread.run_sync(_abort, assoc, limiter=self.limiter)
            self._live.discard(assoc)
            return
        self._idle.append(_Idle(assoc, time.monotonic()))

    async def _expire_idle(self, now: float) -> None:
        keep: list[_Idle] = []
        expired: list[Association] = []
        for entry in self._idle:
            if not entry.assoc.is_established:
                self._live.discard(entry.assoc)
            elif now - entry.since >= self.idle_timeout_s:
                expired.append(entry.assoc)
            else:
                keep.append(entry)
        self._idle = keep
        for assoc in expired:
            await self._retire(assoc)

    async def _retire(self, assoc: Association) -> None:
        self._live.discard(assoc)
        await anyio.to_thread.run_sync(_release, assoc, limiter=self.limiter)

    def _associate(self) -> Association:
        """Blocking: request a new association (worker thread)."""
        s = self.settings
        try:
            assoc = self._ae.associate(
                s.host, s.port, ae_title=s.called_ae_title, evt_handlers=list(SOCKET_TUNING)
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise UpstreamUnavailable(
                "the RIS cannot be reached", upstream_detail=f"{self._where}: {exc}"
            ) from exc
        if not assoc.is_established:
            error = association_failure(assoc, self._where)
            if assoc.is_rejected:  # a configuration problem on one side or the other
                log.warning("association rejected", ris=self._where, detail=error.upstream_detail)
            raise error
        assoc.network_timeout_response = "A-RELEASE"
        return guard_responses(assoc)  # pooled: operations run back to back on it

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.acquire_timeout_s))


def _release(assoc: Association) -> None:
    """Blocking: A-RELEASE, falling back to A-ABORT when the RIS does not answer."""
    if not assoc.is_established:
        return
    assoc.release()
    if assoc.is_established:
        assoc.abort()


def _abort(assoc: Association) -> None:
    """Blocking: A-ABORT (used when an association's state is unknown)."""
    if assoc.is_established:
        assoc.abort()


__all__ = ["AssociationPool", "Lease", "requested_contexts"]
