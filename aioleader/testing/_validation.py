"""Field validation with kube-apiserver's wording (apimachinery ``util/validation/field``).

Only what the emulated resources need: object names and namespaces, the Lease and
LeaseCandidate rules of ``pkg/apis/coordination/validation``, and the EndpointSlice rules of
``pkg/apis/discovery/validation`` that a leader's slice can break. Messages are rendered exactly as Go renders them, because
clients (and our fidelity tests) compare them as text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _semver as semver

__all__ = [
    "FieldError",
    "NameRule",
    "config_map_key",
    "dns1123_subdomain",
    "name_is_dns_subdomain",
    "validate_endpoint_slice",
    "validate_endpoint_slice_update",
    "validate_lease_candidate_spec",
    "validate_lease_candidate_update",
    "validate_lease_spec",
    "validate_object_meta",
]


# Go's field.ErrorType: (text shown in messages, StatusCause reason).
_TYPES = {
    "invalid": ("Invalid value", "FieldValueInvalid"),
    "required": ("Required value", "FieldValueRequired"),
    "forbidden": ("Forbidden", "FieldValueForbidden"),
    "not_supported": ("Unsupported value", "FieldValueNotSupported"),
    "duplicate": ("Duplicate value", "FieldValueDuplicate"),
}


def go_quote(text: str) -> str:
    """``fmt.Sprintf("%q", text)`` for the printable strings that reach validation messages."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: what is wrong (``type``), where (``field``), with which value."""

    type: str
    field: str
    value: object = None
    detail: str = ""

    def body(self) -> str:
        """``field.Error.ErrorBody()``: the message without the field path."""
        text = _TYPES[self.type][0]
        if self.type in ("invalid", "not_supported", "duplicate"):
            value = self.value
            if isinstance(value, str):
                shown = go_quote(value)
            elif isinstance(value, bool):
                shown = "true" if value else "false"
            elif value is None:
                shown = "null"
            else:
                shown = str(value)
            text = f"{text}: {shown}"
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, str]:
        """The ``StatusCause`` kube-apiserver puts in ``details.causes``."""
        return {"reason": _TYPES[self.type][1], "message": self.body(), "field": self.field}


def aggregate(errors: list[FieldError]) -> str:
    """``ErrorList.ToAggregate().Error()``: one message, or ``[a, b]`` for several."""
    messages: list[str] = []
    for error in errors:
        if str(error) not in messages:
            messages.append(str(error))
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"


_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def dns1123_subdomain(value: str) -> list[str]:
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        problems.append(_SUBDOMAIN_MESSAGE)
    return problems


def _dns1123_label(value: str) -> list[str]:
    problems = []
    if len(value) > 63:
        problems.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.fullmatch(value):
        problems.append(_LABEL_MESSAGE)
    return problems


#: A ``ValidateNameFunc``: the problems with a name (or, with ``prefix``, a generateName).
NameRule = Callable[[str, bool], list[str]]


def name_is_dns_subdomain(value: str, prefix: bool) -> list[str]:
    """``NameIsDNSSubdomain``: a generateName may end in '-', which Go masks first
    (``maskTrailingDash``, which really does drop two characters)."""
    if prefix and len(value) > 1 and value.endswith("-"):
        value = value[:-2] + "a"
    return dns1123_subdomain(value)


_CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_CONFIG_MAP_KEY_MESSAGE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


def config_map_key(value: str, prefix: bool = False) -> list[str]:
    """``IsConfigMapKey`` (LeaseCandidate names: mixed case and '_' allowed; no masking)."""
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not _CONFIG_MAP_KEY.fullmatch(value):
        problems.append(_CONFIG_MAP_KEY_MESSAGE)
    if value == ".":
        problems.append("must not be '.'")
    elif value == "..":
        problems.append("must not be '..'")
    elif value.startswith(".."):
        problems.append("must not start with '..'")
    return problems


def validate_object_meta(
    meta: Mapping[str, Any], name_rule: NameRule = name_is_dns_subdomain
) -> list[FieldError]:
    """``ValidateObjectMeta`` for a namespaced object, its name checked by ``name_rule``."""
    errors: list[FieldError] = []
    generate_name = meta.get("generateName") or ""
    name = meta.get("name") or ""
    namespace = meta.get("namespace") or ""
    if generate_name:
        errors += [
            FieldError("invalid", "metadata.generateName", generate_name, problem)
            for problem in name_rule(generate_name, True)
        ]
    if not name:
        errors.append(
            FieldError("required", "metadata.name", detail="name or generateName is required")
        )
    else:
        errors += [
            FieldError("invalid", "metadata.name", name, problem)
            for problem in name_rule(name, False)
        ]
    if not namespace:
        errors.append(FieldError("required", "metadata.namespace"))
    else:
        errors += [
            FieldError("invalid", "metadata.namespace", namespace, problem)
            for problem in _dns1123_label(namespace)
        ]
    return errors


# Coordinated leader election strategies known to kube-apiserver (coordination/v1).
LEASE_STRATEGIES = ("OldestEmulationVersion",)
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


_QUALIFIED_NAME_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def _qualified_name(value: str) -> list[str]:
    """``IsQualifiedName``: an optional DNS subdomain prefix, '/', and a name part."""
    parts = value.split("/")
    if len(parts) > 2:
        return [
            f"a qualified name {_QUALIFIED_NAME_RULE} with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')"
        ]
    problems = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            problems += [f"prefix part {p}" for p in dns1123_subdomain(prefix)]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.fullmatch(name):
        problems.append(f"name part {_QUALIFIED_NAME_RULE}")
    return problems


def _validate_strategy(strategy: str) -> list[FieldError]:
    # kube-apiserver passes spec.strategy and appends "strategy" again: the doubled path is real.
    path = "spec.strategy.strategy"
    if "/" in strategy:
        return [FieldError("invalid", path, strategy, p) for p in _qualified_name(strategy)]
    if strategy in LEASE_STRATEGIES:
        return []
    supported = ", ".join(go_quote(s) for s in LEASE_STRATEGIES)
    return [FieldError("not_supported", path, strategy, f"supported values: {supported}")]


def validate_lease_spec(spec: Mapping[str, Any]) -> list[FieldError]:
    """``ValidateLeaseSpec``, with the CoordinatedLeaderElection feature gate enabled.

    Every field is optional; durations must be positive, transitions non-negative, and a
    ``preferredHolder`` needs a ``strategy``.
    """
    errors: list[FieldError] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        errors.append(
            FieldError("invalid", "spec.leaseDurationSeconds", duration, "must be greater than 0")
        )
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        errors.append(
            FieldError(
                "invalid",
                "spec.leaseTransitions",
                transitions,
                "must be greater than or equal to 0",
            )
        )
    strategy = spec.get("strategy")
    if strategy is not None:
        errors += _validate_strategy(strategy)
    if spec.get("preferredHolder") and not strategy:
        errors.append(
            FieldError(
                "forbidden",
                "spec.preferredHolder",
                detail="may only be specified if `strategy` is defined",
            )
        )
    return errors


# -- LeaseCandidate (coordination.k8s.io/v1beta1) -----------------------------------------------


def _semantic_version(spec: Mapping[str, Any], key: str) -> tuple[semver.Version, bool]:
    """``semver.Parse`` of a version field: (version or zero, whether it parsed)."""
    try:
        return semver.parse(spec.get(key) or ""), True
    except ValueError:
        return semver.ZERO, False


def validate_lease_candidate_spec(spec: Mapping[str, Any]) -> list[FieldError]:
    """``ValidateLeaseCandidateSpec``.

    ``leaseName``, ``binaryVersion`` and ``strategy`` are required; versions are strict
    semantic versions (``1.36.2``, not ``1.36`` or ``v1.36.2``), the binary version no older
    than the emulation version, which ``OldestEmulationVersion`` requires. A version that does
    not parse counts as ``0.0.0`` in the later rules, as in Go.
    """
    errors: list[FieldError] = []
    if not spec.get("leaseName"):
        errors.append(FieldError("required", "spec.leaseName"))
    emulation = spec.get("emulationVersion") or ""
    binary = spec.get("binaryVersion") or ""
    ev, ev_ok = _semantic_version(spec, "emulationVersion")
    if emulation and not ev_ok:
        errors.append(
            FieldError(
                "invalid", "spec.emulationVersion", emulation, "must be a valid semantic version"
            )
        )
    bv, bv_ok = _semantic_version(spec, "binaryVersion")
    if not binary:
        errors.append(FieldError("required", "spec.binaryVersion"))
    elif not bv_ok:
        errors.append(
            FieldError("invalid", "spec.binaryVersion", binary, "must be a valid semantic version")
        )
    if binary and emulation and bv.compare(ev) < 0:
        errors.append(
            FieldError(
                "invalid",
                "spec.binaryVersion",
                binary,
                "must be greater than or equal to `emulationVersion`",
            )
        )
    strategy = spec.get("strategy") or ""
    if not strategy:
        errors.append(FieldError("required", "spec.strategy"))
    else:
        if strategy == "OldestEmulationVersion" and ev.compare(semver.ZERO) == 0:
            errors.append(
                FieldError(
                    "required",
                    "spec.emulationVersion",
                    detail="must be specified when `strategy` is 'OldestEmulationVersion'",
                )
            )
        errors += _validate_strategy(strategy)
    return errors


def validate_lease_candidate_update(
    spec: Mapping[str, Any], old_spec: Mapping[str, Any]
) -> list[FieldError]:
    """``ValidateLeaseCandidateSpecUpdate``: ``leaseName`` is immutable."""
    name = spec.get("leaseName") or ""
    if name != (old_spec.get("leaseName") or ""):
        return [FieldError("invalid", "spec.leaseName", name, "field is immutable")]
    return []


# --- EndpointSlices (discovery.k8s.io/v1) --------------------------------------------------------

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
PORT_PROTOCOLS = ("SCTP", "TCP", "UDP")


def _supported(values: tuple[str, ...]) -> str:
    return "supported values: " + ", ".join(go_quote(v) for v in values)


def _ip_problems(address: str, version: int) -> list[str]:
    """``IsValidIPv4Address``/``IsValidIPv6Address`` and ``ValidateNonSpecialIP``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [f"must be a valid IPv{version} address"]
    if ip.version != version:
        return [f"must be a valid IPv{version} address"]
    if ip.is_unspecified:
        return ["may not be unspecified (0.0.0.0, ::)"]
    if ip.is_loopback:
        return ["may not be in the loopback range (127.0.0.0/8, ::1/128)"]
    if ip.is_link_local:
        return ["may not be in the link-local range (169.254.0.0/16, fe80::/10)"]
    return []


def validate_endpoint_slice(obj: Mapping[str, Any]) -> list[FieldError]:
    """``ValidateEndpointSlice`` beyond object metadata: the address type, every endpoint's
    addresses (at least one, of the slice's type) and the ports (DNS-1123 label names, unique,
    a supported protocol)."""
    errors: list[FieldError] = []
    address_type = obj.get("addressType") or ""
    if not address_type:
        errors.append(FieldError("required", "addressType"))
    elif address_type not in ADDRESS_TYPES:
        errors.append(
            FieldError("not_supported", "addressType", address_type, _supported(ADDRESS_TYPES))
        )
    for i, endpoint in enumerate(obj.get("endpoints") or []):
        path = f"endpoints[{i}].addresses"
        addresses = endpoint.get("addresses") if isinstance(endpoint, dict) else None
        if not addresses:
            errors.append(FieldError("required", path, detail="must contain at least 1 address"))
            continue
        for j, address in enumerate(addresses):
            if address_type in ("IPv4", "IPv6") and isinstance(address, str):
                version = 4 if address_type == "IPv4" else 6
                errors += [
                    FieldError("invalid", f"{path}[{j}]", address, problem)
                    for problem in _ip_problems(address, version)
                ]
    names: set[str] = set()
    for i, port in enumerate(obj.get("ports") or []):
        if not isinstance(port, dict):
            continue
        name = port.get("name") or ""
        if name:
            errors += [
                FieldError("invalid", f"ports[{i}].name", name, problem)
                for problem in _dns1123_label(name)
            ]
        if name in names:
            errors.append(FieldError("duplicate", f"ports[{i}].name", name))
        names.add(name)
        protocol = port.get("protocol")
        if protocol not in PORT_PROTOCOLS:
            errors.append(
                FieldError(
                    "not_supported", f"ports[{i}].protocol", protocol, _supported(PORT_PROTOCOLS)
                )
            )
    return errors


def validate_endpoint_slice_update(
    obj: Mapping[str, Any], old: Mapping[str, Any]
) -> list[FieldError]:
    """``ValidateEndpointSliceUpdate``: the address type is immutable."""
    new_type, old_type = obj.get("addressType") or "", old.get("addressType") or ""
    if new_type != old_type:
        return [FieldError("invalid", "addressType", new_type, "field is immutable")]
    return []
