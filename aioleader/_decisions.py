"""The election's decisions, in synchronous code that takes the time as an argument and does no I/O.

Everything the elector decides is made here, from plain values:

* [`LockView`][LockView] — what this candidate knows about the lock (client-go's ``observedRecord`` and
  ``observedTime``, made explicit): the last record, the local time at which it *changed*, whether
  the lock was deleted, the highest transition count ever seen, and when the next acquisition
  attempt makes sense (expiry, release, backoff after a failure).
* [`record_for_new_term()`][record_for_new_term], [`renewal_record()`][renewal_record], [`released_record()`][released_record] — what each write
  puts into the lock.
* [`still_ours()`][still_ours] — whether a fresh read still shows our term.
* [`request_timeout()`][request_timeout] — how long a request of a term may take, computed right before it is sent.
* [`term_deadline_passed()`][term_deadline_passed] — whether a term has run out of time, monotonic and suspend-aware.

The async loops in `aioleader._election` only feed observations in and act on the answers.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime

from ._lock import Observed
from ._record import LeaderElectionRecord
from ._timing import Timing

__all__ = [
    "HolderChange",
    "LockView",
    "TokenFloors",
    "handover_requested",
    "record_for_new_term",
    "released_record",
    "renewal_record",
    "request_timeout",
    "still_ours",
    "term_deadline_passed",
]

# 1 ns of float-rounding slack: a sleep until the expiry instant may wake a hair before it (fake
# clocks round), and must not then retry at the same instant forever.
_SLACK = 1e-9


@dataclass(frozen=True)
class HolderChange:
    """The observed holder changed (``""``: nobody leads)."""

    previous: str
    holder: str


class LockView:
    """What one candidate has observed of one lock, and what follows from it.

    Expiry is judged on the *local* time at which the record last changed, plus the *record's*
    ``leaseDurationSeconds`` (the holder's promise), never on ``renewTime`` (another node's wall
    clock). A change is a change of the holder's record — holder, renew time, transitions, duration
    — not of the object's metadata: a label added by some controller must not keep a crashed
    leader's lease alive. Where the record itself cannot tell two renewals apart (the annotation
    locks write whole seconds, see [`Observed.precise`][Observed.precise]), the object's version is part of the
    record's identity, which errs on the side of waiting longer.

    A deletion of a lock we have seen is a change like any other: somebody may hold the lock
    still (a leader working on its cached object), so its last lease — at least our own lease
    duration — is waited out from the moment we saw the lock missing.
    """

    def __init__(self, identity: str, timing: Timing, *, coordinated: bool = False) -> None:
        self.identity = identity
        self.timing = timing
        #: Coordinated leader election: the apiserver's election controller (or
        #: ``aioleader coordinate``) assigns the holder; a candidate never takes the lock itself.
        self.coordinated = coordinated
        #: The last record read (kept after a deletion: its duration bounds the wait).
        self.record: LeaderElectionRecord | None = None
        #: Local (monotonic) time of the last change.
        self.changed_at = -math.inf
        self.deleted = False
        #: The holder as last observed; ``""`` when free, deleted or never read.
        self.holder = ""
        #: The highest ``leaseTransitions`` ever observed on this lock by this candidate.
        self.max_transitions = -1
        self._key: object = None
        self._backoff_until = -math.inf
        self._backoff_until_change = False
        self._held_until = -math.inf

    # -- observations ------------------------------------------------------------------------------

    def observe(self, observed: Observed | None, now: float) -> HolderChange | None:
        """Take in one read of the lock (``None``: it does not exist). Returns the holder change,
        if the holder differs from the one observed before."""
        if observed is None:
            if self.deleted or self.record is None:
                # Still missing, or never seen: nothing changed that we could know of. A lock we
                # have never seen has no holder we could wait for.
                return self._holder_is("")
            self.deleted = True
            self._key = _MISSING
            self.changed_at = now
            return self._holder_is("")
        record = observed.record
        self.max_transitions = max(self.max_transitions, record.leader_transitions)
        key = observed.change_key
        if key != self._key:
            self._key = key
            self.changed_at = now
            if self._backoff_until_change:
                # What the conflicting writer wrote has arrived: decide on it, at once.
                self._backoff_until = -math.inf
                self._backoff_until_change = False
        self.deleted = False
        self.record = record
        return self._holder_is(record.holder_identity)

    def _holder_is(self, holder: str) -> HolderChange | None:
        if holder == self.holder:
            return None
        change = HolderChange(previous=self.holder, holder=holder)
        self.holder = holder
        return change

    def has_seen(self, raw: bytes) -> bool:
        """Whether the last observation carried exactly this record (chaos harness, tests)."""
        key = self._key
        return key == raw or (isinstance(key, tuple) and key[0] == raw)

    # -- expiry -----------------------------------------------------------------------------------

    def duration(self) -> float:
        """The lease duration the holder promised; an invalid one (missing, <= 0) reads as our own
        lease duration, not as "expired at once" as client-go does."""
        record = self.record
        seconds = record.lease_duration_seconds if record is not None else None
        return float(seconds) if seconds else self.timing.lease_duration

    def expires_at(self) -> float:
        """When the lease we observed runs out, on our clock. After a deletion: at least our own
        lease duration after we saw the lock missing."""
        duration = self.duration()
        if self.deleted:
            duration = max(duration, self.timing.lease_duration)
        return self.changed_at + duration

    def may_take(self, now: float, own_token: int | None) -> bool:
        """Whether an acquisition may write now: the lock is free, expired, or names our own last
        term (``own_token``, re-taken at once as client-go does). A record naming our identity
        with another transition count belongs to another process using our identity (a
        force-deleted StatefulSet pod's replacement): it is waited out like anyone's."""
        record = self.record
        if self.coordinated:
            # Only when the controller has named us (or the lease still names us): then the
            # first write of our term takes it with a new transition count.
            return (
                not self.deleted and record is not None and record.holder_identity == self.identity
            )
        if self.deleted:
            return now + _SLACK >= self.expires_at()
        if record is None:
            return True
        holder = record.holder_identity
        if not holder or now + _SLACK >= self.expires_at():
            return True
        return holder == self.identity and own_token == record.leader_transitions

    # -- when to try next -----------------------------------------------------------------------------

    def backoff(self, now: float, pause: float, *, until_change: bool = False) -> None:
        """An attempt failed: wait ``pause``. After a conflict (``until_change``: somebody else
        wrote) the wait also ends as soon as the record is seen to change, since the other
        writer's record is what to decide on: no tight read/write loop, and no pause either
        when a watch delivers the change (or when both writers lost and one writes again)."""
        if self._backoff_until <= now:
            self._backoff_until_change = until_change
        else:
            self._backoff_until_change = self._backoff_until_change and until_change
        self._backoff_until = max(self._backoff_until, now + pause)

    @property
    def backoff_until(self) -> float:
        return self._backoff_until

    def hold(self, until: float) -> None:
        """Stay out of the race until ``until`` (a step-down's cooldown; ``inf`` while paused)."""
        self._held_until = until

    @property
    def held_until(self) -> float:
        return self._held_until

    def take_at(self, now: float, own_token: int | None) -> float:
        """When the lock may be taken, by what we observed: now, or when the lease expires (in a
        coordinated election: not until the controller names us, which only an observation can
        tell)."""
        if self.may_take(now, own_token):
            return now
        return math.inf if self.coordinated else self.expires_at()

    def next_attempt(self, now: float, own_token: int | None) -> float:
        """When the next acquisition attempt makes sense: as soon as the lock may be taken, never
        before a backoff or a hold has run out."""
        return max(self.take_at(now, own_token), self._backoff_until, self._held_until)

    def next_poll(self, now: float, own_token: int | None, pause: float) -> float:
        """Polling: every ``pause``, but never later than the moment the observed lease expires
        (a crashed holder is then replaced LD after we saw its last renewal, not up to a pause
        after that), and never before a backoff or a hold has run out."""
        poll = min(now + pause, self.take_at(now, own_token))
        return max(poll, self._backoff_until, self._held_until)


_MISSING = object()


def record_for_new_term(
    view: LockView, previous: LeaderElectionRecord | None, wall_now: datetime, floor: int
) -> LeaderElectionRecord:
    """The record that starts a term. Every new term increments ``leaseTransitions`` above anything
    this process has seen on the lock (``floor``, and the view's maximum), so a fencing token is
    strictly greater than any earlier one here — also after the lock was deleted and recreated, or
    rewritten by a peer that resets the count."""
    transitions = max(view.max_transitions, floor) + 1
    if previous is not None:
        transitions = max(transitions, previous.leader_transitions + 1)
    base = previous if previous is not None else LeaderElectionRecord()
    if view.coordinated:
        # The controller's strategy stays; so does a preferred holder it has already named (the
        # term then hands over at its first renewal).
        return base.with_changes(
            holder_identity=view.identity,
            lease_duration_seconds=view.timing.lease_duration_seconds,
            renew_time=wall_now,
            acquire_time=wall_now,
            leader_transitions=max(transitions, 0),
        )
    return base.with_changes(
        strategy=None,
        preferred_holder=None,
        holder_identity=view.identity,
        lease_duration_seconds=view.timing.lease_duration_seconds,
        acquire_time=wall_now,
        renew_time=wall_now,
        leader_transitions=max(transitions, 0),
    )


def renewal_record(own: LeaderElectionRecord, wall_now: datetime) -> LeaderElectionRecord:
    """A renewal writes our last record again with a new ``renewTime`` (``acquireTime`` and the
    transition count are kept)."""
    return own.with_changes(renew_time=wall_now)


def released_record(fresh: LeaderElectionRecord, wall_now: datetime) -> LeaderElectionRecord:
    """client-go's release: no holder, a 1 s lease, both times now, transitions kept."""
    return fresh.with_changes(
        strategy=None,
        preferred_holder=None,
        holder_identity="",
        lease_duration_seconds=1,
        acquire_time=wall_now,
        renew_time=wall_now,
    )


def handover_requested(record: LeaderElectionRecord, identity: str) -> bool:
    """The lock names a preferred holder other than us (KEP-4355's "end of term"): a better
    candidate exists, and the leader should hand over. client-go stops renewing and lets the lease
    expire; aioleader releases at once."""
    preferred = record.preferred_holder
    return bool(preferred) and preferred != identity and record.holder_identity == identity


def still_ours(record: LeaderElectionRecord, identity: str, token: int) -> bool:
    """A fresh record still shows our term: our identity *and* our term's transition count."""
    return record.holder_identity == identity and record.leader_transitions == token


def request_timeout(now: float, deadline: float, timing: Timing) -> float:
    """The bound of one request sent at ``now`` for a term that must end by ``deadline``: what is
    left of the window, and never more than RD/2 (so a renewal pass can retry). Computed right
    before sending, after any internal wait, so that no request of a term outlives the term."""
    return min(deadline - now, timing.renew_deadline / 2)


def term_deadline_passed(now: float, deadline: float, suspended: float) -> bool:
    """Whether a term's time is up: on the monotonic clock, or once the time the host spent
    suspended since the last renewal (``CLOCK_BOOTTIME`` advanced, ``CLOCK_MONOTONIC`` did not)
    is counted too."""
    return now + max(0.0, suspended) >= deadline


class TokenFloors:
    """The highest fencing token this process has used on each lock, so that tokens never go
    backwards within a process, even across elections on the same lock object (a lock deleted
    and recreated, or a peer that resets ``leaseTransitions``). Keyed by the lock object (weakly:
    the floor lives as long as the lock does)."""

    def __init__(self) -> None:
        self._floors: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, lock: object) -> int:
        with self._lock:
            return self._floors.get(lock, -1)

    def raise_to(self, lock: object, token: int) -> None:
        with self._lock:
            self._floors[lock] = max(self._floors.get(lock, -1), token)


TOKEN_FLOORS = TokenFloors()
