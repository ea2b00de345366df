"""The record and its two wire formats."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from aioleader import LeaderElectionRecord, Timing
from aioleader._record import (
    UNPARSEABLE_HOLDER,
    format_micro_time,
    format_rfc3339,
    parse_time,
    record_from_annotation,
    record_from_lease_spec,
    record_to_annotation,
    record_to_lease_spec,
)

WHEN = datetime(2026, 11, 22, 3, 4, 5, 60, tzinfo=timezone.utc)


def test_micro_time_is_exactly_six_digits_utc_z() -> None:
    assert format_micro_time(WHEN) == "2026-11-22T03:04:05.000060Z"
    plus_two = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert format_micro_time(plus_two) == "2026-11-22T03:04:05.000060Z"
    assert format_micro_time(WHEN.replace(microsecond=0)) == "2026-11-22T03:04:05.000000Z"
    assert format_rfc3339(WHEN) == "2026-11-22T03:04:05Z"
    with pytest.raises(ValueError, match="naive datetime"):
        format_micro_time(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T03:04:05Z", WHEN.replace(microsecond=0)),
        ("2026-11-22T03:04:05.000060Z", WHEN),
        ("2026-11-22T03:04:05.000060123Z", WHEN),  # nanoseconds, as Go writes
        ("2026-11-22T03:04:05.00006Z", WHEN),
        ("2026-11-22T05:04:05.000060+02:00", WHEN),
        ("2026-11-22t03:04:05.000060z", WHEN),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=timezone.utc)),  # a leap second
    ],
)
def test_parse_any_rfc3339(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "garbage", [None, "", "yesterday", "2026-13-01T00:00:00Z", "2026-11-22 03:04", 7, [], {}]
)
def test_garbage_times_read_as_absent(garbage: object) -> None:
    assert parse_time(garbage) is None


def test_lease_spec_round_trip_and_unknown_fields_kept() -> None:
    record = LeaderElectionRecord(
        holder_identity="pod-a",
        lease_duration_seconds=15,
        acquire_time=WHEN,
        renew_time=WHEN,
        leader_transitions=3,
        strategy="OldestEmulationVersion",
        preferred_holder="pod-b",
    )
    spec = record_to_lease_spec(record)
    assert spec == {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-22T03:04:05.000060Z",
        "renewTime": "2026-11-22T03:04:05.000060Z",
        "leaseTransitions": 3,
        "strategy": "OldestEmulationVersion",
        "preferredHolder": "pod-b",
    }
    assert record_from_lease_spec(spec) == record
    with_future_field = record_from_lease_spec({**spec, "futureField": 1})
    assert record_to_lease_spec(with_future_field)["futureField"] == 1


@pytest.mark.parametrize(
    ("spec", "holder", "duration", "transitions"),
    [
        (None, "", None, 0),
        # kube-apiserver cannot store these: whoever wrote them is waited out, never overrun.
        ("not an object", UNPARSEABLE_HOLDER, None, 0),
        ([], UNPARSEABLE_HOLDER, None, 0),
        ({}, "", None, 0),
        ({"holderIdentity": None, "leaseDurationSeconds": 0}, "", None, 0),
        (
            {"holderIdentity": 42, "leaseDurationSeconds": -1, "leaseTransitions": -3},
            UNPARSEABLE_HOLDER,
            None,
            0,
        ),
        ({"holderIdentity": [], "leaseDurationSeconds": 7}, UNPARSEABLE_HOLDER, 7, 0),
        ({"holderIdentity": {}, "leaseTransitions": 4}, UNPARSEABLE_HOLDER, None, 4),
        (
            {"holderIdentity": "x", "leaseDurationSeconds": True, "leaseTransitions": "2"},
            "x",
            None,
            0,
        ),
        ({"holderIdentity": "x", "leaseDurationSeconds": 15.5}, "x", None, 0),
        (
            {"holderIdentity": "x", "leaseDurationSeconds": 15.0, "leaseTransitions": 2.0},
            "x",
            15,
            2,
        ),
        ({"holderIdentity": "x", "leaseDurationSeconds": 10**400}, "x", None, 0),
        ({"holderIdentity": "x", "leaseDurationSeconds": 2**31 - 1}, "x", 2**31 - 1, 0),
        ({"holderIdentity": "x", "leaseDurationSeconds": 2**31}, "x", None, 0),
        ({"holderIdentity": "x", "leaseDurationSeconds": float("inf")}, "x", None, 0),
        ({"holderIdentity": "x", "leaseDurationSeconds": float("nan")}, "x", None, 0),
        ({"holderIdentity": "x", "leaseDurationSeconds": 1e300}, "x", None, 0),
        ({"holderIdentity": "x", "leaseDurationSeconds": "15"}, "x", None, 0),  # Lease: no strings
        ({"holderIdentity": "x", "leaseTransitions": True}, "x", None, 0),
        ({"holderIdentity": "x", "leaseTransitions": 2**31}, "x", None, 0),
        ({"holderIdentity": "x", "leaseTransitions": -(10**400)}, "x", None, 0),
    ],
)
def test_malformed_lease_specs_read_leniently(
    spec: object, holder: str, duration: int | None, transitions: int
) -> None:
    record = record_from_lease_spec(spec)
    assert (record.holder_identity, record.lease_duration_seconds, record.leader_transitions) == (
        holder,
        duration,
        transitions,
    )


def test_annotation_json_as_client_go_writes_it() -> None:
    record = LeaderElectionRecord("pod-a", 15, WHEN, WHEN, 2)
    text = record_to_annotation(record)
    assert json.loads(text) == {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-22T03:04:05Z",
        "renewTime": "2026-11-22T03:04:05Z",
        "leaderTransitions": 2,
    }
    back = record_from_annotation(text)
    assert back.holder_identity == "pod-a"
    assert back.renew_time == WHEN.replace(microsecond=0)


def test_annotation_from_python_clients_with_string_duration() -> None:
    # kubernetes / kubernetes_asyncio: duration as a string, local str(datetime) times
    text = json.dumps(
        {
            "holderIdentity": "py",
            "leaseDurationSeconds": "15",
            "acquireTime": "2026-11-22 03:04:05.000060",
            "renewTime": "2026-11-22 03:04:05.000060",
        }
    )
    record = record_from_annotation(text)
    assert record.lease_duration_seconds == 15
    assert record.leader_transitions == 0
    # Not an object: held by somebody we cannot name (the decoder never raises).
    assert record_from_annotation("[1]") == LeaderElectionRecord(UNPARSEABLE_HOLDER)


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        ("15", 15),
        (" 15 ", 15),
        ("0015", 15),
        ("²", None),  # "²".isdigit() is True, but int("²") raises
        ("١٥", None),  # Arabic-Indic digits: int() would read 15
        ("１５", None),  # fullwidth digits
        ("15s", None),
        ("-15", None),
        ("+15", None),
        ("15.0", None),
        ("9" * 400, None),
        ("9" * 5000, None),  # beyond int()'s default digit limit
        ("2147483647", 2**31 - 1),
        ("2147483648", None),
        (True, None),
        (15.0, 15),
        (15.5, None),
        ([15], None),
        ({"seconds": 15}, None),
    ],
)
def test_annotation_durations(duration: object, expected: int | None) -> None:
    text = json.dumps({"holderIdentity": "py", "leaseDurationSeconds": duration})
    assert record_from_annotation(text).lease_duration_seconds == expected


@pytest.mark.parametrize(
    "text",
    [
        "0000-01-01T00:00:00Z",  # year 0
        "99999-01-01T00:00:00Z",  # year 99999
        "9999-12-31T23:59:59-01:00",  # valid locally, past the end of datetime in UTC
        "0001-01-01T00:00:00+01:00",  # before its start
        "9999-12-31T23:59:60Z",  # a leap second past the end
        "２０２６-11-22T03:04:05Z",  # fullwidth digits
        "2026-11-22T03:04:05Z\nextra",
        "2026-11-22T03:04:05" + "." + "1" * 10 + "Z",
        "2026-11-22T03:04:05+24:00",
        "x" * 100_000,
    ],
)
def test_times_out_of_range_or_not_ascii_read_as_absent(text: str) -> None:
    assert parse_time(text) is None


def test_record_free_when_no_holder() -> None:
    assert LeaderElectionRecord().is_free
    assert not LeaderElectionRecord("x").is_free


def test_timing_validation_names_the_field() -> None:
    with pytest.raises(
        ValueError, match=r"lease_duration \(10\) must be greater than renew_deadline"
    ):
        Timing(10, 10, 2)
    with pytest.raises(ValueError, match=r"renew_deadline .* must be greater than max"):
        Timing(15, 2, 2)
    with pytest.raises(ValueError, match="retry_period must be greater than zero"):
        Timing(15, 10, 0)
    with pytest.raises(ValueError, match="lease_duration must be at least 1 second"):
        Timing(0.5, 0.2, 0.1)
    with pytest.raises(ValueError, match="jitter must be >= 0"):
        Timing(jitter=-1)
    with pytest.raises(ValueError, match="retry_period must be a number"):
        Timing(retry_period="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be finite"):
        Timing(lease_duration=float("inf"))
    with pytest.raises(ValueError, match="unknown timing preset 'fast'"):
        Timing.preset("fast")
    assert Timing() == Timing(15, 10, 2)
    assert Timing.latency_sensitive() == Timing(10, 8, 1) == Timing.preset("latency-sensitive")
    assert Timing.stability_first() == Timing(30, 20, 5)
    assert Timing(2.5, 2, 0.5).lease_duration_seconds == 3
