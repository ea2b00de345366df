"""A seeded chaos run of a shard group: replicas crash, stop, pause and join; every shard's terms
recorded on one clock.

The properties checked: per shard, the intervals of leader work never overlap (and none outlives
its term's deadline); after each fault heals, every shard has a leader within
``LD + (1 + jitter)·RP`` and the spread is balanced (every live replica holds ``floor(N/M)`` or
``ceil(N/M)`` shards) within [`ShardChaosReport.balance_bound`][ShardChaosReport.balance_bound]. Designed for fake clocks
(looptime); the locks are [`MemoryLock`][aioleader.testing.MemoryLock] names behind
[`FaultyLock`][aioleader.testing.FaultyLock].
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import final

import anyio
from anyio.abc import TaskGroup

from .._shards import Shards, elect_shards
from .._timing import Timing
from ..locks._memory import MemoryLock
from ._chaos import TermLog, WorkInterval
from ._faulty_lock import FaultyLock

__all__ = ["SHARD_FAULTS", "ShardChaosReport", "run_shard_chaos"]

SHARD_FAULTS = ("crash", "stop", "pause", "join")


@final
@dataclass
class ShardChaosReport:
    """What [`run_shard_chaos()`][run_shard_chaos] did and saw."""

    seed: int = 0
    shards: int = 0
    rounds: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    logs: dict[int, TermLog] = field(default_factory=dict)  # shard -> its work intervals
    #: Per fault: seconds from the heal until every shard had a leader, and until balanced.
    led: list[tuple[str, float]] = field(default_factory=list)
    balanced: list[tuple[str, float]] = field(default_factory=list)
    virtual_seconds: float = 0.0
    bound: float = 0.0
    balance_bound: float = 0.0

    @property
    def overlaps(self) -> list[tuple[WorkInterval, WorkInterval]]:
        return [pair for log in self.logs.values() for pair in log.overlaps]

    @property
    def late_work(self) -> list[WorkInterval]:
        return [i for log in self.logs.values() for i in log.late_work]

    @property
    def terms(self) -> int:
        return sum(len(log.intervals) for log in self.logs.values())

    @property
    def max_led(self) -> float:
        return max((t for _, t in self.led), default=0.0)

    @property
    def max_balanced(self) -> float:
        return max((t for _, t in self.balanced), default=0.0)

    def summary(self) -> str:
        return (
            f"shard chaos seed={self.seed}: {self.shards} shards, {self.rounds} rounds "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.faults.items()))}), "
            f"{self.terms} shard terms in {self.virtual_seconds:.0f} virtual s; "
            f"overlapping terms {len(self.overlaps)}, work past deadline {len(self.late_work)}; "
            f"max time to every shard led {self.max_led:.2f} s (bound {self.bound:.2f} s), "
            f"to balanced {self.max_balanced:.2f} s (bound {self.balance_bound:.2f} s)"
        )


class _Replica:
    def __init__(self, identity: str, base: MemoryLock, rng: random.Random) -> None:
        self.identity = identity
        self.base = base.sibling(identity)
        self.rng = rng
        self.locks: list[FaultyLock] = []
        self.scope: anyio.CancelScope | None = None
        self.shards: Shards | None = None

    def make_lock(self, name: str) -> FaultyLock:
        lock = FaultyLock(self.base.named(name), rng=random.Random(self.rng.random()), watch=True)
        self.locks.append(lock)
        return lock

    @property
    def up(self) -> bool:
        return self.scope is not None

    def owned(self) -> frozenset[int]:
        return self.shards.owned() if self.shards is not None else frozenset()

    def partition(self, on: bool) -> None:
        for lock in self.locks:
            if on:
                lock.hang = True
            else:
                lock.heal()

    async def start(
        self, tg: TaskGroup, count: int, timing: Timing, report: ShardChaosReport
    ) -> None:
        self.locks = []
        scope = anyio.CancelScope()
        self.scope = scope

        async def run(*, task_status: anyio.abc.TaskStatus[Shards]) -> None:
            with scope:
                async with (
                    elect_shards(
                        self.make_lock,
                        group="chaos",
                        shards=count,
                        timing=timing,
                        rng=random.Random(self.rng.random()),
                    ) as shards,
                    anyio.create_task_group() as work,
                ):
                    for index in range(count):
                        work.start_soon(_work, shards, index, report.logs[index])
                    task_status.started(shards)
                    await anyio.sleep_forever()

        self.shards = await tg.start(run)

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()
        self.scope = None
        self.shards = None


async def _work(shards: Shards, index: int, log: TermLog) -> None:
    while True:
        async with shards.leading(index) as term:
            await log.work(term)


async def run_shard_chaos(
    *,
    seed: int,
    shards: int = 16,
    replicas: int = 3,
    max_replicas: int = 5,
    rounds: int = 40,
    timing: Timing | None = None,
) -> ShardChaosReport:
    """Start ``replicas`` replicas, then run ``rounds`` rounds of one fault each: crash a replica
    (its requests stop reaching the locks, its tasks are cancelled), stop one gracefully, pause
    one (every request hangs for a while: a frozen process or a partition, then it resumes),
    or start one (a join, up to ``max_replicas``). After each fault heals, measure the time
    until every shard has a leader and until the spread is balanced."""
    timing = timing or Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.3)
    rng = random.Random(seed)
    rp, ld = timing.retry_period, timing.lease_duration
    report = ShardChaosReport(seed=seed, shards=shards)
    report.logs = {i: TermLog() for i in range(shards)}
    # A crashed member's lock is judged expired LD after its last renewal was *listed* (listings
    # every RP/2), noticed at the next listing; its shards' leases, watched, have expired by
    # then. The jittered slack (1 + jitter)·RP covers both listing lags.
    report.bound = ld + (1 + timing.jitter) * rp
    # Balanced: the bound above, then the moves of the rebalance (a release and a take per
    # shard, at once through the watches), within one more listing period.
    report.balance_bound = report.bound + rp
    base = MemoryLock("seed", name="chaos-seed")
    pool = [
        _Replica(f"replica-{i}", base, random.Random(rng.random())) for i in range(max_replicas)
    ]
    t0 = anyio.current_time()

    def up() -> list[_Replica]:
        return [r for r in pool if r.up]

    def all_led() -> bool:
        led: set[int] = set()
        for r in up():
            led |= r.owned()
        return len(led) == shards

    def balanced() -> bool:
        live = up()
        if not live or not all_led():
            return False
        low, high = shards // len(live), math.ceil(shards / len(live))
        return all(low <= len(r.owned()) <= high for r in live)

    async def measure(fault: str, healed_at: float) -> None:
        limit = report.balance_bound + 30
        with anyio.move_on_after(limit):
            while not all_led():  # noqa: ASYNC110 - sampling the replicas is the point
                await anyio.sleep(0.01)
        report.led.append((fault, anyio.current_time() - healed_at if all_led() else math.inf))
        with anyio.move_on_after(limit):
            while not balanced():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        report.balanced.append(
            (fault, anyio.current_time() - healed_at if balanced() else math.inf)
        )

    async with anyio.create_task_group() as tg:
        for r in pool[:replicas]:
            await r.start(tg, shards, timing, report)
        await measure("cold start", t0)
        for _ in range(rounds):
            report.rounds += 1
            live = up()
            down = [r for r in pool if not r.up]
            choices = [f for f in SHARD_FAULTS if f != "join" or down]
            if len(live) < 2:
                choices = ["join"]
            fault = rng.choice(choices)
            report.faults[fault] = report.faults.get(fault, 0) + 1
            if fault == "join":
                await rng.choice(down).start(tg, shards, timing, report)
                await measure(fault, anyio.current_time())
            elif fault in ("crash", "stop"):
                victim = rng.choice(live)
                if fault == "crash":
                    victim.partition(True)  # nothing it sends lands, its release neither
                victim.stop()
                await measure(fault, anyio.current_time())
            else:
                victim = rng.choice(live)
                victim.partition(True)
                await anyio.sleep(rng.uniform(0.5, 2 * ld))
                victim.partition(False)
                await measure(fault, anyio.current_time())
            await anyio.sleep(rng.uniform(0, 2 * rp))
        for r in pool:
            if r.up:
                r.stop()
    report.virtual_seconds = anyio.current_time() - t0
    return report
