"""LeaseLock: configuration, error translation, and the wire, through the real kubernetes_asyncio
client against the project's emulator."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from aioleader._exceptions import (
    AioleaderError,
    ElectionError,
    ForbiddenError,
    LockConflict,
    LockError,
)
from aioleader.kubernetes import LeaseLock
from aioleader.kubernetes._client import ObjectRef, Reply, error_for

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

REF = ObjectRef("coordination.k8s.io", "leases", "default", "my-lock")
WHAT = 'leases.coordination.k8s.io "my-lock" in namespace "default"'


# -- configuration -----------------------------------------------------------------------------


def test_describe_and_repr() -> None:
    lock = LeaseLock("my-lock", identity="pod-a")
    assert lock.describe() == "default/my-lock"
    assert (lock.name, lock.namespace, lock.identity) == ("my-lock", "default", "pod-a")
    assert repr(lock) == "LeaseLock('my-lock', namespace='default', identity='pod-a')"


def test_identity_defaults_to_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "web-7d9f-abcde")
    assert LeaseLock("my-lock").identity == "web-7d9f-abcde"


@pytest.mark.parametrize("pod_name", [None, ""])
def test_identity_defaults_to_hostname_pid(
    monkeypatch: pytest.MonkeyPatch, pod_name: str | None
) -> None:
    if pod_name is None:
        monkeypatch.delenv("POD_NAME", raising=False)
    else:
        monkeypatch.setenv("POD_NAME", pod_name)
    assert LeaseLock("my-lock").identity == f"{socket.gethostname()}_{os.getpid()}"


def test_explicit_identity_wins_over_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "from-env")
    assert LeaseLock("my-lock", identity="explicit").identity == "explicit"


def test_empty_identity_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^identity must be a non-empty string, got ''$"):
        LeaseLock("my-lock", identity="")


@pytest.mark.parametrize(
    "name",
    ["", "My-Lock", "-lock", "lock-", "my_lock", "a..b", ".a", "a/b", "lock\n", "a" * 254],
)
def test_invalid_name_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="^name must be a DNS-1123 subdomain") as info:
        LeaseLock(name, identity="pod-a")
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["a", "my-lock", "kube-controller-manager", "a.b-c.d9", "a" * 253])
def test_valid_names(name: str) -> None:
    assert LeaseLock(name, identity="pod-a").name == name


@pytest.mark.parametrize("namespace", ["", "Default", "kube.system", "-ns", "ns-", "a" * 64])
def test_invalid_namespace_is_rejected(namespace: str) -> None:
    with pytest.raises(ValueError, match="^namespace must be a DNS-1123 label") as info:
        LeaseLock("my-lock", namespace, identity="pod-a")
    assert repr(namespace) in str(info.value)


@pytest.mark.parametrize(
    ("labels", "annotations", "argument"),
    [
        ({"bad key!": "x"}, None, "labels"),
        ({"app": "not a valid value"}, None, "labels"),
        ({"app": "x" * 64}, None, "labels"),
        ({"Bad.Prefix/app": "x"}, None, "labels"),
        ({"app": 1}, None, "labels"),
        (None, {"": "x"}, "annotations"),
        (None, {"example.com/": "x"}, "annotations"),
        (None, {"big": "x" * (256 * 1024)}, "annotations"),
    ],
)
def test_invalid_labels_and_annotations_are_rejected(
    labels: Any, annotations: Any, argument: str
) -> None:
    with pytest.raises(ValueError, match=f"^{argument}"):
        LeaseLock("my-lock", identity="pod-a", labels=labels, annotations=annotations)


# -- error translation (the table in _client.error_for) ---------------------------------------


def _status(code: int, reason: str, message: str, **details: Any) -> bytes:
    import json

    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        }
    ).encode()


def _reply(status: int, body: bytes, content_type: str = "application/json") -> Reply:
    return Reply(status=status, reason="Whatever", content_type=content_type, body=body)


@pytest.mark.parametrize(
    ("verb", "status", "body", "expected"),
    [
        ("get", 401, _status(401, "Unauthorized", "Unauthorized"), ElectionError),
        ("update", 403, _status(403, "Forbidden", "nope"), ForbiddenError),
        ("create", 404, _status(404, "NotFound", 'namespaces "x" not found'), LockError),
        ("update", 404, _status(404, "NotFound", "gone", name="my-lock"), LockConflict),
        ("get", 404, b"404 page not found\n", ElectionError),
        ("create", 409, _status(409, "AlreadyExists", "exists"), LockConflict),
        ("update", 409, _status(409, "Conflict", "modified"), LockConflict),
        ("update", 400, _status(400, "BadRequest", "bad MicroTime"), LockError),
        ("update", 422, _status(422, "Invalid", "spec.leaseDurationSeconds"), LockError),
        ("get", 408, _status(408, "Timeout", "slow"), LockError),
        ("get", 429, _status(429, "TooManyRequests", "slow down"), LockError),
        ("get", 500, _status(500, "InternalError", "etcd"), LockError),
        ("get", 503, b"<html><body>upstream down</body></html>", LockError),
        ("get", 418, b"", LockError),
    ],
)
def test_error_translation(
    verb: str, status: int, body: bytes, expected: type[AioleaderError]
) -> None:
    error = error_for(verb, REF, _reply(status, body))
    assert type(error) is expected
    assert str(error).startswith(("cannot " + verb, "forbidden: cannot " + verb))
    assert WHAT in str(error)


def test_forbidden_names_verb_resource_and_server_message() -> None:
    message = (
        'leases.coordination.k8s.io "my-lock" is forbidden: User "system:serviceaccount:default:x" '
        'cannot update resource "leases" in API group "coordination.k8s.io"'
    )
    error = error_for("update", REF, _reply(403, _status(403, "Forbidden", message)))
    assert isinstance(error, ForbiddenError)
    assert (error.verb, error.resource) == ("update", WHAT)
    assert str(error) == f"forbidden: cannot update {WHAT}: {message}"


def test_non_status_error_bodies_are_quoted_briefly() -> None:
    html = b"<html>\n<head><title>502 Bad Gateway</title></head>\n" + b"x" * 10_000
    error = error_for("get", REF, _reply(502, html, "text/html"))
    assert type(error) is LockError
    assert "<html> <head><title>502 Bad Gateway</title></head>" in str(error)
    assert "text/html" in str(error)
    assert len(str(error)) < 400
