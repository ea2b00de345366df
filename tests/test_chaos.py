"""Seeded chaos on a fake clock: at least 200 failovers, zero overlapping terms."""

from __future__ import annotations

import pytest

from aioleader.testing import CHAOS_FAULTS as FAULTS
from aioleader.testing import run_chaos

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock("asyncio")]


@pytest.mark.parametrize("seed", [1, 2])
async def test_chaos_never_two_leaders_and_a_leader_after_every_heal(
    seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await run_chaos(seed=seed, candidates=5, failovers=200)
    with capsys.disabled():
        print(f"\n{report.summary()}")
    assert report.failovers >= 200
    assert report.overlaps == []
    assert report.late_work == []
    assert report.started_inactive == []
    assert report.fencing_monotonic
    assert report.max_recovery <= report.bound
    assert set(report.faults) == set(FAULTS)  # every kind of fault was exercised


@pytest.mark.slow
async def test_chaos_thousand_failovers(capsys: pytest.CaptureFixture[str]) -> None:
    report = await run_chaos(seed=1000, candidates=7, failovers=1000)
    with capsys.disabled():
        print(f"\n{report.summary()}")
    assert report.failovers >= 1000
    assert report.overlaps == []
    assert report.late_work == []
    assert report.max_recovery <= report.bound
