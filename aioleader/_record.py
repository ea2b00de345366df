"""The leader election record and its wire formats.

Two encodings exist in the wild, and aioleader speaks both exactly as client-go does:

* the ``spec`` of a ``coordination.k8s.io/v1`` Lease, with ``MicroTime`` timestamps
  (``2006-01-02T15:04:05.000000Z``; kube-apiserver rejects anything else with 400), and
* the JSON in the ``control-plane.alpha.kubernetes.io/leader`` annotation of a ConfigMap or Endpoints
  object, with RFC 3339 second-precision timestamps.

Readers are lenient (any RFC 3339 with 0–9 fractional digits, a missing or garbage field is read as
absent, never a crash); writers are exact.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "LEADER_ANNOTATION",
    "LeaderElectionRecord",
    "format_micro_time",
    "format_rfc3339",
    "parse_time",
    "record_from_annotation",
    "record_from_lease_spec",
    "record_to_annotation",
    "record_to_lease_spec",
]

LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


@dataclass(frozen=True)
class LeaderElectionRecord:
    """What a lock says about its holder; the same fields as client-go's ``LeaderElectionRecord``.

    ``lease_duration_seconds`` is ``None`` when the object on the server carries no valid duration
    (missing, zero, negative, not an integer). client-go reads such a lease as expired at once;
    aioleader is stricter and assumes the candidate's own lease duration instead.
    """

    holder_identity: str = ""
    lease_duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    leader_transitions: int = 0
    strategy: str | None = None
    preferred_holder: str | None = None
    # Fields of the wire object we do not model, kept so that a rewrite does not drop them.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_free(self) -> bool:
        """A record with no holder (``""`` or null, e.g. after a release) is free at once."""
        return not self.holder_identity

    def with_changes(self, **changes: Any) -> LeaderElectionRecord:
        return replace(self, **changes)


# -- time ------------------------------------------------------------------------------------------


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: pass an aware (UTC) datetime")
    return when.astimezone(timezone.utc)


def format_micro_time(when: datetime) -> str:
    """Kubernetes ``MicroTime``: exactly six fractional digits, UTC, ``Z``."""
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_rfc3339(when: datetime) -> str:
    """Kubernetes ``Time`` (and Go's ``time.RFC3339`` for UTC): whole seconds, ``Z``."""
    return _utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """Parse RFC 3339 with 0–9 fractional digits into an aware UTC datetime.

    Returns ``None`` for ``None``, ``""`` and anything that is not a valid timestamp, because a
    peer's garbage time must never crash an elector (times are informational: expiry is judged on
    our monotonic clock, never on a record's timestamps).
    """
    if isinstance(value, datetime):
        return (
            value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        )
    if not isinstance(value, str):
        return None
    m = _RFC3339.match(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    micro = int((frac or "0").ljust(9, "0")[:6])
    try:
        tz = (
            timezone.utc
            if z
            else timezone((1 if sign == "+" else -1) * timedelta(hours=int(oh), minutes=int(om)))
        )
        leap = int(second) == 60  # RFC 3339 allows a leap second; datetime does not.
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            59 if leap else int(second),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        return None
    if leap:
        parsed += timedelta(seconds=1)
    return parsed.astimezone(timezone.utc)


def _duration(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _annotation_duration(value: object) -> int | None:
    # The official Python client and kubernetes_asyncio write the annotation's duration as a
    # string ("15"); reading it as invalid would make us assume our own, possibly shorter, one.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return _duration(value)


def _transitions(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# -- Lease spec ------------------------------------------------------------------------------------

_SPEC_FIELDS = {
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
    "strategy",
    "preferredHolder",
}


def record_from_lease_spec(spec: object) -> LeaderElectionRecord:
    """Read a Lease ``spec`` (the JSON dict, camelCase keys). A null or non-object spec reads as a
    free lock, as client-go does."""
    if not isinstance(spec, dict):
        return LeaderElectionRecord()
    holder = spec.get("holderIdentity")
    return LeaderElectionRecord(
        holder_identity=holder if isinstance(holder, str) else "",
        lease_duration_seconds=_duration(spec.get("leaseDurationSeconds")),
        acquire_time=parse_time(spec.get("acquireTime")),
        renew_time=parse_time(spec.get("renewTime")),
        leader_transitions=_transitions(spec.get("leaseTransitions")),
        strategy=_optional_str(spec.get("strategy")),
        preferred_holder=_optional_str(spec.get("preferredHolder")),
        extra={k: v for k, v in spec.items() if k not in _SPEC_FIELDS},
    )


def record_to_lease_spec(record: LeaderElectionRecord) -> dict[str, Any]:
    """Write a Lease ``spec`` with exact ``MicroTime`` strings (never ``isoformat()``)."""
    spec: dict[str, Any] = dict(record.extra)
    spec["holderIdentity"] = record.holder_identity
    if record.lease_duration_seconds is not None:
        spec["leaseDurationSeconds"] = record.lease_duration_seconds
    if record.acquire_time is not None:
        spec["acquireTime"] = format_micro_time(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = format_micro_time(record.renew_time)
    spec["leaseTransitions"] = record.leader_transitions
    if record.strategy is not None:
        spec["strategy"] = record.strategy
    if record.preferred_holder is not None:
        spec["preferredHolder"] = record.preferred_holder
    return spec


# -- annotation JSON (ConfigMap / Endpoints locks) ------------------------------------------------

_ANNOTATION_FIELDS = {
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaderTransitions",
}


def record_from_annotation(value: str) -> LeaderElectionRecord:
    """Read client-go's annotation JSON. Undecodable JSON raises ``ValueError``."""
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError(f"leader annotation is not a JSON object: {value[:80]!r}")
    holder = data.get("holderIdentity")
    return LeaderElectionRecord(
        holder_identity=holder if isinstance(holder, str) else "",
        lease_duration_seconds=_annotation_duration(data.get("leaseDurationSeconds")),
        acquire_time=parse_time(data.get("acquireTime")),
        renew_time=parse_time(data.get("renewTime")),
        leader_transitions=_transitions(data.get("leaderTransitions")),
        extra={k: v for k, v in data.items() if k not in _ANNOTATION_FIELDS},
    )


def record_to_annotation(record: LeaderElectionRecord) -> str:
    """Write client-go's annotation JSON (Go field order, RFC 3339 seconds)."""
    data: dict[str, Any] = {
        "holderIdentity": record.holder_identity,
        "leaseDurationSeconds": record.lease_duration_seconds or 0,
        "acquireTime": format_rfc3339(record.acquire_time) if record.acquire_time else None,
        "renewTime": format_rfc3339(record.renew_time) if record.renew_time else None,
        "leaderTransitions": record.leader_transitions,
    }
    data.update(record.extra)
    return json.dumps(data, separators=(",", ":"))
