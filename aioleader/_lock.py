"""The lock interface: what the elector needs from any lock object.

Modelled on client-go's ``resourcelock.Interface`` (Get / Create / Update / RecordEvent / Identity /
Describe) with two changes: every request takes a ``timeout`` that the lock must honour (the elector
bounds each request by what is left of the renew window), and errors are exceptions from
`aioleader._exceptions` rather than status codes, translated inside the lock and nowhere else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar, final

from ._record import LeaderElectionRecord

__all__ = ["Lock", "Observed", "WatchCursor", "cursor_states"]

_L = TypeVar("_L", bound="Lock")


@final
@dataclass(frozen=True)
class Observed:
    """One read of the lock.

    ``raw`` is the record exactly as stored (bytes), so that "has the lock changed since I last
    looked?" compares what the server holds rather than a lossy decoding of it. ``version`` is the
    opaque compare-and-swap token (``metadata.resourceVersion`` for Kubernetes locks).

    ``precise`` says whether ``raw`` changes with every write of the record. It does for Leases
    (``renewTime`` has microseconds); the annotation locks write whole seconds, so two renewals in
    one second are byte-identical and the elector must count a new ``version`` as a change too.
    """

    record: LeaderElectionRecord
    raw: bytes
    version: str
    precise: bool = True

    @property
    def change_key(self) -> object:
        """What tells two observations of the record apart: its bytes, and the version too where
        the bytes do not change with every write (``precise`` false)."""
        return self.raw if self.precise else (self.raw, self.version)


def same_state(a: Observed | None, b: Observed | None) -> bool:
    """Whether two observations (``None``: the lock did not exist) show the same record."""
    if a is None or b is None:
        return a is b
    return a.change_key == b.change_key


class WatchCursor(ABC):
    """A lock's states one at a time: what `Lock.watch()` yields, as a cursor.

    `next()` is **cancel-safe**: a call cancelled part-way loses nothing (no change is
    skipped, no connection's progress is lost), and the next call continues. That is what lets
    several watches be waited on together in one task without a task outliving the wait (see
    [`MultiLock`][aioleader.locks.MultiLock]): an async generator cannot be raced that way, since
    cancelling it finalizes it. Creating a cursor sends nothing; [`close()`][close] releases what it
    holds (a stream, a subscription) and may be called at any time, more than once.
    """

    @abstractmethod
    async def next(self) -> Observed | None:
        """The current state on the first call, then the next state whose record or existence
        differs from the last one returned (``None`` while the lock does not exist)."""

    @abstractmethod
    def close(self) -> None:
        """Release the cursor's resources. Idempotent; `next()` must not be called after."""


async def cursor_states(cursor: WatchCursor) -> AsyncGenerator[Observed | None, None]:
    """``cursor``'s states as an async generator that closes the cursor however it ends."""
    try:
        while True:
            yield await cursor.next()
    finally:
        cursor.close()


class Lock(ABC):
    """A lock object that candidates compete for through compare-and-swap.

    A lock instance belongs to one candidate (``identity``) and caches the object it last read or
    wrote: `update()` writes against that cached version, so a concurrent change by anybody
    else makes it fail with [`LockConflict`][aioleader.LockConflict] instead of overwriting.

    Implementations raise [`LockError`][aioleader.LockError] (or a subclass) for transient failures,
    [`ElectionError`][aioleader.ElectionError] for fatal ones, and must never let a request outlive
    ``timeout`` seconds.
    """

    @property
    @abstractmethod
    def identity(self) -> str:
        """The candidate's identity, written as ``holderIdentity`` when it leads."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable name such as ``default/my-lock`` (used in logs and metrics)."""

    @abstractmethod
    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read the lock; ``None`` if it does not exist. Caches the object for `update()`."""

    @abstractmethod
    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Create the lock holding ``record``. Raises [`LockConflict`][aioleader.LockConflict] if it exists."""

    @abstractmethod
    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Replace the record, compare-and-swap against the cached version.

        Raises [`LockConflict`][aioleader.LockConflict] if the lock changed since it was cached and
        [`LockError`][aioleader.LockError] if nothing is cached yet.
        """

    @property
    def supports_update_from(self) -> bool:
        """Whether [`update_from()`][update_from] is implemented."""
        return False

    @property
    def bounds_requests(self) -> bool:
        """Whether every call of this lock returns or raises within the ``timeout`` it is given
        (the Kubernetes locks' transport bounds each request, credentials and connecting
        included). Then the elector sends without a cancel scope of its own around each call;
        otherwise (the default) it bounds each call itself. A lock that says so and overruns
        its timeout can hold a renewal past its term's deadline."""
        return False

    async def update_from(
        self, base: Observed, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Replace the record, compare-and-swap against ``base`` (an observation this lock's watch
        delivered) instead of the cached version: a follower that saw the lock released takes it
        with one write, no read first. On success the result is cached as `update()`'s is.

        Raises [`LockConflict`][aioleader.LockConflict] if the lock changed since ``base``."""
        raise NotImplementedError(f"{type(self).__name__} cannot update from an observation")

    async def record_event(self, message: str) -> None:  # noqa: B027 - optional hook
        """Best-effort notification of a transition (Kubernetes Events); the default does nothing.

        It must never raise or block for long: the elector does not wait on it for safety.
        """

    @property
    def supports_watch(self) -> bool:
        """Whether `watch()` is implemented (followers fall back to polling otherwise).

        By default, whether [`watch_cursor()`][watch_cursor] is."""
        return self.supports_watch_cursor

    def watch(self) -> AsyncGenerator[Observed | None, None]:
        """Yield the lock now and each time its record changes (``None`` while it does not exist).

        Must never touch the version cached for `update()`, and must retry transient errors
        itself; an [`ElectionError`][aioleader.ElectionError] (e.g. no RBAC for list/watch) makes an
        elector fall back to polling.

        By default, the states of [`watch_cursor()`][watch_cursor], if the lock has one."""
        if self.supports_watch_cursor:
            return cursor_states(self.watch_cursor())
        raise NotImplementedError(f"{type(self).__name__} does not support watching")

    @property
    def supports_watch_cursor(self) -> bool:
        """Whether [`watch_cursor()`][watch_cursor] is implemented."""
        return False

    def watch_cursor(self) -> WatchCursor:
        """A cancel-safe cursor over the states `watch()` yields (see [`WatchCursor`][WatchCursor]),
        under the same rules: it never touches the version cached for `update()` and retries
        transient errors itself."""
        raise NotImplementedError(f"{type(self).__name__} has no watch cursor")

    @property
    def supports_listing(self) -> bool:
        """Whether [`list_siblings()`][list_siblings] is implemented ([`elect_shards()`][aioleader.elect_shards] needs it
        to discover the other replicas' membership locks)."""
        return False

    async def list_siblings(
        self, prefix: str, *, timeout: float | None = None
    ) -> dict[str, Observed]:
        """The locks of this lock's family whose name starts with ``prefix``: name -> record.

        A lock's *family* is the set of locks of the same kind in the same place: the Leases of a
        namespace, the [`FileLock`][aioleader.locks.FileLock] directories next to this one, the
        [`MemoryLock`][aioleader.locks.MemoryLock] names of one namespace. Locks that do not exist are
        left out. One request (a LIST) bounded by ``timeout``; it never touches the version cached
        for `update()`. Optional capability: see [`supports_listing`][supports_listing].
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its siblings")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources the lock owns (e.g. an API client it created)."""

    async def __aenter__(self: _L) -> _L:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
