"""An in-process lock with the compare-and-swap semantics of a Kubernetes Lease."""

from __future__ import annotations

import json
from dataclasses import dataclass

import anyio.lowlevel

from .._exceptions import LockConflict, LockError
from .._lock import Lock, Observed
from .._record import LeaderElectionRecord, record_from_lease_spec, record_to_lease_spec

__all__ = ["MemoryLock"]


@dataclass
class _Slot:
    """The shared state behind sibling :class:`MemoryLock` instances."""

    raw: bytes | None = None
    version: int = 0
    writes: int = 0


class MemoryLock(Lock):
    """A lock held in memory, shared by the candidates of one process.

    It stores the record exactly as a Lease ``spec`` (so the wire format is exercised too) and
    enforces compare-and-swap on a version counter. Every operation is a checkpoint and never
    blocks, so tests on fake clocks stay exact. Candidates get their own instance through
    :meth:`sibling`::

        a = MemoryLock("a")
        b = a.sibling("b")      # same lock, another candidate
    """

    def __init__(self, identity: str, *, name: str = "memory-lock") -> None:
        if not isinstance(identity, str) or not identity:
            raise ValueError("identity must be a non-empty string")
        self._identity = identity
        self._name = name
        self._slot = _Slot()
        self._cached: int | None = None

    def sibling(self, identity: str) -> MemoryLock:
        """Another candidate's handle on the same lock."""
        other = MemoryLock(identity, name=self._name)
        other._slot = self._slot
        return other

    @property
    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        return f"memory/{self._name}"

    @property
    def writes(self) -> int:
        """Successful creates and updates so far, by all siblings."""
        return self._slot.writes

    def peek(self) -> LeaderElectionRecord | None:
        """The current record, without a checkpoint (for assertions in tests)."""
        raw = self._slot.raw
        return None if raw is None else record_from_lease_spec(json.loads(raw))

    def _observed(self) -> Observed:
        assert self._slot.raw is not None
        self._cached = self._slot.version
        return Observed(
            record=record_from_lease_spec(json.loads(self._slot.raw)),
            raw=self._slot.raw,
            version=str(self._slot.version),
        )

    def _write(self, record: LeaderElectionRecord) -> None:
        self._slot.raw = json.dumps(record_to_lease_spec(record), sort_keys=True).encode()
        self._slot.version += 1
        self._slot.writes += 1

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

    # FaultyLock uses these to make a "reply lost" write leave the cache stale, as a real client's
    # would be: the write landed, but the caller never saw the new version.
    def _cache_state(self) -> object:
        return self._cached

    def _restore_cache_state(self, state: object) -> None:
        assert state is None or isinstance(state, int)
        self._cached = state

    def delete(self) -> None:
        """Remove the lock object (tests: a lock deleted under a running election)."""
        self._slot.raw = None
        self._slot.version += 1
