"""observe(): who leads, seen from outside the election.

MemoryLock tests run on fake clocks (asyncio with looptime, trio with MockClock) and assert exact
observation times, both through MemoryLock's watch and through polling (a FaultyLock wrapper does
not support watching). The LeaseLock test runs a real election of three candidates on the
emulator, in real time.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from _jitter import now
from anyio.abc import TaskStatus

from aioleader import (
    ElectionError,
    ForbiddenError,
    LeaderChange,
    LeaderChanges,
    Leadership,
    LockError,
    Observed,
    Timing,
    elect,
    observe,
)
from aioleader._record import LeaderElectionRecord
from aioleader.kubernetes import LeaseLock
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock, KubeEmulator

pytestmark = pytest.mark.fake_clock  # its anyio tests; the pytest-asyncio ones run in real time


class Point(random.Random):
    """Always picks the same point of a ``uniform`` range (1.0 = the high end)."""

    def __init__(self, point: float = 1.0) -> None:
        super().__init__(0)
        self.point = point

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.point


def record(holder: str, second: int = 0, transitions: int = 0) -> LeaderElectionRecord:
    when = datetime(2024, 1, 1, 0, 0, second, tzinfo=timezone.utc)
    return LeaderElectionRecord(
        holder_identity=holder,
        lease_duration_seconds=15,
        acquire_time=when,
        renew_time=when,
        leader_transitions=transitions,
    )


class Observer:
    """Runs ``observe(lock)`` in a task and collects the changes."""

    def __init__(self, lock: Any, **options: Any) -> None:
        self.lock = lock
        self.options = options
        self.changes: list[LeaderChange] = []
        self.scope = anyio.CancelScope()
        self.iterator: LeaderChanges | None = None

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        with self.scope:
            async with observe(self.lock, **self.options) as changes:
                self.iterator = changes
                task_status.started()
                async for change in changes:
                    self.changes.append(change)

    def seen(self, t0: float = 0.0) -> list[tuple[str | None, str | None, float]]:
        return [(c.holder, c.previous, c.observed_at - t0) for c in self.changes]


async def leader_until(lock: Any, stop_at: float, **options: Any) -> None:
    """Lead with ``lock`` (released gracefully at ``stop_at``)."""
    async with elect(lock, **options) as leadership:
        await leadership.wait_term()
        await anyio.sleep_until(stop_at)


async def take_over(lock: MemoryLock, holder_second: int) -> None:
    """A non-holder takes the lock by hand (what an elector does on expiry)."""
    current = await lock.get()
    transitions = current.record.leader_transitions + 1 if current else 0
    if current is None:
        await lock.create(record(lock.identity, holder_second, transitions))
    else:
        await lock.update(record(lock.identity, holder_second, transitions))


# -- MemoryLock on fake clocks ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_watched_changes_are_seen_at_once() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    t0 = now()
    async with anyio.create_task_group() as tg:
        observer = Observer(a.sibling("observer"))
        await tg.start(observer.run)
        tg.start_soon(leader_until, a, t0 + 5)  # acquires at 0, renews at 2 and 4, releases at 5
        await anyio.sleep(7)
        await take_over(b, 7)
        await anyio.sleep(1)
        b.delete()
        await anyio.sleep(1)
        observer.scope.cancel()
    assert observer.seen(t0) == [
        (None, None, 0),  # the state when observation starts: no lock object yet
        ("a", None, 0),
        (None, "a", 5),  # released: free at once
        ("b", None, 7),
        (None, "b", 8),  # deleted
    ]
    first, acquired, released, taken, deleted = observer.changes
    assert first.record is None
    assert (first.transitions, first.lease_duration_seconds, first.renew_time) == (0, None, None)
    assert acquired.record is not None
    assert acquired.lease_duration_seconds == 15
    assert acquired.acquire_time is not None
    assert acquired.renew_time == acquired.acquire_time
    assert released.record is not None
    assert released.record.holder_identity == ""  # the release, not a deletion
    assert released.lease_duration_seconds == 1
    assert (taken.transitions, taken.renew_time) == (
        1,
        datetime(2024, 1, 1, 0, 0, 7, tzinfo=timezone.utc),
    )
    assert (deleted.record, deleted.transitions, deleted.acquire_time) == (None, 0, None)


@pytest.mark.anyio
async def test_renewals_are_reported_on_request() -> None:
    a = MemoryLock("a")
    t0 = now()
    async with anyio.create_task_group() as tg:
        observer = Observer(a.sibling("observer"), renewals=True)
        await tg.start(observer.run)
        tg.start_soon(leader_until, a, t0 + 5)
        await anyio.sleep(6)
        a.delete()
        await anyio.sleep(1)
        observer.scope.cancel()
    assert observer.seen(t0) == [
        (None, None, 0),
        ("a", None, 0),
        ("a", "a", 2),
        ("a", "a", 4),
        (None, "a", 5),
        (None, None, 6),  # deleted: a change of the record, not of the holder
    ]
    renewed = [c.renew_time for c in observer.changes[1:4] if c.renew_time is not None]
    assert len(renewed) == 3
    assert renewed == sorted(renewed)
    assert observer.changes[-1].record is None


@pytest.mark.anyio
async def test_polled_changes_are_seen_at_the_next_poll() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    polled = FaultyLock(a.sibling("observer"))
    assert not polled.supports_watch
    t0 = now()
    async with anyio.create_task_group() as tg:
        tg.start_soon(leader_until, a, t0 + 5)
        await anyio.sleep(0.5)
        observer = Observer(polled, poll_interval=1)
        await tg.start(observer.run)
        await anyio.sleep(6.5)  # t = 7
        await take_over(b, 7)
        await anyio.sleep(2)
        observer.scope.cancel()
    assert observer.seen(t0) == [
        ("a", None, 0.5),
        (None, "a", 5.5),
        ("b", None, 7.5),
    ]
    assert [c.started - t0 for c in polled.calls] == [0.5 + n for n in range(9)]
    assert {c.op for c in polled.calls} == {"get"}


@pytest.mark.anyio
async def test_polling_retries_transient_errors_with_backoff() -> None:
    a = MemoryLock("a")
    await a.create(record("a"))
    polled = FaultyLock(a.sibling("observer"))
    polled.fail_next(LockError("503"), LockError("503"), LockError("429", retry_after=3))
    t0 = now()
    async with anyio.create_task_group() as tg:
        observer = Observer(polled, poll_interval=2, rng=Point(1.0))
        await tg.start(observer.run)
        await anyio.sleep(10)
        observer.scope.cancel()
    # Failures at 0, 0.1 and 0.3 (backoff 0.1, 0.2); the third asks for 3 s: success at 3.3.
    assert [(c.started - t0, c.outcome) for c in polled.calls[:5]] == [
        (0, "error"),
        (0.1, "error"),
        (pytest.approx(0.3), "error"),
        (pytest.approx(3.3), "ok"),
        (pytest.approx(5.3), "ok"),
    ]
    assert [(h, p) for h, p, _ in observer.seen(t0)] == [("a", None)]
    assert observer.changes[0].observed_at - t0 == pytest.approx(3.3)


@pytest.mark.anyio
async def test_polling_backoff_never_exceeds_the_poll_interval() -> None:
    polled = FaultyLock(MemoryLock("observer"))
    polled.error_rate = 1.0
    t0 = now()
    async with anyio.create_task_group() as tg:
        observer = Observer(polled, poll_interval=0.5, rng=Point(1.0))
        await tg.start(observer.run)
        await anyio.sleep(3)
        observer.scope.cancel()
    starts = [c.started - t0 for c in polled.calls]
    assert starts[:6] == pytest.approx([0, 0.1, 0.3, 0.7, 1.2, 1.7])
    assert not observer.changes


@pytest.mark.anyio
async def test_a_hung_read_is_bounded() -> None:
    a = MemoryLock("a")
    await a.create(record("a"))
    polled = FaultyLock(a.sibling("observer"))
    polled.hang = True
    t0 = now()
    async with anyio.create_task_group() as tg:
        observer = Observer(polled, poll_interval=1, rng=Point(1.0))
        await tg.start(observer.run)
        await anyio.sleep(10.05)
        polled.hang = False
        await anyio.sleep(1)
        observer.scope.cancel()
    assert [c.ended - c.started for c in polled.calls[:1]] == [10]
    assert [(c.holder, c.previous) for c in observer.changes] == [("a", None)]
    assert observer.changes[0].observed_at - t0 == pytest.approx(10.1)


@pytest.mark.anyio
@pytest.mark.parametrize("watched", [True, False])
async def test_fatal_errors_are_raised(watched: bool) -> None:
    class Forbidden(FaultyLock):
        @property
        def supports_watch(self) -> bool:
            return watched

        def watch(self) -> AsyncGenerator[Observed | None, None]:
            return self._forbidden()

        async def _forbidden(self) -> AsyncGenerator[Observed | None, None]:
            yield None
            raise ForbiddenError("watch", "memory/memory-lock")

    lock = Forbidden(MemoryLock("observer"))
    lock.fail_next(ForbiddenError("get", "memory/memory-lock"))
    with pytest.raises(ElectionError, match=r"^forbidden: cannot (watch|get) memory/"):
        async with observe(lock) as changes:
            async for _ in changes:
                pass


@pytest.mark.anyio
async def test_a_failing_watch_is_restarted_without_repeating_a_state() -> None:
    class Flaky(FaultyLock):
        watches = 0

        @property
        def supports_watch(self) -> bool:
            return True

        def watch(self) -> AsyncGenerator[Observed | None, None]:
            return self._watch()

        async def _watch(self) -> AsyncGenerator[Observed | None, None]:
            self.watches += 1
            assert isinstance(self.inner, MemoryLock)
            inner = self.inner.watch()
            try:
                async for state in inner:
                    yield state
                    if self.watches == 1:
                        raise LockError("stream broke")
            finally:
                await inner.aclose()

    a = MemoryLock("a")
    await a.create(record("a"))
    lock = Flaky(a.sibling("observer"))
    t0 = now()
    async with anyio.create_task_group() as tg:
        observer = Observer(lock, rng=Point(1.0))
        await tg.start(observer.run)
        await anyio.sleep(1)
        await take_over(a.sibling("b"), 1)
        await anyio.sleep(1)
        observer.scope.cancel()
    assert lock.watches == 2
    assert observer.seen(t0) == [("a", None, 0), ("b", "a", 1)]


@pytest.mark.anyio
async def test_leaving_the_block_stops_the_watch() -> None:
    lock = MemoryLock("observer")
    async with observe(lock) as changes:
        first = await anext(changes)
        assert changes.latest is first
        assert lock._slot.watchers
    assert not lock._slot.watchers
    with pytest.raises(StopAsyncIteration):
        await anext(changes)


@pytest.mark.parametrize("interval", [0, -1.0, float("inf"), float("nan"), True, "2"])
def test_poll_interval_is_checked(interval: Any) -> None:
    with pytest.raises(ValueError, match=r"^poll_interval must be a positive finite number"):
        observe(MemoryLock("observer"), poll_interval=interval)


# -- LeaseLock on the emulator: a real election ----------------------------------------------------

TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)


async def until(condition: Any, limit: float = 10.0) -> None:
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.asyncio
async def test_an_observer_sees_every_leader_of_an_election(emulator: KubeEmulator) -> None:
    observer = Observer(
        LeaseLock("lock", identity="observer", api_client=await emulator.api_client("observer"))
    )
    stops: dict[str, anyio.Event] = {}
    leaderships: dict[str, Leadership] = {}

    async def candidate(name: str, *, task_status: TaskStatus[None]) -> None:
        lock = LeaseLock("lock", identity=name, api_client=await emulator.api_client(name))
        stops[name] = anyio.Event()
        async with elect(lock, timing=TIMING) as leadership:
            leaderships[name] = leadership
            task_status.started()
            await stops[name].wait()  # then leave: release the lease if we hold it

    def holders() -> list[str | None]:
        return [c.holder for c in observer.changes]

    async with anyio.create_task_group() as tg:
        await tg.start(observer.run)
        await until(lambda: len(observer.changes) == 1)
        await tg.start(candidate, "a")
        await until(lambda: holders()[-1] == "a")
        await tg.start(candidate, "b")
        await tg.start(candidate, "c")
        order = ["a"]
        for _ in range(2):
            stops[order[-1]].set()
            await until(lambda: len(observer.changes) == 2 * len(order) + 2)
            leader = holders()[-1]
            assert leader is not None
            order.append(leader)
            await until(leaderships[leader].is_leader_nowait)
        stops[order[-1]].set()
        await until(lambda: len(observer.changes) == 7)
        await anyio.sleep(0.5)  # renewals and bookmarks: nothing more to report
        observer.scope.cancel()

    assert sorted(order) == ["a", "b", "c"]
    x, y = order[1], order[2]
    assert holders() == [None, "a", None, x, None, y, None]
    assert [c.previous for c in observer.changes] == [None, None, "a", None, x, None, y]
    for change in observer.changes[2::2]:  # graceful releases: the record stays, holder ""
        assert change.record is not None
        assert change.record.holder_identity == ""
    assert [c.transitions for c in observer.changes[1::2]] == [0, 1, 2]
    times = [c.observed_at for c in observer.changes]
    assert times == sorted(times)
    assert emulator.counters("observer") == {"list": 1, "watch": 1}
