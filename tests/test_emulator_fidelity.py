"""The emulator answers like kube-apiserver: codes, reasons and messages, through the real client.

Every test here talks HTTP through kubernetes_asyncio (or, for bodies the client cannot send,
through its aiohttp session). They run against a real cluster too (``AIOLEADER_E2E=1``), except
those marked ``emulator_only``; expected texts are kube-apiserver's own.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException

from aioleader.testing import KubeEmulator

if TYPE_CHECKING:
    from conftest import KubeTarget

pytestmark = pytest.mark.asyncio

LEASE_GROUP = "coordination.k8s.io"
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
SECONDS_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def lease_body(name: str, **spec: Any) -> Any:
    """A Lease as plain JSON (the client sends dicts as they are; Any suits its model types)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": spec,
    }


def plain(**fields: Any) -> Any:
    """Any other object as plain JSON."""
    return fields


def leases(kube: KubeTarget) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(kube.api_client)


def core(kube: KubeTarget) -> client.CoreV1Api:
    return client.CoreV1Api(kube.api_client)


async def failure(call: Awaitable[Any]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the decoded Status body of a call that must fail."""
    with pytest.raises(ApiException) as info:
        await call
    return info.value.status, json.loads(info.value.body or "")


async def raw(call: Awaitable[Any]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and decoded body of a call made with ``_preload_content=False``."""
    response = await call
    try:
        return response.status, json.loads(await response.read())
    finally:
        response.release()


async def send_text(
    kube: KubeTarget,
    method: str,
    path: str,
    data: bytes = b"",
    content_type: str = "application/json",
) -> tuple[int, str]:
    """A request the client would not build (a body that is not JSON), on its own session."""
    api = kube.api_client
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    for setting in (await api.configuration.auth_settings()).values():
        if setting["in"] == "header" and setting["value"]:
            headers[setting["key"]] = setting["value"]
    session = api.rest_client.pool_manager
    url = api.configuration.host + path
    async with session.request(method, url, data=data, headers=headers) as resp:
        return resp.status, (await resp.read()).decode()


async def send(
    kube: KubeTarget,
    method: str,
    path: str,
    data: bytes = b"",
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """Like :func:`send_text`, for a JSON answer."""
    code, text = await send_text(kube, method, path, data, content_type)
    return code, json.loads(text)


async def send_stream(kube: KubeTarget, path: str) -> tuple[int, list[Any]]:
    """A watch, read to its end: the status and the events."""
    code, text = await send_text(kube, "GET", path)
    return code, [json.loads(line) for line in text.splitlines()]


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    body["code"] = code
    return body


# -- create, read, update, delete ------------------------------------------------------------


async def test_lease_lifecycle_and_server_set_metadata(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace
    code, created = await raw(
        api.create_namespaced_lease(
            ns,
            lease_body(
                "x",
                holderIdentity="a",
                leaseDurationSeconds=15,
                renewTime="2024-05-01T10:00:00.123456Z",
            ),
            _preload_content=False,
        )
    )
    assert code == 201
    assert created["kind"] == "Lease"
    assert created["apiVersion"] == "coordination.k8s.io/v1"
    meta = created["metadata"]
    assert meta["name"] == "x"
    assert meta["namespace"] == ns
    assert uuid.UUID(meta["uid"])
    assert SECONDS_TIME.fullmatch(meta["creationTimestamp"])
    assert meta["resourceVersion"].isdigit()
    assert created["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "renewTime": "2024-05-01T10:00:00.123456Z",
    }

    code, got = await raw(api.read_namespaced_lease("x", ns, _preload_content=False))
    assert (code, got["metadata"], got["spec"]) == (200, meta, created["spec"])

    lease = await api.read_namespaced_lease("x", ns)
    lease.spec.holder_identity = "b"
    # A datetime would go out as isoformat(), which the server refuses: send the wire format.
    lease.spec.renew_time = cast(Any, "2024-05-01T10:00:05.000000Z")
    replaced = await api.replace_namespaced_lease("x", ns, lease)
    assert replaced.spec.holder_identity == "b"
    assert replaced.metadata.uid == meta["uid"]
    assert int(replaced.metadata.resource_version) > int(meta["resourceVersion"])

    patched = await api.patch_namespaced_lease("x", ns, {"spec": {"leaseTransitions": 1}})
    assert patched.spec.lease_transitions == 1
    assert patched.spec.holder_identity == "b"
    assert int(patched.metadata.resource_version) > int(replaced.metadata.resource_version)

    code, deleted = await raw(api.delete_namespaced_lease("x", ns, _preload_content=False))
    assert code == 200
    assert deleted == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": "x", "group": LEASE_GROUP, "kind": "leases", "uid": meta["uid"]},
    }
    assert await failure(api.read_namespaced_lease("x", ns)) == (
        404,
        status(
            404,
            "NotFound",
            'leases.coordination.k8s.io "x" not found',
            name="x",
            group=LEASE_GROUP,
            kind="leases",
        ),
    )


async def test_configmap_and_endpoints_lifecycle(kube: KubeTarget) -> None:
    api, ns = core(kube), kube.namespace
    cm = await api.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="cm", annotations={"k": "v"}), data={"a": "1"}
        ),
    )
    assert cm.metadata.annotations == {"k": "v"}
    cm.data = {"a": "2"}
    assert (await api.replace_namespaced_config_map("cm", ns, cm)).data == {"a": "2"}
    patched = await api.patch_namespaced_config_map(
        "cm", ns, {"metadata": {"annotations": {"k": None}}}
    )
    assert not patched.metadata.annotations

    ep = await api.create_namespaced_endpoints(
        ns, client.V1Endpoints(metadata=client.V1ObjectMeta(name="ep", annotations={"x": "y"}))
    )
    assert ep.metadata.annotations == {"x": "y"}
    await api.delete_namespaced_endpoints("ep", ns)
    await api.delete_namespaced_config_map("cm", ns)
    assert await failure(api.read_namespaced_config_map("cm", ns)) == (
        404,
        # The core group is "": omitted from details, as Go's omitempty does.
        status(404, "NotFound", 'configmaps "cm" not found', name="cm", kind="configmaps"),
    )


async def test_one_revision_counter_for_all_types(kube: KubeTarget) -> None:
    lease = await leases(kube).create_namespaced_lease(kube.namespace, lease_body("x"))
    cm = await core(kube).create_namespaced_config_map(
        kube.namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"))
    )
    assert int(cm.metadata.resource_version) > int(lease.metadata.resource_version)
    listed = await leases(kube).list_namespaced_lease(kube.namespace)
    assert int(listed.metadata.resource_version) >= int(cm.metadata.resource_version)


async def test_generate_name(kube: KubeTarget) -> None:
    body = plain(metadata={"generateName": "lock-"}, spec={})
    created = await leases(kube).create_namespaced_lease(kube.namespace, body)
    assert re.fullmatch(r"lock-[a-z0-9]{5}", created.metadata.name)


# -- errors -----------------------------------------------------------------------------------


async def test_create_existing_is_already_exists(kube: KubeTarget) -> None:
    api = leases(kube)
    await api.create_namespaced_lease(kube.namespace, lease_body("x"))
    assert await failure(api.create_namespaced_lease(kube.namespace, lease_body("x"))) == (
        409,
        status(
            409,
            "AlreadyExists",
            'leases.coordination.k8s.io "x" already exists',
            name="x",
            group=LEASE_GROUP,
            kind="leases",
        ),
    )


async def test_stale_resource_version_is_conflict(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace
    first = await api.create_namespaced_lease(ns, lease_body("x", holderIdentity="a"))
    await api.patch_namespaced_lease("x", ns, {"spec": {"holderIdentity": "b"}})
    stale = lease_body("x", holderIdentity="c")
    stale["metadata"]["resourceVersion"] = first.metadata.resource_version
    message = (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "x": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    assert await failure(api.replace_namespaced_lease("x", ns, stale)) == (
        409,
        status(409, "Conflict", message, name="x", group=LEASE_GROUP, kind="leases"),
    )
    cm = await core(kube).create_namespaced_config_map(ns, plain(metadata={"name": "cm"}))
    await core(kube).patch_namespaced_config_map("cm", ns, {"data": {"a": "b"}})
    cm_stale = plain(metadata={"name": "cm", "resourceVersion": cm.metadata.resource_version})
    code, body = await failure(core(kube).replace_namespaced_config_map("cm", ns, cm_stale))
    assert (code, body["reason"]) == (409, "Conflict")
    assert body["message"].startswith('Operation cannot be fulfilled on configmaps "cm": ')


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"leaseDurationSeconds": -1},
            "spec.leaseDurationSeconds",
            "Invalid value: -1: must be greater than 0",
        ),
        (
            {"leaseDurationSeconds": 0},
            "spec.leaseDurationSeconds",
            "Invalid value: 0: must be greater than 0",
        ),
        (
            {"leaseTransitions": -1},
            "spec.leaseTransitions",
            "Invalid value: -1: must be greater than or equal to 0",
        ),
    ],
)
async def test_invalid_lease_spec(
    kube: KubeTarget, spec: dict[str, Any], field: str, message: str
) -> None:
    code, body = await failure(
        leases(kube).create_namespaced_lease(kube.namespace, lease_body("x", **spec))
    )
    assert (code, body) == (
        422,
        status(
            422,
            "Invalid",
            f'Lease.coordination.k8s.io "x" is invalid: {field}: {message}',
            name="x",
            group=LEASE_GROUP,
            kind="Lease",
            causes=[{"reason": "FieldValueInvalid", "message": message, "field": field}],
        ),
    )


async def test_invalid_name_and_several_errors_at_once(kube: KubeTarget) -> None:
    body = lease_body("Bad_Name", leaseDurationSeconds=-1)
    code, got = await failure(leases(kube).create_namespaced_lease(kube.namespace, body))
    name_message = f'Invalid value: "Bad_Name": {SUBDOMAIN_RULE}'
    assert code == 422
    assert got["message"] == (
        'Lease.coordination.k8s.io "Bad_Name" is invalid: [metadata.name: '
        f"{name_message}, spec.leaseDurationSeconds: Invalid value: -1: must be greater than 0]"
    )
    assert got["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": name_message, "field": "metadata.name"},
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: -1: must be greater than 0",
            "field": "spec.leaseDurationSeconds",
        },
    ]
    code, got = await failure(
        core(kube).create_namespaced_config_map(kube.namespace, plain(metadata={}))
    )
    assert (code, got["message"]) == (
        422,
        'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required',
    )


@pytest.mark.emulator_only  # Needs the CoordinatedLeaderElection feature gate on a real cluster.
async def test_coordinated_election_fields(kube: KubeTarget) -> None:
    api = leases(kube)
    code, body = await failure(
        api.create_namespaced_lease(kube.namespace, lease_body("x", preferredHolder="a"))
    )
    assert (code, body["message"]) == (
        422,
        'Lease.coordination.k8s.io "x" is invalid: spec.preferredHolder: Forbidden: may only be '
        "specified if `strategy` is defined",
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueForbidden",
            "message": "Forbidden: may only be specified if `strategy` is defined",
            "field": "spec.preferredHolder",
        }
    ]
    code, body = await failure(
        api.create_namespaced_lease(kube.namespace, lease_body("x", strategy="Newest"))
    )
    assert body["message"] == (
        'Lease.coordination.k8s.io "x" is invalid: spec.strategy.strategy: Unsupported value: '
        '"Newest": supported values: "OldestEmulationVersion"'
    )
    ok = lease_body("x", strategy="OldestEmulationVersion", preferredHolder="a")
    assert (await api.create_namespaced_lease(kube.namespace, ok)).spec.preferred_holder == "a"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2024-05-01T10:00:00Z", 'cannot parse "Z" as ".000000"'),
        ("2024-05-01T10:00:00.123Z", 'cannot parse ".123Z" as ".000000"'),
        ("2024-05-01T10:00:00+00:00", 'cannot parse "+00:00" as ".000000"'),
        ("2024-05-01T10:00:00.123456789Z", 'cannot parse "789Z" as "Z07:00"'),
        ("2024-05-01T10:00:00.123456", 'cannot parse "" as "Z07:00"'),
        ("2024-05-01 10:00:00.123456Z", 'cannot parse " 10:00:00.123456Z" as "T"'),
    ],
)
async def test_micro_time_needs_six_fractional_digits(
    kube: KubeTarget, value: str, problem: str
) -> None:
    body = lease_body("x", renewTime=value)
    assert await failure(leases(kube).create_namespaced_lease(kube.namespace, body)) == (
        400,
        status(
            400,
            "BadRequest",
            f'Lease in version "v1" cannot be handled as a Lease: parsing time "{value}" as '
            f'"2006-01-02T15:04:05.000000Z07:00": {problem}',
        ),
    )


async def test_micro_time_is_normalised_to_utc(kube: KubeTarget) -> None:
    body = lease_body("x", acquireTime="2024-05-01T12:00:00.000001+02:00")
    code, created = await raw(
        leases(kube).create_namespaced_lease(kube.namespace, body, _preload_content=False)
    )
    assert (code, created["spec"]["acquireTime"]) == (201, "2024-05-01T10:00:00.000001Z")


async def test_wrong_json_type_is_bad_request(kube: KubeTarget) -> None:
    body = lease_body("x", leaseDurationSeconds="15")
    assert await failure(leases(kube).create_namespaced_lease(kube.namespace, body)) == (
        400,
        status(
            400,
            "BadRequest",
            'Lease in version "v1" cannot be handled as a Lease: json: cannot unmarshal string '
            "into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32",
        ),
    )


async def test_body_that_is_not_json_is_bad_request(kube: KubeTarget) -> None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases"
    assert await send(kube, "POST", path, b"hello") == (
        400,
        status(
            400,
            "BadRequest",
            "the object provided is unrecognized (must be of type Lease): couldn't get "
            "version/kind; json parse error: invalid character 'h' looking for beginning of "
            "value (68656c6c6f)",
        ),
    )


async def test_create_with_resource_version_is_refused(kube: KubeTarget) -> None:
    body = lease_body("x")
    body["metadata"]["resourceVersion"] = "12"
    # A plain error in the storage layer: 500 without a reason.
    assert await failure(leases(kube).create_namespaced_lease(kube.namespace, body)) == (
        500,
        status(500, "", "resourceVersion should not be set on objects to be created"),
    )


async def test_namespace_and_name_must_match_the_url(kube: KubeTarget) -> None:
    api = leases(kube)
    elsewhere = lease_body("x")
    elsewhere["metadata"]["namespace"] = "elsewhere"
    assert await failure(api.create_namespaced_lease(kube.namespace, elsewhere)) == (
        400,
        status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ),
    )
    await api.create_namespaced_lease(kube.namespace, lease_body("x"))
    assert await failure(api.replace_namespaced_lease("x", kube.namespace, lease_body("y"))) == (
        400,
        status(
            400, "BadRequest", "the name of the object (y) does not match the name on the URL (x)"
        ),
    )


# -- PUT rules differ by type ------------------------------------------------------------------


async def test_lease_put_creates_and_needs_a_resource_version_to_update(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace
    code, created = await raw(
        api.replace_namespaced_lease(
            "x", ns, lease_body("x", holderIdentity="a"), _preload_content=False
        )
    )
    assert (code, created["spec"]["holderIdentity"]) == (201, "a")
    message = (
        'leases.coordination.k8s.io "x" is invalid: metadata.resourceVersion: Invalid value: '
        "0: must be specified for an update"
    )
    assert await failure(
        api.replace_namespaced_lease("x", ns, lease_body("x", holderIdentity="b"))
    ) == (
        422,
        status(
            422,
            "Invalid",
            message,
            name="x",
            group=LEASE_GROUP,
            kind="leases",
            causes=[
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: 0: must be specified for an update",
                    "field": "metadata.resourceVersion",
                }
            ],
        ),
    )


async def test_configmap_put_never_creates_and_overwrites_without_version(kube: KubeTarget) -> None:
    api, ns = core(kube), kube.namespace
    body = plain(metadata={"name": "cm"}, data={"a": "1"})
    assert await failure(api.replace_namespaced_config_map("cm", ns, body)) == (
        404,
        status(404, "NotFound", 'configmaps "cm" not found', name="cm", kind="configmaps"),
    )
    first = await api.create_namespaced_config_map(ns, body)
    replaced = await api.replace_namespaced_config_map(
        "cm", ns, plain(metadata={"name": "cm"}, data={"a": "2"})
    )
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(first.metadata.resource_version)


async def test_endpoints_put_creates(kube: KubeTarget) -> None:
    # Unlike ConfigMaps, Endpoints allow create-on-update (pkg/registry/core/endpoint/strategy.go).
    code, created = await raw(
        core(kube).replace_namespaced_endpoints(
            "ep", kube.namespace, plain(metadata={"name": "ep"}), _preload_content=False
        )
    )
    assert (code, created["kind"]) == (201, "Endpoints")


async def test_delete_preconditions(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace
    created = await api.create_namespaced_lease(ns, lease_body("x"))
    await api.patch_namespaced_lease("x", ns, {"spec": {"holderIdentity": "a"}})
    stale = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=created.metadata.resource_version)
    )
    code, body = await failure(api.delete_namespaced_lease("x", ns, body=stale))
    assert (code, body["reason"]) == (409, "Conflict")
    assert body["message"].startswith(
        f'Operation cannot be fulfilled on Lease.coordination.k8s.io "x": the ResourceVersion in '
        f"the precondition ({created.metadata.resource_version}) does not match"
    )
    fresh = await api.read_namespaced_lease("x", ns)
    ok = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=fresh.metadata.uid))
    await api.delete_namespaced_lease("x", ns, body=ok)


async def test_patch_flavours(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace
    await api.create_namespaced_lease(ns, lease_body("x", holderIdentity="a", leaseTransitions=1))
    path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/x"
    code, merged = await send(
        kube, "PATCH", path, b'{"spec":{"holderIdentity":null}}', "application/merge-patch+json"
    )
    assert (code, merged["spec"]) == (200, {"leaseTransitions": 1})
    ops = [
        {"op": "test", "path": "/spec/leaseTransitions", "value": 1},
        {"op": "replace", "path": "/spec/leaseTransitions", "value": 2},
    ]
    patched = await api.patch_namespaced_lease("x", ns, ops)  # a list goes as json-patch
    assert patched.spec.lease_transitions == 2
    code, body = await failure(api.patch_namespaced_lease("x", ns, ops))  # the test op fails now
    assert (code, body["reason"]) == (422, "Invalid")
    assert await failure(api.patch_namespaced_lease("missing", ns, {"spec": {}})) == (
        404,
        status(
            404,
            "NotFound",
            'leases.coordination.k8s.io "missing" not found',
            name="missing",
            group=LEASE_GROUP,
            kind="leases",
        ),
    )


# -- lists and selectors ----------------------------------------------------------------------


async def test_list_with_field_and_label_selectors(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace
    for name, labels in (("a", {"role": "x", "tier": "1"}), ("b", {"role": "y"}), ("c", {})):
        body = lease_body(name)
        body["metadata"]["labels"] = labels
        await api.create_namespaced_lease(ns, body)

    async def names(field_selector: str = "", label_selector: str = "") -> list[str]:
        found = await api.list_namespaced_lease(
            ns, field_selector=field_selector, label_selector=label_selector
        )
        return [item.metadata.name for item in found.items]

    code, listed = await raw(api.list_namespaced_lease(ns, _preload_content=False))
    assert (code, listed["kind"], listed["apiVersion"]) == (
        200,
        "LeaseList",
        "coordination.k8s.io/v1",
    )
    assert listed["metadata"]["resourceVersion"].isdigit()
    assert "kind" not in listed["items"][0]  # items are bare, as from the real server
    assert await names() == ["a", "b", "c"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name==b") == ["b"]
    assert await names(field_selector="metadata.name!=b") == ["a", "c"]
    assert await names(field_selector=f"metadata.name!=a,metadata.namespace={ns}") == ["b", "c"]
    assert await names(label_selector="role=x") == ["a"]
    assert await names(label_selector="role!=x") == ["b", "c"]
    assert await names(label_selector="role") == ["a", "b"]
    assert await names(label_selector="!role") == ["c"]
    assert await names(label_selector="role in (x, y),tier") == ["a"]
    assert await names(label_selector="role notin (x)") == ["b", "c"]
    everywhere = await api.list_lease_for_all_namespaces(field_selector=f"metadata.namespace={ns}")
    assert [item.metadata.name for item in everywhere.items] == ["a", "b", "c"]
    assert await failure(api.list_namespaced_lease(ns, field_selector="spec.holderIdentity=a")) == (
        400,
        status(
            400,
            "BadRequest",
            '"spec.holderIdentity" is not a known field selector: only "metadata.name", '
            '"metadata.namespace"',
        ),
    )


# -- watches ----------------------------------------------------------------------------------


async def watch_events(
    kube: KubeTarget, timeout: int = 1, **kwargs: Any
) -> list[tuple[str, str, str]]:
    events = []
    async with watch.Watch() as stream:
        async for event in stream.stream(
            leases(kube).list_namespaced_lease, kube.namespace, timeout_seconds=timeout, **kwargs
        ):
            meta = event["raw_object"]["metadata"]
            events.append((event["type"], meta.get("name", ""), meta["resourceVersion"]))
    return events


async def test_watch_starts_with_the_current_state(kube: KubeTarget) -> None:
    a = await leases(kube).create_namespaced_lease(kube.namespace, lease_body("a"))
    b = await leases(kube).create_namespaced_lease(kube.namespace, lease_body("b"))
    events = await watch_events(kube, field_selector="metadata.name!=nothing")
    assert events == [
        ("ADDED", "a", a.metadata.resource_version),
        ("ADDED", "b", b.metadata.resource_version),
    ]


async def test_watch_replays_from_a_resource_version(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace
    created = await api.create_namespaced_lease(ns, lease_body("a"))
    updated = await api.patch_namespaced_lease("a", ns, {"spec": {"holderIdentity": "x"}})
    await api.delete_namespaced_lease("a", ns)
    events = await watch_events(kube, resource_version=created.metadata.resource_version)
    assert [e[:2] for e in events] == [("MODIFIED", "a"), ("DELETED", "a")]
    assert events[0][2] == updated.metadata.resource_version
    # A DELETED event carries the revision of the deletion.
    assert int(events[1][2]) > int(updated.metadata.resource_version)


async def test_watch_timeout_ends_the_stream_cleanly(kube: KubeTarget) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await watch_events(kube, timeout=1) == []
    assert 0.9 <= loop.time() - started < 3


async def test_watch_sees_changes_as_they_happen(kube: KubeTarget) -> None:
    api, ns = leases(kube), kube.namespace

    async def write() -> None:
        await asyncio.sleep(0.2)
        await api.create_namespaced_lease(ns, lease_body("a"))
        await api.patch_namespaced_lease("a", ns, {"metadata": {"labels": {"watched": "no"}}})

    writer = asyncio.ensure_future(write())
    events = await watch_events(kube, timeout=1, label_selector="!watched")
    await writer
    # Leaving the selector reads as a deletion to this watcher.
    assert [e[:2] for e in events] == [("ADDED", "a"), ("DELETED", "a")]


async def test_watch_one_object_by_path(kube: KubeTarget) -> None:
    # The deprecated /watch/ paths: a name in the path is a metadata.name field selector.
    await leases(kube).create_namespaced_lease(kube.namespace, lease_body("a"))
    await leases(kube).create_namespaced_lease(kube.namespace, lease_body("b"))
    path = f"/apis/coordination.k8s.io/v1/watch/namespaces/{kube.namespace}/leases/b"
    code, events = await send_stream(kube, path + "?timeoutSeconds=1")
    assert code == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]
    assert events[0]["object"]["kind"] == "Lease"  # watch events carry kind and apiVersion


@pytest.mark.emulator_only
async def test_watch_ends_when_the_client_goes(kube: KubeTarget) -> None:
    assert kube.emulator is not None
    await leases(kube).create_namespaced_lease(kube.namespace, lease_body("a"))
    async with watch.Watch() as stream:
        async for _event in stream.stream(leases(kube).list_namespaced_lease, kube.namespace):
            assert kube.emulator.statistics().watches == 1
            break
    for _ in range(50):
        if kube.emulator.statistics().watches == 0:
            break
        await asyncio.sleep(0.01)
    assert kube.emulator.statistics().watches == 0


@pytest.mark.emulator_only  # A real server first waits up to 3 s for the version to arrive.
async def test_watch_from_the_future(kube: KubeTarget) -> None:
    assert kube.emulator is not None
    future = kube.emulator.revision + 10
    with pytest.raises(ApiException) as info:
        await watch_events(kube, resource_version=str(future))
    assert info.value.status == 504
    assert info.value.reason == (
        f"Timeout: Timeout: Too large resource version: {future}, current: {kube.emulator.revision}"
    )


@pytest.mark.emulator_only
async def test_watch_from_a_compacted_version_expires(kube: KubeTarget) -> None:
    assert kube.emulator is not None
    created = await leases(kube).create_namespaced_lease(kube.namespace, lease_body("a"))
    await leases(kube).patch_namespaced_lease(
        "a", kube.namespace, {"spec": {"holderIdentity": "b"}}
    )
    kube.emulator.compact()
    rv = created.metadata.resource_version
    with pytest.raises(ApiException) as info:
        await watch_events(kube, resource_version=rv)
    assert info.value.status == 410
    assert (
        info.value.reason == f"Expired: too old resource version: {rv} ({kube.emulator.revision})"
    )


@pytest.mark.emulator_only  # A real server sends bookmarks about once a minute.
async def test_watch_bookmarks(kube: KubeTarget) -> None:
    assert kube.emulator is not None
    await leases(kube).create_namespaced_lease(kube.namespace, lease_body("a"))
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases"
    query = "?watch=1&allowWatchBookmarks=true&timeoutSeconds=1"
    code, lines = await send_stream(kube, path + query)
    assert code == 200
    assert lines[0]["type"] == "ADDED"
    bookmarks = [line for line in lines if line["type"] == "BOOKMARK"]
    assert len(bookmarks) >= 3  # every 0.2 s (the fixture's interval) for a second
    assert bookmarks[0]["object"] == {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"resourceVersion": str(kube.emulator.revision)},
    }


async def test_boolean_parameters_are_parsed_like_the_apiserver(kube: KubeTarget) -> None:
    # Not ParseBool: only "0" and "false" (any case) are false; "yes" means watch.
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases"
    assert await send_stream(kube, path + "?watch=yes&timeoutSeconds=1") == (200, [])
    code, listed = await send(kube, "GET", path + "?watch=FALSE")
    assert (code, listed["kind"]) == (200, "LeaseList")


# -- paths, discovery, events -------------------------------------------------------------------


async def test_unknown_paths_and_methods(kube: KubeTarget) -> None:
    code, body = await send(kube, "GET", "/apis/coordination.k8s.io/v1/namespaces/x/nonsense")
    assert (code, body["reason"], body["message"]) == (
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
    code, body = await send(
        kube, "POST", f"/apis/coordination.k8s.io/v1/namespaces/{kube.namespace}/leases/x", b"{}"
    )
    assert (code, body["reason"]) == (405, "MethodNotAllowed")


async def test_discovery(kube: KubeTarget) -> None:
    code, version = await send(kube, "GET", "/version")
    assert code == 200
    assert version["gitVersion"].startswith("v1.")
    code, groups = await send(kube, "GET", "/apis")
    assert "coordination.k8s.io" in [g["name"] for g in groups["groups"]]
    code, resources = await send(kube, "GET", "/apis/coordination.k8s.io/v1")
    assert "leases" in [r["name"] for r in resources["resources"]]


@pytest.mark.emulator_only
async def test_emulator_version_and_events(kube: KubeTarget) -> None:
    assert kube.emulator is not None
    code, version = await send(kube, "GET", "/version")
    assert (code, version["gitVersion"]) == (200, "v1.36.2-aioleader-emulator")
    involved = client.V1ObjectReference(kind="Lease", name="lock", namespace=kube.namespace)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="lock.1"),
        involved_object=involved,
        reason="LeaderElection",
        message="a became leader",
        type="Normal",
    )
    await core(kube).create_namespaced_event(kube.namespace, event)
    await core(kube).patch_namespaced_event("lock.1", kube.namespace, {"count": 2})
    await client.EventsV1Api(kube.api_client).create_namespaced_event(
        kube.namespace,
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="lock.2"),
            event_time=cast(Any, "2024-05-01T10:00:00.000000Z"),
            reason="LeaderElection",
            action="Acquired",
            reporting_controller="aioleader",
            reporting_instance="a",
        ),
    )
    stored = kube.emulator.events
    assert [(e["apiVersion"], e["metadata"]["name"], e["reason"]) for e in stored] == [
        ("v1", "lock.1", "LeaderElection"),
        ("events.k8s.io/v1", "lock.2", "LeaderElection"),
    ]
    assert stored[0]["count"] == 2
    listed = await core(kube).list_namespaced_event(kube.namespace)
    assert [e.metadata.name for e in listed.items] == ["lock.1"]


# -- emulator-only state access -----------------------------------------------------------------


@pytest.mark.emulator_only
async def test_server_clock_sets_creation_timestamps(kube: KubeTarget) -> None:
    emu = kube.emulator
    assert emu is not None
    emu.set_time(datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc))
    first = await leases(kube).create_namespaced_lease(kube.namespace, lease_body("a"))
    emu.advance(10)
    second = await leases(kube).create_namespaced_lease(kube.namespace, lease_body("b"))
    stored = emu.get_object("leases", kube.namespace, "a")
    assert stored is not None
    assert stored["metadata"]["creationTimestamp"] == "2030-01-02T03:04:05Z"
    assert (
        second.metadata.creation_timestamp - first.metadata.creation_timestamp
    ).total_seconds() == 10
    assert emu.requests[-1].wall == datetime(2030, 1, 2, 3, 4, 15, 600000, tzinfo=timezone.utc)


@pytest.mark.emulator_only
async def test_put_raw_stores_what_the_api_would_refuse(kube: KubeTarget) -> None:
    emu = kube.emulator
    assert emu is not None
    api, ns = leases(kube), kube.namespace

    async def first_event() -> tuple[str, dict[str, Any]]:
        # "object": no model, which could not hold a renewTime of "yesterday".
        async with watch.Watch(return_type="object") as stream:
            async for event in stream.stream(
                api.list_namespaced_lease, ns, resource_version=str(emu.revision), timeout_seconds=2
            ):
                return event["type"], event["raw_object"]
        raise AssertionError("no event")

    watching = asyncio.ensure_future(first_event())
    await asyncio.sleep(0.1)
    stored = emu.put_raw(
        "leases",
        ns,
        "lock",
        {
            "metadata": {"name": "ignored"},
            "spec": {"leaseDurationSeconds": -5, "renewTime": "yesterday"},
        },
    )
    event_type, obj = await watching
    assert event_type == "ADDED"
    assert obj["spec"] == {"leaseDurationSeconds": -5, "renewTime": "yesterday"}
    assert (
        obj["metadata"]["resourceVersion"]
        == stored["metadata"]["resourceVersion"]
        == str(emu.revision)
    )
    code, got = await raw(api.read_namespaced_lease("lock", ns, _preload_content=False))
    assert (code, got["spec"]) == (200, {"leaseDurationSeconds": -5, "renewTime": "yesterday"})
    emu.put_raw("leases", ns, "lock", {"spec": None})
    code, got = await raw(api.read_namespaced_lease("lock", ns, _preload_content=False))
    assert (code, got["spec"]) == (200, None)
    assert got["metadata"]["uid"] == stored["metadata"]["uid"]
    assert emu.delete_object("leases", ns, "lock")
    assert emu.get_object("leases", ns, "lock") is None


@pytest.mark.emulator_only
async def test_emulator_fixture_is_usable(emulator: KubeEmulator) -> None:
    api = await emulator.api_client()
    await client.CoordinationV1Api(api).create_namespaced_lease("default", lease_body("x"))
    assert emulator.get_object("leases", "default", "x") is not None
    assert emulator.statistics().objects == 1


@pytest.mark.emulator_only
async def test_testing_exports() -> None:
    import aioleader.testing as testing

    emulator_names = {
        "VERBS",
        "WRITE_VERBS",
        "ClientEndpoint",
        "EmulatorStatistics",
        "Faults",
        "KubeEmulator",
        "MemoryLock",
        "RequestRecord",
        "ServerClock",
    }
    assert emulator_names <= set(testing.__all__)
    assert [name for name in testing.__all__ if not hasattr(testing, name)] == []


@pytest.mark.asyncio
@pytest.mark.emulator_only
async def test_namespaces_are_listed_for_discovery_clients(emulator: KubeEmulator) -> None:
    from kubernetes_asyncio.client import CoreV1Api

    api = CoreV1Api(await emulator.api_client("ns"))
    names = [ns.metadata.name for ns in (await api.list_namespace()).items]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    assert (await api.read_namespace("anything")).status.phase == "Active"
    resources = await api.get_api_resources()
    assert "namespaces" in [r.name for r in resources.resources]
