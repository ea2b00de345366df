"""Admission of acquisition attempts (aioleader/_admission.py) on fake clocks with exact times:
elections started at once attempt 32 at a time, and a held term's renewals never wait behind
the queue of first attempts."""

from __future__ import annotations

import anyio
import pytest

from aioleader import Leadership, campaign
from aioleader._admission import ATTEMPTS
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock]

LATENCY = 0.5  # every request: an attempt (GET + create) takes 1 s


def in_flight_peak(locks: list[FaultyLock]) -> int:
    """The most requests under way at one instant, over every lock."""
    edges = sorted(
        (t, step)
        for lock in locks
        for call in lock.calls
        for t, step in ((call.started, 1), (call.ended, -1))
    )
    peak = current = 0
    for _, step in edges:  # at equal times, ends (-1) sort before starts (+1)
        current += step
        peak = max(peak, current)
    return peak


async def test_elections_started_at_once_attempt_32_at_a_time() -> None:
    count = 6 * ATTEMPTS
    locks = [FaultyLock(MemoryLock(f"c{i}", name=f"lock-{i}")) for i in range(count)]
    for lock in locks:
        lock.latency = LATENCY
    leaderships: list[Leadership] = []
    async with anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        for lock in locks:
            leaderships.append(await tg.start(campaign, lock))
        with anyio.fail_after(20):
            for leadership in leaderships:
                await leadership.wait_term()
        await anyio.sleep(7.0 - (anyio.current_time() - t0))  # every call so far has ended
        acquired = sorted(
            round(leadership.term.acquired_at - t0, 6)  # type: ignore[union-attr]
            for leadership in leaderships
        )
        # Batches of 32: the create of each is sent half-way through its 1 s attempt.
        assert acquired == [b + 0.5 for b in range(6) for _ in range(ATTEMPTS)]
        # The first batch's terms (begun at 1.0) renewed RP (2 s) later, on time, while the
        # fourth batch of first attempts was under way (3.0 to 4.0).
        renewals = sorted(
            round(call.started - t0, 6)
            for lock in locks
            for call in lock.calls
            if call.op == "update"
        )
        assert renewals[:ATTEMPTS] == [3.0] * ATTEMPTS
        assert in_flight_peak(locks) == 2 * ATTEMPTS  # 32 attempts and 32 renewals from 3.0 s
        tg.cancel_scope.cancel()  # (the releases on the way out are not attempts: not queued)
