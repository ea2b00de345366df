"""The elector state machine on fake clocks, with exact expected times.

Every test runs twice: on asyncio with looptime's fast-forwarding loop, and on trio with
``MockClock(autojump_threshold=0)``. Both jump straight to the next timer when every task is idle,
so ``anyio.current_time()`` differences are exact. Default timing: LD 15, RD 10, RP 2.
"""

from __future__ import annotations

import itertools
import random
import sys

import anyio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup
import pytest
from _groups import Group, candidates
from _jitter import Jitter, now

from aioleader import (
    ElectionError,
    ForbiddenError,
    Leadership,
    LockError,
    Term,
    Timing,
    campaign,
    elect,
)
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock]


async def test_first_candidate_acquires_at_once_and_renews_every_retry_period() -> None:
    lock = FaultyLock(MemoryLock("a"))
    t0 = now()
    async with elect(lock) as leadership:
        term = await leadership.wait_term()
        assert now() - t0 == 0
        assert term.deadline - t0 == 10
        assert term.fencing_token == 0
        assert leadership.is_leader_nowait()
        assert await leadership.is_leader()
        await anyio.sleep(7)
        updates = [c.started - t0 for c in lock.calls if c.op == "update"]
        assert updates == [2, 4, 6]  # renewals: one update each, no GET (the fast path)
        assert [c.op for c in lock.calls].count("get") == 1  # only the initial read
        assert term.deadline - t0 == 16
        assert leadership.leader == "a"
        stats = leadership.statistics()
        assert (stats.renewals, stats.slow_path, stats.terms) == (3, 0, 1)
    # release on leaving the block
    record = lock.inner.peek()  # type: ignore[attr-defined]
    assert record is not None
    assert record.holder_identity == ""
    assert record.lease_duration_seconds == 1
    assert record.leader_transitions == 0
    assert term.end_reason == "stopped"


async def test_record_written_on_acquire_and_kept_on_renew() -> None:
    lock = MemoryLock("a")
    async with elect(lock) as leadership:
        await leadership.wait_term()
        first = lock.peek()
        await anyio.sleep(2.5)
        renewed = lock.peek()
        assert lock.writes == 2  # create, then one renewal
    assert first is not None
    assert renewed is not None
    assert first.holder_identity == "a"
    assert first.lease_duration_seconds == 15
    assert renewed.acquire_time == first.acquire_time
    assert renewed.leader_transitions == first.leader_transitions
    assert renewed.renew_time is not None
    assert first.renew_time is not None


async def test_hung_requests_cancel_leader_work_at_last_renew_send_plus_renew_deadline() -> None:
    lock = FaultyLock(MemoryLock("a"))
    t0 = now()
    async with elect(lock, release_on_cancel=False) as leadership:
        async with leadership.leading() as term:
            await anyio.sleep(5)  # renewals sent at 2 and 4 succeed
            lock.hang = True  # the renewal at 6 hangs, and so does every retry
            await anyio.sleep(1000)
            pytest.fail("leader work was not cancelled")
        assert now() - t0 == 14  # 4 + RD, exactly
        assert term.end_reason == "deadline"
        assert not leadership.is_leader_nowait()
        assert not await leadership.is_leader()
        # Every request was bounded: none outlived RD/2 or the remaining window.
        for call in lock.calls:
            assert call.ended - call.started <= 5
        assert [(c.started - t0, c.ended - t0) for c in lock.calls if c.outcome == "timeout"] == [
            (6, 11),
            (11, 14),
        ]


async def test_transient_errors_are_retried_within_the_renew_deadline() -> None:
    lock = FaultyLock(MemoryLock("a"))
    t0 = now()
    async with elect(lock) as leadership:
        term = await leadership.wait_term()
        await anyio.sleep(1)
        lock.fail_next(LockError("503"), LockError("429"), LockError("reset"))
        await anyio.sleep(10)
        assert term.active
        updates = [(c.started - t0, c.outcome) for c in lock.calls if c.op == "update"]
        assert updates[:5] == [(2, "error"), (4, "error"), (6, "error"), (8, "ok"), (10, "ok")]
        assert term.deadline - t0 == 20
        assert leadership.statistics().renew_failures == 3


async def test_reply_lost_after_write_applied_takes_the_slow_path_and_keeps_leading() -> None:
    lock = FaultyLock(MemoryLock("a"))
    t0 = now()
    async with elect(lock) as leadership:
        term = await leadership.wait_term()
        lock.apply_then_fail_next()
        await anyio.sleep(5)
        ops = [(c.started - t0, c.op, c.outcome) for c in lock.calls]
        assert ops == [
            (0, "get", "ok"),
            (0, "create", "ok"),
            (2, "update", "applied-then-error"),
            (4, "update", "conflict"),  # cached version is stale: our own write moved it
            (4, "get", "ok"),  # slow path: still ours
            (4, "update", "ok"),
        ]
        assert term.active
        assert term.deadline - t0 == 14
        assert leadership.statistics().slow_path == 1


@pytest.mark.parametrize(("watch", "expected"), [(False, 24.5), (True, 24)])
async def test_crashed_leader_is_replaced_after_observed_time_plus_record_duration(
    watch: bool, expected: float
) -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    t0 = now()
    async with candidates(work=False) as g:
        # "a" writes a 20 s lease; "b" is configured for 15 s but must honour the record's 20.
        la = await g.start(a, timing=Timing(20, 10, 2), release_on_cancel=False)
        await la.wait_term()
        await anyio.sleep(0.5)
        lb = await g.start(b, rng=Jitter(0), watch=watch)
        # b polls at 0.5, 2.5, 4.5 (sees a's renewal of 4), ...
        await anyio.sleep(4.5)  # t = 5
        g.stop("a")  # no release: a simply stops renewing
        term = await lb.wait_term()
        # polling: a's renewal at 4 seen at b's poll at 4.5; watching: seen at 4.
        # Either way + the record's 20 s, not b's own 15.
        assert now() - t0 == expected
        assert term.fencing_token == 1
        g.stop("b")


@pytest.mark.parametrize(("watch", "expected"), [(False, 6.5), (True, 5)])
async def test_graceful_release_hands_over_at_the_next_poll_or_at_once_when_watching(
    watch: bool, expected: float
) -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    seen: list[tuple[float, str]] = []
    t0 = now()
    async with candidates(work=False) as g:
        la = await g.start(a)
        await la.wait_term()
        await anyio.sleep(0.5)
        lb = await g.start(
            b, rng=Jitter(0), watch=watch, on_new_leader=lambda who: seen.append((now() - t0, who))
        )
        await anyio.sleep(4.5)
        g.stop("a")  # t = 5: release
        term = await lb.wait_term()
        assert now() - t0 == expected  # b's next poll, or the watch, sees a free lock
        assert term.fencing_token == 1  # a's term was 0; the release keeps it; b's term is 1
        g.stop("b")
    if watch:  # every renewal seen, the release the moment it lands
        assert seen == [(0.5, "a"), (5, ""), (5, "b"), (5, "")]
    else:
        assert seen == [(0.5, "a"), (6.5, ""), (6.5, "b"), (6.5, "")]  # b released on stop


async def test_loss_to_another_holder_ends_the_term_at_once_and_recampaigns() -> None:
    a = MemoryLock("a")
    intruder = a.sibling("x")
    stopped: list[Term] = []
    t0 = now()
    async with elect(a, rng=Jitter(0), on_stopped_leading=stopped.append) as leadership:
        async with leadership.leading() as first:
            await anyio.sleep(3)
            observed = await intruder.get()
            assert observed is not None
            await intruder.update(
                observed.record.with_changes(
                    holder_identity="x",
                    leader_transitions=observed.record.leader_transitions + 1,
                )
            )
            await anyio.sleep(1000)
        assert now() - t0 == 4  # the renewal at 4 conflicts, the slow path sees "x"
        assert first.end_reason == "lost"
        assert leadership.leader == "x"
        assert not leadership.acquired.is_set()  # a fresh Event for the next term
        second = await leadership.wait_term()
        assert now() - t0 == 19  # x never renews: observed at 4, attempt exactly at 4 + 15
        assert second.number == 2
        assert second.fencing_token == 2  # x's takeover was 1
        assert second is not first
        assert stopped == [first]


async def test_confirm_rereads_the_lock_and_ends_a_lost_term() -> None:
    a = MemoryLock("a")
    intruder = a.sibling("x")
    async with elect(a) as leadership:
        term = await leadership.wait_term()
        observed = await intruder.get()
        assert observed is not None
        await intruder.update(observed.record.with_changes(holder_identity="x"))
        assert await leadership.is_leader()  # the local view has not noticed yet
        t = now()
        assert not await leadership.is_leader(confirm=True)
        assert now() == t
        assert term.end_reason == "lost"
        assert not leadership.is_leader_nowait()


async def test_second_process_with_our_identity_is_detected_as_a_loss() -> None:
    a = MemoryLock("a")
    twin = a.sibling("a")  # misconfiguration: two processes, one identity
    async with elect(a) as leadership:
        term = await leadership.wait_term()
        observed = await twin.get()
        assert observed is not None
        await twin.update(observed.record.with_changes(leader_transitions=7))
        await anyio.sleep(2.5)
        assert term.end_reason == "lost"


async def test_acquire_retry_is_jittered_between_rp_and_rp_times_one_plus_jitter() -> None:
    for point, expected in ((0.0, [0, 2, 4, 6, 8, 10, 12]), (1.0, [0, 4.4, 8.8])):
        a = MemoryLock("a")
        b = FaultyLock(a.sibling("b"))
        jitter = Jitter(point)
        t0 = now()
        async with elect(a) as la:
            await la.wait_term()
            async with elect(b, rng=jitter):
                await anyio.sleep(13)
                gets = [round(c.started - t0, 6) for c in b.calls if c.op == "get"]
                assert gets == expected
                assert set(jitter.ranges) == {(1.0, 2.2)}


async def test_seeded_jitter_stays_within_bounds() -> None:
    a = MemoryLock("a")
    b = FaultyLock(a.sibling("b"))
    async with elect(a) as la:
        await la.wait_term()
        async with elect(b, rng=random.Random(7)):
            await anyio.sleep(300)
    starts = [c.started for c in b.calls if c.op == "get"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) > 60
    assert all(2 <= gap <= 4.4 for gap in gaps)
    assert max(gaps) - min(gaps) > 1  # actually jittered


async def test_callbacks_order_work_finished_before_release_and_stopped() -> None:
    lock = MemoryLock("a")
    log: list[tuple[float, str]] = []
    t0 = now()

    async def started(term: Term) -> None:
        log.append((now() - t0, f"started {term.number}"))
        try:
            await anyio.sleep(1000)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(1)  # slow cleanup of leader work
                holder = lock.peek()
                assert holder is not None
                log.append((now() - t0, f"work finished, holder={holder.holder_identity!r}"))

    def stopped(term: Term) -> None:
        holder = lock.peek()
        assert holder is not None
        log.append((now() - t0, f"stopped {term.end_reason}, holder={holder.holder_identity!r}"))

    async with elect(
        lock,
        on_started_leading=started,
        on_stopped_leading=stopped,
        on_new_leader=lambda who: log.append((now() - t0, f"new leader {who!r}")),
    ) as leadership:
        await leadership.wait_term()
        await anyio.sleep(3)
    # on_new_leader and on_started_leading run in different tasks: their order is not defined.
    assert sorted(log[:2]) == [(0, "new leader 'a'"), (0, "started 1")]
    assert log[2:] == [
        (4, "work finished, holder='a'"),  # cancelled at 3, cleanup took 1 s, not yet released
        (4, "stopped stopped, holder=''"),  # release came after the work, before the callback
        (4, "new leader ''"),
    ]


async def test_leading_runs_body_only_while_leader_and_waits_for_the_term() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    t0 = now()
    async with candidates(work=False) as g:
        la = await g.start(a)
        await la.wait_term()
        async with elect(b, rng=Jitter(0), watch=False) as lb:
            g.tg.start_soon(lambda: _stop_later(g, "a", 3))
            async with lb.leading() as term:
                assert now() - t0 == 4  # b's poll at 4 sees a's release at 3
                assert term.identity == "b"
                assert term.cancel_scope.deadline == term.deadline


async def _stop_later(g: Group, name: str, delay: float) -> None:
    await anyio.sleep(delay)
    g.stop(name)


async def test_user_exception_in_body_comes_out_as_itself_and_the_lock_is_released() -> None:
    lock = MemoryLock("a")
    with pytest.raises(KeyError, match="boom"):
        async with elect(lock) as leadership:
            await leadership.wait_term()
            raise KeyError("boom")
    record = lock.peek()
    assert record is not None
    assert record.holder_identity == ""


async def test_fatal_error_cancels_the_body_and_comes_out_as_itself() -> None:
    lock = FaultyLock(MemoryLock("a"))
    reached: list[float] = []
    t0 = now()
    with pytest.raises(ForbiddenError, match="cannot update leases"):
        async with elect(lock) as leadership:
            await leadership.wait_term()
            lock.fail_next(ForbiddenError("update", 'leases.coordination.k8s.io "a"'))
            try:
                await anyio.sleep(1000)
            finally:
                reached.append(now() - t0)
    assert reached == [2]


async def test_leading_after_the_election_ended_raises() -> None:
    lock = MemoryLock("a")
    async with elect(lock) as leadership:
        await leadership.wait_term()
    with pytest.raises(ElectionError, match="has ended"):
        async with leadership.leading():
            pass


async def test_campaign_in_a_task_group_releases_when_cancelled() -> None:
    lock = MemoryLock("a")
    async with anyio.create_task_group() as tg:
        leadership: Leadership = await tg.start(campaign, lock)
        assert isinstance(leadership, Leadership)
        await leadership.acquired.wait()
        assert leadership.is_leader_nowait()
        tg.cancel_scope.cancel()
    record = lock.peek()
    assert record is not None
    assert record.holder_identity == ""


async def test_no_release_when_disabled() -> None:
    lock = MemoryLock("a")
    async with elect(lock, release_on_cancel=False) as leadership:
        await leadership.wait_term()
    record = lock.peek()
    assert record is not None
    assert record.holder_identity == "a"


async def test_release_does_not_touch_a_lock_someone_else_took() -> None:
    a = MemoryLock("a")
    intruder = a.sibling("x")
    async with elect(a, release_on_cancel=True) as leadership:
        await leadership.wait_term()
        observed = await intruder.get()
        assert observed is not None
        await intruder.update(observed.record.with_changes(holder_identity="x"))
    record = a.peek()
    assert record is not None
    assert record.holder_identity == "x"


async def test_free_lock_with_null_holder_is_taken_at_once() -> None:
    a = MemoryLock("a")
    other = a.sibling("x")
    t0 = now()
    async with elect(other, release_on_cancel=True) as lx:
        await lx.wait_term()
    async with elect(a) as leadership:
        term = await leadership.wait_term()
        assert now() - t0 == 0
        assert term.fencing_token == 1


def test_handles_have_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        Leadership()
    with pytest.raises(TypeError, match="no public constructor"):
        Term()


async def test_bad_arguments_are_rejected_before_campaigning() -> None:
    with pytest.raises(TypeError, match="lock must be"):
        async with elect("not a lock"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="timing must be"):
        async with elect(MemoryLock("a"), timing=(15, 10, 2)):  # type: ignore[arg-type]
            pass


# -- regressions from review ---------------------------------------------------------------------


@pytest.mark.parametrize(("watch", "seen_at"), [(False, 6.5), (True, 5)])
async def test_lock_deleted_under_a_leader_is_not_recreated_until_its_lease_ran_out(
    watch: bool, seen_at: float
) -> None:
    a = FaultyLock(MemoryLock("a"))
    b = a.inner.sibling("b")  # type: ignore[attr-defined]
    async with candidates() as g:
        la = await g.start(a)
        await la.wait_term()
        await anyio.sleep(0.5)
        await g.start(b, rng=Jitter(0), watch=watch)
        await anyio.sleep(4.5)  # t = 5; a renewed at 2 and 4
        a.error_rate = 1.0  # a keeps leading until 4 + RD = 14, unable to renew
        a.inner.delete()  # type: ignore[attr-defined]  # t = 5: somebody deletes the lock
        await anyio.sleep(20)
    # candidates() checked: no overlap, no late work, fencing tokens increasing
    b_term = next(i for i in g.log.intervals if i.identity == "b")
    assert b_term.start == seen_at + 15  # b waits LD from seeing the deletion
    assert b_term.fencing_token == 1  # and does not restart the fencing tokens at 0


async def test_record_with_our_identity_but_another_term_is_waited_out() -> None:
    a = MemoryLock("a")
    twin = a.sibling("a")  # another process, same identity (a replaced StatefulSet pod)
    async with elect(a, release_on_cancel=False) as first:
        await first.wait_term()
        t0 = now()
        async with elect(twin, rng=Jitter(0)) as second:
            await anyio.sleep(5)
            assert not second.is_leader_nowait()  # not taken at once: it is not our term
        # first is gone (no release) at t0 + 5, its last renewal written at t0 + 4
    async with elect(twin, rng=Jitter(0)) as third:
        await third.wait_term()
        assert now() - t0 == 5 + 15  # observed fresh at 5 (never seen before), + LD


async def test_failing_api_at_the_expiry_instant_is_not_retried_in_a_tight_loop() -> None:
    a = MemoryLock("a")
    b = FaultyLock(a.sibling("b"))
    async with candidates(work=False) as g:
        la = await g.start(a, release_on_cancel=False)
        await la.wait_term()
        async with elect(b, rng=Jitter(0)):
            await anyio.sleep(1)
            g.stop("a")  # a crash: no release
            await anyio.sleep(13.5)  # t = 14.5, b's attempt is scheduled for the expiry at 15
            b.error_rate = 1.0  # every request now fails at once
            await anyio.sleep(4)
            gets = [c.started for c in b.calls if c.op == "get" and c.started > 14.5]
            assert gets == [15, 17]  # RP apart, not thousands at 15


async def test_raising_on_stopped_leading_does_not_wedge_shutdown() -> None:
    def stopped(term: Term) -> None:
        raise ValueError("bug in on_stopped_leading")

    lock = MemoryLock("a")
    with anyio.fail_after(100):
        with pytest.raises(ValueError, match="bug in on_stopped_leading"):
            async with elect(lock, on_stopped_leading=stopped) as leadership:
                await leadership.wait_term()
                await anyio.sleep(1)
    record = lock.peek()
    assert record is not None
    assert record.holder_identity == ""  # released before the callback ran


async def test_user_exception_groups_come_out_unchanged() -> None:
    lock = MemoryLock("a")
    with pytest.raises(ExceptionGroup) as info:
        async with elect(lock) as leadership:
            await leadership.wait_term()
            raise ExceptionGroup("mine", [ValueError("one"), KeyError("two")])
    assert info.value.message == "mine"
    assert len(info.value.exceptions) == 2

    def chained() -> None:
        try:
            raise KeyError("root")
        except KeyError:
            raise RuntimeError("lookup failed")  # noqa: B904 - the implicit context is the point

    with pytest.raises(RuntimeError) as chain:
        async with elect(MemoryLock("b")) as leadership:
            await leadership.wait_term()
            chained()
    assert isinstance(chain.value.__context__, KeyError)


async def test_concurrent_confirmations_share_one_read_and_do_not_starve_renewals() -> None:
    lock = FaultyLock(MemoryLock("a"), ops=frozenset({"get"}))
    async with elect(lock) as leadership:
        term = await leadership.wait_term()
        lock.latency = 3  # slow reads, instant writes
        results: list[bool] = []

        async def confirmer() -> None:
            for _ in range(10):
                results.append(await leadership.is_leader(confirm=True))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(confirmer)
        assert term.active
        assert all(results)
        gets = [c for c in lock.calls if c.op == "get" and c.started > 0]
        assert len(gets) < len(results) / 2  # shared reads
        updates = [c.started for c in lock.calls if c.op == "update"]
        assert max(b - a for a, b in itertools.pairwise(updates)) <= 2 + 3  # RP + one read


async def test_a_renewal_that_succeeds_after_the_deadline_does_not_revive_the_term() -> None:
    lock = FaultyLock(MemoryLock("a"))
    async with elect(lock) as leadership:
        term = await leadership.wait_term()
        lock.fail_next(LockError("503"), LockError("503"), LockError("503"))
        await anyio.sleep(7)
        lock.latency = 2.0  # the retry at 8 completes exactly at the deadline, 10
        await anyio.sleep(3.5)
        assert term.end_reason == "deadline"
        assert term.deadline == 10
        second = await leadership.wait_term()
        assert second.number == 2
        assert second.fencing_token == 1


# -- watching followers --------------------------------------------------------------------------


async def test_watching_follower_sends_no_request_while_the_leader_renews() -> None:
    a = MemoryLock("a")
    b = FaultyLock(a.sibling("b"), watch=True)
    async with elect(a) as la:
        await la.wait_term()
        async with elect(b) as lb:
            await anyio.sleep(600)
            ops = [(c.op, c.started) for c in b.calls]
            assert ops == [("get", 0)]  # one read at start; the watch is still open
            assert lb.leader == "a"
            assert lb.statistics().acquire_attempts == 1
    assert [c.op for c in b.calls] == ["get", "watch"]


async def test_watching_follower_falls_back_to_polling_when_the_watch_is_forbidden() -> None:
    a = MemoryLock("a")
    b = FaultyLock(a.sibling("b"), watch=True, ops=frozenset({"watch"}))
    b.fail_next(ForbiddenError("list", 'leases.coordination.k8s.io "x"'))  # the watch's list
    async with elect(a) as la:
        await la.wait_term()
        t0 = now()
        async with elect(b, rng=Jitter(0)):
            await anyio.sleep(7)
    gets = [c.started - t0 for c in b.calls if c.op == "get"]
    # polling every RP (the watching attempt at 0 and the first poll may both happen at 0,
    # depending on whether the watch failed before or after it)
    assert sorted(set(gets)) == [0, 2, 4, 6]
    assert len(gets) <= 5
    assert [c.outcome for c in b.calls if c.op == "watch"] == ["error"]


async def test_watching_follower_survives_a_broken_stream_and_still_fails_over() -> None:
    a = MemoryLock("a")
    b = FaultyLock(a.sibling("b"), watch=True, rng=random.Random(3))
    async with candidates() as g:
        la = await g.start(a, release_on_cancel=False)
        await la.wait_term()
        b.error_rate = 0.5  # half the watched events break the stream
        lb = await g.start(b)
        await anyio.sleep(30)
        b.heal()
        await anyio.sleep(3)
        g.stop("a")  # t = 33, a crash (no release); a's last renewal at 32
        term = await lb.wait_term()
        assert now() <= 32 + 15 + 2  # LD after the last renewal it saw, + one re-watch pause
        assert term.fencing_token == 1
    # candidates() checked: no overlap, no late work, fencing tokens increasing
    assert sum(1 for c in b.calls if c.op == "watch") > 3  # it did re-watch


async def test_fatal_error_while_following_comes_out_as_itself() -> None:
    lock = FaultyLock(MemoryLock("a"), watch=True, ops=frozenset({"get"}))
    lock.fail_next(ForbiddenError("get", 'leases.coordination.k8s.io "a"'))
    with pytest.raises(ForbiddenError, match="cannot get leases"):
        async with elect(lock) as leadership:
            await leadership.wait_term()
