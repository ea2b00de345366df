"""List and watch filters, and query parameters, parsed as kube-apiserver parses them.

* ``fieldSelector``: ``metadata.name`` and ``metadata.namespace`` with ``=``, ``==`` and ``!=``,
  comma-joined; any other field is a 400 (the types served here register no field conversions).
* ``labelSelector``: equality (``k=v``, ``k==v``, ``k!=v``), existence (``k``, ``!k``), sets
  (``k in (a,b)``, ``k notin (a,b)``) and integer comparison (``k>1``, ``k<1``).
* booleans: the apiserver's ``Convert_Slice_string_To_bool``, which is *not* ``ParseBool``:
  ``0`` and ``false`` (any case) are false, every other value, even an empty one, is true.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._status import ApiError

__all__ = ["Predicate", "parse_bool", "parse_int", "selector_predicate"]

Predicate = Callable[[Mapping[str, Any]], bool]

_FIELDS = ("metadata.name", "metadata.namespace")


def parse_bool(value: str | None) -> bool:
    """A boolean query parameter (``watch``, ``allowWatchBookmarks``…); absent is false."""
    if value is None:
        return False
    return not (value == "0" or value.lower() == "false")


def parse_int(name: str, value: str | None) -> int | None:
    """An integer query parameter; a malformed one is a 400 with Go's ``strconv`` text."""
    if value is None:
        return None
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ApiError.bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax')
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise ApiError.bad_request(f'strconv.ParseInt: parsing "{value}": value out of range')
    return number


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, start = [], 0, 0
    for index, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return [term.strip() for term in terms if term.strip()]


def _field_predicate(selector: str) -> Predicate:
    tests: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector):
        match = re.fullmatch(r"([^=!]+)(==|=|!=)(.*)", term)
        if not match:
            raise ApiError.bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        field, op, value = match.groups()
        if field not in _FIELDS:
            raise ApiError.bad_request(
                f'"{field}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        tests.append((field.split(".", 1)[1], op != "!=", value))

    def matches(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return all(
            (meta.get(key) or "") == value if equal else (meta.get(key) or "") != value
            for key, equal, value in tests
        )

    return matches


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET_TERM = re.compile(rf"({_KEY})\s+(in|notin)\s+\(\s*([^)]*)\)")
_EXISTS_TERM = re.compile(rf"(!?)\s*({_KEY})")
_COMPARE_TERM = re.compile(rf"({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})")


@dataclass(frozen=True)
class _Requirement:
    """One ``labels.Requirement``: a key, an operator and its values."""

    key: str
    op: str  # in, notin, exists, !, gt, lt (= and == are "in", != is "notin")
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "in":
            return value in self.values
        if self.op == "notin":
            return value not in self.values
        if self.op == "exists":
            return value is not None
        if self.op == "!":
            return value is None
        if value is None or not re.fullmatch(r"-?[0-9]+", value):
            return False
        (bound,) = self.values
        return int(value) > int(bound) if self.op == "gt" else int(value) < int(bound)


def _requirement(selector: str, term: str) -> _Requirement:
    if match := _SET_TERM.fullmatch(term):
        key, op, raw = match.groups()
        return _Requirement(key, op, frozenset(v.strip() for v in raw.split(",")))
    if match := _COMPARE_TERM.fullmatch(term):
        key, op, value = match.groups()
        if op in ("=", "==", "!="):
            return _Requirement(key, "notin" if op == "!=" else "in", frozenset([value]))
        if not re.fullmatch(r"-?[0-9]+", value):
            raise ApiError.bad_request(
                "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an "
                f"integer: {value!r}"
            )
        return _Requirement(key, "gt" if op == ">" else "lt", frozenset([value]))
    if match := _EXISTS_TERM.fullmatch(term):
        negate, key = match.groups()
        return _Requirement(key, "!" if negate else "exists")
    raise ApiError.bad_request(
        f'unable to parse requirement: couldn\'t parse the selector string "{selector}": '
        f"unexpected term {term!r}"
    )


def _label_predicate(selector: str) -> Predicate:
    requirements = [_requirement(selector, term) for term in _split_terms(selector)]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement.matches(labels) for requirement in requirements)

    return matches


def selector_predicate(
    field_selector: str | None, label_selector: str | None, namespace: str | None = None
) -> Predicate:
    """One predicate for a request's namespace, ``fieldSelector`` and ``labelSelector``.

    Raises [`ApiError`][ApiError] (400) for a selector kube-apiserver would refuse.
    """
    fields = _field_predicate(field_selector) if field_selector else None
    labels = _label_predicate(label_selector) if label_selector else None

    def matches(obj: Mapping[str, Any]) -> bool:
        if namespace is not None and (obj.get("metadata") or {}).get("namespace") != namespace:
            return False
        return (fields is None or fields(obj)) and (labels is None or labels(obj))

    return matches
