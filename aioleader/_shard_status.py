"""``aioleader status --shards`` and ``aioleader watch --shards``: a shard group at a glance.

One listing of the group's locks ([`list_siblings()`][aioleader.Lock.list_siblings] with the prefix
``<group>-``): the shard locks ``<group>-<index>`` and the membership locks
``<group>-member-...``. A member counts as live while its renewal (by this machine's wall clock;
this is a display, not a decision) is younger than its lease duration.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio

from ._lock import Lock, Observed
from ._shard_decisions import fair_share, member_prefix

__all__ = ["GroupSnapshot", "group_snapshot", "print_group_status", "watch_group"]

_SHARD = re.compile(r"(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class GroupSnapshot:
    group: str
    members: tuple[str, ...]  # live members, sorted
    holders: Mapping[int, str]  # shard -> holder ("" when free or expired)

    @property
    def shards(self) -> int:
        return max(self.holders, default=-1) + 1

    def per_member(self) -> dict[str, list[int]]:
        owned: dict[str, list[int]] = {m: [] for m in self.members}
        for shard, holder in sorted(self.holders.items()):
            owned.setdefault(holder, []).append(shard)
        return owned

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "shards": self.shards,
            "members": list(self.members),
            "fairShare": fair_share(self.shards, len(self.members)),
            "owned": {m or "": s for m, s in self.per_member().items()},
        }

    def render(self) -> str:
        lines = [
            f"shard group {self.group}: {len(self.members)} live members, {self.shards} shards "
            f"(fair share {fair_share(self.shards, len(self.members))})"
        ]
        for member, shards in sorted(self.per_member().items(), key=lambda kv: kv[0] or "~"):
            name = member or "(nobody)"
            lines.append(f"  {name}: {len(shards)} shards {' '.join(map(str, shards))}".rstrip())
        return "\n".join(lines)


def _alive(observed: Observed, wall: datetime) -> bool:
    record = observed.record
    if not record.holder_identity or record.renew_time is None:
        return bool(record.holder_identity) and record.renew_time is None
    duration = record.lease_duration_seconds or 0
    return (wall - record.renew_time).total_seconds() < duration


async def group_snapshot(lock: Lock, group: str) -> GroupSnapshot:
    """The group's members and each shard's holder, from one listing."""
    listed = await lock.list_siblings(f"{group}-", timeout=10)
    wall = datetime.now(timezone.utc)
    members, holders = set(), {}
    for name, observed in listed.items():
        rest = name[len(group) + 1 :]
        if name.startswith(member_prefix(group)):
            if _alive(observed, wall):
                members.add(observed.record.holder_identity)
        elif _SHARD.fullmatch(rest):
            holders[int(rest)] = observed.record.holder_identity if _alive(observed, wall) else ""
    return GroupSnapshot(group=group, members=tuple(sorted(members)), holders=holders)


async def print_group_status(lock: Lock, group: str, output: str) -> int:
    async with lock:
        snapshot = await group_snapshot(lock, group)
    print(json.dumps(snapshot.as_json()) if output == "json" else snapshot.render())
    return 0


async def watch_group(lock: Lock, group: str, poll_interval: float) -> int:
    """Print the group each time its members or their shards change."""
    last = None
    async with lock:
        while True:
            snapshot = await group_snapshot(lock, group)
            shown = snapshot.render()
            if shown != last:
                stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
                print(f"{stamp} {shown}", flush=True)
                last = shown
            await anyio.sleep(poll_interval)
