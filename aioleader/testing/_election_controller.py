"""kube-apiserver's coordinated leader election controller (KEP-4355), over the emulator's store.

kube-apiserver runs it when the ``CoordinatedLeaderElection`` feature gate is on
(``pkg/controlplane/controller/leaderelection``): for every Lease that LeaseCandidates name in
``spec.leaseName``, it decides who should hold it, one *election step* at a time. The decisions
are `aioleader._coordination`'s (shared with ``aioleader coordinate``), with the strategy
kube-apiserver handles, ``OldestEmulationVersion``; every other strategy is left to
third-party controllers (the Lease is created or updated with that ``strategy`` and no holder,
and a held one is not touched).

Candidates are re-examined on every Lease or LeaseCandidate change (except a candidate's pending
ping) and every election window after a step. A separate garbage collector deletes candidates
whose ``renewTime`` is older than 30 min, every 30 min.

[`ElectionController`][ElectionController] feeds `election_step()` and
`expired_candidates()` from the store and writes their outcome
through the registry, so every write has a revision, watch events and validation. Time is the
emulator's [`ServerClock`][ServerClock]: with the clock pinned the controller moves only when the clock
does (or objects change), so tests step through an election with ``emulator.advance()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from .._coordination import (
    CANDIDATE_LIFETIME,
    ELECTION_WINDOW,
    LEASE_DURATION,
    OLDEST_EMULATION_VERSION,
    ElectionStep,
    Object,
    election_step,
    expired_candidates,
)
from .._record import parse_time
from ._decode import format_micro_time
from ._registry import Registry
from ._resources import LEASECANDIDATES, LEASES
from ._server_clock import ServerClock
from ._status import ApiError
from ._store import Store, Watcher

__all__ = [
    "CANDIDATE_LIFETIME",
    "ELECTION_WINDOW",
    "GC_INTERVAL",
    "LEASE_DURATION",
    "OLDEST_EMULATION_VERSION",
    "ElectionController",
    "ElectionStep",
    "election_step",
    "expired_candidates",
]

log = logging.getLogger("aioleader.testing.election")

#: ``LeaseCandidateGCPeriod``: how often the garbage collector looks.
GC_INTERVAL = 30 * 60.0

Key = tuple[str, str]  # (namespace, Lease name)


def _spec(obj: Object) -> Object:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _name(obj: Object) -> str:
    return str(obj["metadata"].get("name") or "")


def _time(spec: Object, key: str) -> datetime | None:
    return parse_time(spec.get(key))


class ElectionController:
    """Runs [`election_step()`][election_step] for every Lease with candidates, and the candidate GC.

    It follows both types like an informer (a store watcher each), keeps a work queue with
    delayed requeues (the earliest wins, as in client-go's delaying queue), and schedules on the
    server clock: while the clock is pinned nothing is due until it is moved (or an object
    changes); while it follows real time, due work runs on time.
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: ServerClock,
        *,
        election_window: float = ELECTION_WINDOW,
        gc_interval: float = GC_INTERVAL,
    ) -> None:
        if election_window <= 0:
            raise ValueError("election_window must be positive")
        if gc_interval <= 0:
            raise ValueError("lease_candidate_gc_interval must be positive")
        self.store = store
        self.registry = registry
        self.clock = clock
        self.election_window = election_window
        self.gc_interval = gc_interval
        self.steps = 0  # election steps run, for assertions and debugging
        self._ready: dict[Key, None] = {}
        self._delayed: dict[Key, datetime] = {}
        self._last_gc: datetime | None = None
        self._last_now: datetime | None = None
        self._wakeup = asyncio.Event()
        self._idle_waiters: list[asyncio.Event] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following the store (call from the event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="aioleader-emulator-election-controller"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Re-evaluate what is due (the server clock moved)."""
        self._wakeup.set()

    async def wait_idle(self) -> None:
        """Return once every change so far and everything due now has been handled.

        Raises what stopped the controller, if it failed.
        """
        task = self._task
        if task is None:
            raise RuntimeError("the election controller is not running")
        idle = asyncio.Event()
        self._idle_waiters.append(idle)
        self.wake()
        waiter = asyncio.ensure_future(idle.wait())
        try:
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done() and not idle.is_set():
            task.result()  # raises the controller's failure
            raise RuntimeError("the election controller stopped")

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        everything = lambda obj: True  # noqa: E731
        watchers = [
            self.store.watch(LEASES, everything, None, self._wakeup),
            self.store.watch(LEASECANDIDATES, everything, None, self._wakeup),
        ]
        try:
            forced: datetime | None = None
            while True:
                self._wakeup.clear()
                self._process(watchers, forced)
                forced = None
                if self._wakeup.is_set():
                    continue
                waiters, self._idle_waiters = self._idle_waiters, []
                for idle in waiters:
                    idle.set()
                target = self._next_due()
                timeout = None
                if target is not None and not self.clock.pinned:
                    timeout = max(0.0, (target - self.clock.now()).total_seconds())
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    # What we slept for is due, even if the wall clock lags the loop's (a fake
                    # loop clock): otherwise we would spin on it.
                    forced = target
        finally:
            for watcher in watchers:
                self.store.unwatch(watcher)

    def _next_due(self) -> datetime | None:
        due = list(self._delayed.values())
        if self._last_gc is not None:
            due.append(self._last_gc + timedelta(seconds=self.gc_interval))
        return min(due, default=None)

    def _process(self, watchers: Sequence[Watcher], forced: datetime | None) -> None:
        now = self.clock.now()
        went_back = self._last_now is not None and now < self._last_now
        self._last_now = now
        horizon = max(now, forced) if forced is not None else now
        self._drain(watchers)
        for key, due in list(self._delayed.items()):
            if due <= horizon or went_back:
                del self._delayed[key]
                self._ready[key] = None
        if (
            self._last_gc is None
            or went_back
            or self._last_gc + timedelta(seconds=self.gc_interval) <= horizon
        ):
            self._last_gc = now
            self._collect(now)
        while self._ready:
            key = next(iter(self._ready))
            del self._ready[key]
            self._reconcile(key, self.clock.now())
            # Our own writes come back as events; take them in order with everything else.
            self._drain(watchers)

    def _drain(self, watchers: Sequence[Watcher]) -> None:
        """Enqueue the Leases that changed, or whose candidates did (the event handlers)."""
        for watcher in watchers:
            while watcher.pending:
                _, obj = watcher.pending.popleft()
                namespace = str(obj["metadata"].get("namespace") or "")
                if watcher.rt is LEASES:
                    self._ready[(namespace, _name(obj))] = None
                    continue
                spec = _spec(obj)
                ping, renew = _time(spec, "pingTime"), _time(spec, "renewTime")
                if ping is not None and renew is not None and renew < ping:
                    continue  # a candidate yet to answer a ping: the election is under way
                self._ready[(namespace, str(spec.get("leaseName") or ""))] = None

    # -- steps ------------------------------------------------------------------------------

    def _candidates(self, namespace: str, lease_name: str) -> list[Object]:
        def wanted(obj: Object) -> bool:
            return (
                obj["metadata"].get("namespace") == namespace
                and _spec(obj).get("leaseName") == lease_name
            )

        return self.store.list(LEASECANDIDATES, wanted)

    def _reconcile(self, key: Key, now: datetime) -> None:
        namespace, lease_name = key
        self.steps += 1
        step = election_step(
            namespace,
            lease_name,
            self.store.get(LEASES, namespace, lease_name),
            self._candidates(namespace, lease_name),
            now,
            window=self.election_window,
        )
        try:
            self._apply(namespace, lease_name, step, now)
        except ApiError as error:
            log.warning("election for Lease %s/%s: %s", namespace, lease_name, error.message)
            return
        if step.error is not None:
            log.warning("election for Lease %s/%s: %s", namespace, lease_name, step.error)
        if step.requeue is not None:
            due = now + timedelta(seconds=step.requeue)
            self._delayed[key] = min(due, self._delayed.get(key, due))

    def _apply(self, namespace: str, lease_name: str, step: ElectionStep, now: datetime) -> None:
        stamp = format_micro_time(now)
        for name in step.pings:
            stored = self.store.get(LEASECANDIDATES, namespace, name)
            if stored is None:
                continue
            pinged = {**stored, "spec": {**_spec(stored), "pingTime": stamp}}
            # Through the decoder, as a request body would go: fields in Go's order.
            body = self.registry.decode_document(LEASECANDIDATES, pinged)
            self.registry.update(LEASECANDIDATES, namespace, name, body)
            log.debug("pinged LeaseCandidate %s/%s", namespace, name)
        if step.lease is None:
            return
        document = self.registry.decode_document(LEASES, step.lease)
        if step.create:
            self.registry.create(LEASES, namespace, document)
        else:
            self.registry.update(LEASES, namespace, lease_name, document)
        spec = _spec(step.lease)
        log.info(
            "Lease %s/%s %s: holder %r, preferred holder %r, strategy %r",
            namespace,
            lease_name,
            step.reason,
            spec.get("holderIdentity"),
            spec.get("preferredHolder"),
            spec.get("strategy"),
        )

    def _collect(self, now: datetime) -> None:
        for namespace, name in expired_candidates(
            self.store.list(LEASECANDIDATES, lambda obj: True), now
        ):
            self.registry.delete(LEASECANDIDATES, namespace, name, {})
            log.info("deleted expired LeaseCandidate %s/%s", namespace, name)
