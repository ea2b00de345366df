"""Watching who leads, without campaigning: [`observe()`][observe].

An observer reads the lock and never writes it, so any number of them (dashboards, sidecars,
clients that route to the leader) add no contention to the election. It uses the lock's
`watch()` when the lock supports one (a Lease: changes arrive as they happen)
and polls [`get()`][aioleader.Lock.get] otherwise.

Why an async context manager around an iterator, rather than a bare async generator: the
iteration holds a resource (a watch is an open HTTP stream) that must be released when the
caller is done, deterministically, not whenever the garbage collector finalizes an abandoned
generator. No task runs in the background and no cancel scope spans a ``yield``; every item is
produced inside the caller's own ``__anext__``, so an error reaches the caller as itself (no
exception group), and a caller that stops reading costs nothing but a paused stream.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar, final

import anyio

from ._exceptions import ElectionError, LockError
from ._lock import Lock, Observed
from ._record import LeaderElectionRecord

__all__ = ["LeaderChange", "LeaderChanges", "observe"]

logger = logging.getLogger("aioleader.observer")

T = TypeVar("T")

# Each poll is bounded (the lock is told, and a scope enforces it): a hung read must not freeze
# the observer.
_REQUEST_TIMEOUT: Final = 10.0
# Retries after transient errors: doubling from the first to the cap, each drawn from [d/2, d].
_BACKOFF_INITIAL: Final = 0.1
_WATCH_BACKOFF_MAX: Final = 5.0
# Closing the underlying watch on exit: shielded (a cancelled caller must still close the
# stream) but bounded.
_CLOSE_TIMEOUT: Final = 5.0


@final
@dataclass(frozen=True)
class LeaderChange:
    """One observed change of the lock's holder (or, with ``renewals=True``, of its record).

    ``holder`` is the identity holding the lock, ``None`` when nobody does: the record is free
    (``holderIdentity`` ``""`` or null, e.g. after a graceful release) or the lock object does not
    exist (``record`` is then ``None`` too). ``previous`` is the holder before this change (``None``
    in the first item). ``observed_at`` is `anyio.current_time()` when the observer saw the
    change: the monotonic clock the elector judges expiry on, unlike the record's wall-clock
    times, which are informational.
    """

    holder: str | None
    previous: str | None
    renew_time: datetime | None
    acquire_time: datetime | None
    transitions: int
    lease_duration_seconds: int | None
    observed_at: float
    record: LeaderElectionRecord | None


@final
class LeaderChanges:
    """The async iterator [`observe()`][observe] gives: one [`LeaderChange`][LeaderChange] per change, forever.

    Iterate it inside the ``async with`` block that made it; after the block it is exhausted.
    """

    def __init__(self, source: AsyncIterator[LeaderChange]) -> None:
        self._source = source
        self._latest: LeaderChange | None = None

    def __aiter__(self) -> LeaderChanges:
        return self

    async def __anext__(self) -> LeaderChange:
        change = await self._source.__anext__()
        self._latest = change
        return change

    @property
    def latest(self) -> LeaderChange | None:
        """The last change returned so far (``None`` before the first)."""
        return self._latest


def observe(
    lock: Lock,
    *,
    poll_interval: float = 2.0,
    renewals: bool = False,
    rng: random.Random | None = None,
) -> AbstractAsyncContextManager[LeaderChanges]:
    """Follow who holds ``lock``, without ever writing it.

    Synopsis::

        async with aioleader.observe(lock) as changes:
            async for change in changes:
                print(f"leader: {change.holder or 'nobody'} (was {change.previous or 'nobody'})")

    The first item is the state when observation starts; then one item per change of holder,
    in order (also for every other change of the record, renewals included, if ``renewals`` is
    true). Locks that support watching ([`Lock.supports_watch`][Lock.supports_watch]) are watched: each change is
    seen as it lands. Others are read every ``poll_interval`` seconds, so a holder that comes and
    goes between two reads is not seen.

    Transient errors ([`LockError`][aioleader.LockError], timeouts) are retried for ever with
    exponential, jittered backoff (``rng`` draws the jitter); fatal ones
    ([`ElectionError`][aioleader.ElectionError], e.g. 403 Forbidden) are raised from the iteration. Leaving
    the ``async with`` block stops the watch (closes its stream).
    """
    if (
        isinstance(poll_interval, bool)
        or not isinstance(poll_interval, (int, float))
        or not (0 < poll_interval < math.inf)
    ):
        raise ValueError(
            f"poll_interval must be a positive finite number of seconds, got {poll_interval!r}"
        )
    return _observing(lock, float(poll_interval), renewals, rng or random.Random())


@asynccontextmanager
async def _observing(
    lock: Lock, poll_interval: float, renewals: bool, rng: random.Random
) -> AsyncIterator[LeaderChanges]:
    source = _changes(lock, poll_interval, renewals, rng)
    try:
        yield LeaderChanges(source)
    finally:
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            await source.aclose()


async def _changes(
    lock: Lock, poll_interval: float, renewals: bool, rng: random.Random
) -> AsyncGenerator[LeaderChange, None]:
    states = _watched(lock, rng) if lock.supports_watch else _polled(lock, poll_interval, rng)
    current: LeaderChange | None = None
    last_raw: bytes | None = None
    try:
        async for observed in states:
            raw = None if observed is None else observed.raw
            if current is not None and raw == last_raw:
                continue  # polled again, nothing new
            last_raw = raw
            record = None if observed is None else observed.record
            holder = None if record is None or record.is_free else record.holder_identity
            previous = None if current is None else current.holder
            if current is not None and holder == previous and not renewals:
                continue
            current = LeaderChange(
                holder=holder,
                previous=previous,
                renew_time=None if record is None else record.renew_time,
                acquire_time=None if record is None else record.acquire_time,
                transitions=0 if record is None else record.leader_transitions,
                lease_duration_seconds=None if record is None else record.lease_duration_seconds,
                observed_at=anyio.current_time(),
                record=record,
            )
            yield current
    finally:
        await states.aclose()


def _backoff(failures: int, ceiling: float, rng: random.Random) -> float:
    delay = min(ceiling, _BACKOFF_INITIAL * 2.0 ** min(failures - 1, 60))
    return rng.uniform(delay / 2, delay)


async def _aclose(iterator: AsyncIterator[T]) -> None:
    """Close an iterator that can be closed (async generators can; any iterator may)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def _watched(lock: Lock, rng: random.Random) -> AsyncGenerator[Observed | None, None]:
    """The lock's own watch, restarted (with backoff) if it fails or ends."""
    failures = 0
    while True:
        retry_after = 0.0
        states = lock.watch()
        try:
            async for observed in states:
                failures = 0
                yield observed
            logger.info("%s: the watch ended; watching again", lock.describe())
        except ElectionError:
            raise
        except LockError as exc:
            logger.info("%s: the watch failed, watching again: %s", lock.describe(), exc)
            retry_after = exc.retry_after or 0.0
        finally:
            await _aclose(states)
        failures += 1
        await anyio.sleep(max(_backoff(failures, _WATCH_BACKOFF_MAX, rng), retry_after))


async def _polled(
    lock: Lock, poll_interval: float, rng: random.Random
) -> AsyncGenerator[Observed | None, None]:
    """Read the lock every ``poll_interval`` seconds (from the start of one read to the next)."""
    failures = 0
    timeout = _REQUEST_TIMEOUT
    while True:
        started = anyio.current_time()
        try:
            with anyio.fail_after(timeout):
                observed = await lock.get(timeout=timeout)
        except ElectionError:
            raise
        except (LockError, TimeoutError) as exc:
            failures += 1
            # Sooner than the next poll at first, never more often than polling once recovered.
            delay = _backoff(failures, poll_interval, rng)
            if isinstance(exc, LockError) and exc.retry_after:
                delay = max(delay, exc.retry_after)
            logger.info("%s: read failed, retrying in %.2g s: %s", lock.describe(), delay, exc)
            await anyio.sleep(delay)
            continue
        failures = 0
        yield observed
        await anyio.sleep_until(started + poll_interval)
