"""Sharded leadership: ``N`` shards, one election each, shared fairly by the live replicas.

Built on [`campaign()`][aioleader.campaign] alone, so every shard keeps every guarantee of a single
election (renew deadline, fencing token, cancellation awaited before a release); the decisions
are in `aioleader._shard_decisions` (pure, plain values). One replica runs:

* its **membership election** on ``<group>-member-<identity slug>-<hash>``: the only candidate
  for that lock, it leads it while it is alive, so the live replicas are known from the locks
  alone (no extra component);
* a **reconcile loop**: every ``retry_period / 2`` it lists the group's membership locks
  ([`list_siblings()`][aioleader.Lock.list_siblings]), judges which are alive
  (`MembershipView`), computes the assignment of all shards
  over the live members (`assign()`: the same on every replica
  that sees the same members) and campaigns for its own part only;
* **one election per shard**, for the whole life of the group, *paused* unless the shard is
  assigned here. A paused election never takes the lock, but it keeps watching it (when the
  lock can be watched), so that when the shard is assigned here after its holder crashed, the
  election already knows when the holder last renewed and takes over exactly when the lease
  expires. Giving a shard up is [`pause()`][aioleader.Leadership.pause]: the term ends
  ("stepped down"), its work is cancelled and awaited, then the lock is released and the new
  owner, watching it, takes it at once.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Final, final

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._election import campaign
from ._exceptions import ElectionError, LockError
from ._leadership import Leadership, Term
from ._lock import Lock
from ._metrics import ShardMetrics
from ._options import ElectionOptions
from ._shard_decisions import (
    MembershipView,
    assign,
    check_group,
    check_shards,
    fair_share,
    member_lock_name,
    member_prefix,
    plan,
    shard_for,
    shard_lock_name,
)
from ._timing import Timing

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ShardStatistics", "Shards", "elect_shards"]

logger = logging.getLogger("aioleader")

#: Options of a shard's election that the group decides itself.
_GROUP_OPTIONS: Final = frozenset({"name", "candidate"})

_KEY: Final = object()


@final
@dataclass(frozen=True)
class ShardStatistics:
    """A snapshot of a shard group as this replica sees it (``shards.statistics()``).

    Attributes:
        group: the group's name (locks ``<group>-<index>``, ``<group>-member-...``).
        identity: this replica.
        shards: the number of shards.
        member: whether this replica leads its own membership lock.
        members: the live members seen in the last listing, sorted (this replica included while
            it is a member).
        fair_share: ``ceil(shards / len(members))``, the most one member holds once balanced.
        target: the shards the assignment gives this replica (it campaigns for these only).
        owned: the shards this replica leads now.
        holders: the observed holder of each shard (``None``: free, or not observed; a paused
            election of a lock that cannot be watched does not read it).
        acquired: shard terms begun here; ``released``: shard terms ended here.
        listings, listing_failures: membership listings done, and failed.
        last_error: the last listing error, if any.
    """

    group: str
    identity: str
    shards: int
    member: bool
    members: tuple[str, ...]
    fair_share: int
    target: frozenset[int]
    owned: frozenset[int]
    holders: tuple[str | None, ...]
    acquired: int
    released: int
    listings: int
    listing_failures: int
    last_error: str | None


@final
class Shards:
    """The handle [`elect_shards()`][elect_shards] yields. Built by the library.

    ::

        async with elect_shards(make_lock, group="orders", shards=32) as shards:
            async with shards.leading(shards.shard_for(order_id)) as term:
                ...  # this replica leads that shard; term.fencing_token fences the writes
    """

    def __init__(self, key: object, group: _Group) -> None:
        if key is not _KEY:
            raise TypeError("aioleader.Shards has no public constructor; use elect_shards()")
        self._group = group

    def __repr__(self) -> str:
        g = self._group
        return f"<Shards {g.name!r} identity={g.identity!r} owned={sorted(self.owned())}>"

    @property
    def group(self) -> str:
        return self._group.name

    @property
    def identity(self) -> str:
        return self._group.identity

    @property
    def shards(self) -> int:
        """The number of shards, ``N``."""
        return self._group.count

    def shard_for(self, key: str | bytes) -> int:
        """The shard of ``key``: ``int.from_bytes(sha256(key)[:8], "big") % N`` (a ``str`` is
        hashed as UTF-8). The same on every replica, process and aioleader version."""
        return shard_for(key, self._group.count)

    def owned(self) -> frozenset[int]:
        """The shards this replica leads right now (never blocks)."""
        return self._group.owned()

    def term(self, index: int) -> Term | None:
        """The active term of shard ``index`` here, or ``None`` if this replica does not lead it."""
        term = self._group.leadership(index).term
        return term if term is not None and term.active else None

    def leading(self, index: int) -> contextlib.AbstractAsyncContextManager[Term]:
        """Wait until this replica leads shard ``index``, then run the body in that term's scope
        (cancelled when the shard moves away or its renewals miss the renew deadline), exactly
        as [`Leadership.leading()`][aioleader.Leadership.leading]."""
        return self._group.leadership(index).leading()

    async def wait_owned_change(self) -> frozenset[int]:
        """Wait until the owned set changes (edge), and return the new one."""
        return await self._group.wait_owned_change()

    async def owned_changes(self) -> AsyncIterator[frozenset[int]]:
        """The owned set now, then each time it differs from the last one yielded (level:
        intermediate states may be skipped, the latest never is)."""
        last: frozenset[int] | None = None
        while True:
            current = self._group.owned()
            if current != last:
                last = current
                yield current
            else:
                await self._group.wait_owned_change()

    def statistics(self) -> ShardStatistics:
        """A frozen snapshot of the group as this replica sees it."""
        return self._group.statistics()


class _Group:
    """One replica's part in a shard group. Private: users hold a [`Shards`][Shards]."""

    def __init__(
        self,
        *,
        name: str,
        count: int,
        member_lock: Lock,
        shard_locks: list[Lock],
        timing: Timing,
        options: dict[str, Any],
    ) -> None:
        self.name = name
        self.count = count
        self.identity = member_lock.identity
        self.member_lock = member_lock
        self.shard_locks = shard_locks
        self.timing = timing
        self.options = options
        metrics = options.get("metrics")
        self.metrics = metrics if isinstance(metrics, ShardMetrics) else None
        self.view = MembershipView(timing.lease_duration)
        self.handle = Shards(_KEY, self)
        self._leaderships: list[Leadership] = []
        self._member: Leadership | None = None
        self._member_since: float | None = None
        self._wanted: frozenset[int] = frozenset()
        self._members: frozenset[str] = frozenset()
        self._owned: frozenset[int] = frozenset()
        self._followed: set[int] = set()
        self._owned_changed = anyio.Event()
        self._wake = anyio.Event()
        self.acquired = 0
        self.released = 0
        self.listings = 0
        self.listing_failures = 0
        self.last_error: str | None = None

    # -- what the handle reads -------------------------------------------------------------------

    def leadership(self, index: int) -> Leadership:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"shard index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.count:
            raise ValueError(f"shard index must be in 0..{self.count - 1}, got {index}")
        return self._leaderships[index]

    def owned(self) -> frozenset[int]:
        # The shards whose term this group has taken note of (so ``acquired`` already counts
        # them) and that are still led: a term that began but whose follower has not run yet
        # is not reported, and one that ended is dropped at once.
        return frozenset(i for i in self._followed if self._leaderships[i].is_leader_nowait())

    async def wait_owned_change(self) -> frozenset[int]:
        await self._owned_changed.wait()
        return self.owned()

    def statistics(self) -> ShardStatistics:
        return ShardStatistics(
            group=self.name,
            identity=self.identity,
            shards=self.count,
            member=self._is_member(),
            members=tuple(sorted(self._members)),
            fair_share=fair_share(self.count, len(self._members)),
            target=self._wanted,
            owned=self.owned(),
            holders=tuple(s.leader for s in self._leaderships),
            acquired=self.acquired,
            released=self.released,
            listings=self.listings,
            listing_failures=self.listing_failures,
            last_error=self.last_error,
        )

    # -- running ---------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Shards]) -> None:
        base = {k: v for k, v in self.options.items() if k not in ("ready", "metrics")}
        async with anyio.create_task_group() as tg:
            self._member = await tg.start(
                partial(
                    campaign,
                    self.member_lock,
                    timing=self.timing,
                    rng=self.options.get("rng"),
                    release_on_cancel=True,
                )
            )
            tg.start_soon(self._follow_member, self._member)
            for index, lock in enumerate(self.shard_locks):
                leadership = await self._start_shard(tg, index, lock, base)
                self._leaderships.append(leadership)
                tg.start_soon(self._follow_shard, index, leadership)
            task_status.started(self.handle)
            await self._reconcile()

    async def _start_shard(
        self, tg: TaskGroup, index: int, lock: Lock, base: dict[str, Any]
    ) -> Leadership:
        """Start shard ``index``'s election paused, before it can make a first attempt.

        The elector asks ``ready`` before its first attempt; our ``ready`` holds that first
        question until the election has been paused here (``pause()`` needs the handle, which
        only exists once the task has started). After that it answers with the user's own
        ``ready`` (always ready without one): assignment is applied with ``pause()`` and
        ``resume()``, which take effect at once.
        """
        gate = anyio.Event()
        user_ready = self.options.get("ready")
        first = True

        async def ready() -> bool:
            nonlocal first
            if first:
                first = False
                await gate.wait()
            if user_ready is None:
                return True
            value = user_ready()
            if inspect.isawaitable(value):
                value = await value
            return bool(value)

        options = {
            **base,
            "ready": ready,
            "metrics": self.options.get("metrics"),
            "name": f"{self.name}[{index}]",
        }
        leadership: Leadership = await tg.start(partial(campaign, lock, **options))
        leadership.pause()
        gate.set()
        return leadership

    async def _follow_member(self, leadership: Leadership) -> None:
        with contextlib.suppress(ElectionError):
            while True:
                term = await leadership.wait_term()
                self._wake.set()
                await term.wait_ended()
                self._member_since = None
                self._apply(anyio.current_time())
                self._wake.set()

    async def _follow_shard(self, index: int, leadership: Leadership) -> None:
        with contextlib.suppress(ElectionError):
            while True:
                term = await leadership.wait_term()
                self.acquired += 1
                self._followed.add(index)
                if self.metrics is not None:
                    self.metrics.shard_moved(self.name, acquired=True)
                self._owned_change()
                if index not in self._wanted:
                    # pause() does not stop an attempt already in flight: a write sent before
                    # the shard was given up can still win. Give that term up at once.
                    leadership.pause()
                await term.wait_ended()
                self._followed.discard(index)
                self.released += 1
                if self.metrics is not None:
                    self.metrics.shard_moved(self.name, acquired=False)
                self._owned_change()

    def _owned_change(self) -> None:
        owned = self.owned()
        if owned != self._owned:
            self._owned = owned
            event, self._owned_changed = self._owned_changed, anyio.Event()
            event.set()
            if self.metrics is not None:
                self.metrics.shards_changed(self.name, len(owned), len(self._members))

    def _is_member(self) -> bool:
        return self._member is not None and self._member.is_leader_nowait()

    async def _reconcile(self) -> None:
        """List the members, decide, apply; every ``RP / 2``, sooner when a member expires or
        our own membership changes."""
        interval = self.timing.retry_period / 2
        prefix = member_prefix(self.name)
        while True:
            started = anyio.current_time()
            if self._is_member() and self._member_since is None:
                self._member_since = started
            bound = self.timing.renew_deadline / 2
            try:
                # The lock bounds its request by ``timeout``; the scope is the backstop for a
                # lock that does not (a listing must never stall the loop).
                with anyio.fail_after(bound):
                    listing = await self.member_lock.list_siblings(prefix, timeout=bound)
            except (LockError, TimeoutError) as exc:
                # Membership stays as last seen; so does what we campaign for (a replica that
                # cannot list must not take everything because the others look expired).
                self.listing_failures += 1
                self.last_error = repr(exc)
            else:
                self.listings += 1
                now = anyio.current_time()
                wall = datetime.now(timezone.utc)
                self.view.observe(
                    {
                        name: (
                            o.record.holder_identity,
                            o.raw,
                            o.record.lease_duration_seconds,
                            None
                            if o.record.renew_time is None
                            else (wall - o.record.renew_time).total_seconds(),
                        )
                        for name, o in listing.items()
                    },
                    now,
                )
                # Decide only on a listing sent while we were a member: it shows our own lock,
                # so what we take, the others (listing from now on) count us for.
                if self._member_since is not None or not self._is_member():
                    self._apply(now)
            now = anyio.current_time()
            wake_at = min(started + interval, self.view.next_expiry(now))
            wake = self._wake
            with anyio.move_on_after(max(0.0, wake_at - now)):
                await wake.wait()
            if wake.is_set():
                self._wake = anyio.Event()

    def _apply(self, now: float) -> None:
        members = set(self.view.live(now))
        if self._is_member():
            members.add(self.identity)
        else:
            members.discard(self.identity)
        target = (
            assign(self.count, members).get(self.identity, frozenset())
            if self._is_member()
            else frozenset()
        )
        changes = plan(self._wanted, target)
        if members != self._members:
            logger.info(
                "%s: members are now %s",
                self.name,
                ", ".join(sorted(members)) or "nobody",
                extra={"group": self.name, "identity": self.identity},
            )
        self._members = frozenset(members)
        self._wanted = target
        for index in sorted(changes.pause):
            self._leaderships[index].pause()
        for index in sorted(changes.resume):
            self._leaderships[index].resume()
        if changes.pause or changes.resume:
            logger.info(
                "%s: %s campaigns for %d shards (gives up %s, takes up %s)",
                self.name,
                self.identity,
                len(target),
                sorted(changes.pause),
                sorted(changes.resume),
                extra={"group": self.name, "identity": self.identity},
            )
        if self.metrics is not None:
            self.metrics.shards_changed(self.name, len(self.owned()), len(members))


def _build(
    make_lock: Callable[[str], Lock], group: str, shards: int, options: dict[str, Any]
) -> _Group:
    name = check_group(group)
    count = check_shards(shards)
    if not callable(make_lock):
        raise TypeError(f"make_lock must be callable, got {type(make_lock).__name__}")
    given = sorted(_GROUP_OPTIONS & set(options))
    if given:
        raise TypeError(
            f"elect_shards() decides {given[0]!r} for each shard's election itself; do not pass it"
        )
    timing = options.get("timing")
    if timing is None:
        timing = Timing()
    elif not isinstance(timing, Timing):
        raise TypeError(f"timing must be an aioleader.Timing, got {type(timing).__name__}")

    def built(lock_name: str) -> Lock:
        lock = make_lock(lock_name)
        if not isinstance(lock, Lock):
            raise TypeError(
                f"make_lock({lock_name!r}) must return an aioleader Lock, got {type(lock).__name__}"
            )
        return lock

    shard_locks = [built(shard_lock_name(name, i)) for i in range(count)]
    identity = shard_locks[0].identity
    member_lock = built(member_lock_name(name, identity))
    for lock in [*shard_locks, member_lock]:
        if lock.identity != identity:
            raise ValueError(
                f"make_lock must build every lock with the same identity: {lock.describe()} "
                f"has {lock.identity!r}, {shard_locks[0].describe()} has {identity!r}"
            )
    if not member_lock.supports_listing:
        raise TypeError(
            f"{type(member_lock).__name__} cannot list its siblings (Lock.list_siblings), which "
            "elect_shards() needs to find the other replicas; use LeaseLock, FileLock or "
            "MemoryLock"
        )
    return _Group(
        name=name,
        count=count,
        member_lock=member_lock,
        shard_locks=shard_locks,
        timing=timing,
        options={**options, "timing": timing},
    )


@asynccontextmanager
async def _elect_shards(group: _Group) -> AsyncIterator[Shards]:
    try:
        try:
            async with anyio.create_task_group() as tg:
                handle: Shards = await tg.start(group.run)
                try:
                    yield handle
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for lock in [*group.shard_locks, group.member_lock]:
                    with anyio.move_on_after(group.timing.renew_deadline):
                        await lock.aclose()
    except BaseExceptionGroup as exc:
        error = _single(exc, group.name)
    else:
        return
    raise error


def _single(group: BaseExceptionGroup[BaseException], name: str) -> BaseException:
    if len(group.exceptions) == 1:
        return group.exceptions[0]
    error = ElectionError(f"shard group {name} failed with {len(group.exceptions)} errors")
    error.__cause__ = group
    return error


def elect_shards(
    make_lock: Callable[[str], Lock],
    *,
    group: str,
    shards: int,
    **options: Unpack[ElectionOptions],
) -> contextlib.AbstractAsyncContextManager[Shards]:
    """Share ``shards`` elections fairly among the live replicas for the duration of the block::

        api = ApiClient(...)                       # one client for all the locks
        make_lock = partial(LeaseLock, namespace="default", api_client=api)
        async with elect_shards(make_lock, group="orders", shards=32, timing=timing) as shards:
            async for owned in shards.owned_changes():
                print("leading shards", sorted(owned))

    Args:
        make_lock: builds this replica's lock for an object name (same kind, place and identity
            for every name): ``<group>-<index>`` for each shard, ``<group>-member-...`` for
            this replica's membership. The membership lock must support
            [`list_siblings()`][aioleader.Lock.list_siblings] (LeaseLock, FileLock, MemoryLock do). The locks
            are closed when the block ends.
        group: the group's name, a DNS-1123 label (at most 63 characters).
        shards: the number of shards ``N`` (1..4096), the same on every replica. Keys map to
            shards by [`Shards.shard_for()`][Shards.shard_for], so changing ``N`` re-routes most keys.
        **options: each shard's election options (see
            [`ElectionOptions`][aioleader.ElectionOptions]), except ``name`` and ``candidate``; ``timing``
            also times the membership election. ``ready`` gates every shard.

    Every shard is a normal election (never two holders of one shard's term); each replica
    campaigns only for the shards the assignment gives it (about ``ceil(N / members)``), gives
    up what it no longer should hold (work cancelled and awaited, then the lock released), and
    takes a crashed replica's shards once their leases expire. See the sharding docs for the
    bounds.

    Raises:
        TypeError, ValueError: bad arguments, or ``make_lock`` building locks of several
            identities (raised here, before any lock is used).
    """
    return _elect_shards(_build(make_lock, group, shards, dict(options)))
