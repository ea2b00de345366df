"""How ``aioleader run`` and ``watch`` tell that the API stops and starts answering: one line per
change of state, never one per attempt.

The decisions (:class:`ApiState`) are tested with plain values; the monitor fed by a real election
(``campaign`` with the monitor as its ``metrics`` hook and ``on_new_leader``, as the sidecar does)
on fake clocks, with exact times. The locks are :class:`FaultyLock` over :class:`MemoryLock`: the
outage is every request failing.
"""

from __future__ import annotations

import anyio
import pytest

from aioleader import Lock, Timing, campaign
from aioleader._reachability import ApiMonitor, ApiState, error_text
from aioleader.testing import FaultyLock, MemoryLock

# RP 1 s, no jitter: attempts at whole seconds. quiet = RP × (1 + jitter) + RD = 4 s.
TIMING = Timing(lease_duration=4, renew_deadline=3, retry_period=1, jitter=0)
QUIET = 4.0


def test_a_line_when_requests_start_failing_and_one_when_they_succeed_again() -> None:
    state = ApiState()
    assert state.answered(0.0) is None  # the first answer is not news
    assert (
        state.failed(1.0, "connection refused") == "API unavailable (connection refused); retrying"
    )
    assert state.failed(2.0, "connection refused") is None
    assert state.failed(3.0, "503 ServiceUnavailable") is None  # still the same state
    assert state.answered(4.0) == "API available again"
    assert state.answered(5.0) is None


def test_failing_from_the_start_is_reported() -> None:
    state = ApiState()
    assert state.failed(0.0, "timeout") == "API unavailable (timeout); retrying"


def test_a_probe_counts_only_once_the_election_has_been_quiet() -> None:
    # A server that answers reads but fails the election's writes: the probe succeeds between
    # two failures of the election, which must not read as "available" once per attempt.
    state = ApiState(quiet=QUIET)
    assert state.failed(0.0, "500") is not None
    for t in (1.0, 2.0, 3.0):
        assert state.probed(t + 0.5) is None
        assert state.failed(t, "500") is None
    assert state.probed(6.9) is None  # 3.9 s after the last failure
    assert state.probed(7.0) == "API available again"


def test_error_text_drops_the_exception_type_and_folds_lines() -> None:
    assert error_text("LockError: cannot get x: no response within 5 s") == (
        "cannot get x: no response within 5 s"
    )
    assert error_text("while parsing\n  in line 3") == "while parsing in line 3"
    assert error_text(TimeoutError()) == "TimeoutError"


async def _follower(
    lines: list[tuple[float, str]], lock: FaultyLock, probe: FaultyLock, t0: float
) -> None:
    def say(message: str) -> None:
        lines.append((anyio.current_time() - t0, message))

    def probe_lock() -> Lock:
        return probe

    monitor = ApiMonitor(
        say,
        probe_lock=probe_lock,
        interval=TIMING.retry_period,
        timeout=TIMING.renew_deadline / 2,
        quiet=QUIET,
    )

    def new_leader(holder: str) -> None:
        monitor.answered()
        say(f"{holder or 'nobody'} leads")

    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.probe)
        leadership = await tg.start(
            lambda task_status: campaign(
                lock,
                timing=TIMING,
                metrics=monitor,
                on_new_leader=new_leader,
                task_status=task_status,
            )
        )
        monitor.bind(lambda: leadership.statistics().last_error)


@pytest.mark.anyio
@pytest.mark.fake_clock
async def test_a_follower_reports_each_outage_once_and_each_recovery() -> None:
    leader_lock = MemoryLock("leader")
    lock = FaultyLock(leader_lock.sibling("b"))
    probe = FaultyLock(leader_lock.sibling("b"))
    lines: list[tuple[float, str]] = []
    t0 = anyio.current_time()
    lock.error_rate = probe.error_rate = 1.0  # unreachable from the start
    async with anyio.create_task_group() as tg:
        leader = await tg.start(
            lambda task_status: campaign(leader_lock, timing=TIMING, task_status=task_status)
        )
        await leader.acquired.wait()
        assert anyio.current_time() == t0
        tg.start_soon(_follower, lines, lock, probe, t0)

        await anyio.sleep(4.5)
        assert lines == [
            (0.0, "API unavailable (memory/memory-lock: injected get failure); retrying")
        ]
        lock.heal()
        probe.heal()
        # The next attempt (t = 5) reads the lock: a new leader observed is an answer.
        await anyio.sleep(5.0)
        assert lines[1:] == [(5.0, "API available again"), (5.0, "leader leads")]

        # A second outage while the holder does not change: only the probe can tell it is
        # over, once the election has been quiet for 4 s (last failure at t = 12).
        lock.error_rate = probe.error_rate = 1.0  # t = 9.5
        await anyio.sleep(3.0)  # attempts and probes fail at t = 10, 11, 12
        lock.heal()
        probe.heal()
        await anyio.sleep(5.5)  # t = 18
        assert lines[3:] == [
            (10.0, "API unavailable (memory/memory-lock: injected get failure); retrying"),
            (16.0, "API available again"),
        ]
        tg.cancel_scope.cancel()
