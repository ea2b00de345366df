"""Checks of what a user passes to a Kubernetes lock, as kube-apiserver would check it.

Everything here raises `ValueError` naming the argument and what is wrong, at construction:
the locks write labels and annotations only on create, so a 422 later would surface as a transient
error on every acquisition attempt instead.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._coordination import OLDEST_EMULATION_VERSION

__all__ = [
    "check_identity",
    "check_name",
    "check_namespace",
    "check_owner_references",
    "check_strategy",
    "check_string_map",
    "default_identity",
]

_DNS1123_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN: Final = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL)
# The name part of a qualified name (label and annotation keys) and a label value.
_QUALIFIED_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024


def default_identity() -> str:
    """``$POD_NAME`` (the Downward API convention) if set and non-empty, else ``hostname_pid``.

    The pid keeps two candidates in one pod (or on one laptop) distinct, as client-go's examples do
    with a UUID; unlike a UUID it is stable for the life of the process and readable in the Lease.
    """
    pod_name = os.environ.get("POD_NAME", "")
    return pod_name or f"{socket.gethostname()}_{os.getpid()}"


def check_identity(identity: str | None) -> str:
    """The identity to use: ``identity`` itself, or [`default_identity()`][default_identity] when it is ``None``."""
    if identity is None:
        return default_identity()
    if not isinstance(identity, str) or not identity:
        raise ValueError(f"identity must be a non-empty string, got {identity!r}")
    return identity


def check_name(name: str, argument: str = "name") -> str:
    """Object names are DNS-1123 subdomains (kube-apiserver answers anything else with 422)."""
    if not (isinstance(name, str) and len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name)):
        raise ValueError(
            f"{argument} must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit, at most 253 characters), got {name!r}"
        )
    return name


def check_namespace(namespace: str, argument: str = "namespace") -> str:
    """Namespaces are DNS-1123 labels."""
    if not (
        isinstance(namespace, str)
        and len(namespace) <= 63
        and _DNS1123_LABEL_RE.fullmatch(namespace)
    ):
        raise ValueError(
            f"{argument} must be a DNS-1123 label (lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit, at most 63 characters), got {namespace!r}"
        )
    return namespace


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return "its prefix must be a DNS-1123 subdomain"
    if not (len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name)):
        return (
            "its name must be at most 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        )
    return None


def check_string_map(
    value: Mapping[str, str] | None, argument: str, *, label_values: bool
) -> dict[str, str]:
    """Validate labels (``label_values=True``) or annotations as kube-apiserver would.

    Checked here because the lock only writes them on create: a 422 then would surface as a
    transient error on every acquisition attempt instead of at construction.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{argument} must be a mapping of strings to strings, got {value!r}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"{argument} must map strings to strings, got {key!r}: {item!r}")
        problem = _qualified_name_problem(key)
        if problem is not None:
            raise ValueError(f"{argument}: invalid key {key!r}: {problem}")
        if label_values and not (
            item == "" or (len(item) <= 63 and _QUALIFIED_NAME.fullmatch(item))
        ):
            raise ValueError(
                f"{argument}: invalid value {item!r} for {key!r}: a label value is empty or at "
                "most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        result[key] = item
    if not label_values:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in result.items())
        if size > _ANNOTATIONS_MAX_BYTES:
            raise ValueError(f"{argument} total {size} bytes, more than the 256 KiB allowed")
    return result


_OWNER_FIELDS: Final = ("apiVersion", "kind", "name", "uid")
_OWNER_FLAGS: Final = ("controller", "blockOwnerDeletion")


def check_owner_references(
    value: Sequence[Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], ...]:
    """``metadata.ownerReferences`` as kube-apiserver requires them: each with a non-empty
    ``apiVersion``, ``kind``, ``name`` and ``uid`` (and optional booleans ``controller`` and
    ``blockOwnerDeletion``), at most one controller, written as given (camelCase keys)."""
    if value is None:
        return ()
    if isinstance(value, Mapping | str | bytes) or not isinstance(value, Sequence):
        raise ValueError(
            f"owner_references must be a list of owner references (mappings), got {value!r}"
        )
    result: list[dict[str, Any]] = []
    for index, reference in enumerate(value):
        where = f"owner_references[{index}]"
        if not isinstance(reference, Mapping):
            raise ValueError(f"{where} must be a mapping, got {reference!r}")
        unknown = sorted(set(reference) - set(_OWNER_FIELDS) - set(_OWNER_FLAGS))
        if unknown:
            raise ValueError(
                f"{where}: unknown field {unknown[0]!r} (fields: apiVersion, kind, name, uid, "
                "controller, blockOwnerDeletion)"
            )
        for field in _OWNER_FIELDS:
            item = reference.get(field)
            if not isinstance(item, str) or not item:
                raise ValueError(f"{where}.{field} must be a non-empty string, got {item!r}")
        for flag in _OWNER_FLAGS:
            if flag in reference and not isinstance(reference[flag], bool):
                raise ValueError(f"{where}.{flag} must be True or False, got {reference[flag]!r}")
        result.append(dict(reference))
    if sum(1 for r in result if r.get("controller")) > 1:
        raise ValueError("owner_references: only one reference can have controller set to true")
    return tuple(result)


def check_strategy(strategy: str, argument: str = "strategy") -> str:
    """A coordinated election strategy as the API validates it: ``OldestEmulationVersion``, or a
    qualified name with a prefix (``example.com/MyStrategy``) for a third-party controller."""
    if not isinstance(strategy, str) or not strategy:
        raise ValueError(f"{argument} must be a non-empty string, got {strategy!r}")
    if strategy == OLDEST_EMULATION_VERSION:
        return strategy
    if "/" not in strategy:
        raise ValueError(
            f"{argument} must be {OLDEST_EMULATION_VERSION!r} or a qualified name with a prefix for a "
            f"third-party controller (e.g. 'aioleader.dev/HighestPriority'), got {strategy!r}"
        )
    problem = _qualified_name_problem(strategy)
    if problem is None and strategy.count("/") == 1 and strategy.partition("/")[0]:
        return strategy
    raise ValueError(
        f"{argument} {strategy!r} is not a qualified name: "
        f"{problem or 'expected one prefix (a DNS-1123 subdomain), one /, and a name'}"
    )
