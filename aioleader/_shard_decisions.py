"""The decisions of sharded leadership, on plain values (no I/O, no clock but ``now`` passed in).

* [`shard_for()`][shard_for] routes a key to a shard: SHA-256 of the key's UTF-8 bytes, the first 8 bytes
  of the digest read as a big-endian unsigned integer, modulo the number of shards. The same on
  every replica, every Python version and every aioleader version (never Python's ``hash()``,
  which is salted per process).
* [`rendezvous_score()`][rendezvous_score] ranks members for a shard (highest random weight hashing): SHA-256 of
  ``"<shard>\\0<identity>"``, first 8 bytes, big-endian.
* [`assign()`][assign] splits the shards over the live members: every member gets ``floor(N/M)`` or
  ``ceil(N/M)`` shards (the ``N mod M`` members that rank first by [`member_rank()`][member_rank] get one
  more), and shards go to the members that score highest for them, greedily over all
  (score, shard, member) pairs from the highest down, each member up to its quota. It depends on
  the set of members only, so replicas that see the same members agree on the whole assignment
  without talking to each other, and a change of membership moves few shards (adding a member to
  M moves about ``N/(M+1)`` of them: its own quota, plus a few where quotas cascade).
* [`MembershipView`][MembershipView] judges which member locks are alive, as the elector judges a lease: on
  the local time at which a record was seen to *change* plus the record's own lease duration
  (a lock first seen long after its last renewal is dead at once).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_SHARDS",
    "WALL_CLOCK_SKEW",
    "MembershipView",
    "Plan",
    "assign",
    "check_group",
    "check_shards",
    "fair_share",
    "member_lock_name",
    "member_prefix",
    "member_rank",
    "plan",
    "quotas",
    "rendezvous_score",
    "shard_for",
    "shard_lock_name",
]

#: How far another node's wall clock may be off ours when a membership lock is first seen.
WALL_CLOCK_SKEW: Final = 1.0

#: More shards than this is a mistake (each shard is a lease renewed every retry period).
MAX_SHARDS: Final = 4096

_GROUP: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# A group name leaves room for "-member-<slug>-<hash>" within a DNS-1123 subdomain (253).
_MAX_GROUP: Final = 63
_MAX_SLUG: Final = 40
_HASH_CHARS: Final = 10


def _digest64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def check_group(group: object) -> str:
    """``group`` if it is a valid group name (a DNS-1123 label of at most 63 characters)."""
    if not isinstance(group, str):
        raise TypeError(f"group must be a string, got {type(group).__name__}")
    if len(group) > _MAX_GROUP or not _GROUP.fullmatch(group):
        raise ValueError(
            f"group must be a DNS-1123 label of at most {_MAX_GROUP} characters (lowercase "
            f"letters, digits and '-', starting and ending with a letter or digit), got {group!r}"
        )
    return group


def check_shards(shards: object) -> int:
    """``shards`` if it is a valid number of shards (an int in 1..MAX_SHARDS)."""
    if isinstance(shards, bool) or not isinstance(shards, int):
        raise TypeError(f"shards must be an int, got {type(shards).__name__}")
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, got {shards}")
    return shards


def shard_lock_name(group: str, index: int) -> str:
    """The lock object of shard ``index``: ``<group>-<index>``."""
    return f"{group}-{index}"


def member_prefix(group: str) -> str:
    """The common prefix of the group's membership locks."""
    return f"{group}-member-"


def member_lock_name(group: str, identity: str) -> str:
    """The membership lock of ``identity``: ``<group>-member-<slug>-<hash>``.

    The slug is the identity lowercased with every run of characters outside ``[a-z0-9]``
    replaced by ``-`` (at most 40 characters); the hash (10 hex digits of SHA-256 of the exact
    identity) keeps identities that differ only in case or punctuation apart. The result is a
    DNS-1123 subdomain whatever the identity.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", identity.lower()).strip("-")[:_MAX_SLUG].strip("-")
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{member_prefix(group)}{slug + '-' if slug else ''}{digest}"


def shard_for(key: str | bytes, shards: int) -> int:
    """The shard of ``key`` among ``shards``: ``int.from_bytes(sha256(key)[:8], "big") % shards``
    (a ``str`` key is hashed as UTF-8). Stable across replicas, processes and versions."""
    check_shards(shards)
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    elif isinstance(key, bytes):
        data = key
    else:
        raise TypeError(f"key must be str or bytes, got {type(key).__name__}")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") % shards


def rendezvous_score(shard: int, member: str) -> int:
    """How much ``member`` wants ``shard`` (higher wins): 64 bits of SHA-256 of
    ``"<shard>\\0<member>"``."""
    return _digest64(f"{shard}\0{member}")


def member_rank(member: str) -> int:
    """The order in which members receive the ``N mod M`` extra shards (lower first)."""
    return _digest64(f"member\0{member}")


def fair_share(shards: int, members: int) -> int:
    """``ceil(shards / members)``: the most any member holds once balanced (0 without members)."""
    return math.ceil(shards / members) if members > 0 else 0


def quotas(shards: int, members: Iterable[str]) -> dict[str, int]:
    """How many shards each member gets: ``floor(N/M)``, plus one for the first ``N mod M``
    members by [`member_rank()`][member_rank]."""
    ordered = sorted(set(members), key=lambda m: (member_rank(m), m))
    if not ordered:
        return {}
    base, extra = divmod(shards, len(ordered))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(ordered)}


def assign(shards: int, members: Iterable[str]) -> dict[str, frozenset[int]]:
    """Every live member's shards (see the module docstring). Every shard is assigned exactly
    once when there is at least one member; each member's count is its quota."""
    quota = quotas(shards, members)
    pairs = sorted(
        ((rendezvous_score(s, m), s, m) for s in range(shards) for m in quota),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    owner: dict[int, str] = {}
    count = dict.fromkeys(quota, 0)
    for _, shard, member in pairs:
        if shard not in owner and count[member] < quota[member]:
            owner[shard] = member
            count[member] += 1
    result: dict[str, set[int]] = {m: set() for m in quota}
    for shard, member in owner.items():
        result[member].add(shard)
    return {m: frozenset(s) for m, s in result.items()}


@dataclass(frozen=True)
class Plan:
    """What one replica changes: shards to campaign for (``resume``), shards to give up
    (``pause``: a leader steps down, its work cancelled and awaited, then the lock released)."""

    resume: frozenset[int]
    pause: frozenset[int]


def plan(wanted: frozenset[int], target: frozenset[int]) -> Plan:
    """From the shards campaigned for now (``wanted``) to ``target``."""
    return Plan(resume=target - wanted, pause=wanted - target)


@dataclass
class _Member:
    holder: str
    raw: bytes
    duration: float
    changed_at: float


class MembershipView:
    """Which membership locks are alive, from successive listings.

    A member is alive while its lock names a holder and ``now`` is before the local time at which
    its record was last seen to change plus the record's ``leaseDurationSeconds`` (a duration that
    is missing or not positive reads as ``default_duration``). A lock seen for the first time
    counts as changed at that moment: a replica cannot know how old a record it has never seen
    change is, so it waits the lease out, as the elector does. A released lock (no holder) or a
    lock missing from the listing is a dead member at once.
    """

    def __init__(self, default_duration: float) -> None:
        self._default = default_duration
        self._members: dict[str, _Member] = {}

    def observe(
        self, listing: Mapping[str, tuple[str, bytes, int | None, float | None]], now: float
    ) -> None:
        """Take in one listing: lock name -> (holder, raw record, lease duration seconds, age).

        ``age`` is how long ago the record says it was renewed, by our wall clock (``None`` if
        unknown). It only matters for a lock seen for the first time: one whose renewal is older
        than its duration plus [`WALL_CLOCK_SKEW`][WALL_CLOCK_SKEW] is a member that died before we looked
        (a pod gone for good leaves its lock behind), dead at once. Anything younger is waited
        out from now. Membership is not a safety decision (every shard is its own election), so
        a wall clock read here can cost a shard move, never a second leader.
        """
        for name in list(self._members):
            if name not in listing:
                del self._members[name]
        for name, (holder, raw, duration, age) in listing.items():
            seconds = float(duration) if duration is not None and duration > 0 else self._default
            known = self._members.get(name)
            if known is None:
                stale = age is not None and age > seconds + WALL_CLOCK_SKEW
                self._members[name] = _Member(holder, raw, seconds, -math.inf if stale else now)
            elif known.raw != raw:
                self._members[name] = _Member(holder, raw, seconds, now)

    def live(self, now: float) -> frozenset[str]:
        """The identities of the live members."""
        return frozenset(
            m.holder for m in self._members.values() if m.holder and now < m.changed_at + m.duration
        )

    def next_expiry(self, now: float) -> float:
        """When the next live member expires unless renewed (``inf`` if none)."""
        times = [
            m.changed_at + m.duration
            for m in self._members.values()
            if m.holder and now < m.changed_at + m.duration
        ]
        return min(times, default=math.inf)
