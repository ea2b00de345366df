"""The shared list+watch (aioleader/kubernetes/_informer.py) through the real kubernetes_asyncio
client against the emulator: one watch connection for many followed Leases, the same states a
per-name watch yields, faults survived, reference counting, cancel-safety, and the per-name
fallback when the namespace cannot be listed (403).

Real time with short settings, as tests/test_watch.py; assertions are on what was yielded and on
the requests the emulator saw, not on exact times.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from test_watch import FAST, Watching, holders, until

from aioleader import Leadership, Observed, Timing, elect
from aioleader._record import LeaderElectionRecord
from aioleader.kubernetes import LeaseLock
from aioleader.kubernetes._informer import SharedCursor, open_informers
from aioleader.testing import KubeEmulator

NS = "default"
# Followers that polled would send a GET every RP (1 s); watching, they send nothing.
TIMING = Timing(lease_duration=4, renew_deadline=3, retry_period=1)


def record(holder: str, second: int = 0) -> LeaderElectionRecord:
    return LeaderElectionRecord(
        holder_identity=holder,
        lease_duration_seconds=15,
        renew_time=datetime(2024, 1, 1, 0, 0, second, tzinfo=timezone.utc),
    )


async def write(lock: LeaseLock, holder: str, second: int) -> Observed:
    if await lock.get() is None:
        return await lock.create(record(holder, second))
    return await lock.update(record(holder, second))


@asynccontextmanager
async def watchers(
    emu: KubeEmulator, names: list[str], api: Any = None, **options: Any
) -> AsyncIterator[dict[str, Watching]]:
    """A watch of each named Lease, all through one API client (one process): ``api``, or a
    new one of the emulator's client "w"."""
    api = api or await emu.api_client("w")
    found = {
        n: Watching(LeaseLock(n, NS, identity="w", api_client=api), **{**FAST, **options})
        for n in names
    }
    async with anyio.create_task_group() as tg:
        for w in found.values():
            await tg.start(w.run)
        yield found
        tg.cancel_scope.cancel()


async def writers(emu: KubeEmulator, names: list[str]) -> dict[str, LeaseLock]:
    api = await emu.api_client("b")
    return {n: LeaseLock(n, NS, identity="b", api_client=api) for n in names}


# -- one connection for many followers ----------------------------------------------------------


async def run_election(
    lock: LeaseLock,
    found: dict[str, Leadership],
    scopes: dict[str, anyio.CancelScope],
    *,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    scopes[lock.name] = scope = anyio.CancelScope()
    with scope:
        async with elect(lock, timing=TIMING) as leadership:
            found[lock.name] = leadership
            task_status.started()
            await anyio.sleep_forever()


@pytest.mark.asyncio
async def test_fifty_elections_follow_through_one_list_and_watch(emulator: KubeEmulator) -> None:
    names = [f"lease-{i}" for i in range(50)]
    leaders_api = await emulator.api_client("leaders")
    followers_api = await emulator.api_client("followers")
    leaders: dict[str, Leadership] = {}
    followers: dict[str, Leadership] = {}
    leader_scopes: dict[str, anyio.CancelScope] = {}
    follower_scopes: dict[str, anyio.CancelScope] = {}
    async with anyio.create_task_group() as tg:
        for n in names:
            lock = LeaseLock(n, NS, identity="leader", api_client=leaders_api)
            await tg.start(run_election, lock, leaders, leader_scopes)
        for n in names:
            await leaders[n].acquired.wait()
        for n in names:
            lock = LeaseLock(n, NS, identity="follower", api_client=followers_api)
            await tg.start(run_election, lock, followers, follower_scopes)
        # Every follower made its first attempt (a GET) and then follows the shared watch.
        await until(lambda: emulator.statistics().watches == 1)
        await anyio.sleep(0.5)
        assert emulator.counters("followers") == {"get": 50, "list": 1, "watch": 1}
        assert emulator.statistics().watches == 1
        assert open_informers() == 1
        # While 50 leaders renew (every 1 s), the followers send nothing.
        emulator.reset_log()
        await anyio.sleep(2.5)
        assert emulator.counters("leaders").get("update", 0) >= 100
        assert emulator.counters("followers") == {}
        # Every leader steps down (and releases): each follower takes over at once, where a
        # poll would wait for up to 2.2 s.
        for scope in leader_scopes.values():
            scope.cancel()
        released = anyio.current_time()
        with anyio.fail_after(5):
            for n in names:
                await followers[n].acquired.wait()
        assert anyio.current_time() - released < 1.0
        # The new leaders hold no watch: the shared one closed with its last follower.
        await until(lambda: emulator.statistics().watches == 0, limit=2.0)
        assert open_informers() == 0
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_each_follower_sees_only_its_own_object(emulator: KubeEmulator) -> None:
    names = ["a", "b", "c"]
    writer = await writers(emulator, names)
    await write(writer["a"], "x", 0)
    async with watchers(emulator, names) as w:
        await w["a"].wait_items(1)
        await w["b"].wait_items(1)
        await write(writer["b"], "y", 1)
        await write(writer["b"], "z", 2)
        await write(writer["c"], "q", 3)
        await w["b"].wait_items(3)
        await w["c"].wait_items(2)
        await anyio.sleep(0.5)  # bookmarks (every 0.2 s) and other objects' events pass
    assert holders(w["a"].items) == ["x"]
    assert holders(w["b"].items) == [None, "y", "z"]
    assert holders(w["c"].items) == [None, "q"]
    assert emulator.counters("w") == {"list": 1, "watch": 1}  # for three followers


@pytest.mark.asyncio
async def test_a_deleted_object_reads_none_and_comes_back(emulator: KubeEmulator) -> None:
    writer = await writers(emulator, ["a"])
    await write(writer["a"], "x", 0)
    async with watchers(emulator, ["a"]) as w:
        await w["a"].wait_items(1)
        assert emulator.delete_object("leases", NS, "a")
        await w["a"].wait_items(2)
        await write(writer["a"], "y", 1)
        await w["a"].wait_items(3)
    assert holders(w["a"].items) == ["x", None, "y"]


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_410_relists_once_for_every_follower(emulator: KubeEmulator) -> None:
    names = ["a", "b", "c"]
    writer = await writers(emulator, names)
    for i, n in enumerate(names):
        await write(writer[n], "x", i)
    faults = emulator.faults("w")
    async with watchers(emulator, names) as w:
        for n in names:
            await w[n].wait_items(1)
        faults.partition("refuse")
        await write(writer["a"], "y", 10)
        await write(writer["a"], "z", 11)
        await write(writer["c"], "y", 12)
        emulator.compact()
        faults.heal()
        await w["a"].wait_items(2)
        await w["c"].wait_items(2)
        await anyio.sleep(0.3)
    assert holders(w["a"].items) == ["x", "z"]  # "y" is gone from the server's history
    assert holders(w["b"].items) == ["x"]
    assert holders(w["c"].items) == ["x", "y"]
    assert emulator.counters("w").get("list", 0) == 2  # one re-list, not one per follower


@pytest.mark.asyncio
async def test_garbage_a_410_event_and_early_eof_on_the_shared_stream(
    emulator: KubeEmulator,
) -> None:
    names = ["a", "b"]
    writer = await writers(emulator, names)
    faults = emulator.faults("w")
    faults.watch_garbage_next()  # the first stream sends a garbage line: reconnect, resume
    async with watchers(emulator, names) as w:
        await w["a"].wait_items(1)
        await w["b"].wait_items(1)
        await until(lambda: emulator.counters("w").get("watch", 0) == 2)
        # Reset the stream; the reconnect gets a 410 ERROR event: re-list, watch again.
        faults.partition("refuse")
        faults.heal()
        faults.watch_expire()  # heal() clears one-shot faults: plan it after
        await until(lambda: emulator.counters("w") == {"list": 2, "watch": 4})
        # Reset again; the next stream ends after one event: resume without a list.
        faults.partition("refuse")
        faults.heal()
        faults.watch_eof_after(1)
        await until(lambda: emulator.counters("w").get("watch", 0) == 5)
        await write(writer["a"], "x", 1)
        await w["a"].wait_items(2)
        await write(writer["b"], "y", 2)
        await w["b"].wait_items(2)
        await write(writer["a"], "z", 3)
        await w["a"].wait_items(3)
    assert holders(w["a"].items) == [None, "x", "z"]
    assert holders(w["b"].items) == [None, "y"]
    assert emulator.counters("w") == {"list": 2, "watch": 6}


# -- lifetime and cancel-safety -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_stream_opens_with_the_first_follower_and_closes_with_the_last(
    emulator: KubeEmulator,
) -> None:
    api = await emulator.api_client("w")
    a = LeaseLock("a", NS, identity="w", api_client=api)
    b = LeaseLock("b", NS, identity="w", api_client=api)
    first = a.watch_cursor(**FAST)
    assert isinstance(first, SharedCursor)
    assert first.shared
    assert emulator.counters("w") == {}  # creating a cursor sends nothing
    assert await first.next() is None
    second = b.watch_cursor(**FAST)
    assert await second.next() is None  # answered from the shared states: no request
    assert emulator.counters("w") == {"list": 1}
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.next)
        await until(lambda: emulator.statistics().watches == 1)
        tg.cancel_scope.cancel()
    first.close()
    assert emulator.statistics().watches == 1  # b still follows
    second.close()
    await until(lambda: emulator.statistics().watches == 0, limit=2.0)
    assert open_informers() == 0
    gc.collect()  # an unclosed response would warn here (filterwarnings=error)
    # Options are part of the key: a cursor with other options gets an informer of its own.
    other = a.watch_cursor(**{**FAST, "sock_read": 2.0})
    again = a.watch_cursor(**FAST)
    assert other.informer is not again.informer  # type: ignore[attr-defined]
    other.close()
    again.close()


@pytest.mark.asyncio
async def test_a_cancelled_reader_loses_nothing(emulator: KubeEmulator) -> None:
    names = ["a", "b"]
    writer = await writers(emulator, names)
    api = await emulator.api_client("w")
    cursors = {
        n: LeaseLock(n, NS, identity="w", api_client=api).watch_cursor(**FAST) for n in names
    }
    assert await cursors["a"].next() is None
    assert await cursors["b"].next() is None
    got: dict[str, list[Observed | None]] = {"a": [], "b": []}
    async with anyio.create_task_group() as tg:

        async def read(name: str) -> None:
            got[name].append(await cursors[name].next())

        # Whoever waits reads for both; cancel the waits again and again mid-stream.
        for _ in range(5):
            with anyio.move_on_after(0.05):
                async with anyio.create_task_group() as inner:
                    inner.start_soon(read, "a")
                    inner.start_soon(read, "b")
        await write(writer["b"], "x", 1)
        tg.start_soon(read, "a")
        with anyio.fail_after(5):
            await read("b")
        tg.cancel_scope.cancel()
    assert holders(got["b"]) == ["x"]
    assert got["a"] == []
    assert emulator.counters("w") == {"list": 1, "watch": 1}
    for cursor in cursors.values():
        cursor.close()


# -- RBAC: the per-name fallback -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_forbidden_namespace_list_falls_back_to_watches_by_name(
    emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    names = ["a", "b"]
    writer = await writers(emulator, names)
    await write(writer["a"], "x", 0)
    emulator.faults("w").fail_next(403, verbs={"list"})
    api = await emulator.api_client("w")
    async with watchers(emulator, names, api) as w:
        await w["a"].wait_items(1)
        await w["b"].wait_items(1)
        await write(writer["b"], "y", 1)
        await w["b"].wait_items(2)
        # A follower joining later goes by name at once: no second refused request.
        async with watchers(emulator, ["c"], api) as late:
            await late["c"].wait_items(1)
    assert holders(w["a"].items) == ["x"]
    assert holders(w["b"].items) == [None, "y"]
    requests = [(r.verb, r.name, r.status) for r in emulator.requests if r.client == "w"]
    # The namespace-wide list refused once, then a list and a watch by name per follower (the
    # log names no object for either: both are requests of the collection).
    assert requests[0] == ("list", "", 403)
    assert sorted(requests[1:]) == [("list", "", 200)] * 3 + [("watch", "", 200)] * 3
    assert any("without resourceNames" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_forbidden_namespace_watch_falls_back_too(emulator: KubeEmulator) -> None:
    writer = await writers(emulator, ["a"])
    emulator.faults("w").fail_next(403, verbs={"watch"})
    async with watchers(emulator, ["a"]) as w:
        await w["a"].wait_items(1)
        await until(lambda: emulator.counters("w").get("watch", 0) == 2)
        await write(writer["a"], "x", 1)
        await w["a"].wait_items(2)
    assert holders(w["a"].items) == [None, "x"]  # None once, though listed twice
    assert emulator.counters("w") == {"list": 2, "watch": 2}


@pytest.mark.asyncio
async def test_shared_false_watches_by_name(emulator: KubeEmulator) -> None:
    async with watchers(emulator, ["a", "b"], shared=False) as w:
        await w["a"].wait_items(1)
        await w["b"].wait_items(1)
        await until(lambda: emulator.statistics().watches == 2)
    assert emulator.counters("w") == {"list": 2, "watch": 2}
