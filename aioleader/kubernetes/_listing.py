"""Listing Leases: an application's by label (``aioleader status -l SELECTOR``), and a lock's
siblings by name prefix ([`LeaseLock.list_siblings()`][LeaseLock.list_siblings], which
[`elect_shards()`][aioleader.elect_shards] uses to discover the other replicas' membership locks: one LIST
of the namespace's Leases, filtered by name on our side, since a field selector cannot match a
prefix). Both need the RBAC verb ``list`` on ``leases``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client import CoordinationV1Api

from .._exceptions import LockError
from .._lock import Observed
from ._client import KubeClient
from ._errors import error_for
from ._lease import observed_lease
from ._reply import ObjectRef, decode_json

__all__ = ["list_by_prefix", "list_leases"]


async def list_leases(
    label_selector: str,
    namespace: str | None,
    *,
    api_client: Any | None = None,
    timeout: float = 10.0,
) -> list[tuple[str, str, Observed]]:
    """``(namespace, name, observed)`` of every Lease matching ``label_selector``, in
    ``namespace`` (``None``: all namespaces), sorted. Needs ``list`` on ``leases``."""
    client = KubeClient(api_client)
    ref = ObjectRef("coordination.k8s.io", "leases", namespace or "*", f"-l {label_selector}")

    def send(api: Any, t: Any) -> Any:
        leases: Any = CoordinationV1Api(api)
        if namespace is None:
            return leases.list_lease_for_all_namespaces(
                label_selector=label_selector, _preload_content=False, _request_timeout=t
            )
        return leases.list_namespaced_lease(
            namespace, label_selector=label_selector, _preload_content=False, _request_timeout=t
        )

    try:
        reply = await client.request("list", ref, send, timeout=timeout)
    finally:
        await client.aclose()
    if not reply.ok:
        raise error_for("list", ref, reply)
    found: list[tuple[str, str, Observed]] = []
    items = decode_json("list", ref, reply).get("items")
    for item in items if isinstance(items, list) else []:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict):
            continue
        found.append(
            (
                str(meta.get("namespace", "")),
                str(meta.get("name", "")),
                observed_lease(item, str(meta.get("resourceVersion", ""))),
            )
        )
    return sorted(found, key=lambda entry: (entry[0], entry[1]))


async def list_by_prefix(
    client: KubeClient,
    ref: ObjectRef,
    path: str,
    decode: Callable[[dict[str, Any], str], Observed],
    prefix: str,
    *,
    timeout: float | None,
) -> dict[str, Observed]:
    """The objects of the collection at ``path`` (``ref``'s namespace and kind) whose name starts
    with ``prefix``, decoded by ``decode``: name -> record. One GET on the lock's own request
    path; raises [`LockError`][LockError] (transient) or [`ElectionError`][aioleader.ElectionError] (e.g. 403)
    like every other request of the lock."""
    listing = ObjectRef(group=ref.group, plural=ref.plural, namespace=ref.namespace, name="")
    reply = await client.send("list", listing, "GET", path, timeout=timeout)
    if not reply.ok:
        raise error_for("list", listing, reply)
    data = decode_json("list", listing, reply)
    items = data.get("items")
    if not isinstance(items, list):
        raise LockError(f"cannot list {listing}: the reply has no items list")
    found: dict[str, Observed] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        metadata = item.get("metadata")
        if not isinstance(metadata, dict):
            continue
        name, version = metadata.get("name"), metadata.get("resourceVersion")
        if isinstance(name, str) and name.startswith(prefix) and isinstance(version, str):
            found[name] = decode(item, version)
    return found
