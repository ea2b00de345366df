"""The annotation locks: client-go's ``ConfigMapLock`` and ``EndpointsLock`` for anyio.

Before Leases existed, client-go kept the leader election record as JSON in the annotation
``control-plane.alpha.kubernetes.io/leader`` of an ordinary core/v1 object. Both kinds share
everything but their API paths, so the lock lives here once and :mod:`._configmap` and
:mod:`._endpoints` only name the kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import anyio.lowlevel
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from .._exceptions import LockError
from .._lock import Lock, Observed
from .._record import (
    LEADER_ANNOTATION,
    UNPARSEABLE_HOLDER,
    LeaderElectionRecord,
    record_from_annotation,
    record_to_annotation,
)
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

__all__ = ["UNPARSEABLE_HOLDER", "AnnotationLock", "decode_annotation"]

_API_VERSION: Final = "v1"


def _core(api_client: ApiClient) -> Any:
    """The core/v1 API, typed ``Any`` on purpose: with ``_preload_content=False`` its methods return
    aiohttp's response rather than the models the stubs promise, and they take plain dict bodies."""
    return CoreV1Api(api_client)


def decode_annotation(value: object) -> tuple[LeaderElectionRecord, bytes]:
    """The record in a leader annotation's value (``None`` when absent), and its raw bytes.

    Three outcomes:

    * **Free** (an empty record): the annotation is absent, empty, or the JSON ``null``. client-go
      reads an absent annotation and ``null`` as an empty record, the official Python client an
      absent or empty one; there is no holder to wait for.
    * **A record**: a JSON object whose ``holderIdentity`` is a string (``""`` is free) or null,
      which is what client-go and the official Python client always write. The other fields are
      read leniently (a garbage time is absent; an invalid duration is ``None``, so the elector
      assumes its own lease duration); fields we do not model are kept in ``extra`` and written
      back.
    * **Unparseable**: anything else - text that is not JSON, JSON that is not an object, a
      value that is not a string, an object without ``holderIdentity`` (no known writer omits
      it, so an object without it is a format we do not know, not evidence that the lock is
      free) or with a holder that is not a string. The record then names
      :data:`UNPARSEABLE_HOLDER`; an object's other fields are read as usual (so a valid
      duration counts), anything else carries no lease duration.

    Why not free, and why not an error? client-go returns the ``json.Unmarshal`` error, so its
    elector retries forever and a lock once garbled is never taken over: a live-lock. Reading it
    as free (what a lenient reader would do) lets any candidate take it over *instantly*, which is
    only safe if nobody is behind the garbage - but a peer running a newer or foreign format may
    well be renewing it right now. The unparseable record is the middle road: it is held by
    someone we cannot name, and the elector treats it like any other holder's record without a
    valid duration. It is taken over only once the annotation has stayed *exactly the same* (the
    raw bytes are compared) for the record's lease duration (the candidate's own if it has none),
    counted from when it was first observed; a peer that keeps rewriting it is never overrun. The takeover then writes a
    well-formed record through the usual compare-and-swap.

    ``raw`` is the annotation as stored (UTF-8), so followers detect any change, even one they
    cannot parse; it is empty for an absent annotation. Never raises, whatever ``value`` is (see
    :func:`~aioleader._record.record_from_annotation` for how each field is read).
    """
    record = record_from_annotation(value)
    if value is None:
        return record, b""
    if isinstance(value, str):
        # surrogatepass: a lone surrogate (a "\ud800" escape decoded by the client) must not
        # make the bytes of a change unrepresentable.
        return record, value.encode("utf-8", "surrogatepass")
    # kube-apiserver only stores string annotation values; anything else is corrupt.
    try:
        raw = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    except (ValueError, TypeError, RecursionError):
        raw = f"<unencodable {type(value).__name__}>"
    return record, raw.encode("utf-8", "surrogatepass")


class AnnotationLock(Lock):
    """A lock whose record is JSON in the ``control-plane.alpha.kubernetes.io/leader`` annotation.

    Subclasses name the core/v1 kind. Everything else - construction, caching, the one-PUT
    renewal, bounded requests, error translation, reading garbage, Events - is shared.
    """

    #: The object's kind (``ConfigMap``), its plural (``configmaps``, as RBAC names it) and the
    #: snake_case suffix of kubernetes_asyncio's ``CoreV1Api`` methods (``config_map``).
    kind: ClassVar[str]
    plural: ClassVar[str]
    _method: ClassVar[str]

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
            group="",
            plural=self.plural,
            namespace=check_namespace(namespace),
            name=check_name(name),
        )
        self._identity = check_identity(identity)
        if self._identity == UNPARSEABLE_HOLDER:
            raise ValueError(f"identity {UNPARSEABLE_HOLDER!r} is reserved")
        self._labels = check_string_map(labels, "labels", label_values=True)
        self._annotations = check_string_map(annotations, "annotations", label_values=False)
        if LEADER_ANNOTATION in self._annotations:
            raise ValueError(
                f"annotations: {LEADER_ANNOTATION!r} holds the leader election record and is "
                "written by the lock itself"
            )
        self._client = KubeClient(api_client)
        # The object as last read or written (the parsed JSON), the base of the next update.
        self._cached: dict[str, Any] | None = None
        self._events = EventRecorder(
            self._client,
            self._ref,
            kind=self.kind,
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
        """``namespace/name``, as client-go's ``Describe``."""
        return f"{self.namespace}/{self.name}"

    # -- Lock ----------------------------------------------------------------------------------

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        """Read the object; ``None`` if it does not exist. Caches it for :meth:`update`.

        An object without the leader annotation reads as a free lock; one whose annotation cannot
        be read reads as held by :data:`UNPARSEABLE_HOLDER` (see :func:`decode_annotation`).
        """
        reply = await self._client.request(
            "get",
            self._ref,
            lambda api, t: self._api(api, "read")(
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
        """Create the object holding ``record`` in its annotation (and nothing else but the
        configured labels and annotations, as client-go does).

        Raises :class:`~aioleader.LockConflict` if it already exists.
        """
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self._labels:
            metadata["labels"] = dict(self._labels)
        metadata["annotations"] = {
            **self._annotations,
            LEADER_ANNOTATION: record_to_annotation(record),
        }
        body = {"apiVersion": _API_VERSION, "kind": self.kind, "metadata": metadata}
        reply = await self._client.request(
            "create",
            self._ref,
            lambda api, t: self._api(api, "create")(
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
        """Write ``record`` with one PUT of the cached object (compare-and-swap on its version).

        Only the leader annotation changes: data, subsets, labels, other annotations and owner
        references are sent back as the server last returned them. Raises
        :class:`~aioleader.LockConflict` if the object changed or was deleted since it was cached
        (a ConfigMap cannot be created by PUT: 404; an Endpoints object could, but the cached
        ``uid`` is a precondition: 409), :class:`~aioleader.LockError` if nothing is cached yet.
        """
        cached = self._cached
        if cached is None:
            await anyio.lowlevel.checkpoint()
            raise LockError(f"cannot update {self._ref}: call get() or create() first")
        metadata = dict(cached.get("metadata") or {})
        annotations = metadata.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        # Record fields we do not model are kept from the server's copy unless the record carries
        # its own (as LeaseLock does for the spec); the modelled ones are exactly the record's.
        kept = decode_annotation(annotations.get(LEADER_ANNOTATION))[0].extra
        value = record_to_annotation(record.with_changes(extra={**kept, **record.extra}))
        metadata["annotations"] = {**annotations, LEADER_ANNOTATION: value}
        body = {"apiVersion": _API_VERSION, "kind": self.kind, **cached, "metadata": metadata}
        reply = await self._client.request(
            "update",
            self._ref,
            lambda api, t: self._api(api, "replace")(
                self.name, self.namespace, body, _preload_content=False, _request_timeout=t
            ),
            timeout=timeout,
        )
        return self._accept("update", reply)

    async def record_event(self, message: str, *, timeout: float | None = None) -> None:
        """Record ``message`` (e.g. ``"pod-a became leader"``) as an Event on the lock object, as
        client-go does (reason ``LeaderElection``, type ``Normal``).

        Best effort (see :mod:`aioleader.kubernetes._events`): never raises, bounded by
        ``timeout`` seconds (2 s if ``None``), a no-op when the lock was built with
        ``events=False``. Needs the RBAC verbs ``create`` and ``patch`` on ``events``; without
        them the Event is dropped (logged at DEBUG) and the election is not disturbed.
        """
        await self._events.record(message, self._cached, timeout=timeout)

    async def aclose(self) -> None:
        """Close the API client if the lock built it; a client passed in stays open."""
        await self._client.aclose()

    # -- helpers -------------------------------------------------------------------------------

    def _api(self, api_client: ApiClient, operation: str) -> Any:
        """``CoreV1Api.<operation>_namespaced_<kind>`` on ``api_client``."""
        return getattr(_core(api_client), f"{operation}_namespaced_{self._method}")

    def _accept(self, verb: str, reply: Reply) -> Observed:
        """Raise for a failed reply; otherwise cache the object it carries and return its record."""
        if not reply.ok:
            raise error_for(verb, self._ref, reply)
        obj, version = decode_object(verb, self._ref, reply, self.kind)
        self._cached = obj
        annotations = obj["metadata"].get("annotations")
        value = annotations.get(LEADER_ANNOTATION) if isinstance(annotations, dict) else None
        record, raw = decode_annotation(value)
        # Whole-second times: the version tells two renewals within one second apart.
        return Observed(record=record, raw=raw, version=version, precise=False)
