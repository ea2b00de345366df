"""Total parsing, as properties: every decoder reads any JSON value of any field without raising,
a garbage field reads as absent, a garbage holder as :data:`UNPARSEABLE_HOLDER` (never free), and
a running election survives any record and waits out whoever it cannot name.

Generated values: hypothesis's recursive JSON plus, per field, the edge values that once crashed
or misled a decoder (``"²"``, a 400-digit duration, ``true`` for a number, NaN, times out of
datetime's range). Elections on MemoryLock and FileLock run on trio's ``MockClock`` (exact,
virtual time); LeaseLock and ConfigMapLock run through kubernetes_asyncio against the emulator in
real time with a short lease, so they get few examples.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from _jitter import Jitter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from aioleader import (
    MAX_LEASE_DURATION,
    UNPARSEABLE_HOLDER,
    LeaderElectionRecord,
    Lock,
    Timing,
    elect,
)
from aioleader._record import (
    LEADER_ANNOTATION,
    format_micro_time,
    parse_time,
    record_from_annotation,
    record_from_lease_spec,
    record_to_annotation,
    record_to_lease_spec,
)
from aioleader.kubernetes import ConfigMapLock, LeaseLock
from aioleader.kubernetes._annotation import decode_annotation
from aioleader.locks import FileLock, MemoryLock
from aioleader.locks._file import version_name
from aioleader.testing import KubeEmulator

IDENTITY = "candidate-under-test"

# -- strategies ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
edge_numbers = st.sampled_from(
    [
        0,
        1,
        -1,
        15,
        MAX_LEASE_DURATION,
        MAX_LEASE_DURATION + 1,
        10**400,
        -(10**400),
        True,
        False,
        15.0,
        15.5,
        -0.0,
        math.nan,
        math.inf,
        -math.inf,
        1e300,
        "15",
        " 15 ",
        "²",
        "١٥",
        "１５",
        "15s",
        "-15",
        "",
        "9" * 30,
        [15],
        {"seconds": 15},
    ]
)
edge_times = st.sampled_from(
    [
        "2026-11-22T03:04:05.000060Z",
        "2026-11-22T03:04:05Z",
        "2016-12-31T23:59:60Z",
        "0000-01-01T00:00:00Z",
        "99999-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "２０２６-11-22T03:04:05Z",
        "yesterday",
        "1714979289.12",
        "",
    ]
) | st.datetimes(timezones=st.just(timezone.utc)).map(format_micro_time)
holders = st.text(max_size=20) | json_values | st.sampled_from(["", IDENTITY, UNPARSEABLE_HOLDER])


def fields(transitions: str) -> st.SearchStrategy[dict[str, Any]]:
    """A record object: each field absent, valid, an edge value or any JSON, plus unknown ones."""
    record = st.fixed_dictionaries(
        {},
        optional={
            "holderIdentity": holders,
            "leaseDurationSeconds": edge_numbers | json_values,
            "acquireTime": edge_times | json_values,
            "renewTime": edge_times | json_values,
            transitions: edge_numbers | json_values,
            "strategy": st.text(max_size=10) | json_values,
            "preferredHolder": holders,
        },
    )
    extra = st.dictionaries(st.text(max_size=8).map(lambda k: "x-" + k), json_values, max_size=2)
    return st.tuples(record, extra).map(lambda both: {**both[1], **both[0]})


lease_specs = fields("leaseTransitions") | json_values


def _storable(value: object) -> bool:
    """Whether a server can hold ``value``: JSON has no NaN or Infinity (kube-apiserver refuses
    them), so no real Lease carries one; the decoders above are fed them anyway."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


stored_lease_specs = lease_specs.filter(_storable)
annotation_objects = fields("leaderTransitions") | json_values
annotation_texts = (
    annotation_objects.map(json.dumps)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            '{"holderIdentity":"a","leaseDurationSeconds":NaN}',
            '{"holderIdentity":"a","leaseDurationSeconds":Infinity}',
            '{"holderIdentity":"a","holderIdentity":5}',  # duplicate keys: the last one wins
            '{"holderIdentity":5,"holderIdentity":"a"}',
            '{"holderIdentity":"\\ud800"}',  # a lone surrogate
            '{"holderIdentity":"a","leaseDurationSeconds":' + "9" * 5000 + "}",
            "[" * 100_000,
            "x" * 100_000,
            "null",
            "",
        ]
    )
)
annotation_values = annotation_texts | json_values  # kube-apiserver stores strings only


# -- the documented reading, restated ------------------------------------------------------------


def holder_of(obj: dict[str, Any], *, missing: str) -> str:
    if "holderIdentity" not in obj:
        return missing
    value = obj["holderIdentity"]
    if value is None:
        return ""
    return value if isinstance(value, str) else UNPARSEABLE_HOLDER


def integer_of(value: object, *, strings: bool = False) -> int | None:
    if type(value) is int:
        return value
    if type(value) is float and math.isfinite(value) and value == int(value):
        return int(value)
    if strings and isinstance(value, str):
        text = value.strip()
        if 0 < len(text) <= 19 and all(c in "0123456789" for c in text):
            return int(text)
    return None


def duration_of(value: object, *, strings: bool = False) -> int | None:
    seconds = integer_of(value, strings=strings)
    return seconds if seconds is not None and 0 < seconds <= MAX_LEASE_DURATION else None


def transitions_of(value: object) -> int:
    count = integer_of(value)
    return count if count is not None and 0 <= count <= 2**31 - 1 else 0


def expected_from_spec(spec: object) -> tuple[str, int | None, int]:
    """(holder, duration, transitions) as documented for a Lease spec."""
    if spec is None:
        return "", None, 0
    if not isinstance(spec, dict):
        return UNPARSEABLE_HOLDER, None, 0
    return (
        holder_of(spec, missing=""),
        duration_of(spec.get("leaseDurationSeconds")),
        transitions_of(spec.get("leaseTransitions")),
    )


def expected_from_annotation(value: object) -> tuple[str, int | None, int]:
    """(holder, duration, transitions) as documented for the annotation."""
    if value is None or value == "":
        return "", None, 0
    if not isinstance(value, str):
        return UNPARSEABLE_HOLDER, None, 0
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return UNPARSEABLE_HOLDER, None, 0
    if data is None:
        return "", None, 0
    if not isinstance(data, dict):
        return UNPARSEABLE_HOLDER, None, 0
    return (
        holder_of(data, missing=UNPARSEABLE_HOLDER),
        duration_of(data.get("leaseDurationSeconds"), strings=True),
        transitions_of(data.get("leaderTransitions")),
    )


def summary(record: LeaderElectionRecord) -> tuple[str, int | None, int]:
    return record.holder_identity, record.lease_duration_seconds, record.leader_transitions


def check_times(record: LeaderElectionRecord) -> None:
    for when in (record.acquire_time, record.renew_time):
        assert when is None or (isinstance(when, datetime) and when.tzinfo == timezone.utc)


# -- decoders ------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(lease_specs)
def test_any_lease_spec_is_read_as_documented_and_written_back(spec: object) -> None:
    record = record_from_lease_spec(spec)
    assert summary(record) == expected_from_spec(spec)
    assert record.is_free == (record.holder_identity == "")
    check_times(record)
    # Whatever was read can be written (the takeover of a garbage record) and reads back equal.
    written = record_to_lease_spec(record)
    json.dumps(written)
    assert record_from_lease_spec(written) == record


@settings(max_examples=400, deadline=None)
@given(annotation_values)
def test_any_annotation_is_read_as_documented_and_written_back(value: object) -> None:
    record, raw = decode_annotation(value)
    assert record == record_from_annotation(value)
    assert summary(record) == expected_from_annotation(value)
    check_times(record)
    if isinstance(value, str):
        assert raw == value.encode("utf-8", "surrogatepass")
    back = record_from_annotation(record_to_annotation(record))
    assert summary(back) == summary(record)


valid_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(timezone.utc)
)
valid_records = st.builds(
    LeaderElectionRecord,
    holder_identity=st.text(max_size=30),
    lease_duration_seconds=st.none() | st.integers(1, MAX_LEASE_DURATION),
    acquire_time=st.none() | valid_times,
    renew_time=st.none() | valid_times,
    leader_transitions=st.integers(0, 2**31 - 1),
    strategy=st.none() | st.text(min_size=1, max_size=10),
    preferred_holder=st.none() | st.text(min_size=1, max_size=10),
)


@settings(max_examples=200, deadline=None)
@given(valid_records)
def test_valid_records_round_trip(record: LeaderElectionRecord) -> None:
    spec = json.loads(json.dumps(record_to_lease_spec(record)))
    assert record_from_lease_spec(spec) == record
    text = record_to_annotation(record)
    seconds = record.with_changes(
        acquire_time=record.acquire_time and record.acquire_time.replace(microsecond=0),
        renew_time=record.renew_time and record.renew_time.replace(microsecond=0),
        strategy=None,  # not part of the annotation format
        preferred_holder=None,
    )
    assert record_from_annotation(text) == seconds


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40) | json_values)
def test_parse_time_never_raises(value: object) -> None:
    when = parse_time(value)
    assert when is None or when.tzinfo == timezone.utc


file_documents = st.fixed_dictionaries(
    {
        "apiVersion": st.just("aioleader/v1") | json_values,
        "kind": st.just("FileLease") | json_values,
        "metadata": st.fixed_dictionaries({"resourceVersion": st.just("1") | json_values})
        | json_values,
        "spec": lease_specs,
    }
)
file_contents = file_documents.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=300)


def expected_from_file(content: bytes) -> tuple[str, int | None, int]:
    try:
        doc = json.loads(content)
    except (ValueError, RecursionError):
        return UNPARSEABLE_HOLDER, None, 0
    if (
        not isinstance(doc, dict)
        or doc.get("apiVersion") != "aioleader/v1"
        or doc.get("kind") != "FileLease"
        or not isinstance(doc.get("metadata"), dict)
        or doc["metadata"].get("resourceVersion") != "1"
        or not isinstance(doc.get("spec"), dict)
    ):
        return UNPARSEABLE_HOLDER, None, 0
    return expected_from_spec(doc["spec"])


def put_file_record(directory: str, content: bytes) -> Path:
    path = Path(directory) / "leader.json"
    path.mkdir()
    (path / version_name(1)).write_bytes(content)
    return path


@settings(max_examples=200, deadline=None)
@given(file_contents)
def test_any_file_lock_version_is_read_as_documented_and_taken_over(content: bytes) -> None:
    async def check(path: Path) -> None:
        lock = FileLock(path, identity=IDENTITY)
        observed = await lock.get()
        assert observed is not None
        assert observed.raw == content
        assert summary(observed.record) == expected_from_file(content)
        taken = await lock.update(observed.record.with_changes(holder_identity=IDENTITY))
        assert taken.version == "2"
        fresh = await FileLock(path, identity="other").get()
        assert fresh == taken

    with tempfile.TemporaryDirectory() as directory:
        anyio.run(check, put_file_record(directory, content), backend="trio")


# -- running elections ---------------------------------------------------------------------------

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
HORIZON = 100.0  # virtual seconds an election is watched for


async def first_term_after(lock: Lock, timing: Timing, horizon: float) -> float | None:
    """When (from now) ``lock``'s candidate first leads, or ``None`` within ``horizon``."""
    t0 = anyio.current_time()
    async with elect(lock, timing=timing, rng=Jitter()) as leadership:
        with anyio.move_on_after(horizon):
            await leadership.wait_term()
            return anyio.current_time() - t0
    return None


def check_waited_out(
    took: float | None, expected: tuple[str, int | None, int], timing: Timing, slack: float
) -> None:
    """Free: taken at once. Held (unparseable included): never before its lease expired, counted
    from when it was first observed (here: the start), and soon after."""
    holder, duration, _ = expected
    if holder == "":
        assert took is not None
        assert took <= slack
        return
    wait = duration or timing.lease_duration
    if wait > HORIZON - 2 * slack:
        assert took is None or took >= wait
        return
    assert took is not None, f"never took over a record held by {holder!r} for {wait}s"
    assert wait <= took <= wait + (1 + timing.jitter) * timing.retry_period + slack


@settings(max_examples=60, deadline=None)
@given(lease_specs)
def test_an_election_on_any_memory_record_never_crashes_and_waits_out_its_holder(
    spec: object,
) -> None:
    expected = expected_from_spec(spec)
    if expected[0] == IDENTITY:
        return  # our own identity: re-taken at once, by design (a restarted process)

    async def run() -> float | None:
        lock = MemoryLock(IDENTITY)
        lock.put_raw(spec)
        return await first_term_after(lock, TIMING, HORIZON)

    took = anyio.run(
        run, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )
    check_waited_out(took, expected, TIMING, slack=0.0)


@settings(max_examples=30, deadline=None)
@given(file_contents)
def test_an_election_on_any_file_record_never_crashes_and_waits_out_its_holder(
    content: bytes,
) -> None:
    expected = expected_from_file(content)
    if expected[0] == IDENTITY:
        return

    async def run(path: Path) -> float | None:
        return await first_term_after(FileLock(path, identity=IDENTITY), TIMING, HORIZON)

    with tempfile.TemporaryDirectory() as directory:
        path = put_file_record(directory, content)
        took = anyio.run(
            run, path, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
        )
    check_waited_out(took, expected, TIMING, slack=0.0)


# -- through kubernetes_asyncio and the emulator (real time, few examples) -----------------------

REAL_TIMING = Timing(lease_duration=1, renew_deadline=0.75, retry_period=0.1)
REAL_HORIZON = 1.6
SLACK = 0.3


def run_examples(
    strategy: st.SearchStrategy[Any],
    max_examples: int,
    check: Callable[[Any], Any],
    always: list[Any],
) -> Callable[[], None]:
    """A hypothesis run, in a worker thread, whose every example runs ``check`` on the event loop
    that serves the emulator; the ``always`` values are tried first in every run."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(strategy)
    def examples(value: Any) -> None:
        anyio.from_thread.run(check, value)

    for value in reversed(always):
        examples = example(value)(examples)
    return examples


async def emulator_election(lock: Lock, expected: tuple[str, int | None, int]) -> None:
    if expected[0] == IDENTITY:
        return
    took = await first_term_after(lock, REAL_TIMING, REAL_HORIZON)
    holder, duration, _ = expected
    wait = duration or REAL_TIMING.lease_duration
    if holder == "":
        assert took is not None
        assert took < SLACK
    elif wait > REAL_HORIZON - SLACK:
        assert took is None or took >= wait
    else:
        assert took is not None
        assert wait <= took <= wait + 2.2 * REAL_TIMING.retry_period + SLACK


@pytest.mark.asyncio
@pytest.mark.emulator_only
async def test_lease_lock_elections_on_any_stored_spec(emu: KubeEmulator) -> None:
    counter = iter(range(1_000_000))

    async def check(spec: object) -> None:
        name = f"garbage-{next(counter)}"
        emu.put_raw("leases", "default", name, {"spec": spec})
        api = await emu.api_client(name)
        try:
            observed = await LeaseLock(name, "default", identity="probe", api_client=api).get()
            assert observed is not None
            assert summary(observed.record) == expected_from_spec(spec)
            lock = LeaseLock(name, "default", identity=IDENTITY, api_client=api, events=False)
            await emulator_election(lock, expected_from_spec(spec))
        finally:
            await api.close()

    always = [
        {"holderIdentity": 5, "leaseDurationSeconds": 15},  # waited out (own LD), never free
        {"holderIdentity": "peer", "leaseDurationSeconds": 10**400},  # once an OverflowError
        {"holderIdentity": "peer", "leaseDurationSeconds": True, "renewTime": "0000-01-01T00Z"},
        ["not", "an", "object"],
        None,
    ]
    await anyio.to_thread.run_sync(run_examples(stored_lease_specs, 5, check, always))


@pytest.mark.asyncio
@pytest.mark.emulator_only
async def test_configmap_lock_elections_on_any_stored_annotation(emu: KubeEmulator) -> None:
    counter = iter(range(1_000_000))

    async def check(value: object) -> None:
        name = f"garbage-{next(counter)}"
        body = {"metadata": {"annotations": {LEADER_ANNOTATION: value}}}
        emu.put_raw("configmaps", "default", name, body)
        api = await emu.api_client(name)
        try:
            probe = ConfigMapLock(name, "default", identity="probe", api_client=api, events=False)
            observed = await probe.get()
            assert observed is not None
            assert summary(observed.record) == expected_from_annotation(value)
            lock = ConfigMapLock(name, "default", identity=IDENTITY, api_client=api, events=False)
            await emulator_election(lock, expected_from_annotation(value))
        finally:
            await api.close()

    always = [
        '{"holderIdentity":"peer","leaseDurationSeconds":"²"}',  # once a crash: "²".isdigit()
        '{"holderIdentity":"peer","leaseDurationSeconds":' + "9" * 400 + "}",
        '{"holderIdentity":[],"leaseDurationSeconds":1}',
        "not json",
        '{"holderIdentity":""}',
    ]
    await anyio.to_thread.run_sync(run_examples(annotation_values, 5, check, always))
