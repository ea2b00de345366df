"""The resource types the emulator serves, with the per-type rules kube-apiserver applies.

Each type carries what differs between them on the wire and in the registry strategy
(``pkg/registry/.../strategy.go``): whether PUT may create (``AllowCreateOnUpdate``), whether PUT
without a resourceVersion overwrites (``AllowUnconditionalUpdate``), the Go struct layout the
body is decoded into, how names are checked (LeaseCandidates: config keys, not DNS names), and
the validation beyond object metadata, on create and on update (a LeaseCandidate's
``spec.leaseName`` is immutable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._decode import (
    ANY_LIST,
    BOOL,
    INT32,
    INT64,
    MICRO_TIME,
    OMITEMPTY_STRING,
    STRING,
    STRING_LIST,
    STRING_MAP,
    TIME,
    Struct,
)
from ._validation import (
    FieldError,
    NameRule,
    config_map_key,
    name_is_dns_subdomain,
    validate_endpoint_slice,
    validate_endpoint_slice_update,
    validate_lease_candidate_spec,
    validate_lease_candidate_update,
    validate_lease_spec,
)

__all__ = [
    "CONFIGMAPS",
    "ENDPOINTS",
    "ENDPOINTSLICES",
    "EVENTS",
    "EVENTS_V1",
    "LEASECANDIDATES",
    "LEASES",
    "PODS",
    "RESOURCES",
    "ResourceType",
    "by_path",
    "resource_type",
]

OBJECT_META = Struct(
    "ObjectMeta",
    {
        "name": STRING,
        "generateName": STRING,
        "namespace": STRING,
        "selfLink": STRING,
        "uid": STRING,
        "resourceVersion": STRING,
        "generation": INT64,
        "creationTimestamp": TIME,
        "deletionTimestamp": TIME,
        "deletionGracePeriodSeconds": INT64,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "ownerReferences": ANY_LIST,
        "finalizers": STRING_LIST,
        "managedFields": ANY_LIST,
    },
    always=True,
)

LEASE_SPEC = Struct(
    "LeaseSpec",
    {
        "holderIdentity": STRING,
        "leaseDurationSeconds": INT32,
        "acquireTime": MICRO_TIME,
        "renewTime": MICRO_TIME,
        "leaseTransitions": INT32,
        "strategy": STRING,
        "preferredHolder": STRING,
    },
    always=True,
)


LEASE_CANDIDATE_SPEC = Struct(
    "LeaseCandidateSpec",
    {
        "leaseName": STRING,
        "pingTime": MICRO_TIME,
        "renewTime": MICRO_TIME,
        "binaryVersion": STRING,
        "emulationVersion": OMITEMPTY_STRING,
        "strategy": STRING,
    },
    always=True,
)


def _no_spec_rules(obj: Mapping[str, Any]) -> list[FieldError]:
    return []


def _no_defaults(obj: dict[str, Any]) -> None:
    return None


def _endpoint_slice_defaults(obj: dict[str, Any]) -> None:
    """``SetDefaults_EndpointPort`` (discovery/v1): a port without a name or protocol gets
    ``""`` and ``TCP``."""
    for port in obj.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("name", "")
            port.setdefault("protocol", "TCP")


def _no_update_rules(obj: Mapping[str, Any], old: Mapping[str, Any]) -> list[FieldError]:
    return []


def _lease_rules(obj: Mapping[str, Any]) -> list[FieldError]:
    return validate_lease_spec(obj.get("spec") or {})


def _lease_candidate_rules(obj: Mapping[str, Any]) -> list[FieldError]:
    return validate_lease_candidate_spec(obj.get("spec") or {})


def _lease_candidate_update_rules(
    obj: Mapping[str, Any], old: Mapping[str, Any]
) -> list[FieldError]:
    return validate_lease_candidate_update(obj.get("spec") or {}, old.get("spec") or {})


@dataclass(frozen=True, eq=False)
class ResourceType:
    """One served resource: its names, body layout and registry strategy."""

    group: str
    version: str
    plural: str
    kind: str
    body: Struct
    allow_create_on_update: bool
    allow_unconditional_update: bool
    validate_spec: Callable[[Mapping[str, Any]], list[FieldError]] = _no_spec_rules
    # Rules that compare an update with the stored object (after validate_spec).
    validate_update: Callable[[Mapping[str, Any], Mapping[str, Any]], list[FieldError]] = (
        _no_update_rules
    )
    name_rule: NameRule = name_is_dns_subdomain
    # Defaulting of the decoded object (``SetDefaults_*``), before validation.
    defaults: Callable[[dict[str, Any]], None] = _no_defaults

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``schema.GroupResource.String()``: ``leases.coordination.k8s.io``, ``configmaps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``schema.GroupKind.String()``: ``Lease.coordination.k8s.io``, ``ConfigMap``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def prefix(self) -> str:
        """The URL prefix of the type's API group version."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def with_kind(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A stored object as served alone: with its ``kind`` and ``apiVersion`` first."""
        return {"kind": self.kind, "apiVersion": self.api_version, **obj}

    def __repr__(self) -> str:
        return f"<ResourceType {self.qualified}>"


LEASES = ResourceType(
    group="coordination.k8s.io",
    version="v1",
    plural="leases",
    kind="Lease",
    body=Struct("Lease", {"metadata": OBJECT_META, "spec": LEASE_SPEC}),
    allow_create_on_update=True,
    allow_unconditional_update=False,
    validate_spec=_lease_rules,
)
# coordination.k8s.io/v1beta1 (CoordinatedLeaderElection): the same rules as Leases for PUT.
LEASECANDIDATES = ResourceType(
    group="coordination.k8s.io",
    version="v1beta1",
    plural="leasecandidates",
    kind="LeaseCandidate",
    body=Struct("LeaseCandidate", {"metadata": OBJECT_META, "spec": LEASE_CANDIDATE_SPEC}),
    allow_create_on_update=True,
    allow_unconditional_update=False,
    validate_spec=_lease_candidate_rules,
    validate_update=_lease_candidate_update_rules,
    name_rule=config_map_key,
)
CONFIGMAPS = ResourceType(
    group="",
    version="v1",
    plural="configmaps",
    kind="ConfigMap",
    body=Struct(
        "ConfigMap",
        {
            "metadata": OBJECT_META,
            "immutable": BOOL,
            "data": STRING_MAP,
            "binaryData": STRING_MAP,
        },
    ),
    allow_create_on_update=False,
    allow_unconditional_update=True,
)
ENDPOINTS = ResourceType(
    group="",
    version="v1",
    plural="endpoints",
    kind="Endpoints",
    body=Struct("Endpoints", {"metadata": OBJECT_META, "subsets": ANY_LIST}),
    # Unlike ConfigMaps, Endpoints may be created by PUT (endpoint/strategy.go).
    allow_create_on_update=True,
    allow_unconditional_update=True,
)
# Pods are stored for their metadata (a role label, read back by tests); spec and status are kept
# as sent, not modelled or validated.
PODS = ResourceType(
    group="",
    version="v1",
    plural="pods",
    kind="Pod",
    body=Struct("Pod", {"metadata": OBJECT_META}, open=True),
    allow_create_on_update=False,
    allow_unconditional_update=True,
)
ENDPOINTSLICES = ResourceType(
    group="discovery.k8s.io",
    version="v1",
    plural="endpointslices",
    kind="EndpointSlice",
    body=Struct(
        "EndpointSlice",
        {
            "metadata": OBJECT_META,
            "addressType": STRING,
            "endpoints": ANY_LIST,
            "ports": ANY_LIST,
        },
    ),
    # endpointslice/strategy.go: no create on PUT, unconditional updates allowed.
    allow_create_on_update=False,
    allow_unconditional_update=True,
    validate_spec=validate_endpoint_slice,
    validate_update=validate_endpoint_slice_update,
    defaults=_endpoint_slice_defaults,
)
# Events are stored for assertions, not modelled: unknown fields are kept as sent.
EVENTS = ResourceType(
    group="",
    version="v1",
    plural="events",
    kind="Event",
    body=Struct(
        "Event",
        {
            "metadata": OBJECT_META,
            "firstTimestamp": TIME,
            "lastTimestamp": TIME,
            "eventTime": MICRO_TIME,
        },
        open=True,
    ),
    allow_create_on_update=False,
    allow_unconditional_update=True,
)
EVENTS_V1 = ResourceType(
    group="events.k8s.io",
    version="v1",
    plural="events",
    kind="Event",
    body=Struct("Event", {"metadata": OBJECT_META, "eventTime": MICRO_TIME}, open=True),
    allow_create_on_update=False,
    allow_unconditional_update=True,
)

RESOURCES: tuple[ResourceType, ...] = (
    LEASES,
    LEASECANDIDATES,
    CONFIGMAPS,
    ENDPOINTS,
    PODS,
    ENDPOINTSLICES,
    EVENTS,
    EVENTS_V1,
)

_BY_NAME: dict[str, ResourceType] = {rt.qualified: rt for rt in RESOURCES}
_BY_NAME.update(
    {
        "leases": LEASES,
        "lease": LEASES,
        "leasecandidates": LEASECANDIDATES,
        "leasecandidate": LEASECANDIDATES,
        "configmap": CONFIGMAPS,
        "endpoint": ENDPOINTS,
        "pod": PODS,
        "endpointslice": ENDPOINTSLICES,
        "endpointslices": ENDPOINTSLICES,
    }
)


def resource_type(name: str | ResourceType) -> ResourceType:
    """Look a type up by plural (``"leases"``), singular or qualified name."""
    if isinstance(name, ResourceType):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted({rt.qualified for rt in RESOURCES}))
        raise ValueError(f"unknown resource {name!r}; known: {known}") from None


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    """The type served at ``/api[s]/{group}/{version}/…/{plural}``, if any."""
    for rt in RESOURCES:
        if (rt.group, rt.version, rt.plural) == (group, version, plural):
            return rt
    return None
