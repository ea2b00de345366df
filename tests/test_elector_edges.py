"""The elector at its edges (issue 9), on fake clocks with exact expected times.

Requests bounded at send time, a bounded shutdown, metadata-only writes, conflicts that back off,
every deletion waited out, fencing tokens that never go backwards, and terms that know about a
suspended host. Default timing: LD 15, RD 10, RP 2.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import anyio
import pytest
from _jitter import Jitter, now

from aioleader import LeaderElectionRecord, LockConflict, Term, campaign, elect
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock, TermLog, lead_forever

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock]


# -- bounds at send time -----------------------------------------------------------------------------


async def test_a_renewal_waiting_behind_a_confirmation_is_bounded_by_what_is_left_at_send_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aioleader")
    lock = FaultyLock(MemoryLock("a"), ops=frozenset({"get", "update"}))
    t0 = now()
    async with elect(lock, release_on_cancel=False) as leadership:
        async with anyio.create_task_group() as tg:
            async with leadership.leading() as term:
                await anyio.sleep(5)  # renewed at 2 and 4: deadline 14
                assert term.deadline - t0 == 14
                lock.hang = True  # from now on every read and write hangs
                # The confirmation's read takes the lock's request slot at 5, bounded by
                # min(14 - 5, RD/2 = 5): until 10. The renewal due at 6 waits for the slot.
                tg.start_soon(partial(leadership.is_leader, confirm=True))
                await anyio.sleep(100)
            assert now() - t0 == 14  # work cancelled at the deadline
            assert term.end_reason == "deadline"
    calls = [(c.op, c.started - t0, c.ended - t0, c.outcome) for c in lock.calls if c.started > t0]
    assert calls[:4] == [
        ("update", 2, 2, "ok"),
        ("update", 4, 4, "ok"),
        ("get", 5, 10, "timeout"),
        # Sent at 10, after the wait: its budget is what is left then (4 s), not the 5 s that
        # were left when the renewal began at 6. It never outlives the term.
        ("update", 10, 14, "timeout"),
    ]
    assert all(c.ended <= term.deadline for c in lock.calls if c.started < term.deadline)
    stopped = [r for r in caplog.records if "stopped leading" in r.getMessage()]
    assert [r.reason for r in stopped] == ["deadline"]  # type: ignore[attr-defined]
    assert "deadline" in stopped[0].getMessage()


async def test_a_renewal_delayed_by_a_slow_confirmation_still_renews_within_the_window() -> None:
    lock = FaultyLock(MemoryLock("a"), ops=frozenset({"get"}))
    t0 = now()
    async with elect(lock, release_on_cancel=False) as leadership:
        term = await leadership.wait_term()
        await anyio.sleep(3)  # t = 3, renewed at 2: deadline 12
        lock.latency = 20  # a read that would take longer than the whole window
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(leadership.is_leader, confirm=True))
            await anyio.sleep(0.001)
            # Renewals due at 4, 6, 8, ... wait behind the read (bounded at 3 + 5 = 8), then go.
            await anyio.sleep(20)
        assert term.active  # the renewals at 8 kept it
        updates = [c.started - t0 for c in lock.calls if c.op == "update"]
        assert updates[:3] == [2, 8, 10]
        assert all(c.ended - t0 <= 12 for c in lock.calls if c.op == "get" and c.started - t0 == 3)


# -- bounded shutdown ----------------------------------------------------------------------------------


async def test_an_on_stopped_leading_that_never_returns_is_abandoned_after_the_renew_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aioleader")
    called: list[float] = []

    async def stopped(term: Term) -> None:
        called.append(now())
        await anyio.sleep_forever()

    lock = MemoryLock("a")
    async with elect(lock, on_stopped_leading=stopped) as leadership:
        await leadership.wait_term()
        await anyio.sleep(1)
        left = now()
    assert called == [left]
    assert now() - left == 10  # RD, then the callback is abandoned
    record = lock.peek()
    assert record is not None
    assert record.holder_identity == ""  # released before the callback ran
    assert any("on_stopped_leading did not return" in r.getMessage() for r in caplog.records)


async def test_zero_argument_callbacks_are_accepted() -> None:
    events: list[str] = []

    async def started() -> None:
        events.append("started")

    def stopped() -> None:
        events.append("stopped")

    async with elect(MemoryLock("a"), on_started_leading=started, on_stopped_leading=stopped) as le:
        await le.wait_term()
        await anyio.sleep(1)
    assert events == ["started", "stopped"]


# -- what counts as a change -----------------------------------------------------------------------


@pytest.mark.parametrize("watch", [False, True])
async def test_metadata_only_writes_do_not_keep_a_crashed_leaders_lease_alive(watch: bool) -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    log = TermLog()
    t0 = now()
    async with anyio.create_task_group() as tg:
        crash = anyio.CancelScope()

        async def run_a(*, task_status: anyio.abc.TaskStatus[Any]) -> None:
            with crash:
                await lead_forever(a, log, release_on_cancel=False, task_status=task_status)

        la = await tg.start(run_a)
        await la.wait_term()
        await anyio.sleep(0.5)
        await tg.start(partial(lead_forever, b, log, rng=Jitter(0), watch=watch))
        await anyio.sleep(4.5)
        crash.cancel()  # a dies at 5; its last renewal was written at 4
        for _ in range(30):  # a controller adds a label every 0.5 s
            await anyio.sleep(0.5)
            a.touch()
        tg.cancel_scope.cancel()
    b_term = next(i for i in log.intervals if i.identity == "b")
    # Watching: b saw the renewal at 4 exactly; polling (every 2 s from 0.5): at its read at 4.5.
    # The labels (new versions, same record) do not restart its clock.
    assert b_term.start - t0 == (4 if watch else 4.5) + 15
    assert log.overlaps == []


async def test_a_conflict_on_a_free_lock_backs_off_instead_of_retrying_at_once() -> None:
    a = MemoryLock("a")
    b = FaultyLock(a.sibling("b"), watch=True)
    a.put(LeaderElectionRecord(holder_identity="", lease_duration_seconds=1, leader_transitions=3))
    b.fail_next(LockConflict("somebody else wrote first"))
    # fail_next applies to the first faulted call; make it the update, not the initial read.
    b.ops = frozenset({"update"})
    t0 = now()
    async with elect(b, rng=Jitter(0)) as leadership:
        term = await leadership.wait_term()
        assert now() - t0 == 2  # one retry period later, not at once
        assert term.fencing_token == 4
    attempts = [(c.op, c.started - t0, c.outcome) for c in b.calls if c.op != "watch"]
    assert attempts[:3] == [
        ("get", 0, "ok"),
        ("update", 0, "conflict"),
        ("update", 2, "ok"),  # the watch delivered the free record: one write, no read first
    ]


async def test_every_deletion_is_waited_out_by_a_watching_candidate() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    c = a.sibling("c")
    t0 = now()
    a.put(LeaderElectionRecord(holder_identity="a", lease_duration_seconds=15))
    async with elect(b, rng=Jitter(0)) as lb:
        await anyio.sleep(3)
        assert lb.leader == "a"
        a.delete()  # t = 3: the first deletion; b waits until 3 + 15 = 18
        await anyio.sleep(2)
        # t = 5: somebody else recreates it for c, and it is deleted again at 10.
        c.put(LeaderElectionRecord(holder_identity="c", lease_duration_seconds=20))
        await anyio.sleep(5)
        c.delete()
        term = await lb.wait_term()
        assert now() - t0 == 10 + 20  # the second deletion, plus the last lease seen (c's 20)
        assert term.fencing_token == 1


# -- fencing tokens ----------------------------------------------------------------------------------


async def test_fencing_tokens_never_go_backwards_after_a_peer_resets_the_count() -> None:
    lock = MemoryLock("a")
    tokens: list[int] = []
    for _ in range(3):
        async with elect(lock) as leadership:
            tokens.append((await leadership.wait_term()).fencing_token)
        # A peer rewrites the lock without leaseTransitions (client-go peers do this after a
        # delete and recreate), and releases it.
        lock.put(LeaderElectionRecord(holder_identity="", lease_duration_seconds=1))
    lock.delete()
    async with elect(lock) as leadership:
        tokens.append((await leadership.wait_term()).fencing_token)
    assert tokens == [0, 1, 2, 3]


# -- suspend ---------------------------------------------------------------------------------------


class SuspendClock:
    """Stands in for CLOCK_BOOTTIME − CLOCK_MONOTONIC: ``suspend(s)`` is a host suspended for s."""

    def __init__(self) -> None:
        self.value = 100.0

    def __call__(self) -> float:
        return self.value

    def suspend(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def suspend_clock(monkeypatch: pytest.MonkeyPatch) -> SuspendClock:
    clock = SuspendClock()
    monkeypatch.setattr("aioleader._suspend.suspended_seconds", clock)
    return clock


async def test_a_leader_resuming_from_a_long_suspend_ends_its_term_before_renewing(
    suspend_clock: SuspendClock,
) -> None:
    lock = FaultyLock(MemoryLock("a"))
    t0 = now()
    async with elect(lock, release_on_cancel=False) as leadership:
        async with leadership.leading() as term:
            await anyio.sleep(5)  # renewed at 2 and 4: 9 s left of the window
            # The host sleeps for 20 s; the monotonic clock did not see them.
            suspend_clock.suspend(20)
            assert not term.active  # at once
            assert term.end_reason == "deadline"
            await anyio.sleep(100)
        # The work is cancelled at the next wake of the elector (its renewal tick at 6), and
        # that renewal is never sent.
        assert now() - t0 == 6
    updates = [c.started - t0 for c in lock.calls if c.op == "update"]
    assert updates[:2] == [2, 4]
    assert 6 not in updates
    assert term.ended_at is not None
    assert term.ended_at - t0 == 6


async def test_a_short_suspend_leaves_the_term_alone(suspend_clock: SuspendClock) -> None:
    lock = MemoryLock("a")
    t0 = now()
    async with elect(lock) as leadership:
        term = await leadership.wait_term()
        await anyio.sleep(5)  # deadline 14
        suspend_clock.suspend(3)  # 5 + 3 < 14
        assert term.active
        await anyio.sleep(10)
        assert term.active  # renewed after the resume, each renewal restarts the count
        assert term.deadline - t0 == 24


async def test_campaign_accepts_the_same_options_as_elect() -> None:
    with pytest.raises(TypeError, match="unknown election option 'retry'"):
        async with elect(MemoryLock("a"), retry=3):  # type: ignore[call-arg]
            pass
    with pytest.raises(TypeError, match="release_on_cancel must be True or False"):
        await campaign(MemoryLock("a"), release_on_cancel="yes")  # type: ignore[arg-type]


async def test_a_watching_follower_takes_a_released_lock_with_one_write() -> None:
    a = MemoryLock("a")
    b = FaultyLock(a.sibling("b"), watch=True)
    t0 = now()
    async with anyio.create_task_group() as tg:
        stop_a = anyio.CancelScope()

        async def run_a(*, task_status: anyio.abc.TaskStatus[Any]) -> None:
            with stop_a:
                await campaign(a, task_status=task_status)

        la = await tg.start(run_a)
        await la.wait_term()
        async with elect(b) as lb:
            await anyio.sleep(3)
            assert lb.leader == "a"
            before = len(b.calls)
            stop_a.cancel()  # a releases at 3 (one write: its last write's version decides)
            term = await lb.wait_term()
            assert now() - t0 == 3
            after = [(c.op, c.started - t0, c.outcome) for c in b.calls[before:]]
            assert [x for x in after if x[0] != "watch"] == [("update", 3, "ok")]
            assert term.fencing_token == 1
