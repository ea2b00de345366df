"""The pure decisions of sharded leadership, on plain values: no event loop, no clock."""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import subprocess
import sys

import pytest

from aioleader import shard_for
from aioleader._shard_decisions import (
    MembershipView,
    assign,
    check_group,
    fair_share,
    member_lock_name,
    plan,
    quotas,
    rendezvous_score,
    shard_lock_name,
)

# -- shard_for ---------------------------------------------------------------------------------


def test_shard_for_is_sha256_first_eight_bytes_big_endian_modulo_n() -> None:
    for key in ("order-1", "default/my-object", "", "ünïcode"):
        digest = hashlib.sha256(key.encode()).digest()
        assert shard_for(key, 32) == int.from_bytes(digest[:8], "big") % 32
    assert shard_for(b"order-1", 32) == shard_for("order-1", 32)


def test_shard_for_pinned_values_never_change() -> None:
    # Pinned: a change here re-routes every user's keys across an upgrade.
    assert [shard_for(f"key-{i}", 32) for i in range(8)] == [
        int.from_bytes(hashlib.sha256(f"key-{i}".encode()).digest()[:8], "big") % 32
        for i in range(8)
    ]
    assert shard_for("order-1", 32) == 12  # sha256sum: first 16 hex digits mod 32
    assert shard_for("order-1", 7) == 0
    assert shard_for("default/widget-a", 1000) == 137


def test_shard_for_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = "from aioleader import shard_for; print([shard_for(f'k{i}', 97) for i in range(20)])"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{[shard_for(f'k{i}', 97) for i in range(20)]}\n"}


@pytest.mark.parametrize(
    ("key", "shards", "error", "message"),
    [
        (1, 4, TypeError, "key must be str or bytes, got int"),
        ("k", 0, ValueError, "shards must be between 1 and 4096, got 0"),
        ("k", 5000, ValueError, "shards must be between 1 and 4096, got 5000"),
        ("k", True, TypeError, "shards must be an int, got bool"),
        ("k", 2.0, TypeError, "shards must be an int, got float"),
    ],
)
def test_shard_for_rejects_bad_input(
    key: object, shards: object, error: type, message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        shard_for(key, shards)  # type: ignore[arg-type]


# -- names -------------------------------------------------------------------------------------


def test_lock_names_are_dns_safe_and_tell_identities_apart() -> None:
    dns = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
    names = {
        member_lock_name("orders", identity)
        for identity in ("pod-a", "Pod-A", "pod_a", "host.example_123", "ÜBER", "x" * 300)
    }
    assert len(names) == 6
    for name in names:
        assert dns.fullmatch(name), name
        assert len(name) <= 253
        assert name.startswith("orders-member-")
    assert member_lock_name("orders", "pod-a") == (
        "orders-member-pod-a-" + hashlib.sha256(b"pod-a").hexdigest()[:10]
    )
    assert shard_lock_name("orders", 7) == "orders-7"


@pytest.mark.parametrize("group", ["", "Orders", "-a", "a-", "a_b", "a" * 64, "a.b"])
def test_bad_group_names_are_refused(group: str) -> None:
    with pytest.raises(ValueError, match="group must be a DNS-1123 label"):
        check_group(group)
    with pytest.raises(TypeError, match="group must be a string, got int"):
        check_group(3)


# -- assignment --------------------------------------------------------------------------------


def test_fair_share_and_quotas() -> None:
    assert fair_share(32, 3) == 11
    assert fair_share(32, 4) == 8
    assert fair_share(32, 0) == 0
    q = quotas(32, ["a", "b", "c"])
    assert sorted(q.values()) == [10, 11, 11]
    assert quotas(32, []) == {}
    assert sorted(quotas(2, ["a", "b", "c"]).values()) == [0, 1, 1]


@pytest.mark.parametrize(("shards", "members"), [(32, 3), (32, 5), (7, 7), (2, 5), (100, 8)])
def test_every_shard_is_assigned_once_and_counts_are_within_one(shards: int, members: int) -> None:
    ms = [f"pod-{i}" for i in range(members)]
    result = assign(shards, ms)
    assert set(result) == set(ms)
    every = [s for owned in result.values() for s in owned]
    assert sorted(every) == list(range(shards))
    counts = [len(owned) for owned in result.values()]
    assert max(counts) - min(counts) <= 1
    assert max(counts) == fair_share(shards, members)


def test_assignment_depends_on_the_set_of_members_only() -> None:
    assert assign(32, ["a", "b", "c"]) == assign(32, ["c", "a", "b", "a"])
    assert assign(32, []) == {}


def test_shards_go_to_the_members_that_score_highest_for_them_first() -> None:
    # 6 shards over 3 members: quotas 2 each. The best (shard, member) pair overall always
    # wins, and a member's shards are never worse for it than a shard it lost to a full quota.
    members = ["a", "b", "c"]
    result = assign(6, members)
    best = max((rendezvous_score(s, m), s, m) for s in range(6) for m in members)
    assert best[1] in result[best[2]]
    assert assign(6, ["a"]) == {"a": frozenset(range(6))}


def _moved(before: dict[str, frozenset[int]], after: dict[str, frozenset[int]]) -> int:
    owner = {s: m for m, owned in before.items() for s in owned}
    return sum(1 for m, owned in after.items() for s in owned if owner.get(s) != m)


def test_adding_a_member_moves_about_n_over_m_plus_one() -> None:
    moves, new_shares = [], []
    for trial in range(200):
        members = [f"pod-{trial}-{i}" for i in range(3)]
        before = assign(32, members)
        after = assign(32, [*members, f"new-{trial}"])
        moves.append(_moved(before, after))
        new_shares.append(len(after[f"new-{trial}"]))
    assert new_shares == [8] * 200  # the newcomer gets exactly its share
    # Every move to the newcomer is necessary (8 = 32/4); the rest are quota cascades.
    assert min(moves) >= 8
    assert statistics.mean(moves) <= 1.25 * 8
    assert max(moves) <= 12


def test_removing_a_member_moves_its_shards_and_few_others() -> None:
    moves = []
    for trial in range(200):
        members = [f"pod-{trial}-{i}" for i in range(4)]
        before = assign(32, members)
        after = assign(32, members[1:])
        assert _moved(before, after) >= len(before[members[0]])
        moves.append(_moved(before, after))
    assert statistics.mean(moves) <= 1.25 * 8


def test_plan_resumes_what_is_new_and_pauses_what_went_away() -> None:
    p = plan(frozenset({1, 2, 3}), frozenset({3, 4}))
    assert p.resume == frozenset({4})
    assert p.pause == frozenset({1, 2})


# -- membership --------------------------------------------------------------------------------


def test_a_member_lives_until_its_lease_expires_from_when_it_was_seen_to_change() -> None:
    view = MembershipView(default_duration=15)
    view.observe({"g-member-a": ("a", b"r1", 2, 0.0), "g-member-b": ("b", b"r1", 2, 0.0)}, now=10.0)
    assert view.live(11.9) == {"a", "b"}
    assert view.next_expiry(11.0) == 12.0
    # a renews (new bytes), b does not: b expires at 10 + 2, a at 11.5 + 2.
    view.observe({"g-member-a": ("a", b"r2", 2, 0.0), "g-member-b": ("b", b"r1", 2, 0.0)}, now=11.5)
    assert view.live(11.99) == {"a", "b"}
    assert view.live(12.0) == {"a"}
    assert view.live(13.49) == {"a"}
    assert view.live(13.5) == frozenset()
    assert view.next_expiry(12.5) == 13.5
    assert view.next_expiry(14.0) == float("inf")


def test_a_released_or_missing_member_lock_is_a_dead_member_at_once() -> None:
    view = MembershipView(default_duration=15)
    view.observe({"g-member-a": ("a", b"r1", 2, 0.0), "g-member-b": ("b", b"r1", 2, 0.0)}, now=0.0)
    view.observe({"g-member-a": ("", b"released", 1, 0.0)}, now=0.5)
    assert view.live(0.5) == frozenset()


def test_a_missing_or_invalid_duration_reads_as_the_default() -> None:
    view = MembershipView(default_duration=15)
    view.observe(
        {"g-member-a": ("a", b"r1", None, None), "g-member-b": ("b", b"r1", 0, None)}, now=0.0
    )
    assert view.live(14.9) == {"a", "b"}
    assert view.live(15.0) == frozenset()


def test_a_lock_first_seen_long_after_its_renewal_is_a_dead_member_at_once() -> None:
    view = MembershipView(default_duration=15)
    listing = {
        "g-member-old": ("old", b"r", 2, 3.5),  # renewed 3.5 s ago: 2 s lease + 1 s skew passed
        "g-member-skewed": ("skewed", b"r", 2, 2.9),  # within the skew: waited out from now
        "g-member-fresh": ("fresh", b"r", 2, 0.1),
        "g-member-unknown": ("unknown", b"r", 2, None),
    }
    view.observe(listing, now=100.0)
    assert view.live(100.0) == {"skewed", "fresh", "unknown"}
    assert view.live(102.0) == frozenset()
    # Once known, a lock's age no longer matters: only its changes do.
    view.observe({**listing, "g-member-fresh": ("fresh", b"r2", 2, 50.0)}, now=101.0)
    assert view.live(102.5) == {"fresh"}
