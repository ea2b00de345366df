"""Graceful handover and crash failover, p50/p99, for both implementations."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio
import anyio.abc

from aioleader import Timing

from ._backends import WRITE_VERBS, Backend, Impl, Req
from ._candidates import Lane
from ._stats import percentile

# -- latency ---------------------------------------------------------------------------------------


@dataclass
class LatencyResult:
    """Latency samples of one implementation and scenario, in seconds.

    ``values``: the headline figure of each sample (graceful: stop requested → another candidate
    leads; crash: new leader − last successful renewal − lease duration). ``secondary``: graceful:
    release written → new leader; crash: stop → new leader. ``failures``: samples in which no new
    leader emerged within the bound.
    """

    impl: Impl
    scenario: Literal["graceful", "crash"]
    timing: tuple[float, float, float]
    values: list[float] = field(default_factory=list)
    secondary: list[float] = field(default_factory=list)
    failures: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    def p(self, q: float, secondary: bool = False) -> float | None:
        return percentile(self.secondary if secondary else self.values, q)


def timing_tuple(timing: Timing) -> tuple[float, float, float]:
    return (timing.lease_duration, timing.renew_deadline, timing.retry_period)


def _last_write(records: list[Req], client: str, before: float) -> float | None:
    """When ``client``'s last successful write of the lease (not of an Event) was answered."""
    ends = [
        r.end
        for r in records
        if r.client == client
        and r.resource == "leases"
        and r.verb in WRITE_VERBS
        and r.ok
        and r.end <= before
    ]
    return max(ends) if ends else None


async def _failovers(
    backend: Backend,
    impl: Impl,
    scenario: Literal["graceful", "crash"],
    *,
    samples: int,
    timing: Timing,
    lanes: int,
    prefix: str,
    seed: object,
    progress: Callable[[str], None] | None,
) -> LatencyResult:
    """Stop the leader of a lane of three candidates, time the takeover, replace the stopped
    candidate, repeat; ``lanes`` leases at once, each sample after a random pause (so that the stop
    falls at a random phase of the renew period)."""
    result = LatencyResult(impl, scenario, timing_tuple(timing))
    bound = timing.lease_duration + timing.renew_deadline + 4 * timing.retry_period + 5
    lanes = max(1, min(lanes, samples))
    remaining = samples
    taken = 0

    async def lane_loop(index: int, tg: anyio.abc.TaskGroup) -> None:
        nonlocal remaining, taken
        rng = random.Random(f"{seed}:{impl}:{scenario}:{index}")
        lane = Lane(
            backend,
            impl,
            f"{prefix}-{scenario[:2]}-{impl[:3]}-{index}",
            timing,
            tg,
            release=scenario == "graceful",
            # A takeover after a release does not depend on the candidates' renew phases.
            start_jitter=timing.retry_period if scenario == "crash" else 0.0,
            seed=seed,
        )
        try:
            await lane.fill()
            while remaining > 0:
                remaining -= 1
                leader = await lane.settled(bound)
                await anyio.sleep(rng.uniform(0.3, 0.3 + timing.retry_period))
                if lane.leaders() != [leader]:
                    remaining += 1  # changed under us (should not happen): sample again
                    continue
                stopped_at = anyio.current_time()
                await lane.stop(leader)
                new_at = await lane.next_leader(leader, stopped_at, bound)
                if new_at is None:
                    result.failures += 1
                else:
                    records = await backend.requests(leader.started_at, [leader.client])
                    written = _last_write(records, leader.client, new_at)
                    if written is None:
                        result.notes.append(f"{leader.identity}: no successful write logged")
                    elif scenario == "graceful":
                        result.values.append(new_at - stopped_at)
                        if written >= stopped_at:  # the release
                            result.secondary.append(new_at - written)
                    else:
                        result.values.append(new_at - written - timing.lease_duration)
                        result.secondary.append(new_at - stopped_at)
                taken += 1
                if progress is not None and taken % max(1, samples // 5) == 0:
                    progress(f"{scenario} {impl} {result.timing}: {taken}/{samples}")
                await lane.fill()
        finally:
            await lane.aclose()

    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as lanes_tg:
            for index in range(lanes):
                lanes_tg.start_soon(lane_loop, index, tg)
                # Stagger the lanes, so that their stops and takeovers rarely coincide.
                await anyio.sleep(timing.retry_period / lanes)
        tg.cancel_scope.cancel()
    return result


async def measure_handover(
    backend: Backend,
    *,
    samples: int,
    timing: Timing,
    prefix: str,
    lanes: int = 1,
    seed: object = 0,
    progress: Callable[[str], None] | None = None,
) -> LatencyResult:
    """aioleader's graceful handover: the leader leaves ``elect()`` (``release_on_cancel``, the
    default) and another of three candidates takes over. ``values``: stop requested → another
    candidate leads; ``secondary``: release written (as the server logged it) → another leads.

    kubernetes_asyncio's elector has no release: stopping its leader is a crash failover."""
    return await _failovers(
        backend,
        "aioleader",
        "graceful",
        samples=samples,
        timing=timing,
        lanes=lanes,
        prefix=prefix,
        seed=seed,
        progress=progress,
    )


async def measure_crash(
    backend: Backend,
    impl: Impl,
    *,
    samples: int,
    timing: Timing,
    lanes: int,
    prefix: str,
    seed: object = 0,
    progress: Callable[[str], None] | None = None,
) -> LatencyResult:
    """Crash failover: the leader stops without a release (aioleader: ``release_on_cancel=False``;
    kubernetes_asyncio has no release at all). ``values``: new leader − the old leader's last
    successful renewal (as the server logged it) − lease duration; ``secondary``: stop → new
    leader."""
    return await _failovers(
        backend,
        impl,
        "crash",
        samples=samples,
        timing=timing,
        lanes=lanes,
        prefix=prefix,
        seed=seed,
        progress=progress,
    )
