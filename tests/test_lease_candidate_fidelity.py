"""LeaseCandidates (``coordination.k8s.io/v1beta1``) as kube-apiserver 1.36 serves them.

Through kubernetes_asyncio's ``CoordinationV1beta1Api``, bodies as plain JSON (its models would
write MicroTimes with ``isoformat()``, which the server refuses). On a real cluster
(``AIOLEADER_E2E=1``) these run when the API is enabled
(``--runtime-config=coordination.k8s.io/v1beta1=true``) and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.rest import ApiException
from test_emulator_fidelity import MICRO_TIME, failure, plain, raw, send, status

from aioleader.testing import KubeEmulator

if TYPE_CHECKING:
    from conftest import KubeTarget

pytestmark = pytest.mark.asyncio

GROUP = "coordination.k8s.io"
OEV = "OldestEmulationVersion"
PING = "2030-01-01T00:00:00.000000Z"
CONFIG_KEY_RULE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


def candidate_body(name: str, **spec: Any) -> Any:
    spec = {
        "leaseName": "lock",
        "binaryVersion": "1.36.2",
        "emulationVersion": "1.36.0",
        "strategy": OEV,
        **spec,
    }
    return {
        "apiVersion": "coordination.k8s.io/v1beta1",
        "kind": "LeaseCandidate",
        "metadata": {"name": name},
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


async def candidates(kube: KubeTarget) -> client.CoordinationV1beta1Api:
    """The v1beta1 API, or a skip on a real cluster that does not serve it."""
    if kube.emulator is None:
        _, groups = await send(kube, "GET", "/apis")
        versions = {
            v["version"] for g in groups["groups"] if g["name"] == GROUP for v in g["versions"]
        }
        if "v1beta1" not in versions:
            pytest.skip("the cluster does not serve coordination.k8s.io/v1beta1")
    return client.CoordinationV1beta1Api(kube.api_client)


def invalid(name: str, *causes: tuple[str, str, str], kind: str = "LeaseCandidate") -> Any:
    """The 422 for ``causes`` of (reason, field, message without the field)."""
    texts = [f"{field}: {message}" for _, field, message in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return (
        422,
        status(
            422,
            "Invalid",
            f'{kind}.{GROUP} "{name}" is invalid: {summary}',
            name=name,
            group=GROUP,
            kind=kind,
            causes=[{"reason": r, "message": m, "field": f} for r, f, m in causes],
        ),
    )


# -- create, read, update, delete, watch ------------------------------------------------------


async def test_candidate_lifecycle(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    code, created = await raw(
        api.create_namespaced_lease_candidate(
            ns, candidate_body("Pod_A.1", renewTime=PING), _preload_content=False
        )
    )
    assert code == 201
    assert (created["kind"], created["apiVersion"]) == ("LeaseCandidate", f"{GROUP}/v1beta1")
    meta = created["metadata"]
    assert (meta["name"], meta["namespace"]) == ("Pod_A.1", ns)  # not a DNS name: a config key
    assert all(meta[key] for key in ("uid", "resourceVersion", "creationTimestamp"))
    assert created["spec"] == {
        "leaseName": "lock",
        "renewTime": PING,
        "binaryVersion": "1.36.2",
        "emulationVersion": "1.36.0",
        "strategy": OEV,
    }
    read = await api.read_namespaced_lease_candidate("Pod_A.1", ns)
    assert read.metadata.resource_version == meta["resourceVersion"]

    code, listed = await raw(api.list_namespaced_lease_candidate(ns, _preload_content=False))
    assert (code, listed["kind"], listed["apiVersion"]) == (
        200,
        "LeaseCandidateList",
        f"{GROUP}/v1beta1",
    )
    assert [item["metadata"]["name"] for item in listed["items"]] == ["Pod_A.1"]

    pinged: Any = {**created, "spec": {**created["spec"], "pingTime": PING}}
    code, updated = await raw(
        api.replace_namespaced_lease_candidate("Pod_A.1", ns, pinged, _preload_content=False)
    )
    assert code == 200
    assert list(updated["spec"]) == [
        "leaseName",
        "pingTime",
        "renewTime",
        "binaryVersion",
        "emulationVersion",
        "strategy",
    ]
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert MICRO_TIME.fullmatch(updated["spec"]["pingTime"])

    code, gone = await raw(
        api.delete_namespaced_lease_candidate("Pod_A.1", ns, _preload_content=False)
    )
    assert (code, gone["status"], gone["details"]["kind"]) == (200, "Success", "leasecandidates")
    assert await failure(api.read_namespaced_lease_candidate("Pod_A.1", ns)) == (
        404,
        status(
            404,
            "NotFound",
            f'leasecandidates.{GROUP} "Pod_A.1" not found',
            name="Pod_A.1",
            group=GROUP,
            kind="leasecandidates",
        ),
    )


async def test_candidate_put_creates_and_needs_a_resource_version_to_update(
    kube: KubeTarget,
) -> None:
    api, ns = await candidates(kube), kube.namespace
    code, created = await raw(
        api.replace_namespaced_lease_candidate("c", ns, candidate_body("c"), _preload_content=False)
    )
    assert code == 201
    message = (
        f'leasecandidates.{GROUP} "c" is invalid: metadata.resourceVersion: Invalid value: 0: '
        "must be specified for an update"
    )
    assert await failure(api.replace_namespaced_lease_candidate("c", ns, candidate_body("c"))) == (
        422,
        status(
            422,
            "Invalid",
            message,
            name="c",
            group=GROUP,
            kind="leasecandidates",
            causes=[
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: 0: must be specified for an update",
                    "field": "metadata.resourceVersion",
                }
            ],
        ),
    )
    stale = candidate_body("c")
    stale["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    await api.replace_namespaced_lease_candidate("c", ns, stale)
    code, body = await failure(api.replace_namespaced_lease_candidate("c", ns, stale))
    assert (code, body["reason"], body["message"]) == (
        409,
        "Conflict",
        f'Operation cannot be fulfilled on leasecandidates.{GROUP} "c": the object has been '
        "modified; please apply your changes to the latest version and try again",
    )


async def test_candidate_watch(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    await api.create_namespaced_lease_candidate(ns, candidate_body("w"))
    events: list[tuple[str, Any]] = []

    async def follow() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                api.list_namespaced_lease_candidate,
                ns,
                field_selector="metadata.name=w",
                timeout_seconds=10,
            ):
                spec = event["raw_object"]["spec"]
                events.append((event["type"], spec.get("pingTime")))
                if event["type"] == "DELETED":
                    return

    task = asyncio.ensure_future(follow())
    while not events:
        await asyncio.sleep(0.01)
    _, current = await raw(api.read_namespaced_lease_candidate("w", ns, _preload_content=False))
    current["spec"]["pingTime"] = PING
    await api.replace_namespaced_lease_candidate("w", ns, plain(**current))
    await api.delete_namespaced_lease_candidate("w", ns)
    await asyncio.wait_for(task, 10)
    assert events == [("ADDED", None), ("MODIFIED", PING), ("DELETED", PING)]


# -- validation (pkg/apis/coordination/validation: ValidateLeaseCandidate) ---------------------


async def test_required_fields(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    body: Any = {"metadata": {"name": "c"}, "spec": {}}
    assert await failure(api.create_namespaced_lease_candidate(ns, body)) == invalid(
        "c",
        ("FieldValueRequired", "spec.leaseName", "Required value"),
        ("FieldValueRequired", "spec.binaryVersion", "Required value"),
        ("FieldValueRequired", "spec.strategy", "Required value"),
    )


@pytest.mark.parametrize("version", ["1.36", "v1.36.2", "1.036.0", "1.36.2-", "1.36.2+a_b", ""])
async def test_versions_must_be_strict_semantic_versions(kube: KubeTarget, version: str) -> None:
    api, ns = await candidates(kube), kube.namespace
    if not version:
        # An empty binaryVersion is missing; an empty emulationVersion, with this strategy too.
        body = candidate_body("c", binaryVersion="", emulationVersion="")
        assert await failure(api.create_namespaced_lease_candidate(ns, body)) == invalid(
            "c",
            ("FieldValueRequired", "spec.binaryVersion", "Required value"),
            (
                "FieldValueRequired",
                "spec.emulationVersion",
                "Required value: must be specified when `strategy` is 'OldestEmulationVersion'",
            ),
        )
        return
    body = candidate_body("c", binaryVersion=version, emulationVersion=version)
    rule = f'Invalid value: "{version}": must be a valid semantic version'
    assert await failure(api.create_namespaced_lease_candidate(ns, body)) == invalid(
        "c",
        ("FieldValueInvalid", "spec.emulationVersion", rule),
        ("FieldValueInvalid", "spec.binaryVersion", rule),
        (
            "FieldValueRequired",
            "spec.emulationVersion",
            "Required value: must be specified when `strategy` is 'OldestEmulationVersion'",
        ),
    )


async def test_binary_version_not_older_than_emulation_version(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    body = candidate_body("c", binaryVersion="1.30.0", emulationVersion="1.31.0-rc.1")
    assert await failure(api.create_namespaced_lease_candidate(ns, body)) == invalid(
        "c",
        (
            "FieldValueInvalid",
            "spec.binaryVersion",
            'Invalid value: "1.30.0": must be greater than or equal to `emulationVersion`',
        ),
    )
    # A pre-release is older than its release; build metadata does not count.
    ok = candidate_body("ok", binaryVersion="1.31.0+build.7", emulationVersion="1.31.0-rc.1")
    await api.create_namespaced_lease_candidate(ns, ok)


async def test_strategies(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    body = candidate_body("c", strategy="HighestPriority")
    assert await failure(api.create_namespaced_lease_candidate(ns, body)) == invalid(
        "c",
        (
            "FieldValueNotSupported",
            "spec.strategy.strategy",
            'Unsupported value: "HighestPriority": supported values: "OldestEmulationVersion"',
        ),
    )
    body = candidate_body("c", strategy="example.com/Highest Priority")
    code, status_body = await failure(api.create_namespaced_lease_candidate(ns, body))
    assert (code, [c["field"] for c in status_body["details"]["causes"]]) == (
        422,
        ["spec.strategy.strategy"],
    )
    # A third-party strategy needs no emulation version.
    third = candidate_body("third", strategy="example.com/highest-priority", emulationVersion=None)
    code, created = await raw(
        api.create_namespaced_lease_candidate(ns, third, _preload_content=False)
    )
    assert (code, "emulationVersion" in created["spec"]) == (201, False)


async def test_names_are_config_keys(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    assert await failure(
        api.create_namespaced_lease_candidate(ns, candidate_body("pod a"))
    ) == invalid(
        "pod a",
        ("FieldValueInvalid", "metadata.name", f'Invalid value: "pod a": {CONFIG_KEY_RULE}'),
    )
    assert await failure(
        api.create_namespaced_lease_candidate(ns, candidate_body("..a"))
    ) == invalid(
        "..a",
        ("FieldValueInvalid", "metadata.name", "Invalid value: \"..a\": must not start with '..'"),
    )


async def test_lease_name_is_immutable(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    _, created = await raw(
        api.create_namespaced_lease_candidate(ns, candidate_body("c"), _preload_content=False)
    )
    moved: Any = {**created, "spec": {**created["spec"], "leaseName": "other"}}
    assert await failure(api.replace_namespaced_lease_candidate("c", ns, moved)) == invalid(
        "c", ("FieldValueInvalid", "spec.leaseName", 'Invalid value: "other": field is immutable')
    )


async def test_ping_time_must_be_a_micro_time(kube: KubeTarget) -> None:
    api, ns = await candidates(kube), kube.namespace
    body = candidate_body("c", pingTime="2030-01-01T00:00:00Z")
    code, status_body = await failure(api.create_namespaced_lease_candidate(ns, body))
    assert (code, status_body["reason"]) == (400, "BadRequest")
    assert status_body["message"] == (
        'LeaseCandidate in version "v1beta1" cannot be handled as a LeaseCandidate: parsing time '
        '"2030-01-01T00:00:00Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as '
        '".000000"'
    )


# -- discovery -------------------------------------------------------------------------------


async def test_discovery(kube: KubeTarget) -> None:
    await candidates(kube)
    code, groups = await send(kube, "GET", "/apis")
    (group,) = [g for g in groups["groups"] if g["name"] == GROUP]
    assert group["preferredVersion"] == {"groupVersion": f"{GROUP}/v1", "version": "v1"}
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
    code, resources = await send(kube, "GET", f"/apis/{GROUP}/v1beta1")
    assert (code, resources["groupVersion"]) == (200, f"{GROUP}/v1beta1")
    (served,) = [r for r in resources["resources"] if r["name"] == "leasecandidates"]
    assert (served["kind"], served["namespaced"], served["singularName"]) == (
        "LeaseCandidate",
        True,
        "leasecandidate",
    )
    assert {"create", "get", "list", "watch", "update", "delete"} <= set(served["verbs"])


@pytest.mark.emulator_only
@pytest.mark.emulator(lease_candidates=False)
async def test_a_cluster_without_the_api(emu: KubeEmulator) -> None:
    api_client = await emu.api_client()
    api = client.CoordinationV1beta1Api(api_client)
    with pytest.raises(ApiException) as info:
        await api.create_namespaced_lease_candidate("default", candidate_body("c"))
    assert (info.value.status, json.loads(info.value.body or "")["reason"]) == (404, "NotFound")
    leases = client.CoordinationV1Api(api_client)
    resources = await leases.get_api_resources()
    assert [r.name for r in resources.resources] == ["leases"]
    groups = await client.ApisApi(api_client).get_api_versions()
    (group,) = [g for g in groups.groups if g.name == GROUP]
    assert [v.version for v in group.versions] == ["v1"]
    with pytest.raises(ValueError, match="coordinated_election needs lease_candidates"):
        KubeEmulator(lease_candidates=False, coordinated_election=True)
