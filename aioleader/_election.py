"""The election's loops, and the two ways to run them: ``elect()`` and ``campaign()``.

client-go's ``tools/leaderelection`` semantics; every decision is made in
`aioleader._decisions` (pure, on plain values) and every request goes through
`aioleader._lockio` (serialized, bounded at send time). What is left here is sequencing:

* **one acquire loop**: attempt, then wait until the decision core says the next attempt makes
  sense (the observed lease expires, the lock is released, a backoff runs out). A watch of the
  lock is an optional *feed* of observations into that loop (an attempt at once on a release);
  polling is the same loop without the feed, waking every ``RP × uniform(1, 1 + jitter)``.
* the term, kept by `TermKeeper` (renewals, confirm, release);
* callbacks (``on_new_leader`` in order, in a task of its own; ``on_started_leading`` as leader
  work; ``on_stopped_leading`` after the work has finished) and the shutdown.

Stricter than client-go: monotonic time only (suspend-aware terms); expiry on the local time of
the observed change plus the record's duration; leader work in cancel scopes whose deadline is the
last renewal's send time + RD; fencing tokens that strictly increase; a release only after leader
work has been cancelled *and has finished*.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus

from . import _clock
from ._admission import attempts_limiter
from ._companions import Companions
from ._decisions import TOKEN_FLOORS, LockView, record_for_new_term
from ._exceptions import AioleaderError, ElectionError, LockConflict, LockError
from ._flag import Flag
from ._handover import STEPPED_DOWN, Handover
from ._leadership import Leadership, LeadershipStatistics, Term, _Leading
from ._lock import Lock, Observed
from ._lockio import Counters, LockIO, Stamp
from ._looplag import lag_problem, loop_lag, loop_lag_monitor
from ._notify import Notifier, maybe_await
from ._options import ElectionConfig, ElectionOptions
from ._record import LeaderElectionRecord
from ._renewal import TermKeeper
from ._tracing import span

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["campaign", "elect"]

logger = logging.getLogger("aioleader")


def _unwrap(group: BaseExceptionGroup[BaseException], what: str) -> BaseException:
    """One clear exception out of the group of an internal task group.

    Only the top level is unwrapped, and only when it holds exactly one exception: that one comes
    out as itself (a user's own exception group included, so ``except*`` still matches it).
    Several at once (the body and the election failing together) become one
    [`ElectionError`][ElectionError] whose cause is the group.
    """
    if len(group.exceptions) == 1:
        return group.exceptions[0]
    error = ElectionError(f"{what} failed with {len(group.exceptions)} errors: {group!r}")
    error.__cause__ = group
    return error


@dataclass(frozen=True)
class _Failed:
    """An acquisition attempt failed: back off (``retry_after`` from a 429, if any)."""

    retry_after: float | None = None
    #: A lost compare-and-swap: the wait also ends when the lock is seen to change.
    conflict: bool = False


_Attempt = Term | _Failed | None  # None: the lock is held (or a deletion is being waited out)


class _Election:
    """One candidate's campaign on one lock. Private: users hold a [`Leadership`][Leadership]."""

    def __init__(self, config: ElectionConfig) -> None:
        self.config = config
        lock = config.lock
        self.lock = lock
        self.timing = config.timing
        self._identity = lock.identity
        self._description = lock.describe()
        self.counters = Counters()
        self.view = LockView(self._identity, self.timing, coordinated=config.candidate is not None)
        self.leadership: Leadership = Leadership._create(self)
        self._log_extra = {"lock": self._description, "identity": self._identity}
        self._span_attributes = {
            "aioleader.lock": self._description,
            "aioleader.identity": self._identity,
        }
        self.io = LockIO(
            lock,
            self.timing,
            self.counters,
            name=config.name,
            metrics=config.metrics,
            log_extra=self._log_extra,
        )
        self.keeper = TermKeeper(
            self.io,
            identity=self._identity,
            timing=self.timing,
            counters=self.counters,
            name=config.name,
            metrics=config.metrics,
            observe=self._observe,
            end_term=self._end_term,
            hand_over=lambda term, why: self.handover.hand_over(term, why),
            span_attributes=self._span_attributes,
            log_extra=self._log_extra,
        )
        self._fatal: BaseException | None = None
        self._watch_failed = False
        self._wake = Flag()
        self._stopped_pending: Term | None = None
        self._tg: TaskGroup | None = None
        self.notifier = Notifier()
        self.companions = Companions(
            config.candidate,
            config.hooks,
            bound=self.timing.renew_deadline,
            description=self._description,
            log_extra=self._log_extra,
        )
        self.handover = Handover(
            self.view,
            self.timing,
            ready=config.ready,
            current_term=lambda: self.leadership.term,
            end_term=self._end_term,
            wake=lambda: self._wake.set(),
            term_closed=lambda: self._term_closed,
            description=self._description,
            log_extra=self._log_extra,
        )
        # The lock's latest state as its watch delivered it (a base for update_from), if any.
        self._watched: Observed | None = None
        # Set when the current term's work has finished, its release (if voluntary) is written
        # and on_stopped_leading has run.
        self._term_closed = Flag()
        self._term_closed.set()

    # -- ElectionState (what Leadership reads) ------------------------------------------------------

    @property
    def description(self) -> str:
        return self._description

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def observed_holder(self) -> str:
        return self.view.holder

    # -- running -------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Leadership]) -> None:
        error: BaseException | None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                lag_monitor = loop_lag_monitor()
                lag_monitor.join(tg)
                tg.start_soon(self.notifier.run)
                try:
                    await self.companions.start(tg, self.lock)
                    task_status.started(self.leadership)
                    await self._campaign()
                except AioleaderError as exc:
                    self.io.failed(exc)
                    raise
                finally:
                    try:
                        with anyio.CancelScope(shield=True):
                            await self.companions.withdraw_candidacy()
                            await self._shutdown()
                    finally:
                        # Let on_new_leader callbacks queued so far (e.g. for our release) run,
                        # but never let a stuck callback hold the shutdown forever.
                        await self.notifier.close(self.timing.renew_deadline)
                        self.companions.cancel()
                        lag_monitor.leave(tg)
                        tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            error = _unwrap(group, f"election for {self._description}")
        else:
            error = None
        finally:
            self.leadership._close()
        if error is not None:
            self._fatal = error
            # Raised outside the except block, so the exception keeps its own __context__ and
            # __cause__ (e.g. the ApiException behind a ForbiddenError).
            raise error

    async def _campaign(self) -> None:
        if self.config.ready is not None:
            # Readiness is known before the first attempt; then re-checked every RP.
            await self.handover.check_ready()
            assert self._tg is not None
            self._tg.start_soon(self.handover.follow_readiness)
        while True:
            term = await self._acquire()
            self._term_closed = Flag()
            if _clock.now() < self.view.held_until:
                # Paused (or stepped down) while the winning attempt was in flight: the term is
                # not wanted; hand it back at once (work none yet, lock released).
                self.handover.decline(term)
            await self.handover.keep_at_most(term, self.config.max_term, self.keeper.keep)
            await term._wait_work_done()
            await self.companions.standby()
            if term.end_reason == STEPPED_DOWN:
                # Voluntary: hand over at once rather than after the lease duration.
                await self.keeper.release(term)
            await self._stopped(term)
            self._term_closed.set()

    # -- step down, pause (Leadership's controls; the logic is in _handover) ------------------------

    async def step_down(self, cooldown: float | None) -> None:
        await self.handover.step_down(cooldown)

    def pause(self) -> None:
        self.handover.pause()

    def resume(self) -> None:
        self.handover.resume()

    @property
    def paused(self) -> bool:
        return self.handover.paused

    # -- observations --------------------------------------------------------------------------------

    def _observe(self, observed: Observed | None) -> None:
        """Feed one read (or watch event) into the view; log and announce what changed."""
        was_deleted = self.view.deleted
        self._watched = None  # a newer observation than the watch's: _follow sets it again
        change = self.view.observe(observed, _clock.now())
        if self.view.deleted and not was_deleted:
            logger.info(
                "%s: the lock object does not exist", self._description, extra=self._log_extra
            )
        if change is None:
            return
        self.counters.leader_changes += 1
        logger.info(
            "%s: leader is now %s",
            self._description,
            change.holder or "nobody",
            extra={**self._log_extra, "holder": change.holder},
        )
        if self.config.on_new_leader is not None:
            self.notifier.post(self.config.on_new_leader, change.holder)

    def _own_token(self) -> int | None:
        last = self.leadership.term
        return last.fencing_token if last is not None else None

    # -- acquiring -----------------------------------------------------------------------------------

    async def _acquire(self) -> Term:
        """Attempt until a term begins: at once, then whenever the decision core says so.

        The first attempt is made before any watch is opened: a candidate that wins at once (a
        free or missing lock) never holds a watch connection, which matters for processes holding
        thousands of leases over one connection pool. Followers then watch the lock (when it can
        be watched); a refused watch (e.g. RBAC without list/watch) turns the feed off for good
        and the loop polls, with an attempt at once.
        """
        outcome: _Failed | None = None
        if _clock.now() >= self.view.held_until:
            first = await self._attempt()
            if isinstance(first, Term):
                return first
            outcome = first
        try:
            async with anyio.create_task_group() as tg:
                following = (
                    self.config.watch and self.lock.supports_watch and not self._watch_failed
                )
                if following:
                    tg.start_soon(self._follow)
                next_try = self._schedule(outcome, following)
                while True:
                    if following and self._watch_failed:
                        following = False
                        next_try = _clock.now()
                    wake = self._wake
                    with anyio.move_on_after(next_try - _clock.now()):
                        await wake.wait()
                    if wake.is_set():
                        # A new observation, or a resume: re-decide (a release means: now).
                        self._wake = Flag()
                        next_try = self.view.next_attempt(_clock.now(), self._own_token())
                        continue
                    attempt = await self._attempt()
                    if isinstance(attempt, Term):
                        tg.cancel_scope.cancel()
                        return attempt
                    next_try = self._schedule(attempt, following)
        except BaseExceptionGroup as group:
            # Our own task group: what the acquisition raised comes out as itself (raised
            # outside the except block, so it keeps its own __cause__ and __context__).
            error = _unwrap(group, f"following {self._description}")
        raise error

    def _schedule(self, outcome: _Failed | None, following: bool) -> float:
        """When to attempt next, after an attempt that did not win."""
        now = _clock.now()
        pause = None
        if isinstance(outcome, _Failed) or not following:
            # client-go's JitterUntil: RP × uniform(1, 1 + jitter), counted after the attempt.
            pause = self.timing.retry_period * self.config.rng.uniform(
                1.0, 1.0 + self.timing.jitter
            )
        if isinstance(outcome, _Failed):
            assert pause is not None
            self.view.backoff(
                now, max(pause, outcome.retry_after or 0.0), until_change=outcome.conflict
            )
        own = self._own_token()
        if following:
            return self.view.next_attempt(now, own)
        assert pause is not None
        return self.view.next_poll(now, own, pause)

    async def _follow(self) -> None:
        """Feed every change the lock's watch reports into the view."""
        while True:
            try:
                async with contextlib.aclosing(self.lock.watch()) as states:
                    async for observed in states:
                        self._observe(observed)
                        if self.lock.supports_update_from:
                            self._watched = observed
                        self._wake.set()
            except ElectionError as exc:
                logger.warning(
                    "%s: cannot watch the lock (%s); polling it instead",
                    self._description,
                    exc,
                    extra=self._log_extra,
                )
                self._watch_failed = True
                self._wake.set()
                return
            except LockError as exc:
                self.io.failed(exc)
            await anyio.sleep(self.timing.retry_period)

    async def _attempt(self) -> _Attempt:
        # Queued per event loop first (aioleader/_admission.py): thousands of elections starting
        # at once must not send their attempts in the same instant.
        async with attempts_limiter():
            return await self._attempt_admitted()

    async def _attempt_admitted(self) -> _Attempt:
        with span("acquire", **self._span_attributes):
            self.counters.acquire_attempts += 1
            half = self.timing.renew_deadline / 2
            try:
                base = self._watched
                if base is not None and self.view.may_take(_clock.now(), self._own_token()):
                    # The watch delivered the lock's latest state and it may be taken: one write,
                    # no read first. A conflict means somebody wrote since: read, then decide.
                    self._watched = None
                    record = self._new_term_record(base)
                    with contextlib.suppress(LockConflict):
                        written, stamp = await self.io.update_from(
                            base, record, _clock.now() + half
                        )
                        return self._begin_term(written, record, stamp)
                observed = await self.io.get(_clock.now() + half)
                self._observe(observed)
                if not self.view.may_take(_clock.now(), self._own_token()):
                    return None
                record = self._new_term_record(observed)
                deadline = _clock.now() + half
                if observed is None:
                    written, stamp = await self.io.create(record, deadline)
                else:
                    written, stamp = await self.io.update(record, deadline)
            except LockConflict as exc:
                # Somebody else wrote first: back off like after an error rather than retrying
                # at once (a tight read/write loop under churn).
                self.io.failed(exc)
                return _Failed(conflict=True)
            except LockError as exc:
                self.io.failed(exc)
                return _Failed(exc.retry_after)
            return self._begin_term(written, record, stamp)

    def _new_term_record(self, observed: Observed | None) -> LeaderElectionRecord:
        previous = observed.record if observed is not None else None
        return record_for_new_term(
            self.view, previous, datetime.now(timezone.utc), TOKEN_FLOORS.get(self.lock)
        )

    # -- terms ---------------------------------------------------------------------------------------

    def _begin_term(self, observed: Observed, record: LeaderElectionRecord, sent: Stamp) -> Term:
        self._observe(observed)
        self.keeper.begin(record)
        self.counters.terms += 1
        TOKEN_FLOORS.raise_to(self.lock, record.leader_transitions)
        term: Term = Term._create(
            identity=self._identity,
            number=self.counters.terms,
            fencing_token=record.leader_transitions,
            acquired_at=sent.at,
            acquired_wall=record.acquire_time,
            deadline=sent.at + self.timing.renew_deadline,
            suspended_at=sent.suspended,
        )
        self._stopped_pending = term
        self.leadership._begin(term)
        metrics = self.config.metrics
        if metrics is not None:
            metrics.term_started(self.config.name)
            metrics.leading(self.config.name, True)
        logger.info(
            "%s: %s became leader (fencing token %d)",
            self._description,
            self._identity,
            term.fencing_token,
            extra={**self._log_extra, "term": term.number, "fencing_token": term.fencing_token},
        )
        self.companions.leading(term)
        assert self._tg is not None
        self._tg.start_soon(self._record_event, f"{self._identity} became leader")
        started = self.config.on_started_leading
        if started is not None:
            # The scope is opened here, synchronously, so that the term cannot end (and release
            # cannot happen) before the callback's work is accounted for.
            scope = term._open_scope()
            self._tg.start_soon(self._run_started, term, scope)
        return term

    async def _run_started(self, term: Term, scope: anyio.CancelScope) -> None:
        assert self.config.on_started_leading is not None
        async with _Leading(self.leadership, term=term, scope=scope):
            await maybe_await(self.config.on_started_leading(term))

    async def _record_event(self, message: str) -> None:
        # Best effort, off the renew path: never delays or fails a renewal.
        try:
            with anyio.move_on_after(self.timing.renew_deadline / 2):
                await self.lock.record_event(message)
        except Exception:
            logger.debug(
                "%s: could not record event",
                self._description,
                exc_info=True,
                extra=self._log_extra,
            )

    def _end_term(self, term: Term, reason: str) -> None:
        if term._reason is not None:
            return
        term._end(reason)
        reason = term.end_reason or reason  # "deadline" wins once the time is up
        self.leadership._after_end()
        if self.config.metrics is not None:
            self.config.metrics.leading(self.config.name, False)
        # A lost or expired term is worth a warning; a shutdown or a step-down is routine.
        level = logging.INFO if reason in ("stopped", STEPPED_DOWN) else logging.WARNING
        logger.log(
            level,
            "%s: %s stopped leading (fencing token %d: %s)",
            self._description,
            self._identity,
            term.fencing_token,
            reason,
            extra={
                **self._log_extra,
                "term": term.number,
                "fencing_token": term.fencing_token,
                "reason": reason,
            },
        )
        if self._tg is not None:
            self._tg.start_soon(self._record_event, f"{self._identity} stopped leading")

    async def _stopped(self, term: Term) -> None:
        if self._stopped_pending is term:
            self._stopped_pending = None
            callback = self.config.on_stopped_leading
            if callback is not None:
                await maybe_await(callback(term))

    # -- confirm, shutdown -----------------------------------------------------------------------

    async def confirm(self) -> bool:
        term = self.leadership.term
        if term is None:
            return False
        return await self.keeper.confirm(term)

    async def _shutdown(self) -> None:
        """Runs shielded when the campaign ends for any reason: end the term, wait for leader work
        to finish (unbounded: work that shields itself from cancellation is waited for, since
        releasing under it would make two leaders), release the lock if asked to, then
        ``on_stopped_leading``, bounded by RD like every callback on this path."""
        term = self.leadership.term
        if term is None:
            return
        self._end_term(term, "stopped")
        await term._wait_work_done()
        if not self._term_closed.is_set():  # else the campaign has applied it for this term
            await self.companions.standby()
        if self.config.release_on_cancel:
            await self.keeper.release(term)
        with anyio.move_on_after(self.timing.renew_deadline) as scope:
            await self._stopped(term)
        self._term_closed.set()
        if scope.cancelled_caught:
            logger.warning(
                "%s: on_stopped_leading did not return within the renew deadline (%gs); abandoned",
                self._description,
                self.timing.renew_deadline,
                extra=self._log_extra,
            )

    # -- introspection -------------------------------------------------------------------------------

    def health_problem(self, tolerance: float) -> str | None:
        if self._fatal is not None:
            # The election is over for good (e.g. 403): a process that can never lead again is
            # not healthy, whatever else it still serves.
            return f"{self._description}: the election failed: {self._fatal!r}"
        lagging = lag_problem(loop_lag(), self.timing, self._description)
        if lagging is not None:
            return lagging
        term = self.leadership.term
        done = self.keeper.last_renew_done
        if term is None or term._reason is not None or done is None:
            return None
        stale = _clock.now() - done
        if stale > self.timing.lease_duration + tolerance:
            return (
                f"{self._description}: leading but not renewed for {stale:.1f}s "
                f"(lease duration {self.timing.lease_duration:g}s + tolerance {tolerance:g}s)"
            )
        return None

    def statistics(self) -> LeadershipStatistics:
        term = self.leadership.term
        c = self.counters
        return LeadershipStatistics(
            lock=self._description,
            identity=self._identity,
            is_leader=self.leadership.is_leader_nowait(),
            leader=self.view.holder or None,
            term=term.number if term is not None else 0,
            fencing_token=term.fencing_token if term is not None else None,
            terms=c.terms,
            leader_changes=c.leader_changes,
            acquire_attempts=c.acquire_attempts,
            renewals=c.renewals,
            renew_failures=c.renew_failures,
            slow_path=c.slow_path,
            last_renew_at=self.keeper.last_renew_done,
            last_error=c.last_error,
            hook_problems=self.companions.problems(),
            loop_lag=loop_lag(),
        )


async def campaign(
    lock: Lock,
    *,
    task_status: TaskStatus[Leadership] = anyio.TASK_STATUS_IGNORED,
    **options: Unpack[ElectionOptions],
) -> None:
    """Campaign for ``lock`` until cancelled, for task groups::

        async with anyio.create_task_group() as tg:
            leadership = await tg.start(campaign, lock)

    Runs until cancelled (then, with ``release_on_cancel``, releases the lock after the leader work
    has finished) or until a fatal [ElectionError][aioleader.ElectionError] (e.g. 403 Forbidden),
    which it raises.

    Args:
        lock: the lock to campaign for (e.g. a [LeaseLock][aioleader.kubernetes.LeaseLock]).
        task_status: set by ``TaskGroup.start()``; receives the
            [Leadership][aioleader.Leadership] handle.
        **options: the election's options, see [ElectionOptions][aioleader.ElectionOptions]
            (``timing``, ``release_on_cancel``, ``on_started_leading``, ``on_stopped_leading``,
            ``on_new_leader``, ``rng``, ``name``, ``metrics``, ``watch``).

    Followers *watch* the lock when it supports watches: no requests while the holder renews, an
    attempt the moment it releases, and exactly when an observed lease expires. ``watch=False``,
    or a lock without watches (or a watch refused by RBAC), polls every
    ``retry_period × uniform(1, 1 + jitter)`` as client-go does.
    """
    config = ElectionConfig.build(lock, options)
    await _Election(config).run(task_status=task_status)


@asynccontextmanager
async def _elect(config: ElectionConfig) -> AsyncIterator[Leadership]:
    async def run(*, task_status: TaskStatus[Leadership]) -> None:
        await _Election(config).run(task_status=task_status)

    try:
        async with anyio.create_task_group() as tg:
            leadership: Leadership = await tg.start(run)
            try:
                yield leadership
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = _unwrap(group, f"election for {config.lock.describe()}")
    else:
        return
    raise error


def elect(
    lock: Lock, **options: Unpack[ElectionOptions]
) -> contextlib.AbstractAsyncContextManager[Leadership]:
    """Campaign for ``lock`` in the background for the duration of the block::

        async with elect(lock) as leadership:
            async with leadership.leading() as term:
                await leader_only_work()

    Leaving the block stops campaigning and (by default) releases the lock once leader work has
    finished. An exception raised in the block comes out as itself; a fatal election error (e.g.
    [ForbiddenError][aioleader.ForbiddenError]) cancels the block and comes out as itself.

    Args:
        lock: the lock to campaign for (e.g. a [LeaseLock][aioleader.kubernetes.LeaseLock]).
        **options: the election's options, see [ElectionOptions][aioleader.ElectionOptions].

    Returns:
        An async context manager yielding the [Leadership][aioleader.Leadership] handle.

    Raises:
        TypeError: an unknown option, or an option of the wrong type (raised here, before any
            task starts).
        ValueError: an invalid option value.
    """
    return _elect(ElectionConfig.build(lock, options))
