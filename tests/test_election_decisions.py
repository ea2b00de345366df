"""The election controller's decisions and semantic versions, from plain objects and times.

:func:`election_step` is what kube-apiserver's ``reconcileElectionStep`` decides; no I/O, no
event loop. The same behaviour through the real client is in ``test_election_controller.py``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aioleader._semver import parse, parse_tolerant
from aioleader.testing._election_controller import election_step, expired_candidates

NS = "default"
OEV = "OldestEmulationVersion"
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _candidate(name: str, emulation: str, binary: str, created: str, **spec: str) -> Any:
    return {
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": created},
        "spec": {
            "leaseName": "lock",
            "emulationVersion": emulation,
            "binaryVersion": binary,
            "strategy": OEV,
            "renewTime": stamp(T0),
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("candidates", "elected"),
    [
        # Oldest emulation version first, then oldest binary version...
        ([("a", "1.31.0", "1.31.0", "2030"), ("b", "1.30.0", "1.31.0", "2030")], "b"),
        ([("a", "1.30.0", "1.32.0", "2030"), ("b", "1.30.0", "1.31.0", "2030")], "b"),
        # ...then the oldest object, then the first listed.
        ([("a", "1.30.0", "1.31.0", "2031"), ("b", "1.30.0", "1.31.0", "2030")], "b"),
        ([("a", "1.30.0", "1.31.0", "2030"), ("b", "1.30.0", "1.31.0", "2030")], "a"),
        # Versions are read leniently: "v1.30" is 1.30.0, before 1.30.1; a pre-release first.
        ([("a", "1.30.1", "1.31.0", "2030"), ("b", "v1.30", "1.31.0", "2030")], "b"),
        ([("a", "1.31.0", "1.31.0", "2030"), ("b", "1.31.0-rc.1", "1.31.0", "2030")], "b"),
        # A candidate whose version does not parse is never elected.
        ([("a", "1.31.0", "1.31.0", "2030"), ("b", "one", "1.31.0", "2030")], "a"),
    ],
)
def test_pick(candidates: list[tuple[str, str, str, str]], elected: str) -> None:
    objects = [
        _candidate(name, ev, bv, f"{year}-01-01T00:00:00Z") for name, ev, bv, year in candidates
    ]
    step = election_step(NS, "lock", None, objects, T0)
    assert step.create
    assert step.lease is not None
    assert step.lease["spec"]["holderIdentity"] == elected


def test_step_waits_for_pinged_candidates_within_the_window() -> None:
    ping = stamp(T0)
    pending = _candidate("p", "1.30.0", "1.31.0", "2030-01-01T00:00:00Z", pingTime=ping)
    pending["spec"]["renewTime"] = stamp(T0 - timedelta(minutes=1))
    answered = _candidate("a", "1.31.0", "1.31.0", "2030-01-01T00:00:00Z", pingTime=ping)
    answered["spec"]["renewTime"] = stamp(T0 + timedelta(seconds=1))
    waiting = election_step(NS, "lock", None, [pending, answered], T0 + timedelta(seconds=2))
    assert (waiting.lease, waiting.pings, waiting.requeue) == (None, (), 5.0)
    done = election_step(NS, "lock", None, [pending, answered], T0 + timedelta(seconds=5.5))
    assert done.lease is not None
    assert done.lease["spec"]["holderIdentity"] == "a"


def test_garbage_collection_pick() -> None:
    fresh = _candidate("fresh", "1.31.0", "1.31.0", "2030-01-01T00:00:00Z")
    old = _candidate("old", "1.31.0", "1.31.0", "2030-01-01T00:00:00Z")
    old["spec"]["renewTime"] = stamp(T0 - timedelta(minutes=31))
    never = _candidate("never", "1.31.0", "1.31.0", "2030-01-01T00:00:00Z")
    del never["spec"]["renewTime"]
    assert expired_candidates([fresh, old, never], T0) == [(NS, "old"), (NS, "never")]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "Version string empty"),
        ("1.36", "No Major.Minor.Patch elements found"),
        ("v1.36.2", "Invalid character(s) found in major number 'v1'"),
        ("1.036.0", "Minor number must not contain leading zeroes '036'"),
        ("1.36.2-", "Prerelease is empty"),
    ],
)
def test_strict_semantic_versions(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse(text)


def test_tolerant_semantic_versions_and_order() -> None:
    assert parse("1.36.2-rc.1+b.7") == parse_tolerant(" v1.36.2-rc.1+b.7 ")
    assert parse_tolerant("v1.36") == parse_tolerant(" 01.036 ") == parse("1.36.0")
    assert parse("1.36.0-rc.1").compare(parse("1.36.0")) == -1
    assert parse("1.36.0-rc.2").compare(parse("1.36.0-rc.10")) == -1
    assert parse("1.36.0-1").compare(parse("1.36.0-alpha")) == -1
    assert parse("1.36.0-rc").compare(parse("1.36.0-rc.1")) == -1
    assert parse("1.36.0+a").compare(parse("1.36.0+b")) == 0
    assert parse("1.9.0").compare(parse("1.10.0")) == -1
