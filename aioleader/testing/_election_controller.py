"""kube-apiserver's coordinated leader election controller (KEP-4355), over the emulator's store.

kube-apiserver runs it when the ``CoordinatedLeaderElection`` feature gate is on
(``pkg/controlplane/controller/leaderelection``): for every Lease that LeaseCandidates name in
``spec.leaseName``, it decides who should hold it, one *election step* at a time, from the
current Lease and candidates alone:

1. An election is needed when the Lease is missing, expired or free, when a candidate has not
   renewed for half the candidate lifetime (15 min), or when the strategy is
   ``OldestEmulationVersion`` and its best candidate is not the holder.
2. Candidates whose ``renewTime`` is older than the election window (5 s) are *pinged*: the
   controller writes ``spec.pingTime``; a candidate acknowledges by writing a ``renewTime`` no
   earlier than the ping. The vote waits until every pinged candidate has answered or the
   window since its ping has passed, and counts only candidates that renewed within the window.
3. The strategy is the one of the candidate with the newest binary version; candidates that
   disagree at the same binary version stop the election (an error, nothing is written).
4. With ``OldestEmulationVersion`` the electee is the candidate with the oldest emulation
   version, then the oldest binary version, then the oldest ``creationTimestamp`` (then, here,
   the first by name: the emulator lists in key order). Versions are read leniently
   (``v1.30``, ``1.30``); a candidate whose versions do not parse is never elected.
5. A missing Lease is created for the electee (``holderIdentity``, ``strategy``,
   ``leaseDurationSeconds: 5``, ``renewTime: now``). A free or expired Lease is assigned to it the
   same way (``preferredHolder`` and ``acquireTime`` cleared, ``leaseTransitions`` kept). A Lease
   held by another live holder only gets ``preferredHolder`` set: the holder is expected to step
   down and let it expire. Other strategies are left to third-party controllers: the Lease is
   created (or updated) with that ``strategy`` and no holder, and a held one is not touched.

Candidates are re-examined on every Lease or LeaseCandidate change (except a candidate's pending
ping) and every election window after a step. A separate garbage collector deletes candidates
whose ``renewTime`` is older than 30 min, every 30 min.

Where the Go code is ambiguous the emulator picks the reading that cannot crash or loop: an
acknowledgement at exactly the ping time counts (a pinned clock makes that common), and with a
third-party strategy the holder of an existing Lease is never changed.

:func:`election_step` and :func:`expired_candidates` decide, synchronously, from plain objects
and ``now``; :class:`ElectionController` feeds them from the store and writes their outcome
through the registry, so every write has a revision, watch events and validation. Time is the
emulator's :class:`ServerClock`: with the clock pinned the controller moves only when the clock
does (or objects change), so tests step through an election with ``emulator.advance()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import _semver as semver
from ._decode import RFC3339, RFC3339_MICRO, DecodeError, format_micro_time, parse_go_time
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

#: The strategy kube-apiserver implements; any other is left to third-party controllers.
OLDEST_EMULATION_VERSION = "OldestEmulationVersion"
#: ``electionDuration``: how long pinged candidates have to answer (and the requeue interval).
ELECTION_WINDOW = 5.0
#: ``leaseCandidateValidDuration``: a candidate not renewed for this long is out (and collected).
CANDIDATE_LIFETIME = 30 * 60.0
#: ``LeaseCandidateGCPeriod``: how often the garbage collector looks.
GC_INTERVAL = 30 * 60.0
#: ``defaultLeaseDurationSeconds`` of a Lease the controller creates or assigns.
LEASE_DURATION = 5

Object = Mapping[str, Any]
Key = tuple[str, str]  # (namespace, Lease name)


def _time(spec: Object, key: str) -> datetime | None:
    """A stored MicroTime (or, from ``put_raw``, any RFC 3339 time); None when unset or bad."""
    value = spec.get(key)
    if not isinstance(value, str):
        return None
    for layout in (RFC3339_MICRO, RFC3339):
        try:
            return parse_go_time(value, layout)
        except DecodeError:
            continue
    return None


def _spec(obj: Object) -> Object:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _name(obj: Object) -> str:
    return str(obj["metadata"].get("name") or "")


def _version(obj: Object, key: str) -> semver.Version | None:
    try:
        return semver.parse_tolerant(str(_spec(obj).get(key) or ""))
    except ValueError:
        return None


def lease_expired(lease: Object, now: datetime) -> bool:
    """``isLeaseExpired``: no renewTime or duration, or renewTime + duration before now."""
    spec = _spec(lease)
    renew = _time(spec, "renewTime")
    duration = spec.get("leaseDurationSeconds")
    if renew is None or not isinstance(duration, int):
        return True
    return renew + timedelta(seconds=duration) < now


def candidate_expired(
    candidate: Object, now: datetime, lifetime: float = CANDIDATE_LIFETIME
) -> bool:
    """``isLeaseCandidateExpired``: never renewed, or not within ``lifetime``."""
    renew = _time(_spec(candidate), "renewTime")
    return renew is None or renew + timedelta(seconds=lifetime) < now


def pick_strategy(candidates: Sequence[Object]) -> tuple[str, str | None]:
    """``pickBestStrategy``: (the newest binary version's strategy, error or None)."""
    first = candidates[0]
    name, strategy = _name(first), str(_spec(first).get("strategy") or "")
    highest = _version(first, "binaryVersion") or semver.ZERO
    for candidate in candidates[1:]:
        binary = _version(candidate, "binaryVersion") or semver.ZERO
        theirs = str(_spec(candidate).get("strategy") or "")
        order = highest.compare(binary)
        if order < 0:
            name, strategy, highest = _name(candidate), theirs, binary
        elif order == 0 and theirs != strategy:
            return "", (
                f'candidates "{name}", "{_name(candidate)}" at same binary version but received '
                f"differing strategies {strategy}, {theirs}"
            )
    return strategy, None


def _compare(left: Object, right: Object) -> int:
    """-1 if ``left`` should lead rather than ``right``, 1 otherwise (never 0)."""
    for key in ("emulationVersion", "binaryVersion"):
        order = (_version(left, key) or semver.ZERO).compare(_version(right, key) or semver.ZERO)
        if order:
            return order
    left_created = _time(left["metadata"], "creationTimestamp")
    right_created = _time(right["metadata"], "creationTimestamp")
    if left_created is not None and right_created is not None and left_created > right_created:
        return 1
    return -1


def pick_oldest_emulation_version(candidates: Iterable[Object]) -> Object | None:
    """``pickBestLeaderOldestEmulationVersion``: the oldest versions, then the oldest object."""
    electee: Object | None = None
    for candidate in candidates:
        if _version(candidate, "emulationVersion") is None:
            continue
        if _version(candidate, "binaryVersion") is None:
            continue
        if electee is None or _compare(electee, candidate) > 0:
            electee = candidate
    return electee


def _election_needed(
    candidates: Sequence[Object], lease: Object | None, now: datetime, lifetime: float
) -> tuple[bool, str | None]:
    if lease is None or lease_expired(lease, now):
        return True, None
    holder = _spec(lease).get("holderIdentity")
    if not holder:
        return True, None
    # Every half lifetime an election runs anyway, so that live candidates get pinged (and
    # renew) before the garbage collector would take them.
    for candidate in candidates:
        renew = _time(_spec(candidate), "renewTime")
        if renew is not None and renew + timedelta(seconds=lifetime / 2) < now:
            return True, None
    strategy, error = pick_strategy(candidates)
    if error is not None:
        return False, error
    if strategy != OLDEST_EMULATION_VERSION:
        return False, None
    best = pick_oldest_emulation_version(candidates)
    return best is not None and _name(best) != holder, None


@dataclass(frozen=True)
class ElectionStep:
    """What one election step decided for one Lease.

    ``pings``: candidates to ping (``pingTime = now``). ``lease``: the Lease to write (a whole
    object: created when ``create``, else an update of the stored one carrying its
    resourceVersion), or None. ``requeue``: seconds until the next step, or None (only an
    event brings it back). ``error``: why the step stopped, as the controller logs it.
    """

    pings: tuple[str, ...] = ()
    lease: dict[str, Any] | None = None
    create: bool = False
    requeue: float | None = None
    error: str | None = None
    reason: str = field(default="", compare=False)


def election_step(
    namespace: str,
    lease_name: str,
    lease: Object | None,
    candidates: Iterable[Object],
    now: datetime,
    *,
    window: float = ELECTION_WINDOW,
    lifetime: float = CANDIDATE_LIFETIME,
) -> ElectionStep:
    """``reconcileElectionStep`` for the Lease ``namespace/lease_name``.

    ``candidates`` are the namespace's LeaseCandidates for this Lease (any order is fine;
    ties on everything else go to the first); ``lease`` is the stored Lease or None.
    """
    span = timedelta(seconds=window)
    live = [c for c in candidates if not candidate_expired(c, now, lifetime)]
    if not live:
        return ElectionStep(reason="no live candidates")
    needed, error = _election_needed(live, lease, now, lifetime)
    if not needed:
        return ElectionStep(requeue=window, error=error, reason="no election needed")

    can_vote = True
    pings: list[str] = []
    for candidate in live:
        spec = _spec(candidate)
        ping, renew = _time(spec, "pingTime"), _time(spec, "renewTime")
        if ping is not None and ping + span > now and renew is not None and renew < ping:
            can_vote = False  # pinged, not answered yet, still within the window
            continue
        if renew is not None and renew + span > now:
            continue  # renewed recently enough to vote for
        # A candidate that never answered its last ping is not pinged again (it just loses).
        if ping is None or (ping + span < now and renew is not None and ping <= renew):
            pings.append(_name(candidate))
            can_vote = False
    if not can_vote:
        return ElectionStep(tuple(pings), requeue=window, reason="waiting for acknowledgements")

    for candidate in live:
        spec = _spec(candidate)
        ping, renew = _time(spec, "pingTime"), _time(spec, "renewTime")
        if ping is None or (renew is not None and ping <= renew):
            continue
        if ping + span > now:
            return ElectionStep(reason="waiting for acknowledgements")

    acked = [
        c
        for c in live
        if (renew := _time(_spec(c), "renewTime")) is not None and renew + span > now
    ]
    if not acked:
        return ElectionStep(error="no available candidates")
    strategy, error = pick_strategy(acked)
    if error is not None:
        return ElectionStep(error=error)
    holder: str | None = None
    if strategy == OLDEST_EMULATION_VERSION:
        electee = pick_oldest_emulation_version(acked)
        if electee is None:
            return ElectionStep(error="should not happen, could not find suitable electee")
        holder = _name(electee)

    stamp = format_micro_time(now)
    if lease is None:
        spec_out: dict[str, Any] = {}
        if holder is not None:
            spec_out["holderIdentity"] = holder
        spec_out.update(leaseDurationSeconds=LEASE_DURATION, renewTime=stamp, strategy=strategy)
        created = {"metadata": {"name": lease_name, "namespace": namespace}, "spec": spec_out}
        return ElectionStep(lease=created, create=True, requeue=window, reason="created")

    updated = copy.deepcopy(dict(lease))
    spec_out = dict(_spec(updated))
    current = spec_out.get("holderIdentity") or ""
    if spec_out.get("strategy") != strategy:
        spec_out["strategy"] = strategy
    if holder is not None and (not current or (lease_expired(lease, now) and current != holder)):
        spec_out.pop("preferredHolder", None)
        spec_out.pop("acquireTime", None)
        spec_out.update(holderIdentity=holder, renewTime=stamp, leaseDurationSeconds=LEASE_DURATION)
        reason = "assigned"
    elif holder is not None and holder != current:
        spec_out["preferredHolder"] = holder
        reason = "preferred holder"
    else:
        reason = "unchanged"
    if spec_out == _spec(lease):
        return ElectionStep(requeue=window, reason="already optimal")
    updated["spec"] = spec_out
    return ElectionStep(lease=updated, requeue=window, reason=reason)


def expired_candidates(
    candidates: Iterable[Object], now: datetime, lifetime: float = CANDIDATE_LIFETIME
) -> list[Key]:
    """The garbage collector's pick: (namespace, name) of candidates not renewed in time."""
    return [
        (str(c["metadata"].get("namespace") or ""), _name(c))
        for c in candidates
        if candidate_expired(c, now, lifetime)
    ]


class ElectionController:
    """Runs :func:`election_step` for every Lease with candidates, and the candidate GC.

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
