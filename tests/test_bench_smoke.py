"""The benchmark harness (``bench/run.py``) at minimal sizes, so that it never rots.

Not a benchmark: one sample of each measurement, a handful of leases, a few seconds, and checks
that each returns figures of the right shape (and that the report renders them).
"""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest

from aioleader import Timing
from bench._backends import IMPLS, EmulatorBackend, EmulatorProcess, Impl, run_id
from bench._latency import LatencyResult, measure_crash, measure_handover
from bench._rates import RateResult, measure_steady
from bench._report import Report, markdown, plot, table, targets
from bench._scaling import ScaleResult, run_scale

# kubernetes_asyncio's elector refuses a retry period or renew deadline under 1 s.
TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=1)

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only, pytest.mark.timeout(60)]


async def test_harness_smoke(tmp_path: Path) -> None:
    emulator = EmulatorProcess()
    await emulator.start()
    backend = EmulatorBackend(emulator)
    tag = f"smoke-{run_id()}"
    report = Report(command="pytest", started="now")
    try:
        with anyio.fail_after(45):
            async with anyio.create_task_group() as tg:

                async def handover() -> None:
                    report.handover = await measure_handover(
                        backend, samples=1, timing=TIMING, prefix=f"{tag}-h"
                    )

                async def crash(impl: Impl) -> None:
                    report.crash_short[impl] = await measure_crash(
                        backend, impl, samples=1, timing=TIMING, lanes=1, prefix=f"{tag}-c"
                    )

                async def steady() -> None:
                    rates = await measure_steady(
                        backend, IMPLS, timing=TIMING, window=3, warmup=0.5, prefix=f"{tag}-s"
                    )
                    report.rates = {r.impl: r for r in rates}

                async def scale() -> None:
                    report.cpu["aioleader"] = await run_scale(
                        backend,
                        "aioleader",
                        20,
                        duration=2,
                        timing=TIMING,
                        prefix=f"{tag}-n",
                        ramp_timeout=15,
                        pool=120,
                        emulator=emulator,
                    )

                async def follow() -> None:
                    report.following["aioleader"] = await run_scale(
                        backend,
                        "aioleader",
                        5,
                        duration=2,
                        timing=Timing(lease_duration=3600, renew_deadline=10, retry_period=2),
                        prefix=f"{tag}-f",
                        ramp_timeout=15,
                        emulator=emulator,
                        mode="follow",
                    )

                for job in (handover, steady, scale, follow):
                    tg.start_soon(job)
                for impl in IMPLS:
                    tg.start_soon(crash, impl)
    finally:
        await backend.aclose()
        await emulator.aclose()

    assert isinstance(report.handover, LatencyResult)
    assert report.handover.n == 1
    took = report.handover.values[0]
    assert 0 < took < TIMING.lease_duration  # a release: no need to wait for expiry
    for impl in IMPLS:
        failover = report.crash_short[impl]
        assert failover.n == 1
        assert failover.failures == 0
        # Nobody takes over before the lease expired, and the bound of the sample holds.
        assert -0.1 < failover.values[0] < 3 * TIMING.retry_period
        assert failover.secondary[0] > 0

    assert set(report.rates) == set(IMPLS)
    for rates in report.rates.values():
        assert isinstance(rates, RateResult)
        assert rates.followers == 2
        assert rates.leader.get("PUT", 0) > 0  # 60 / RP = 60 a minute, give or take the edges
    assert report.rates["kubernetes_asyncio"].follower.get("GET", 0) > 0  # it polls

    many = report.cpu["aioleader"]
    assert isinstance(many, ScaleResult)
    assert many.ok, many.problem
    assert many.get("leading_at_start") == 20
    assert many.get("pool") == 120
    per_renewal = many.cpu_per_renewal
    assert per_renewal is not None
    assert 0 < per_renewal < 1
    assert many.memory_per_lease is not None
    assert many.emulator_cpu_util is not None
    assert math.isfinite(many.get("lag_p99"))

    following = report.following["aioleader"]
    assert following.ok
    assert following.get("leading_at_start") == 0
    assert following.get("sockets") > 0
    assert following.get("server_watches") is not None  # the other phases' watches count too

    assert "Graceful handover" in table(report)
    assert [t.what for t in targets(report)]
    text = markdown(report)
    assert "## Targets" in text
    assert "One process following many leases" in text
    assert "kubernetes_asyncio" in text
    assert isinstance(plot(report, tmp_path / "benchmarks.png"), bool)
