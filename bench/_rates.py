"""Requests per minute per role (leader, follower) and verb in steady state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.abc

from aioleader import Timing

from ._backends import Backend, Impl, verb_label
from ._candidates import Lane
from ._latency import timing_tuple

# -- steady-state request rates --------------------------------------------------------------------


@dataclass
class RateResult:
    """Requests per minute in steady state, by role and verb (``GET``/``PUT``/``LIST``/...).

    ``follower`` is the mean over the followers. ``leader_changes`` should be 0 (else the window
    was not steady).
    """

    impl: Impl
    timing: tuple[float, float, float]
    window_s: float
    followers: int
    leader: dict[str, float] = field(default_factory=dict)
    follower: dict[str, float] = field(default_factory=dict)
    leader_changes: int = 0
    errors: int = 0

    def total(self, role: Literal["leader", "follower"]) -> float:
        return sum((self.leader if role == "leader" else self.follower).values())


async def measure_steady(
    backend: Backend,
    impls: Sequence[Impl],
    *,
    timing: Timing,
    window: float,
    prefix: str,
    candidates: int = 3,
    warmup: float | None = None,
) -> list[RateResult]:
    """``candidates`` candidates of each implementation on a lease of its own (concurrently), then
    every request that started within a window of ``window`` seconds, per role and verb."""
    warmup = 3 * timing.retry_period + 1 if warmup is None else warmup
    bound = timing.lease_duration + timing.renew_deadline + 10
    results: list[RateResult] = []
    async with anyio.create_task_group() as tg:
        lanes = [
            Lane(
                backend,
                impl,
                f"{prefix}-steady-{impl[:3]}",
                timing,
                tg,
                release=True,
                start_jitter=timing.retry_period,
            )
            for impl in impls
        ]
        try:
            for lane in lanes:
                lane.size = candidates
                await lane.fill()
            leaders = [await lane.settled(bound) for lane in lanes]
            await anyio.sleep(warmup)
            begin = anyio.current_time()
            await anyio.sleep(window)
            end = anyio.current_time()
            clients = [c.client for lane in lanes for c in lane.alive]
            records = [r for r in await backend.requests(begin, clients) if begin <= r.start < end]
            for lane, leader in zip(lanes, leaders, strict=True):
                result = RateResult(
                    lane.impl, timing_tuple(timing), end - begin, followers=len(lane.alive) - 1
                )
                if not leader.leading:
                    result.leader_changes += 1
                per_minute = 60.0 / (end - begin)
                mine = {c.client for c in lane.alive}
                counts: dict[str, Counter[str]] = {c.client: Counter() for c in lane.alive}
                for r in records:
                    if r.client in mine:
                        counts[r.client][verb_label(r)] += 1
                        result.errors += 0 if r.ok else 1
                result.leader = {v: n * per_minute for v, n in counts[leader.client].items()}
                follower_total: Counter[str] = Counter()
                for c in lane.alive:
                    if c is not leader:
                        follower_total.update(counts[c.client])
                result.follower = {
                    v: n * per_minute / max(1, result.followers) for v, n in follower_total.items()
                }
                result.leader_changes += sum(
                    1 for c in lane.alive for t in c.lead_starts if begin <= t < end
                )
                results.append(result)
        finally:
            for lane in lanes:
                await lane.aclose()
    return results
