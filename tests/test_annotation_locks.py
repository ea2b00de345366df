"""ConfigMapLock and EndpointsLock: the annotation wire format, compare-and-swap, garbage, and
elections, through the real kubernetes_asyncio client against the emulator."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
from _groups import TIMING, Group, group

from aioleader import (
    ElectionError,
    ForbiddenError,
    LeaderElectionRecord,
    LockConflict,
    LockError,
    Observed,
    Timing,
)
from aioleader._record import LEADER_ANNOTATION
from aioleader.kubernetes import ConfigMapLock, EndpointsLock
from aioleader.kubernetes._annotation import UNPARSEABLE_HOLDER, AnnotationLock, decode_annotation
from aioleader.testing import KubeEmulator

# NO_PROXY for the emulator is set by conftest.py.

NS = "default"
T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
T0_SECONDS = T0.replace(microsecond=0)

KINDS = [
    pytest.param(ConfigMapLock, "configmaps", id="configmap"),
    pytest.param(EndpointsLock, "endpoints", id="endpoints"),
]


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


def _truncated(record: LeaderElectionRecord) -> LeaderElectionRecord:
    """What a record reads back as: RFC 3339 seconds drop the fraction."""
    return record.with_changes(
        acquire_time=record.acquire_time.replace(microsecond=0) if record.acquire_time else None,
        renew_time=record.renew_time.replace(microsecond=0) if record.renew_time else None,
    )


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "plural"), KINDS)
def test_describe_and_repr(cls: type[AnnotationLock], plural: str) -> None:
    lock = cls("my-lock", "kube-system", identity="pod-a")
    assert lock.describe() == "kube-system/my-lock"
    assert (lock.name, lock.namespace, lock.identity) == ("my-lock", "kube-system", "pod-a")
    assert repr(lock) == f"{cls.__name__}('my-lock', namespace='kube-system', identity='pod-a')"
    assert lock.plural == plural


@pytest.mark.parametrize(("cls", "plural"), KINDS)
def test_configuration_is_checked(cls: type[AnnotationLock], plural: str) -> None:
    with pytest.raises(ValueError, match=r"^name must be a DNS-1123 subdomain"):
        cls("My_Lock", identity="pod-a")
    with pytest.raises(ValueError, match=r"^namespace must be a DNS-1123 label"):
        cls("my-lock", "kube.system", identity="pod-a")
    with pytest.raises(ValueError, match=r"^identity must be a non-empty string"):
        cls("my-lock", identity="")
    with pytest.raises(ValueError, match="is reserved"):
        cls("my-lock", identity=UNPARSEABLE_HOLDER)
    with pytest.raises(ValueError, match=r"^labels"):
        cls("my-lock", identity="pod-a", labels={"app": "not valid"})
    with pytest.raises(ValueError, match="written by the lock itself"):
        cls("my-lock", identity="pod-a", annotations={LEADER_ANNOTATION: "{}"})


# -- decoding the annotation ----------------------------------------------------------------------

GARBAGE = LeaderElectionRecord(UNPARSEABLE_HOLDER)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Free: nothing to wait for.
        (None, LeaderElectionRecord()),
        ("", LeaderElectionRecord()),
        ("null", LeaderElectionRecord()),
        ('{"holderIdentity":null}', LeaderElectionRecord()),
        ('{"holderIdentity":""}', LeaderElectionRecord()),
        # Records, read leniently.
        (
            '{"holderIdentity":"pod-b","leaseDurationSeconds":15,"acquireTime":'
            '"2024-05-06T07:08:09Z","renewTime":"2024-05-06T07:08:09Z","leaderTransitions":4}',
            LeaderElectionRecord("pod-b", 15, T0_SECONDS, T0_SECONDS, 4),
        ),
        ('{"holderIdentity":"pod-b","leaseDurationSeconds":-5}', LeaderElectionRecord("pod-b")),
        # kubernetes_asyncio and the official Python client write the duration as a string.
        (
            '{"holderIdentity":"pod-b","leaseDurationSeconds":"15"}',
            LeaderElectionRecord("pod-b", 15),
        ),
        ('{"holderIdentity":"pod-b","leaseDurationSeconds":"15s"}', LeaderElectionRecord("pod-b")),
        (
            '{"holderIdentity":"pod-b","renewTime":"yesterday","leaderTransitions":-1}',
            LeaderElectionRecord("pod-b"),
        ),
        (
            # The official Python client's format: Unix-time strings, no leaderTransitions.
            '{"holderIdentity": "pod-b", "leaseDurationSeconds": 15, '
            '"acquireTime": "1714979289.12", "renewTime": "1714979289.12"}',
            LeaderElectionRecord("pod-b", 15),
        ),
        (
            # Sub-second precision from some other writer is read too.
            '{"holderIdentity":"pod-b","renewTime":"2024-05-06T07:08:09.123456Z"}',
            LeaderElectionRecord("pod-b", renew_time=T0),
        ),
        # Unparseable: held by somebody we cannot name.
        ("garbage", GARBAGE),
        ("   ", GARBAGE),
        ('{"holderIdentity":"pod-b"', GARBAGE),
        ("[1, 2]", GARBAGE),
        ('"pod-b"', GARBAGE),
        ("17", GARBAGE),
        ("{}", GARBAGE),
        ('{"holder":"pod-b","leaseDuration":"15s"}', GARBAGE),
        ('{"holderIdentity":7}', GARBAGE),
        ('{"holderIdentity":["pod-b"]}', GARBAGE),
        ("[" * 100_000, GARBAGE),
        (7, GARBAGE),
    ],
)
def test_decode_annotation(value: object, expected: LeaderElectionRecord) -> None:
    record, raw = decode_annotation(value)
    assert record == expected
    if value is None:
        assert raw == b""
    elif isinstance(value, str):
        assert raw == value.encode()


def test_decode_keeps_unknown_fields() -> None:
    record, _ = decode_annotation('{"holderIdentity":"pod-b","futureField":{"x":1}}')
    assert record.extra == {"futureField": {"x": 1}}


# -- against the emulator -------------------------------------------------------------------------


async def _lock(
    emu: KubeEmulator, cls: type[AnnotationLock], client: str = "pod-a", **kwargs: Any
) -> AnnotationLock:
    return cls("my-lock", identity=client, api_client=await emu.api_client(client), **kwargs)


def _stored(emu: KubeEmulator, plural: str) -> dict[str, Any]:
    obj = emu.get_object(plural, NS, "my-lock")
    assert obj is not None
    return obj


def _annotation(emu: KubeEmulator, plural: str) -> str:
    value = _stored(emu, plural)["metadata"]["annotations"][LEADER_ANNOTATION]
    assert isinstance(value, str)
    return value


def _what(plural: str) -> str:
    return f'{plural} "my-lock" in namespace "default"'


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_get_of_a_missing_object_is_none(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    assert await lock.get() is None
    assert [(r.verb, r.resource, r.status) for r in emu.requests] == [("get", plural, 404)]


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_create_writes_client_gos_json_exactly(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    # A non-UTC aware time is written in UTC; the fraction is dropped (RFC 3339 seconds).
    record = _record(renewed=1.876544, leader_transitions=3).with_changes(
        acquire_time=T0.astimezone(timezone(timedelta(hours=2)))
    )
    created = await lock.create(record)

    stored = _stored(emu, plural)
    value = (
        '{"holderIdentity":"pod-a","leaseDurationSeconds":15,'
        '"acquireTime":"2024-05-06T07:08:09Z","renewTime":"2024-05-06T07:08:11Z",'
        '"leaderTransitions":3}'
    )
    assert stored["metadata"]["annotations"] == {LEADER_ANNOTATION: value}
    # Go's field order, nothing more: exactly what client-go's json.Marshal produces.
    assert list(json.loads(value)) == [
        "holderIdentity",
        "leaseDurationSeconds",
        "acquireTime",
        "renewTime",
        "leaderTransitions",
    ]
    # client-go creates the object with the annotation only: no data, no subsets.
    assert set(stored) == {"kind", "apiVersion", "metadata"}
    assert stored["kind"] == cls.kind
    assert created == Observed(
        record=_truncated(record.with_changes(acquire_time=T0)),
        raw=value.encode(),
        version=stored["metadata"]["resourceVersion"],
        precise=False,  # whole seconds: the version tells two renewals in one second apart
    )
    assert await lock.get() == created


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_a_released_record_is_written_like_client_go(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    await lock.create(LeaderElectionRecord(holder_identity="", lease_duration_seconds=1))
    assert _annotation(emu, plural) == (
        '{"holderIdentity":"","leaseDurationSeconds":1,"acquireTime":null,"renewTime":null,'
        '"leaderTransitions":0}'
    )
    observed = await lock.get()
    assert observed is not None
    assert observed.record.is_free


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_update_is_one_put_and_no_get(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    first = await lock.create(_record())
    emu.reset_log()

    second = await lock.update(_record(renewed=2))
    third = await lock.update(_record(renewed=4))  # against the version the last update returned

    assert [(r.verb, r.resource, r.status) for r in emu.requests] == [
        ("update", plural, 200),
        ("update", plural, 200),
    ]
    assert int(first.version) < int(second.version) < int(third.version)
    assert third.record == _truncated(_record(renewed=4))
    assert json.loads(_annotation(emu, plural))["renewTime"] == "2024-05-06T07:08:13Z"


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_update_replaces_only_the_annotation(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    body: dict[str, Any] = {
        "metadata": {
            "labels": {"app": "web"},
            "annotations": {
                "example.com/owner": "team-a",
                LEADER_ANNOTATION: '{"holderIdentity":"pod-b","leaseDurationSeconds":15,'
                '"leaderTransitions":2,"futureField":"x"}',
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": "u-1"}],
        }
    }
    if cls is ConfigMapLock:
        body["data"] = {"config.yaml": "a: 1\n"}
        body["binaryData"] = {"blob": "AAE="}
    else:
        body["subsets"] = [{"addresses": [{"ip": "10.0.0.7"}], "ports": [{"port": 8080}]}]
    emu.put_raw(plural, NS, "my-lock", body)
    lock = await _lock(emu, cls)
    observed = await lock.get()
    assert observed is not None
    assert observed.record == LeaderElectionRecord("pod-b", 15, leader_transitions=2)

    await lock.update(_record(leader_transitions=3))

    stored = _stored(emu, plural)
    for key in ("data", "binaryData", "subsets"):
        assert stored.get(key) == body.get(key)
    metadata = stored["metadata"]
    assert metadata["labels"] == {"app": "web"}
    assert metadata["ownerReferences"][0]["name"] == "owner"
    assert set(metadata["annotations"]) == {"example.com/owner", LEADER_ANNOTATION}
    assert metadata["annotations"]["example.com/owner"] == "team-a"
    # The unknown record field is kept, after the modelled ones.
    assert metadata["annotations"][LEADER_ANNOTATION] == (
        '{"holderIdentity":"pod-a","leaseDurationSeconds":15,'
        '"acquireTime":"2024-05-06T07:08:09Z","renewTime":"2024-05-06T07:08:09Z",'
        '"leaderTransitions":3,"futureField":"x"}'
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_stale_version_is_a_conflict(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    a, b = await _lock(emu, cls, "pod-a"), await _lock(emu, cls, "pod-b")
    await a.create(_record("pod-a"))
    assert await b.get() is not None
    await a.update(_record("pod-a", renewed=2))

    with pytest.raises(LockConflict, match="the object has been modified"):
        await b.update(_record("pod-b"))
    assert json.loads(_annotation(emu, plural))["holderIdentity"] == "pod-a"

    # The slow path: read again, then the write goes through.
    await b.get()
    assert (await b.update(_record("pod-b"))).record.holder_identity == "pod-b"


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_a_write_to_another_annotation_is_a_conflict_too(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    # The compare-and-swap is on the whole object: somebody editing its data or another
    # annotation (kubectl annotate) fails the leader's fast path, and the slow path recovers.
    lock = await _lock(emu, cls)
    await lock.create(_record())
    stored = _stored(emu, plural)
    stored["metadata"]["annotations"]["example.com/touched"] = "yes"
    emu.put_raw(plural, NS, "my-lock", stored)
    with pytest.raises(LockConflict):
        await lock.update(_record(renewed=2))
    await lock.get()
    await lock.update(_record(renewed=2))
    assert _stored(emu, plural)["metadata"]["annotations"]["example.com/touched"] == "yes"


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_create_of_an_existing_object_is_a_conflict(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    a, b = await _lock(emu, cls, "pod-a"), await _lock(emu, cls, "pod-b")
    await a.create(_record("pod-a"))
    with pytest.raises(LockConflict, match=f"^cannot create {_what(plural)}: 409 AlreadyExists"):
        await b.create(_record("pod-b"))
    assert json.loads(_annotation(emu, plural))["holderIdentity"] == "pod-a"


@pytest.mark.asyncio
async def test_update_of_a_deleted_configmap_is_a_404_conflict(emu: KubeEmulator) -> None:
    lock = await _lock(emu, ConfigMapLock)
    await lock.create(_record())
    emu.delete_object("configmaps", NS, "my-lock")
    # A ConfigMap cannot be created by PUT: kube-apiserver answers 404, a lost compare-and-swap.
    with pytest.raises(LockConflict, match=r"it was deleted: 404 NotFound: configmaps \"my-lock\""):
        await lock.update(_record(renewed=2))
    assert emu.requests[-1].status == 404
    assert emu.get_object("configmaps", NS, "my-lock") is None


@pytest.mark.asyncio
async def test_update_of_deleted_endpoints_is_a_conflict_not_a_resurrection(
    emu: KubeEmulator,
) -> None:
    lock = await _lock(emu, EndpointsLock)
    await lock.create(_record())
    emu.delete_object("endpoints", NS, "my-lock")
    # Endpoints may be created by PUT, but the cached uid is a precondition.
    with pytest.raises(LockConflict, match="Precondition failed: UID"):
        await lock.update(_record(renewed=2))
    assert emu.get_object("endpoints", NS, "my-lock") is None


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_update_before_get_or_create_sends_nothing(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    with pytest.raises(LockError, match=r"call get\(\) or create\(\) first"):
        await lock.update(_record())
    await lock.create(_record())
    emu.delete_object(plural, NS, "my-lock")
    assert await lock.get() is None  # forgets the cache
    with pytest.raises(LockError, match="first"):
        await lock.update(_record())


MALFORMED: list[Any] = [
    pytest.param({}, LeaderElectionRecord(), b"", id="no-annotations"),
    pytest.param({"example.com/x": "y"}, LeaderElectionRecord(), b"", id="no-leader-annotation"),
    pytest.param({LEADER_ANNOTATION: ""}, LeaderElectionRecord(), b"", id="empty"),
    pytest.param({LEADER_ANNOTATION: "null"}, LeaderElectionRecord(), b"null", id="null"),
    pytest.param({LEADER_ANNOTATION: "not json"}, GARBAGE, b"not json", id="garbage"),
    pytest.param({LEADER_ANNOTATION: "[1]"}, GARBAGE, b"[1]", id="array"),
    pytest.param(
        {LEADER_ANNOTATION: '{"holderIdentity":null,"leaseDurationSeconds":15}'},
        LeaderElectionRecord(lease_duration_seconds=15),
        b'{"holderIdentity":null,"leaseDurationSeconds":15}',
        id="null-holder",
    ),
    pytest.param(
        {LEADER_ANNOTATION: '{"holderIdentity":"pod-b","leaseDurationSeconds":-3}'},
        LeaderElectionRecord("pod-b"),
        b'{"holderIdentity":"pod-b","leaseDurationSeconds":-3}',
        id="negative-duration",
    ),
    pytest.param(
        {LEADER_ANNOTATION: '{"holderIdentity":"pod-b","acquireTime":12,"renewTime":"soon"}'},
        LeaderElectionRecord("pod-b"),
        b'{"holderIdentity":"pod-b","acquireTime":12,"renewTime":"soon"}',
        id="garbage-times",
    ),
    pytest.param({LEADER_ANNOTATION: 5}, GARBAGE, b"5", id="not-a-string"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
@pytest.mark.parametrize(("annotations", "expected", "raw"), MALFORMED)
async def test_malformed_annotations_never_crash(
    emu: KubeEmulator,
    cls: type[AnnotationLock],
    plural: str,
    annotations: dict[str, Any],
    expected: LeaderElectionRecord,
    raw: bytes,
) -> None:
    stored = emu.put_raw(plural, NS, "my-lock", {"metadata": {"annotations": annotations}})
    lock = await _lock(emu, cls)
    observed = await lock.get()
    assert observed == Observed(expected, raw, stored["metadata"]["resourceVersion"], precise=False)
    # And it can be taken over with a well-formed record, other annotations kept.
    await lock.update(_record())
    after = _stored(emu, plural)["metadata"]["annotations"]
    assert json.loads(after[LEADER_ANNOTATION])["holderIdentity"] == "pod-a"
    assert {k: v for k, v in after.items() if k != LEADER_ANNOTATION} == {
        k: v for k, v in annotations.items() if k != LEADER_ANNOTATION
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_an_object_without_metadata_annotations_of_any_kind_reads_free(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    emu.put_raw(plural, NS, "my-lock", {"metadata": {"annotations": None}})
    lock = await _lock(emu, cls)
    observed = await lock.get()
    assert observed is not None
    assert (observed.record, observed.raw) == (LeaderElectionRecord(), b"")
    await lock.update(_record())
    assert json.loads(_annotation(emu, plural))["holderIdentity"] == "pod-a"


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_labels_and_annotations_are_set_on_create_only(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(
        emu,
        cls,
        labels={"app.kubernetes.io/name": "web", "tier": ""},
        annotations={"example.com/note": "any text, even with spaces"},
    )
    await lock.create(_record())
    metadata = _stored(emu, plural)["metadata"]
    assert metadata["labels"] == {"app.kubernetes.io/name": "web", "tier": ""}
    assert set(metadata["annotations"]) == {"example.com/note", LEADER_ANNOTATION}
    # Removed by somebody else: not put back by renewals.
    stored = _stored(emu, plural)
    del stored["metadata"]["labels"]
    del stored["metadata"]["annotations"]["example.com/note"]
    emu.put_raw(plural, NS, "my-lock", stored)
    await lock.get()
    await lock.update(_record(renewed=2))
    metadata = _stored(emu, plural)["metadata"]
    assert "labels" not in metadata
    assert set(metadata["annotations"]) == {LEADER_ANNOTATION}


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_forbidden_is_fatal_and_names_verb_and_resource(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    emu.faults("pod-a").fail_next(403)
    with pytest.raises(ForbiddenError) as info:
        await lock.get()
    assert isinstance(info.value, ElectionError)
    assert (info.value.verb, info.value.resource) == ("get", _what(plural))
    await lock.create(_record())
    emu.faults("pod-a").fail_next(403)
    with pytest.raises(ForbiddenError, match=f"^forbidden: cannot update {_what(plural)}: "):
        await lock.update(_record(renewed=2))


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_transient_failures_and_hangs_are_bounded_lock_errors(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    emu.faults("pod-a").fail_next(503)
    with pytest.raises(LockError, match=f"^cannot get {_what(plural)}: 503 ") as info:
        await lock.get()
    assert type(info.value) is LockError
    emu.faults("pod-a").hang = True
    start = anyio.current_time()
    with pytest.raises(LockError, match=r"no response within 0.3 s"):
        await lock.get(timeout=0.3)
    assert anyio.current_time() - start < 0.6
    emu.faults("pod-a").heal()
    assert await lock.get(timeout=1) is None


@pytest.mark.asyncio
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_a_path_that_is_not_served_is_fatal(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    lock = await _lock(emu, cls)
    emu.faults("pod-a").fail_next(404, body="404 page not found\n")
    with pytest.raises(ElectionError, match=f"does not serve {plural}"):
        await lock.get()


# -- elections --------------------------------------------------------------------------------


def annotation_group(
    emu: KubeEmulator, cls: type[AnnotationLock]
) -> AbstractAsyncContextManager[Group]:
    """Candidates on one annotation lock, each through its own endpoint, with one term log."""
    return group(
        emu,
        lambda name, identity, api: cls(name, NS, identity=identity, api_client=api),
        tolerance=0.05,  # real time: the loop's scheduling latency
    )


def leader_record(emu: KubeEmulator, cls: type[AnnotationLock]) -> dict[str, Any]:
    obj = emu.get_object(cls.plural, NS, "lock")
    assert obj is not None
    data = json.loads(obj["metadata"]["annotations"][LEADER_ANNOTATION])
    assert isinstance(data, dict)
    return data


@pytest.mark.asyncio
@pytest.mark.emulator_only
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_three_candidates_elect_one_hand_over_and_fail_over(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    async with annotation_group(emu, cls) as g:
        for name in ("a", "b", "c"):
            await g.start(name)
        first = await g.wait_leader()
        await anyio.sleep(1.5 * TIMING.lease_duration)  # renewals keep it; nobody else takes over
        assert g.leaders() == [first]
        record = leader_record(emu, cls)
        assert record["holderIdentity"] == first
        assert record["leaseDurationSeconds"] == 2
        assert record["renewTime"].endswith("Z")
        assert datetime.strptime(record["renewTime"], "%Y-%m-%dT%H:%M:%SZ")
        assert emu.counters(first).get("update", 0) >= 6
        assert emu.counters(first).get("get", 0) <= 2  # the fast path: no GET per renewal

        g.stop(first)  # graceful: released, taken at once
        start = anyio.current_time()
        second = await g.wait_leader(other_than=first)
        assert anyio.current_time() - start < (1 + TIMING.jitter) * TIMING.retry_period + 0.5
        await anyio.sleep(0.2)  # let it enter its leader work (logged) before it crashes

        emu.faults(second).partition("blackhole")  # crash: no release
        start = anyio.current_time()
        g.stop(second)
        third = await g.wait_leader(other_than=second)
        failover = anyio.current_time() - start
        assert third not in (first, second)
        assert failover >= TIMING.lease_duration - 2.2 * TIMING.retry_period - 0.1
        assert leader_record(emu, cls)["holderIdentity"] == third
        transitions = leader_record(emu, cls)["leaderTransitions"]
        await anyio.sleep(0.2)  # let the third enter its leader work before all stop
    assert transitions == 2  # a fencing token per term, in the annotation
    assert [i.identity for i in sorted(g.log.intervals, key=lambda i: i.start)] == [
        first,
        second,
        third,
    ]


@pytest.mark.asyncio
@pytest.mark.emulator_only
@pytest.mark.parametrize(("cls", "plural"), KINDS)
async def test_a_garbage_annotation_is_taken_over_only_after_staying_unchanged(
    emu: KubeEmulator, cls: type[AnnotationLock], plural: str
) -> None:
    timing = Timing(lease_duration=1, renew_deadline=0.75, retry_period=0.1)

    def scribble(n: int) -> None:
        # A peer writing a format we do not understand, renewing it every 0.3 s.
        emu.put_raw(
            plural,
            NS,
            "lock",
            {"metadata": {"annotations": {LEADER_ANNOTATION: f"v2:holder=x;renew={n}"}}},
        )

    scribble(0)
    async with annotation_group(emu, cls) as g:
        leadership = await g.start("a", timing=timing)
        for n in range(1, 10):  # 2.7 s: almost three of our lease durations
            await anyio.sleep(0.3)
            scribble(n)
            assert not leadership.is_leader_nowait()
        assert leadership.leader == UNPARSEABLE_HOLDER
        stopped = anyio.current_time()
        await g.wait_leader(limit=3)
        waited = anyio.current_time() - stopped
        assert timing.lease_duration - 0.05 <= waited < timing.lease_duration + 1.0
        record = leader_record(emu, cls)
        assert (record["holderIdentity"], record["leaderTransitions"]) == ("a", 1)
