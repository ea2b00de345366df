"""FileLock: compare-and-swap on a JSON file, crash safety, errors, and elections.

Async tests run twice on fake clocks (asyncio with looptime, trio with ``MockClock``) and assert
exact times: FileLock's I/O is synchronous and it never waits on another process in a syscall, so
virtual time stays exact. The last test runs real candidate processes on one file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import anyio
import looptime
import pytest
from trio.testing import MockClock

import aioleader.locks
from aioleader import (
    ElectionError,
    LeaderElectionRecord,
    LockConflict,
    LockError,
    Term,
    Timing,
    campaign,
    elect,
)
from aioleader.locks import FileLock
from aioleader.locks._file import MAX_FILE_SIZE, UNPARSEABLE_HOLDER

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
CANDIDATE = Path(__file__).resolve().parent / "_file_lock_candidate.py"


def _looptime_loop() -> Any:
    return looptime.new_event_loop(start=0, _enabled=True)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == "asyncio":
        return ("asyncio", {"loop_factory": _looptime_loop})
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


class Jitter(random.Random):
    """A retry jitter that always picks the low end: acquisition polls exactly every RP."""

    def uniform(self, a: float, b: float) -> float:
        return a


def now() -> float:
    return anyio.current_time()


def holder(identity: str, transitions: int = 0) -> LeaderElectionRecord:
    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    return LeaderElectionRecord(
        holder_identity=identity,
        lease_duration_seconds=15,
        acquire_time=when,
        renew_time=when,
        leader_transitions=transitions,
    )


def stored(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_bytes())
    assert isinstance(doc, dict)
    return doc


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@contextlib.contextmanager
def flock_held(lock: FileLock) -> Iterator[Callable[[], None]]:
    """Hold ``lock``'s flock through another open file, as another process would; yields a
    function that releases it early."""
    fd = os.open(lock.lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    closed = False

    def release() -> None:
        nonlocal closed
        if not closed:
            closed = True
            os.close(fd)

    try:
        yield release
    finally:
        release()


async def sleep_then(delay: float, action: Callable[[], object]) -> None:
    await anyio.sleep(delay)
    action()


# -- the Lock interface ------------------------------------------------------------------------


def test_identity_path_and_description(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POD_NAME", "web-0")
    lock = FileLock("leader.json")
    assert lock.identity == "web-0"
    assert lock.path == str(tmp_path / "leader.json")  # absolute: immune to a later chdir
    assert lock.lock_path == str(tmp_path / "leader.json.lock")
    assert lock.describe() == f"file:{tmp_path / 'leader.json'}"
    assert repr(lock) == f"FileLock({str(tmp_path / 'leader.json')!r}, identity='web-0')"
    assert not lock.supports_watch
    monkeypatch.setenv("POD_NAME", "")
    assert FileLock(tmp_path / "x").identity == f"{socket.gethostname()}_{os.getpid()}"
    assert FileLock(tmp_path / "x", identity="b").identity == "b"
    with pytest.raises(ValueError, match="non-empty"):
        FileLock(tmp_path / "x", identity="")
    with pytest.raises(ValueError, match="reserved"):
        FileLock(tmp_path / "x", identity=UNPARSEABLE_HOLDER)
    with pytest.raises(ValueError, match="path"):
        FileLock("", identity="a")
    assert "FileLock" in aioleader.locks.__all__
    assert aioleader.locks.FileLock is FileLock


async def test_get_on_a_missing_file_is_none_and_create_writes_a_lease_document(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leader.json"
    lock = FileLock(path, identity="a")
    assert await lock.get() is None
    with pytest.raises(LockError, match="update before get or create"):
        await lock.update(holder("a"))
    observed = await lock.create(holder("a"))
    assert observed.version == "1"
    assert observed.record == holder("a")
    assert stored(path) == {
        "apiVersion": "aioleader/v1",
        "kind": "FileLease",
        "metadata": {"name": "leader.json", "resourceVersion": "1"},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "acquireTime": "2024-05-01T12:00:00.123456Z",
            "renewTime": "2024-05-01T12:00:00.123456Z",
            "leaseTransitions": 0,
        },
    }
    assert temp_files(tmp_path) == []
    again = await FileLock(path, identity="b").get()
    assert again is not None
    assert (again.record, again.raw, again.version) == (observed.record, observed.raw, "1")


@pytest.mark.parametrize("content", [b"", b"garbage", b"{}"])
async def test_create_on_an_existing_file_conflicts_whatever_it_holds(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "leader.json"
    path.write_bytes(content)
    with pytest.raises(LockConflict, match="already exists"):
        await FileLock(path, identity="a").create(holder("a"))
    assert path.read_bytes() == content


async def test_update_is_a_compare_and_swap_and_versions_only_grow(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    a = FileLock(path, identity="a")
    b = FileLock(path, identity="b")
    await a.create(holder("a"))
    seen = await b.get()
    assert seen is not None
    assert seen.version == "1"
    taken = await b.update(holder("b", 1))
    assert taken.version == "2"
    with pytest.raises(LockConflict, match=r"version 1 is stale, now 2"):
        await a.update(holder("a", 2))  # a's cached version is stale
    assert stored(path)["spec"]["holderIdentity"] == "b"
    fresh = await a.get()
    assert fresh is not None
    assert fresh.version == "2"
    assert (await a.update(holder("a", 2))).version == "3"
    assert (await a.update(holder("a", 2))).version == "4"  # a's own write refreshed its cache
    path.unlink()
    with pytest.raises(LockConflict, match="was deleted"):
        await a.update(holder("a", 2))
    assert temp_files(tmp_path) == []


async def test_fields_it_does_not_model_survive_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "aioleader/v1",
                "kind": "FileLease",
                "metadata": {"name": "x", "resourceVersion": "41", "labels": {"app": "web"}},
                "spec": {"holderIdentity": "", "leaseTransitions": 3, "futureField": True},
                "status": {"note": "kept"},
            }
        )
    )
    lock = FileLock(path, identity="a")
    observed = await lock.get()
    assert observed is not None
    assert observed.version == "41"
    await lock.update(observed.record.with_changes(holder_identity="a", leader_transitions=4))
    doc = stored(path)
    assert doc["metadata"] == {"name": "x", "resourceVersion": "42", "labels": {"app": "web"}}
    assert doc["spec"]["futureField"] is True
    assert doc["spec"]["holderIdentity"] == "a"
    assert doc["status"] == {"note": "kept"}


async def test_every_operation_is_a_checkpoint(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "leader.json", identity="a")
    await lock.create(holder("a"))
    operations: list[Callable[[], Any]] = [
        lock.get,
        lambda: lock.create(holder("a")),
        lambda: lock.update(holder("a")),
    ]
    for operation in operations:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await operation()
        assert scope.cancelled_caught
    assert stored(tmp_path / "leader.json")["metadata"]["resourceVersion"] == "1"


# -- crash safety and unreadable files --------------------------------------------------------

UNREADABLE = {
    "empty": b"",
    "torn": b'{"apiVersion": "aioleader/v1", "kind": "FileLease", "metadata": {"resourceVer',
    "binary": b"\x00\xff\xfe garbage \x00",
    "not a FileLease": b'{"kind": "Lease", "metadata": {"resourceVersion": "3"}, "spec": {}}',
    "no version": b'{"apiVersion": "aioleader/v1", "kind": "FileLease", "metadata": {}, "spec": {}}',
    "a JSON list": b"[1, 2, 3]",
}


@pytest.mark.parametrize("content", UNREADABLE.values(), ids=UNREADABLE.keys())
async def test_an_unreadable_file_is_held_by_an_unknown_holder_and_swapped_on_its_hash(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "leader.json"
    path.write_bytes(content)
    a = FileLock(path, identity="a")
    b = FileLock(path, identity="b")
    observed = await a.get()
    assert observed is not None
    assert observed.record.holder_identity == UNPARSEABLE_HOLDER
    assert observed.record.lease_duration_seconds is None  # the elector waits its own LD
    assert observed.raw == content
    assert observed.version.startswith("unreadable:sha256:")
    assert await b.get() == observed
    # The content changes under a: its swap on the old content's hash fails.
    path.write_bytes(content + b" ")
    with pytest.raises(LockConflict, match="unreadable:sha256:"):
        await a.update(holder("a", 1))
    # b saw the current content, so its takeover succeeds; the counter restarts at 1.
    assert await b.get() is not None
    taken = await b.update(holder("b", 1))
    assert taken.version == "1"
    assert stored(path)["spec"]["holderIdentity"] == "b"


async def test_unreadable_file_is_taken_over_own_lease_duration_after_first_seen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leader.json"
    path.write_bytes(b'{"torn": ')
    t0 = now()
    async with anyio.create_task_group() as tg:
        # A second torn write at 9: b's poll at 10 sees new content and restarts its wait.
        tg.start_soon(sleep_then, 9, lambda: path.write_bytes(b'{"torn again": '))
        async with elect(FileLock(path, identity="b"), rng=Jitter()) as leadership:
            term = await leadership.wait_term()
            assert now() - t0 == 25  # observed at 10 + b's own 15 s
            assert term.fencing_token == 1
            assert stored(path)["spec"]["holderIdentity"] == "b"


async def test_a_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    leftover = tmp_path / ".leader.json.0123456789ab.tmp"  # a crash between write and rename
    leftover.write_text(json.dumps({"kind": "FileLease", "spec": {"holderIdentity": "ghost"}}))
    t0 = now()
    async with elect(FileLock(path, identity="a")) as leadership:
        await leadership.wait_term()
        assert now() - t0 == 0
    assert temp_files(tmp_path) == [leftover.name]
    assert stored(path)["spec"]["holderIdentity"] == ""  # released on leaving the block


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), LockError),
        (OSError(errno.EIO, "Input/output error"), LockError),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), LockError),
        (PermissionError(errno.EACCES, "Permission denied"), ElectionError),
        (OSError(errno.EROFS, "Read-only file system"), ElectionError),
    ],
    ids=["ENOSPC", "EIO", "ENOENT-temp-file-removed", "EACCES", "EROFS"],
)
async def test_a_failed_write_leaves_the_old_record_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, expected: type[Exception]
) -> None:
    path = tmp_path / "leader.json"
    lock = FileLock(path, identity="a")
    await lock.create(holder("a"))
    before = path.read_bytes()

    def fail(src: str, dst: str) -> None:
        raise error

    monkeypatch.setattr(os, "replace", fail)  # the write dies before the rename
    with pytest.raises(
        expected, match=re.escape(f"file:{path}: cannot write the lock file")
    ) as caught:
        await lock.update(holder("a", 1))
    assert not isinstance(caught.value, LockConflict)
    assert caught.value.__cause__ is error
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []
    assert (await lock.update(holder("a", 1))).version == "2"  # the cache was not disturbed


# -- errors ------------------------------------------------------------------------------------


async def test_a_path_under_a_regular_file_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "leader.json"
    lock = FileLock(path, identity="a")
    with pytest.raises(
        ElectionError, match=rf"{re.escape(f'file:{path}')}: cannot read .*Not a directory"
    ):
        await lock.get()
    with pytest.raises(ElectionError, match="Not a directory"):
        await lock.create(holder("a"))
    t0 = now()
    with pytest.raises(ElectionError, match="Not a directory"):
        async with elect(lock) as leadership:
            await leadership.wait_term()
    assert now() - t0 == 0


async def test_a_missing_directory_is_fatal_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "leader.json"
    lock = FileLock(path, identity="a")
    with pytest.raises(
        ElectionError, match=re.escape(f"directory {tmp_path / 'missing'} does not exist")
    ):
        await lock.get()
    with pytest.raises(ElectionError, match="does not exist"):
        async with elect(lock) as leadership:
            await leadership.wait_term()
    assert not (tmp_path / "missing").exists()


async def test_a_directory_or_fifo_at_the_path_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ElectionError, match=re.escape(f"{tmp_path / 'dir'} is a directory")):
        await FileLock(tmp_path / "dir", identity="a").get()
    os.mkfifo(tmp_path / "fifo")  # opening it must not hang the loop
    with pytest.raises(ElectionError, match="is not a regular file"):
        await FileLock(tmp_path / "fifo", identity="a").get()
    (tmp_path / "leader.json.lock").mkdir()
    with pytest.raises(ElectionError, match=r"leader\.json\.lock.*Is a directory"):
        await FileLock(tmp_path / "leader.json", identity="a").create(holder("a"))
    assert not (tmp_path / "leader.json").exists()
    os.mkfifo(tmp_path / "other.json.lock")
    with pytest.raises(ElectionError, match=r"other\.json\.lock is not a regular file"):
        await FileLock(tmp_path / "other.json", identity="a").create(holder("a"))


async def test_a_large_file_is_refused_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * (MAX_FILE_SIZE + 1))
    with pytest.raises(ElectionError, match="refusing to use it as a lock file"):
        await FileLock(path, identity="a").get()


async def test_a_read_only_directory_is_fatal(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        try:
            (directory / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("chmod does not restrict this user (root or CAP_DAC_OVERRIDE)")
        lock = FileLock(directory / "leader.json", identity="a")
        assert await lock.get() is None
        with pytest.raises(ElectionError, match=r"leader\.json\.lock.*Permission denied"):
            await lock.create(holder("a"))
    finally:
        directory.chmod(0o700)


# -- the flock ------------------------------------------------------------------------------------


async def test_a_busy_lock_file_is_retried_without_blocking_until_the_timeout(
    tmp_path: Path,
) -> None:
    lock = FileLock(tmp_path / "leader.json", identity="a")
    await lock.create(holder("a"))
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await anyio.sleep(0.1)
            ticks.append(now())

    t0 = now()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with flock_held(lock):
            with pytest.raises(LockError, match=r"stayed locked by another process for 0\.5s"):
                await lock.update(holder("a"), timeout=0.5)
            assert now() - t0 == pytest.approx(0.5, abs=1e-6)
            with pytest.raises(LockError, match="for 0s"):
                await lock.create(holder("a"), timeout=0)
            assert await lock.get() is not None  # reads take no lock
        tg.cancel_scope.cancel()
    assert len(ticks) == 5  # the loop kept running while the update waited
    assert stored(tmp_path / "leader.json")["metadata"]["resourceVersion"] == "1"


async def test_a_lock_file_freed_during_the_wait_is_taken_at_the_next_retry(
    tmp_path: Path,
) -> None:
    lock = FileLock(tmp_path / "leader.json", identity="a")
    await lock.create(holder("a"))
    t0 = now()
    async with anyio.create_task_group() as tg:
        with flock_held(lock) as release:
            tg.start_soon(sleep_then, 0.2, release)
            observed = await lock.update(holder("a"), timeout=5)
    # Retries at 0, 0.001, 0.003, 0.007, 0.015, 0.031, 0.063, then every 50 ms: 0.113, 0.163, 0.213.
    assert now() - t0 == pytest.approx(0.213, abs=1e-6)
    assert observed.version == "2"


async def test_a_stuck_flock_holder_cannot_extend_leadership(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "leader.json", identity="a")
    t0 = now()
    async with elect(lock, rng=Jitter()) as leadership, anyio.create_task_group() as tg:
        with contextlib.ExitStack() as stack:
            async with leadership.leading() as term:
                await anyio.sleep(5)  # renewals at 2 and 4 succeed; from 5 the flock is busy
                release = stack.enter_context(flock_held(lock))
                tg.start_soon(sleep_then, 15, release)  # the other holder lets go at 20
                await anyio.sleep(1000)
                pytest.fail("leader work was not cancelled")
            assert now() - t0 == 14  # last renewal sent at 4 + RD
            assert term.end_reason == "deadline"
            second = await leadership.wait_term()
            # At 14: the update waits for the flock until 19 (RD/2); the next poll, at 21, wins.
            assert now() - t0 == 21
            assert second.fencing_token == 1


# -- elections on fake clocks --------------------------------------------------------------------


async def test_first_candidate_acquires_at_once_and_renews_every_retry_period(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leader.json"
    t0 = now()
    async with elect(FileLock(path, identity="a")) as leadership:
        term = await leadership.wait_term()
        assert now() - t0 == 0
        assert term.fencing_token == 0
        await anyio.sleep(7)
        assert stored(path)["metadata"]["resourceVersion"] == "4"  # create + renewals at 2, 4, 6
        assert stored(path)["spec"]["holderIdentity"] == "a"
        assert leadership.statistics().slow_path == 0
    spec = stored(path)["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)  # released
    assert temp_files(tmp_path) == []


async def test_graceful_release_hands_over_at_the_next_poll(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    seen: list[tuple[float, str]] = []
    t0 = now()
    async with anyio.create_task_group() as tg:
        scope_a = anyio.CancelScope()

        async def run_a(*, task_status: anyio.abc.TaskStatus[Any]) -> None:
            with scope_a:
                await campaign(FileLock(path, identity="a"), task_status=task_status)

        la = await tg.start(run_a)
        await la.wait_term()
        await anyio.sleep(0.5)
        async with elect(
            FileLock(path, identity="b"),
            rng=Jitter(),
            on_new_leader=lambda who: seen.append((now() - t0, who)),
        ) as lb:
            await anyio.sleep(4.5)
            scope_a.cancel()  # t = 5: a releases
            term = await lb.wait_term()
            assert now() - t0 == 6.5  # b's next poll sees a free lock
            assert term.fencing_token == 1
    assert seen == [(0.5, "a"), (6.5, ""), (6.5, "b"), (6.5, "")]


async def test_crashed_leader_is_replaced_after_observed_time_plus_record_duration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leader.json"
    t0 = now()
    async with anyio.create_task_group() as tg:
        crash_a = anyio.CancelScope()

        async def run_a(*, task_status: anyio.abc.TaskStatus[Any]) -> None:
            with crash_a:
                # a writes a 20 s lease; b is configured for 15 s but must honour the record's 20.
                await campaign(
                    FileLock(path, identity="a"),
                    timing=Timing(20, 10, 2),
                    release_on_cancel=False,
                    task_status=task_status,
                )

        la = await tg.start(run_a)
        await la.wait_term()
        await anyio.sleep(0.5)
        async with elect(FileLock(path, identity="b"), rng=Jitter()) as lb:
            await anyio.sleep(4.5)  # b polls at 0.5, 2.5, 4.5 (sees a's renewal of 4)
            crash_a.cancel()  # t = 5: no release, a simply stops renewing
            term: Term = await lb.wait_term()
            assert now() - t0 == 24.5  # observed at 4.5 + the record's 20 s
            assert term.fencing_token == 1


# -- real processes ------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A candidate process and the events it printed (identity, kind, fields)."""

    identity: str
    proc: subprocess.Popen[str]
    stderr: IO[str]
    reader: threading.Thread
    intervals: list[list[float]] = field(default_factory=list)


class Cluster:
    """Candidate processes on one file, with one queue of their stdout lines."""

    def __init__(self, path: Path, logs: Path) -> None:
        self.path = path
        self.logs = logs
        self.events: queue.Queue[tuple[str, list[str]]] = queue.Queue()
        self.history: list[tuple[str, list[str]]] = []
        self.candidates: list[Candidate] = []
        paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}

    def start(self, identity: str, backend: str) -> Candidate:
        stderr = (self.logs / f"{identity}-{len(self.candidates)}.stderr").open("w")
        proc = subprocess.Popen(
            [sys.executable, str(CANDIDATE), str(self.path), identity, backend],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=self.env,
        )

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                kind, *fields = line.split()
                self.events.put((kind, fields))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        candidate = Candidate(identity, proc, stderr, reader)
        self.candidates.append(candidate)
        return candidate

    def mark(self) -> int:
        """A position in the history, to wait for events that come after it."""
        self.drain()
        return len(self.history)

    def wait_for(
        self, kind: str, identity: str | None = None, *, since: int = 0, timeout: float = 10
    ) -> list[str]:
        """The fields of the first ``kind`` event (from ``identity``) at or after ``since``."""
        deadline = time.monotonic() + timeout
        position = since
        while True:
            for kind_, fields in self.history[position:]:
                if kind_ == kind and (identity is None or fields[0] == identity):
                    return fields
            position = len(self.history)
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no {kind} {identity or ''} within {timeout}s; events: {self.history}; "
                    f"stderr: {self.stderr()}"
                ) from None
            self.record(event)

    def drain(self) -> list[tuple[str, list[str]]]:
        drained = []
        with contextlib.suppress(queue.Empty):
            while True:
                event = self.events.get_nowait()
                self.record(event)
                drained.append(event)
        return drained

    def record(self, event: tuple[str, list[str]]) -> None:
        self.history.append(event)
        kind, fields = event
        if kind in ("LEADING", "STOPPED"):
            candidate = next(c for c in reversed(self.candidates) if c.identity == fields[0])
            if kind == "LEADING":
                candidate.intervals.append([float(fields[2]), float("inf")])
            else:
                candidate.intervals[-1][1] = float(fields[2])

    def stderr(self) -> str:
        return " | ".join(
            f"{p.name}: {p.read_text()[-2000:]}" for p in sorted(self.logs.glob("*.stderr"))
        )

    def close(self) -> None:
        for candidate in self.candidates:
            if candidate.proc.poll() is None:
                candidate.proc.kill()
            candidate.proc.wait()
            candidate.reader.join(timeout=5)
            assert candidate.proc.stdout is not None
            candidate.proc.stdout.close()
            candidate.stderr.close()


def test_real_processes_never_lead_together_and_fail_over_in_time(tmp_path: Path) -> None:
    """Two processes (asyncio and trio) on one file; SIGKILL the leader, restart it, SIGTERM."""
    ld, rp = 2.0, 0.25  # the candidates' Timing(2, 1.5, 0.25)
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(tmp_path / "leader.json", logs)
    try:
        first = {c.identity: c for c in (cluster.start("a", "asyncio"), cluster.start("b", "trio"))}
        cluster.wait_for("READY", "a")
        cluster.wait_for("READY", "b")
        leader_id = cluster.wait_for("LEADING")[0]
        follower_id = "b" if leader_id == "a" else "a"
        cluster.wait_for("LEADER", follower_id)  # the follower has seen the leader...
        time.sleep(1.0)  # ...and stays a follower for four renew periods
        cluster.drain()
        leading = [fields for kind, fields in cluster.history if kind == "LEADING"]
        assert [fields[:2] for fields in leading] == [[leader_id, "0"]]
        assert ("LEADER", [follower_id, leader_id]) in cluster.history

        # Crash: SIGKILL the leader. The follower takes over LD after it last saw a renewal.
        leader = first[leader_id]
        mark = cluster.mark()
        killed_at = time.monotonic()
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        leader.intervals[-1][1] = time.monotonic()
        took_over = float(cluster.wait_for("LEADING", follower_id, since=mark)[2])
        print(f"failover after SIGKILL: {took_over - killed_at:.3f}s")
        assert ld - 2.2 * rp <= took_over - killed_at <= ld + 2.2 * rp + 0.75

        # Restart the crashed candidate; it sees the new leader and follows.
        mark = cluster.mark()
        cluster.start(leader_id, "asyncio")
        assert cluster.wait_for("LEADER", leader_id, since=mark) == [leader_id, follower_id]

        # Graceful: SIGTERM the leader. It stops, releases, exits 0; the other leads one poll later.
        mark = cluster.mark()
        first[follower_id].proc.send_signal(signal.SIGTERM)
        stopped = float(cluster.wait_for("STOPPED", follower_id, since=mark)[2])
        assert first[follower_id].proc.wait(timeout=5) == 0
        handed_over = float(cluster.wait_for("LEADING", leader_id, since=mark)[2])
        print(f"handover after SIGTERM: {handed_over - stopped:.3f}s")
        assert 0 < handed_over - stopped <= 2.2 * rp + 0.5

        restarted = cluster.candidates[-1]
        mark = cluster.mark()
        restarted.proc.send_signal(signal.SIGTERM)
        cluster.wait_for("STOPPED", leader_id, since=mark)
        assert restarted.proc.wait(timeout=5) == 0
        cluster.drain()
    finally:
        cluster.close()

    # Never two leaders: the reported intervals (on the system-wide monotonic clock) are disjoint.
    intervals = sorted(i for c in cluster.candidates for i in c.intervals)
    assert len(intervals) == 3, cluster.history
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end < start, intervals
    tokens = [e[1][1] for e in cluster.history if e[0] == "LEADING"]
    assert tokens == ["0", "1", "2"]
    spec = stored(tmp_path / "leader.json")["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("", 2)  # released at the end
