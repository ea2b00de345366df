"""What a request is about ([`ObjectRef`][ObjectRef]), what came back ([`Reply`][Reply]), and reading the
object out of a successful reply.

A body that is not the JSON object expected (a proxy's HTML page with status 200, a truncated
body, an object of another kind) is a [`LockError`][aioleader.LockError] with a readable excerpt,
decided here once ([`decode_json()`][decode_json]): a malformed reply must never crash the elector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from .._exceptions import LockError

__all__ = ["ObjectRef", "Reply", "decode_json", "decode_object", "reply_of"]

# How much of an unexpected body goes into an error message.
_EXCERPT: Final = 160


@dataclass(frozen=True)
class ObjectRef:
    """The object a lock lives in, for URLs' sake and for messages that name it precisely."""

    group: str  # "" for the core API
    plural: str
    namespace: str
    name: str

    @property
    def resource(self) -> str:
        """``leases.coordination.k8s.io``, or ``configmaps`` for the core group (as RBAC names it)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def __str__(self) -> str:
        if not self.name:  # the collection (a namespace-wide list or watch)
            return f'{self.resource} in namespace "{self.namespace}"'
        return f'{self.resource} "{self.name}" in namespace "{self.namespace}"'


@dataclass(frozen=True)
class Reply:
    """An HTTP response, fully read."""

    status: int
    reason: str
    content_type: str
    body: bytes
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> object:
        """The decoded body, or `_NOT_JSON` (a sentinel, never raises)."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # JSONDecodeError and bad UTF-8 are ValueErrors
            return _NOT_JSON

    def status_object(self) -> dict[str, Any] | None:
        """The ``kind: Status`` object in the body, if the body is one (every apiserver error is)."""
        data = self.json()
        if isinstance(data, dict) and data.get("kind") == "Status":
            return data
        return None

    def excerpt(self) -> str:
        text = self.body[: _EXCERPT * 4].decode("utf-8", "replace")
        text = " ".join(text.split())
        return repr(text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else ""))


_NOT_JSON: Final = object()


def reply_of(response: aiohttp.ClientResponse, body: bytes) -> Reply:
    """The [`Reply`][Reply] of aiohttp's ``response`` whose body was read as ``body``."""
    return Reply(
        status=response.status,
        reason=response.reason or "",
        content_type=response.headers.get("Content-Type", ""),
        body=body,
        retry_after=response.headers.get("Retry-After"),
    )


def decode_json(verb: str, ref: ObjectRef, reply: Reply) -> dict[str, Any]:
    """The JSON object in ``reply``; [`LockError`][LockError] naming what came instead otherwise."""
    data = reply.json()
    if data is _NOT_JSON:
        content_type = reply.content_type or "no content type"
        raise LockError(
            f"{_what(verb, ref, reply)} is not JSON ({content_type}: {reply.excerpt()})"
        )
    if not isinstance(data, dict):
        raise LockError(f"{_what(verb, ref, reply)} is not a JSON object: {reply.excerpt()}")
    return data


def decode_object(verb: str, ref: ObjectRef, reply: Reply, kind: str) -> tuple[dict[str, Any], str]:
    """The object in a 2xx reply and its ``metadata.resourceVersion``.

    Anything else (see [`decode_json()`][decode_json]; an object of another kind or without a
    resourceVersion) is a [`LockError`][LockError] with a readable message: the lock cannot
    compare-and-swap without a version.
    """
    data = decode_json(verb, ref, reply)
    what = _what(verb, ref, reply)
    found = data.get("kind")
    if found is not None and found != kind:
        raise LockError(f"{what} is a {found!r}, not a {kind}: {reply.excerpt()}")
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        raise LockError(f"{what} has no metadata: {reply.excerpt()}")
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise LockError(f"{what} has no metadata.resourceVersion: {reply.excerpt()}")
    name = metadata.get("name")
    if name is not None and name != ref.name:
        raise LockError(f"{what} is about {name!r}")
    return data, version


def _what(verb: str, ref: ObjectRef, reply: Reply) -> str:
    return f"cannot {verb} {ref}: the reply ({reply.status} {reply.reason})"
