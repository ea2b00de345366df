"""A lock in a directory of JSON files, for candidates on one host: local development, a single VM.

The lock is a directory (``path``) of numbered versions of the record; the highest one is the
record, each a Lease-shaped document::

    leader/                              the lock (FileLock creates this directory, not its parent)
        00000000000000000006.json        older versions, kept for a while, then collected
        00000000000000000007.json        the record: {"apiVersion": "aioleader/v1",
                                           "kind": "FileLease", "metadata": {"name": "leader",
                                           "resourceVersion": "7"}, "spec": {...}}
        .tmp.3f9a0c1d2e4b                a write in progress (or left by a crash): ignored

Design decisions (the why is in the comments where they are made):

* **No lock is ever held.** The compare-and-swap of version N is the exclusive creation of
  version N + 1: the new record is written to a temporary file in the directory, fsynced, and
  hard-linked (`os.link()`) to the next version's name, which fails with ``EEXIST`` if
  another candidate took it first. A link is atomic and shows a complete, durable file or
  nothing. No candidate ever waits for another, so a candidate stopped (SIGSTOP, a frozen VM
  thread) or killed at any point of a write cannot stall anybody.
* **Verified after the link.** A successful link is only a successful write if no higher
  version exists and the version it was based on is still there (a stale writer may re-create a
  version that was collected, or the lock may have been deleted): otherwise the write reports
  [`LockConflict`][aioleader.LockConflict] and removes its own file. Readers take the highest version,
  so such a file was never the record while a higher one existed.
* **Crash-safe.** A crash at any point leaves the old record or the new one, never a torn one,
  plus perhaps a temporary file (collected once it is a minute old). Readers need no lock.
* **Unreadable content is held by an unknown holder.** See [`FileLock`][FileLock].
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, final

import anyio.lowlevel

from .._exceptions import AioleaderError, ElectionError, LockConflict, LockError
from .._lock import Lock, Observed
from .._record import (
    UNPARSEABLE_HOLDER,
    LeaderElectionRecord,
    record_from_lease_spec,
    record_to_lease_spec,
)

__all__ = ["KEEP_VERSIONS", "MAX_FILE_SIZE", "UNPARSEABLE_HOLDER", "FileLock"]

API_VERSION: Final = "aioleader/v1"
KIND: Final = "FileLease"

#: Files larger than this are not lock records (a record is a few hundred bytes): a version file
#: that large is read (its first bytes only) as unreadable, held by `UNPARSEABLE_HOLDER`.
MAX_FILE_SIZE: Final = 64 * 1024

#: How many of the newest versions a successful write leaves in place; older ones are removed.
#: Any number >= 1 is safe (a write that re-creates a removed version is caught by the check after
#: the link); a few spare versions keep a reader that listed the directory just before a write
#: from having to list it again.
KEEP_VERSIONS: Final = 4

# A temporary file this old (wall clock, seconds) is a crashed write's leftover and is removed by
# the next successful write. Removing one that is still in use costs its writer a transient
# LockError (its link fails), never safety.
_TEMP_MAX_AGE: Final = 60.0

# How often a read lists the directory again when the highest version vanished under it
# (collected by a concurrent write) before it reports a transient LockError.
_READ_ATTEMPTS: Final = 8

_WIDTH: Final = 20  # digits of a version's file name: sorts by name, holds any int64 counter
_VERSION_NAME: Final = re.compile(r"([0-9]{20})\.json")
_TEMP_PREFIX: Final = ".tmp."

# OS errors that retrying cannot fix: the path or its directory is wrong, or we may not use it.
# Everything else (ENOSPC, EIO, EDQUOT, ...) is transient: the elector retries it until the renew
# deadline, which is the safe reading of an error we do not understand.
_FATAL_ERRNOS: Final = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EMLINK,
        errno.EXDEV,
        errno.ENOTSUP,
        errno.EOPNOTSUPP,
        errno.ENOSYS,
    }
)

FileId = tuple[int, int]  # (st_dev, st_ino): which file a name pointed to


def default_identity() -> str:
    """``$POD_NAME`` if set and non-empty, else ``hostname_pid`` (as the Kubernetes locks)."""
    # Kept in step with aioleader.kubernetes._client.default_identity, which this module must not
    # import: that package pulls in kubernetes_asyncio and aiohttp.
    return os.environ.get("POD_NAME", "") or f"{socket.gethostname()}_{os.getpid()}"


def version_name(version: int) -> str:
    """The file name of a version of the record (``00000000000000000007.json``)."""
    return f"{version:0{_WIDTH}d}.json"


def _parse(data: bytes, version: int) -> dict[str, Any] | None:
    """The document in a version file, or ``None`` if ``data`` is not a FileLease record of
    that version. Never raises."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, nesting, huge integers
        return None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        return None
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(doc.get("spec"), dict):
        return None
    # The name is the version; content that disagrees was not written by a FileLock.
    if metadata.get("resourceVersion") != str(version):
        return None
    return doc


@dataclass(frozen=True)
class _Snapshot:
    """One version of the record as read or written: the compare-and-swap operand."""

    version: int
    data: bytes
    file: FileId
    directory: FileId
    doc: dict[str, Any] | None  # None: unreadable content


@final
class FileLock(Lock):
    """A leader election lock in a directory of files, for candidates sharing one host.

    Synopsis::

        lock = FileLock("/run/myapp/leader")        # identity: $POD_NAME or host_pid
        async with elect(lock) as leadership:
            ...

    ``path`` is made absolute (against the current directory) when the lock is built. It names a
    directory that FileLock creates on the first write and that holds the record's versions
    (see `aioleader.locks._file`); its *parent* must exist and be writable: FileLock does not
    create it, because a typo in a path should fail loudly rather than quietly give each process
    its own lock. Never put anything else in that directory, and do not delete it while
    candidates run (a deletion is noticed as one, like a deleted Lease).

    Semantics are those of a Lease: ``get`` returns ``None`` while no version exists; ``create``
    fails with [`LockConflict`][aioleader.LockConflict] if one does (whatever it holds); ``update`` is a
    compare-and-swap against the version this handle last read or wrote and fails with
    [`LockConflict`][aioleader.LockConflict] if anybody wrote since. ``metadata.resourceVersion`` is the
    version's number, incremented by every write.

    **Nothing can stall it.** No candidate holds a lock or waits for another: the swap is the
    exclusive creation of the next version (a hard link), so a candidate stopped (SIGSTOP) or
    killed in the middle of a write leaves at most an unused temporary file, and the others go on
    at once. If it was the leader, it simply stops renewing: the others take over once its lease
    expires, and when it resumes, its write fails with [`LockConflict`][aioleader.LockConflict].

    **Unreadable versions** (empty, not JSON, JSON that is not a FileLease record of that
    version, not a regular file, larger than `MAX_FILE_SIZE` - written by something else,
    or left by a filesystem that lost data in a crash) must neither make two leaders nor jam the
    lock. ``get`` reads one as held by `UNPARSEABLE_HOLDER` with no lease duration, so the
    elector treats it like any other holder whose duration is unknown: it waits its *own* lease
    duration from the moment it first saw that content (a change restarts the wait), then takes
    it over by writing the next version. A readable record whose ``holderIdentity`` is not a
    string is held by `UNPARSEABLE_HOLDER` too, never free; other garbage fields are read
    as absent (see `aioleader._record`).

    **Errors.** A path we may not use (permission denied, read-only filesystem, a missing parent
    directory, a file where the lock's directory should be, a filesystem without hard links)
    raises [`ElectionError`][aioleader.ElectionError] naming the path and the OS error; other OS errors
    (disk full, I/O errors) raise [`LockError`][aioleader.LockError], which the elector retries.

    **Blocking.** File I/O is synchronous, on purpose: a record is a few hundred bytes, nothing
    ever waits for another process, and a thread per request would both cost more than the I/O
    and make fake clocks (looptime, trio's ``MockClock``) jump past requests that are still
    running; ``timeout`` is accepted for the [`Lock`][aioleader.Lock] interface and has nothing
    to bound. The one call that can take long is ``fsync`` on a struggling disk. It stalls the
    event loop, so it cannot extend leadership either: a renewal counts from its send time, and
    leader work on the loop cannot run while it is stalled.

    Works on every anyio backend, on Linux and other POSIX systems with hard links (two
    candidates in one process exclude each other too). Meant for local filesystems: do not share
    a FileLock across hosts over NFS.
    """

    def __init__(self, path: str | os.PathLike[str], identity: str | None = None) -> None:
        if os.name != "posix":  # pragma: no cover - Windows
            raise ValueError("FileLock needs a POSIX filesystem (hard links, dir_fd)")
        if identity is None:
            identity = default_identity()
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"identity must be a non-empty string, got {identity!r}")
        if identity == UNPARSEABLE_HOLDER:
            raise ValueError(f"identity {identity!r} is reserved for unreadable lock records")
        raw_path = os.fspath(path)
        if not isinstance(raw_path, str) or not raw_path:
            raise ValueError(f"path must be a non-empty str or os.PathLike[str], got {path!r}")
        self._path = os.path.abspath(raw_path)
        self._parent = os.path.dirname(self._path)
        self._identity = identity
        # The version this handle last read or wrote: the compare-and-swap operand, and (its
        # document) the base of the next write, so that fields we do not model survive.
        self._cached: _Snapshot | None = None
        # Private test hook (tests/_file_lock_candidate.py, tests/test_file_lock.py): called with
        # the name of each step of a write - "written" (the new version is complete and fsynced
        # in a temporary file, not yet linked) and "linked" (it is visible, not yet verified) -
        # so that tests can stop, kill or race a writer exactly there.
        self._test_hook: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, identity={self._identity!r})"

    @property
    def path(self) -> str:
        """The absolute path of the lock's directory."""
        return self._path

    @property
    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        return f"file:{self._path}"

    # -- Lock ------------------------------------------------------------------------------------

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read the highest version; ``None`` if there is none. Caches it for `update()`."""
        await anyio.lowlevel.checkpoint()
        with self._directory(create=False) as directory:
            snapshot = None if directory is None else self._snapshot(directory)
        self._cached = snapshot
        return None if snapshot is None else _observed(snapshot)

    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Write ``record`` as version 1; [`LockConflict`][aioleader.LockConflict] if any version exists."""
        await anyio.lowlevel.checkpoint()
        with self._directory(create=True) as directory:
            assert directory is not None
            if self._versions(directory):
                raise LockConflict(f"{self.describe()} already exists")
            return self._write(directory, self._new_document(), record, 1, base=None)

    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Write ``record`` as the next version if the version this handle last read or wrote is
        still the highest.

        Raises [`LockConflict`][aioleader.LockConflict] if anybody wrote since or the lock was deleted,
        and [`LockError`][aioleader.LockError] if nothing is cached yet.
        """
        await anyio.lowlevel.checkpoint()
        base = self._cached
        if base is None:
            raise LockError(f"{self.describe()}: update before get or create")
        with self._directory(create=False) as directory:
            if directory is None or _file_id(os.fstat(directory)) != base.directory:
                raise LockConflict(f"{self.describe()} was deleted")
            self._check_base(directory, base)
            doc = base.doc if base.doc is not None else self._new_document()
            return self._write(directory, doc, record, base.version + 1, base=base)

    @property
    def supports_listing(self) -> bool:
        return True

    async def list_siblings(
        self, prefix: str, *, timeout: float | None = None
    ) -> dict[str, Observed]:
        """The locks in this lock's parent directory whose name starts with ``prefix`` and that
        hold a version: name -> record (read as [`get()`][get] reads it, this handle's cache left
        alone). Entries that are not directories are skipped."""
        await anyio.lowlevel.checkpoint()
        try:
            with os.scandir(self._parent) as entries:
                names = sorted(
                    e.name
                    for e in entries
                    if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)
                )
        except OSError as exc:
            raise self._fatal(exc, f"list {self._parent}") from exc
        found: dict[str, Observed] = {}
        for name in names:
            try:
                observed = await FileLock(os.path.join(self._parent, name), self._identity).get()
            except ElectionError:
                continue  # removed while listing, or not a lock we may read: not a member
            if observed is not None:
                found[name] = observed
        return found

    # -- reading ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _directory(self, *, create: bool) -> Iterator[int | None]:
        """The lock directory's descriptor (``None`` if it does not exist), closed on exit.

        Every name is then resolved against that descriptor, so a directory deleted or replaced
        during an operation cannot mix two directories' versions in one decision."""
        if create:
            try:
                # 0o777 & ~umask: candidates of other users in the same group can share it.
                os.mkdir(self._path, 0o777)
            except FileExistsError:
                pass
            except OSError as exc:
                raise self._fatal(exc, "create the lock directory") from exc
        fd = self._open_directory()
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _open_directory(self) -> int | None:
        try:
            return os.open(self._path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            if not os.path.isdir(self._parent):
                raise self._fatal(exc, "read the lock") from exc
            return None
        except NotADirectoryError as exc:
            if os.path.isdir(self._parent):
                raise ElectionError(
                    f"{self.describe()}: {self._path} is not a directory. FileLock keeps its "
                    "record as numbered versions in a directory at this path; whatever is there "
                    "(an older aioleader's lock file, somebody's data) is never touched: remove "
                    "it or choose another path"
                ) from exc
            raise self._fatal(exc, "read the lock") from exc
        except OSError as exc:
            raise self._fatal(exc, "read the lock") from exc

    def _versions(self, directory: int) -> list[int]:
        """The versions in the directory, ascending."""
        try:
            names = os.listdir(directory)
        except OSError as exc:
            raise self._fatal(exc, "list the lock directory") from exc
        return sorted(int(m.group(1)) for m in map(_VERSION_NAME.fullmatch, names) if m)

    def _snapshot(self, directory: int) -> _Snapshot | None:
        """The highest version, or ``None`` if there is none."""
        directory_id = _file_id(os.fstat(directory))
        for _ in range(_READ_ATTEMPTS):
            versions = self._versions(directory)
            if not versions:
                return None
            content = self._read_version(directory, versions[-1])
            if content is not None:
                data, file = content
                doc = _parse(data, versions[-1])
                return _Snapshot(versions[-1], data, file, directory_id, doc)
            # Collected (or deleted) between the listing and the open: list again.
        raise LockError(
            f"{self.describe()}: the newest version vanished {_READ_ATTEMPTS} times while "
            "being read"
        )

    def _read_version(self, directory: int, version: int) -> tuple[bytes, FileId] | None:
        """A version file's bytes (at most `MAX_FILE_SIZE` + 1 of them) and identity, or
        ``None`` if it does not exist (any more). What is not a readable regular file is
        returned as a marker that `_parse()` cannot read."""
        name = version_name(version)
        try:
            info = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fatal(exc, f"read {name}") from exc
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_SIZE:
            # Never a record: unreadable, and waited out like any unreadable content.
            marker = f"<{name}: mode {info.st_mode:o}, {info.st_size} bytes>"
            return marker.encode(), _file_id(info)
        try:
            # O_NOFOLLOW and O_NONBLOCK: a symlink or FIFO swapped in after the stat must neither
            # be followed nor hang the event loop.
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=directory)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"<{name}: a symlink>".encode(), _file_id(info)
            raise self._fatal(exc, f"read {name}") from exc
        try:
            opened = os.fstat(fd)
            if _file_id(opened) != _file_id(info) or not stat.S_ISREG(opened.st_mode):
                return None  # replaced between stat and open: list again
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE_SIZE:
                chunk = os.read(fd, MAX_FILE_SIZE + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
        except OSError as exc:
            raise self._fatal(exc, f"read {name}") from exc
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_SIZE:
            return f"<{name}: more than {MAX_FILE_SIZE} bytes>".encode(), _file_id(opened)
        return data, _file_id(opened)

    def _check_base(self, directory: int, base: _Snapshot) -> None:
        """Raise [`LockConflict`][LockConflict] unless ``base`` is still the highest version, unchanged.

        An early exit only (a stale handle need not write a temporary file to learn it lost):
        what makes the swap safe is the exclusive link and the check after it."""
        versions = self._versions(directory)
        newest = versions[-1] if versions else None
        if newest is not None and newest > base.version:
            raise LockConflict(
                f"{self.describe()} was modified (version {base.version} is stale, now {newest})"
            )
        # The same file with the same bytes: a foreign writer may rewrite a version in place.
        current = self._read_version(directory, base.version)
        if current is None:
            raise LockConflict(f"{self.describe()} was deleted (version {base.version} is gone)")
        if current != (base.data, base.file):
            raise LockConflict(
                f"{self.describe()} was modified (version {base.version} was rewritten)"
            )

    def _file_of(self, directory: int, version: int) -> FileId | None:
        try:
            return _file_id(os.stat(version_name(version), dir_fd=directory, follow_symlinks=False))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fatal(exc, f"read {version_name(version)}") from exc

    # -- writing ---------------------------------------------------------------------------------

    def _new_document(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": _name(self._path)}}

    def _write(
        self,
        directory: int,
        base_doc: dict[str, Any],
        record: LeaderElectionRecord,
        version: int,
        *,
        base: _Snapshot | None,
    ) -> Observed:
        """Create ``version`` holding ``record``: temp file, fsync, exclusive link, verification.

        ``base`` is the version the write is based on (``None`` for a create).
        """
        if version >= 10**_WIDTH:
            raise ElectionError(f"{self.describe()}: the version counter is exhausted")
        metadata = dict(base_doc.get("metadata") or {})
        metadata["resourceVersion"] = str(version)
        doc = {**base_doc, "metadata": metadata, "spec": record_to_lease_spec(record)}
        data = (json.dumps(doc, indent=2) + "\n").encode()
        name = version_name(version)
        temp, mine = self._write_temp(directory, data)
        try:
            self._hook("written")
            try:
                os.link(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
            except FileExistsError:
                if base is None:
                    raise LockConflict(f"{self.describe()} already exists") from None
                raise LockConflict(
                    f"{self.describe()} was modified (version {base.version} is stale, "
                    f"{version} was written by somebody else)"
                ) from None
            except FileNotFoundError as exc:
                if self._replaced(directory):
                    raise LockConflict(f"{self.describe()} was deleted") from exc
                # Our temporary file was removed (a cleanup job, or another candidate that
                # took it for a crashed write's leftover): transient.
                raise LockError(f"{self.describe()}: cannot write {name}: {exc}") from exc
            except OSError as exc:
                hint = " (FileLock needs a filesystem with hard links)" if _no_links(exc) else ""
                raise self._fatal(exc, f"write {name}{hint}") from exc
        finally:
            with contextlib.suppress(OSError):  # the version keeps the inode; a leftover is
                os.unlink(temp, dir_fd=directory)  # collected later anyway
        self._hook("linked")
        versions = self._verify(directory, version, mine, base)
        snapshot = _Snapshot(version, data, mine, _file_id(os.fstat(directory)), doc)
        # The link is visible from here on: cache it even if the directory fsync fails, as a
        # reply that got lost (the elector then finds its own write on the slow path).
        self._cached = snapshot
        self._fsync(directory)
        self._collect(directory, version, versions)
        return _observed(snapshot)

    def _write_temp(self, directory: int, data: bytes) -> tuple[str, FileId]:
        """A new temporary file in the directory holding ``data``, fsynced: its name and id."""
        temp = f"{_TEMP_PREFIX}{secrets.token_hex(6)}"
        try:
            # 0o666 & ~umask, like any new file: 0o600 would lock out candidates that run as
            # other users in the same group.
            fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=directory
            )
        except OSError as exc:
            raise self._fatal(exc, f"write the lock (creating {temp})") from exc
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                # Durable before its name can appear: a crash never exposes a torn version.
                os.fsync(fd)
                file = _file_id(os.fstat(fd))
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=directory)
            raise self._fatal(exc, "write the lock") from exc
        return temp, file

    def _verify(
        self, directory: int, version: int, mine: FileId, base: _Snapshot | None
    ) -> list[int]:
        """After the link: the write counts only if ``version`` is still ours, nothing higher
        exists and the base is still in place. Otherwise remove our file and raise
        [`LockConflict`][LockConflict]. Returns the listing it checked."""
        versions = self._versions(directory)
        ours = self._file_of(directory, version) == mine
        problem = None
        if not ours:
            problem = f"version {version} vanished right after it was written"
        elif versions and versions[-1] > version:
            problem = f"version {version} was superseded by {versions[-1]} (a stale write)"
        elif base is None and versions != [version]:
            problem = "other versions appeared (a concurrent create)"
        elif base is not None and self._file_of(directory, base.version) != base.file:
            problem = f"version {base.version} was deleted during the write"
        if problem is None:
            return versions
        # Remove our version if it is still ours: it may be the highest where the lock was
        # deleted, and must not then read as a record nobody holds a term for.
        if ours:
            with contextlib.suppress(OSError):
                os.unlink(version_name(version), dir_fd=directory)
        raise LockConflict(f"{self.describe()}: {problem}")

    def _replaced(self, directory: int) -> bool:
        """Whether the path no longer names the directory we hold open (deleted or replaced)."""
        try:
            current = _file_id(os.stat(self._path))
        except OSError:
            return True
        return current != _file_id(os.fstat(directory))

    def _fsync(self, directory: int) -> None:
        try:
            os.fsync(directory)
        except OSError as exc:
            # Some filesystems cannot fsync a directory; the link is as durable as they allow.
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise self._fatal(exc, f"fsync the directory {self._path}") from exc

    def _collect(self, directory: int, version: int, versions: list[int]) -> None:
        """Best effort: remove versions older than the newest [`KEEP_VERSIONS`][KEEP_VERSIONS] and stale
        temporary files. Never fails a write that succeeded."""
        for old in versions:
            if old <= version - KEEP_VERSIONS:
                with contextlib.suppress(OSError):
                    os.unlink(version_name(old), dir_fd=directory)
        try:
            names = [n for n in os.listdir(directory) if n.startswith(_TEMP_PREFIX)]
        except OSError:
            return
        cutoff = time.time() - _TEMP_MAX_AGE
        for name in names:
            with contextlib.suppress(OSError):
                if os.stat(name, dir_fd=directory, follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(name, dir_fd=directory)

    def _hook(self, step: str) -> None:
        if self._test_hook is not None:
            self._test_hook(step)

    def _fatal(self, exc: OSError, action: str) -> AioleaderError:
        """Translate an OS error at the boundary: fatal for a path we cannot use, else transient."""
        detail = f"{self.describe()}: cannot {action}: {exc}"
        if exc.errno == errno.ENOENT:
            # A missing parent directory is a configuration error; a file that vanished in
            # between (say, our temp file removed by a cleanup job) is not.
            if os.path.isdir(self._parent):
                return LockError(detail)
            detail += f" (the directory {self._parent} does not exist; FileLock does not create it)"
        if exc.errno in _FATAL_ERRNOS:
            return ElectionError(detail)
        return LockError(detail)


def _observed(snapshot: _Snapshot) -> Observed:
    """What the elector sees of a version: the record, the file's exact bytes, its number."""
    if snapshot.doc is None:
        record = LeaderElectionRecord(holder_identity=UNPARSEABLE_HOLDER)
    else:
        record = record_from_lease_spec(snapshot.doc["spec"])
    return Observed(record=record, raw=snapshot.data, version=str(snapshot.version))


def _file_id(info: os.stat_result) -> FileId:
    return (info.st_dev, info.st_ino)


def _name(path: str) -> str:
    return os.path.basename(path) or path


def _no_links(exc: OSError) -> bool:
    return exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)
