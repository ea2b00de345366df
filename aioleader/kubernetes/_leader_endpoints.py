"""The EndpointSlice of a selector-less Service, pointing at the leader's Pod IP alone."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, final

from kubernetes_asyncio.client import DiscoveryV1Api

from .._metrics import ElectionMetrics
from ._client import KubeClient
from ._errors import error_for
from ._names import check_name, check_namespace
from ._reply import ObjectRef, decode_object
from ._term_hook import ConvergingHook, pod_namespace

if TYPE_CHECKING:
    from .._leadership import Term

__all__ = ["LeaderEndpoints"]

#: The label that ties an EndpointSlice to its Service.
SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
#: Who manages the slice: the EndpointSlice controller leaves slices managed by others alone.
MANAGED_BY_LABEL: Final = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY: Final = "aioleader"

_API_VERSION: Final = "discovery.k8s.io/v1"
_KIND: Final = "EndpointSlice"
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")

#: A port: its number, ``(name, number)`` or ``(name, number, protocol)``; the name must be the
#: Service port's name (``""`` for a Service with one unnamed port).
PortSpec = int | tuple[str, int] | tuple[str, int, str]


def _discovery(api_client: Any) -> Any:
    """discovery.k8s.io/v1, typed ``Any`` (``_preload_content=False`` returns aiohttp's
    response; bodies are plain dicts)."""
    return DiscoveryV1Api(api_client)


def _port(spec: object, index: int) -> dict[str, Any]:
    if isinstance(spec, int) and not isinstance(spec, bool):
        name, number, protocol = "", spec, "TCP"
    elif isinstance(spec, tuple) and len(spec) in (2, 3):
        name, number = spec[0], spec[1]
        protocol = spec[2] if len(spec) == 3 else "TCP"
    else:
        raise ValueError(
            f"ports[{index}] must be a port number, (name, port) or (name, port, protocol), "
            f"got {spec!r}"
        )
    if not isinstance(name, str) or (name and _dns_label(name) is None):
        raise ValueError(
            f"ports[{index}]: the name must be the Service port's name (a DNS-1123 label, or "
            f"'' for a single unnamed port), got {name!r}"
        )
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        raise ValueError(f"ports[{index}]: the port must be 1-65535, got {number!r}")
    if protocol not in _PROTOCOLS:
        raise ValueError(f"ports[{index}]: the protocol must be TCP, UDP or SCTP, got {protocol!r}")
    return {"name": name, "protocol": protocol, "port": number}


def _dns_label(value: str) -> str | None:
    """``value`` if it is a DNS-1123 label, else ``None``."""
    try:
        return check_namespace(value)
    except ValueError:
        return None


@final
class LeaderEndpoints(ConvergingHook):
    """Keep the EndpointSlice of a selector-less Service pointing at the leader's Pod IP: a
    [TermHook][aioleader.TermHook] for ``elect(..., hooks=[...])``.

    Synopsis::

        endpoints = LeaderEndpoints("my-svc", ports=[("http", 8080)])
        async with elect(lock, hooks=[endpoints]) as leadership: ...

    with a Service ``my-svc`` that has *no selector* and a port named ``http``: traffic to it
    reaches the leader alone.

    When a term starts, the leader writes the slice (``<service>-leader`` unless ``slice_name``
    says otherwise, labelled ``kubernetes.io/service-name: <service>``) with one endpoint, its
    own ``address`` (``$POD_IP`` from the Downward API by default) and the ``ports``; the slice
    is created if missing. Before the lock is released at the end of a term (the elector waits,
    at most RD/2), the slice is emptied (``endpoints: []``) if it still names this address.
    At start-up, a slice naming this address (left by a crashed process) is emptied too. Every
    write is a compare-and-swap on the slice's resourceVersion, so a late standby can never
    empty a slice that a newer leader has written.

    RBAC: ``get`` and ``update`` on ``endpointslices`` (group ``discovery.k8s.io``) with
    ``resourceNames: [<slice>]``, the one object; plus ``create`` (which ``resourceNames``
    cannot restrict) unless the slice is created beforehand. Failures are retried and reported
    as for [`PodRoleLabel`][aioleader.kubernetes.PodRoleLabel]; they never end a term.
    """

    def __init__(
        self,
        service: str,
        ports: Sequence[PortSpec],
        *,
        address: str | None = None,
        namespace: str | None = None,
        slice_name: str | None = None,
        pod: str | None = None,
        timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        metrics: ElectionMetrics | None = None,
        api_client: Any | None = None,
    ) -> None:
        if not isinstance(service, str) or _dns_label(service) is None:
            raise ValueError(f"service must be a Service name (a DNS-1123 label), got {service!r}")
        if isinstance(ports, str | bytes) or not isinstance(ports, Sequence) or not ports:
            raise ValueError(f"ports must be a non-empty list of ports, got {ports!r}")
        self.ports = tuple(_port(p, i) for i, p in enumerate(ports))
        names = [p["name"] for p in self.ports]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"ports: the name {duplicate!r} is used twice")
        if address is None:
            address = os.environ.get("POD_IP") or None
            if address is None:
                raise ValueError(
                    "LeaderEndpoints needs the Pod's IP: set POD_IP from the Downward API "
                    "(env: valueFrom: fieldRef: fieldPath: status.podIP) or pass address="
                )
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"address must be an IP address, got {address!r}") from None
        if ip.is_unspecified or ip.is_loopback or ip.is_link_local:
            raise ValueError(f"address must be a Pod IP, not {address!r}")
        super().__init__(
            timeout=timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            metrics=metrics,
            api_client=api_client,
        )
        self.service = service
        self.address = str(ip)
        self.address_type = "IPv4" if ip.version == 4 else "IPv6"
        self.pod = pod if pod is None else check_name(pod, "pod")
        if self.pod is None and os.environ.get("POD_NAME"):
            self.pod = check_name(os.environ["POD_NAME"], "POD_NAME")
        name = f"{service}-leader" if slice_name is None else slice_name
        self._ref = ObjectRef(
            group="discovery.k8s.io",
            plural="endpointslices",
            namespace=pod_namespace(namespace, "LeaderEndpoints"),
            name=check_name(name, "slice_name"),
        )

    def __repr__(self) -> str:
        return (
            f"LeaderEndpoints({self.service!r}, address={self.address!r}, "
            f"slice={self._ref.name!r}, namespace={self._ref.namespace!r})"
        )

    @property
    def slice_name(self) -> str:
        return self._ref.name

    @property
    def namespace(self) -> str:
        return self._ref.namespace

    def _describe(self) -> str:
        return str(self._ref)

    def _endpoints(self) -> list[dict[str, Any]]:
        endpoint: dict[str, Any] = {
            "addresses": [self.address],
            "conditions": {"ready": True, "serving": True, "terminating": False},
        }
        if self.pod is not None:
            endpoint["targetRef"] = {
                "kind": "Pod",
                "namespace": self._ref.namespace,
                "name": self.pod,
            }
        return [endpoint]

    def _names_us(self, obj: dict[str, Any]) -> bool:
        endpoints = obj.get("endpoints")
        if not isinstance(endpoints, list):
            return False
        return any(
            isinstance(e, dict)
            and isinstance(e.get("addresses"), list)
            and self.address in e["addresses"]
            for e in endpoints
        )

    async def _apply(self, client: KubeClient, leading: bool, term: Term | None) -> None:
        current = await self._read(client)
        if not leading:
            if current is None or not self._names_us(current):
                return  # not ours: a newer leader's slice (or none) is left alone
            await self._write(client, {**current, "endpoints": []})
            return
        labels = {SERVICE_NAME_LABEL: self.service, MANAGED_BY_LABEL: MANAGED_BY}
        fields = {
            "addressType": self.address_type,
            "endpoints": self._endpoints(),
            "ports": [dict(p) for p in self.ports],
        }
        if current is None:
            await self._create(client, labels, fields)
            return
        metadata = dict(current.get("metadata") or {})
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
        await self._write(client, {**current, "metadata": metadata, **fields})

    async def _read(self, client: KubeClient) -> dict[str, Any] | None:
        ref = self._ref
        reply = await client.request(
            "get",
            ref,
            lambda api, t: _discovery(api).read_namespaced_endpoint_slice(
                ref.name, ref.namespace, _preload_content=False, _request_timeout=t
            ),
            timeout=self._timeout,
        )
        if reply.status == 404 and reply.status_object() is not None:
            return None
        if not reply.ok:
            raise error_for("get", ref, reply)
        obj, _ = decode_object("get", ref, reply, _KIND)
        return obj

    async def _create(
        self, client: KubeClient, labels: dict[str, str], fields: dict[str, Any]
    ) -> None:
        ref = self._ref
        body = {
            "apiVersion": _API_VERSION,
            "kind": _KIND,
            "metadata": {"name": ref.name, "namespace": ref.namespace, "labels": labels},
            **fields,
        }
        reply = await client.request(
            "create",
            ref,
            lambda api, t: _discovery(api).create_namespaced_endpoint_slice(
                ref.namespace, body, _preload_content=False, _request_timeout=t
            ),
            timeout=self._timeout,
        )
        if not reply.ok:
            raise error_for("create", ref, reply)

    async def _write(self, client: KubeClient, obj: dict[str, Any]) -> None:
        """PUT carrying the read resourceVersion: a 409 means somebody wrote in between, and the
        next attempt decides again on a fresh read."""
        ref = self._ref
        body = {"apiVersion": _API_VERSION, "kind": _KIND, **obj}
        reply = await client.request(
            "update",
            ref,
            lambda api, t: _discovery(api).replace_namespaced_endpoint_slice(
                ref.name, ref.namespace, body, _preload_content=False, _request_timeout=t
            ),
            timeout=self._timeout,
        )
        if not reply.ok:
            raise error_for("update", ref, reply)
