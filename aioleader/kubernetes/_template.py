"""[`RenewalTemplate`][RenewalTemplate]: a Lease's PUT body serialized once, with the two values
a renewal changes filled in.

From one renewal to the next, the body a leader sends differs in ``metadata.resourceVersion``
(the version its last write got back) and ``spec.renewTime``; the rest (the object's metadata,
the holder, the durations, the transitions, the fields we keep but do not model) stays. So the
body is serialized once with a marker in place of each of the two, split at the markers, and a
renewal joins the pieces around the new version and time: no JSON encoding on the hot path.

A template *fits* a renewal when everything but those two values is what it was built from: the
cached object (apart from its version), the record it decoded as, and the record to write (apart
from its renew time). Anything else (a label somebody added, a new term, a step-down's
preferred holder, an object without the usual shape) builds a new one or, where no template
applies, serializes the body as before: the template is a cache, never a second way to decide
what is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .._record import LeaderElectionRecord, format_micro_time

__all__ = ["RenewalTemplate"]

# Strings no API object holds (NUL is not allowed in any of its strings), so their JSON cannot
# occur anywhere else in a body.
_VERSION: Final = "\x00aioleader-resourceVersion"
_RENEW: Final = "\x00aioleader-renewTime"
_VERSION_JSON: Final = json.dumps(_VERSION).encode("ascii")
_RENEW_JSON: Final = json.dumps(_RENEW).encode("ascii")

MergedUpdate = Callable[
    [dict[str, Any], LeaderElectionRecord, LeaderElectionRecord], dict[str, Any]
]


def _static(record: LeaderElectionRecord) -> tuple[object, ...]:
    """What of ``record`` the template holds: everything but the renew time."""
    return (
        record.holder_identity,
        record.lease_duration_seconds,
        record.acquire_time,
        record.renew_time is None,
        record.leader_transitions,
        record.strategy,
        record.preferred_holder,
    )


@dataclass(frozen=True, eq=False)
class RenewalTemplate:
    """The pieces of one serialized body around its version and renew time."""

    metadata: dict[str, Any]  # the cached object's metadata, without its resourceVersion
    rest: dict[str, Any]  # the cached object's other top-level fields
    kept_extra: dict[str, Any]  # the spec fields kept from the server's copy
    static: tuple[object, ...]
    extra: dict[str, Any]
    pieces: tuple[bytes, bytes, bytes]  # before the version, between, after the renew time

    @classmethod
    def build(
        cls,
        merged_update: MergedUpdate,
        cached: dict[str, Any],
        kept: LeaderElectionRecord,
        record: LeaderElectionRecord,
    ) -> RenewalTemplate | None:
        """The template of the body ``merged_update`` makes for ``record``, or ``None`` if this
        body has no place for one (no version, no renew time, an unusual shape)."""
        metadata = cached.get("metadata")
        if (
            record.renew_time is None
            or not isinstance(metadata, dict)
            or not isinstance(metadata.get("resourceVersion"), str)
        ):
            return None
        marked = {**cached, "metadata": {**metadata, "resourceVersion": _VERSION}}
        body = merged_update(marked, kept, record)
        spec = body.get("spec")
        if not isinstance(spec, dict) or "renewTime" not in spec:
            return None
        body = {**body, "spec": {**spec, "renewTime": _RENEW}}
        text = json.dumps(body, separators=(",", ":")).encode("ascii")
        before, found, rest = text.partition(_VERSION_JSON)
        between, found_renew, after = rest.partition(_RENEW_JSON)
        if not found or not found_renew or _VERSION_JSON in after or _RENEW_JSON in after:
            return None  # the renew time before the version, or a marker twice: not ours to fill
        return cls(
            metadata={k: v for k, v in metadata.items() if k != "resourceVersion"},
            rest={k: v for k, v in cached.items() if k != "metadata"},
            kept_extra=dict(kept.extra),
            static=_static(record),
            extra=dict(record.extra),
            pieces=(before, between, after),
        )

    def fits(
        self, cached: dict[str, Any], kept: LeaderElectionRecord, record: LeaderElectionRecord
    ) -> bool:
        """Whether the body for ``record`` from ``cached`` is this template filled in."""
        if record.renew_time is None or _static(record) != self.static:
            return False
        if record.extra != self.extra or kept.extra != self.kept_extra:
            return False
        metadata = cached.get("metadata")
        if not isinstance(metadata, dict) or len(metadata) != len(self.metadata) + 1:
            return False
        if not isinstance(metadata.get("resourceVersion"), str):
            return False
        for key, value in metadata.items():
            if key != "resourceVersion" and self.metadata.get(key, _MISSING) != value:
                return False
        if len(cached) != len(self.rest) + 1:
            return False
        return all(
            key == "metadata" or self.rest.get(key, _MISSING) == value
            for key, value in cached.items()
        )

    def fill(self, cached: dict[str, Any], record: LeaderElectionRecord) -> bytes:
        """The body: this template with ``cached``'s version and ``record``'s renew time."""
        version: str = cached["metadata"]["resourceVersion"]
        assert record.renew_time is not None
        before, between, after = self.pieces
        if version.isascii() and version.isdigit():  # what kube-apiserver's versions are
            encoded = b'"%s"' % version.encode("ascii")
        else:
            encoded = json.dumps(version).encode("ascii")
        renewed = b'"%s"' % format_micro_time(record.renew_time).encode("ascii")
        return b"".join((before, encoded, between, renewed, after))


_MISSING: Final = object()
