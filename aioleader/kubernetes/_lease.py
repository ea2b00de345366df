"""The ``coordination.k8s.io/v1`` Lease lock, client-go's ``resourcelock.LeaseLock`` for anyio."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

import aiohttp
import anyio.lowlevel
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api

from .._exceptions import LockError
from .._lock import Lock, Observed
from .._record import LeaderElectionRecord, record_from_lease_spec, record_to_lease_spec
from ._client import (
    KubeClient,
    ObjectRef,
    Reply,
    check_identity,
    check_name,
    check_namespace,
    check_string_map,
    decode_object,
    error_for,
)
from ._events import EventRecorder
from ._watch import WatchOptions, watch_object

__all__ = ["LeaseLock"]

_API_VERSION: Final = "coordination.k8s.io/v1"
_KIND: Final = "Lease"


def _leases(api_client: ApiClient) -> Any:
    """The coordination/v1 API, typed ``Any`` on purpose: with ``_preload_content=False`` its
    methods return aiohttp's response rather than the ``V1Lease`` the stubs promise, and they
    take the plain dict bodies we send (models would serialize ``MicroTime`` wrongly)."""
    return CoordinationV1Api(api_client)


class LeaseLock(Lock):
    """A leader election lock stored in a ``coordination.k8s.io/v1`` Lease, as client-go does.

    Synopsis::

        lock = LeaseLock("my-lock", namespace="default")        # identity: $POD_NAME or host_pid
        async with lock, elect(lock) as leadership:
            ...

    ``api_client`` is a kubernetes_asyncio ``ApiClient`` the lock borrows (it is never closed by
    the lock). Without one, the lock loads the in-cluster configuration if
    ``KUBERNETES_SERVICE_HOST`` is set, else ``$KUBECONFIG`` / ``~/.kube/config``, on first use,
    and closes the client it built in :meth:`aclose`.

    ``labels`` and ``annotations`` are written on the Lease when this lock creates it (for
    ownership, cleanup and ``kubectl get leases -l ...``), never on updates.

    Transitions are recorded as core/v1 Events on the Lease, as client-go does (reason
    ``LeaderElection``, ``"<identity> became leader"`` / ``"<identity> stopped leading"``), best
    effort: a failure (e.g. no RBAC for ``create`` and ``patch`` on ``events``) is logged at DEBUG
    and never disturbs the election. ``events=False`` sends none.

    Every request reads and writes plain JSON: the whole Lease object is cached as the server
    returned it and written back with only the ``spec`` replaced, so metadata and spec fields this
    library does not model (owner references, a future spec field) survive a renewal. Renewal is
    one PUT carrying the cached ``resourceVersion``; kube-apiserver refuses it with 409 if anybody
    wrote in between, which is the whole of the election's safety. Requires the RBAC verbs
    ``get``, ``create`` and ``update`` on ``leases`` in the namespace.

    The lock runs on anyio's asyncio backend (kubernetes_asyncio uses aiohttp).
    """

    def __init__(
        self,
        name: str,
        namespace: str = "default",
        identity: str | None = None,
        api_client: ApiClient | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        events: bool = True,
    ) -> None:
        self._ref = ObjectRef(
            group="coordination.k8s.io",
            plural="leases",
            namespace=check_namespace(namespace),
            name=check_name(name),
        )
        self._identity = check_identity(identity)
        self._labels = check_string_map(labels, "labels", label_values=True)
        self._annotations = check_string_map(annotations, "annotations", label_values=False)
        self._client = KubeClient(api_client)
        # The Lease as last read or written (the parsed JSON), the base of the next update.
        self._cached: dict[str, Any] | None = None
        self._events = EventRecorder(
            self._client,
            self._ref,
            kind=_KIND,
            api_version=_API_VERSION,
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
        """``namespace/name``, as client-go's ``LeaseLock.Describe``."""
        return f"{self.namespace}/{self.name}"

    # -- Lock ----------------------------------------------------------------------------------

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read the Lease; ``None`` if it does not exist. Caches it for :meth:`update`."""
        reply = await self._client.request(
            "get",
            self._ref,
            lambda api, t: _leases(api).read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=t
            ),
            timeout=timeout,
        )
        if reply.status == 404 and reply.status_object() is not None:
            self._cached = None
            return None
        return self._accept("get", reply)

    async def create(
        self,
        record: LeaderElectionRecord,
        *,
        timeout: float | None = None,
    ) -> Observed:
        """Create the Lease holding ``record`` (with the configured labels and annotations).

        Raises :class:`~aioleader.LockConflict` if it already exists.
        """
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self._labels:
            metadata["labels"] = dict(self._labels)
        if self._annotations:
            metadata["annotations"] = dict(self._annotations)
        body = {
            "apiVersion": _API_VERSION,
            "kind": _KIND,
            "metadata": metadata,
            "spec": record_to_lease_spec(record),
        }
        reply = await self._client.request(
            "create",
            self._ref,
            lambda api, t: _leases(api).create_namespaced_lease(
                self.namespace, body, _preload_content=False, _request_timeout=t
            ),
            timeout=timeout,
        )
        return self._accept("create", reply)

    async def update(
        self,
        record: LeaderElectionRecord,
        *,
        timeout: float | None = None,
    ) -> Observed:
        """Write ``record`` with one PUT of the cached Lease (compare-and-swap on its version).

        Raises :class:`~aioleader.LockConflict` if the Lease changed or was deleted since it was
        cached, :class:`~aioleader.LockError` if nothing is cached yet.
        """
        cached = self._cached
        if cached is None:
            await anyio.lowlevel.checkpoint()
            raise LockError(f"cannot update {self._ref}: call get() or create() first")
        # Spec fields we do not model are kept from the server's copy unless the record carries
        # its own; the modelled ones are exactly the record's.
        spec = {**record_from_lease_spec(cached.get("spec")).extra, **record_to_lease_spec(record)}
        body = {"apiVersion": _API_VERSION, "kind": _KIND, **cached, "spec": spec}
        reply = await self._client.request(
            "update",
            self._ref,
            lambda api, t: _leases(api).replace_namespaced_lease(
                self.name, self.namespace, body, _preload_content=False, _request_timeout=t
            ),
            timeout=timeout,
        )
        return self._accept("update", reply)

    async def record_event(self, message: str, *, timeout: float | None = None) -> None:
        """Record ``message`` (e.g. ``"pod-a became leader"``) as an Event on the Lease.

        Best effort (see :mod:`aioleader.kubernetes._events`): never raises, bounded by
        ``timeout`` seconds (2 s if ``None``), a no-op with ``events=False``.
        """
        await self._events.record(message, self._cached, timeout=timeout)

    @property
    def supports_watch(self) -> bool:
        return True

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
    ) -> AsyncGenerator[Observed | None, None]:
        """Yield the Lease now and each time its record changes (``None`` while it does not exist).

        Synopsis::

            async with contextlib.aclosing(lock.watch()) as states:
                async for observed in states:
                    print(observed.record.holder_identity if observed else "no lease")

        A list by name, then a watch from the list's resourceVersion with bookmarks, resumed from
        the last version seen after disconnects (exponential backoff from ``backoff_initial`` to
        ``backoff_max`` seconds, jittered), re-listed after 410 Expired or a silence longer than
        ``sock_read``, and checked by a safety re-read every ``relist_interval`` seconds. Only
        changes of the record or of the Lease's existence are yielded: not bookmarks, not
        metadata-only updates. Transient errors are retried forever; 403 raises
        :class:`~aioleader.ForbiddenError` (the watch needs the RBAC verbs ``list`` and
        ``watch`` on ``leases``). See :mod:`aioleader.kubernetes._watch` for the details.

        The watch never touches the object cached for :meth:`update`: an elector decides on what
        it read itself, and a newer version slipped into the cache would let it overwrite a
        record it never looked at. Options are checked here (:class:`ValueError`); nothing is
        sent before the first iteration.
        """
        options = WatchOptions(
            relist_interval=relist_interval,
            timeout_seconds=timeout_seconds,
            sock_connect=sock_connect,
            sock_read=sock_read,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        return watch_object(self._client, self._ref, self._list, _observed_lease, options, rng=rng)

    def _list(
        self, api_client: ApiClient, query: Mapping[str, Any], timeout: aiohttp.ClientTimeout
    ) -> Any:
        return _leases(api_client).list_namespaced_lease(
            self.namespace, **query, _preload_content=False, _request_timeout=timeout
        )

    async def aclose(self) -> None:
        """Close the API client if the lock built it; a client passed in stays open."""
        await self._client.aclose()

    # -- helpers -------------------------------------------------------------------------------

    def _accept(self, verb: str, reply: Reply) -> Observed:
        """Raise for a failed reply; otherwise cache the Lease it carries and return its record."""
        if not reply.ok:
            raise error_for(verb, self._ref, reply)
        lease, version = decode_object(verb, self._ref, reply, _KIND)
        self._cached = lease
        return _observed_lease(lease, version)


def _observed_lease(lease: dict[str, Any], version: str) -> Observed:
    """The record of a Lease (the JSON dict) at ``version``."""
    spec = lease.get("spec")
    # Canonical bytes of the spec as stored, so that any change, even one in a field we do not
    # model or cannot parse, reads as a change (and a metadata-only change does not). Never
    # raises: surrogatepass for a lone surrogate that a "\ud800" escape decodes to, and a spec
    # nested too deep to encode again from here is compared by its type alone (garbage that
    # deep is not something a conforming writer stores; its record is still read).
    try:
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = f"<unencodable {type(spec).__name__}>"
    raw = text.encode("utf-8", "surrogatepass")
    return Observed(record=record_from_lease_spec(spec), raw=raw, version=version)
