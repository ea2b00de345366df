"""Event-loop lag: how late the loop runs what is due, one small monitor per event loop.

A starved loop is the other way (besides a slow API server) to lose leadership: a renewal due
every RP cannot be sent while the loop runs somebody's blocking code, and leader work cannot be
cancelled at its deadline either. The elector reports the lag (``leadership.statistics().loop_lag``,
the ``aioleader_event_loop_lag_seconds`` gauge of [`PrometheusMetrics`][aioleader.PrometheusMetrics]) and
health fails when it exceeds what the timing can absorb ([`lag_problem()`][lag_problem]).

**How it is measured.** A task sleeps [`INTERVAL`][INTERVAL] seconds again and again; how much later
than asked it wakes up is the lag of that moment (oversleep, as Node's
``monitorEventLoopDelay``). The figure reported is the worst lag seen in the last [`WINDOW`][WINDOW]
seconds ([`LagWindow`][LagWindow], pure: it takes ``now`` as an argument). A loop blocked for *B*
seconds shows a lag between *B* − INTERVAL and *B*, once it runs again.

**One per event loop.** Every election of the loop shares one [`LoopLagMonitor`][LoopLagMonitor] (an anyio
``RunVar``): the first election to start it hosts its sampling task in the election's own task
group; when the host election ends while others run, the sampling moves to another election's
task group (the measured window is kept); it stops with the last election.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._timing import Timing

__all__ = [
    "INTERVAL",
    "WINDOW",
    "LagWindow",
    "LoopLagMonitor",
    "install_loop_lag_monitor",
    "lag_problem",
    "lag_threshold",
    "loop_lag",
    "loop_lag_monitor",
    "worst_loop_lag",
]

#: Seconds between two samples: short enough to see a stall of a few tens of milliseconds,
#: long enough to cost nothing (ten wake-ups a second).
INTERVAL: Final = 0.1
#: Seconds over which the worst lag is reported ("recently").
WINDOW: Final = 60.0

_monitor: anyio.lowlevel.RunVar[LoopLagMonitor] = anyio.lowlevel.RunVar("aioleader_loop_lag")
# Every live monitor, for readers outside any event loop (a Prometheus scrape thread).
_live: dict[LoopLagMonitor, None] = {}


class LagWindow:
    """The worst lag over the last ``window`` seconds, from samples ``(time, lag)`` recorded in
    time order. Pure: no clock of its own, no I/O."""

    def __init__(self, window: float = WINDOW) -> None:
        if not window > 0:
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        self.window = window
        # Samples that may still become the worst one: lags strictly decreasing left to right.
        self._candidates: deque[tuple[float, float]] = deque()

    def record(self, now: float, lag: float) -> None:
        """A sample at ``now``: the loop ran ``lag`` seconds late."""
        candidates = self._candidates
        while candidates and candidates[-1][1] <= lag:
            candidates.pop()
        candidates.append((now, lag))

    def worst(self, now: float) -> float:
        """The largest lag recorded in ``(now - window, now]``; 0.0 if none."""
        candidates = self._candidates
        while candidates and candidates[0][0] <= now - self.window:
            candidates.popleft()
        return candidates[0][1] if candidates else 0.0


def lag_threshold(timing: Timing) -> float:
    """The lag beyond which an election is unhealthy: ``lease_duration - renew_deadline``.

    That is the margin between the moment our leader work must stop (the last renewal's send
    time + RD) and the moment others may take the lease (their observation + LD). A loop that
    stalled for longer than that may have run leader work past the point where another
    candidate could lead (anyio cancels the work at the deadline, but only once the loop runs),
    and would have missed renewals besides (RD - RP is at least as large for the presets: 8 s at
    15/10/2, 5 s at the margin itself). 5 s for 15/10/2, 2 s for 10/8/1, 10 s for 30/20/5.
    """
    return timing.lease_duration - timing.renew_deadline


def lag_problem(lag: float, timing: Timing, description: str) -> str | None:
    """Why ``lag`` (the worst recent lag) makes an election unhealthy, or ``None``."""
    threshold = lag_threshold(timing)
    if lag > threshold:
        return (
            f"{description}: the event loop stalled for {lag:.1f}s in the last "
            f"{WINDOW:g}s (more than lease duration - renew deadline = {threshold:g}s)"
        )
    return None


class LoopLagMonitor:
    """Samples one event loop's lag (see the module docstring). ``clock`` is the time source
    (``anyio.current_time`` unless a test injects one); ``interval`` and ``window`` as
    [`INTERVAL`][INTERVAL] and [`WINDOW`][WINDOW]."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = anyio.current_time,
        interval: float = INTERVAL,
        window: float = WINDOW,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.clock = clock
        self.interval = interval
        self.window = LagWindow(window)
        self.latest = 0.0  # the worst recent lag as of the last sample (for other threads)
        self._hosts: dict[TaskGroup, None] = {}
        self._sampler_host: TaskGroup | None = None
        self._sampler_scope: anyio.CancelScope | None = None

    @property
    def running(self) -> bool:
        return self._sampler_host is not None

    def worst(self) -> float:
        """The worst lag over the window, now (call from the monitor's event loop)."""
        self.latest = self.window.worst(self.clock())
        return self.latest

    def join(self, host: TaskGroup) -> None:
        """An election starts in ``host`` (its task group): sample, if nobody does yet."""
        self._hosts[host] = None
        _live[self] = None
        if self._sampler_host is None:
            self._start_in(host)

    def leave(self, host: TaskGroup) -> None:
        """The election of ``host`` ends: move the sampling elsewhere, or stop it."""
        self._hosts.pop(host, None)
        if self._sampler_host is not host:
            return
        self._sampler_host = None
        if self._sampler_scope is not None:
            self._sampler_scope.cancel()
            self._sampler_scope = None
        for other in list(self._hosts):
            try:
                self._start_in(other)
            except RuntimeError:  # that task group is closing too
                self._hosts.pop(other, None)
                continue
            return
        _live.pop(self, None)

    def _start_in(self, host: TaskGroup) -> None:
        # Shielded and cancelled only by leave(): the host's own cancellation (an election
        # ending with an error) must not add a Cancelled of ours to what it raises.
        scope = anyio.CancelScope(shield=True)
        host.start_soon(self._sample, scope, name="aioleader loop-lag monitor")
        self._sampler_host = host
        self._sampler_scope = scope

    async def _sample(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await self._sample_once()

    async def _sample_once(self) -> None:
        start = self.clock()
        await anyio.sleep(self.interval)
        now = self.clock()
        # Rounded to microseconds (what a fake clock resolves; real loops wake ~1 ms late).
        lag = round(max(0.0, now - start - self.interval), 6)
        self.window.record(now, lag)
        self.latest = self.window.worst(now)


def loop_lag_monitor() -> LoopLagMonitor:
    """The current event loop's monitor (created, not started, on first use)."""
    try:
        return _monitor.get()
    except LookupError:
        monitor = LoopLagMonitor()
        _monitor.set(monitor)
        return monitor


def install_loop_lag_monitor(monitor: LoopLagMonitor) -> None:
    """Use ``monitor`` for the current event loop's elections (tests inject a clock this way);
    call before the first election starts."""
    _monitor.set(monitor)


def loop_lag() -> float:
    """The worst lag of the current event loop over the last [`WINDOW`][WINDOW] seconds (0.0 while
    no election runs a monitor)."""
    try:
        monitor = _monitor.get()
    except LookupError:
        return 0.0
    return monitor.worst() if monitor.running else monitor.latest


def worst_loop_lag() -> float:
    """The worst recent lag over every event loop with elections, as of their last samples;
    callable from any thread (the Prometheus gauge)."""
    return max((m.latest for m in list(_live)), default=0.0)
