"""Keeping a term: the renew loop (fast path, slow path), the single-flight confirm, the release.

The decisions (what a renewal writes, whether a fresh read is still ours, how long a request may
take) are in `aioleader._decisions`; this module only sequences the requests.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import anyio

from . import _clock
from ._decisions import handover_requested, released_record, renewal_record, still_ours
from ._exceptions import LockConflict, LockError
from ._leadership import Term
from ._lock import Observed
from ._lockio import Counters, LockIO, Stamp
from ._metrics import ElectionMetrics
from ._record import LeaderElectionRecord
from ._timing import Timing
from ._tracing import span

__all__ = ["TermKeeper"]

logger = logging.getLogger("aioleader")


@dataclass
class _Flight:
    """One in-flight confirmation that concurrent callers wait for."""

    done: anyio.Event = field(default_factory=anyio.Event)
    result: bool | None = None


class TermKeeper:
    """Renews, confirms and releases the terms of one election.

    ``observe`` feeds every read into the election's view of the lock; ``end_term`` ends a term
    (the election logs it, cancels the work and updates the handle).
    """

    def __init__(
        self,
        io: LockIO,
        *,
        identity: str,
        timing: Timing,
        counters: Counters,
        name: str,
        metrics: ElectionMetrics | None,
        observe: Callable[[Observed | None], None],
        end_term: Callable[[Term, str], None],
        hand_over: Callable[[Term, str], None],
        span_attributes: dict[str, str],
        log_extra: dict[str, str],
    ) -> None:
        self.io = io
        self.identity = identity
        self.timing = timing
        self.counters = counters
        self.name = name
        self.metrics = metrics
        self.observe = observe
        self.end_term = end_term
        self.hand_over = hand_over
        self.span_attributes = span_attributes
        self.log_extra = log_extra
        #: Our own last write as leader, the template of the next renewal.
        self.own_record: LeaderElectionRecord | None = None
        #: When the last successful write of a term came back (health, statistics).
        self.last_renew_done: float | None = None
        self._confirm_flight: _Flight | None = None

    def begin(self, record: LeaderElectionRecord) -> None:
        """A term began with ``record`` written."""
        self.own_record = record
        self.last_renew_done = _clock.now()

    # -- the renew loop ----------------------------------------------------------------------------

    async def keep(self, term: Term) -> None:
        """Renew every RP after the previous renewal finished (client-go: not jittered) until the
        term ends."""
        while term.end_reason is None:
            assert self.last_renew_done is not None
            await _sleep_until(self.last_renew_done + self.timing.retry_period, term)
            if term.end_reason is not None:
                # Ended, or its time is up (also after a suspend of the host): no more requests.
                self.end_term(term, "deadline")
                return
            await self._renew_pass(term)

    async def _renew_pass(self, term: Term) -> None:
        """Renew, retrying transient failures every RP, until success or the term's deadline."""
        started = _clock.now()
        while True:
            now = _clock.now()
            if term.end_reason is not None:
                self.end_term(term, "deadline")
                return
            try:
                with span("renew", term=term.number, **self.span_attributes):
                    renewed = await self._renew_once(term)
            except LockError as exc:
                self.counters.renew_failures += 1
                self.io.failed(exc)
            else:
                if renewed:
                    if self.metrics is not None:
                        self.metrics.renewed(self.name, _clock.now() - started)
                    return
                self.end_term(term, "lost")
                return
            await _sleep_until(min(now + self.timing.retry_period, term.deadline), term)

    async def _renew_once(self, term: Term) -> bool:
        """One renewal: the fast path (an update on the cached version, no GET), falling back to
        the slow path (GET, then decide) on a conflict. False means the lock is authoritatively
        someone else's (or the reply came after the term's deadline)."""
        assert self.own_record is not None
        record = renewal_record(self.own_record, datetime.now(timezone.utc))
        try:
            observed, stamp = await self.io.update(record, term.deadline)
        except LockConflict:
            self.counters.slow_path += 1
            if self.metrics is not None:
                self.metrics.slow_path(self.name)
            fresh = await self.io.get(term.deadline)
            self.observe(fresh)
            if fresh is None:
                return False  # deleted: whoever creates it next is the holder, not us
            if not still_ours(fresh.record, self.identity, term.fencing_token):
                return False
            if handover_requested(fresh.record, self.identity):
                self.hand_over(term, f"{fresh.record.preferred_holder} is the preferred holder")
                return False
            # Still ours, e.g. our previous write was applied but its reply was lost.
            record = renewal_record(self.own_record, datetime.now(timezone.utc))
            observed, stamp = await self.io.update(record, term.deadline)
        self.observe(observed)
        return self._renewed(term, record, stamp)

    def _renewed(self, term: Term, record: LeaderElectionRecord, stamp: Stamp) -> bool:
        if term.end_reason is not None:
            # The reply came too late: the term's work was cancelled at its deadline and a term
            # never comes back to life. The lock still names us; the next term re-takes it (with
            # a new fencing token).
            return False
        self.own_record = record
        self.last_renew_done = _clock.now()
        self.counters.renewals += 1
        term._extend(stamp.at + self.timing.renew_deadline, stamp.suspended)
        return True

    # -- confirm -----------------------------------------------------------------------------------

    async def confirm(self, term: Term) -> bool:
        """``is_leader(confirm=True)``: a bounded fresh read of the lock.

        Concurrent confirmations share one read (single flight), so that any number of callers
        cost one request and can delay a due renewal by at most one bounded read.
        """
        if not term.active:
            return False
        flight = self._confirm_flight
        if flight is None:
            flight = self._confirm_flight = _Flight()
            try:
                flight.result = await self._confirm_once(term)
            finally:
                self._confirm_flight = None
                flight.done.set()
        else:
            await flight.done.wait()
        return bool(flight.result) and term.active

    async def _confirm_once(self, term: Term) -> bool:
        try:
            fresh = await self.io.get(term.deadline)
        except LockError as exc:
            self.io.failed(exc)
            return False
        self.observe(fresh)
        if fresh is None or not still_ours(fresh.record, self.identity, term.fencing_token):
            self.end_term(term, "lost")
            return False
        if handover_requested(fresh.record, self.identity):
            self.hand_over(term, f"{fresh.record.preferred_holder} is the preferred holder")
            return False
        return True

    # -- release -----------------------------------------------------------------------------------

    async def release(self, term: Term) -> None:
        """Release ``term``'s lease (after its work has finished), bounded by RD in total.

        Only our own last term is released: the fresh record must name us *with that term's
        transition count*, so that a newer term of the same identity (a restarted process) is
        never released from under it. The update's compare-and-swap guards against a takeover
        between the read and the write.
        """
        with (
            span("release", term=term.number, **self.span_attributes),
            anyio.move_on_after(self.timing.renew_deadline) as scope,
        ):
            try:
                half = self.timing.renew_deadline / 2
                observed = None
                own = self.own_record
                if own is not None and term.end_reason in ("stopped", "stepped down"):
                    # No read first: the compare-and-swap on the version of our last write
                    # decides the same thing. A conflict means somebody wrote since (or the
                    # object was deleted: its uid no longer matches): read, then decide.
                    released = released_record(own, datetime.now(timezone.utc))
                    with contextlib.suppress(LockConflict):
                        observed, _ = await self.io.update(released, _clock.now() + half)
                conflicts = 0
                while observed is None:
                    fresh = await self.io.get(_clock.now() + half)
                    self.observe(fresh)
                    if fresh is None or not still_ours(
                        fresh.record, self.identity, term.fencing_token
                    ):
                        return
                    released = released_record(fresh.record, datetime.now(timezone.utc))
                    try:
                        observed, _ = await self.io.update(released, _clock.now() + half)
                    except LockConflict:
                        # Written in between and perhaps still ours, e.g. by a coordinated
                        # election's controller naming a preferred holder: read again.
                        conflicts += 1
                        if conflicts == 2:
                            raise
                self.observe(observed)
                logger.info(
                    "%s: released by %s",
                    self.io.lock.describe(),
                    self.identity,
                    extra=self.log_extra,
                )
            except Exception as exc:  # a failed release must never wedge the shutdown
                logger.warning(
                    "%s: release failed: %s", self.io.lock.describe(), exc, extra=self.log_extra
                )
        if scope.cancelled_caught:
            logger.warning("%s: release timed out", self.io.lock.describe(), extra=self.log_extra)


async def _sleep_until(when: float, term: Term) -> None:
    """Sleep until ``when``, or until the term ends, whichever is first."""
    with anyio.move_on_after(max(0.0, when - _clock.now())):
        await term.ended.wait()
