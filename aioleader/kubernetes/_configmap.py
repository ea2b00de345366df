"""The ConfigMap lock: client-go's (and the official Python client's) ``ConfigMapLock``."""

from __future__ import annotations

from typing import ClassVar, final

from ._annotation import AnnotationLock

__all__ = ["ConfigMapLock"]


@final
class ConfigMapLock(AnnotationLock):
    """A leader election lock kept in an annotation of a core/v1 ConfigMap.

    Synopsis::

        lock = ConfigMapLock("my-lock", namespace="default")     # identity: $POD_NAME or host_pid
        async with lock, elect(lock) as leadership:
            ...

    **Prefer** [`LeaseLock`][aioleader.kubernetes.LeaseLock]. A Lease is purpose-built for this: the
    cheapest object the API server stores, with typed fields it validates, and nobody watches it
    for anything else. A ConfigMap lock rewrites the ConfigMap on every renewal (every retry
    period), waking everything that watches ConfigMaps in the namespace (config reloaders,
    operators, controller informers), and its record is unvalidated JSON in an annotation.
    client-go has dropped this lock type. Use it to interoperate with peers that still use it
    (older client-go components, the official Python client's ``leaderelection``), and to migrate
    them to a Lease without ever having two leaders: see [`MultiLock`][aioleader.locks.MultiLock].

    The record is client-go's JSON in the annotation ``control-plane.alpha.kubernetes.io/leader``
    (``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``, ``renewTime``,
    ``leaderTransitions``; times in RFC 3339 seconds, ``2006-01-02T15:04:05Z``), so peers of
    those implementations and this lock agree on one election. A ConfigMap without the annotation
    is a free lock; an annotation that cannot be read is not free but taken over only after it
    has stayed unchanged for a lease duration (see
    `decode_annotation()`).

    Renewal is one PUT of the cached ConfigMap with only the annotation replaced (its ``data``,
    labels and other annotations are sent back untouched), carrying the cached
    ``resourceVersion``: kube-apiserver refuses it with 409 if anybody wrote in between. A
    ConfigMap cannot be created by PUT, so renewing a deleted one is a 404, a lost
    compare-and-swap. ``api_client``, ``identity``, ``labels`` and ``annotations`` behave as for
    [`LeaseLock`][aioleader.kubernetes.LeaseLock] (labels and annotations are set on create only).
    Requires the RBAC verbs ``get``, ``create`` and ``update`` on ``configmaps``, and
    ``list`` and ``watch`` for followers to watch it (`watch()`; without them they poll).
    """

    kind: ClassVar[str] = "ConfigMap"
    plural: ClassVar[str] = "configmaps"
    _method: ClassVar[str] = "config_map"
