"""A lock in a JSON file, for candidates on one host: local development, a single VM.

The file holds the same record as a Kubernetes Lease, in a Lease-shaped document::

    {"apiVersion": "aioleader/v1", "kind": "FileLease",
     "metadata": {"name": "leader.json", "resourceVersion": "7"},
     "spec": {"holderIdentity": "web-1", "leaseDurationSeconds": 15, ...}}

Design decisions (the why is in the comments where they are made):

* **Atomic writes.** A write goes to a temporary file in the same directory, is fsynced, replaces
  the record with :func:`os.replace` (atomic on POSIX), and the directory is fsynced. A crash at
  any point leaves the old record or the new one, never a torn one; readers need no lock.
* **Compare-and-swap under** :func:`fcntl.flock` on a separate lock file (``<path>.lock``) that is
  never replaced. The flock is taken non-blocking and only ever held inside one synchronous
  stretch of code (read, compare, write), never across an ``await``: no other process can make us
  wait in a syscall, and cancellation can never leave it held.
* **Unreadable content is held by an unknown holder.** See :class:`FileLock`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable
from typing import Any, Final, TypeVar

import anyio
import anyio.lowlevel

from .._exceptions import AioleaderError, ElectionError, LockConflict, LockError
from .._lock import Lock, Observed
from .._record import (
    UNPARSEABLE_HOLDER,
    LeaderElectionRecord,
    record_from_lease_spec,
    record_to_lease_spec,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: FileLock refuses to be built there
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEFAULT_TIMEOUT", "MAX_FILE_SIZE", "UNPARSEABLE_HOLDER", "FileLock"]

T = TypeVar("T")

API_VERSION: Final = "aioleader/v1"
KIND: Final = "FileLease"


#: How long a write waits for a busy lock file when called with ``timeout=None``. Never unbounded:
#: a process stopped (SIGSTOP) while holding the flock must not stall anybody forever.
DEFAULT_TIMEOUT: Final = 10.0

#: Files larger than this are not lock records (a record is a few hundred bytes). FileLock refuses
#: them with :class:`~aioleader.ElectionError` rather than overwriting, after a lease duration, what
#: is more likely a misconfigured path to somebody's data than a torn record.
MAX_FILE_SIZE: Final = 64 * 1024

# Retries of a busy flock: a checkpoint first, then 1 ms doubling up to 50 ms. Holders keep it for
# one read, one small write and two fsyncs, so it is normally free again within milliseconds.
_FIRST_BACKOFF: Final = 0.001
_MAX_BACKOFF: Final = 0.05

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
    }
)

_VERSION: Final = re.compile(r"[0-9]{1,18}")


def default_identity() -> str:
    """``$POD_NAME`` if set and non-empty, else ``hostname_pid`` (as the Kubernetes locks)."""
    # Kept in step with aioleader.kubernetes._client.default_identity, which this module must not
    # import: that package pulls in kubernetes_asyncio and aiohttp.
    return os.environ.get("POD_NAME", "") or f"{socket.gethostname()}_{os.getpid()}"


def _parse(data: bytes) -> tuple[dict[str, Any], int] | None:
    """The document and its resourceVersion, or ``None`` if ``data`` is not a FileLease record."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("apiVersion") != API_VERSION:
        return None
    metadata = doc.get("metadata")
    spec = doc.get("spec")
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        return None
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        return None
    return doc, int(version)


class FileLock(Lock):
    """A leader election lock in a file, for candidates that share a filesystem on one host.

    Synopsis::

        lock = FileLock("/run/myapp/leader.json")       # identity: $POD_NAME or host_pid
        async with elect(lock) as leadership:
            ...

    ``path`` is made absolute (against the current directory) when the lock is built. Its directory
    must exist and be writable: FileLock does not create directories, because a typo in a path
    should fail loudly rather than quietly give each process its own lock. Next to the record,
    ``<path>.lock`` is created and kept for the flock (never delete it while candidates run), and
    writes pass through short-lived ``.<name>.<random>.tmp`` files; a crash can leave one behind,
    which is ignored and may be deleted. ``path`` should not be a symlink: writes replace the link
    itself.

    Semantics are those of a Lease: ``get`` returns ``None`` for a missing file; ``create`` fails
    with :class:`~aioleader.LockConflict` if the file exists (whatever it holds); ``update`` is a
    compare-and-swap against what this handle last read or wrote and fails with
    :class:`~aioleader.LockConflict` if anything changed since. ``metadata.resourceVersion`` is
    a counter incremented by every write. The comparison is of the file's whole content (which
    includes the version) rather than the version alone, so it stays exact for unreadable files.

    **Unreadable files** (empty, torn, not JSON, JSON that is not a FileLease record - written by
    something else, or left by a filesystem that lost data in a crash) must neither make two leaders
    nor jam the lock. ``get`` reads one as held by :data:`UNPARSEABLE_HOLDER` with no lease duration,
    so the elector treats it like any other holder whose duration is unknown: it waits its *own*
    lease duration from the moment it first saw that content (a change of content restarts the
    wait), then takes it over. The version of such a file is ``unreadable:sha256:<digest>``, and
    the takeover is a compare-and-swap on that content hash: of several candidates only the first
    succeeds. The counter then restarts above the highest version this handle has seen; since
    the swap compares content, a counter that repeats can never make a stale write succeed. Files
    larger than :data:`MAX_FILE_SIZE` are not taken over: they raise :class:`~aioleader.ElectionError`.

    **Errors.** A path we may not use (permission denied, read-only filesystem, a missing parent
    directory, a directory or a non-regular file where the record or lock file should be) raises
    :class:`~aioleader.ElectionError` naming the path and the OS error; other OS errors (disk full,
    I/O errors) and a lock file busy for longer than the request's ``timeout`` raise
    :class:`~aioleader.LockError`, which the elector retries.

    **Blocking.** File I/O is synchronous, on purpose: a record is a few hundred bytes, the flock is
    never waited for in a syscall, and a thread per request would both cost more than the I/O and
    make fake clocks (looptime, trio's ``MockClock``) jump past requests that are still running. The
    one call that can take long is ``fsync`` on a struggling disk. It stalls the event loop, so it
    cannot extend leadership either: a renewal counts from its send time, and leader work on the
    loop cannot run while it is stalled.

    Works on every anyio backend, on Linux and other POSIX systems (``flock`` excludes between
    open files, so two candidates in one process exclude each other too). Meant for local
    filesystems: do not share a FileLock across hosts over NFS.
    """

    def __init__(self, path: str | os.PathLike[str], identity: str | None = None) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise ValueError("FileLock needs fcntl.flock (POSIX); it is not available here")
        if identity is None:
            identity = default_identity()
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"identity must be a non-empty string, got {identity!r}")
        if identity == UNPARSEABLE_HOLDER:
            raise ValueError(f"identity {identity!r} is reserved for unreadable lock files")
        raw_path = os.fspath(path)
        if not isinstance(raw_path, str) or not raw_path:
            raise ValueError(f"path must be a non-empty str or os.PathLike[str], got {path!r}")
        self._path = os.path.abspath(raw_path)
        self._dir = os.path.dirname(self._path)
        self._lock_path = self._path + ".lock"
        self._identity = identity
        # The file's exact bytes as this handle last read or wrote them: the compare-and-swap
        # operand. (The next write is based on the document read under the flock, which is equal
        # to it when the swap succeeds, so fields we do not model survive.)
        self._cached: bytes | None = None
        self._highest_version = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, identity={self._identity!r})"

    @property
    def path(self) -> str:
        """The absolute path of the record file."""
        return self._path

    @property
    def lock_path(self) -> str:
        """The absolute path of the file that is flocked around every write."""
        return self._lock_path

    @property
    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        return f"file:{self._path}"

    # -- Lock ------------------------------------------------------------------------------------

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read the record; ``None`` if the file does not exist. Caches it for :meth:`update`.

        Takes no lock: writes replace the file atomically, so a read sees one whole version.
        """
        await anyio.lowlevel.checkpoint()
        data = self._read()
        if data is None:
            self._cached = None
            return None
        return self._observe(data)

    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Create the file holding ``record``; :class:`~aioleader.LockConflict` if it exists."""
        await anyio.lowlevel.checkpoint()

        def create() -> Observed:
            if self._read() is not None:
                raise LockConflict(f"{self.describe()} already exists")
            doc = {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": os.path.basename(self._path)},
            }
            return self._write(doc, record, 1)

        return await self._exclusive(create, timeout)

    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Replace the record if the file still holds exactly what this handle last read or wrote.

        Raises :class:`~aioleader.LockConflict` if it changed or was deleted, and
        :class:`~aioleader.LockError` if nothing is cached yet.
        """
        await anyio.lowlevel.checkpoint()
        if self._cached is None:
            raise LockError(f"{self.describe()}: update before get or create")
        expected = self._cached

        def update() -> Observed:
            current = self._read()
            if current is None:
                raise LockConflict(f"{self.describe()} was deleted")
            if current != expected:
                raise LockConflict(
                    f"{self.describe()} was modified (version {_version_of(expected)} is stale, "
                    f"now {_version_of(current)})"
                )
            parsed = _parse(current)
            if parsed is None:
                # Taking over an unreadable file: its counter is lost. Restart above anything this
                # handle has seen; the content comparison above is what makes the swap safe.
                doc: dict[str, Any] = {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": os.path.basename(self._path)},
                }
                version = self._highest_version + 1
            else:
                doc, version = parsed[0], parsed[1] + 1
            return self._write(doc, record, version)

        return await self._exclusive(update, timeout)

    # -- internals -------------------------------------------------------------------------------

    def _fatal(self, exc: OSError, action: str) -> AioleaderError:
        """Translate an OS error at the boundary: fatal for a path we cannot use, else transient."""
        detail = f"{self.describe()}: cannot {action}: {exc}"
        if exc.errno == errno.ENOENT:
            # A missing directory is a configuration error; a file that vanished in between (say,
            # our temp file removed by a cleanup job) is not.
            if os.path.isdir(self._dir):
                return LockError(detail)
            detail += f" (the directory {self._dir} does not exist; FileLock does not create it)"
        if exc.errno in _FATAL_ERRNOS:
            return ElectionError(detail)
        return LockError(detail)

    def _read(self) -> bytes | None:
        """The file's bytes, or ``None`` if it does not exist."""
        try:
            # O_NONBLOCK: opening a FIFO put at our path must not hang the event loop.
            fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            if not os.path.isdir(self._dir):
                raise self._fatal(exc, "read the lock file") from exc
            return None
        except OSError as exc:
            raise self._fatal(exc, "read the lock file") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
                raise ElectionError(f"{self.describe()}: {self._path} is {kind}")
            if info.st_size > MAX_FILE_SIZE:
                raise ElectionError(
                    f"{self.describe()}: {self._path} holds {info.st_size} bytes, more than a lock "
                    f"record ever does ({MAX_FILE_SIZE}); refusing to use it as a lock file"
                )
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE_SIZE:
                chunk = os.read(fd, MAX_FILE_SIZE + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise self._fatal(exc, "read the lock file") from exc
        finally:
            os.close(fd)

    def _observe(self, data: bytes) -> Observed:
        """Cache ``data`` as the compare-and-swap operand and decode it for the elector."""
        self._cached = data
        parsed = _parse(data)
        if parsed is None:
            return Observed(
                record=LeaderElectionRecord(holder_identity=UNPARSEABLE_HOLDER),
                raw=data,
                version=_version_of(data),
            )
        doc, version = parsed
        self._highest_version = max(self._highest_version, version)
        spec = doc["spec"]
        return Observed(
            record=record_from_lease_spec(spec),
            # The record alone (not the version), as MemoryLock and LeaseLock report it.
            raw=json.dumps(spec, sort_keys=True, separators=(",", ":")).encode(),
            version=str(version),
        )

    def _write(self, base: dict[str, Any], record: LeaderElectionRecord, version: int) -> Observed:
        """Atomically replace the file with ``base`` carrying ``record`` as version ``version``.

        Called with the flock held. Temp file, fsync, rename, fsync of the directory: after a crash
        the path holds the old record or the new one, and once this returns the new one is durable.
        """
        metadata = dict(base.get("metadata") or {})
        metadata["resourceVersion"] = str(version)
        doc = {**base, "metadata": metadata, "spec": record_to_lease_spec(record)}
        data = (json.dumps(doc, indent=2) + "\n").encode()
        tmp = os.path.join(self._dir, f".{os.path.basename(self._path)}.{secrets.token_hex(6)}.tmp")
        try:
            # 0o666 & ~umask, like any new file: mkstemp's 0o600 would lock out candidates that
            # run as other users in the same group.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise self._fatal(exc, f"write the lock file (creating {tmp})") from exc
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a leftover temp file is ignored by readers
                os.unlink(tmp)
            raise self._fatal(exc, "write the lock file") from exc
        # The replace is visible from here on: cache it even if the directory fsync fails, as a
        # reply that got lost (the elector then finds its own write on the slow path).
        observed = self._observe(data)
        self._fsync_dir()
        return observed

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._fatal(exc, f"open the directory {self._dir}") from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            # Some filesystems cannot fsync a directory; the rename is as durable as they allow.
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise self._fatal(exc, f"fsync the directory {self._dir}") from exc
        finally:
            os.close(fd)

    def _try_flock(self) -> int | None:
        """The flocked lock file's descriptor, or ``None`` if another open file holds it."""
        assert fcntl is not None
        try:
            # Read-only is enough for flock, and works when another user created the lock file;
            # O_NONBLOCK so that a FIFO in its place cannot hang the event loop.
            flags = os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(self._lock_path, flags, 0o666)
        except OSError as exc:
            raise self._fatal(exc, f"open {self._lock_path}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ElectionError(f"{self.describe()}: {self._lock_path} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            # If somebody deleted the lock file while we waited, we flocked an orphan that nobody
            # else will ever open; count that as busy and open the path again.
            try:
                current = os.stat(self._lock_path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_dev, current.st_ino) != (info.st_dev, info.st_ino):
                os.close(fd)
                return None
        except OSError as exc:
            os.close(fd)
            raise self._fatal(exc, f"flock {self._lock_path}") from exc
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def _exclusive(self, action: Callable[[], T], timeout: float | None) -> T:
        """Run ``action`` (synchronous) holding the flock, retrying a busy lock file until
        ``timeout`` has passed, then :class:`~aioleader.LockError`.

        The flock is taken and released within one synchronous stretch, so it is never held across
        a checkpoint: cancellation cannot leave it held, and other tasks never find it held by us.
        """
        budget = DEFAULT_TIMEOUT if timeout is None else max(0.0, float(timeout))
        deadline = anyio.current_time() + budget
        delay = 0.0
        last = False
        while True:
            fd = self._try_flock()
            if fd is not None:
                try:
                    return action()
                finally:
                    os.close(fd)  # closing the descriptor releases the flock
            remaining = deadline - anyio.current_time()
            if last or remaining <= 0:
                raise LockError(
                    f"{self.describe()}: {self._lock_path} stayed locked by another process "
                    f"for {budget:g}s"
                )
            if delay >= remaining:
                delay, last = remaining, True  # one final attempt exactly at the deadline
            await anyio.sleep(delay)
            delay = min(max(2 * delay, _FIRST_BACKOFF), _MAX_BACKOFF)


def _version_of(data: bytes) -> str:
    """The version a file's content reports: its resourceVersion, or a hash if unreadable."""
    parsed = _parse(data)
    if parsed is not None:
        return str(parsed[1])
    return f"unreadable:sha256:{hashlib.sha256(data).hexdigest()}"
