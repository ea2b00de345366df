"""URL paths and HTTP methods to Kubernetes operations, plus the discovery documents."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._resources import RESOURCES, ResourceType, by_path
from ._selectors import parse_bool
from ._status import ApiError

__all__ = ["GIT_VERSION", "Operation", "resolve"]

# The release whose behaviour the emulator follows (fidelity tests ran against v1.36.2).
GIT_VERSION = "v1.36.2-aioleader-emulator"

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_SHORT_NAMES = {"configmaps": ["cm"], "endpoints": ["ep"], "events": ["ev"], "pods": ["po"]}


@dataclass(frozen=True)
class Operation:
    """What a request asks for: a verb on a resource, or a fixed (discovery) document."""

    verb: str
    rt: ResourceType | None = None
    namespace: str | None = None  # None: all namespaces
    name: str = ""
    document: Mapping[str, Any] | str | None = None
    error: ApiError | None = field(default=None, compare=False)


def _resource_list(served: Collection[ResourceType], group: str, version: str) -> dict[str, Any]:
    resources = [
        {
            "name": rt.plural,
            "singularName": rt.kind.lower(),
            "namespaced": True,
            "kind": rt.kind,
            "verbs": _VERBS,
            **({"shortNames": _SHORT_NAMES[rt.plural]} if rt.plural in _SHORT_NAMES else {}),
        }
        for rt in served
        if (rt.group, rt.version) == (group, version)
    ]
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _api_group(served: Collection[ResourceType], group: str) -> dict[str, Any]:
    """An ``APIGroup``: its versions, stable first, and ``v1`` preferred when served."""
    versions = sorted(
        {rt.version for rt in served if rt.group == group}, key=lambda v: (v != "v1", v)
    )
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def _api_groups(served: Collection[ResourceType]) -> dict[str, Any]:
    groups = [_api_group(served, g) for g in dict.fromkeys(rt.group for rt in served if rt.group)]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _version() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "35",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


WELL_KNOWN_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")


def _namespace(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "0",
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _discovery(
    method: str, parts: list[str], server_address: str, served: Collection[ResourceType]
) -> Operation | None:
    document: Mapping[str, Any] | str | None = None
    if parts == ["api"]:
        document = {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }
    elif parts == ["apis"]:
        document = _api_groups(served)
    elif len(parts) == 2 and parts[0] == "apis" and any(rt.group == parts[1] for rt in served):
        document = {"kind": "APIGroup", "apiVersion": "v1", **_api_group(served, parts[1])}
    elif parts == ["version"]:
        document = _version()
    elif parts in (["healthz"], ["livez"], ["readyz"]):
        document = "ok"
    elif parts == ["api", "v1"]:
        document = _resource_list(served, "", "v1")
        # Namespaces are not emulated as objects (every namespace exists), but clients such as
        # kopf look for them in discovery and list them: a read-only, well-known set.
        document["resources"].append(
            {
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": False,
                "kind": "Namespace",
                "verbs": ["get", "list"],
                "shortNames": ["ns"],
            }
        )
    elif parts == ["api", "v1", "namespaces"]:
        document = {
            "kind": "NamespaceList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "0"},
            "items": [_namespace(name) for name in WELL_KNOWN_NAMESPACES],
        }
    elif len(parts) == 4 and parts[:3] == ["api", "v1", "namespaces"]:
        document = {"kind": "Namespace", "apiVersion": "v1", **_namespace(parts[3])}
    elif (
        len(parts) == 3
        and parts[0] == "apis"
        and any((rt.group, rt.version) == (parts[1], parts[2]) for rt in served)
    ):
        document = _resource_list(served, parts[1], parts[2])
    if document is None:
        return None
    if method != "GET":
        return Operation(method.lower(), error=ApiError.method_not_allowed())
    return Operation("get", document=document)


def resolve(
    method: str,
    path: str,
    query: Mapping[str, str],
    server_address: str,
    served: Collection[ResourceType] = RESOURCES,
) -> Operation:
    """Map a request to an [`Operation`][Operation] (with ``error`` set if it cannot be served).

    ``served`` are the resource types this server has enabled (discovery lists only those).
    """
    parts = [p for p in path.split("/") if p]
    discovery = _discovery(method, parts, server_address, served)
    if discovery is not None:
        return discovery
    # /api/v1/…  or  /apis/{group}/{version}/…
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Operation(method.lower(), error=ApiError.path_not_found())
    watch_path = rest[:1] == ["watch"]
    if watch_path:
        rest = rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    rt = by_path(group, version, rest[0]) if rest else None
    if rt not in served:
        rt = None
    if rt is None or len(rest) > 2:
        return Operation(method.lower(), error=ApiError.path_not_found())
    name = rest[1] if len(rest) == 2 else ""
    if name and namespace is None:
        # Every served type is namespaced: a named object needs its namespace.
        return Operation(method.lower(), error=ApiError.path_not_found())
    # A named GET ignores ?watch (GetResource); the /watch/ paths watch one object by name.
    watch = watch_path or (not name and parse_bool(query.get("watch")))
    verb = _verb(method, bool(name), watch)
    if verb is None or (watch_path and method != "GET"):
        return Operation(method.lower(), rt, namespace, name, error=ApiError.method_not_allowed())
    if namespace is None and verb not in ("list", "watch"):
        return Operation(verb, rt, namespace, name, error=ApiError.method_not_allowed())
    return Operation(verb, rt, namespace, name)


def _verb(method: str, named: bool, watch: bool) -> str | None:
    if method == "GET":
        if watch:
            return "watch"
        return "get" if named else "list"
    if named:
        return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    return {"POST": "create", "DELETE": "deletecollection"}.get(method)
