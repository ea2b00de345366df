"""The priority strategy and a third-party election step, from plain objects (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from aioleader._coordination import (
    AIOLEADER_STRATEGIES,
    HIGHEST_PRIORITY,
    election_step,
    pick_highest_priority,
    priority_of,
)

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def candidate(name: str, priority: str | None, created: str = "2030-01-01T00:00:00Z") -> Any:
    labels = {} if priority is None else {"aioleader.dev/priority": priority}
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": labels,
            "creationTimestamp": created,
        },
        "spec": {
            "leaseName": "lock",
            "binaryVersion": "2.0.0",
            "strategy": HIGHEST_PRIORITY,
            "renewTime": stamp(T0),
        },
    }


def test_priorities_are_decimal_integers_and_default_to_zero() -> None:
    assert [priority_of(candidate("c", p)) for p in ("7", "-3", "+2", None, "x", "1.5", "")] == [
        7,
        -3,
        2,
        0,
        None,
        None,
        None,
    ]


def name_of(picked: Any) -> str:
    assert picked is not None
    return str(picked["metadata"]["name"])


def test_the_highest_priority_wins_then_the_oldest_then_the_first() -> None:
    low, high = candidate("low", "1"), candidate("high", "10")
    assert pick_highest_priority([low, high]) is high
    assert name_of(pick_highest_priority([candidate("neg", "-1"), candidate("none", None)])) == (
        "none"
    )
    old = candidate("old", "5", "2029-01-01T00:00:00Z")
    young = candidate("young", "5", "2030-06-01T00:00:00Z")
    assert pick_highest_priority([young, old]) is old
    assert name_of(pick_highest_priority([candidate("a", "5"), candidate("b", "5")])) == "a"
    assert pick_highest_priority([candidate("bad", "x")]) is None


def test_a_better_candidate_is_named_preferred_holder_of_a_held_lease() -> None:
    lease = {
        "metadata": {"name": "lock", "namespace": "ns", "resourceVersion": "5"},
        "spec": {
            "holderIdentity": "low",
            "leaseDurationSeconds": 15,
            "renewTime": stamp(T0),
            "strategy": HIGHEST_PRIORITY,
        },
    }
    now = T0 + timedelta(seconds=1)
    step = election_step(
        "ns",
        "lock",
        lease,
        [candidate("low", "1"), candidate("high", "9")],
        now,
        strategies=AIOLEADER_STRATEGIES,
    )
    assert step.lease is not None
    assert (step.lease["spec"]["holderIdentity"], step.lease["spec"]["preferredHolder"]) == (
        "low",
        "high",
    )
    # kube-apiserver's strategies alone leave the same Lease untouched.
    assert election_step("ns", "lock", lease, [candidate("high", "9")], now).lease is None


def test_only_candidates_with_a_valid_priority_are_elected() -> None:
    step = election_step(
        "ns",
        "lock",
        None,
        [candidate("bad", "high")],
        T0 + timedelta(seconds=1),
        strategies=AIOLEADER_STRATEGIES,
    )
    assert (step.lease, step.error) == (
        None,
        f"no candidate can be elected with strategy {HIGHEST_PRIORITY}",
    )
