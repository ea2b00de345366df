"""LeaseLock.watch() through the real kubernetes_asyncio client against the emulator, and
MemoryLock.watch() on fake clocks.

The emulator tests run in real time with short settings (bookmarks every 0.2 s, a 1 s read
timeout, backoff capped at 0.2 s) and assert what was yielded, in order, plus the requests the
emulator saw (one list and one watch unless a fault forced more), not exact times.
"""

from __future__ import annotations

import copy
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from kubernetes_asyncio.client import CoordinationV1Api

from aioleader import ForbiddenError, LockConflict, Observed
from aioleader._record import LeaderElectionRecord
from aioleader.kubernetes import LeaseLock
from aioleader.kubernetes._watch import WatchOptions
from aioleader.locks import MemoryLock
from aioleader.testing import KubeEmulator

pytestmark = pytest.mark.fake_clock  # its anyio tests; the pytest-asyncio ones run in real time


NS = "default"
NAME = "lock"
FAST: dict[str, Any] = {
    "sock_read": 1.0,
    "backoff_initial": 0.02,
    "backoff_max": 0.2,
    "relist_interval": 30.0,
}


def holders(items: list[Observed | None]) -> list[str | None]:
    return [None if item is None else item.record.holder_identity for item in items]


def record(holder: str, renew_second: int = 0) -> LeaderElectionRecord:
    return LeaderElectionRecord(
        holder_identity=holder,
        lease_duration_seconds=15,
        renew_time=datetime(2024, 1, 1, 0, 0, renew_second, tzinfo=timezone.utc),
    )


class Watching:
    """Runs ``lock.watch()`` in a task and collects what it yields."""

    def __init__(self, lock: Any, **options: Any) -> None:
        self.lock = lock
        self.options = options
        self.items: list[Observed | None] = []
        self.times: list[float] = []
        self.scope = anyio.CancelScope()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        with self.scope:
            async with aclosing(self.lock.watch(**self.options)) as states:
                task_status.started()
                async for state in states:
                    self.items.append(state)
                    self.times.append(anyio.current_time())

    async def wait_items(self, count: int, limit: float = 5.0) -> list[Observed | None]:
        with anyio.fail_after(limit):
            while len(self.items) < count:
                await anyio.sleep(0.01)
        return self.items


@asynccontextmanager
async def watching(lock: Any, **options: Any) -> AsyncIterator[Watching]:
    w = Watching(lock, **{**FAST, **options})
    async with anyio.create_task_group() as tg:
        await tg.start(w.run)
        yield w
        w.scope.cancel()


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.01)


async def locks(emu: KubeEmulator) -> tuple[LeaseLock, LeaseLock]:
    """The watcher (client "w") and a writer (client "b") on the same Lease."""
    watcher = LeaseLock(NAME, NS, identity="w", api_client=await emu.api_client("w"))
    writer = LeaseLock(NAME, NS, identity="b", api_client=await emu.api_client("b"))
    return watcher, writer


async def write(lock: LeaseLock, holder: str, second: int) -> Observed:
    """Create or replace the Lease through ``lock`` (a fresh GET first)."""
    if await lock.get() is None:
        return await lock.create(record(holder, second))
    return await lock.update(record(holder, second))


# -- LeaseLock.watch on the emulator --------------------------------------------------------------


@pytest.mark.asyncio
async def test_current_state_first_then_each_change_deletion_and_recreation(
    emulator: KubeEmulator,
) -> None:
    watcher, writer = await locks(emulator)
    async with watching(watcher) as w:
        assert await w.wait_items(1) == [None]  # no Lease yet
        created = await write(writer, "b", 1)
        await w.wait_items(2)
        await write(writer, "c", 2)
        await w.wait_items(3)
        emulator.delete_object("leases", NS, NAME)
        await w.wait_items(4)
        await write(writer, "d", 3)
        items = await w.wait_items(5)
        await anyio.sleep(0.3)  # bookmarks flow; nothing else may be yielded
    assert holders(items) == [None, "b", "c", None, "d"]
    assert items[1] == created  # the same raw bytes, record and version as the writer got
    assert emulator.counters("w") == {"list": 1, "watch": 1}


@pytest.mark.asyncio
async def test_an_existing_lease_is_yielded_first(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    first = await write(writer, "b", 1)
    async with watching(watcher) as w:
        items = await w.wait_items(1)
        await anyio.sleep(0.3)
    assert items == [first]


@pytest.mark.asyncio
async def test_bookmarks_and_metadata_only_changes_yield_nothing(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "b", 1)
    api = await emulator.api_client("b")
    async with watching(watcher) as w:
        await w.wait_items(1)
        await CoordinationV1Api(api).patch_namespaced_lease(
            NAME, NS, {"metadata": {"labels": {"team": "x"}, "annotations": {"a": "b"}}}
        )
        await anyio.sleep(0.6)  # three bookmark intervals
        assert len(w.items) == 1
        await write(writer, "c", 2)
        items = await w.wait_items(2)
    assert holders(items) == ["b", "c"]
    assert emulator.counters("w") == {"list": 1, "watch": 1}


@pytest.mark.asyncio
async def test_renewals_are_changes(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "b", 1)
    async with watching(watcher) as w:
        await w.wait_items(1)
        await writer.update(record("b", 2))
        items = await w.wait_items(2)
    assert holders(items) == ["b", "b"]
    assert items[0] is not None
    assert items[1] is not None
    assert items[0].raw != items[1].raw


@pytest.mark.asyncio
async def test_early_eof_resumes_from_the_last_version_without_listing(
    emulator: KubeEmulator,
) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    emulator.faults("w").watch_eof_after(1, count=2)
    async with watching(watcher) as w:
        await w.wait_items(1)
        for n, holder in enumerate(["b", "c", "d"], start=2):
            await write(writer, holder, n)
            await w.wait_items(n)
        await anyio.sleep(0.3)
    assert holders(w.items) == ["a", "b", "c", "d"]
    assert emulator.counters("w") == {"list": 1, "watch": 3}


@pytest.mark.asyncio
async def test_empty_streams_back_off(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    emulator.faults("w").watch_eof_after(0, count=4)
    async with watching(watcher, backoff_initial=0.05, backoff_max=1.0) as w:
        await w.wait_items(1)
        started = anyio.current_time()
        await until(lambda: emulator.counters("w").get("watch", 0) == 5)
        elapsed = anyio.current_time() - started
        await write(writer, "b", 1)
        await w.wait_items(2)
    # Four empty streams in a row: waits drawn from [d/2, d] for d = 0.05, 0.1, 0.2, 0.4.
    assert 0.375 <= elapsed < 2.0
    assert emulator.counters("w").get("list", 0) == 1


@pytest.mark.asyncio
async def test_a_garbage_line_reconnects_and_resumes(
    emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    async with watching(watcher) as w:
        await w.wait_items(1)
        emulator.faults("w").watch_garbage_next()
        await until(lambda: emulator.counters("w").get("watch", 0) == 2)
        await write(writer, "b", 1)
        items = await w.wait_items(2)
    assert holders(items) == ["a", "b"]
    assert emulator.counters("w") == {"list": 1, "watch": 2}
    assert any(
        r.levelno == logging.WARNING and "not JSON" in r.getMessage() for r in caplog.records
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["compaction", "fault"])
async def test_410_relists_and_yields_the_latest_state(emulator: KubeEmulator, how: str) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    faults = emulator.faults("w")
    async with watching(watcher) as w:
        await w.wait_items(1)
        faults.partition("refuse")  # the stream is reset; reconnects are refused
        await write(writer, "b", 1)
        await write(writer, "c", 2)
        if how == "compaction":
            emulator.compact()
        faults.heal()
        if how == "fault":
            faults.watch_expire()  # heal() clears one-shot faults: plan it after
        items = await w.wait_items(2)
        await anyio.sleep(0.3)
    assert holders(items) == ["a", "c"]  # "b" is gone from the server's history: skipped
    assert emulator.counters("w").get("list", 0) == 2


@pytest.mark.asyncio
async def test_410_on_the_first_watch_relists_without_repeating(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    emulator.faults("w").watch_expire()
    async with watching(watcher) as w:
        await w.wait_items(1)
        await until(lambda: emulator.counters("w").get("watch", 0) == 2)
        await write(writer, "b", 1)
        items = await w.wait_items(2)
    assert holders(items) == ["a", "b"]
    assert emulator.counters("w") == {"list": 2, "watch": 2}


@pytest.mark.asyncio
async def test_survives_an_api_server_restart(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    async with watching(watcher) as w, anyio.create_task_group() as tg:
        await w.wait_items(1)
        tg.start_soon(emulator.restart, 0.5)
        await anyio.sleep(0.1)
        # Written while the server is down (straight into its store): replayed on resume.
        lease = emulator.get_object("leases", NS, NAME)
        assert lease is not None
        changed = copy.deepcopy(lease)
        changed["spec"]["holderIdentity"] = "b"
        emulator.put_raw("leases", NS, NAME, changed)
        items = await w.wait_items(2)
        await write(writer, "c", 2)
        items = await w.wait_items(3)
    assert holders(items) == ["a", "b", "c"]
    assert emulator.counters("w").get("list", 0) == 1  # resumed from its version: no re-list


@pytest.mark.asyncio
async def test_a_silent_stream_is_cut_by_the_read_timeout(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    async with watching(watcher, sock_read=0.5) as w:
        await w.wait_items(1)
        emulator.faults("w").watch_silence = True
        await write(writer, "b", 1)
        changed_at = anyio.current_time()
        items = await w.wait_items(2, limit=3.0)
        delay = w.times[1] - changed_at
        emulator.faults("w").watch_silence = False
    assert holders(items) == ["a", "b"]
    # Silence began at most one bookmark interval (0.2 s) after the last data.
    assert 0.2 <= delay < 1.5
    assert emulator.counters("w").get("list", 0) >= 2


@pytest.mark.asyncio
async def test_survives_a_blackhole_partition(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    async with watching(watcher, sock_read=0.5) as w:
        await w.wait_items(1)
        emulator.faults("w").partition("blackhole")  # accepted, never answered, streams silent
        await write(writer, "b", 1)
        await write(writer, "c", 2)
        await anyio.sleep(1.5)  # the stream times out; the re-list hangs (bounded)
        assert len(w.items) == 1
        emulator.faults("w").heal()
        items = await w.wait_items(2, limit=12.0)
        await anyio.sleep(0.3)
    assert holders(items) == ["a", "c"]


@pytest.mark.asyncio
async def test_a_stalled_stream_is_caught_by_the_safety_reread(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    async with watching(watcher, sock_read=30.0, relist_interval=0.5) as w:
        await w.wait_items(1)
        listed_at = w.times[0]
        emulator.faults("w").watch_silence = True
        await write(writer, "b", 1)
        items = await w.wait_items(2, limit=3.0)
        emulator.faults("w").watch_silence = False
        await anyio.sleep(0.3)
    assert holders(items) == ["a", "b"]
    assert 0.45 <= w.times[1] - listed_at < 1.5
    # The re-read disagreed with the watch: the watch was restarted from the re-read's version.
    assert emulator.counters("w").get("watch", 0) == 2


@pytest.mark.asyncio
async def test_a_safety_reread_that_agrees_keeps_the_stream(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    async with watching(watcher, relist_interval=0.2) as w:
        await w.wait_items(1)
        await anyio.sleep(1.0)
        counters = emulator.counters("w")
        # (A write racing a re-read may legitimately restart the watch: none here.)
        await write(writer, "b", 1)
        items = await w.wait_items(2)
    assert holders(items) == ["a", "b"]
    assert counters["list"] >= 4
    assert counters["watch"] == 1


@pytest.mark.asyncio
async def test_transient_errors_are_retried(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    faults = emulator.faults("w")
    faults.fail_next(503, count=2, verbs={"list"})
    faults.fail_next(429, verbs={"watch"}, retry_after=1)
    faults.fail_next(500, verbs={"watch"})
    async with watching(watcher) as w:
        await w.wait_items(1)
        await until(lambda: emulator.counters("w").get("watch", 0) == 3)
        await write(writer, "b", 1)
        items = await w.wait_items(2)
    assert holders(items) == ["a", "b"]
    assert emulator.counters("w") == {"list": 3, "watch": 3}
    watch_starts = [r.started for r in emulator.requests if r.client == "w" and r.verb == "watch"]
    assert watch_starts[1] - watch_starts[0] >= 0.95  # Retry-After: 1 honoured


@pytest.mark.asyncio
async def test_forbidden_list_is_fatal(emulator: KubeEmulator) -> None:
    watcher, _ = await locks(emulator)
    emulator.faults("w").fail_next(403, verbs={"list"})
    # By name: the shared watch would fall back to this one (tests/test_informer.py).
    async with aclosing(watcher.watch(**FAST, shared=False)) as states:
        with pytest.raises(ForbiddenError, match=r"^forbidden: cannot list leases"):
            await anext(states)


@pytest.mark.asyncio
async def test_forbidden_watch_is_fatal(emulator: KubeEmulator) -> None:
    watcher, _ = await locks(emulator)
    emulator.faults("w").fail_next(403, verbs={"watch"})
    async with aclosing(watcher.watch(**FAST, shared=False)) as states:
        assert await anext(states) is None
        with pytest.raises(ForbiddenError, match=r"^forbidden: cannot watch leases") as info:
            await anext(states)
    assert info.value.verb == "watch"


@pytest.mark.asyncio
async def test_cancellation_closes_the_stream(emulator: KubeEmulator) -> None:
    watcher, _ = await locks(emulator)
    async with watching(watcher, shared=False) as w:
        await w.wait_items(1)
        await until(lambda: emulator.statistics().watches == 1)
    await until(lambda: emulator.statistics().watches == 0, limit=2.0)
    assert emulator.statistics().in_flight == 0
    gc.collect()  # an unclosed response or session would warn here (filterwarnings=error)


@pytest.mark.asyncio
async def test_closing_the_iterator_closes_the_stream(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    async with aclosing(watcher.watch(**FAST, shared=False)) as states:
        assert await anext(states) is None
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, writer, "b", 1)
            second = await anext(states)  # from the stream, which stays open between items
        assert second is not None
        assert emulator.statistics().watches == 1
    await until(lambda: emulator.statistics().watches == 0, limit=2.0)
    gc.collect()


@pytest.mark.asyncio
async def test_the_watch_leaves_the_update_cache_alone(emulator: KubeEmulator) -> None:
    watcher, writer = await locks(emulator)
    await write(writer, "a", 0)
    await watcher.get()  # cached for update: version of "a"
    async with watching(watcher) as w:
        await w.wait_items(1)
        await write(writer, "b", 1)
        await w.wait_items(2)
        # The watch saw "b", but an update must still compare against what get() returned.
        with pytest.raises(LockConflict):
            await watcher.update(record("w", 2))


def test_supports_watch() -> None:
    assert LeaseLock(NAME, identity="x").supports_watch


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"relist_interval": 0}, "relist_interval"),
        ({"sock_read": float("inf")}, "sock_read"),
        ({"sock_connect": -1.0}, "sock_connect"),
        ({"backoff_initial": float("nan")}, "backoff_initial"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 1.5}, "timeout_seconds"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "backoff_max"),
    ],
)
def test_options_are_checked_when_watch_is_called(options: dict[str, Any], message: str) -> None:
    lock = LeaseLock(NAME, identity="x")
    with pytest.raises(ValueError, match=f"^{message}"):
        lock.watch(**options)
    with pytest.raises(ValueError, match=f"^{message}"):
        WatchOptions(**options)


# -- MemoryLock.watch on fake clocks ----------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_watch_yields_each_change_at_once() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        w = Watching(a)
        await tg.start(w.run)

        await anyio.sleep(1)
        await a.create(record("a", 1))
        await anyio.sleep(1)
        await a.update(record("a", 2))
        await anyio.sleep(1)
        await a.update(record("a", 2))  # the same bytes: nothing to report
        await anyio.sleep(1)
        await b.get()
        await b.update(record("b", 4))
        await anyio.sleep(1)
        a.delete()
        await anyio.sleep(1)
        await b.create(record("b", 6))
        await anyio.sleep(1)
        w.scope.cancel()
    assert holders(w.items) == [None, "a", "a", "b", None, "b"]
    assert [t - t0 for t in w.times] == [0, 1, 2, 4, 5, 6]
    assert [None if i is None else i.version for i in w.items] == [None, "1", "2", "4", None, "6"]
    assert not a._slot.watchers  # unsubscribed on cancellation


@pytest.mark.anyio
async def test_memory_watch_delivers_every_write_in_order() -> None:
    a = MemoryLock("a")
    await a.create(record("a", 0))
    async with anyio.create_task_group() as tg:
        w = Watching(a)
        await tg.start(w.run)
        await anyio.sleep(1)
        # Two writes with no checkpoint for the watcher in between: both are delivered.
        a._write(record("x", 1))
        a._write(record("y", 2))
        await anyio.sleep(1)
        w.scope.cancel()
    assert holders(w.items) == ["a", "x", "y"]


@pytest.mark.anyio
async def test_memory_watch_does_not_touch_the_update_cache() -> None:
    a = MemoryLock("a")
    b = a.sibling("b")
    await a.create(record("a", 0))
    await b.get()
    async with aclosing(b.watch()) as states:
        assert await anext(states) is not None
        await a.update(record("a", 1))
        assert await anext(states) is not None
    with pytest.raises(LockConflict):
        await b.update(record("b", 2))
    assert MemoryLock("c").supports_watch
