"""The ``coordination.k8s.io/v1`` Lease lock, client-go's ``resourcelock.LeaseLock`` for anyio."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Final, final

from kubernetes_asyncio.client import CoordinationV1Api

from .._lock import Observed
from .._record import (
    LEASE_SPEC_FIELDS,
    LeaderElectionRecord,
    record_from_lease_spec,
    record_to_lease_spec,
)
from ._object import ObjectLock, _serialize
from ._template import RenewalTemplate

__all__ = ["LeaseLock"]

_API_VERSION: Final = "coordination.k8s.io/v1"
_KIND: Final = "Lease"


@final
class LeaseLock(ObjectLock):
    """A leader election lock stored in a ``coordination.k8s.io/v1`` Lease, as client-go does.

    Synopsis::

        lock = LeaseLock("my-lock", namespace="default")        # identity: $POD_NAME or host_pid
        async with lock, elect(lock) as leadership:
            ...

    ``api_client`` is a kubernetes_asyncio ``ApiClient`` the lock borrows (it is never closed by
    the lock). Without one, the lock loads the in-cluster configuration if
    ``KUBERNETES_SERVICE_HOST`` is set, else ``$KUBECONFIG`` / ``~/.kube/config``, on first use,
    and closes the client it built in `aclose()`.

    ``labels``, ``annotations`` and ``owner_references`` are written on the Lease when this lock
    creates it (for ownership, cleanup and ``kubectl get leases -l ...``; an owner reference to
    the Deployment makes the garbage collector delete the Lease with it) and kept by every
    update. ``labels`` are also written by every update, as client-go 1.34's
    ``LeaseLock.Labels``: each new holder's labels (e.g. its zone) replace the previous
    holder's values for the same keys; other labels are kept.

    ``create=False``: the lock never creates the Lease, which must be created beforehand (RBAC
    ``resourceNames`` cannot restrict ``create``, so this is what allows a Role that names the
    one Lease). While it is missing, every acquisition attempt fails with
    [`LockNotFound`][aioleader.LockNotFound], retried every retry period, shown in the election's
    ``statistics().last_error`` and logged at WARNING once (again after each reappearance
    and disappearance); nothing crashes.

    Transitions are recorded as core/v1 Events on the Lease, as client-go does (reason
    ``LeaderElection``, ``"<identity> became leader"`` / ``"<identity> stopped leading"``), best
    effort: a failure (e.g. no RBAC for ``create`` and ``patch`` on ``events``) is logged at DEBUG
    and never disturbs the election. ``events=False`` sends none.

    Every request reads and writes plain JSON: the whole Lease object is cached as the server
    returned it and written back with only the ``spec`` replaced, so metadata and spec fields this
    library does not model (owner references, a future spec field) survive a renewal. Renewal is
    one PUT carrying the cached ``resourceVersion``; kube-apiserver refuses it with 409 if anybody
    wrote in between, which is the whole of the election's safety. Requires the RBAC verbs
    ``get``, ``create`` (unless ``create=False``) and ``update`` on ``leases`` in the namespace (and ``list`` and ``watch``
    for followers to watch it, see `watch()`).

    The lock runs on anyio's asyncio backend (kubernetes_asyncio uses aiohttp).
    """

    kind: ClassVar[str] = _KIND
    api_version: ClassVar[str] = _API_VERSION
    group: ClassVar[str] = "coordination.k8s.io"
    plural: ClassVar[str] = "leases"
    _api_class: ClassVar[Any] = CoordinationV1Api
    _method: ClassVar[str] = "lease"
    _labels_on_update: ClassVar[bool] = True
    _template: RenewalTemplate | None = None  # the renewal body, see _template.py

    @staticmethod
    def _decode(obj: dict[str, Any], version: str) -> Observed:
        return observed_lease(obj, version)

    @property
    def supports_listing(self) -> bool:
        return True

    async def list_siblings(
        self, prefix: str, *, timeout: float | None = None
    ) -> dict[str, Observed]:
        """The Leases of this lock's namespace whose name starts with ``prefix`` (one LIST of the
        namespace, filtered here; RBAC verb ``list`` on ``leases``). The cached object is left
        alone."""
        from ._listing import list_by_prefix  # _listing imports this module's observed_lease

        return await list_by_prefix(
            self._client, self._ref, self._collection_path, self._decode, prefix, timeout=timeout
        )

    def _create_body(
        self, record: LeaderElectionRecord, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "apiVersion": _API_VERSION,
            "kind": _KIND,
            "metadata": metadata,
            "spec": record_to_lease_spec(record),
        }

    def _update_body(
        self, cached: dict[str, Any], kept: LeaderElectionRecord, record: LeaderElectionRecord
    ) -> dict[str, Any]:
        # Spec fields we do not model are kept from the server's copy unless the record carries
        # its own; the modelled ones are exactly the record's. A PUT to a missing Lease would
        # create it, but the cached resourceVersion makes it a 409 instead.
        spec = {**kept.extra, **record_to_lease_spec(record)}
        return {"apiVersion": _API_VERSION, "kind": _KIND, **cached, "spec": spec}

    def _update_bytes(
        self, cached: dict[str, Any], kept: LeaderElectionRecord, record: LeaderElectionRecord
    ) -> bytes:
        # A renewal changes two values of the body: metadata.resourceVersion and spec.renewTime.
        # The rest is serialized once into a template and reused while it stays the same.
        template = self._template
        if template is None or not template.fits(cached, kept, record):
            template = self._template = RenewalTemplate.build(
                self._merged_update, cached, kept, record
            )
            if template is None:
                return _serialize(self._merged_update(cached, kept, record))
        return template.fill(cached, record)

    def _patch_body(self, record: LeaderElectionRecord, metadata: dict[str, Any]) -> dict[str, Any]:
        # Every modelled field, null for those the record lacks (a merge patch deletes them).
        spec: dict[str, Any] = dict.fromkeys(LEASE_SPEC_FIELDS)
        spec.update(record_to_lease_spec(record))
        return {"metadata": metadata, "spec": spec}


#: The canonical encoding of a spec (for ``raw``): one encoder for every reply, as
#: ``json.dumps`` with options builds a new one per call.
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def observed_lease(lease: dict[str, Any], version: str) -> Observed:
    """The record of a Lease (the JSON dict) at ``version``."""
    spec = lease.get("spec")
    # Canonical bytes of the spec as stored, so that any change, even one in a field we do not
    # model or cannot parse, reads as a change (and a metadata-only change does not). Never
    # raises: surrogatepass for a lone surrogate that a "\ud800" escape decodes to, and a spec
    # nested too deep to encode again from here is compared by its type alone (garbage that
    # deep is not something a conforming writer stores; its record is still read).
    try:
        text = _CANONICAL.encode(spec)
    except (ValueError, TypeError, RecursionError):
        text = f"<unencodable {type(spec).__name__}>"
    raw = text.encode("utf-8", "surrogatepass")
    return Observed(record=record_from_lease_spec(spec), raw=raw, version=version)
