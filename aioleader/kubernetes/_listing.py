"""Listing an application's Leases by label (``aioleader status -l SELECTOR``)."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio.client import CoordinationV1Api

from .._lock import Observed
from ._client import KubeClient
from ._errors import error_for
from ._lease import observed_lease
from ._reply import ObjectRef, decode_json

__all__ = ["list_leases"]


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
