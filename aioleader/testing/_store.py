"""Objects, the global revision, watch history and watchers: the emulator's etcd.

Everything here is synchronous: a write is one atomic step of the event loop, and watchers are
fed in the same step, so no interleaving can reorder events. Stored objects are never mutated
after they are stored; a write stores a new dict. That lets history, watchers and responses
share them without copying.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._resources import RESOURCES, ResourceType
from ._selectors import Predicate
from ._status import ApiError

__all__ = ["Change", "Store", "Watcher"]

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Change:
    """One committed write, as the watch history keeps it."""

    revision: int
    type: str  # ADDED, MODIFIED or DELETED
    object: Mapping[str, Any]
    previous: Mapping[str, Any] | None


@dataclass
class _Collection:
    """One resource type: its objects and the window of recent changes."""

    objects: dict[Key, Mapping[str, Any]] = field(default_factory=dict)
    history: deque[Change] = field(default_factory=deque)
    # A watch may resume from any revision >= compacted: every later change is still kept.
    compacted: int = 0


class Watcher:
    """A watch's queue of pending events.

    The store appends to [`pending`][pending] and sets [`wakeup`][wakeup]; the HTTP side drains it. The
    selector is applied per watcher: an object that starts or stops matching is reported as
    ADDED or DELETED, as the apiserver's watch cache does.
    """

    def __init__(
        self, rt: ResourceType, predicate: Predicate, wakeup: asyncio.Event | None = None
    ) -> None:
        self.rt = rt
        self.predicate = predicate
        self.pending: deque[tuple[str, Mapping[str, Any]]] = deque()
        # Several watchers may share one event (the election controller follows two types).
        self.wakeup = wakeup if wakeup is not None else asyncio.Event()

    def offer(self, change: Change) -> None:
        matched = change.previous is not None and self.predicate(change.previous)
        matches = change.type != "DELETED" and self.predicate(change.object)
        if matches:
            self.pending.append(("MODIFIED" if matched else "ADDED", change.object))
        elif matched and change.type == "DELETED":
            self.pending.append(("DELETED", change.object))
        elif matched:
            # Stopped matching: the last state it matched in, at the revision that changed it.
            assert change.previous is not None
            meta = {**change.previous["metadata"], "resourceVersion": str(change.revision)}
            self.pending.append(("DELETED", {**change.previous, "metadata": meta}))
        else:
            return
        self.wakeup.set()


class Store:
    """All objects of all served types, under one revision counter (an etcd revision)."""

    def __init__(self, history_size: int) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.history_size = history_size
        self.revision = 0
        self._collections = {rt: _Collection() for rt in RESOURCES}
        self._watchers: set[Watcher] = set()

    # -- reads ------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._collections[rt].objects.get((namespace, name))

    def list(self, rt: ResourceType, predicate: Predicate) -> list[Mapping[str, Any]]:
        """Matching objects in key order (namespace, then name), as etcd returns them."""
        objects = self._collections[rt].objects
        return [objects[key] for key in sorted(objects) if predicate(objects[key])]

    def count(self) -> int:
        return sum(len(c.objects) for c in self._collections.values())

    @property
    def watchers(self) -> frozenset[Watcher]:
        return frozenset(self._watchers)

    # -- writes -----------------------------------------------------------------------------

    def put(self, rt: ResourceType, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """Store ``obj`` (its metadata already final but for the resourceVersion) and notify."""
        self.revision += 1
        meta = dict(obj.get("metadata") or {})
        meta["resourceVersion"] = str(self.revision)
        stored = {**obj, "metadata": meta}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        collection = self._collections[rt]
        previous = collection.objects.get(key)
        collection.objects[key] = stored
        self._record(
            rt, Change(self.revision, "MODIFIED" if previous else "ADDED", stored, previous)
        )
        return stored

    def delete(self, rt: ResourceType, namespace: str, name: str) -> Mapping[str, Any]:
        """Remove an object; returns its last state stamped with the deletion's revision."""
        collection = self._collections[rt]
        previous = collection.objects.pop((namespace, name))
        self.revision += 1
        gone = {
            **previous,
            "metadata": {**previous["metadata"], "resourceVersion": str(self.revision)},
        }
        self._record(rt, Change(self.revision, "DELETED", gone, previous))
        return gone

    def _record(self, rt: ResourceType, change: Change) -> None:
        collection = self._collections[rt]
        collection.history.append(change)
        while len(collection.history) > self.history_size:
            collection.compacted = collection.history.popleft().revision
        for watcher in self._watchers:
            if watcher.rt is rt:
                watcher.offer(change)

    def compact(self) -> None:
        """Forget all history: only watches from the current revision on can resume."""
        for collection in self._collections.values():
            collection.history.clear()
            collection.compacted = self.revision

    # -- watches ----------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        predicate: Predicate,
        since: int | None,
        wakeup: asyncio.Event | None = None,
    ) -> Watcher:
        """Register a watcher, primed with what it must see first.

        ``since`` None (or 0): a synthetic ADDED for every matching object. Otherwise every kept
        change after ``since``; 410 Expired if the window no longer reaches back that far. The
        caller must [`unwatch()`][unwatch] it.
        """
        collection = self._collections[rt]
        watcher = Watcher(rt, predicate, wakeup)
        if not since:
            for obj in self.list(rt, predicate):
                watcher.pending.append(("ADDED", obj))
            if watcher.pending:
                watcher.wakeup.set()
        elif since < collection.compacted:
            raise ApiError.expired(f"too old resource version: {since} ({collection.compacted})")
        elif since > self.revision:
            raise ApiError.too_large_resource_version(since, self.revision)
        else:
            for change in collection.history:
                if change.revision > since:
                    watcher.offer(change)
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
