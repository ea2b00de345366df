"""Requests to a lock, one at a time, each bounded at the moment it is sent.

A lock object caches the version it last read, so its requests must not interleave: they queue on
one ``anyio.Lock``. The bound of a request is computed *after* that wait, right before the request
is sent, from the deadline its caller must meet (`request_timeout()`): a
renewal that waited behind a confirmation never goes out with a budget computed before the wait,
so no request of a term is still in flight after the term's deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.lowlevel

from . import _clock, _suspend
from ._decisions import request_timeout
from ._exceptions import AioleaderError, LockConflict, LockError
from ._lock import Lock, Observed
from ._metrics import ElectionMetrics
from ._record import LeaderElectionRecord
from ._timing import Timing

__all__ = ["Counters", "LockIO", "RequestTimeout", "Stamp"]

logger = logging.getLogger("aioleader")

T = TypeVar("T")


class RequestTimeout(LockError):
    """A request that did not complete within its bound (counted as ``timeout`` in metrics)."""


@dataclass(frozen=True)
class Stamp:
    """When a request was sent: ``_clock.now()``, and the host's suspended time then."""

    at: float
    suspended: float


@dataclass
class Counters:
    """What an election counts (read by ``statistics()``)."""

    terms: int = 0
    leader_changes: int = 0
    acquire_attempts: int = 0
    renewals: int = 0
    renew_failures: int = 0
    slow_path: int = 0
    last_error: str | None = None


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, LockConflict):
        return "conflict"
    if isinstance(exc, RequestTimeout):
        return "timeout"
    if isinstance(exc, LockError):
        return "transient"
    return "fatal"


class LockIO:
    """The lock's requests for one election: serialized, bounded, counted."""

    def __init__(
        self,
        lock: Lock,
        timing: Timing,
        counters: Counters,
        *,
        name: str,
        metrics: ElectionMetrics | None,
        log_extra: dict[str, str],
    ) -> None:
        self.lock = lock
        self.timing = timing
        self.counters = counters
        self.name = name
        self.metrics = metrics
        self.log_extra = log_extra
        self._serial = anyio.Lock()

    async def get(self, deadline: float) -> Observed | None:
        return await self._send(self.lock.get, deadline)

    async def create(self, record: LeaderElectionRecord, deadline: float) -> tuple[Observed, Stamp]:
        """Create; returns the reply and the time the request was sent."""
        return await self._sent(lambda timeout: self.lock.create(record, timeout=timeout), deadline)

    async def update(self, record: LeaderElectionRecord, deadline: float) -> tuple[Observed, Stamp]:
        """Update (compare-and-swap); returns the reply and the time the request was sent."""
        return await self._sent(lambda timeout: self.lock.update(record, timeout=timeout), deadline)

    async def update_from(
        self, base: Observed, record: LeaderElectionRecord, deadline: float
    ) -> tuple[Observed, Stamp]:
        """Update against a watched observation (no read first); see ``Lock.update_from``."""
        return await self._sent(
            lambda timeout: self.lock.update_from(base, record, timeout=timeout), deadline
        )

    async def _send(self, operation: Callable[..., Awaitable[T]], deadline: float) -> T:
        result, _ = await self._sent(lambda timeout: operation(timeout=timeout), deadline)
        return result

    async def _sent(
        self, operation: Callable[[float], Awaitable[T]], deadline: float
    ) -> tuple[T, Stamp]:
        # The wait for the previous request is bounded by the caller's deadline too (no scope
        # when the slot is free, the common case).
        if self._serial.locked():
            acquired = False
            with anyio.move_on_after(max(0.0, deadline - _clock.now())):
                await self._serial.acquire()
                acquired = True
            if not acquired:
                raise LockError(f"{self.lock.describe()}: no time left for a request")
        else:
            # Never send from a task already cancelled (a stop that coincides with a renewal):
            # the write would land with its reply unread, and the release would have to read.
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._serial.acquire_nowait()
        try:
            sent = Stamp(_clock.now(), _suspend.suspended_seconds())
            timeout = request_timeout(sent.at, deadline, self.timing)
            if timeout <= 0:
                raise LockError(f"{self.lock.describe()}: no time left for a request")
            try:
                if self.lock.bounds_requests:
                    # Shielded: a stop that arrives while the request is out waits for its reply
                    # (at most ``timeout``), so that a write of ours that landed is never left
                    # unread (the release would then conflict with it and have to read).
                    with anyio.CancelScope(shield=True):
                        result = await operation(timeout)
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    return result, sent
                with anyio.fail_after(timeout):
                    return await operation(timeout), sent
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"{self.lock.describe()}: request timed out after {timeout:g}s"
                ) from exc
        finally:
            self._serial.release()

    def failed(self, exc: AioleaderError) -> None:
        """Account for a failed request (statistics, metrics, a debug line)."""
        self.counters.last_error = f"{type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.api_error(self.name, error_kind(exc))
        logger.debug("%s: %s", self.lock.describe(), exc, extra=self.log_extra)
