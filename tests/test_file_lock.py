"""FileLock: compare-and-swap by exclusive links of numbered versions, crash safety, errors,
and elections.

Async tests run twice on fake clocks (asyncio with looptime, trio with ``MockClock``) and assert
exact times: FileLock's I/O is synchronous and it never waits on another process, so virtual time
stays exact. Writers are raced and interrupted at each step of a write through the lock's private
test hook. The last tests run real candidate processes on one lock, and freeze (SIGSTOP) or kill
(SIGKILL) one inside its write.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from _jitter import Jitter, now

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
from aioleader.locks._file import KEEP_VERSIONS, MAX_FILE_SIZE, UNPARSEABLE_HOLDER, version_name

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock]

ROOT = Path(__file__).resolve().parent.parent
CANDIDATE = Path(__file__).resolve().parent / "_file_lock_candidate.py"


def holder(identity: str, transitions: int = 0) -> LeaderElectionRecord:
    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    return LeaderElectionRecord(
        holder_identity=identity,
        lease_duration_seconds=15,
        acquire_time=when,
        renew_time=when,
        leader_transitions=transitions,
    )


def versions(path: Path) -> list[int]:
    """The versions in a lock directory, ascending."""
    return sorted(int(p.name[:-5]) for p in path.glob("*.json") if p.name[:-5].isdecimal())


def stored(path: Path) -> dict[str, Any]:
    """The document of the highest version: the record."""
    doc = json.loads((path / version_name(versions(path)[-1])).read_bytes())
    assert isinstance(doc, dict)
    return doc


def put_version(path: Path, version: int, content: bytes | dict[str, Any]) -> None:
    """Write a version file directly, as another writer (or a corrupting one) would."""
    path.mkdir(exist_ok=True)
    if isinstance(content, dict):
        content = json.dumps(content).encode()
    (path / version_name(version)).write_bytes(content)


def document(version: int, holder_id: str, transitions: int = 0) -> dict[str, Any]:
    """A version file's document as another FileLock would write it."""
    return {
        "apiVersion": "aioleader/v1",
        "kind": "FileLease",
        "metadata": {"name": "leader.json", "resourceVersion": str(version)},
        "spec": {
            "holderIdentity": holder_id,
            "leaseDurationSeconds": 15,
            "leaseTransitions": transitions,
        },
    }


def temp_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp."))


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
    assert sorted(os.listdir(path)) == ["00000000000000000001.json"]  # the directory is created
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
    assert temp_files(path) == []
    again = await FileLock(path, identity="b").get()
    assert again is not None
    assert (again.record, again.raw, again.version) == (observed.record, observed.raw, "1")


@pytest.mark.parametrize("content", [b"", b"garbage", b"{}"])
@pytest.mark.parametrize("version", [1, 7])
async def test_create_on_an_existing_lock_conflicts_whatever_it_holds(
    tmp_path: Path, content: bytes, version: int
) -> None:
    path = tmp_path / "leader.json"
    put_version(path, version, content)
    with pytest.raises(LockConflict, match="already exists"):
        await FileLock(path, identity="a").create(holder("a"))
    assert (path / version_name(version)).read_bytes() == content
    assert versions(path) == [version]
    assert temp_files(path) == []


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
    shutil.rmtree(path)
    with pytest.raises(LockConflict, match="was deleted"):
        await a.update(holder("a", 2))
    assert not path.exists()


async def test_fields_it_does_not_model_survive_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    put_version(
        path,
        41,
        {
            "apiVersion": "aioleader/v1",
            "kind": "FileLease",
            "metadata": {"name": "x", "resourceVersion": "41", "labels": {"app": "web"}},
            "spec": {"holderIdentity": "", "leaseTransitions": 3, "futureField": True},
            "status": {"note": "kept"},
        },
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
    assert versions(path) == [41, 42]


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
    "another version": b'{"apiVersion": "aioleader/v1", "kind": "FileLease", '
    b'"metadata": {"resourceVersion": "2"}, "spec": {}}',
    "a JSON list": b"[1, 2, 3]",
    "deep": b"[" * 60_000,
}


@pytest.mark.parametrize("content", UNREADABLE.values(), ids=UNREADABLE.keys())
async def test_an_unreadable_version_is_held_by_an_unknown_holder_and_superseded(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "leader.json"
    put_version(path, 1, content)
    a = FileLock(path, identity="a")
    b = FileLock(path, identity="b")
    observed = await a.get()
    assert observed is not None
    assert observed.record.holder_identity == UNPARSEABLE_HOLDER
    assert observed.record.lease_duration_seconds is None  # the elector waits its own LD
    assert observed.raw == content
    assert observed.version == "1"
    assert await b.get() == observed
    # Somebody rewrites it in place: a's swap on the old content fails.
    put_version(path, 1, content + b" ")
    with pytest.raises(LockConflict, match="version 1 was rewritten"):
        await a.update(holder("a", 1))
    # A new unreadable version appears: a's swap on version 1 fails.
    put_version(path, 2, content)
    assert await a.get() is not None
    with pytest.raises(LockConflict, match="version 2 is stale, now 3"):
        put_version(path, 3, content + b"  ")
        await a.update(holder("a", 1))
    # b saw the current content, so its takeover succeeds, as the next version.
    assert (await b.get()) is not None
    taken = await b.update(holder("b", 1))
    assert taken.version == "4"
    assert stored(path)["spec"]["holderIdentity"] == "b"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"holderIdentity": 5}, UNPARSEABLE_HOLDER),  # issue 9: this once read as free
        ({"holderIdentity": []}, UNPARSEABLE_HOLDER),
        ({"holderIdentity": {}}, UNPARSEABLE_HOLDER),
        ({"holderIdentity": None}, ""),
        ({}, ""),
    ],
)
async def test_a_holder_that_is_not_a_string_is_waited_out_not_taken(
    tmp_path: Path, spec: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "leader.json"
    put_version(path, 1, {**document(1, ""), "spec": spec})
    observed = await FileLock(path, identity="a").get()
    assert observed is not None
    assert observed.record.holder_identity == expected
    t0 = now()
    async with elect(FileLock(path, identity="a"), rng=Jitter()) as leadership:
        await leadership.wait_term()
        assert now() - t0 == (15 if expected else 0)  # a's own LD: the record has none


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink", "large"])
async def test_a_version_that_is_not_a_small_regular_file_is_unreadable(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "leader.json"
    path.mkdir()
    target = path / version_name(3)
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)  # opening it must not hang the loop
    elif kind == "symlink":
        (tmp_path / "elsewhere.json").write_text(json.dumps(document(3, "ghost")))
        target.symlink_to(tmp_path / "elsewhere.json")
    else:
        target.write_bytes(b" " * (MAX_FILE_SIZE + 1) + json.dumps(document(3, "x")).encode())
    lock = FileLock(path, identity="a")
    observed = await lock.get()
    assert observed is not None
    assert observed.record.holder_identity == UNPARSEABLE_HOLDER
    assert observed.version == "3"
    assert len(observed.raw) < 200  # never read whole
    assert (await lock.update(holder("a", 1))).version == "4"


async def test_unreadable_file_is_taken_over_own_lease_duration_after_first_seen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "leader.json"
    put_version(path, 1, b'{"torn": ')
    t0 = now()
    async with anyio.create_task_group() as tg:
        # A second torn write at 9: b's poll at 10 sees new content and restarts its wait.
        tg.start_soon(sleep_then, 9, lambda: put_version(path, 2, b'{"torn again": '))
        async with elect(FileLock(path, identity="b"), rng=Jitter()) as leadership:
            term = await leadership.wait_term()
            assert now() - t0 == 25  # observed at 10 + b's own 15 s
            assert term.fencing_token == 1
            assert stored(path)["spec"]["holderIdentity"] == "b"


async def test_a_leftover_temp_file_is_ignored_and_collected_once_old(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    path.mkdir()
    leftover = path / ".tmp.0123456789ab"  # a writer that crashed or froze before its link
    leftover.write_text(json.dumps(document(1, "ghost")))
    old = path / ".tmp.ba9876543210"
    old.write_text(json.dumps(document(1, "ghost")))
    os.utime(old, (time.time() - 120, time.time() - 120))
    t0 = now()
    async with elect(FileLock(path, identity="a")) as leadership:
        await leadership.wait_term()
        assert now() - t0 == 0
    assert temp_files(path) == [leftover.name]  # a fresh one may belong to a frozen writer
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
    before = stored(path)

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(os, "link", fail)  # the write dies at its link
    with pytest.raises(
        expected, match=re.escape(f"file:{path}: cannot write {version_name(2)}")
    ) as caught:
        await lock.update(holder("a", 1))
    assert not isinstance(caught.value, LockConflict)
    assert caught.value.__cause__ is error
    monkeypatch.undo()
    assert stored(path) == before
    assert versions(path) == [1]
    assert temp_files(path) == []
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


@pytest.mark.parametrize("kind", ["file", "fifo", "large file"])
async def test_anything_but_a_directory_at_the_path_is_fatal_and_untouched(
    tmp_path: Path, kind: str
) -> None:
    # An older aioleader's lock file, or a misconfigured path to somebody's data.
    path = tmp_path / "leader.json"
    content = b"x" * (MAX_FILE_SIZE + 1) if kind == "large file" else b'{"kind": "FileLease"}'
    if kind == "fifo":
        os.mkfifo(path)  # opening it must not hang the loop
    else:
        path.write_bytes(content)
    lock = FileLock(path, identity="a")
    for operation in (lock.get, lambda: lock.create(holder("a"))):
        with pytest.raises(ElectionError, match=re.escape(f"{path} is not a directory")):
            await operation()
    if kind != "fifo":
        assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["leader.json"]


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
        with pytest.raises(ElectionError, match=r"create the lock directory.*Permission denied"):
            await lock.create(holder("a"))
    finally:
        directory.chmod(0o700)
    # A lock directory that exists but may not be written.
    lock = FileLock(directory / "leader.json", identity="a")
    await lock.create(holder("a"))
    (directory / "leader.json").chmod(0o500)
    try:
        assert await lock.get() is not None
        with pytest.raises(ElectionError, match=r"creating \.tmp\..*Permission denied"):
            await lock.update(holder("a"))
    finally:
        (directory / "leader.json").chmod(0o700)


# -- the compare-and-swap, raced at each step of a write --------------------------------------


def at_step(lock: FileLock, step: str, action: Callable[[], object]) -> None:
    """Run ``action`` once, inside ``lock``'s next write, at ``step`` ("written": the new version
    is in a temporary file; "linked": it is visible, not yet verified), as a racing writer."""

    def hook(current: str) -> None:
        if current == step:
            lock._test_hook = None
            action()

    lock._test_hook = hook


async def test_a_write_that_loses_the_race_for_the_next_version_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    a = FileLock(path, identity="a")
    await a.create(holder("a"))
    at_step(a, "written", lambda: put_version(path, 2, document(2, "b", 1)))
    with pytest.raises(LockConflict, match="version 1 is stale, 2 was written by somebody else"):
        await a.update(holder("a"))
    assert stored(path)["spec"]["holderIdentity"] == "b"
    assert versions(path) == [1, 2]
    assert temp_files(path) == []
    b = FileLock(path, identity="b")
    at_step(b, "written", lambda: put_version(path, 1, document(1, "c")))
    shutil.rmtree(path)
    with pytest.raises(LockConflict, match="already exists"):
        await b.create(holder("b"))  # raced by another create: version 1 was taken
    assert stored(path)["spec"]["holderIdentity"] == "c"


async def test_a_write_superseded_right_after_its_link_is_withdrawn(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    a = FileLock(path, identity="a")
    await a.create(holder("a"))
    # Something higher than our new version appears before we verified it: we cannot tell
    # whether it was based on ours, so the write does not count, and our file goes.
    at_step(a, "linked", lambda: put_version(path, 3, document(3, "b", 1)))
    with pytest.raises(LockConflict, match="version 2 was superseded by 3"):
        await a.update(holder("a"))
    assert versions(path) == [1, 3]
    assert stored(path)["spec"]["holderIdentity"] == "b"
    assert temp_files(path) == []


async def test_a_stale_writer_that_recreates_a_collected_version_loses(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    a = FileLock(path, identity="a")
    await a.create(holder("a"))

    def others_write_and_collect() -> None:
        # While a is between its checks and its link: six more versions by b, and b's
        # collection of the old ones, version 2 included. a's link of version 2 then succeeds.
        for version in range(2, 8):
            put_version(path, version, document(version, "b", 1))
        for version in range(1, 8 - KEEP_VERSIONS):
            (path / version_name(version)).unlink()

    at_step(a, "written", others_write_and_collect)
    with pytest.raises(LockConflict, match="version 2 was superseded by 7"):
        await a.update(holder("a"))
    assert versions(path) == list(range(8 - KEEP_VERSIONS, 8))  # a's version 2 is gone again
    assert stored(path)["spec"]["holderIdentity"] == "b"


async def test_a_write_whose_base_was_deleted_is_withdrawn(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    a = FileLock(path, identity="a")
    await a.create(holder("a"))
    at_step(a, "linked", lambda: (path / version_name(1)).unlink())  # the lock is deleted
    with pytest.raises(LockConflict, match="version 1 was deleted during the write"):
        await a.update(holder("a"))
    assert versions(path) == []  # not left as a record nobody holds a term for
    assert await a.get() is None


async def test_a_stale_handle_cannot_write_into_a_recreated_lock(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    a = FileLock(path, identity="a")
    b = FileLock(path, identity="b")
    await a.create(holder("a"))
    await a.update(holder("a"))
    # Deleted and recreated by b: version 1 exists again, in another directory.
    shutil.rmtree(path)
    await b.create(holder("b"))
    with pytest.raises(LockConflict, match="was deleted"):
        await a.update(holder("a"))
    # Only the files deleted, the directory kept: version 1 is another file now.
    c = FileLock(path, identity="c")
    assert await c.get() is not None
    for name in os.listdir(path):
        (path / name).unlink()
    # (Another record: the same bytes in a reused inode would be the very state c read.)
    await b.create(holder("b", 5))
    with pytest.raises(LockConflict, match="version 1 was rewritten"):
        await c.update(holder("c"))
    assert stored(path)["spec"]["holderIdentity"] == "b"
    assert versions(path) == [1]


async def test_old_versions_are_collected_keeping_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    lock = FileLock(path, identity="a")
    await lock.create(holder("a"))
    for _ in range(9):
        await lock.update(holder("a"))
    assert versions(path) == list(range(11 - KEEP_VERSIONS, 11))
    assert temp_files(path) == []


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

    def start(self, identity: str, backend: str, **env: str) -> Candidate:
        stderr = (self.logs / f"{identity}-{len(self.candidates)}.stderr").open("w")
        proc = subprocess.Popen(
            [sys.executable, str(CANDIDATE), str(self.path), identity, backend],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**self.env, **env},
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


def process_state(pid: int) -> str:
    """The state letter of a process in /proc (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_state(pid: int, state: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while process_state(pid) != state:
        assert time.monotonic() < deadline, f"process {pid} never reached state {state}"
        time.sleep(0.01)


def read_lock(path: Path) -> LeaderElectionRecord:
    async def get() -> LeaderElectionRecord:
        observed = await FileLock(path, identity="reader").get()
        assert observed is not None
        return observed.record

    return anyio.run(get)


def leader_then_follower(cluster: Cluster, freeze: str) -> Candidate:
    """Start ``a`` (armed with ``freeze``) and let it lead, then ``b``, following it."""
    a = cluster.start("a", "asyncio", FILELOCK_FREEZE=freeze)
    cluster.wait_for("READY", "a")
    assert cluster.wait_for("LEADING", "a")[1] == "0"
    cluster.start("b", "trio")
    assert cluster.wait_for("LEADER", "b") == ["b", "a"]
    time.sleep(0.3)  # a few renewals seen by b
    return a


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
@pytest.mark.parametrize("step", ["written", "linked"])
def test_a_leader_frozen_inside_its_write_stalls_nobody(tmp_path: Path, step: str) -> None:
    """SIGSTOP inside a renewal's write: with the new version not yet linked, or linked and not
    yet verified. Nothing is held, so the follower takes over once the lease expires while the
    old leader is still stopped; resumed, the old leader's write fails and it does no work."""
    ld, rp = 2.0, 0.25
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster(tmp_path / "leader.json", logs)
    try:
        a = leader_then_follower(cluster, f"{step}:STOP")
        mark = cluster.mark()
        a.proc.send_signal(signal.SIGUSR1)
        frozen_at = float(cluster.wait_for("FREEZE", "a", since=mark)[2])
        wait_state(a.proc.pid, "T")
        took_over = float(cluster.wait_for("LEADING", "b", since=mark)[2])
        assert process_state(a.proc.pid) == "T"  # b did not wait for the frozen writer
        print(f"takeover from a leader frozen at {step!r}: {took_over - frozen_at:.3f}s")
        # LD after b saw a's last renewal: the one frozen in its write (if linked) or the one
        # before it (at most RP earlier); b sees it within its poll period.
        assert ld - rp - 0.1 <= took_over - frozen_at <= ld + 2.2 * rp + 0.75
        assert read_lock(cluster.path).holder_identity == "b"

        mark = cluster.mark()
        a.proc.send_signal(signal.SIGCONT)
        assert cluster.wait_for("STOPPED", "a", since=mark)[1] == "0"
        assert cluster.wait_for("LEADER", "a", since=mark) == ["a", "b"]
        time.sleep(4 * rp)  # a follows now: it must neither work nor take the lock back
        cluster.drain()
    finally:
        cluster.close()

    work = [(f[0], float(f[2])) for kind, f in cluster.history if kind == "WORK"]
    a_work = [t for who, t in work if who == "a"]
    b_work = [t for who, t in work if who == "b"]
    assert a_work
    assert b_work
    assert max(a_work) < frozen_at  # nothing after the freeze, nothing after resuming
    assert min(b_work) >= took_over
    assert [f[:2] for kind, f in cluster.history if kind == "LEADING"] == [["a", "0"], ["b", "1"]]
    assert read_lock(cluster.path).holder_identity == "b"


@pytest.mark.parametrize("step", ["written", "linked"])
def test_a_leader_killed_inside_its_write_leaves_a_readable_lock(tmp_path: Path, step: str) -> None:
    """SIGKILL inside a renewal's write leaves the last record (or the new one) readable, at
    most a temporary file beside it; the follower takes over once the lease expires."""
    ld, rp = 2.0, 0.25
    logs = tmp_path / "logs"
    logs.mkdir()
    path = tmp_path / "leader.json"
    cluster = Cluster(path, logs)
    try:
        a = leader_then_follower(cluster, f"{step}:KILL")
        mark = cluster.mark()
        a.proc.send_signal(signal.SIGUSR1)
        killed_at = float(cluster.wait_for("FREEZE", "a", since=mark)[2])
        assert a.proc.wait(timeout=5) == -signal.SIGKILL
        left = read_lock(path)
        assert left.holder_identity == "a"
        # Killed before its link, the write left its temporary file; after it, nothing.
        assert len(temp_files(path)) == (1 if step == "written" else 0)
        took_over = float(cluster.wait_for("LEADING", "b", since=mark)[2])
        print(f"takeover from a leader killed at {step!r}: {took_over - killed_at:.3f}s")
        assert ld - rp - 0.1 <= took_over - killed_at <= ld + 2.2 * rp + 0.75
        time.sleep(2 * rp)
    finally:
        cluster.close()
    record = read_lock(path)
    assert (record.holder_identity, record.leader_transitions) == ("b", 1)
    top = versions(path)
    assert top == list(range(top[0], top[-1] + 1))
    assert len(temp_files(path)) == (1 if step == "written" else 0)  # fresh: not collected yet
