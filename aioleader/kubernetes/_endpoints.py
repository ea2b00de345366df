"""The Endpoints lock: client-go's ``EndpointsLock``."""

from __future__ import annotations

from typing import ClassVar, final

from ._annotation import AnnotationLock

__all__ = ["EndpointsLock"]


@final
class EndpointsLock(AnnotationLock):
    """A leader election lock kept in an annotation of a core/v1 Endpoints object.

    Synopsis::

        lock = EndpointsLock("my-lock", namespace="kube-system")
        async with lock, elect(lock) as leadership:
            ...

    **Prefer** [`LeaseLock`][aioleader.kubernetes.LeaseLock]; this lock exists only to interoperate
    with old peers and to migrate them (see [`MultiLock`][aioleader.locks.MultiLock]). Endpoints are
    service discovery: kube-proxy on every node, CoreDNS, ingress controllers and service meshes
    watch them, so every renewal (every retry period) of an Endpoints lock wakes all of them,
    cluster-wide, for nothing. A Lease is purpose-built, the cheapest object to store and watch,
    with typed, validated fields. client-go has dropped this lock type, and core/v1 Endpoints
    are deprecated in favour of EndpointSlices (the API server may answer with a deprecation
    warning).

    The record and the semantics are those of [`ConfigMapLock`][aioleader.kubernetes.ConfigMapLock]:
    client-go's JSON in the annotation ``control-plane.alpha.kubernetes.io/leader``, one PUT of
    the cached object per renewal with only the annotation replaced (``subsets`` and everything
    else are sent back untouched), the cached ``resourceVersion`` as the compare-and-swap.
    Renewing a deleted Endpoints object fails on its cached ``uid`` (409) rather than
    resurrecting it. Requires the RBAC verbs ``get``, ``create`` and ``update`` on ``endpoints``, and
    ``list`` and ``watch`` for followers to watch it (`watch()`; without them they poll).
    """

    kind: ClassVar[str] = "Endpoints"
    plural: ClassVar[str] = "endpoints"
    _method: ClassVar[str] = "endpoints"
