"""elect_shards() on fake clocks (looptime) with MemoryLock and FileLock: exact times of joins,
crashes and membership loss; the handle's waits; bad arguments; listing siblings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from aioleader import Shards, Timing, elect_shards
from aioleader._shard_decisions import assign
from aioleader.kubernetes import ConfigMapLock
from aioleader.locks import FileLock
from aioleader.testing import FaultyLock, MemoryLock, TermLog

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock]

T = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.3)


class Replica:
    """One replica: its locks (behind FaultyLock, to crash it) and its work log per shard."""

    def __init__(self, base: MemoryLock, identity: str) -> None:
        self.base = base.sibling(identity)
        self.identity = identity
        self.locks: list[FaultyLock] = []
        self.shard_latency = 0.0

    def make_lock(self, name: str) -> FaultyLock:
        lock = FaultyLock(self.base.named(name), watch=True)
        if "member" not in name:
            lock.latency = self.shard_latency
        self.locks.append(lock)
        return lock

    def crash(self) -> None:
        for lock in self.locks:
            lock.hang = True


async def work(shards: Shards, index: int, log: TermLog) -> None:
    while True:
        async with shards.leading(index) as term:
            await log.work(term)


@asynccontextmanager
async def running(
    make_lock: Callable[[str], Any], logs: dict[int, TermLog], shards: int = 8
) -> AsyncIterator[Shards]:
    async with (
        elect_shards(make_lock, group="g", shards=shards, timing=T) as handle,
        anyio.create_task_group() as tg,
    ):
        for i in range(shards):
            tg.start_soon(work, handle, i, logs.setdefault(i, TermLog()))
        yield handle
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], *handles: Shards, limit: float = 30) -> float:
    """Wait until ``predicate()`` holds, re-checking at each change of an owned set (exact
    times), and return the time. The waiters are parked before the predicate is checked, so a
    change between the check and the wait is not missed."""

    async def changed(
        handle: Shards, tg: anyio.abc.TaskGroup, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        task_status.started()
        await handle.wait_owned_change()  # takes the current event before yielding
        tg.cancel_scope.cancel()

    with anyio.fail_after(limit):
        while True:
            async with anyio.create_task_group() as tg:
                for handle in handles:
                    await tg.start(changed, handle, tg)
                if predicate():
                    tg.cancel_scope.cancel()
                    break
    return anyio.current_time()


async def test_a_lone_replica_leads_every_shard_at_once() -> None:
    base = MemoryLock("seed")
    logs: dict[int, TermLog] = {}
    async with running(base.sibling("a").named, logs) as shards:
        t = await wait_until(lambda: shards.owned() == frozenset(range(8)), shards)
        assert t == 0  # MemoryLock answers at once: member lock, listing, 8 acquisitions
        stats = shards.statistics()
        assert stats.members == ("a",)
        assert stats.fair_share == 8
        assert stats.target == frozenset(range(8))
        assert stats.holders == ("a",) * 8
        assert stats.acquired == 8
        assert stats.released == 0
        assert shards.term(3) is not None
        assert shards.shard_for("order-1") == 12 % 8
    # Left the block: every shard released, the membership lock too.
    assert all(base.named(f"g-{i}").peek().holder_identity == "" for i in range(8))  # type: ignore[union-attr]
    listed = await base.list_siblings("g-member-")
    assert [o.record.holder_identity for o in listed.values()] == [""]


async def test_a_joining_replica_takes_its_share_within_half_a_retry_period() -> None:
    base = MemoryLock("seed")
    logs: dict[int, TermLog] = {}
    a, b = Replica(base, "a"), Replica(base, "b")
    async with running(a.make_lock, logs) as sa:
        await wait_until(lambda: len(sa.owned()) == 8, sa)
        await anyio.sleep(10 - anyio.current_time())
        async with running(b.make_lock, logs) as sb:
            expected = assign(8, ["a", "b"])
            t = await wait_until(
                lambda: sa.owned() == expected["a"] and sb.owned() == expected["b"], sa, sb
            )
            assert 10 < t <= 10 + T.retry_period / 2  # a's next listing sees b
            for i in expected["b"]:
                # a's work was cancelled and had finished before b's term began (the release
                # comes after the work), and b's fencing token is higher.
                (before,) = logs[i].intervals
                assert before.identity == "a"
                assert before.end_reason == "stepped down"
                term = sb.term(i)
                assert term is not None
                assert term.acquired_at >= before.end
                assert term.fencing_token > before.fencing_token
            assert all(logs[i].intervals == [] for i in expected["a"])  # a kept these
            assert sb.statistics().acquired == len(expected["b"])
            assert sa.statistics().released == len(expected["b"])
    assert all(log.overlaps == [] for log in logs.values())


async def test_a_crashed_replicas_shards_are_taken_once_its_leases_expire() -> None:
    base = MemoryLock("seed")
    logs: dict[int, TermLog] = {}
    a, b = Replica(base, "a"), Replica(base, "b")
    async with running(a.make_lock, logs) as sa, anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def run_b(*, task_status: anyio.abc.TaskStatus[Shards]) -> None:
            with scope:
                async with running(b.make_lock, logs) as sb:
                    task_status.started(sb)
                    await anyio.sleep_forever()

        sb = await tg.start(run_b)
        await wait_until(lambda: len(sa.owned()) == 4 and len(sb.owned()) == 4, sa, sb)
        await anyio.sleep(20 - anyio.current_time())
        b.crash()
        scope.cancel()  # nothing it sends lands: no release
        t = await wait_until(lambda: len(sa.owned()) == 8, sa)
        # b renewed every RP until 20: its leases expire LD after a saw the last renewal,
        # a's listing notices within RP/2 of the member's expiry.
        assert 20 + T.lease_duration - T.retry_period <= t <= 20 + T.lease_duration + T.retry_period
        assert sa.statistics().members == ("a",)
    assert all(log.overlaps == [] for log in logs.values())
    assert all(log.late_work == [] for log in logs.values())


async def test_a_replica_that_loses_its_membership_gives_up_every_shard() -> None:
    base = MemoryLock("seed")
    a = Replica(base, "a")
    async with running(a.make_lock, {}) as sa:
        await wait_until(lambda: len(sa.owned()) == 8, sa)
        await anyio.sleep(5)
        for lock in a.locks:
            lock.hang = True  # a partition: renewals hang, terms end at the renew deadline
        t = await wait_until(lambda: sa.owned() == frozenset(), sa)
        assert t <= 5 + T.renew_deadline
        assert not sa.statistics().member
        for lock in a.locks:
            lock.heal()
        t = await wait_until(lambda: len(sa.owned()) == 8, sa)
        assert t <= 5 + T.renew_deadline + T.lease_duration + T.retry_period


async def test_owned_changes_and_wait_owned_change() -> None:
    base = MemoryLock("seed")
    async with running(base.sibling("a").named, {}, shards=2) as sa:
        seen: list[frozenset[int]] = []
        async with anyio.create_task_group() as tg:

            async def collect() -> None:
                async for owned in sa.owned_changes():
                    seen.append(owned)
                    if len(owned) == 2:
                        tg.cancel_scope.cancel()

            tg.start_soon(collect)
        assert seen[0] == frozenset() or seen[-1] == frozenset({0, 1})
        assert seen[-1] == frozenset({0, 1})
        async with running(base.sibling("b").named, {}, shards=2):
            changed = await sa.wait_owned_change()
            assert len(changed) == 1
            assert sa.owned() == changed


async def test_elect_shards_works_on_file_locks(tmp_path: Path) -> None:
    logs: dict[int, TermLog] = {}

    def maker(identity: str) -> Callable[[str], FileLock]:
        return lambda name: FileLock(tmp_path / name, identity=identity)

    async with running(maker("a"), logs, shards=4) as sa:
        await wait_until(lambda: len(sa.owned()) == 4, sa)
        async with running(maker("b"), logs, shards=4) as sb:
            await wait_until(lambda: len(sa.owned()) == 2 and len(sb.owned()) == 2, sa, sb)
            members = sorted(p.name.rsplit("-", 1)[0] for p in tmp_path.glob("g-member-*"))  # noqa: ASYNC240
            assert members == ["g-member-a", "g-member-b"]
            assert sb.statistics().members == ("a", "b")
    assert all(log.overlaps == [] for log in logs.values())


async def test_bad_arguments_name_what_is_wrong() -> None:
    base = MemoryLock("a")
    with pytest.raises(ValueError, match="group must be a DNS-1123 label"):
        elect_shards(base.named, group="Bad_Group", shards=4)
    with pytest.raises(ValueError, match="shards must be between 1 and 4096, got 0"):
        elect_shards(base.named, group="g", shards=0)
    with pytest.raises(TypeError, match="make_lock must be callable"):
        elect_shards("nope", group="g", shards=4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decides 'name' for each shard's election itself"):
        elect_shards(base.named, group="g", shards=4, name="x")
    with pytest.raises(
        TypeError, match=re.escape("make_lock('g-0') must return an aioleader Lock")
    ):
        elect_shards(lambda name: object(), group="g", shards=4)  # type: ignore[arg-type, return-value]
    other = MemoryLock("b")
    with pytest.raises(ValueError, match="same identity"):
        elect_shards(
            lambda name: base.named(name) if name != "g-2" else other.named(name),
            group="g",
            shards=4,
        )
    with pytest.raises(TypeError, match="ConfigMapLock cannot list its siblings"):
        elect_shards(
            lambda name: ConfigMapLock(name, identity="a", api_client=object()),
            group="g",
            shards=2,
        )
    async with running(base.named, {}, shards=2) as shards:
        with pytest.raises(ValueError, match=re.escape("shard index must be in 0..1, got 2")):
            shards.leading(2)


async def test_memory_and_file_locks_list_their_siblings(tmp_path: Path) -> None:
    base = MemoryLock("a", name="first")
    assert await base.list_siblings("") == {}  # nothing written yet
    await base.named("g-member-x").create(_record("a"))
    await base.sibling("b").named("g-member-y").create(_record("b"))
    await base.named("other").create(_record("a"))
    listed = await base.list_siblings("g-member-")
    assert {n: o.record.holder_identity for n, o in listed.items()} == {
        "g-member-x": "a",
        "g-member-y": "b",
    }
    assert await MemoryLock("a").list_siblings("") == {}  # another namespace

    lock = FileLock(tmp_path / "g-0", identity="a")
    await FileLock(tmp_path / "g-member-x", identity="a").create(_record("a"))
    await FileLock(tmp_path / "g-member-y", identity="b").create(_record("b"))
    (tmp_path / "g-member-file").write_text("not a lock directory")
    (tmp_path / "g-member-empty").mkdir()
    listed = await lock.list_siblings("g-member-")
    assert {n: o.record.holder_identity for n, o in listed.items()} == {
        "g-member-x": "a",
        "g-member-y": "b",
    }


def _record(holder: str) -> Any:
    from datetime import datetime, timezone

    from aioleader import LeaderElectionRecord

    now = datetime.now(timezone.utc)
    return LeaderElectionRecord(
        holder_identity=holder, lease_duration_seconds=2, acquire_time=now, renew_time=now
    )


async def test_a_shard_won_by_an_attempt_in_flight_when_it_was_given_up_is_handed_over() -> None:
    # a resumes every shard alone; its writes take 0.2 s. b joins while they are in flight, so
    # a gives half of them up before its writes land: those terms begin after the pause and
    # must be handed over at once rather than renewed forever by a paused election.
    base = MemoryLock("seed")
    logs: dict[int, TermLog] = {}
    a, b = Replica(base, "a"), Replica(base, "b")
    a.shard_latency = 0.2
    b.shard_latency = 0.3  # b writes after a: a wins the shards it has given up meanwhile
    async with running(a.make_lock, logs) as sa, anyio.create_task_group() as tg:
        await anyio.sleep(0.05)
        started = anyio.Event()
        handles: list[Shards] = []

        async def run_b() -> None:
            async with running(b.make_lock, logs) as sb:
                handles.append(sb)
                started.set()
                await anyio.sleep_forever()

        tg.start_soon(run_b)
        await started.wait()
        (sb,) = handles
        expected = assign(8, ["a", "b"])
        t = await wait_until(
            lambda: sa.owned() == expected["a"] and sb.owned() == expected["b"], sa, sb
        )
        assert t < 2
        tg.cancel_scope.cancel()
    assert all(log.overlaps == [] for log in logs.values())
