"""The election's decision core with plain numbers: no event loop, no lock, no clock.

``LockView`` is what one candidate knows of a lock; every method takes ``now``. Default timing
15/10/2 (LD/RD/RP).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from aioleader import LeaderElectionRecord, Observed, Timing
from aioleader._decisions import (
    HolderChange,
    LockView,
    record_for_new_term,
    released_record,
    renewal_record,
    request_timeout,
    still_ours,
    term_deadline_passed,
)

TIMING = Timing()
WALL = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def seen(
    holder: str,
    *,
    duration: int | None = 20,
    transitions: int = 0,
    renew: int = 0,
    version: str = "1",
    precise: bool = True,
) -> Observed:
    record = LeaderElectionRecord(
        holder_identity=holder,
        lease_duration_seconds=duration,
        leader_transitions=transitions,
    )
    raw = json.dumps([holder, duration, transitions, renew]).encode()
    return Observed(record=record, raw=raw, version=version, precise=precise)


def view(identity: str = "me") -> LockView:
    return LockView(identity, TIMING)


def test_expiry_is_the_observed_change_plus_the_records_duration() -> None:
    v = view()
    assert v.observe(seen("other", duration=20), now=100.0) == HolderChange("", "other")
    assert v.expires_at() == 120.0
    assert not v.may_take(119.9, None)
    assert v.may_take(120.0, None)
    assert v.take_at(110.0, None) == 120.0


def test_an_invalid_duration_reads_as_our_own_lease_duration() -> None:
    v = view()
    v.observe(seen("other", duration=None), now=10.0)
    assert v.expires_at() == 25.0  # 10 + our LD 15, not "expired at once" as client-go


def test_only_a_change_of_the_record_restarts_the_clock() -> None:
    v = view()
    v.observe(seen("other", renew=1, version="5"), now=0.0)
    # The same record read again, later, and at a new version (a label added by a controller):
    # the holder has not renewed, its lease still runs from 0.
    assert v.observe(seen("other", renew=1, version="9"), now=7.0) is None
    assert v.changed_at == 0.0
    assert v.expires_at() == 20.0
    # A renewal (a new record) restarts it.
    v.observe(seen("other", renew=2, version="10"), now=8.0)
    assert v.changed_at == 8.0


def test_whole_second_records_count_a_new_version_as_a_change() -> None:
    # Annotation locks write whole seconds: two renewals within one second are byte-identical.
    v = view()
    v.observe(seen("other", version="5", precise=False), now=0.0)
    v.observe(seen("other", version="6", precise=False), now=0.6)
    assert v.changed_at == 0.6
    v.observe(seen("other", version="6", precise=False), now=3.0)
    assert v.changed_at == 0.6


def test_a_free_lock_may_be_taken_at_once() -> None:
    v = view()
    v.observe(seen(""), now=5.0)
    assert v.may_take(5.0, None)
    assert v.holder == ""


def test_a_lock_never_seen_and_missing_may_be_created_at_once() -> None:
    v = view()
    assert v.observe(None, now=3.0) is None
    assert not v.deleted
    assert v.may_take(3.0, None)


def test_our_own_last_term_is_retaken_at_once_but_a_twin_is_waited_out() -> None:
    v = view("me")
    v.observe(seen("me", transitions=4), now=0.0)
    assert v.may_take(1.0, own_token=4)
    # Our identity with another transition count: another process using our identity.
    assert not v.may_take(1.0, own_token=3)
    assert not v.may_take(1.0, own_token=None)
    assert v.may_take(20.0, own_token=None)


def test_every_deletion_is_waited_out_from_the_moment_it_was_seen() -> None:
    v = view()
    v.observe(seen("a", duration=10), now=0.0)
    assert v.observe(None, now=3.0) == HolderChange("a", "")
    assert v.deleted
    # At least our own LD (15 > the record's 10), from the sighting of the deletion.
    assert v.expires_at() == 18.0
    assert not v.may_take(17.9, None)
    # Still missing later: nothing new happened, the wait does not restart.
    v.observe(None, now=6.0)
    assert v.expires_at() == 18.0
    # Recreated by somebody, then deleted again: the second deletion is waited out too.
    v.observe(seen("b", duration=20), now=8.0)
    assert not v.deleted
    v.observe(None, now=12.0)
    assert v.expires_at() == 32.0  # 12 + b's 20
    assert v.may_take(32.0, None)


def test_backoff_delays_the_next_attempt_but_never_brings_it_forward() -> None:
    v = view()
    v.observe(seen(""), now=0.0)
    assert v.next_attempt(0.0, None) == 0.0
    v.backoff(0.0, 2.4)
    assert v.next_attempt(1.0, None) == 2.4
    v.observe(seen("other", duration=20, renew=1), now=1.0)
    assert v.next_attempt(1.0, None) == 21.0
    v.backoff(1.0, 0.5)  # a shorter backoff does not shorten the longer one
    assert v.backoff_until == 2.4


def test_a_new_term_counts_a_transition_above_everything_seen() -> None:
    v = view("me")
    v.observe(seen("a", transitions=7), now=0.0)
    previous = LeaderElectionRecord(holder_identity="a", leader_transitions=2)
    record = record_for_new_term(v, previous, WALL, floor=-1)
    assert record.leader_transitions == 8  # max seen (7) + 1, not previous (2) + 1
    assert record.holder_identity == "me"
    assert record.lease_duration_seconds == 15
    assert record.acquire_time == record.renew_time == WALL
    # A process floor (an earlier term of ours on a lock since reset) wins too.
    assert record_for_new_term(v, previous, WALL, floor=11).leader_transitions == 12
    # The lock was deleted and is created anew: still above everything seen.
    assert record_for_new_term(v, None, WALL, floor=-1).leader_transitions == 8


def test_a_first_term_on_a_new_lock_has_token_zero() -> None:
    v = view()
    v.observe(None, now=0.0)
    assert record_for_new_term(v, None, WALL, floor=-1).leader_transitions == 0


def test_what_renewal_and_release_write() -> None:
    own = LeaderElectionRecord(
        holder_identity="me",
        lease_duration_seconds=15,
        acquire_time=WALL,
        renew_time=WALL,
        leader_transitions=3,
        strategy="OldestEmulationVersion",
    )
    later = WALL.replace(second=30)
    renewed = renewal_record(own, later)
    assert (renewed.acquire_time, renewed.renew_time, renewed.leader_transitions) == (
        WALL,
        later,
        3,
    )
    released = released_record(own, later)
    assert released.holder_identity == ""
    assert released.lease_duration_seconds == 1
    assert released.acquire_time == released.renew_time == later
    assert released.leader_transitions == 3
    assert released.strategy is None


def test_still_ours_needs_identity_and_transition_count() -> None:
    record = LeaderElectionRecord(holder_identity="me", leader_transitions=5)
    assert still_ours(record, "me", 5)
    assert not still_ours(record, "me", 4)
    assert not still_ours(record, "you", 5)


@pytest.mark.parametrize(
    ("now", "deadline", "expected"),
    [(0.0, 14.0, 5.0), (10.0, 14.0, 4.0), (13.5, 14.0, 0.5), (14.0, 14.0, 0.0)],
)
def test_a_request_is_bounded_by_what_is_left_and_by_half_the_renew_deadline(
    now: float, deadline: float, expected: float
) -> None:
    assert request_timeout(now, deadline, TIMING) == expected


def test_a_suspended_host_runs_out_of_time() -> None:
    assert not term_deadline_passed(5.0, 14.0, suspended=0.0)
    assert not term_deadline_passed(5.0, 14.0, suspended=8.9)
    assert term_deadline_passed(5.0, 14.0, suspended=9.0)
    assert term_deadline_passed(14.0, 14.0, suspended=0.0)
    # A negative reading (clock noise) never extends a term.
    assert not term_deadline_passed(13.0, 14.0, suspended=-5.0)
    assert term_deadline_passed(14.0, 14.0, suspended=-math.inf)


def test_a_conflicts_backoff_ends_when_the_other_writers_record_arrives() -> None:
    v = view()
    v.observe(seen("", renew=1), now=0.0)
    v.backoff(0.0, 2.4, until_change=True)  # we lost the compare-and-swap at 0
    assert v.next_attempt(0.5, None) == 2.4
    v.observe(seen("", renew=1, version="9"), now=0.5)  # the same record: still waiting
    assert v.next_attempt(0.5, None) == 2.4
    v.observe(seen("", renew=2), now=0.7)  # somebody wrote: free again (they lost too)
    assert v.next_attempt(0.7, None) == 0.7
    # An error's backoff is not shortened by a change.
    v.backoff(1.0, 2.4)
    v.observe(seen("", renew=3), now=1.5)
    assert v.next_attempt(1.5, None) == 3.4
