"""Step down, pause/resume, rotation (max_term) and readiness, on fake clocks with exact times.

Default timing: LD 15, RD 10, RP 2 (jitter 1.2). ``Jitter`` picks the low end: polls every 2 s.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest
from _jitter import Jitter, now

from aioleader import LeaderElectionRecord, Timing, elect
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock, TermLog, lead_forever

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock]


@pytest.mark.parametrize("watch", [True, False])
async def test_step_down_hands_over_at_once_and_keeps_out_for_the_cooldown(watch: bool) -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    log = TermLog()
    t0 = now()
    work_done: list[float] = []
    async with elect(a, rng=Jitter(0)) as la:
        term = await la.wait_term()
        async with anyio.create_task_group() as tg:
            await tg.start(partial(lead_forever, b, log, rng=Jitter(0), watch=watch))

            async def work() -> None:
                async with la.leading():
                    try:
                        await anyio.sleep_forever()
                    finally:
                        with anyio.CancelScope(shield=True):
                            await anyio.sleep(0.5)  # cleanup takes a while
                        work_done.append(now() - t0)

            tg.start_soon(work)
            await anyio.sleep(3)
            await la.step_down(cooldown=30)
            # Returned once the work had finished (3.5) and the release was written.
            assert now() - t0 == 3.5
            assert work_done == [3.5]
            assert term.end_reason == "stepped down"
            assert not la.is_leader_nowait()
            await anyio.sleep(1)
            b_term = la.leader
            assert b_term == "b"
            # b is the leader now; "a" stays out for 30 s even when b releases.
            tg.cancel_scope.cancel()
        assert log.intervals[0].identity == "b"
        # Watching: b takes the released lock at once; polling: at its next poll (2, 4 → 4).
        assert log.intervals[0].start - t0 == (3.5 if watch else 4)
        await anyio.sleep(5)  # t = 9.5: b is gone and released; the lock is free
        assert not la.is_leader_nowait()
        second = await la.wait_term()
        assert now() - t0 == 3.5 + 30  # not before the cooldown ran out
        assert second.fencing_token > term.fencing_token


async def test_step_down_when_not_leading_only_keeps_out() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    t0 = now()
    async with elect(b, release_on_cancel=False) as lb:
        await lb.wait_term()
        async with elect(a, rng=Jitter(0)) as la:
            await anyio.sleep(1)
            await la.step_down(cooldown=40)
            assert now() - t0 == 1
    # b is gone without release at 1 (its last renewal was written at 0)...
    async with elect(a, rng=Jitter(0)) as la:
        await la.wait_term()
        assert now() - t0 == 1 + 15  # a new election has no cooldown: a takes over at expiry


async def test_step_down_rejects_a_bad_cooldown() -> None:
    async with elect(MemoryLock("a")) as la:
        await la.wait_term()
        with pytest.raises(ValueError, match="cooldown must be a number of seconds >= 0"):
            await la.step_down(cooldown=-1)
        assert la.is_leader_nowait()


@pytest.mark.parametrize("watch", [True, False])
async def test_pause_steps_down_and_resume_campaigns_again(watch: bool) -> None:
    a = MemoryLock("a")
    t0 = now()
    async with elect(a, rng=Jitter(0), watch=watch) as la:
        first = await la.wait_term()
        await anyio.sleep(2.5)
        la.pause()
        assert la.paused
        await anyio.sleep(0.001)
        assert first.end_reason == "stepped down"
        record = a.peek()
        assert record is not None
        assert record.holder_identity == ""  # released
        await anyio.sleep(100)
        assert not la.is_leader_nowait()  # a free lock, but paused: no campaign
        la.resume()
        assert not la.paused
        second = await la.wait_term()
        assert now() - t0 == 102.501  # at once on resume
        assert second.fencing_token == first.fencing_token + 1


async def test_max_term_rotates_the_leader() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    log = TermLog()
    t0 = now()
    timing = Timing()
    async with anyio.create_task_group() as tg:
        await tg.start(partial(lead_forever, a, log, rng=Jitter(0), max_term=30))
        await anyio.sleep(1)
        await tg.start(partial(lead_forever, b, log, rng=Jitter(0), max_term=30))
        await anyio.sleep(100)
        tg.cancel_scope.cancel()
    starts = [(i.identity, i.start - t0, i.end_reason) for i in log.intervals]
    # a: 0-30, b (watching) takes over at once: 30-60, a: 60-90, b: 90-...
    assert starts[:3] == [
        ("a", 0, "stepped down"),
        ("b", 30, "stepped down"),
        ("a", 60, "stepped down"),
    ]
    assert log.overlaps == []
    assert timing.retry_period * (1 + timing.jitter) + timing.retry_period == 6.4


async def test_max_term_alone_re_takes_after_the_rest() -> None:
    a = MemoryLock("a")
    t0 = now()
    async with elect(a, rng=Jitter(0), max_term=10) as la:
        first = await la.wait_term()
        await first.wait_ended()
        assert now() - t0 == 10
        second = await la.wait_term()
        assert now() - t0 == 10 + 6.4  # nobody else took it: re-taken after (1 + jitter)·RP + RP
        assert second.fencing_token == first.fencing_token + 1


async def test_max_term_is_validated() -> None:
    with pytest.raises(ValueError, match="max_term must be longer than the retry period"):
        elect(MemoryLock("a"), max_term=1)
    with pytest.raises(TypeError, match="max_term must be a number of seconds"):
        elect(MemoryLock("a"), max_term="10")  # type: ignore[arg-type]


async def test_campaigns_only_while_ready_and_steps_down_when_not() -> None:
    a = MemoryLock("a")
    ready = False
    t0 = now()

    async def is_ready() -> bool:
        return ready

    async with elect(a, ready=is_ready) as la:
        await anyio.sleep(5)
        assert not la.is_leader_nowait()
        assert la.paused
        assert a.peek() is None  # never even created the lock
        ready = True
        term = await la.wait_term()
        assert now() - t0 == 6  # the readiness check every RP: at 2, 4, 6
        ready = False
        await term.wait_ended()
        assert now() - t0 == 8
        assert term.end_reason == "stepped down"
        await anyio.sleep(1)  # the release follows the (empty) work at once
        record = a.peek()
        assert record is not None
        assert record.holder_identity == ""


async def test_a_failing_readiness_check_counts_as_not_ready() -> None:
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("probe exploded")
        return True

    t0 = now()
    async with elect(MemoryLock("a"), ready=check) as la:
        await la.wait_term()
        assert now() - t0 == 4  # calls at 0 and 2 failed, 4 said ready


# -- coordinated election and preferredHolder ----------------------------------------------------------


class Candidacy:
    """A stand-in candidacy: the election controller is played by the test (``MemoryLock.put``)."""

    def __init__(self) -> None:
        self.kept = False
        self.withdrawn = False

    async def keep(self, lock: Any, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self.kept = True
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self.withdrawn = True


def assigned(holder: str, transitions: int, preferred: str | None = None) -> LeaderElectionRecord:
    return LeaderElectionRecord(
        holder_identity=holder,
        lease_duration_seconds=15,
        leader_transitions=transitions,
        strategy="OldestEmulationVersion",
        preferred_holder=preferred,
    )


async def test_a_coordinated_candidate_leads_only_when_the_controller_names_it() -> None:
    a = MemoryLock("a")
    candidacy = Candidacy()
    t0 = now()
    async with elect(a, candidate=candidacy, rng=Jitter(0)) as la:
        assert candidacy.kept
        await anyio.sleep(30)
        assert not la.is_leader_nowait()
        assert a.peek() is None  # it never creates the lock itself
        a.put(assigned("", 4))
        await anyio.sleep(30)
        assert not la.is_leader_nowait()  # nor takes a free one
        a.put(assigned("a", 4))  # t = 60: the controller assigns the lease to "a"
        term = await la.wait_term()
        assert now() - t0 == 60  # watching: at once
        assert term.fencing_token == 5  # the controller does not count; the candidate does
        record = a.peek()
        assert record is not None
        assert (record.holder_identity, record.strategy) == ("a", "OldestEmulationVersion")
    assert candidacy.withdrawn


@pytest.mark.parametrize("coordinated", [True, False])
async def test_a_preferred_holder_gets_the_lease_at_once(coordinated: bool) -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    log = TermLog()
    t0 = now()
    options: dict[str, Any] = {"rng": Jitter(0)}
    if coordinated:
        a.put(assigned("a", 0))
    async with anyio.create_task_group() as tg:
        await tg.start(
            partial(lead_forever, a, log, candidate=Candidacy() if coordinated else None, **options)
        )
        await anyio.sleep(3)
        # The controller names a better candidate; "b" is told so too (here: by the test).
        record = a.peek()
        assert record is not None
        a.put(record.with_changes(preferred_holder="b"))
        await anyio.sleep(1.5)  # a's renewal at 4 conflicts, reads, sees it, hands over
        released = a.peek()
        assert released is not None
        assert released.holder_identity == ""
        if coordinated:
            a.put(assigned("b", released.leader_transitions))  # the controller assigns it
        await tg.start(
            partial(lead_forever, b, log, candidate=Candidacy() if coordinated else None, **options)
        )
        await anyio.sleep(10)
        tg.cancel_scope.cancel()
    ends = [(i.identity, i.start - t0, i.end - t0, i.end_reason) for i in log.intervals]
    assert ends[0] == ("a", 0, 4, "stepped down")
    assert ends[1][:2] == ("b", 4.5)  # b joins at 4.5 and leads at once
    assert log.overlaps == []


# -- term hooks ------------------------------------------------------------------------------------------


class RecordingHook:
    """A TermHook that applies its state after ``delay`` and records what the lock said then."""

    def __init__(self, lock: MemoryLock, delay: float = 0.5) -> None:
        self.lock = lock
        self.delay = delay
        self.log: list[tuple[float, str, str]] = []
        self._wanted = False
        self._applied = anyio.Event()
        self._changed = anyio.Event()

    def _holder(self) -> str:
        record = self.lock.peek()
        return record.holder_identity if record is not None else "-"

    async def run(self, lock: Any, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        await anyio.sleep(self.delay)
        self.log.append((now(), "standby", self._holder()))
        self._applied.set()
        task_status.started()
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            await anyio.sleep(self.delay)
            self.log.append((now(), "leader" if self._wanted else "standby", self._holder()))
            self._applied.set()

    def want(self, leading: bool, term: Any) -> None:
        self._wanted = leading
        self._applied = anyio.Event()
        self._changed.set()

    async def wait_applied(self) -> None:
        await self._applied.wait()

    def problem(self) -> str | None:
        return None


async def test_hooks_reach_standby_before_the_lock_is_released() -> None:
    a = MemoryLock("a")
    hook = RecordingHook(a)
    t0 = now()
    async with elect(a, hooks=[hook]) as la:
        await la.wait_term()
        assert now() - t0 == 0.5  # the standby state is applied before campaigning starts
        await anyio.sleep(3)
        await la.step_down(cooldown=100)
        assert now() - t0 == 4  # stepped down at 3.5, standby applied at 4, then released
    assert [(t - t0, state, holder) for t, state, holder in hook.log] == [
        (0.5, "standby", "-"),
        (1.0, "leader", "a"),
        (4.0, "standby", "a"),  # still ours when the standby state landed: released after
    ]
    record = a.peek()
    assert record is not None
    assert record.holder_identity == ""


async def test_a_hook_that_never_applies_delays_the_release_by_at_most_half_the_renew_deadline() -> (
    None
):
    a = MemoryLock("a")
    hook = RecordingHook(a, delay=1000)
    hook.delay = 0.0  # the start-up standby is instant...
    t0 = now()
    async with elect(a, hooks=[hook]) as la:
        await la.wait_term()
        hook.delay = 1000  # ...then it hangs
        await anyio.sleep(1)
        left = now()
    assert now() - left == 5  # RD/2, then released anyway
    record = a.peek()
    assert record is not None
    assert record.holder_identity == ""
    assert t0 <= left


async def test_hooks_reach_standby_before_the_release_when_the_election_is_cancelled() -> None:
    a = MemoryLock("a")
    hook = RecordingHook(a)
    t0 = now()
    async with elect(a, hooks=[hook]) as la:
        await la.wait_term()
        await anyio.sleep(2)
        left = now()
    # The hook's task outlives the cancellation: standby applied in 0.5 s, then released.
    assert now() - left == 0.5
    assert [(t - t0, state, holder) for t, state, holder in hook.log] == [
        (0.5, "standby", "-"),
        (1.0, "leader", "a"),
        (3.0, "standby", "a"),
    ]
    record = a.peek()
    assert record is not None
    assert record.holder_identity == ""


async def test_a_term_won_by_an_attempt_in_flight_when_paused_is_handed_back_at_once() -> None:
    a = FaultyLock(MemoryLock("a"), ops=frozenset({"create"}))
    a.latency = 1.0  # the winning write takes a second
    t0 = now()
    async with elect(a) as la:
        await anyio.sleep(0.5)
        la.pause()  # while the create is in flight
        await anyio.sleep(1)  # t = 1.5
        term = la.term
        assert term is not None
        assert term.acquired_at - t0 == 0  # sent at 0, won at 1
        assert term.ended_at is not None
        assert term.ended_at - t0 == 1  # declined at once
        assert term.end_reason == "stepped down"
        record = a.inner.peek()  # type: ignore[attr-defined]
        assert record is not None
        assert record.holder_identity == ""  # released
        assert not la.is_leader_nowait()
        assert la.statistics().terms == 1
