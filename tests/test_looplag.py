"""Event-loop lag (aioleader/_looplag.py): the pure window on plain numbers, the threshold, and
the one-per-loop monitor on fake clocks (asyncio on looptime, trio on MockClock) with exact values.

A fake clock cannot be stalled by blocking code (``time.sleep`` in a task does not advance
virtual time), so the tests inject the monitor's clock: the event loop's clock plus a stall that
the test adds at a chosen instant. A stall of *s* seconds added while the sampler sleeps reads,
at its next wake-up, as exactly *s* seconds late.
"""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import CollectorRegistry

from aioleader import PrometheusMetrics, Timing, check_health, elect
from aioleader._looplag import (
    LagWindow,
    LoopLagMonitor,
    install_loop_lag_monitor,
    lag_problem,
    lag_threshold,
    loop_lag,
    loop_lag_monitor,
    worst_loop_lag,
)
from aioleader.locks import MemoryLock

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock]


class StalledClock:
    """The loop's clock, plus stalls added by the test."""

    def __init__(self) -> None:
        self.stalled = 0.0

    def __call__(self) -> float:
        return anyio.current_time() + self.stalled


def monitored() -> StalledClock:
    clock = StalledClock()
    install_loop_lag_monitor(LoopLagMonitor(clock=clock))
    return clock


# -- the window, pure --------------------------------------------------------------------------


def test_the_window_reports_the_worst_recent_lag() -> None:
    window = LagWindow(60.0)
    assert window.worst(0.0) == 0.0
    window.record(1.0, 0.002)
    window.record(2.0, 0.150)
    window.record(3.0, 0.010)
    assert window.worst(3.0) == 0.150
    assert window.worst(61.9) == 0.150
    assert window.worst(62.0) == 0.010  # the 0.150 at t=2 left the window (60 s, open at left)
    window.record(62.5, 0.004)
    assert window.worst(62.5) == 0.010
    assert window.worst(63.0) == 0.004
    assert window.worst(200.0) == 0.0


def test_window_and_interval_are_checked() -> None:
    with pytest.raises(ValueError, match="window must be a positive number of seconds, got 0"):
        LagWindow(0)
    with pytest.raises(ValueError, match="interval must be a positive number of seconds"):
        LoopLagMonitor(interval=-1)


def test_the_threshold_is_the_margin_between_deadline_and_expiry() -> None:
    assert lag_threshold(Timing()) == 5.0
    assert lag_threshold(Timing(lease_duration=10, renew_deadline=8, retry_period=1)) == 2.0
    assert lag_threshold(Timing(lease_duration=30, renew_deadline=20, retry_period=5)) == 10.0
    assert lag_problem(5.0, Timing(), "ns/lock") is None
    assert lag_problem(5.2, Timing(), "ns/lock") == (
        "ns/lock: the event loop stalled for 5.2s in the last 60s "
        "(more than lease duration - renew deadline = 5s)"
    )


# -- the monitor, on fake clocks ---------------------------------------------------------------


async def test_a_stall_shows_in_statistics_for_a_minute() -> None:
    clock = monitored()
    async with elect(MemoryLock("a")) as leadership:
        await leadership.wait_term()
        t0 = anyio.current_time()
        assert leadership.statistics().loop_lag == 0.0
        await anyio.sleep(5.05 - t0)  # between two samples (every 0.1 s from t0)
        clock.stalled += 0.3
        await anyio.sleep(0.1)
        assert leadership.statistics().loop_lag == 0.3
        assert loop_lag() == 0.3
        # Still the worst a minute after the stall's sample (t0 + 5.1), gone just after.
        await anyio.sleep(t0 + 5.1 + 59.95 - anyio.current_time())
        assert leadership.statistics().loop_lag == 0.3
        await anyio.sleep(0.1)
        assert leadership.statistics().loop_lag == 0.0
        assert leadership.healthy()


async def test_a_long_stall_is_unhealthy_for_leaders_and_followers() -> None:
    clock = monitored()
    lock = MemoryLock("a")
    async with elect(lock) as a, elect(lock.sibling("b")) as b:
        await a.wait_term()
        await anyio.sleep(0.05)
        clock.stalled += 5.5  # more than LD - RD = 5 s at 15/10/2
        await anyio.sleep(0.1)
        assert a.statistics().loop_lag == 5.5
        status = check_health([a, b])
        assert not status.healthy
        assert (
            status.problems
            == (
                "memory/memory-lock: the event loop stalled for 5.5s in the last 60s "
                "(more than lease duration - renew deadline = 5s)",
            )
            * 2
        )


async def test_one_sampler_per_loop_moves_to_the_elections_that_remain() -> None:
    clock = monitored()
    monitor = loop_lag_monitor()
    first_scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:

        async def first(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with first_scope:
                async with elect(MemoryLock("x", name="one")):
                    task_status.started()
                    await anyio.sleep_forever()

        await tg.start(first)
        async with elect(MemoryLock("x", name="two")) as second:
            assert monitor.running
            first_scope.cancel()  # the host of the sampler ends
            await anyio.sleep(1.05)
            clock.stalled += 0.25
            await anyio.sleep(0.1)
            # Still sampled (by a task in the second election's group), the window kept.
            assert second.statistics().loop_lag == 0.25
        assert not monitor.running
    assert loop_lag() == 0.25  # the last figure, no longer updated
    assert worst_loop_lag() == 0.0  # no loop with elections left


async def test_the_prometheus_gauge_reads_the_monitor() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    clock = monitored()
    async with elect(MemoryLock("a"), metrics=metrics) as leadership:
        await leadership.wait_term()
        await anyio.sleep(0.05)
        clock.stalled += 0.125
        await anyio.sleep(0.1)
        assert registry.get_sample_value("aioleader_event_loop_lag_seconds") == 0.125
    assert registry.get_sample_value("aioleader_event_loop_lag_seconds") == 0.0
