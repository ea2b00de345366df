"""The annotation locks: client-go's ``ConfigMapLock`` and ``EndpointsLock`` for anyio.

Before Leases existed, client-go kept the leader election record as JSON in the annotation
``control-plane.alpha.kubernetes.io/leader`` of an ordinary core/v1 object. Both kinds share
everything but their API paths, so the lock lives here once and `._configmap` and
`._endpoints` only name the kind.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Final

from kubernetes_asyncio.client import CoreV1Api

from .._lock import Observed
from .._record import (
    LEADER_ANNOTATION,
    UNPARSEABLE_HOLDER,
    LeaderElectionRecord,
    record_from_annotation,
    record_to_annotation,
)
from ._object import ObjectLock

__all__ = ["UNPARSEABLE_HOLDER", "AnnotationLock", "decode_annotation"]

_API_VERSION: Final = "v1"


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
      [`UNPARSEABLE_HOLDER`][UNPARSEABLE_HOLDER]; an object's other fields are read as usual (so a valid
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
    `record_from_annotation()` for how each field is read).
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


def _observed_annotation(obj: dict[str, Any], version: str) -> Observed:
    """The record in the leader annotation of ``obj`` (the JSON dict) at ``version``."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    value = annotations.get(LEADER_ANNOTATION) if isinstance(annotations, dict) else None
    record, raw = decode_annotation(value)
    # Whole-second times: the version tells two renewals within one second apart.
    return Observed(record=record, raw=raw, version=version, precise=False)


class AnnotationLock(ObjectLock):
    """A lock whose record is JSON in the ``control-plane.alpha.kubernetes.io/leader`` annotation.

    Subclasses name the core/v1 kind. Everything else - construction, caching, the one-PUT
    renewal, bounded requests, error translation, reading garbage, Events, watching - is shared.

    An object without the leader annotation reads as a free lock; one whose annotation cannot be
    read reads as held by [`UNPARSEABLE_HOLDER`][UNPARSEABLE_HOLDER] (see [`decode_annotation()`][decode_annotation]). A renewal
    changes only the leader annotation: data, subsets, labels, other annotations and owner
    references are sent back as the server last returned them. A ConfigMap cannot be created by
    PUT (renewing a deleted one is a 404); an Endpoints object could, but the cached ``uid`` is a
    precondition (409).
    """

    api_version: ClassVar[str] = _API_VERSION
    group: ClassVar[str] = ""
    _api_class: ClassVar[Any] = CoreV1Api
    # A namespace's ConfigMaps and Endpoints are not mostly locks: they are large (data, and
    # Endpoints change with every pod), so following one lock must not list and watch them all.
    shared_watch: ClassVar[bool] = False

    def _check(self) -> None:
        if self._identity == UNPARSEABLE_HOLDER:
            raise ValueError(f"identity {UNPARSEABLE_HOLDER!r} is reserved")
        if LEADER_ANNOTATION in self._annotations:
            raise ValueError(
                f"annotations: {LEADER_ANNOTATION!r} holds the leader election record and is "
                "written by the lock itself"
            )

    @staticmethod
    def _decode(obj: dict[str, Any], version: str) -> Observed:
        return _observed_annotation(obj, version)

    def _create_body(
        self, record: LeaderElectionRecord, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        # The object holds the annotation and nothing else but the configured labels and
        # annotations, as client-go creates it.
        metadata["annotations"] = {
            **metadata.get("annotations", {}),
            LEADER_ANNOTATION: record_to_annotation(record),
        }
        return {"apiVersion": _API_VERSION, "kind": self.kind, "metadata": metadata}

    def _patch_body(self, record: LeaderElectionRecord, metadata: dict[str, Any]) -> dict[str, Any]:
        metadata["annotations"] = {LEADER_ANNOTATION: record_to_annotation(record)}
        return {"metadata": metadata}

    def _update_body(
        self, cached: dict[str, Any], kept: LeaderElectionRecord, record: LeaderElectionRecord
    ) -> dict[str, Any]:
        metadata = dict(cached.get("metadata") or {})
        annotations = metadata.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        # Record fields we do not model are kept from the server's copy unless the record carries
        # its own (as LeaseLock does for the spec); the modelled ones are exactly the record's.
        value = record_to_annotation(record.with_changes(extra={**kept.extra, **record.extra}))
        metadata["annotations"] = {**annotations, LEADER_ANNOTATION: value}
        return {"apiVersion": _API_VERSION, "kind": self.kind, **cached, "metadata": metadata}
