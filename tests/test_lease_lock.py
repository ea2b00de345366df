"""LeaseLock: configuration, error translation, and the wire, through the real kubernetes_asyncio
client against the project's emulator."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
from kubernetes_asyncio.client import ApiClient

from aioleader._exceptions import (
    AioleaderError,
    ElectionError,
    ForbiddenError,
    LockConflict,
    LockError,
)
from aioleader._lock import Observed
from aioleader._record import LEADER_ANNOTATION, UNPARSEABLE_HOLDER, LeaderElectionRecord
from aioleader.kubernetes import ConfigMapLock, LeaseLock, _client, _config, _transport
from aioleader.kubernetes._errors import error_for
from aioleader.kubernetes._reply import ObjectRef, Reply, decode_object
from aioleader.testing import KubeEmulator

# NO_PROXY for the emulator is set by conftest.py.


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
    with pytest.raises(ValueError, match=r"^name must be a DNS-1123 subdomain") as info:
        LeaseLock(name, identity="pod-a")
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["a", "my-lock", "kube-controller-manager", "a.b-c.d9", "a" * 253])
def test_valid_names(name: str) -> None:
    assert LeaseLock(name, identity="pod-a").name == name


@pytest.mark.parametrize("namespace", ["", "Default", "kube.system", "-ns", "ns-", "a" * 64])
def test_invalid_namespace_is_rejected(namespace: str) -> None:
    with pytest.raises(ValueError, match=r"^namespace must be a DNS-1123 label") as info:
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


# -- error translation (the table in _errors.error_for) ---------------------------------------


def _status(code: int, reason: str, message: str, **details: Any) -> bytes:
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


@pytest.mark.parametrize(
    ("body", "content_type", "complaint"),
    [
        (b"<html><body>Welcome to nginx</body></html>", "text/html", "is not JSON (text/html"),
        (b"", "", "is not JSON (no content type"),
        (b'{"kind": "Lease", "metadata": {"name": "my-l', "application/json", "is not JSON"),
        (b"[1, 2]", "application/json", "is not a JSON object"),
        (b'{"kind": "ConfigMap", "metadata": {}}', "application/json", "is a 'ConfigMap'"),
        (b'{"kind": "Lease", "metadata": null}', "application/json", "has no metadata"),
        (b'{"kind": "Lease", "metadata": {}}', "application/json", "has no metadata.resource"),
        (
            b'{"kind": "Lease", "metadata": {"name": "other", "resourceVersion": "7"}}',
            "application/json",
            "is about 'other'",
        ),
    ],
)
def test_a_2xx_reply_that_is_not_a_lease_is_a_lock_error(
    body: bytes, content_type: str, complaint: str
) -> None:
    reply = Reply(status=200, reason="OK", content_type=content_type, body=body)
    with pytest.raises(LockError, match=f"^cannot get {WHAT}: the reply \\(200 OK\\) ") as info:
        decode_object("get", REF, reply, "Lease")
    assert complaint in str(info.value)


# -- against the emulator, through kubernetes_asyncio ------------------------------------------

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def _record(holder: str = "pod-a", *, renewed: float = 0.0, **changes: Any) -> LeaderElectionRecord:
    fields: dict[str, Any] = {
        "holder_identity": holder,
        "lease_duration_seconds": 15,
        "acquire_time": T0,
        "renew_time": T0 + timedelta(seconds=renewed),
        "leader_transitions": 0,
        **changes,
    }
    return LeaderElectionRecord(**fields)


def _canonical(spec: object) -> bytes:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest_asyncio.fixture
async def lock(emu: KubeEmulator) -> AsyncIterator[LeaseLock]:
    lock = LeaseLock("my-lock", identity="pod-a", api_client=await emu.api_client("pod-a"))
    try:
        yield lock
    finally:
        await lock.aclose()


async def _lock_for(emu: KubeEmulator, client: str, **kwargs: Any) -> LeaseLock:
    return LeaseLock("my-lock", identity=client, api_client=await emu.api_client(client), **kwargs)


def _stored(emu: KubeEmulator) -> dict[str, Any]:
    obj = emu.get_object("leases", "default", "my-lock")
    assert obj is not None
    return obj


@pytest.mark.asyncio
async def test_get_of_a_missing_lease_is_none(emu: KubeEmulator, lock: LeaseLock) -> None:
    assert await lock.get() is None
    assert emu.counters("pod-a") == {"get": 1}


@pytest.mark.asyncio
async def test_create_then_get_round_trip_with_exact_micro_times(
    emu: KubeEmulator, lock: LeaseLock
) -> None:
    # A non-UTC aware time is written in UTC.
    record = _record(renewed=0.876544, leader_transitions=3).with_changes(
        acquire_time=T0.astimezone(timezone(timedelta(hours=2)))
    )
    created = await lock.create(record)

    stored = _stored(emu)
    assert stored["spec"] == {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2024-05-06T07:08:09.123456Z",
        "renewTime": "2024-05-06T07:08:10.000000Z",
        "leaseTransitions": 3,
    }
    assert created == Observed(
        record=record.with_changes(acquire_time=T0),
        raw=_canonical(stored["spec"]),
        version=stored["metadata"]["resourceVersion"],
    )
    assert await lock.get() == created


@pytest.mark.asyncio
async def test_update_is_one_put_and_no_get(emu: KubeEmulator, lock: LeaseLock) -> None:
    first = await lock.create(_record())
    emu.reset_log()

    second = await lock.update(_record(renewed=2))
    third = await lock.update(_record(renewed=4))  # against the version the last update returned

    assert [(r.verb, r.status) for r in emu.requests] == [("update", 200), ("update", 200)]
    assert int(first.version) < int(second.version) < int(third.version)
    assert third.record == _record(renewed=4)
    assert _stored(emu)["spec"]["renewTime"] == "2024-05-06T07:08:13.123456Z"


@pytest.mark.asyncio
async def test_update_keeps_what_it_does_not_model(emu: KubeEmulator, lock: LeaseLock) -> None:
    emu.put_raw(
        "leases",
        "default",
        "my-lock",
        {
            "metadata": {
                "labels": {"app": "web"},
                "annotations": {"example.com/owner": "team-a"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-1"}
                ],
            },
            "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "futureField": "x"},
        },
    )
    observed = await lock.get()
    assert observed is not None
    sent: list[dict[str, Any]] = []
    original = _transport.LeaseTransport.request

    async def spy(
        self: Any, api: Any, method: str, path: str, body: Any, *args: Any, **kwargs: Any
    ) -> Any:
        sent.append(json.loads(body))
        return await original(self, api, method, path, body, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_transport.LeaseTransport, "request", spy)
        await lock.update(_record())  # a fresh record: no ``extra`` of its own

    # The unknown spec field is sent back (kube-apiserver, like the emulator, drops fields it
    # does not know; a newer one would keep it) ...
    assert sent[0]["spec"]["futureField"] == "x"
    assert sent[0]["spec"]["holderIdentity"] == "pod-a"
    # ... and the metadata survives the round trip.
    stored = _stored(emu)["metadata"]
    assert stored["labels"] == {"app": "web"}
    assert stored["annotations"] == {"example.com/owner": "team-a"}
    assert stored["ownerReferences"][0]["name"] == "owner"


@pytest.mark.asyncio
async def test_stale_version_is_a_conflict(emu: KubeEmulator) -> None:
    a, b = await _lock_for(emu, "pod-a"), await _lock_for(emu, "pod-b")
    await a.create(_record("pod-a"))
    assert await b.get() is not None
    await a.update(_record("pod-a", renewed=2))

    with pytest.raises(LockConflict, match="the object has been modified"):
        await b.update(_record("pod-b"))
    assert _stored(emu)["spec"]["holderIdentity"] == "pod-a"

    # The slow path: read again, then the write goes through.
    await b.get()
    assert (await b.update(_record("pod-b"))).record.holder_identity == "pod-b"


@pytest.mark.asyncio
async def test_update_of_a_deleted_lease_is_a_conflict(emu: KubeEmulator, lock: LeaseLock) -> None:
    await lock.create(_record())
    emu.delete_object("leases", "default", "my-lock")
    with pytest.raises(LockConflict):
        await lock.update(_record(renewed=2))
    # Not resurrected by the PUT: a Lease may be created by PUT, but not with our version.
    assert emu.get_object("leases", "default", "my-lock") is None


@pytest.mark.asyncio
async def test_update_before_get_or_create_sends_nothing(
    emu: KubeEmulator, lock: LeaseLock
) -> None:
    with pytest.raises(LockError, match=r"call get\(\) or create\(\) first"):
        await lock.update(_record())
    assert emu.requests == []


@pytest.mark.asyncio
async def test_get_of_a_missing_lease_forgets_the_cache(emu: KubeEmulator, lock: LeaseLock) -> None:
    await lock.create(_record())
    emu.delete_object("leases", "default", "my-lock")
    assert await lock.get() is None
    with pytest.raises(LockError, match="first"):
        await lock.update(_record())


@pytest.mark.asyncio
async def test_create_of_an_existing_lease_is_a_conflict(emu: KubeEmulator) -> None:
    a, b = await _lock_for(emu, "pod-a"), await _lock_for(emu, "pod-b")
    await a.create(_record("pod-a"))
    with pytest.raises(LockConflict, match=f"^cannot create {WHAT}: 409 AlreadyExists: ") as info:
        await b.create(_record("pod-b"))
    assert 'leases.coordination.k8s.io "my-lock" already exists' in str(info.value)
    assert _stored(emu)["spec"]["holderIdentity"] == "pod-a"


@pytest.mark.asyncio
async def test_forbidden_is_fatal_and_names_verb_and_resource(
    emu: KubeEmulator, lock: LeaseLock
) -> None:
    await lock.create(_record())
    emu.faults("pod-a").fail_next(403)
    with pytest.raises(ForbiddenError) as info:
        await lock.update(_record(renewed=2))
    assert isinstance(info.value, ElectionError)
    assert (info.value.verb, info.value.resource) == ("update", WHAT)
    assert str(info.value).startswith(f"forbidden: cannot update {WHAT}: ")


@pytest.mark.asyncio
async def test_unauthorized_is_fatal(emu: KubeEmulator, lock: LeaseLock) -> None:
    emu.faults("pod-a").fail_next(401)
    with pytest.raises(ElectionError, match=f"^cannot get {WHAT}: 401 .*credentials"):
        await lock.get()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "fault", "expected"),
    [
        (500, {}, r": 500 InternalError"),
        (503, {}, r": 503 ServiceUnavailable"),
        (429, {"retry_after": 3}, r": 429 TooManyRequests: .*\(Retry-After: 3\)"),
        (408, {}, r": 408 "),
        (
            502,
            {"body": "<html><h1>502 Bad Gateway</h1></html>", "content_type": "text/html"},
            r": 502 Bad Gateway \(not a Kubernetes Status, text/html: '<html><h1>502 Bad",
        ),
        (422, {}, r": 422 "),
    ],
)
async def test_transient_failures_are_lock_errors(
    emu: KubeEmulator, lock: LeaseLock, status: int, fault: dict[str, Any], expected: str
) -> None:
    emu.faults("pod-a").fail_next(status, **fault)
    with pytest.raises(LockError, match=f"^cannot get {WHAT}{expected}") as info:
        await lock.get()
    assert type(info.value) is LockError
    assert info.value.retry_after == (3 if status == 429 else None)  # the elector honours it
    assert await lock.get() is None  # and nothing is broken


@pytest.mark.asyncio
async def test_a_real_validation_error_is_a_lock_error(emu: KubeEmulator, lock: LeaseLock) -> None:
    with pytest.raises(LockError, match=r"422 Invalid: .*spec.leaseDurationSeconds") as info:
        await lock.create(_record(lease_duration_seconds=-1))
    assert type(info.value) is LockError


@pytest.mark.asyncio
async def test_a_path_that_is_not_served_is_fatal(emu: KubeEmulator, lock: LeaseLock) -> None:
    # Go's http.NotFound: what kube-apiserver answers for an API group it does not serve.
    emu.faults("pod-a").fail_next(404, body="404 page not found\n")
    with pytest.raises(ElectionError, match=r"does not serve leases\.coordination\.k8s\.io"):
        await lock.get()


@pytest.mark.asyncio
async def test_a_hung_request_ends_at_its_timeout(emu: KubeEmulator, lock: LeaseLock) -> None:
    emu.faults("pod-a").hang = True
    start = anyio.current_time()
    with pytest.raises(LockError, match=r"no response within 0.3 s"):
        await lock.get(timeout=0.3)
    assert 0.29 < anyio.current_time() - start < 0.6
    emu.faults("pod-a").heal()
    assert await lock.get(timeout=1) is None


@pytest.mark.asyncio
async def test_cancellation_is_not_turned_into_an_error(emu: KubeEmulator, lock: LeaseLock) -> None:
    emu.faults("pod-a").hang = True
    with anyio.move_on_after(0.1) as scope:
        await lock.get(timeout=5)
    assert scope.cancelled_caught
    emu.faults("pod-a").heal()
    assert await lock.get(timeout=1) is None


@pytest.mark.asyncio
async def test_no_timeout_means_the_default_bound_not_forever(
    emu: KubeEmulator, lock: LeaseLock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_client, "DEFAULT_TIMEOUT", 0.2)
    emu.faults("pod-a").partition("blackhole")
    start = anyio.current_time()
    with pytest.raises(LockError, match=r"no response within 0.2 s"):
        await lock.get()
    assert anyio.current_time() - start < 0.5


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
async def test_no_time_left_sends_nothing(
    emu: KubeEmulator, lock: LeaseLock, timeout: float
) -> None:
    with pytest.raises(LockError, match="no time left"):
        await lock.get(timeout=timeout)
    assert emu.requests == []


@pytest.mark.asyncio
async def test_refused_connection_is_a_lock_error(emu: KubeEmulator, lock: LeaseLock) -> None:
    emu.faults("pod-a").partition("refuse")
    with pytest.raises(LockError, match=f"^cannot get {WHAT}: ConnectionRefusedError"):
        await lock.get(timeout=2)


@pytest.mark.asyncio
async def test_dropped_request_is_a_lock_error_and_not_applied(
    emu: KubeEmulator, lock: LeaseLock
) -> None:
    emu.faults("pod-a").drop_next()
    with pytest.raises(LockError, match=f"^cannot create {WHAT}: "):
        await lock.create(_record(), timeout=2)
    assert emu.get_object("leases", "default", "my-lock") is None


@pytest.mark.asyncio
async def test_write_applied_but_reply_lost(emu: KubeEmulator, lock: LeaseLock) -> None:
    before = await lock.create(_record())
    emu.faults("pod-a").apply_then_drop()
    with pytest.raises(LockError, match=f"^cannot update {WHAT}: "):
        await lock.update(_record(renewed=2), timeout=2)

    # The ambiguous outcome: our write happened. A fresh read says so; the cached version is stale.
    after = await lock.get()
    assert after is not None
    assert after.record == _record(renewed=2)
    assert after.version != before.version


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, LeaderElectionRecord()),
        # Not storable by kube-apiserver: held by somebody we cannot name, never free.
        ("not an object", LeaderElectionRecord(UNPARSEABLE_HOLDER)),
        ([1, 2], LeaderElectionRecord(UNPARSEABLE_HOLDER)),
        ({}, LeaderElectionRecord()),
        ({"holderIdentity": "pod-b"}, LeaderElectionRecord("pod-b")),
        (
            {"holderIdentity": None, "leaseDurationSeconds": 0, "leaseTransitions": -1},
            LeaderElectionRecord(),
        ),
        (
            {"holderIdentity": "pod-b", "leaseDurationSeconds": -5, "renewTime": "yesterday"},
            LeaderElectionRecord("pod-b"),
        ),
        (
            {"holderIdentity": 7, "leaseDurationSeconds": "15", "acquireTime": 12},
            LeaderElectionRecord(UNPARSEABLE_HOLDER),
        ),
        (
            {"holderIdentity": "pod-b", "leaseDurationSeconds": True, "renewTime": []},
            LeaderElectionRecord("pod-b"),
        ),
        (
            # Valid RFC 3339 that is not a MicroTime: read leniently.
            {
                "holderIdentity": "pod-b",
                "leaseDurationSeconds": 10,
                "renewTime": "2024-05-06T09:08:09+02:00",
            },
            LeaderElectionRecord("pod-b", 10, renew_time=T0.replace(microsecond=0)),
        ),
    ],
)
async def test_malformed_leases_decode(
    emu: KubeEmulator, lock: LeaseLock, spec: object, expected: LeaderElectionRecord
) -> None:
    stored = emu.put_raw("leases", "default", "my-lock", {"metadata": {}, "spec": spec})
    observed = await lock.get()
    assert observed is not None
    assert observed.record == expected
    assert observed.raw == _canonical(spec)
    assert observed.version == stored["metadata"]["resourceVersion"]
    # And we can take it over with a well-formed record.
    await lock.update(_record())
    assert _stored(emu)["spec"]["holderIdentity"] == "pod-a"


@pytest.mark.asyncio
async def test_a_lease_without_spec_decodes(emu: KubeEmulator, lock: LeaseLock) -> None:
    emu.put_raw("leases", "default", "my-lock", {"metadata": {}})
    observed = await lock.get()
    assert observed is not None
    assert (observed.record, observed.raw) == (LeaderElectionRecord(), b"null")


@pytest.mark.asyncio
async def test_raw_changes_with_fields_we_do_not_model(emu: KubeEmulator, lock: LeaseLock) -> None:
    spec = {"holderIdentity": "pod-b", "leaseDurationSeconds": 15}
    emu.put_raw("leases", "default", "my-lock", {"metadata": {}, "spec": {**spec, "x": 1}})
    first = await lock.get()
    emu.put_raw("leases", "default", "my-lock", {"metadata": {}, "spec": {**spec, "x": 2}})
    second = await lock.get()
    assert first is not None
    assert second is not None
    assert first.record == second.record
    assert first.raw != second.raw


@pytest.mark.asyncio
async def test_labels_and_annotations_are_set_on_create(emu: KubeEmulator) -> None:
    lock = await _lock_for(
        emu,
        "pod-a",
        labels={"app.kubernetes.io/name": "web", "tier": ""},
        annotations={"example.com/note": "any text, even with spaces"},
    )
    await lock.create(_record())
    await lock.update(_record(renewed=2))
    metadata = _stored(emu)["metadata"]
    assert metadata["labels"] == {"app.kubernetes.io/name": "web", "tier": ""}
    assert metadata["annotations"] == {"example.com/note": "any text, even with spaces"}


# -- client ownership ---------------------------------------------------------------------------


def _write_kubeconfig(path: Path, server: str) -> None:
    path.write_text(
        json.dumps(  # JSON is YAML
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "tester"}}],
                "current-context": "emu",
            }
        )
    )


@pytest.fixture
def made_clients(monkeypatch: pytest.MonkeyPatch) -> list[ApiClient]:
    """Every ApiClient the lock builds for itself."""
    made: list[ApiClient] = []

    class Recording(ApiClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(_config, "ApiClient", Recording)
    return made


@pytest.mark.asyncio
async def test_owned_client_from_kubeconfig_is_closed_by_aclose(
    emu: KubeEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    made_clients: list[ApiClient],
) -> None:
    endpoint = await emu.endpoint("from-kubeconfig")
    _write_kubeconfig(tmp_path / "config", endpoint.url)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    lock = LeaseLock("my-lock", identity="pod-a")
    assert made_clients == []  # lazily: nothing happens before the first request
    async with anyio.create_task_group() as tg:  # concurrent first uses build one client
        tg.start_soon(lock.get)
        tg.start_soon(lock.get)
    await lock.create(_record())

    assert emu.counters("from-kubeconfig") == {"get": 2, "create": 1}
    assert len(made_clients) == 1
    assert made_clients[0].configuration.api_key["BearerToken"] == "Bearer t0ken"
    await lock.aclose()
    assert made_clients[0].rest_client.pool_manager.closed
    with pytest.raises(ElectionError, match="closed"):
        await lock.get()
    await lock.aclose()  # idempotent


@pytest.mark.asyncio
async def test_borrowed_client_is_not_closed(emu: KubeEmulator) -> None:
    api = await emu.api_client("pod-a")
    async with LeaseLock("my-lock", identity="pod-a", api_client=api) as lock:
        await lock.get()
    assert not api.rest_client.pool_manager.closed
    assert await LeaseLock("my-lock", identity="pod-b", api_client=api).get() is None


@pytest.mark.asyncio
async def test_missing_kubeconfig_is_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made_clients: list[ApiClient]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ElectionError, match=r"no kubeconfig at '.*nope'"):
        await LeaseLock("my-lock", identity="pod-a").get()
    assert made_clients == []


@pytest.mark.asyncio
async def test_broken_kubeconfig_is_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ElectionError, match="cannot configure a Kubernetes client from the kube"):
        await LeaseLock("my-lock", identity="pod-a").get()


@pytest.mark.asyncio
async def test_in_cluster_without_a_service_account_is_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ElectionError, match="from the in-cluster service account"):
        await LeaseLock("my-lock", identity="pod-a").get()


# -- update_from: taking a watched lock with one PATCH --------------------------------------------


async def _watched(lock: LeaseLock) -> Observed:
    """The lock's state as its watch delivers it (what a following elector holds)."""
    async with contextlib.aclosing(lock.watch(shared=False)) as states:
        async for observed in states:
            assert observed is not None
            return observed
    raise AssertionError("the watch ended")


@pytest.mark.asyncio
async def test_update_from_a_watched_state_writes_without_reading(emu: KubeEmulator) -> None:
    emu.put_raw(
        "leases",
        "default",
        "my-lock",
        {
            "metadata": {"labels": {"app": "web"}, "annotations": {"example.com/o": "team-a"}},
            "spec": {
                "holderIdentity": "",
                "leaseDurationSeconds": 15,
                "leaseTransitions": 4,
                "preferredHolder": "pod-z",
                "futureField": "x",
            },
        },
    )
    b = await _lock_for(emu, "pod-b", labels={"elected": "yes"})
    base = await _watched(b)
    emu.reset_log()
    written = await b.update_from(base, _record("pod-b", leader_transitions=5))
    assert [r.verb for r in emu.requests if r.client == "pod-b"] == ["patch"]
    assert written.record.holder_identity == "pod-b"
    stored = _stored(emu)
    # The record is exactly the one written: preferredHolder, which it lacks, is gone ...
    assert stored["spec"]["holderIdentity"] == "pod-b"
    assert stored["spec"]["leaseTransitions"] == 5
    assert "preferredHolder" not in stored["spec"]
    # ... and what the patch does not name stays: labels (ours merged in), annotations.
    assert stored["metadata"]["labels"] == {"app": "web", "elected": "yes"}
    assert stored["metadata"]["annotations"] == {"example.com/o": "team-a"}
    # The reply is cached: the next renewal is a PUT on the new version.
    await b.update(_record("pod-b", renewed=2, leader_transitions=5))
    assert [r.verb for r in emu.requests if r.client == "pod-b"] == ["patch", "update"]


@pytest.mark.asyncio
async def test_update_from_a_stale_state_is_a_conflict_and_writes_nothing(
    emu: KubeEmulator,
) -> None:
    a, b = await _lock_for(emu, "pod-a"), await _lock_for(emu, "pod-b")
    await a.create(_record("pod-a", holder_identity=""))
    base = await _watched(b)
    await a.update(_record("pod-a", renewed=1))  # a took it after b's watch saw it free
    with pytest.raises(LockConflict, match="the object has been modified"):
        await b.update_from(base, _record("pod-b"))
    assert _stored(emu)["spec"]["holderIdentity"] == "pod-a"
    emu.delete_object("leases", "default", "my-lock")
    with pytest.raises(LockConflict, match="deleted"):
        await b.update_from(base, _record("pod-b"))
    assert emu.get_object("leases", "default", "my-lock") is None


@pytest.mark.asyncio
async def test_configmap_update_from_patches_only_the_leader_annotation(
    emu: KubeEmulator,
) -> None:
    emu.put_raw(
        "configmaps",
        "default",
        "cm-lock",
        {"metadata": {"annotations": {"other": "kept"}}, "data": {"k": "v"}},
    )
    lock = ConfigMapLock("cm-lock", identity="pod-b", api_client=await emu.api_client("pod-b"))
    async with contextlib.aclosing(lock.watch()) as states:
        base = await anext(states)
    assert base is not None
    await lock.update_from(base, _record("pod-b"))
    stored = emu.get_object("configmaps", "default", "cm-lock")
    assert stored is not None
    assert stored["data"] == {"k": "v"}
    assert stored["metadata"]["annotations"]["other"] == "kept"
    assert json.loads(stored["metadata"]["annotations"][LEADER_ANNOTATION])["holderIdentity"] == (
        "pod-b"
    )


@pytest.mark.asyncio
async def test_renewals_send_no_managed_fields_back(emu: KubeEmulator, lock: LeaseLock) -> None:
    managed = [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {}}]
    emu.put_raw(
        "leases",
        "default",
        "my-lock",
        {"metadata": {"managedFields": managed}, "spec": {"holderIdentity": "pod-a"}},
    )
    assert _stored(emu)["metadata"]["managedFields"] == managed  # what the GET returns
    await lock.get()
    sent: list[dict[str, Any]] = []
    original = _transport.LeaseTransport.request

    async def spy(self: Any, api: Any, method: str, path: str, body: Any, *a: Any, **k: Any) -> Any:
        sent.append(json.loads(body))
        return await original(self, api, method, path, body, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_transport.LeaseTransport, "request", spy)
        await lock.update(_record())
    # kube-apiserver keeps the stored managedFields for an update without them (the emulator
    # does not emulate managedFields); sending them back would only cost.
    assert "managedFields" not in sent[0]["metadata"]
    assert sent[0]["metadata"]["name"] == "my-lock"


@pytest.mark.asyncio
async def test_update_from_without_rbac_for_patch_reads_then_updates(
    emu: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A Role written for client-go grants no patch: the lock falls back to get + update (once
    told, it no longer tries), and the compare-and-swap still holds."""
    a, b = await _lock_for(emu, "pod-a"), await _lock_for(emu, "pod-b")
    await a.create(_record("pod-a", holder_identity=""))
    base = await _watched(b)
    emu.faults("pod-b").fail_next(403, verbs={"patch"})
    with caplog.at_level("INFO", logger="aioleader"):
        written = await b.update_from(base, _record("pod-b"))
    assert written.record.holder_identity == "pod-b"
    assert [r.verb for r in emu.requests if r.client == "pod-b" and r.resource == "leases"][
        -3:
    ] == ["patch", "get", "update"]
    assert "no RBAC verb patch on leases.coordination.k8s.io" in caplog.text
    # The next one goes straight to get + update; a stale base is still a conflict.
    stale = await _watched(b)
    await a.get()
    await a.update(_record("pod-a", renewed=1))
    with pytest.raises(LockConflict, match="modified since version"):
        await b.update_from(stale, _record("pod-b", renewed=2))
    verbs = [r.verb for r in emu.requests if r.client == "pod-b" and r.resource == "leases"]
    assert verbs.count("patch") == 1
