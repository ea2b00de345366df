"""Pods and EndpointSlices as kube-apiserver serves them, through the real client: what the
traffic-to-the-leader hooks (PodRoleLabel, LeaderEndpoints) use. They run against a real cluster
too (``AIOLEADER_E2E=1``)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException

if TYPE_CHECKING:
    from conftest import KubeTarget

pytestmark = pytest.mark.asyncio

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def pod_body(name: str, **labels: str) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }


def slice_body(name: str, **fields: Any) -> Any:
    body: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.7"]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    body.update(fields)
    return body


async def raw(call: Any) -> tuple[int, dict[str, Any]]:
    response = await call
    try:
        return response.status, json.loads(await response.read())
    finally:
        response.release()


async def failure(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as info:
        await call
    return info.value.status, json.loads(info.value.body or "")


def invalid(kind: str, name: str, causes: list[tuple[str, str, str]]) -> dict[str, Any]:
    messages = [f"{field}: {message}" for _, field, message in causes]
    joined = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{kind}.discovery.k8s.io "{name}" is invalid: {joined}',
        "reason": "Invalid",
        "details": {
            "name": name,
            "group": "discovery.k8s.io",
            "kind": kind,
            "causes": [
                {"reason": reason, "message": message, "field": field}
                for reason, field, message in causes
            ],
        },
        "code": 422,
    }


@pytest.mark.parametrize("content_type", [MERGE, STRATEGIC])
async def test_pod_labels_are_merge_patched_and_removed_with_null(
    kube: KubeTarget, content_type: str
) -> None:
    pods: Any = client.CoreV1Api(kube.api_client)
    ns = kube.namespace
    await pods.create_namespaced_pod(ns, pod_body("p", app="x", role="leader"))
    code, patched = await raw(
        pods.patch_namespaced_pod(
            "p",
            ns,
            {"metadata": {"labels": {"role": "standby"}}},
            _content_type=content_type,
            _preload_content=False,
        )
    )
    assert code == 200
    assert patched["kind"] == "Pod"
    assert patched["metadata"]["labels"] == {"app": "x", "role": "standby"}
    code, patched = await raw(
        pods.patch_namespaced_pod(
            "p",
            ns,
            {"metadata": {"labels": {"role": None}}},
            _content_type=content_type,
            _preload_content=False,
        )
    )
    assert patched["metadata"]["labels"] == {"app": "x"}
    # The patched Pod is listed by label and its spec survives the patches.
    listed = await pods.list_namespaced_pod(ns, label_selector="app=x")
    assert [p.metadata.name for p in listed.items] == ["p"]
    assert listed.items[0].spec.containers[0].name == "app"


async def test_patching_a_missing_pod_is_not_found(kube: KubeTarget) -> None:
    pods: Any = client.CoreV1Api(kube.api_client)
    code, body = await failure(
        pods.patch_namespaced_pod(
            "nope", kube.namespace, {"metadata": {"labels": {"a": "b"}}}, _content_type=MERGE
        )
    )
    assert code == 404
    assert body["message"] == 'pods "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "pods"}


async def test_pod_label_changes_are_watched(kube: KubeTarget) -> None:
    pods: Any = client.CoreV1Api(kube.api_client)
    ns = kube.namespace
    created = await pods.create_namespaced_pod(ns, pod_body("w", role="standby"))
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async with watch.Watch() as w:
            async for event in w.stream(
                pods.list_namespaced_pod,
                ns,
                field_selector="metadata.name=w",
                resource_version=created.metadata.resource_version,
                timeout_seconds=5,
            ):
                seen.append((event["type"], event["object"].metadata.labels["role"]))
                if len(seen) == 1:
                    return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    await pods.patch_namespaced_pod(
        "w", ns, {"metadata": {"labels": {"role": "leader"}}}, _content_type=MERGE
    )
    await asyncio.wait_for(task, 10)
    assert seen == [("MODIFIED", "leader")]


async def test_endpoint_slice_create_update_and_defaults(kube: KubeTarget) -> None:
    discovery: Any = client.DiscoveryV1Api(kube.api_client)
    ns = kube.namespace
    body = slice_body("svc-leader", ports=[{"port": 80}])
    code, created = await raw(
        discovery.create_namespaced_endpoint_slice(ns, body, _preload_content=False)
    )
    assert code == 201
    assert created["kind"] == "EndpointSlice"
    assert created["ports"] == [{"name": "", "protocol": "TCP", "port": 80}]
    assert created["endpoints"] == [{"addresses": ["10.0.0.7"]}]
    # Emptied with a compare-and-swap on its version; a stale version is a Conflict.
    emptied = {**created, "endpoints": []}
    code, updated = await raw(
        discovery.replace_namespaced_endpoint_slice(
            "svc-leader", ns, emptied, _preload_content=False
        )
    )
    assert code == 200
    assert "endpoints" not in updated or updated["endpoints"] in (None, [])
    code, conflict = await failure(
        discovery.replace_namespaced_endpoint_slice("svc-leader", ns, emptied)
    )
    assert code == 409
    assert conflict["reason"] == "Conflict"
    assert conflict["message"] == (
        'Operation cannot be fulfilled on endpointslices.discovery.k8s.io "svc-leader": the '
        "object has been modified; please apply your changes to the latest version and try again"
    )
    listed = await discovery.list_namespaced_endpoint_slice(
        ns, label_selector="kubernetes.io/service-name=svc"
    )
    assert [s.metadata.name for s in listed.items] == ["svc-leader"]
    code, body = await failure(
        discovery.create_namespaced_endpoint_slice(ns, slice_body("svc-leader"))
    )
    assert code == 409
    assert body["reason"] == "AlreadyExists"


async def test_endpoint_slice_put_does_not_create(kube: KubeTarget) -> None:
    discovery: Any = client.DiscoveryV1Api(kube.api_client)
    code, body = await failure(
        discovery.replace_namespaced_endpoint_slice(
            "missing", kube.namespace, slice_body("missing")
        )
    )
    assert code == 404
    assert body["message"] == 'endpointslices.discovery.k8s.io "missing" not found'


@pytest.mark.parametrize(
    ("fields", "causes"),
    [
        (
            {"addressType": "IPv5"},
            [
                (
                    "FieldValueNotSupported",
                    "addressType",
                    'Unsupported value: "IPv5": supported values: "FQDN", "IPv4", "IPv6"',
                )
            ],
        ),
        (
            {"endpoints": [{"addresses": []}]},
            [
                (
                    "FieldValueRequired",
                    "endpoints[0].addresses",
                    "Required value: must contain at least 1 address",
                )
            ],
        ),
        (
            {"endpoints": [{"addresses": ["10.0.0.300"]}]},
            [
                (
                    "FieldValueInvalid",
                    "endpoints[0].addresses[0]",
                    'Invalid value: "10.0.0.300": must be a valid IPv4 address',
                )
            ],
        ),
        (
            {"ports": [{"name": "http", "port": 1}, {"name": "http", "port": 2}]},
            [("FieldValueDuplicate", "ports[1].name", 'Duplicate value: "http"')],
        ),
        (
            {"ports": [{"name": "http", "port": 1, "protocol": "QUIC"}]},
            [
                (
                    "FieldValueNotSupported",
                    "ports[0].protocol",
                    'Unsupported value: "QUIC": supported values: "SCTP", "TCP", "UDP"',
                )
            ],
        ),
    ],
)
async def test_invalid_endpoint_slices(
    kube: KubeTarget, fields: dict[str, Any], causes: list[tuple[str, str, str]]
) -> None:
    discovery: Any = client.DiscoveryV1Api(kube.api_client)
    code, body = await failure(
        discovery.create_namespaced_endpoint_slice(kube.namespace, slice_body("bad", **fields))
    )
    assert (code, body) == (422, invalid("EndpointSlice", "bad", causes))


async def test_endpoint_slice_address_type_is_immutable(kube: KubeTarget) -> None:
    discovery: Any = client.DiscoveryV1Api(kube.api_client)
    ns = kube.namespace
    _, created = await raw(
        discovery.create_namespaced_endpoint_slice(ns, slice_body("imm"), _preload_content=False)
    )
    changed = {**created, "addressType": "IPv6", "endpoints": [{"addresses": ["fd00::7"]}]}
    code, body = await failure(discovery.replace_namespaced_endpoint_slice("imm", ns, changed))
    assert (code, body) == (
        422,
        invalid(
            "EndpointSlice",
            "imm",
            [("FieldValueInvalid", "addressType", 'Invalid value: "IPv6": field is immutable')],
        ),
    )
