"""Followers of ConfigMapLock, EndpointsLock and MultiLock watch, as LeaseLock's do: through the
real kubernetes_asyncio client against the emulator, in real time with short timings (see
test_elector_emulator.py for the Lease versions of the first two tests).

They send no request while the leader renews, take over at once on a graceful release, and keep
both through watch faults (a 410 re-list, a garbage line, an early EOF).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _groups import NS, TIMING, Group, MakeKubeLock, group

from aioleader import Lock
from aioleader.kubernetes import ConfigMapLock, EndpointsLock, LeaseLock
from aioleader.locks import MultiLock
from aioleader.testing import KubeEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]


def configmap_lock(name: str, identity: str, api: Any) -> Lock:
    return ConfigMapLock(name, NS, identity=identity, api_client=api)


def endpoints_lock(name: str, identity: str, api: Any) -> Lock:
    return EndpointsLock(name, NS, identity=identity, api_client=api)


def migrating_lock(name: str, identity: str, api: Any) -> Lock:
    """client-go's ``configmapsleases``: a ConfigMap lock moving to a Lease."""
    return MultiLock(
        ConfigMapLock(name, NS, identity=identity, api_client=api),
        LeaseLock(name, NS, identity=identity, api_client=api),
    )


KINDS = [
    pytest.param(configmap_lock, id="configmap"),
    pytest.param(endpoints_lock, id="endpoints"),
    pytest.param(migrating_lock, id="multilock"),
]
NAMES = ("a", "b", "c")


async def test_every_kubernetes_lock_supports_watching() -> None:
    for make in (configmap_lock, endpoints_lock, migrating_lock):
        lock = make("lock", "x", None)
        assert lock.supports_watch
        assert lock.supports_watch_cursor


async def _assert_quiet_followers(emu: KubeEmulator, leader: str, seconds: float = 3) -> None:
    emu.reset_log()
    await anyio.sleep(seconds)
    for name in NAMES:
        counters = {verb: n for verb, n in emu.counters(name).items() if n}
        if name == leader:
            # The fast path: one PUT per object per renewal, no GET.
            assert counters.get("get", 0) == 0, counters
            assert seconds / TIMING.retry_period * 0.7 <= counters.get("update", 0), counters
        else:
            assert counters == {}, name


async def _assert_immediate_handover(g: Group) -> str:
    first = await g.wait_leader()
    start = anyio.current_time()
    g.stop(first)
    second = await g.wait_leader(other_than=first)
    assert anyio.current_time() - start < 0.25  # seen through the watch, not at a poll
    return second


@pytest.mark.parametrize("make_lock", KINDS)
async def test_followers_send_nothing_while_the_leader_renews(
    emu: KubeEmulator, make_lock: MakeKubeLock
) -> None:
    async with group(emu, make_lock) as g:
        for name in NAMES:
            await g.start(name)
        leader = await g.wait_leader()
        await anyio.sleep(1)
        await _assert_quiet_followers(emu, leader)


@pytest.mark.parametrize("make_lock", KINDS)
async def test_graceful_handover_to_a_watching_follower_is_immediate(
    emu: KubeEmulator, make_lock: MakeKubeLock
) -> None:
    async with group(emu, make_lock) as g:
        for name in NAMES:
            await g.start(name)
        await g.wait_leader()
        await anyio.sleep(0.5)
        await _assert_immediate_handover(g)


async def _until(condition: Any, limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.parametrize("make_lock", KINDS)
async def test_watch_faults_are_survived(emu: KubeEmulator, make_lock: MakeKubeLock) -> None:
    async with group(emu, make_lock) as g:
        for name in NAMES:
            await g.start(name)
        leader = await g.wait_leader()
        await anyio.sleep(0.5)
        followers = [n for n in NAMES if n != leader]
        emu.reset_log()
        for name in followers:
            # A garbage line on the live stream (reconnect and resume), then 410 Expired on the
            # next watch (list again), then a watch that ends at once (back off and resume).
            emu.faults(name).watch_garbage_next()
            emu.faults(name).watch_expire()
            emu.faults(name).watch_eof_after(0)
        for name in followers:
            # Faults are per client: a MultiLock follower's two streams share them, so either
            # way one stream goes through all three. After the broken stream: the watch that
            # got 410, the list, the empty watch, and a live one.
            await _until(lambda n=name: emu.counters(n).get("watch", 0) == 3)
            assert emu.counters(name).get("list", 0) == 1
            assert emu.counters(name).get("get", 0) == 0
        await _assert_quiet_followers(emu, leader, seconds=2)
        second = await _assert_immediate_handover(g)
        assert second in followers
