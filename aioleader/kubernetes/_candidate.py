"""A ``coordination.k8s.io/v1beta1`` LeaseCandidate: this process's candidacy in a coordinated
leader election (KEP-4355), client-go's ``leasecandidate.go`` for anyio.

In a coordinated election nobody races for the Lease: every candidate publishes a LeaseCandidate
(its binary and emulation versions and a strategy), and an election controller (kube-apiserver's
with ``OldestEmulationVersion``, ``aioleader coordinate`` with ``aioleader.dev/HighestPriority``)
names the holder. [`LeaseCandidate`][LeaseCandidate] is what ``elect(lock, candidate=...)`` keeps while the
election runs:

* **Published** before the election starts: the object is named after the lock's identity, in
  the lock's namespace, ``spec.leaseName`` = the lock's name; created, or updated (versions,
  strategy, labels) if it exists. An object left by an earlier process with the same identity
  for another Lease is replaced (``leaseName`` is immutable).
* **Acknowledging pings**: the controller writes ``spec.pingTime`` and counts only candidates
  that answer within its election window (5 s) with a ``renewTime`` no earlier than the ping.
  The candidate watches its own object (a list and a watch by name, as client-go's informer) and
  answers a ping as soon as it sees it, writing ``renewTime = max(now, pingTime)``: a candidate
  whose clock lags the server's still counts as having answered.
* **Re-renewed** every ``renew_interval`` (5 min, client-go's ``requeueInterval``), well inside
  the 30 min after which the controller's garbage collector deletes a candidate.
* **Withdrawn** when the election ends: deleted (shielded, bounded by ``withdraw_timeout``),
  with the object's uid as a precondition so that a successor's object is never deleted.

Every request goes through the lock's own client (`client_of()`), bounded, with
errors translated at the same boundary as the lock's (`._errors`). Transient failures are
retried (backoff 0.5 s doubling to 5 s); fatal ones (403, a cluster without the v1beta1 API)
raise [`ElectionError`][aioleader.ElectionError], which ends the election. RBAC: ``get``, ``create``,
``update``, ``delete``, ``list`` and ``watch`` on ``leasecandidates.coordination.k8s.io``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Final, final

import anyio
from anyio.abc import TaskStatus
from kubernetes_asyncio.client import CoordinationV1beta1Api

from .. import _semver as semver
from .._coordination import OLDEST_EMULATION_VERSION, PRIORITY_LABEL
from .._exceptions import ElectionError, LockConflict, LockError
from .._lock import Lock, Observed
from .._record import LeaderElectionRecord, format_micro_time, parse_time
from ._client import KubeClient
from ._errors import error_for
from ._lease import LeaseLock
from ._names import check_name, check_strategy, check_string_map
from ._object import client_of
from ._reply import ObjectRef, Reply, decode_json, decode_object
from ._watch import ObjectWatch, WatchOptions

__all__ = ["PRIORITY_LABEL", "CandidateStatus", "LeaseCandidate", "list_lease_candidates"]

logger = logging.getLogger("aioleader.candidate")

_API_VERSION: Final = "coordination.k8s.io/v1beta1"
_KIND: Final = "LeaseCandidate"
_GROUP: Final = "coordination.k8s.io"
_PLURAL: Final = "leasecandidates"
_FEATURE_GATE: Final = (
    "coordinated leader election needs the coordination.k8s.io/v1beta1 API, served by "
    "kube-apiserver 1.33 or later with the CoordinatedLeaderElection feature gate on "
    "(--feature-gates=CoordinatedLeaderElection=true "
    "--runtime-config=coordination.k8s.io/v1beta1=true)"
)
_BACKOFF_INITIAL: Final = 0.5
_BACKOFF_MAX: Final = 5.0


def check_version(value: object, argument: str) -> str:
    """A version as the API stores it: a semantic version ``MAJOR.MINOR.PATCH[-PRE][+BUILD]``
    without a ``v``. ``MAJOR.MINOR`` (how Kubernetes writes emulation versions) is accepted and
    written as ``MAJOR.MINOR.0``, because the API's strict validation refuses ``1.36``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{argument} must be a semantic version such as '1.36.2', got {value!r}")
    text = value
    if text[:1] in ("v", "V"):
        raise ValueError(f"{argument} must not start with 'v' (write {value[1:]!r}), got {value!r}")
    parts = text.split(".")
    if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
        text += ".0"
    try:
        semver.parse(text)
    except ValueError as exc:
        raise ValueError(
            f"{argument} must be a semantic version such as '1.36.2' or '1.36' ({exc}), "
            f"got {value!r}"
        ) from None
    return text


def _not_served(reply: Reply) -> bool:
    """A 404 about the resource rather than an object: kube-apiserver answers a path it does not
    serve (a group version switched off) with a Status naming no object ("the server could not
    find the requested resource"), or something that is not a Status at all."""
    if reply.status != 404:
        return False
    status = reply.status_object()
    details = status.get("details") if status is not None else None
    return not (isinstance(details, dict) and details.get("name"))


def _now() -> datetime:
    return datetime.now(timezone.utc)


@final
class LeaseCandidate:
    """This process's candidacy in a coordinated election; pass it as ``elect(lock,
    candidate=...)`` with a [`LeaseLock`][aioleader.kubernetes.LeaseLock] (see the module docstring).

    Synopsis::

        lock = LeaseLock("my-controller", namespace="kube-system", api_client=api)
        candidate = LeaseCandidate(binary_version="1.31.2", emulation_version="1.31")
        async with elect(lock, candidate=candidate) as leadership:
            async with leadership.leading() as term:   # when the controller names us
                ...

    ``binary_version`` and ``emulation_version`` are semantic versions (``1.36.2``; ``1.36`` is
    written as ``1.36.0``); the binary version may not be older than the emulation version.
    ``strategy`` is ``"OldestEmulationVersion"`` (kube-apiserver's controller: the oldest
    emulation version, then the oldest binary version, leads; it needs ``emulation_version``) or
    a third-party strategy such as ``"aioleader.dev/HighestPriority"`` (``aioleader coordinate``:
    the highest ``priority`` leads). ``priority`` is written as the label
    `PRIORITY_LABEL`; ``labels`` go on the object too. Everything is checked here
    (`ValueError` naming the argument); the lock is checked when the election starts.
    """

    def __init__(
        self,
        binary_version: str,
        emulation_version: str | None = None,
        strategy: str = OLDEST_EMULATION_VERSION,
        *,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
        renew_interval: float = 300.0,
        withdraw_timeout: float = 5.0,
    ) -> None:
        self.binary_version = check_version(binary_version, "binary_version")
        self.emulation_version = (
            None
            if emulation_version is None
            else check_version(emulation_version, "emulation_version")
        )
        self.strategy = check_strategy(strategy)
        if self.strategy == OLDEST_EMULATION_VERSION and self.emulation_version is None:
            raise ValueError(
                f"emulation_version is required with strategy {OLDEST_EMULATION_VERSION!r} (the "
                "controller elects the oldest emulation version)"
            )
        if (
            self.emulation_version is not None
            and semver.parse(self.binary_version).compare(semver.parse(self.emulation_version)) < 0
        ):
            raise ValueError(
                f"binary_version {binary_version!r} must not be older than emulation_version "
                f"{emulation_version!r}"
            )
        merged = check_string_map(labels, "labels", label_values=True)
        if priority is not None:
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise ValueError(f"priority must be an integer, got {priority!r}")
            if PRIORITY_LABEL in merged:
                raise ValueError(f"pass either priority or the label {PRIORITY_LABEL!r}, not both")
            merged[PRIORITY_LABEL] = str(priority)
        self.labels: Mapping[str, str] = merged
        for name, value in (
            ("renew_interval", renew_interval),
            ("withdraw_timeout", withdraw_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        self.renew_interval = float(renew_interval)
        self.withdraw_timeout = float(withdraw_timeout)

    def __repr__(self) -> str:
        return (
            f"LeaseCandidate(binary_version={self.binary_version!r}, "
            f"emulation_version={self.emulation_version!r}, strategy={self.strategy!r})"
        )

    def spec(self, lease_name: str, renew_time: datetime) -> dict[str, Any]:
        """The ``spec`` this candidate writes for the Lease ``lease_name``."""
        spec: dict[str, Any] = {"leaseName": lease_name, "binaryVersion": self.binary_version}
        if self.emulation_version is not None:
            spec["emulationVersion"] = self.emulation_version
        spec["strategy"] = self.strategy
        spec["renewTime"] = format_micro_time(renew_time)
        return spec

    async def keep(self, lock: Lock, *, task_status: TaskStatus[None]) -> None:
        """Publish the candidate for ``lock``, signal ``task_status.started()``, answer pings and
        re-renew until cancelled, then withdraw it (the [`Candidacy`][aioleader.Candidacy] protocol).

        Raises `ValueError` for a lock this candidacy cannot go with (not a
        [`LeaseLock`][LeaseLock], an identity that is not an object name) and
        [`ElectionError`][aioleader.ElectionError] for what retrying cannot fix (403, no v1beta1 API).
        """
        keeper = _Keeper(self, lock)
        try:
            await keeper.publish()
            task_status.started()
            await keeper.run()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.withdraw_timeout):
                await keeper.withdraw()


def _ref_for(lock: Lock) -> tuple[LeaseLock, ObjectRef]:
    if not isinstance(lock, LeaseLock):
        raise ValueError(
            "a LeaseCandidate goes with a LeaseLock (coordinated election names the holder of a "
            f"coordination.k8s.io/v1 Lease), got {type(lock).__name__}"
        )
    name = check_name(lock.identity, "the lock's identity (the LeaseCandidate's name)")
    return lock, ObjectRef(group=_GROUP, plural=_PLURAL, namespace=lock.namespace, name=name)


def _api(api_client: Any) -> Any:
    """kubernetes_asyncio's v1beta1 API, typed ``Any``: we pass dict bodies and read raw
    responses (``_preload_content=False``), as the locks do."""
    return CoordinationV1beta1Api(api_client)


def _decode(obj: dict[str, Any], version: str) -> Observed:
    # The watch machinery speaks in Observed: the whole object's canonical JSON is the "record
    # bytes", so every write (a ping, our own renewal) reads as a change.
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return Observed(record=LeaderElectionRecord(), raw=raw, version=version)


class _Keeper:
    """One candidacy's state while it is kept: the object as last read or written."""

    def __init__(self, candidate: LeaseCandidate, lock: Lock) -> None:
        self.candidate = candidate
        self.lock, self.ref = _ref_for(lock)
        self.client: KubeClient = client_of(self.lock)
        self.cached: dict[str, Any] | None = None
        self.uid: str | None = None
        self.failures = 0

    # -- requests ------------------------------------------------------------------------------

    async def _request(self, verb: str, call: Any, *args: Any, **kwargs: Any) -> Reply:
        return await self.client.request(
            verb,
            self.ref,
            lambda api, t: getattr(_api(api), call)(
                *args, **kwargs, _preload_content=False, _request_timeout=t
            ),
            timeout=None,
        )

    def _fail(self, verb: str, reply: Reply) -> Exception:
        if _not_served(reply):
            return ElectionError(
                f"cannot {verb} {self.ref}: the API server does not serve LeaseCandidates "
                f"({reply.status} {reply.reason}); {_FEATURE_GATE}"
            )
        return error_for(verb, self.ref, reply)

    def _accept(self, verb: str, reply: Reply) -> dict[str, Any]:
        obj, _ = decode_object(verb, self.ref, reply, _KIND)
        self.cached = obj
        uid = obj.get("metadata", {}).get("uid")
        self.uid = uid if isinstance(uid, str) else None
        return obj

    async def _get(self) -> dict[str, Any] | None:
        reply = await self._request(
            "get", "read_namespaced_lease_candidate", self.ref.name, self.ref.namespace
        )
        if reply.status == 404 and not _not_served(reply):
            self.cached = None
            return None
        if not reply.ok:
            raise self._fail("get", reply)
        return self._accept("get", reply)

    async def _create(self, renew_time: datetime) -> None:
        metadata: dict[str, Any] = {"name": self.ref.name, "namespace": self.ref.namespace}
        if self.candidate.labels:
            metadata["labels"] = dict(self.candidate.labels)
        body = {
            "apiVersion": _API_VERSION,
            "kind": _KIND,
            "metadata": metadata,
            "spec": self.candidate.spec(self.lock.name, renew_time),
        }
        reply = await self._request(
            "create", "create_namespaced_lease_candidate", self.ref.namespace, body
        )
        if not reply.ok:
            raise self._fail("create", reply)
        self._accept("create", reply)

    async def _replace(self, cached: dict[str, Any], renew_time: datetime) -> None:
        spec = {**cached.get("spec", {}), **self.candidate.spec(self.lock.name, renew_time)}
        if self.candidate.emulation_version is None:
            spec.pop("emulationVersion", None)
        metadata = dict(cached.get("metadata", {}))
        labels = metadata.get("labels")
        metadata["labels"] = {
            **(labels if isinstance(labels, dict) else {}),
            **self.candidate.labels,
        }
        body = {**cached, "apiVersion": _API_VERSION, "kind": _KIND, "metadata": metadata}
        body["spec"] = spec
        reply = await self._request(
            "update", "replace_namespaced_lease_candidate", self.ref.name, self.ref.namespace, body
        )
        if not reply.ok:
            raise self._fail("update", reply)
        self._accept("update", reply)

    async def _delete(self, uid: str | None) -> Reply:
        body: dict[str, Any] = {"preconditions": {"uid": uid}} if uid else {}
        return await self._request(
            "delete",
            "delete_namespaced_lease_candidate",
            self.ref.name,
            self.ref.namespace,
            body=body,
        )

    # -- what the candidacy does ----------------------------------------------------------------

    async def write(self, renew_time: datetime) -> None:
        """Create or update the object with our spec and ``renew_time``. Conflicts (somebody
        wrote in between, e.g. a ping) re-read and try again; other errors raise."""
        for _ in range(5):
            cached = self.cached if self.cached is not None else await self._get()
            try:
                if cached is None:
                    await self._create(renew_time)
                    return
                if cached.get("spec", {}).get("leaseName") != self.lock.name:
                    # Left by an earlier process with our identity, for another Lease: the
                    # lease name is immutable, so the object is replaced.
                    reply = await self._delete(cached.get("metadata", {}).get("uid"))
                    if not reply.ok and reply.status not in (404, 409):
                        raise self._fail("delete", reply)
                    self.cached = None
                    continue
                await self._replace(cached, renew_time)
                return
            except LockConflict:
                self.cached = None  # changed or deleted under us: read it again
        raise LockError(f"cannot write {self.ref}: it keeps changing under us")

    async def publish(self) -> None:
        """The first write, retried until it succeeds (fatal errors raise)."""
        await self._retrying(lambda: self.write(_now()))
        logger.info(
            "published %s for Lease %s (binary %s, emulation %s, strategy %s)",
            self.ref,
            self.lock.name,
            self.candidate.binary_version,
            self.candidate.emulation_version,
            self.candidate.strategy,
        )

    async def _retrying(self, attempt: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await attempt()
            except ElectionError:
                raise
            except LockError as exc:
                self.failures += 1
                pause = min(_BACKOFF_MAX, _BACKOFF_INITIAL * 2 ** min(self.failures - 1, 10))
                pause = max(pause, exc.retry_after or 0.0)
                logger.warning("%s: %s; retrying in %g s", self.ref, exc, pause)
                await anyio.sleep(pause)
            else:
                self.failures = 0
                return

    def _pending_ping(self) -> datetime | None:
        """The ping to answer in the cached object (``pingTime`` after ``renewTime``), if any."""
        spec = (self.cached or {}).get("spec", {})
        ping, renew = parse_time(spec.get("pingTime")), parse_time(spec.get("renewTime"))
        if ping is not None and (renew is None or renew < ping):
            return ping
        return None

    async def run(self) -> None:
        """Answer pings as the watch shows them, and re-renew every ``renew_interval``."""
        watch = ObjectWatch(
            self.client,
            self.ref,
            lambda api, query, timeout: _api(api).list_namespaced_lease_candidate(
                self.ref.namespace, **query, _preload_content=False, _request_timeout=timeout
            ),
            _decode,
            WatchOptions(),
        )
        interval = self.candidate.renew_interval
        next_renew = anyio.current_time() + interval
        try:
            while True:
                observed: Observed | None = None
                seen = False
                with anyio.move_on_after(next_renew - anyio.current_time()):
                    observed = await watch.next()
                    seen = True
                if not seen:  # the periodic renewal is due
                    await self._retrying(lambda: self.write(_now()))
                    next_renew = anyio.current_time() + interval
                    continue
                if observed is None:  # deleted (collected, or by hand): publish again
                    logger.info("%s was deleted; publishing it again", self.ref)
                    self.cached = None
                    await self._retrying(lambda: self.write(_now()))
                    next_renew = anyio.current_time() + interval
                    continue
                self._note(json.loads(observed.raw))
                ping = self._pending_ping()
                if ping is not None:
                    logger.debug("%s: answering the ping of %s", self.ref, ping)
                    await self._retrying(partial(self._answer, ping))
                    next_renew = anyio.current_time() + interval
        finally:
            watch.close()

    async def _answer(self, ping: datetime) -> None:
        await self.write(max(_now(), ping))

    def _note(self, obj: dict[str, Any]) -> None:
        """Cache what the watch delivered if it is newer than what we hold (our own writes come
        back through the watch too, sometimes after a later one of ours)."""
        if self.cached is None:
            self.cached = obj
            return
        try:
            theirs = int(obj["metadata"]["resourceVersion"])
            ours = int(self.cached["metadata"]["resourceVersion"])
        except (KeyError, TypeError, ValueError):
            self.cached = obj  # opaque versions: the watch is in order
            return
        if theirs >= ours:
            self.cached = obj

    async def withdraw(self) -> None:
        """Delete the object we published (only that one: the uid is a precondition)."""
        if self.uid is None:
            return
        try:
            reply = await self._delete(self.uid)
        except LockError as exc:
            logger.warning("could not withdraw %s: %s", self.ref, exc)
            return
        if reply.ok or reply.status in (404, 409):
            logger.info("withdrew %s", self.ref)
        else:
            logger.warning(
                "could not withdraw %s: %s", self.ref, error_for("delete", self.ref, reply)
            )


@final
@dataclass(frozen=True)
class CandidateStatus:
    """One LeaseCandidate as [`list_lease_candidates()`][list_lease_candidates] reads it."""

    identity: str
    lease_name: str
    binary_version: str
    emulation_version: str | None
    strategy: str
    ping_time: datetime | None
    renew_time: datetime | None
    labels: Mapping[str, str]


def _status(obj: Mapping[str, Any]) -> CandidateStatus | None:
    metadata, spec = obj.get("metadata"), obj.get("spec")
    if not isinstance(metadata, Mapping) or not isinstance(spec, Mapping):
        return None
    labels = metadata.get("labels")
    return CandidateStatus(
        identity=str(metadata.get("name") or ""),
        lease_name=str(spec.get("leaseName") or ""),
        binary_version=str(spec.get("binaryVersion") or ""),
        emulation_version=spec.get("emulationVersion") or None,
        strategy=str(spec.get("strategy") or ""),
        ping_time=parse_time(spec.get("pingTime")),
        renew_time=parse_time(spec.get("renewTime")),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
    )


async def list_lease_candidates(
    lock: LeaseLock, *, timeout: float | None = None
) -> list[CandidateStatus]:
    """The LeaseCandidates of ``lock``'s Lease (``spec.leaseName``), in its namespace, by name.

    Raises [`ElectionError`][aioleader.ElectionError] naming the feature gate on a cluster without the
    v1beta1 API, [`LockError`][aioleader.LockError] for transient failures. Needs ``list`` on
    ``leasecandidates``.
    """
    if not isinstance(lock, LeaseLock):
        raise ValueError(f"LeaseCandidates go with a LeaseLock, got {type(lock).__name__}")
    ref = ObjectRef(group=_GROUP, plural=_PLURAL, namespace=lock.namespace, name=lock.name)
    reply = await client_of(lock).request(
        "list",
        ref,
        lambda api, t: _api(api).list_namespaced_lease_candidate(
            lock.namespace, _preload_content=False, _request_timeout=t
        ),
        timeout=timeout,
    )
    if reply.status == 404:  # a list is never "not found" unless the resource is not served
        raise ElectionError(
            f"cannot list {_PLURAL}.{_GROUP} in namespace {lock.namespace!r}: the API server "
            f"does not serve LeaseCandidates; {_FEATURE_GATE}"
        )
    if not reply.ok:
        raise error_for("list", ref, reply)
    items = decode_json("list", ref, reply).get("items")
    found = [_status(item) for item in items if isinstance(item, Mapping)] if items else []
    return sorted(
        (c for c in found if c is not None and c.lease_name == lock.name), key=lambda c: c.identity
    )
