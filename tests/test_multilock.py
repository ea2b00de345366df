"""MultiLock: the combination rules on MemoryLock pairs (fake clocks, both backends), migrations
on fake time, and the ConfigMap-to-Lease migration through the real client against the emulator."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from _groups import Group
from anyio.abc import TaskGroup

from aioleader import (
    LeaderElectionRecord,
    Leadership,
    Lock,
    LockConflict,
    LockError,
    Observed,
    Timing,
)
from aioleader._record import LEADER_ANNOTATION
from aioleader.kubernetes import ConfigMapLock, LeaseLock
from aioleader.locks import MemoryLock, MultiLock
from aioleader.locks._multi import UNKNOWN_LEADER
from aioleader.testing import KubeEmulator, TermLog, lead_forever

pytestmark = pytest.mark.fake_clock  # its anyio tests; the pytest-asyncio ones run in real time


# -- fake clocks (the MemoryLock tests) --------------------------------------------------------


class Recording(MemoryLock):
    """A MemoryLock that records the calls made on it, optionally slow or failing."""

    def __init__(self, identity: str, *, name: str = "memory-lock") -> None:
        super().__init__(identity, name=name)
        self.calls: list[tuple[str, float | None]] = []
        self.delay = 0.0
        self.fail_event = False

    def sibling(self, identity: str) -> Recording:
        other = Recording(identity, name=self._name)
        other._slot = self._slot
        return other

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        self.calls.append(("get", timeout))
        await anyio.sleep(self.delay)
        return await super().get(timeout=timeout)

    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        self.calls.append(("create", timeout))
        await anyio.sleep(self.delay)
        return await super().create(record, timeout=timeout)

    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        self.calls.append(("update", timeout))
        await anyio.sleep(self.delay)
        return await super().update(record, timeout=timeout)

    async def record_event(self, message: str) -> None:
        self.calls.append((f"event {message}", None))
        if self.fail_event:
            raise RuntimeError("event sink down")

    async def aclose(self) -> None:
        self.calls.append(("aclose", None))

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]


def _pair(identity: str = "a") -> tuple[Recording, Recording]:
    return Recording(identity, name="primary"), Recording(identity, name="secondary")


def _multi(primary: Recording, secondary: Recording, identity: str) -> MultiLock:
    return MultiLock(primary.sibling(identity), secondary.sibling(identity))


def _rec(holder: str, transitions: int = 0, duration: int | None = 15) -> LeaderElectionRecord:
    return LeaderElectionRecord(holder, duration, leader_transitions=transitions)


def _frame(raw: bytes) -> bytes:
    return b"%d:%s," % (len(raw), raw)


def test_construction_is_checked() -> None:
    p, s = _pair("a")
    with pytest.raises(ValueError, match=r"same identity, got 'a' and 'b'"):
        MultiLock(p, s.sibling("b"))
    with pytest.raises(ValueError, match="two different lock objects"):
        MultiLock(p, p)
    with pytest.raises(TypeError, match="secondary must be an aioleader Lock, got str"):
        MultiLock(p, "lease")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is reserved"):
        MultiLock(MemoryLock(UNKNOWN_LEADER), MemoryLock(UNKNOWN_LEADER))
    lock = MultiLock(p, s)
    assert (lock.primary, lock.secondary, lock.identity) == (p, s, "a")
    assert lock.describe() == "memory/primary+memory/secondary"
    assert repr(lock).startswith("MultiLock(<")
    assert isinstance(lock, Lock)
    assert lock.supports_watch  # both MemoryLocks have watch cursors


@pytest.mark.anyio
async def test_get_of_a_missing_primary_is_none_without_reading_the_secondary() -> None:
    p, s = _pair()
    await s.create(_rec("x"))
    s.calls.clear()
    assert await MultiLock(p, s).get() is None
    assert (p.verbs(), s.verbs()) == (["get"], [])


@pytest.mark.anyio
async def test_create_writes_both_and_get_reads_both() -> None:
    p, s = _pair()
    lock = MultiLock(p, s)
    created = await lock.create(_rec("a", 3))
    assert (p.verbs(), s.verbs()) == (["create"], ["create"])
    assert p.peek() == s.peek() == _rec("a", 3)
    assert created.record == _rec("a", 3)
    assert created.version == "1/1"
    raw_p, raw_s = p._slot.raw, s._slot.raw
    assert raw_p is not None
    assert raw_s is not None
    assert created.raw == _frame(raw_p) + _frame(raw_s)
    observed = await lock.get()
    assert observed == created
    assert (p.verbs(), s.verbs()) == (["create", "get"], ["create", "get"])


@pytest.mark.anyio
async def test_a_missing_secondary_reads_as_the_primary_and_is_created_by_update() -> None:
    p, s = _pair()
    old = p.sibling("old")  # a replica that still uses the primary alone
    await old.create(_rec("old", 4))
    lock = _multi(p, s, "a")
    observed = await lock.get()
    assert observed is not None
    assert observed.record == _rec("old", 4)  # no unknown leader: the secondary is just missing
    assert observed.raw == _frame(p._slot.raw or b"")
    assert observed.version == "1/"

    updated = await lock.update(_rec("a", 5))
    assert p.peek() == s.peek() == _rec("a", 5)
    assert updated.record == _rec("a", 5)
    assert updated.raw != observed.raw


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("primary", "secondary", "expected"),
    [
        (_rec("a", 3), _rec("a", 3), _rec("a", 3)),
        (_rec("", 3, 1), _rec("", 3, 1), _rec("", 3, 1)),  # released: free
        # Same holder, counts apart (someone using our identity): the larger count.
        (_rec("a", 3), _rec("a", 7), _rec("a", 7)),
        # Different holders: the unknown leader, never free, with the longer valid duration.
        (_rec("old", 9, 10), _rec("new", 4, 30), _rec(UNKNOWN_LEADER, 9, 30)),
        (_rec("", 2, 1), _rec("new", 4, 15), _rec(UNKNOWN_LEADER, 4, 15)),
        (_rec("old", 2, 15), _rec("", 4, 1), _rec(UNKNOWN_LEADER, 4, 15)),
        (_rec("old", 2, None), _rec("new", 4, None), _rec(UNKNOWN_LEADER, 4, None)),
    ],
)
async def test_combined_record(
    primary: LeaderElectionRecord,
    secondary: LeaderElectionRecord,
    expected: LeaderElectionRecord,
) -> None:
    p, s = _pair()
    await p.create(primary)
    await s.create(secondary)
    observed = await MultiLock(p, s).get()
    assert observed is not None
    assert observed.record == expected
    assert observed.record.is_free == (primary.is_free and secondary.is_free)


@pytest.mark.anyio
async def test_a_change_to_either_object_changes_raw() -> None:
    p, s = _pair()
    lock = MultiLock(p, s)
    await p.create(_rec("old", 1))
    await s.create(_rec("new", 1))
    first = await lock.get()
    other = s.sibling("new")
    await other.get()
    await other.update(_rec("new", 1).with_changes(renew_time=datetime.now(timezone.utc)))
    second = await lock.get()
    assert first is not None
    assert second is not None
    assert first.record == second.record  # still the unknown leader, same duration...
    assert first.raw != second.raw  # ...but a follower sees that somebody is renewing


@pytest.mark.anyio
async def test_update_writes_primary_then_secondary_with_compare_and_swap() -> None:
    p, s = _pair()
    lock = MultiLock(p, s)
    await lock.create(_rec("a", 0))
    p.calls.clear()
    s.calls.clear()
    for n in range(3):
        await lock.update(_rec("a", 0, 15 + n))
    assert (p.verbs(), s.verbs()) == (["update"] * 3, ["update"] * 3)  # no GETs: the fast path
    assert (p.writes, s.writes) == (4, 4)


@pytest.mark.anyio
async def test_a_secondary_written_by_somebody_else_is_a_conflict_not_an_overwrite() -> None:
    p, s = _pair()
    lock = MultiLock(p, s)
    await lock.create(_rec("a", 0))
    intruder = s.sibling("lease-only")  # step 2 of a migration: a replica on the secondary alone
    await intruder.get()
    await intruder.update(_rec("lease-only", 1))

    with pytest.raises(LockConflict):
        await lock.update(_rec("a", 0))
    # The primary was written (it comes first); the secondary was not overwritten.
    assert p.peek() == _rec("a", 0)
    assert s.peek() == _rec("lease-only", 1)
    # The elector's fresh read then shows two holders: not ours any more.
    observed = await lock.get()
    assert observed is not None
    assert observed.record == _rec(UNKNOWN_LEADER, 1)


@pytest.mark.anyio
async def test_a_secondary_write_of_ours_whose_reply_was_lost_is_written_again() -> None:
    """A renewal cancelled after it was sent (a graceful stop) leaves the secondary at a version
    we never saw: the next write (the release) re-reads it, finds our own term, and writes on."""
    p, s = _pair()
    lock = MultiLock(p, s)
    await lock.create(_rec("a", 0))
    ghost = s.sibling("a")  # our own write, landed, its reply never read
    await ghost.get()
    await ghost.update(_rec("a", 0, 16))
    s.calls.clear()
    await lock.update(_rec("", 0, 1))  # the release
    assert s.verbs() == ["update", "get", "update"]
    assert (p.peek(), s.peek()) == (_rec("", 0, 1), _rec("", 0, 1))


@pytest.mark.anyio
async def test_a_deleted_secondary_is_recreated_after_the_fresh_read() -> None:
    p, s = _pair()
    lock = MultiLock(p, s)
    await lock.create(_rec("a", 0))
    s.delete()
    with pytest.raises(LockConflict, match="deleted"):
        await lock.update(_rec("a", 0))
    observed = await lock.get()
    assert observed is not None
    assert observed.record == _rec("a", 0)  # still ours: the elector renews
    s.calls.clear()
    await lock.update(_rec("a", 0))
    assert s.verbs() == ["create"]
    assert s.peek() == _rec("a", 0)


@pytest.mark.anyio
async def test_create_of_an_existing_primary_is_a_conflict_and_leaves_the_secondary() -> None:
    p, s = _pair()
    await p.sibling("other").create(_rec("other"))
    with pytest.raises(LockConflict, match="already exists"):
        await MultiLock(p, s).create(_rec("a"))
    assert s.verbs() == []
    assert s.peek() is None


@pytest.mark.anyio
@pytest.mark.parametrize("holder", ["", "a"])
async def test_create_takes_over_an_existing_secondary_that_is_free_or_ours(holder: str) -> None:
    p, s = _pair()
    await s.create(_rec(holder, 6, 1))
    s.calls.clear()
    created = await MultiLock(p, s).create(_rec("a", 7))
    assert s.verbs() == ["create", "get", "update"]
    assert p.peek() == s.peek() == _rec("a", 7)
    assert created.record == _rec("a", 7)


@pytest.mark.anyio
async def test_create_does_not_take_over_a_secondary_held_by_somebody_else() -> None:
    p, s = _pair()
    await s.sibling("lease-only").create(_rec("lease-only", 6))
    with pytest.raises(LockConflict, match="held by 'lease-only'"):
        await MultiLock(p, s).create(_rec("a", 7))
    assert s.peek() == _rec("lease-only", 6)
    assert p.peek() == _rec("a", 7)  # the arbiter names us, without a term: it will expire


@pytest.mark.anyio
async def test_the_timeout_bounds_both_requests() -> None:
    p, s = _pair()
    lock = MultiLock(p, s)
    await lock.create(_rec("a"))
    p.calls.clear()
    s.calls.clear()
    p.delay = 3.0
    start = anyio.current_time()
    await lock.get(timeout=5)
    assert anyio.current_time() - start == 3.0
    assert p.calls == [("get", 5.0)]
    assert s.calls == [("get", 2.0)]  # what was left

    p.delay = 5.0
    with pytest.raises(LockError, match=r"^memory/primary\+memory/secondary: no time left"):
        await lock.update(_rec("a"), timeout=5)
    assert s.verbs() == ["get"]  # the secondary was not even tried
    with pytest.raises(LockError, match="no time left"):
        await lock.get(timeout=0)
    assert (await lock.get()) is not None  # timeout=None: each lock's own bound


@pytest.mark.anyio
async def test_record_event_and_aclose_reach_both() -> None:
    p, s = _pair()
    p.fail_event = True
    lock = MultiLock(p, s)
    with pytest.raises(RuntimeError, match="event sink down"):
        await lock.record_event("a became leader")
    async with lock:
        pass
    assert p.verbs() == ["event a became leader", "aclose"]
    assert s.verbs() == ["event a became leader", "aclose"]


# -- migrations on fake time -------------------------------------------------------------------

TIMING = Timing()  # 15 / 10 / 2


class DyadicJitter(random.Random):
    """Seeded jitter in steps of 1/64 s, so that every virtual time is exact in binary.

    With arbitrary floats, ``observed_at + duration - now`` can come out as 1e-15 where it
    should be 0; looptime rounds such a sleep to no time at all, and the elector would poll
    again at the same virtual instant forever.
    """

    def uniform(self, a: float, b: float) -> float:
        return round(super().uniform(a, b) * 64) / 64


class Candidates:
    """Candidates of several lock kinds on fake time, each in its own cancel scope, one log."""

    def __init__(self, tg: TaskGroup, *, seed: int = 0) -> None:
        self.tg = tg
        self.log = TermLog()
        self.rng = random.Random(seed)
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.leaderships: dict[str, Leadership] = {}

    async def start(self, name: str, lock: Lock, *, release_on_cancel: bool = True) -> None:
        scope = anyio.CancelScope()
        self.scopes[name] = scope

        async def run(*, task_status: anyio.abc.TaskStatus[Leadership]) -> None:
            with scope:
                await lead_forever(
                    lock,
                    self.log,
                    task_status=task_status,
                    timing=TIMING,
                    release_on_cancel=release_on_cancel,
                    rng=DyadicJitter(self.rng.random()),
                )

        self.leaderships[name] = await self.tg.start(run)

    def stop(self, name: str) -> None:
        self.scopes.pop(name).cancel()
        del self.leaderships[name]

    def leaders(self) -> list[str]:
        return [n for n, lead in self.leaderships.items() if lead.is_leader_nowait()]

    async def wait_leader(self, *, limit: float = 60) -> tuple[str, float]:
        """The next leader and the (exact) time its term began."""
        with anyio.fail_after(limit):
            while True:
                if self.leaders():
                    break
                await anyio.sleep(0.5)
        [name] = self.leaders()
        term = self.leaderships[name].term
        assert term is not None
        return name, term.acquired_at


@asynccontextmanager
async def candidates(seed: int = 0) -> AsyncIterator[Candidates]:
    async with anyio.create_task_group() as tg:
        c = Candidates(tg, seed=seed)
        yield c
        tg.cancel_scope.cancel()
    assert c.log.overlaps == []
    assert c.log.late_work == []
    assert c.log.fencing_monotonic


@pytest.mark.anyio
async def test_migration_on_fake_time_exact_handovers() -> None:
    """Old replicas on the primary alone, new ones on the MultiLock, old ones leaving."""
    cm, lease = MemoryLock("-", name="cm"), MemoryLock("-", name="lease")
    async with candidates() as c:
        await c.start("old-1", cm.sibling("old-1"), release_on_cancel=False)  # will crash
        assert await c.wait_leader() == ("old-1", 0.0)
        await c.start("old-2", cm.sibling("old-2"))
        for name in ("new-1", "new-2"):
            await c.start(name, MultiLock(cm.sibling(name), lease.sibling(name)))
        await anyio.sleep(30)  # the old leader renews; nobody else takes over, the Lease waits
        assert c.leaders() == ["old-1"]
        assert lease.peek() is None

        # Crash the old leader at t=31: its last renewal was at t=30, seen by the polls that
        # followed; somebody takes over exactly LD after seeing it (t=30 + poll delay + 15).
        await anyio.sleep(1)
        c.stop("old-1")
        last_renewal = 30.0
        leader, at = await c.wait_leader()
        assert last_renewal + TIMING.lease_duration <= at <= 30 + 2.2 * 2 + 15

        # Stop the remaining old replica (gracefully, or by crash if it leads).
        c.stop("old-2")
        leader, at = await c.wait_leader()
        assert leader.startswith("new-")
        await anyio.sleep(5)
        assert c.leaders() == [leader]
        assert cm.peek() == lease.peek()
        record = lease.peek()
        assert record is not None
        assert record.holder_identity == leader

        # Step 2 can begin: a replica on the Lease alone sees the MultiLock leader and waits.
        await c.start("lease-1", lease.sibling("lease-1"))
        await anyio.sleep(60)
        assert c.leaders() == [leader]


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_mixed_kinds_under_random_crashes_never_two_leaders(seed: int) -> None:
    """Random crashes and graceful stops of whoever leads, in both steps of a migration: old
    replicas (primary alone) with MultiLock ones, then MultiLock ones with new (secondary alone)
    ones. The secondary is kept in step with the primary by every MultiLock leader."""
    rng = random.Random(seed)
    cm, lease = MemoryLock("-", name="cm"), MemoryLock("-", name="lease")
    kinds: dict[str, Callable[[str], Lock]] = {
        "old": cm.sibling,
        "multi": lambda name: MultiLock(cm.sibling(name), lease.sibling(name)),
        "new": lease.sibling,
    }
    for step in (("old", "multi"), ("multi", "new")):
        async with candidates(seed) as c:
            names = [f"{kind}-{i}" for kind in step for i in range(2)]
            for name in names:
                lock = kinds[name.split("-")[0]](name)
                await c.start(name, lock, release_on_cancel=rng.random() < 0.5)
            for _ in range(12):
                await c.wait_leader(limit=120)
                await anyio.sleep(rng.uniform(0, 20))
                current = c.leaders()
                assert len(current) <= 1
                if not current:
                    continue
                # Stop whoever leads: gracefully (released) or by crash (not released), and
                # restart it a little later, as a rollout or a node failure would.
                [name] = current
                c.stop(name)
                await anyio.sleep(rng.uniform(0.5, 5))
                lock = kinds[name.split("-")[0]](name)
                await c.start(name, lock, release_on_cancel=rng.random() < 0.5)
        assert c.log.failovers >= 10


# -- the ConfigMap-to-Lease migration against the emulator, real time ---------------------------

REAL_TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)
NS = "default"


class Rollout(Group):
    """Old replicas (ConfigMapLock) and new ones (MultiLock(ConfigMapLock, LeaseLock)) on one
    name, each through its own emulator endpoint, with one term log."""

    def __init__(self, emu: KubeEmulator, tg: TaskGroup) -> None:
        super().__init__(tg, timing=REAL_TIMING, tolerance=0.05)  # real time: loop latency
        self.emu = emu

    async def join(self, name: str, *, new: bool) -> Leadership:
        api = await self.emu.api_client(name)
        lock: Lock = ConfigMapLock("app", NS, identity=name, api_client=api)
        if new:
            lock = MultiLock(lock, LeaseLock("app", NS, identity=name, api_client=api))
        return await self.start(lock)

    def crash(self, name: str) -> None:
        """Its network goes dark first, so nothing it sends afterwards (the release) arrives."""
        self.emu.faults(name).partition("blackhole")
        self.stop(name)

    def configmap_holder(self) -> str:
        obj = self.emu.get_object("configmaps", NS, "app")
        assert obj is not None
        holder = json.loads(obj["metadata"]["annotations"][LEADER_ANNOTATION])["holderIdentity"]
        assert isinstance(holder, str)
        return holder

    def lease_spec(self) -> dict[str, Any] | None:
        obj = self.emu.get_object("leases", NS, "app")
        return None if obj is None else dict(obj["spec"])


@asynccontextmanager
async def rollout(emu: KubeEmulator) -> AsyncIterator[Rollout]:
    async with anyio.create_task_group() as tg:
        r = Rollout(emu, tg)
        yield r
        await anyio.sleep(0.2)  # let the last leader enter its work before everything stops
        tg.cancel_scope.cancel()
    r.assert_safe()


def _since(start: float) -> float:
    return anyio.current_time() - start


@pytest.mark.asyncio
@pytest.mark.emulator_only
async def test_rollout_from_configmap_to_lease_never_has_two_leaders(emu: KubeEmulator) -> None:
    ld, rp = REAL_TIMING.lease_duration, REAL_TIMING.retry_period
    async with rollout(emu) as r:
        await r.join("old-1", new=False)
        assert await r.wait_leader() == "old-1"
        await r.join("old-2", new=False)
        # The rollout begins: new replicas join while an old one leads.
        for name in ("new-1", "new-2"):
            await r.join(name, new=True)
        await anyio.sleep(1.5 * ld)
        assert r.leaders() == ["old-1"]
        assert r.lease_spec() is None  # only a MultiLock leader writes the Lease

        # The old leader's pod is killed: somebody takes over once its record expires.
        start = anyio.current_time()
        r.crash("old-1")
        second = await r.wait_leader(other_than="old-1")
        assert _since(start) >= ld - 2.2 * rp - 0.1

        # The last old replica is stopped gracefully: if it leads, it hands over at once.
        start = anyio.current_time()
        r.stop("old-2")
        leader = await r.wait_leader(other_than="old-2")
        assert leader.startswith("new-")
        if second == "old-2":
            assert _since(start) < 2.2 * rp + 0.5
        await anyio.sleep(ld)
        assert r.leaders() == [leader]
        lease = r.lease_spec()
        assert lease is not None
        assert lease["holderIdentity"] == r.configmap_holder() == leader

        # After the rollout the Lease carries the election: a crash of the new leader fails
        # over to the other new replica, and the Lease names it.
        r.crash(leader)
        third = await r.wait_leader(other_than=leader)
        await anyio.sleep(0.5)
        lease = r.lease_spec()
        assert lease is not None
        assert lease["holderIdentity"] == r.configmap_holder() == third
        transitions = json.loads(
            (emu.get_object("configmaps", NS, "app") or {})["metadata"]["annotations"][
                LEADER_ANNOTATION
            ]
        )["leaderTransitions"]
        assert lease["leaseTransitions"] == transitions


@pytest.mark.asyncio
@pytest.mark.emulator_only
async def test_an_old_replica_between_two_new_ones_is_respected(emu: KubeEmulator) -> None:
    """A new leader crashes, an old replica takes the ConfigMap (the Lease still names the new
    one): a new replica must see two holders - the unknown leader - and wait, not take the
    lock because the Lease looks stale."""
    ld, rp = REAL_TIMING.lease_duration, REAL_TIMING.retry_period
    async with rollout(emu) as r:
        await r.join("new-1", new=True)
        assert await r.wait_leader() == "new-1"
        await r.join("old-1", new=False)
        r.crash("new-1")
        assert await r.wait_leader() == "old-1"
        lease = r.lease_spec()
        assert lease is not None
        assert lease["holderIdentity"] == "new-1"  # stale: old replicas do not write it

        follower = await r.join("new-2", new=True)
        await anyio.sleep(1.5 * ld)
        assert r.leaders() == ["old-1"]
        assert follower.leader == UNKNOWN_LEADER

        # The old replica leaves gracefully: the ConfigMap is free, but the Lease still names
        # new-1, so new-2 waits out a lease duration instead of taking over at once.
        start = anyio.current_time()
        r.stop("old-1")
        assert await r.wait_leader() == "new-2"
        assert ld - 0.1 <= _since(start) <= ld + 2.2 * rp + 0.5
        await anyio.sleep(0.5)
        lease = r.lease_spec()
        assert lease is not None
        assert lease["holderIdentity"] == r.configmap_holder() == "new-2"


# -- watching (MemoryLock pairs, fake clocks) ---------------------------------------------------


@pytest.mark.anyio
async def test_watch_yields_what_get_would_read_and_a_release_of_one_object_is_not_free() -> None:
    p, s = _pair("w")
    watcher, writer, reader = MultiLock(p, s), _multi(p, s, "b"), _multi(p, s, "r")
    with anyio.fail_after(5):
        async with aclosing(watcher.watch()) as states:
            assert await anext(states) is None  # no primary: no lock

            async def settled() -> Observed:
                """What the watch yields until it agrees with a fresh get()."""
                fresh = await reader.get()
                assert fresh is not None
                while True:
                    state = await anext(states)
                    assert state is not None
                    assert state.record.holder_identity == "b"
                    if state.raw == fresh.raw:
                        return state

            await writer.create(_rec("b", transitions=1))
            assert (await settled()).record == (await reader.get()).record  # type: ignore[union-attr]
            await writer.update(_rec("b", transitions=1, duration=20))
            await settled()

            # The primary released on its own (an old, primary-only peer): the secondary still
            # names "b", so the lock is not free but held by the unknown leader, as get() says.
            primary_only = p.sibling("b")
            await primary_only.get()
            await primary_only.update(_rec("", transitions=1, duration=1))
            state = await anext(states)
            assert state is not None
            assert state.record.holder_identity == UNKNOWN_LEADER
            assert state.record.lease_duration_seconds == 20
            assert state == await reader.get()

            secondary_only = s.sibling("b")
            await secondary_only.get()
            await secondary_only.update(_rec("", transitions=1, duration=1))
            state = await anext(states)
            assert state is not None
            assert state.record.holder_identity == ""
            assert state == await reader.get()

            p.delete()
            assert await anext(states) is None


@pytest.mark.anyio
async def test_watch_cursor_survives_cancelled_calls() -> None:
    p, s = _pair("w")
    watcher, writer = MultiLock(p, s), _multi(p, s, "b")
    cursor = watcher.watch_cursor()
    try:
        assert await cursor.next() is None
        await writer.create(_rec("b"))
        for second in range(1, 6):
            with anyio.move_on_after(0):  # cancelled wherever it is waiting
                await cursor.next()
            await writer.update(_rec("b", transitions=second))
        latest = await writer.get()
        with anyio.fail_after(5):
            while (state := await cursor.next()) != latest:
                assert state is not None
    finally:
        cursor.close()
