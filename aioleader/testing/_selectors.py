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


def _label_predicate(selector: str) -> Predicate:
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(selector):
        if match := _SET_TERM.fullmatch(term):
            key, op, raw = match.groups()
            values = frozenset(v.strip() for v in raw.split(","))
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _COMPARE_TERM.fullmatch(term):
            key, op, value = match.groups()
            if op in ("=", "=="):
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
            elif op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise ApiError.bad_request(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value "
                        f"must be an integer: {value!r}"
                    )
                tests.append(_compare(key, int(value), greater=op == ">"))
        elif match := _EXISTS_TERM.fullmatch(term):
            negate, key = match.groups()
            tests.append(lambda labels, k=key, n=bool(negate): (k in labels) != n)
        else:
            raise ApiError.bad_request(
                f"unable to parse requirement: couldn't parse the selector string "
                f'"{selector}": unexpected term {term!r}'
            )

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return matches


def _compare(key: str, bound: int, *, greater: bool) -> Callable[[Mapping[str, str]], bool]:
    def test(labels: Mapping[str, str]) -> bool:
        value = labels.get(key)
        if value is None or not re.fullmatch(r"-?[0-9]+", value):
            return False
        return int(value) > bound if greater else int(value) < bound

    return test


def selector_predicate(
    field_selector: str | None, label_selector: str | None, namespace: str | None = None
) -> Predicate:
    """One predicate for a request's namespace, ``fieldSelector`` and ``labelSelector``.

    Raises :class:`ApiError` (400) for a selector kube-apiserver would refuse.
    """
    fields = _field_predicate(field_selector) if field_selector else None
    labels = _label_predicate(label_selector) if label_selector else None

    def matches(obj: Mapping[str, Any]) -> bool:
        if namespace is not None and (obj.get("metadata") or {}).get("namespace") != namespace:
            return False
        return (fields is None or fields(obj)) and (labels is None or labels(obj))

    return matches
