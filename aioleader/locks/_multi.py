"""Two locks as one, to migrate an election from one lock object to another: client-go's
``resourcelock.MultiLock``, with its writes made compare-and-swap on both objects."""

from __future__ import annotations

from typing import Final, final

import anyio

from .._decisions import still_ours
from .._exceptions import LockConflict, LockError
from .._lock import Lock, Observed, WatchCursor, same_state
from .._record import LeaderElectionRecord

__all__ = ["UNKNOWN_LEADER", "MultiLock"]

#: The holder a [`MultiLock`][MultiLock] reports while its two objects name different holders:
#: client-go's ``resourcelock.UnknownLeader``, so both implementations log the same thing.
UNKNOWN_LEADER: Final = "leaderelection.k8s.io/unknown"


def _frame(raw: bytes) -> bytes:
    # A netstring: self-delimiting, so "primary only" and "primary + secondary" never collide.
    return b"%d:%s," % (len(raw), raw)


@final
class MultiLock(Lock):
    """Hold ``primary`` and ``secondary`` together: the lock for moving an election to a new
    object without a moment with two leaders.

    Synopsis (from a ConfigMap lock to a Lease, client-go's ``configmapsleases``)::

        lock = MultiLock(
            ConfigMapLock("my-app", "default", identity=pod, api_client=api),  # what old replicas use
            LeaseLock("my-app", "default", identity=pod, api_client=api),      # where we are going
        )

    The rollout is two steps. **1.** Deploy the version whose replicas use the MultiLock, while
    replicas of the old version still use the primary alone: the primary is the arbiter for
    everyone (every write starts with a compare-and-swap on it), and the leader mirrors its record
    into the secondary. **2.** Once no replica uses the old lock, deploy the version that uses the
    secondary alone (here a plain [`LeaseLock`][aioleader.kubernetes.LeaseLock]): a MultiLock leader
    renews the secondary with compare-and-swap too, so it is the arbiter from then on. Never mix
    replicas of all three kinds.

    Semantics (client-go's ``MultiLock`` where noted):

    * [`get()`][get] reads the primary, then the secondary (client-go). If the primary does not
      exist the lock does not exist (``None``). A missing secondary is not an error: the record is
      the primary's. If the two name different holders, the record names `UNKNOWN_LEADER`
      (client-go) - never free, even if one of them is - with the longer of the two valid lease
      durations, so a candidate waits until *neither* object has changed for a lease duration.
      ``raw`` frames both raw records (client-go concatenates them), so a change to either is a
      change. ``leader_transitions`` is the larger of the two, so the fencing token of the next
      term exceeds both objects' counts.
    * [`create()`][create] creates the primary (an existing primary is a
      [`LockConflict`][aioleader.LockConflict]; client-go ignores AlreadyExists there and writes the
      secondary anyway, which can mirror a record the arbiter does not hold), then the secondary.
      A secondary that already exists is taken over only if it is free or names this candidate;
      otherwise [`LockConflict`][aioleader.LockConflict].
    * `update()` updates the primary, then the secondary (client-go), each with
      compare-and-swap against what this lock last read or wrote. A secondary that did not exist
      is created (client-go). client-go instead re-reads the secondary and overwrites it
      unconditionally (three requests per renewal instead of two), which in step 2 can
      overwrite a Lease that a Lease-only replica has just taken: two leaders until its next
      renewal. Here that is a [`LockConflict`][aioleader.LockConflict], and the elector's fresh read
      decides.
    * An operation succeeds only if both objects were written, and only then does a term begin or
      a renewal count: a term's deadline never runs past what either object's last write
      promises, whichever one a peer watches. If the secondary write fails after the primary's
      succeeded, the primary names us without a term until our next attempt or its expiry (a
      delay, never a second leader).
    * ``timeout`` bounds the whole operation; each request gets what is left of it.
    * `watch()` (when both locks have a [`watch_cursor()`][aioleader.Lock.watch_cursor]) watches both
      objects at once and yields what [`get()`][get] would return from the latest state of each:
      the same combination, ``None`` while the primary does not exist, and a change whenever
      either object's record changes. So a follower sends no request while the leader renews
      both, and sees a release once *both* objects are free (a primary released while the
      secondary still names the old holder is the unknown leader, as [`get()`][get] says). It is
      a wake-up, never a licence: an acquisition still begins with [`get()`][get] and writes by
      compare-and-swap on both. Each object is watched on its own terms (for Kubernetes locks:
      list, watch, bookmarks, re-list on 410, safety re-read), and the two are waited on
      together through their cancel-safe cursors, in the caller's task.
    * Both locks must have the same identity (client-go reports the primary's and leaves the rest
      to the user). [`describe()`][describe] names both, ``primary+secondary``. `record_event()` goes
      to both; `aclose()` closes both.

    The two locks belong to the MultiLock: it tracks what they have cached, so do not use them
    on their own while it runs.
    """

    def __init__(self, primary: Lock, secondary: Lock) -> None:
        for argument, lock in (("primary", primary), ("secondary", secondary)):
            if not isinstance(lock, Lock):
                raise TypeError(f"{argument} must be an aioleader Lock, got {type(lock).__name__}")
        if primary is secondary:
            raise ValueError("primary and secondary must be two different lock objects")
        if primary.identity != secondary.identity:
            raise ValueError(
                f"primary and secondary must have the same identity, got {primary.identity!r} "
                f"and {secondary.identity!r}"
            )
        if primary.identity == UNKNOWN_LEADER:
            raise ValueError(f"identity {UNKNOWN_LEADER!r} is reserved")
        self._primary = primary
        self._secondary = secondary
        # Whether the secondary existed when we last read or wrote it, i.e. whether it has cached
        # an object to update (otherwise the next write creates it).
        self._secondary_exists = False

    def __repr__(self) -> str:
        return f"MultiLock({self._primary!r}, {self._secondary!r})"

    @property
    def primary(self) -> Lock:
        return self._primary

    @property
    def secondary(self) -> Lock:
        return self._secondary

    @property
    def identity(self) -> str:
        return self._primary.identity

    def describe(self) -> str:
        """``<primary>+<secondary>``, e.g. ``default/my-app+default/my-app``."""
        return f"{self._primary.describe()}+{self._secondary.describe()}"

    # -- Lock ----------------------------------------------------------------------------------

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read both; ``None`` if the primary does not exist (the secondary is then not read)."""
        deadline = _deadline(timeout)
        primary = await self._primary.get(timeout=self._left(deadline))
        if primary is None:
            return None
        secondary = await self._secondary.get(timeout=self._left(deadline))
        self._secondary_exists = secondary is not None
        return _combine(primary, secondary)

    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Create the primary, then create (or take over, if free or ours) the secondary."""
        deadline = _deadline(timeout)
        primary = await self._primary.create(record, timeout=self._left(deadline))
        secondary = await self._create_secondary(record, deadline)
        return _combine(primary, secondary)

    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Update the primary, then the secondary (creating it if it did not exist), both by
        compare-and-swap against what was last read or written."""
        deadline = _deadline(timeout)
        primary = await self._primary.update(record, timeout=self._left(deadline))
        if self._secondary_exists:
            try:
                secondary = await self._secondary.update(record, timeout=self._left(deadline))
            except LockConflict:
                secondary = await self._retry_own_secondary(record, deadline)
        else:
            secondary = await self._create_secondary(record, deadline)
        return _combine(primary, secondary)

    @property
    def supports_watch_cursor(self) -> bool:
        return self._primary.supports_watch_cursor and self._secondary.supports_watch_cursor

    def watch_cursor(self) -> WatchCursor:
        """Both objects' cursors as one (see [`MultiLock`][MultiLock]); cancel-safe like theirs."""
        if not self.supports_watch_cursor:
            raise NotImplementedError(
                f"{self.describe()}: watching needs a watch cursor on both locks"
            )
        return _MultiCursor(self._primary.watch_cursor(), self._secondary.watch_cursor())

    async def record_event(self, message: str) -> None:
        try:
            await self._primary.record_event(message)
        finally:
            await self._secondary.record_event(message)

    async def aclose(self) -> None:
        try:
            await self._primary.aclose()
        finally:
            await self._secondary.aclose()

    # -- helpers -------------------------------------------------------------------------------

    async def _retry_own_secondary(
        self, record: LeaderElectionRecord, deadline: float | None
    ) -> Observed:
        """The primary was written, the secondary's compare-and-swap failed. If the secondary
        still holds this candidate's own term (our identity, the same transition count: a write
        of ours whose reply was lost, e.g. a renewal cancelled after it was sent), write it
        again on its fresh version; the primary's success already made the write ours to make.
        Otherwise somebody else wrote it: [`LockConflict`][aioleader.LockConflict], and the
        caller's fresh get() decides."""
        self._secondary_exists = False
        fresh = await self._secondary.get(timeout=self._left(deadline))
        if fresh is None:
            raise LockConflict(f"{self._secondary.describe()} was deleted")
        if not still_ours(fresh.record, self.identity, record.leader_transitions):
            raise LockConflict(f"{self._secondary.describe()} was written by somebody else")
        self._secondary_exists = True
        return await self._secondary.update(record, timeout=self._left(deadline))

    async def _create_secondary(
        self, record: LeaderElectionRecord, deadline: float | None
    ) -> Observed:
        self._secondary_exists = False
        try:
            created = await self._secondary.create(record, timeout=self._left(deadline))
        except LockConflict:
            # It exists after all (left from an earlier leader, or created just now): adopt it
            # only if nobody holds it. Anybody else's record must expire through the elector,
            # which sees it through get() as the unknown leader.
            existing = await self._secondary.get(timeout=self._left(deadline))
            if existing is None:
                raise LockConflict(
                    f"{self._secondary.describe()} was created and deleted concurrently"
                ) from None
            self._secondary_exists = True
            holder = existing.record.holder_identity
            if holder and holder != self.identity:
                raise LockConflict(
                    f"{self._secondary.describe()} already exists and is held by {holder!r}"
                ) from None
            return await self._secondary.update(record, timeout=self._left(deadline))
        self._secondary_exists = True
        return created

    def _left(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        left = deadline - anyio.current_time()
        if left <= 0:
            raise LockError(f"{self.describe()}: no time left for the next request")
        return left


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else anyio.current_time() + timeout


def _combine(primary: Observed, secondary: Observed | None) -> Observed:
    """One observation of both objects (see [`MultiLock`][MultiLock] for the rules).

    ``extra`` is dropped: each lock keeps the fields it does not model from its own cached
    object, and one object's unknown fields have no place in the other's format.
    """
    p = primary.record
    if secondary is None:
        return Observed(
            record=p.with_changes(extra={}),
            raw=_frame(primary.raw),
            version=f"{primary.version}/",
            precise=primary.precise,
        )
    s = secondary.record
    transitions = max(p.leader_transitions, s.leader_transitions)
    if p.holder_identity == s.holder_identity:
        record = p.with_changes(leader_transitions=transitions, extra={})
    else:
        durations = [d for d in (p.lease_duration_seconds, s.lease_duration_seconds) if d]
        record = LeaderElectionRecord(
            holder_identity=UNKNOWN_LEADER,
            lease_duration_seconds=max(durations, default=None),
            acquire_time=p.acquire_time,
            renew_time=p.renew_time,
            leader_transitions=transitions,
        )
    return Observed(
        record=record,
        raw=_frame(primary.raw) + _frame(secondary.raw),
        version=f"{primary.version}/{secondary.version}",
        precise=primary.precise and secondary.precise,
    )


class _Unset:
    """No state read yet."""


_UNSET: Final = _Unset()


class _MultiCursor(WatchCursor):
    """The latest state of each object, combined as [`MultiLock.get()`][MultiLock.get] combines them.

    Each call waits on both cursors at once in a task group that lives only for the call; the
    first to deliver cancels the other, which loses nothing (its cursor is cancel-safe). A state
    is stored the moment its cursor returns it, so a cancellation of this call loses nothing
    either: the next call returns it.
    """

    def __init__(self, primary: WatchCursor, secondary: WatchCursor) -> None:
        self._cursors = (primary, secondary)
        self._states: list[Observed | _Unset | None] = [_UNSET, _UNSET]
        self._last: Observed | _Unset | None = _UNSET  # what was returned last

    def _combined(self) -> Observed | None:
        primary, secondary = self._states
        assert not isinstance(primary, _Unset)
        assert not isinstance(secondary, _Unset)
        return None if primary is None else _combine(primary, secondary)

    def _new(self) -> Observed | _Unset | None:
        """The combined state if it differs from the last one returned, else `_UNSET`."""
        state = self._combined()
        last = self._last
        differs = isinstance(last, _Unset) or not same_state(last, state)
        if not differs:
            return _UNSET
        self._last = state
        return state

    async def _take(self, index: int) -> None:
        self._states[index] = await self._cursors[index].next()

    async def next(self) -> Observed | None:
        # The first state of each, one after the other (the primary first, as get() reads).
        for index in (0, 1):
            if isinstance(self._states[index], _Unset):
                await self._take(index)
        while True:
            state = self._new()
            if not isinstance(state, _Unset):
                return state
            await self._either()

    async def _either(self) -> None:
        """Wait until either cursor delivers (both may); raise what one raised, as itself."""
        errors: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def take(index: int) -> None:
                try:
                    await self._take(index)
                except Exception as exc:  # re-raised below, rather than as a group
                    errors.append(exc)
                tg.cancel_scope.cancel()

            tg.start_soon(take, 0)
            tg.start_soon(take, 1)
        if errors:
            raise errors[0]

    def close(self) -> None:
        try:
            self._cursors[0].close()
        finally:
            self._cursors[1].close()
