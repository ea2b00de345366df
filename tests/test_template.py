"""The Lease renewal template (aioleader/kubernetes/_template.py): a filled template is the body
that serializing would have produced, for generated objects and records (hypothesis), and it
is rebuilt whenever anything but the version and the renew time changes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aioleader._record import LeaderElectionRecord
from aioleader.kubernetes import LeaseLock
from aioleader.kubernetes._template import RenewalTemplate

T0 = datetime(2026, 12, 1, 22, 0, 0, 123456, tzinfo=timezone.utc)

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | names,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=3),
    max_leaves=8,
)
versions = st.from_regex(r"[0-9]{1,12}", fullmatch=True) | names


def lock(labels: dict[str, str] | None = None) -> LeaseLock:
    return LeaseLock("lock", "default", identity="me", labels=labels)


def cached_object(metadata: dict[str, Any], version: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            **metadata,
            "name": "lock",
            "namespace": "default",
            "resourceVersion": version,
        },
        "spec": spec,
    }


def record(renewed: float, **changes: Any) -> LeaderElectionRecord:
    fields: dict[str, Any] = {
        "holder_identity": "me",
        "lease_duration_seconds": 15,
        "acquire_time": T0,
        "renew_time": T0 + timedelta(seconds=renewed),
        "leader_transitions": 3,
        **changes,
    }
    return LeaderElectionRecord(**fields)


@settings(max_examples=200, deadline=None)
@given(
    metadata=st.dictionaries(
        names.filter(lambda k: k not in ("name", "namespace")), values, max_size=4
    ),
    spec=st.dictionaries(names, values, max_size=3),
    extra=st.dictionaries(names, values, max_size=2),
    version_a=versions,
    version_b=versions,
    renewed=st.floats(0, 1e6, allow_nan=False),
)
def test_a_filled_template_is_the_serialized_body(
    metadata: dict[str, Any],
    spec: dict[str, Any],
    extra: dict[str, Any],
    version_a: str,
    version_b: str,
    renewed: float,
) -> None:
    the_lock = lock(labels={"app": "web"})
    kept = record(0, extra=extra)
    first = cached_object(metadata, version_a, spec)
    template = RenewalTemplate.build(the_lock._merged_update, first, kept, record(1, extra=extra))
    assert template is not None
    # The next renewal: a new version, a new renew time, nothing else changed.
    second = cached_object(metadata, version_b, spec)
    renewal = record(renewed, extra=extra)
    assert template.fits(second, kept, renewal)
    assert json.loads(template.fill(second, renewal)) == the_lock._merged_update(
        second, kept, renewal
    )


def test_anything_else_that_changes_does_not_fit() -> None:
    the_lock = lock()
    kept = record(0)
    cached = cached_object({"labels": {"a": "1"}}, "10", {})
    template = RenewalTemplate.build(the_lock._merged_update, cached, kept, record(1))
    assert template is not None
    assert template.fits(cached_object({"labels": {"a": "1"}}, "11", {}), kept, record(2))
    misfits = [
        (cached_object({"labels": {"a": "2"}}, "11", {}), kept, record(2)),  # a label changed
        (cached_object({"labels": {"a": "1"}, "x": 1}, "11", {}), kept, record(2)),  # a new field
        ({**cached, "status": {}}, kept, record(2)),  # a new top-level field
        (cached, kept, record(2, leader_transitions=4)),  # a new term
        (cached, kept, record(2, preferred_holder="other")),  # a handover
        (cached, kept, record(2, renew_time=None)),
        (cached, record(0, extra={"future": 1}), record(2)),  # a field we keep changed
    ]
    for other_cached, other_kept, other_record in misfits:
        assert not template.fits(other_cached, other_kept, other_record)


def test_no_template_without_a_version_or_a_renew_time() -> None:
    the_lock = lock()
    cached = cached_object({}, "10", {})
    del cached["metadata"]["resourceVersion"]
    assert RenewalTemplate.build(the_lock._merged_update, cached, record(0), record(1)) is None
    cached = cached_object({}, "10", {})
    assert (
        RenewalTemplate.build(
            the_lock._merged_update, cached, record(0), record(1, renew_time=None)
        )
        is None
    )


def test_lease_renewals_reuse_one_template() -> None:
    the_lock = lock()
    kept = record(0)
    bodies = []
    for n in range(3):
        cached = cached_object({}, str(10 + n), {})
        bodies.append(json.loads(the_lock._update_bytes(cached, kept, record(n + 1))))
    template = the_lock._template
    assert template is not None
    assert [b["metadata"]["resourceVersion"] for b in bodies] == ["10", "11", "12"]
    assert [b["spec"]["renewTime"] for b in bodies] == [
        "2026-12-01T22:00:01.123456Z",
        "2026-12-01T22:00:02.123456Z",
        "2026-12-01T22:00:03.123456Z",
    ]
    the_lock._update_bytes(cached_object({}, "13", {}), kept, record(4))
    assert the_lock._template is template  # reused, not rebuilt
