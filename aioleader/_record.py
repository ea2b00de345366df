"""The leader election record and its wire formats.

Two encodings exist in the wild, and aioleader speaks both exactly as client-go does:

* the ``spec`` of a ``coordination.k8s.io/v1`` Lease, with ``MicroTime`` timestamps
  (``2006-01-02T15:04:05.000000Z``; kube-apiserver rejects anything else with 400), and
* the JSON in the ``control-plane.alpha.kubernetes.io/leader`` annotation of a ConfigMap or Endpoints
  object, with RFC 3339 second-precision timestamps.

Readers are total: they read *any* JSON value of any field without raising. Times are any RFC 3339
with 0–9 fractional digits. A missing or garbage field is read as absent, with one exception: a
holder that is present but not a string (``5``, ``[]``, ``{}``), or a record that is not a JSON
object, is read as held by `UNPARSEABLE_HOLDER` - somebody we cannot name, waited out like
any other holder, never free. Writers are exact.

What counts as garbage, field by field:

* integers (``leaseDurationSeconds``, ``leaseTransitions``/``leaderTransitions``): a JSON integer,
  or a float with an integral value (``15.0``; ``15.5`` is garbage); never a boolean (``true`` is
  not 1), never NaN or Infinity. The annotation's duration may also be a string of ASCII digits
  (``"15"``, what the Python clients write; ``"²"`` or ``"١٥"`` are garbage).
* ``leaseDurationSeconds`` must be in ``1 .. MAX_LEASE_DURATION`` (the Lease field is an int32, so
  no conforming writer can store more); a larger value is garbage, not "forever", so one bad write
  cannot jam a lock for decades. Garbage reads as ``None``: the elector then waits its own lease
  duration.
* transitions must be in ``0 .. 2**31 - 1`` (int32 too); garbage reads as 0.
* times outside what `datetime` can hold (year 0, year 99999, an offset that
  moves 9999-12-31 past the end) are garbage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Final, final

__all__ = [
    "LEADER_ANNOTATION",
    "MAX_LEASE_DURATION",
    "UNPARSEABLE_HOLDER",
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

#: The holder a record is attributed to when it cannot be read: not a JSON object, not JSON at all
#: (annotation and file locks), or a ``holderIdentity`` that is not a string. Not a valid Pod name
#: nor any client's identity format, so it never names a real candidate; the locks refuse it as
#: an identity. The elector treats it like any other holder: it waits the record's duration (its
#: own if the record has none) from when it observed the record, then takes it over.
UNPARSEABLE_HOLDER: Final = "aioleader/unparseable-record"

#: The largest ``leaseDurationSeconds`` read as valid: the Lease field is an int32, so no
#: conforming writer stores more (about 68 years). Anything above is garbage (read as absent).
MAX_LEASE_DURATION: Final = 2**31 - 1
_MAX_TRANSITIONS: Final = 2**31 - 1

# ASCII digits only: ``\d`` would also match other scripts' digits, which ``int()`` then accepts.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_DIGITS = re.compile(r"[0-9]{1,19}")


@final
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
    return f"{_seconds(_utc(when))}.{when.microsecond:06d}Z"


def format_rfc3339(when: datetime) -> str:
    """Kubernetes ``Time`` (and Go's ``time.RFC3339`` for UTC): whole seconds, ``Z``."""
    return f"{_seconds(_utc(when))}Z"


def _seconds(when: datetime) -> str:
    # Not strftime: glibc's %Y writes the year 999 as "999", which no RFC 3339 reader accepts.
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T"
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    )


def _parse_micro_time(value: str) -> datetime | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` with ASCII digits and a second below 60, or ``None``."""
    if not (
        value[26] == "Z"
        and value[19] == "."
        and value[10] == "T"
        and value[4] == value[7] == "-"
        and value[13] == value[16] == ":"
        and value.isascii()
    ):
        return None
    digits = value[0:4] + value[5:7] + value[8:10] + value[11:13] + value[14:16]
    if not (digits + value[17:19] + value[20:26]).isdigit() or value[17:19] == "60":
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_time(value: object) -> datetime | None:
    """Parse RFC 3339 with 0–9 fractional digits into an aware UTC datetime.

    Returns ``None`` for ``None``, ``""`` and anything that is not a valid timestamp, because a
    peer's garbage time must never crash an elector (times are informational: expiry is judged on
    our monotonic clock, never on a record's timestamps).
    """
    if isinstance(value, datetime):
        try:
            return (
                value.astimezone(timezone.utc)
                if value.tzinfo
                else value.replace(tzinfo=timezone.utc)
            )
        except (ValueError, OverflowError):
            return None
    if not isinstance(value, str) or len(value) > 64:
        return None
    if len(value) == 27:
        # The shape every conforming writer sends (MicroTime: six fractional digits, UTC), read
        # by the C parser once the shape is checked; anything else takes the general path.
        fast = _parse_micro_time(value)
        if fast is not None:
            return fast
    m = _RFC3339.fullmatch(value.strip())
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
        if leap:
            parsed += timedelta(seconds=1)
        # An offset can move a valid local time out of datetime's range (9999-12-31T23:00-01:00).
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def _integer(value: object, *, strings: bool = False) -> int | None:
    """A JSON integer (or an integral float, or with ``strings`` a string of ASCII digits), else
    ``None``. Never a boolean: ``True`` is an ``int`` in Python but not a number on the wire."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # NaN and the infinities are not integral; a float this large is beyond any cap anyway.
        return int(value) if value.is_integer() else None
    if strings and isinstance(value, str):
        text = value.strip()
        return int(text) if _DIGITS.fullmatch(text) else None
    return None


def _duration(value: object, *, strings: bool = False) -> int | None:
    seconds = _integer(value, strings=strings)
    if seconds is None or not 0 < seconds <= MAX_LEASE_DURATION:
        return None
    return seconds


def _annotation_duration(value: object) -> int | None:
    # The official Python client and kubernetes_asyncio write the annotation's duration as a
    # string ("15"); reading it as invalid would make us assume our own, possibly shorter, one.
    return _duration(value, strings=True)


def _transitions(value: object) -> int:
    count = _integer(value)
    if count is None or not 0 <= count <= _MAX_TRANSITIONS:
        return 0
    return count


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# -- Lease spec ------------------------------------------------------------------------------------

#: The Lease spec fields a record models, in the order they are written.
LEASE_SPEC_FIELDS: Final = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
    "strategy",
    "preferredHolder",
)
_SPEC_FIELDS = frozenset(LEASE_SPEC_FIELDS)


def record_from_lease_spec(spec: object) -> LeaderElectionRecord:
    """Read a Lease ``spec`` (the JSON dict, camelCase keys); never raises.

    A missing or null spec, and a missing, null or ``""`` holder, read as a free lock, as client-go
    does. A spec that is not an object, or a holder that is not a string, reads as held by
    `UNPARSEABLE_HOLDER` (kube-apiserver cannot store either; whoever wrote it is waited
    out, never overrun). Every other field is read on its own: garbage is absent.
    """
    if spec is None:
        return LeaderElectionRecord()
    if not isinstance(spec, dict):
        return LeaderElectionRecord(holder_identity=UNPARSEABLE_HOLDER)
    return LeaderElectionRecord(
        holder_identity=_holder(spec.get("holderIdentity")),
        lease_duration_seconds=_duration(spec.get("leaseDurationSeconds")),
        acquire_time=parse_time(spec.get("acquireTime")),
        renew_time=parse_time(spec.get("renewTime")),
        leader_transitions=_transitions(spec.get("leaseTransitions")),
        strategy=_optional_str(spec.get("strategy")),
        preferred_holder=_optional_str(spec.get("preferredHolder")),
        extra=_extra(spec, _SPEC_FIELDS),
    )


def _extra(data: dict[str, Any], modelled: Set[str]) -> dict[str, Any]:
    """The fields we do not model, kept to be written back - if they can be: JSON nested almost
    as deep as the decoder allows may not encode again from a deeper stack, and a rewrite must
    not crash on what a peer left, so such fields are dropped (garbage, read as absent)."""
    extra = {k: v for k, v in data.items() if k not in modelled}
    if extra:
        try:
            json.dumps(extra)
        except (ValueError, TypeError, RecursionError):
            return {}
    return extra


def _holder(value: object) -> str:
    """A holder identity: null reads as free, anything else but a string as unparseable."""
    if value is None:
        return ""
    return value if isinstance(value, str) else UNPARSEABLE_HOLDER


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


def record_from_annotation(value: object) -> LeaderElectionRecord:
    """Read client-go's annotation JSON (the annotation's value, ``None`` when absent); never raises.

    * **Free** (an empty record): absent, ``""``, JSON ``null``, or an object whose
      ``holderIdentity`` is ``""`` or null - what client-go and the Python clients write.
    * **Unparseable** (held by `UNPARSEABLE_HOLDER`, nothing else read): text that is not
      JSON, JSON that is not an object, or a value that is not a string at all (kube-apiserver
      only stores strings, so it is corrupt).
    * **A record** otherwise, each field read on its own (garbage is absent; unmodelled fields
      are kept in ``extra``). An object *without* ``holderIdentity`` (no known writer omits it: a
      format we do not know, not evidence that the lock is free) or with a holder that is not a
      string is held by `UNPARSEABLE_HOLDER`, its other fields read as usual.
    """
    if value is None or value == "":
        return LeaderElectionRecord()
    if not isinstance(value, str):
        return LeaderElectionRecord(holder_identity=UNPARSEABLE_HOLDER)
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):  # JSONDecodeError, and ints beyond Python's digit limit
        return LeaderElectionRecord(holder_identity=UNPARSEABLE_HOLDER)
    if data is None:
        return LeaderElectionRecord()
    if not isinstance(data, dict):
        return LeaderElectionRecord(holder_identity=UNPARSEABLE_HOLDER)
    holder = _holder(data.get("holderIdentity")) if "holderIdentity" in data else UNPARSEABLE_HOLDER
    return LeaderElectionRecord(
        holder_identity=holder,
        lease_duration_seconds=_annotation_duration(data.get("leaseDurationSeconds")),
        acquire_time=parse_time(data.get("acquireTime")),
        renew_time=parse_time(data.get("renewTime")),
        leader_transitions=_transitions(data.get("leaderTransitions")),
        extra=_extra(data, _ANNOTATION_FIELDS),
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
