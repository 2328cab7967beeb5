"""One lock per MPPS UID: a UID's writes and deliveries never interleave, others run freely."""

from __future__ import annotations

from types import TracebackType

import anyio


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        # fast_acquire: an uncontended lock (the usual case) is taken without a trip
        # through the event loop.
        self.lock = anyio.Lock(fast_acquire=True)
        self.users = 0  # holders and waiters


class _Hold:
    """``async with locks.hold(key)``: a plain class, cheaper than a generator-based one."""

    __slots__ = ("_entry", "_key", "_locks")

    def __init__(self, locks: dict[str, _Entry], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = _Entry()
        self._entry = entry
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        entry = self._entry
        entry.users -= 1
        if entry.users <= 0 and self._locks.get(self._key) is entry:
            del self._locks[self._key]


class KeyedLocks:
    """Locks created on demand and dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, _Entry] = {}

    def hold(self, key: str) -> _Hold:
        """Hold the lock of ``key`` (``async with locks.hold(key):``)."""
        return _Hold(self._locks, key)

    def busy(self, key: str) -> bool:
        """Someone holds or waits for ``key``."""
        return key in self._locks
