"""An in-process lock with the compare-and-swap semantics of a Kubernetes Lease."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.lowlevel

from .._exceptions import LockConflict, LockError
from .._lock import Lock, Observed, WatchCursor, cursor_states
from .._record import (
    UNPARSEABLE_HOLDER,
    LeaderElectionRecord,
    record_from_lease_spec,
    record_to_lease_spec,
)

__all__ = ["MemoryLock"]


# Changes a watcher may fall behind by before it is resynchronised to the latest state (as a
# Kubernetes watch is re-listed after 410 Expired).
_WATCH_BACKLOG: Final = 1000


class _Watcher:
    """One watch's queue of changes, fed synchronously by every write."""

    def __init__(self) -> None:
        self.pending: deque[tuple[bytes | None, int]] = deque()
        self.wakeup: anyio.Event | None = None

    def offer(self, raw: bytes | None, version: int) -> None:
        if len(self.pending) >= _WATCH_BACKLOG:
            self.pending.clear()  # too far behind: only the latest state matters
        self.pending.append((raw, version))
        if self.wakeup is not None:
            self.wakeup.set()

    async def next(self) -> tuple[bytes | None, int]:
        while not self.pending:
            # anyio Events cannot be cleared: a fresh one per wait. No checkpoint between the
            # check and the wait, so no write can slip in unnoticed.
            self.wakeup = anyio.Event()
            await self.wakeup.wait()
        return self.pending.popleft()


@dataclass
class _Slot:
    """The shared state behind sibling [`MemoryLock`][MemoryLock] instances."""

    raw: bytes | None = None
    version: int = 0
    writes: int = 0
    watchers: set[_Watcher] = field(default_factory=set)

    def changed(self) -> None:
        for watcher in self.watchers:
            watcher.offer(self.raw, self.version)


class MemoryLock(Lock):
    """A lock held in memory, shared by the candidates of one process.

    It stores the record exactly as a Lease ``spec`` (so the wire format is exercised too) and
    enforces compare-and-swap on a version counter. Every operation is a checkpoint and never
    blocks, so tests on fake clocks stay exact. Candidates get their own instance through
    [`sibling()`][sibling]::

        a = MemoryLock("a")
        b = a.sibling("b")      # same lock, another candidate
    """

    def __init__(self, identity: str, *, name: str = "memory-lock") -> None:
        if not isinstance(identity, str) or not identity:
            raise ValueError("identity must be a non-empty string")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self._identity = identity
        self._name = name
        self._slot = _Slot()
        # The locks this one can see by name (named(), list_siblings()): a new lock starts a
        # namespace of its own; sibling() and named() share it.
        self._namespace: dict[str, _Slot] = {name: self._slot}
        self._cached: int | None = None

    def sibling(self, identity: str) -> MemoryLock:
        """Another candidate's handle on the same lock."""
        other = MemoryLock(identity, name=self._name)
        other._slot = self._slot
        other._namespace = self._namespace
        return other

    def named(self, name: str) -> MemoryLock:
        """This candidate's handle on the lock called ``name`` in the same namespace (created
        empty on first use). Sibling candidates reach the same lock by the same name, which makes
        ``named`` a ``make_lock`` for [`elect_shards()`][aioleader.elect_shards]::

            base = MemoryLock("replica-a")
            make_lock_a = base.named
            make_lock_b = base.sibling("replica-b").named
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        other = MemoryLock(self._identity, name=name)
        other._namespace = self._namespace
        other._slot = self._namespace.setdefault(name, other._slot)
        return other

    @property
    def name(self) -> str:
        return self._name

    @property
    def supports_listing(self) -> bool:
        return True

    async def list_siblings(
        self, prefix: str, *, timeout: float | None = None
    ) -> dict[str, Observed]:
        """The existing locks of this namespace whose name starts with ``prefix``."""
        await anyio.lowlevel.checkpoint()
        return {
            name: _observed(slot.raw, slot.version)
            for name, slot in sorted(self._namespace.items())
            if name.startswith(prefix) and slot.raw is not None
        }

    @property
    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        return f"memory/{self._name}"

    @property
    def writes(self) -> int:
        """Successful creates and updates so far, by all siblings."""
        return self._slot.writes

    def peek_raw(self) -> bytes | None:
        """The stored record's bytes, as ``Observed.raw`` carries them (tests)."""
        return self._slot.raw

    def peek(self) -> LeaderElectionRecord | None:
        """The current record, without a checkpoint (for assertions in tests)."""
        raw = self._slot.raw
        return None if raw is None else _decode(raw)

    def put_raw(self, spec: object) -> bytes:
        """Store ``spec`` (any JSON value) as the record, as written by some other client, and
        notify watchers: a write by nobody's handle, so every cached version is stale after it.

        For tests of records no aioleader candidate writes: a null or non-object spec, a holder
        that is not a string, a 400-digit duration. Returns the stored bytes (``Observed.raw``).
        """
        raw = json.dumps(spec, sort_keys=True).encode("utf-8", "surrogatepass")
        self._slot.raw = raw
        self._slot.version += 1
        self._slot.writes += 1
        self._slot.changed()
        return raw

    def _observed(self) -> Observed:
        assert self._slot.raw is not None
        self._cached = self._slot.version
        return _observed(self._slot.raw, self._slot.version)

    def _write(self, record: LeaderElectionRecord) -> None:
        self._slot.raw = json.dumps(record_to_lease_spec(record), sort_keys=True).encode()
        self._slot.version += 1
        self._slot.writes += 1
        self._slot.changed()

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        await anyio.lowlevel.checkpoint()
        if self._slot.raw is None:
            self._cached = None
            return None
        return self._observed()

    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        await anyio.lowlevel.checkpoint()
        if self._slot.raw is not None:
            raise LockConflict(f"{self.describe()} already exists")
        self._write(record)
        return self._observed()

    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        await anyio.lowlevel.checkpoint()
        if self._cached is None:
            raise LockError(f"{self.describe()}: update before get or create")
        if self._slot.raw is None:
            raise LockConflict(f"{self.describe()} was deleted")
        if self._slot.version != self._cached:
            raise LockConflict(f"{self.describe()} was modified (version {self._cached} is stale)")
        self._write(record)
        return self._observed()

    @property
    def supports_update_from(self) -> bool:
        return True

    async def update_from(
        self, base: Observed, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        await anyio.lowlevel.checkpoint()
        if self._slot.raw is None:
            raise LockConflict(f"{self.describe()} was deleted")
        if str(self._slot.version) != base.version:
            raise LockConflict(f"{self.describe()} was modified (version {base.version} is stale)")
        self._write(record)
        return self._observed()

    # FaultyLock uses these to make a "reply lost" write leave the cache stale, as a real client's
    # would be: the write landed, but the caller never saw the new version.
    def _cache_state(self) -> object:
        return self._cached

    def _restore_cache_state(self, state: object) -> None:
        assert state is None or isinstance(state, int)
        self._cached = state

    def touch(self) -> None:
        """A metadata-only write (tests: a label added by some controller): the version moves, the
        record stays. Watches deliver nothing (the record did not change); reads see the new
        version."""
        if self._slot.raw is None:
            raise LockError(f"{self.describe()}: cannot touch a lock that does not exist")
        self._slot.version += 1
        self._slot.changed()

    def put(self, record: LeaderElectionRecord) -> None:
        """Write ``record`` unconditionally, creating the lock if needed (tests: a peer or a person
        rewriting the lock, e.g. without ``leaseTransitions``)."""
        self._write(record)

    def delete(self) -> None:
        """Remove the lock object (tests: a lock deleted under a running election)."""
        self._slot.raw = None
        self._slot.version += 1
        self._slot.changed()

    # -- watch ---------------------------------------------------------------------------------------

    @property
    def supports_watch_cursor(self) -> bool:
        return True

    def watch(self) -> AsyncGenerator[Observed | None, None]:
        """Yield the lock now and at each change of its record or existence (``None`` while it does
        not exist), as `LeaseLock.watch` does.

        Every write is delivered the moment it lands, in order (a watcher more than 1000 changes
        behind skips to the latest state), so observers on fake clocks see exact times. Rewriting
        identical bytes yields nothing. The watch never touches the version cached for
        `update()`.
        """
        return cursor_states(self.watch_cursor())

    def watch_cursor(self) -> WatchCursor:
        """What `watch()` yields, as a cancel-safe [`WatchCursor`][aioleader.WatchCursor]."""
        return _MemoryCursor(self._slot)


class _MemoryCursor(WatchCursor):
    def __init__(self, slot: _Slot) -> None:
        self._slot = slot
        self._watcher: _Watcher | None = None
        self._raw: bytes | _Unset | None = _UNSET  # what was returned last

    async def next(self) -> Observed | None:
        slot = self._slot
        if self._watcher is None:
            # Subscribed before the first read: nothing written after it can be missed.
            self._watcher = _Watcher()
            slot.watchers.add(self._watcher)
        await anyio.lowlevel.checkpoint()
        if isinstance(self._raw, _Unset):
            self._raw = slot.raw
            self._watcher.pending.clear()  # the state read here already includes them
            return None if self._raw is None else _observed(self._raw, slot.version)
        while True:
            # Cancel-safe: a change is popped and compared with no checkpoint in between.
            raw, version = await self._watcher.next()
            if raw != self._raw:
                self._raw = raw
                return None if raw is None else _observed(raw, version)

    def close(self) -> None:
        if self._watcher is not None:
            self._slot.watchers.discard(self._watcher)


class _Unset:
    """Nothing returned yet."""


_UNSET: Final = _Unset()


def _decode(raw: bytes) -> LeaderElectionRecord:
    try:
        spec = json.loads(raw)
    except (ValueError, RecursionError):  # only put_raw() can store such a spec
        return LeaderElectionRecord(holder_identity=UNPARSEABLE_HOLDER)
    return record_from_lease_spec(spec)


def _observed(raw: bytes, version: int) -> Observed:
    return Observed(record=_decode(raw), raw=raw, version=str(version))
