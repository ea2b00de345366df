"""A seeded chaos run: N candidates on one lock, random faults, every term recorded on one clock.

Used by the test suite (fake clock, ≥ 200 failovers) and by ``bench/chaos.py`` (≥ 1,000). The
property checked is the one that matters: the intervals during which candidates ran leader work
never overlap, no work outlives its term's deadline, and after each fault heals a leader emerges
within ``LD + (1 + jitter)·RP + latency``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, final

import anyio
from anyio.abc import TaskGroup

from .._election import campaign
from .._leadership import Leadership, Term
from .._lock import Lock
from .._timing import Timing
from ..locks._memory import MemoryLock
from ._faulty_lock import FaultyLock

__all__ = ["FAULTS", "ChaosReport", "TermLog", "WorkInterval", "lead_forever", "run_chaos"]

FAULTS = (
    "crash",
    "stop",
    "partition",
    "errors",
    "latency",
    "lost-replies",
    "follower-partition",
    "follower-errors",
    "delete",
)


@final
@dataclass(frozen=True)
class WorkInterval:
    """Leader work of one candidate: from entering ``leading()`` to leaving it."""

    identity: str
    term: int
    fencing_token: int
    start: float
    end: float
    deadline: float
    end_reason: str | None
    started_active: bool = True


@dataclass
class TermLog:
    """Every interval of leader work by every candidate, on one monotonic clock."""

    intervals: list[WorkInterval] = field(default_factory=list)
    # How late work may end after its deadline and still count as on time: the clock's resolution
    # on fake clocks (looptime rounds to 1 µs); on real time, the event loop's scheduling latency.
    tolerance: float = 1e-6

    @property
    def failovers(self) -> int:
        """Changes of leader (a new term by another candidate, or by the same after a loss)."""
        return max(0, len(self.intervals) - 1)

    @property
    def overlaps(self) -> list[tuple[WorkInterval, WorkInterval]]:
        """Pairs of intervals during which two candidates worked as leader at once."""
        ordered = sorted(self.intervals, key=lambda i: i.start)
        found = []
        for i, first in enumerate(ordered):
            for second in ordered[i + 1 :]:
                if second.start >= first.end:
                    break
                found.append((first, second))
        return found

    @property
    def late_work(self) -> list[WorkInterval]:
        """Work that went on past its term's deadline by more than ``tolerance`` (must be empty)."""
        return [i for i in self.intervals if i.end > i.deadline + self.tolerance]

    @property
    def started_inactive(self) -> list[WorkInterval]:
        """Work that began in a term already over (must be empty)."""
        return [i for i in self.intervals if not i.started_active]

    async def work(self, term: Term) -> None:
        """ "Work" as leader in ``term`` until cancelled (call it inside ``leading()``), and
        record the interval."""
        start = anyio.current_time()
        active = term.active  # the body must never start in a term that is over
        try:
            await anyio.sleep(math.inf)
        finally:
            self.intervals.append(
                WorkInterval(
                    identity=term.identity,
                    term=term.number,
                    fencing_token=term.fencing_token,
                    start=start,
                    end=anyio.current_time(),
                    deadline=term.deadline,
                    end_reason=term.end_reason,
                    started_active=active,
                )
            )

    @property
    def fencing_monotonic(self) -> bool:
        tokens = [i.fencing_token for i in sorted(self.intervals, key=lambda i: i.start)]
        return all(a < b for a, b in itertools.pairwise(tokens))


async def lead_forever(
    lock: Lock,
    log: TermLog,
    *,
    task_status: anyio.abc.TaskStatus[Leadership] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Campaign on ``lock`` and, in every term, "work" until cancelled, recording the interval."""
    async with anyio.create_task_group() as tg:
        leadership: Leadership = await tg.start(partial(campaign, lock, **options))
        task_status.started(leadership)
        while True:
            async with leadership.leading() as term:
                await log.work(term)


@final
@dataclass
class ChaosReport(TermLog):
    """What [`run_chaos()`][run_chaos] did and saw: the faults injected, every interval of leader work
    (a [`TermLog`][TermLog]), and how long each recovery after a heal took."""

    seed: int = 0
    candidates: int = 0
    rounds: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    recoveries: list[float] = field(default_factory=list)  # heal -> next leader, seconds
    recovery_faults: list[str] = field(default_factory=list)
    virtual_seconds: float = 0.0
    bound: float = 0.0

    @property
    def max_recovery(self) -> float:
        return max(self.recoveries, default=0.0)

    def summary(self) -> str:
        return (
            f"chaos seed={self.seed}: {self.candidates} candidates, {self.rounds} fault rounds "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.faults.items()))}), "
            f"{self.failovers} failovers in {self.virtual_seconds:.0f} virtual s; "
            f"overlapping terms {len(self.overlaps)}, work past deadline {len(self.late_work)}, "
            f"work started in an ended term {len(self.started_inactive)}, "
            f"max time to a leader after heal {self.max_recovery:.2f} s (bound {self.bound:.2f} s)"
        )


class _Candidate:
    def __init__(self, lock: FaultyLock, timing: Timing, rng: random.Random, report: ChaosReport):
        self.lock = lock
        self.timing = timing
        self.rng = rng
        self.report = report
        self.scope: anyio.CancelScope | None = None
        self.leadership: Leadership | None = None

    @property
    def up(self) -> bool:
        return self.scope is not None

    async def start(self, tg: TaskGroup) -> None:
        scope = anyio.CancelScope()
        self.scope = scope

        async def run(*, task_status: anyio.abc.TaskStatus[Leadership]) -> None:
            with scope:
                await lead_forever(
                    self.lock,
                    self.report,
                    timing=self.timing,
                    rng=self.rng,
                    task_status=task_status,
                )

        self.leadership = await tg.start(run)

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()
        self.scope = None
        self.leadership = None

    def has_seen(self, raw: bytes | None) -> bool:
        if self.leadership is None:
            return False
        return raw is not None and self.lock.last_delivered == raw

    @property
    def leading(self) -> bool:
        return self.leadership is not None and self.leadership.is_leader_nowait()


async def run_chaos(
    *,
    seed: int,
    candidates: int = 5,
    failovers: int = 200,
    timing: Timing | None = None,
    max_latency: float = 1.5,
    max_rounds: int = 5000,
    progress: Callable[[ChaosReport], None] | None = None,
) -> ChaosReport:
    """Run rounds of one fault each until ``failovers`` leader changes have happened.

    Even-numbered candidates follow the lock through a watch (faulted like their requests), odd-
    numbered ones poll. Each round waits until some candidate leads, injects one fault (kill the
    leader without release, stop it gracefully, partition it, make its requests fail or slow,
    lose replies of writes, partition a follower) for a random time, heals it, and measures how
    long it takes until a leader exists again. Designed for fake clocks (looptime, trio's
    MockClock).
    """
    timing = timing or Timing()
    rng = random.Random(seed)
    report = ChaosReport(seed=seed, candidates=candidates)
    # Followers poll every RP·[1, 1 + jitter] and attempt exactly when the lease they observed
    # expires: LD after they saw the last renewal, which is at most one poll after it was written.
    report.bound = (
        timing.lease_duration + (1 + timing.jitter) * timing.retry_period + 2 * max_latency
    )
    base = MemoryLock("c0", name="chaos")
    pool = [
        _Candidate(
            # Every other candidate follows the lock through a (faulted) watch, the rest poll.
            FaultyLock(
                base if i == 0 else base.sibling(f"c{i}"),
                rng=random.Random(rng.random()),
                watch=i % 2 == 0,
            ),
            timing,
            random.Random(rng.random()),
            report,
        )
        for i in range(candidates)
    ]
    t0 = anyio.current_time()

    def leaders() -> list[_Candidate]:
        return [c for c in pool if c.leading]

    async def wait_for_leader(limit: float) -> float | None:
        start = anyio.current_time()
        with anyio.move_on_after(limit):
            while not leaders():  # noqa: ASYNC110 - sampling the candidates is the point
                await anyio.sleep(0.05)
            return anyio.current_time() - start
        return None

    async def record_recovery(fault: str, healed_at: float) -> None:
        # A leader must emerge within the bound, counted from the heal.
        took = await wait_for_leader(report.bound + 60)
        report.recoveries.append(math.inf if took is None else anyio.current_time() - healed_at)
        report.recovery_faults.append(fault)

    async with anyio.create_task_group() as tg:
        for c in pool:
            await c.start(tg)
        while report.failovers < failovers and report.rounds < max_rounds:
            report.rounds += 1
            if await wait_for_leader(report.bound + 120) is None:
                report.recoveries.append(math.inf)  # stuck without a leader: fails the run
                report.recovery_faults.append("no leader before the fault")
                break
            current = leaders()[0]
            fault = rng.choice(FAULTS)
            report.faults[fault] = report.faults.get(fault, 0) + 1
            duration = rng.uniform(1, 3 * timing.lease_duration)
            if fault in ("crash", "stop"):
                if fault == "crash":
                    # The process vanishes: its requests stop reaching the API (so its release,
                    # if it tries one, cannot land) and its task is cancelled.
                    current.lock.hang = True
                current.stop()  # "stop" is graceful: work cancelled and awaited, then released
                healed_at = anyio.current_time()
                await record_recovery(fault, healed_at)
                await anyio.sleep(max(0.0, healed_at + duration - anyio.current_time()))
                current.lock.heal()
                await current.start(tg)
            else:
                target = current
                if fault.startswith("follower-"):
                    target = rng.choice([c for c in pool if c is not current])
                lock = target.lock
                if fault in ("partition", "follower-partition"):
                    lock.hang = True
                elif fault == "delete":
                    # The leader's API path degrades and somebody deletes the lock object: the
                    # others must still wait the leader's lease out. Only candidates that have
                    # seen the current holder can know it exists (a deleted lock hides its
                    # holder from everyone else; client-go has the same blind spot), so the
                    # fault waits until every candidate has read the current record.
                    while not all(c.has_seen(base.peek_raw()) for c in pool if c.up):  # noqa: ASYNC110
                        await anyio.sleep(timing.retry_period / 4)
                    lock.error_rate = 1.0
                    base.delete()
                elif fault in ("errors", "follower-errors"):
                    lock.error_rate = rng.uniform(0.3, 1.0)
                elif fault == "latency":
                    lock.latency = rng.uniform(0, max_latency)
                    lock.reply_latency = rng.uniform(0, max_latency)
                elif fault == "lost-replies":
                    lock.apply_then_fail_rate = rng.uniform(0.3, 0.9)
                await anyio.sleep(duration)
                lock.heal()
                await record_recovery(fault, anyio.current_time())
            # A little latency everywhere between faults, and a quiet spell.
            for c in pool:
                c.lock.latency = rng.uniform(0, max_latency / 10)
            await anyio.sleep(rng.uniform(0, 2 * timing.retry_period))
            if progress is not None:
                progress(report)
        for c in pool:
            if c.up:
                c.stop()
    report.virtual_seconds = anyio.current_time() - t0
    return report
