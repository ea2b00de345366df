"""Seeded chaos of a shard group on a fake clock: replicas crash, stop, pause and join; per shard
no two terms overlap; after each heal every shard has a leader and the spread is balanced within
the documented bounds."""

from __future__ import annotations

import pytest

from aioleader.testing import SHARD_FAULTS, run_shard_chaos

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock("asyncio")]


@pytest.mark.parametrize("seed", [1, 2])
async def test_shard_chaos_never_two_leaders_of_a_shard_and_balanced_after_every_heal(
    seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await run_shard_chaos(seed=seed, shards=16, replicas=3, rounds=30)
    with capsys.disabled():
        print(f"\n{report.summary()}")
    assert report.overlaps == []
    assert report.late_work == []
    assert set(report.faults) == set(SHARD_FAULTS)  # every kind of fault was exercised
    assert report.max_led <= report.bound, report.led
    assert report.max_balanced <= report.balance_bound, report.balanced
