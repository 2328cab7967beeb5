"""The circuit breaker of one store-and-forward backend: when to skip the upstream.

Why: while the upstream is down, forwarding each new MPPS write first costs a round trip
(or a connect timeout) only to be refused and queued anyway, and the delivery worker
sending every queued UID at once to a dead upstream only collects refusals. So after a
"not performed" answer the breaker is

* **open** for the pause (exponential backoff with jitter from the ``retry_*`` settings,
  growing per consecutive failure): the worker sends nothing; a modality's write is
  queued at once while the pause is younger than ``open_max_s``;
* **half-open** after that: one request at a time, a modality's write or the worker's
  oldest message, probes the upstream; writes arriving while a probe is out are queued;
* **closed** by the first answer from the upstream itself (performed, or refused with a
  status): from then on every write gets the upstream's verdict.

Failures of requests that were already out when the breaker opened count once, not once
each. ``open_max_s = 0`` turns queue-at-once off (every write is forwarded first); the
worker still pauses. State is in memory only: after a restart the breaker is closed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.backends.outbox.policy import backoff_s, not_performed
from gateway.errors import GatewayError


@dataclass
class Attempt:
    """One request to the upstream, as the breaker counts it."""

    generation: int
    probe: bool


class Breaker:
    """Backend-wide upstream state shared by the write path and the delivery worker."""

    def __init__(
        self,
        *,
        backoff: Callable[[int], float],
        open_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._backoff = backoff
        self._open_max_s = open_max_s
        self._clock = clock
        self._on_close = on_close
        self.failures = 0  # consecutive "not performed" answers; 0 = closed
        self._generation = 0  # bumped on every change: answers to older requests are stale
        self._paused_until = 0.0  # the worker sends nothing before this
        self._open_until = 0.0  # modality writes are queued before this
        self._probes = 0  # requests out to the upstream while tripped

    @classmethod
    def with_jitter(
        cls,
        retry_initial_s: float,
        retry_max_s: float,
        open_max_s: float,
        on_close: Callable[[], None] = lambda: None,
    ) -> Breaker:
        """The breaker of a backend: equal-jitter backoff on its ``retry_*`` settings."""
        rng = random.Random()
        return cls(
            backoff=lambda n: backoff_s(n, retry_initial_s, retry_max_s, rng),
            open_max_s=open_max_s,
            on_close=on_close,
        )

    @property
    def tripped(self) -> bool:
        """The last answer was "not performed" and none from the upstream came since."""
        return self.failures > 0

    def paused_for(self) -> float:
        """Seconds the worker must still wait before its next attempt (0: it may send)."""
        return max(0.0, self._paused_until - self._clock())

    def queue_at_once(self) -> bool:
        """Queue a modality's write without trying the upstream (open, or a probe is out)."""
        if not self.failures or self._open_max_s <= 0:
            return False
        return self._clock() < self._open_until or self._probes > 0

    def worker_may_send(self) -> bool:
        """Closed, or half-open with no probe out (the worker's request becomes it)."""
        if not self.failures:
            return True
        return self.paused_for() == 0.0 and self._probes == 0

    @contextmanager
    def attempt(self) -> Iterator[Attempt]:
        """Count one request to the upstream for the duration of the block."""
        attempt = Attempt(self._generation, probe=self.failures > 0)
        if attempt.probe:
            self._probes += 1
        try:
            yield attempt
        finally:
            if attempt.probe:
                self._probes -= 1

    def record(self, attempt: Attempt, error: GatewayError | None) -> None:
        """Count the outcome of ``attempt`` (``error`` None: the upstream performed it).

        "Not performed" opens; an answer from the upstream itself (success, or a refusal
        carrying its status) closes; an unknown outcome (timeout, lost connection) leaves
        the state as it is.
        """
        if error is None:
            self.answered()
        elif not_performed(error):
            self.unavailable(attempt)
        elif error.upstream_status is not None:
            self.answered()

    def unavailable(self, attempt: Attempt) -> None:
        """``attempt`` was "not performed": open for the next, longer pause."""
        if attempt.generation != self._generation:
            return  # sent before the breaker last changed: already counted
        self._generation += 1
        self.failures += 1
        pause_s = self._backoff(self.failures)
        now = self._clock()
        self._paused_until = now + pause_s
        self._open_until = now + min(pause_s, self._open_max_s)

    def answered(self) -> None:
        """The upstream answered (performed or refused): it is reachable, close."""
        if not self.failures:
            return
        self._generation += 1
        self.failures = 0
        self._paused_until = 0.0
        self._open_until = 0.0
        self._on_close()
