"""The base of the locks kept in a Kubernetes object: everything but the object's kind and how
the record sits in it.

[`ObjectLock`][ObjectLock] holds what [`LeaseLock`][aioleader.kubernetes.LeaseLock] and the annotation
locks share: construction and its checks, ``name``/``namespace``/``identity``, ``describe``,
the object cached as last read or written (the base of the next compare-and-swap), bounded
requests on a borrowed or owned client, Events, and the list+watch. A subclass names its kind
(class attributes) and says what differs, in three methods:

* `_decode()`: the record in an object as the server sent it;
* `_create_body()`: the object to create, holding a record;
* `_update_body()`: the object to PUT, from the cached one and a record.
"""

from __future__ import annotations

import json
import logging
import random
from abc import abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, ClassVar, Final

import aiohttp
import anyio.lowlevel

from .._exceptions import LockConflict, LockError, LockNotFound
from .._lock import Lock, Observed, WatchCursor, cursor_states
from .._record import LeaderElectionRecord
from ._client import KubeClient
from ._errors import error_for
from ._events import EventRecorder
from ._informer import shared_cursor
from ._names import (
    check_identity,
    check_name,
    check_namespace,
    check_owner_references,
    check_string_map,
)
from ._reply import ObjectRef, Reply, decode_object
from ._watch import ObjectWatch, WatchOptions

__all__ = ["ObjectLock", "client_of"]

logger = logging.getLogger("aioleader")


class ObjectLock(Lock):
    """A lock whose record lives in one namespaced Kubernetes object (see the module docstring).

    ``api_client`` is a kubernetes_asyncio ``ApiClient`` the lock borrows (it is never closed by
    the lock); without one, the lock builds one on first use and closes it in [`aclose()`][aclose].
    ``labels``, ``annotations`` and ``owner_references`` are written when this lock creates the
    object and kept by every update (which writes the object back as read); a kind with
    `_labels_on_update` also writes its ``labels`` with every update, so that each new
    holder's labels replace the previous holder's. ``create=False``: the lock never creates the
    object (see [`create()`][create]). ``events=False`` records no Events.
    """

    #: The object's ``kind``, ``apiVersion``, API group (``""`` for core) and plural (as RBAC
    #: names the resource).
    kind: ClassVar[str]
    api_version: ClassVar[str]
    group: ClassVar[str]
    plural: ClassVar[str]
    #: kubernetes_asyncio's API class for the group, and the snake_case suffix of its methods
    #: (``read_namespaced_<method>``, ``list_namespaced_<method>``, ...).
    _api_class: ClassVar[Any]
    _method: ClassVar[str]
    #: Whether updates write the configured labels too (client-go 1.34's ``LeaseLock.Labels``).
    _labels_on_update: ClassVar[bool] = False
    #: Whether [`watch()`][watch] follows the object through the process's one list+watch of the
    #: namespace (`._informer`) by default, rather than a watch of its own by name.
    shared_watch: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        namespace: str = "default",
        identity: str | None = None,
        api_client: Any | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        owner_references: Sequence[Mapping[str, Any]] | None = None,
        create: bool = True,
        events: bool = True,
    ) -> None:
        self._ref = ObjectRef(
            group=self.group,
            plural=self.plural,
            namespace=check_namespace(namespace),
            name=check_name(name),
        )
        self._identity = check_identity(identity)
        self._labels = check_string_map(labels, "labels", label_values=True)
        self._annotations = check_string_map(annotations, "annotations", label_values=False)
        self._owner_references = check_owner_references(owner_references)
        if not isinstance(create, bool):
            raise ValueError(f"create must be True or False, got {create!r}")
        self._may_create = create
        self._missing_reported = False
        self._patch_forbidden = False  # update_from got a 403: read then update
        self._check()
        self._client = KubeClient(api_client)
        # What a shared watch may be shared over: the borrowed client, or only this lock's own.
        self._watch_source: object = api_client if api_client is not None else self._client
        # The paths of the lean requests (``/apis/<group>/<version>/namespaces/<ns>/<plural>``).
        root = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        self._collection_path = f"{root}/namespaces/{self.namespace}/{self.plural}"
        self._object_path = f"{self._collection_path}/{self.name}"
        # The object as last read or written (the parsed JSON), the base of the next update,
        # and its record as decoded (whose unmodelled fields the update keeps).
        self._cached: dict[str, Any] | None = None
        self._cached_record: LeaderElectionRecord | None = None
        self._events = EventRecorder(
            self._client,
            self._ref,
            kind=self.kind,
            api_version=self.api_version,
            component=self._identity,
            enabled=events,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, namespace={self.namespace!r}, "
            f"identity={self._identity!r})"
        )

    @property
    def name(self) -> str:
        return self._ref.name

    @property
    def namespace(self) -> str:
        return self._ref.namespace

    @property
    def identity(self) -> str:
        return self._identity

    def describe(self) -> str:
        """``namespace/name``, as client-go's ``Describe``."""
        return f"{self.namespace}/{self.name}"

    @property
    def kube_client(self) -> KubeClient:
        """The lock's request path (its borrowed or owned ``ApiClient``, bounded and translated
        requests), shared with this package's term hooks so they need no client of their own."""
        return self._client

    # -- what a kind says --------------------------------------------------------------------------

    def _check(self) -> None:
        """Further construction checks (`ValueError`); the arguments are checked already."""

    @staticmethod
    @abstractmethod
    def _decode(obj: dict[str, Any], version: str) -> Observed:
        """The record in ``obj`` (the JSON dict as the server sent it) at ``version``."""

    @abstractmethod
    def _create_body(
        self, record: LeaderElectionRecord, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        """The object to create holding ``record``; ``metadata`` has the name, namespace and the
        configured labels and annotations."""

    @abstractmethod
    def _update_body(
        self, cached: dict[str, Any], kept: LeaderElectionRecord, record: LeaderElectionRecord
    ) -> dict[str, Any]:
        """The object to PUT for ``record``, from the ``cached`` one (compare-and-swap on its
        ``resourceVersion``) whose record decoded as ``kept``."""

    @abstractmethod
    def _patch_body(self, record: LeaderElectionRecord, metadata: dict[str, Any]) -> dict[str, Any]:
        """The JSON merge patch that writes ``record`` (every field of the record, ``null`` for
        those it lacks); ``metadata`` has the resourceVersion precondition and the labels."""

    # -- Lock ----------------------------------------------------------------------------------

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read the object; ``None`` if it does not exist. Caches it for [`update()`][update]."""
        reply = await self._client.send("get", self._ref, "GET", self._object_path, timeout=timeout)
        if reply.status == 404 and reply.status_object() is not None:
            self._cached = self._cached_record = None
            return None
        observed = self._accept("get", reply)
        self._missing_reported = False  # report the next disappearance again
        return observed

    async def create(
        self,
        record: LeaderElectionRecord,
        *,
        timeout: float | None = None,
    ) -> Observed:
        """Create the object holding ``record`` (with the configured labels, annotations and owner
        references).

        Raises [`LockConflict`][aioleader.LockConflict] if it already exists. A lock built with
        ``create=False`` sends nothing and raises [`LockNotFound`][aioleader.LockNotFound] (a transient
        [`LockError`][aioleader.LockError]: the elector retries every retry period until somebody
        creates the object), logging one WARNING per disappearance.
        """
        if not self._may_create:
            await anyio.lowlevel.checkpoint()
            message = (
                f"{self._ref} does not exist, and this lock was built with create=False: "
                f"create it beforehand (e.g. kubectl apply -f a manifest of the {self.kind})"
            )
            if not self._missing_reported:
                self._missing_reported = True
                logger.warning(
                    "%s: %s; retrying", self.describe(), message, extra={"lock": self.describe()}
                )
            raise LockNotFound(message)
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self._labels:
            metadata["labels"] = dict(self._labels)
        if self._annotations:
            metadata["annotations"] = dict(self._annotations)
        if self._owner_references:
            metadata["ownerReferences"] = [dict(r) for r in self._owner_references]
        body = _serialize(self._create_body(record, metadata))
        reply = await self._client.send(
            "create", self._ref, "POST", self._collection_path, body, timeout=timeout
        )
        return self._accept("create", reply)

    async def update(
        self,
        record: LeaderElectionRecord,
        *,
        timeout: float | None = None,
    ) -> Observed:
        """Write ``record`` with one PUT of the cached object (compare-and-swap on its version).

        Raises [`LockConflict`][aioleader.LockConflict] if the object changed or was deleted since it was
        cached, [`LockError`][aioleader.LockError] if nothing is cached yet.
        """
        cached, kept = self._cached, self._cached_record
        if cached is None or kept is None:
            await anyio.lowlevel.checkpoint()
            raise LockError(f"cannot update {self._ref}: call get() or create() first")
        body = self._update_bytes(cached, kept, record)
        reply = await self._client.send(
            "update", self._ref, "PUT", self._object_path, body, timeout=timeout
        )
        return self._accept("update", reply)

    def _update_bytes(
        self, cached: dict[str, Any], kept: LeaderElectionRecord, record: LeaderElectionRecord
    ) -> bytes:
        """The PUT body for ``record``: [`_update_body()`][_update_body] with the configured
        labels merged in, serialized. (Leases fill a template instead, see `._lease`.)"""
        return _serialize(self._merged_update(cached, kept, record))

    def _merged_update(
        self, cached: dict[str, Any], kept: LeaderElectionRecord, record: LeaderElectionRecord
    ) -> dict[str, Any]:
        update = self._update_body(cached, kept, record)
        if self._labels_on_update and self._labels:
            metadata = dict(update.get("metadata") or {})
            labels = metadata.get("labels")
            metadata["labels"] = {**(labels if isinstance(labels, dict) else {}), **self._labels}
            update = {**update, "metadata": metadata}
        return update

    @property
    def supports_update_from(self) -> bool:
        return True

    @property
    def bounds_requests(self) -> bool:
        # KubeClient.send bounds each request by its timeout: the configuration's loading and a
        # credential hook under a cancel scope, the exchange by the transport's own deadline.
        return True

    async def update_from(
        self, base: Observed, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        """Write ``record`` with one JSON merge PATCH whose ``metadata.resourceVersion`` is
        ``base``'s (a precondition: kube-apiserver answers 409 if the object changed since), so a
        follower that watched the lock being released takes it without reading it first. Only
        the record's fields are in the patch; labels, annotations, owner references and fields
        of the spec we do not model stay as the server holds them. On success the object is
        cached for [`update()`][update].

        Needs the RBAC verb ``patch`` on the object. Without it (a Role written for client-go,
        which never patches its lock: 403) the lock says so once at INFO and from then on reads
        then updates, as [`get()`][get] and [`update()`][update] would (the compare-and-swap is
        then on the version read, which must still be ``base``'s).

        Raises [`LockConflict`][aioleader.LockConflict] if the object changed or was deleted
        since ``base``."""
        if self._patch_forbidden:
            return await self._read_then_update(base, record, timeout)
        metadata: dict[str, Any] = {"resourceVersion": base.version}
        if self._labels_on_update and self._labels:
            metadata["labels"] = dict(self._labels)
        body = _serialize(self._patch_body(record, metadata))
        reply = await self._client.send(
            "update",
            self._ref,
            "PATCH",
            self._object_path,
            body,
            timeout=timeout,
            content_type="application/merge-patch+json",
        )
        if reply.status == 404 and reply.status_object() is not None:
            raise LockConflict(f"{self._ref} was deleted since version {base.version}")
        if reply.status == 403:
            self._patch_forbidden = True
            logger.info(
                "%s: no RBAC verb patch on %s (%s); taking it with get then update instead",
                self.describe(),
                self._ref.resource,
                error_for("update", self._ref, reply),
                extra={"lock": self.describe()},
            )
            return await self._read_then_update(base, record, timeout)
        return self._accept("update", reply)

    async def _read_then_update(
        self, base: Observed, record: LeaderElectionRecord, timeout: float | None
    ) -> Observed:
        deadline = None if timeout is None else anyio.current_time() + timeout
        current = await self.get(timeout=timeout)
        if current is None:
            raise LockConflict(f"{self._ref} was deleted since version {base.version}")
        if current.version != base.version:
            raise LockConflict(f"{self._ref} was modified since version {base.version}")
        left = None if deadline is None else deadline - anyio.current_time()
        return await self.update(record, timeout=left)

    async def record_event(self, message: str, *, timeout: float | None = None) -> None:
        """Record ``message`` (e.g. ``"pod-a became leader"``) as an Event on the lock object, as
        client-go does (reason ``LeaderElection``, type ``Normal``).

        Best effort (see `aioleader.kubernetes._events`): never raises, bounded by
        ``timeout`` seconds (2 s if ``None``), a no-op when the lock was built with
        ``events=False``. Needs the RBAC verbs ``create`` and ``patch`` on ``events``; without
        them the Event is dropped (logged at DEBUG) and the election is not disturbed.
        """
        await self._events.record(message, self._cached, timeout=timeout)

    def watch(
        self,
        *,
        relist_interval: float = 300.0,
        timeout_seconds: int = 290,
        sock_connect: float = 10.0,
        sock_read: float = 90.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
        shared: bool | None = None,
    ) -> AsyncGenerator[Observed | None, None]:
        """Yield the object now and each time its record changes (``None`` while it does not
        exist).

        Synopsis::

            async with contextlib.aclosing(lock.watch()) as states:
                async for observed in states:
                    print(observed.record.holder_identity if observed else "no lock object")

        A list by name, then a watch from the list's resourceVersion with bookmarks, resumed from
        the last version seen after disconnects (exponential backoff from ``backoff_initial`` to
        ``backoff_max`` seconds, jittered), re-listed after 410 Expired or a silence longer than
        ``sock_read``, and checked by a safety re-read every ``relist_interval`` seconds. Only
        changes of the record or of the object's existence are yielded: not bookmarks, not
        changes elsewhere in the object (labels, other annotations, data). Transient errors are
        retried forever; 403 raises [`ForbiddenError`][aioleader.ForbiddenError] (the watch needs the RBAC
        verbs ``list`` and ``watch`` on the resource). See `aioleader.kubernetes._watch`.

        The watch never touches the object cached for [`update()`][update]: an elector decides on what
        it read itself, and a newer version slipped into the cache would let it overwrite a
        record it never looked at. Options are checked here (`ValueError`); nothing is
        sent before the first iteration.

        ``shared`` (default: [`shared_watch`][shared_watch], true for Leases) serves the watch from the
        process's one list+watch of the namespace, shared with every lock of the same kind, API
        client, namespace and watch options (`aioleader.kubernetes._informer`): one watch
        connection however many locks are followed. It needs ``list`` and ``watch`` without
        ``resourceNames``; when the namespace-wide list or watch is refused (403), it falls back
        to a list and watch by name. ``shared=False`` always watches by name.
        """
        return cursor_states(
            self.watch_cursor(
                relist_interval=relist_interval,
                timeout_seconds=timeout_seconds,
                sock_connect=sock_connect,
                sock_read=sock_read,
                backoff_initial=backoff_initial,
                backoff_max=backoff_max,
                rng=rng,
                shared=shared,
            )
        )

    @property
    def supports_watch_cursor(self) -> bool:
        return True

    def watch_cursor(
        self,
        *,
        relist_interval: float = 300.0,
        timeout_seconds: int = 290,
        sock_connect: float = 10.0,
        sock_read: float = 90.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
        shared: bool | None = None,
    ) -> WatchCursor:
        """What [`watch()`][watch] yields, as a cancel-safe [`WatchCursor`][aioleader.WatchCursor]; the same
        options."""
        options = WatchOptions(
            relist_interval=relist_interval,
            timeout_seconds=timeout_seconds,
            sock_connect=sock_connect,
            sock_read=sock_read,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )

        def by_name() -> ObjectWatch:
            return ObjectWatch(self._client, self._ref, self._list, self._decode, options, rng=rng)

        if not (self.shared_watch if shared is None else shared):
            return by_name()
        return shared_cursor(
            self._watch_source,
            self._client,
            self._ref,
            type(self),
            self._list,
            self._decode,
            options,
            fallback=by_name,
            rng=rng,
        )

    async def aclose(self) -> None:
        """Close the API client if the lock built it; a client passed in stays open."""
        await self._client.aclose()

    # -- helpers -------------------------------------------------------------------------------

    def _api(self, api_client: Any, operation: str) -> Any:
        """``<operation>_namespaced_<kind>`` of the kind's API on ``api_client``, typed ``Any`` on
        purpose: with ``_preload_content=False`` it returns aiohttp's response rather than the
        model the stubs promise, and it takes the plain dict bodies we send (models would
        serialize ``MicroTime`` wrongly)."""
        return getattr(self._api_class(api_client), f"{operation}_namespaced_{self._method}")

    def _list(
        self, api_client: Any, query: Mapping[str, Any], timeout: aiohttp.ClientTimeout
    ) -> Any:
        return self._api(api_client, "list")(
            self.namespace, **query, _preload_content=False, _request_timeout=timeout
        )

    def _accept(self, verb: str, reply: Reply) -> Observed:
        """Raise for a failed reply; otherwise cache the object it carries and return its record."""
        if not reply.ok:
            raise error_for(verb, self._ref, reply)
        obj, version = decode_object(verb, self._ref, reply, self.kind)
        observed = self._decode(obj, version)
        self._cached, self._cached_record = _without_managed_fields(obj), observed.record
        return observed


def _without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without ``metadata.managedFields``, for the cache the next PUT is built from. An
    update that carries no managedFields keeps the stored ones (kube-apiserver's field manager
    takes the live object's, "to prevent clients who don't understand managedFields from
    deleting it accidentally"); sending them back would only cost bytes, CPU and, kept in the
    cache of every lock, memory."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return obj
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}


#: One encoder for every body (``json.dumps`` with options builds a new one per call).
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))


def _serialize(body: dict[str, Any]) -> bytes:
    """The JSON of a request body: compact, ASCII (a lone surrogate is escaped, not an error)."""
    return _COMPACT.encode(body).encode("ascii")


def client_of(lock: ObjectLock) -> KubeClient:
    """The request path of ``lock`` (its borrowed or owned API client, bounded and translated
    requests), for objects of this package that live next to the lock and share its client (a
    [`LeaseCandidate`][aioleader.kubernetes.LeaseCandidate])."""
    return lock._client
