"""The elector state machine, and the two ways to run it: ``elect()`` and ``campaign()``.

client-go's ``tools/leaderelection`` semantics, with these decisions made stricter:

* Every decision uses ``anyio.current_time()`` (monotonic). The wall clock is only written into the
  record. Another holder's lease is judged expired on the local time at which *we observed the record
  change*, plus the *record's* ``leaseDurationSeconds`` - never on its ``renewTime``.
* Leader work runs in cancel scopes whose deadline is *send time of the last successful renew +
  renew_deadline*. anyio itself cancels them at that instant, whatever the elector task is doing;
  every request is also bounded by what is left of that window (and by RD/2 at most).
* Every new term increments ``leaseTransitions`` (client-go keeps it when a candidate re-takes a
  lease that still names it), so a term's fencing token is strictly greater than any earlier one.
* A renewal whose fresh read shows another holder - or our identity with a different transition count
  (a second process using our identity) - ends the term at once.
* Release happens only after leader work has been cancelled *and has finished*.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._exceptions import AioleaderError, ElectionError, LockConflict, LockError
from ._leadership import Leadership, LeadershipStatistics, Term, _Leading
from ._lock import Lock, Observed
from ._metrics import ElectionMetrics
from ._record import LeaderElectionRecord
from ._timing import Timing
from ._tracing import span

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["campaign", "elect"]

logger = logging.getLogger("aioleader")

T = TypeVar("T")
StartedCallback = Callable[[Term], Awaitable[object] | object]
StoppedCallback = Callable[[Term], Awaitable[object] | object]
NewLeaderCallback = Callable[[str], Awaitable[object] | object]


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


def _unwrap(group: BaseExceptionGroup[BaseException], what: str) -> BaseException:
    """One clear exception out of the group of an internal task group.

    Only the top level is unwrapped, and only when it holds exactly one exception: that one comes
    out as itself (a user's own exception group included, so ``except*`` still matches it).
    Several at once (the body and the election failing together) become one
    :class:`ElectionError` whose cause is the group.
    """
    if len(group.exceptions) == 1:
        return group.exceptions[0]
    error = ElectionError(f"{what} failed with {len(group.exceptions)} errors: {group!r}")
    error.__cause__ = group
    return error


def _validate(lock: Lock, timing: Timing | None) -> Timing:
    if not isinstance(lock, Lock):
        raise TypeError(f"lock must be an aioleader Lock, got {type(lock).__name__}")
    if timing is None:
        return Timing()
    if not isinstance(timing, Timing):
        raise TypeError(f"timing must be an aioleader.Timing, got {type(timing).__name__}")
    return timing


_DELETED = (b"", "<deleted>")


class _RequestTimeout(LockError):
    """A request that did not complete within its bound (counted as ``timeout`` in metrics)."""


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, LockConflict):
        return "conflict"
    if isinstance(exc, _RequestTimeout):
        return "timeout"
    if isinstance(exc, LockError):
        return "transient"
    return "fatal"


@dataclass
class _Flight:
    """One in-flight confirmation that concurrent callers wait for."""

    done: anyio.Event = field(default_factory=anyio.Event)
    result: bool | None = None


@dataclass
class _Counters:
    terms: int = 0
    leader_changes: int = 0
    acquire_attempts: int = 0
    renewals: int = 0
    renew_failures: int = 0
    slow_path: int = 0
    last_error: str | None = None


class _Elector:
    """One candidate's campaign on one lock. Private: users hold a :class:`Leadership`."""

    def __init__(
        self,
        lock: Lock,
        *,
        timing: Timing | None,
        release_on_cancel: bool,
        on_started_leading: StartedCallback | None,
        on_stopped_leading: StoppedCallback | None,
        on_new_leader: NewLeaderCallback | None,
        rng: random.Random | None,
        name: str | None = None,
        metrics: ElectionMetrics | None = None,
        watch: bool = True,
    ) -> None:
        timing = _validate(lock, timing)
        self.watch = watch
        self.name = name if name is not None else lock.describe()
        self.metrics = metrics
        self.lock = lock
        self.timing = timing
        self.identity = lock.identity
        self.release_on_cancel = release_on_cancel
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.rng = rng if rng is not None else random.Random()
        self.leadership: Leadership = Leadership._create(self)
        self.counters = _Counters()

        # What we last saw in the lock, and when (monotonic, at receipt of the response).
        self.observed_holder = ""
        self._observed_key: tuple[bytes, str] | None = None
        self._observed_record: LeaderElectionRecord | None = None
        self._observed_at = -math.inf
        self._max_transitions = -1
        # Our own last write as leader, the template of the next renewal.
        self._own_record: LeaderElectionRecord | None = None
        self._last_renew_sent: float | None = None
        self._last_renew_done: float | None = None
        self._retry_after: float | None = None
        self._expires_at: float | None = None
        self._attempt_failed = False
        self._watch_failed = False
        self._fatal: BaseException | None = None
        self._wake = anyio.Event()
        self._ever_led = False
        self._stopped_pending: Term | None = None
        # The lock object caches what it last read; requests must not interleave.
        self._io = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._notify: MemoryObjectSendStream[tuple[NewLeaderCallback, str]] | None = None
        self._notifier_done = anyio.Event()
        self._confirm_flight: _Flight | None = None
        self._notifier_scope = anyio.CancelScope(shield=True)
        self._log_extra = {"lock": lock.describe(), "identity": self.identity}
        self._span_attributes = {
            "aioleader.lock": lock.describe(),
            "aioleader.identity": self.identity,
        }

    # -- running -------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Leadership]) -> None:
        error: BaseException | None
        send, receive = anyio.create_memory_object_stream[tuple[NewLeaderCallback, str]](math.inf)
        self._notify = send
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._notifier, receive)
                try:
                    task_status.started(self.leadership)
                    await self._campaign()
                except AioleaderError as exc:
                    self._failed(exc)
                    raise
                finally:
                    try:
                        with anyio.CancelScope(shield=True):
                            await self._shutdown()
                    finally:
                        send.close()
                        with anyio.CancelScope(shield=True):
                            # Let on_new_leader callbacks queued so far (e.g. for our release)
                            # run, but never let a stuck callback hold the shutdown forever.
                            with anyio.move_on_after(self.timing.renew_deadline):
                                await self._notifier_done.wait()
                        self._notifier_scope.cancel()
                        tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            error = _unwrap(group, f"election for {self.lock.describe()}")
        else:
            error = None
        finally:
            self.leadership._close()
        if error is not None:
            self._fatal = error
            # Raised outside the except block, so the exception keeps its own __context__ and
            # __cause__ (e.g. the ApiException behind a ForbiddenError).
            raise error

    async def _notifier(
        self, receive: MemoryObjectReceiveStream[tuple[NewLeaderCallback, str]]
    ) -> None:
        # One task runs on_new_leader callbacks in order, so a slow callback never delays a renewal.
        # Shielded so that callbacks queued during shutdown (our own release) still run; run()
        # cancels this scope itself once shutdown is over.
        try:
            with self._notifier_scope:
                async with receive:
                    async for callback, holder in receive:
                        await _maybe_await(callback(holder))
        finally:
            self._notifier_done.set()

    async def _campaign(self) -> None:
        while True:
            term = await self._acquire()
            await self._lead(term)
            await self._after_term(term)

    # -- requests ------------------------------------------------------------------------------------

    async def _request(self, operation: Callable[..., Awaitable[T]], timeout: float) -> T:
        """One bounded request. The lock is told the timeout, and a scope enforces it anyway."""
        if timeout <= 0:
            raise LockError(f"{self.lock.describe()}: no time left for a request")
        try:
            with anyio.fail_after(timeout):
                return await operation(timeout=timeout)
        except TimeoutError as exc:
            raise _RequestTimeout(
                f"{self.lock.describe()}: request timed out after {timeout:g}s"
            ) from exc

    def _observe(self, observed: Observed) -> None:
        now = anyio.current_time()
        record = observed.record
        self._max_transitions = max(self._max_transitions, record.leader_transitions)
        # The version too, not only the record's bytes: annotation locks write whole seconds, so
        # two renewals in one second can be byte-identical, and treating the second as "no change"
        # would start our clock too early. Any write restarts it (conservative).
        key = (observed.raw, observed.version)
        if key == self._observed_key:
            return
        self._observed_key = key
        self._observed_at = now
        self._observed_record = record
        holder = record.holder_identity
        if holder != self.observed_holder:
            self.observed_holder = holder
            self.counters.leader_changes += 1
            logger.info(
                "%s: leader is now %r",
                self.lock.describe(),
                holder or None,
                extra={**self._log_extra, "holder": holder},
            )
            if self.on_new_leader is not None and self._notify is not None:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._notify.send_nowait((self.on_new_leader, holder))

    def _observe_missing(self) -> None:
        """The lock does not exist (read or watched). A change like any other: it restarts our
        clock, and whoever held it is no longer visible."""
        if self._observed_key == _DELETED:
            return
        self._observed_key = _DELETED
        self._observed_at = anyio.current_time()
        logger.info(
            "%s: the lock object does not exist", self.lock.describe(), extra=self._log_extra
        )
        if self.observed_holder:
            self.observed_holder = ""
            self.counters.leader_changes += 1
            if self.on_new_leader is not None and self._notify is not None:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._notify.send_nowait((self.on_new_leader, ""))

    def _duration(self, record: LeaderElectionRecord) -> float:
        # The record's own duration is what its holder promised; an invalid one (missing, <= 0)
        # is read as our own lease duration, not as "expired at once" as client-go does.
        return record.lease_duration_seconds or self.timing.lease_duration

    def _expired(self, record: LeaderElectionRecord) -> bool:
        # 1 ns of float-rounding slack: a sleep until the expiry instant may wake a hair before it
        # (fake clocks round), and must not then retry at the same instant forever.
        return anyio.current_time() + 1e-9 >= self._observed_at + self._duration(record)

    def _failed(self, exc: AioleaderError) -> None:
        self.counters.last_error = f"{type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.api_error(self.name, _error_kind(exc))
        logger.debug("%s: %s", self.lock.describe(), exc, extra=self._log_extra)

    # -- acquiring -----------------------------------------------------------------------------------

    async def _acquire(self) -> Term:
        if self.watch and self.lock.supports_watch and not self._watch_failed:
            term = await self._acquire_watching()
            if term is not None:
                return term
        return await self._acquire_polling()

    async def _acquire_watching(self) -> Term | None:
        """Follow the lock through a watch instead of polling it.

        A watch observes every renewal the moment it lands, so the observed time is exact and
        a follower sends no request while the holder renews. It attempts at once when the lock
        is released (or deleted and waited out) and exactly when the lease it observed expires.
        Returns ``None`` if the lock cannot be watched (e.g. RBAC without list/watch), and the
        caller polls instead.
        """
        self._wake = anyio.Event()
        # The first attempt is immediate, as when polling, and made before any watch is opened:
        # a candidate that wins at once (a free or missing lock) never holds a watch connection,
        # which matters for processes holding thousands of leases over one connection pool.
        self._attempt_failed = False
        term = await self._try_acquire()
        if term is not None:
            return term
        backoff_until = -math.inf
        if self._attempt_failed:
            backoff_until = anyio.current_time() + self.timing.retry_period * self.rng.uniform(
                1.0, 1.0 + self.timing.jitter
            )
        next_try = max(self._due(), backoff_until)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._follow)
                while not self._watch_failed:
                    now = anyio.current_time()
                    if now >= next_try:
                        self._attempt_failed = False
                        term = await self._try_acquire()
                        if term is not None:
                            tg.cancel_scope.cancel()
                            return term
                        now = anyio.current_time()
                        if self._attempt_failed:
                            pause = self.timing.retry_period * self.rng.uniform(
                                1.0, 1.0 + self.timing.jitter
                            )
                            backoff_until = now + max(pause, self._retry_after or 0.0)
                            self._retry_after = None
                        next_try = max(self._due(), backoff_until)
                        continue
                    wake = self._wake
                    with anyio.move_on_after(next_try - now):
                        await wake.wait()
                    if wake.is_set():
                        self._wake = anyio.Event()
                        next_try = max(self._due(), backoff_until)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Our own task group: what the acquisition raised comes out as itself.
            error = _unwrap(group, f"following {self.lock.describe()}")
        else:
            return None
        raise error

    async def _follow(self) -> None:
        """Feed every change the lock's watch reports into our observation."""
        while True:
            try:
                async with contextlib.aclosing(self.lock.watch()) as states:
                    async for observed in states:
                        if observed is None:
                            self._observe_missing()
                        else:
                            self._observe(observed)
                        self._wake.set()
            except ElectionError as exc:
                logger.warning(
                    "%s: cannot watch the lock (%s); polling it instead",
                    self.lock.describe(),
                    exc,
                    extra=self._log_extra,
                )
                self._watch_failed = True
                self._wake.set()
                return
            except LockError as exc:
                self._failed(exc)
            await anyio.sleep(self.timing.retry_period)

    def _due(self) -> float:
        """When an acquisition attempt makes sense, by what we observed last."""
        now = anyio.current_time()
        record = self._observed_record
        if record is None:
            return now
        if self._observed_key == _DELETED:
            return self._observed_at + max(self._duration(record), self.timing.lease_duration)
        if self._may_take(record):
            return now
        return self._observed_at + self._duration(record)

    async def _acquire_polling(self) -> Term:
        while True:
            self._expires_at = None
            term = await self._try_acquire()
            if term is not None:
                return term
            # client-go's JitterUntil: RP × uniform(1, 1 + jitter), counted after the attempt...
            pause = self.timing.retry_period * self.rng.uniform(1.0, 1.0 + self.timing.jitter)
            # ...but never later than the moment the observed lease expires: a crashed holder is
            # then replaced LD after we saw its last renewal, not up to 2.2·RP after that. Only
            # set by a successful read, so a failing API is never retried in a tight loop.
            if self._expires_at is not None:
                pause = min(pause, max(0.0, self._expires_at - anyio.current_time()))
            if self._retry_after is not None:
                pause = max(pause, self._retry_after)
                self._retry_after = None
            await anyio.sleep(pause)

    async def _try_acquire(self) -> Term | None:
        with span("acquire", **self._span_attributes):
            return await self._try_acquire_once()

    async def _try_acquire_once(self) -> Term | None:
        self.counters.acquire_attempts += 1
        timeout = self.timing.renew_deadline / 2
        try:
            async with self._io:
                observed = await self._request(self.lock.get, timeout)
                if observed is None:
                    if self._wait_after_deletion():
                        return None
                    record = self._record_for_new_term(None)
                    sent = anyio.current_time()
                    created = await self._request(partial(self.lock.create, record), timeout)
                    return self._begin_term(created, record, sent)
                self._observe(observed)
                if not self._may_take(observed.record):
                    self._expires_at = self._observed_at + self._duration(observed.record)
                    return None
                record = self._record_for_new_term(observed.record)
                sent = anyio.current_time()
                updated = await self._request(partial(self.lock.update, record), timeout)
                return self._begin_term(updated, record, sent)
        except LockConflict as exc:
            self._failed(exc)
        except LockError as exc:
            self._failed(exc)
            self._attempt_failed = True
            self._retry_after = exc.retry_after
        return None

    def _may_take(self, record: LeaderElectionRecord) -> bool:
        """Free, expired, or our own last term (re-taken at once, as client-go does). A record
        naming our identity with another transition count belongs to another process using our
        identity (a force-deleted StatefulSet pod's replacement): it is waited out like anyone's."""
        holder = record.holder_identity
        if not holder or self._expired(record):
            return True
        if holder != self.identity:
            return False
        last = self.leadership.term
        return last is not None and record.leader_transitions == last.fencing_token

    def _wait_after_deletion(self) -> bool:
        """The lock does not exist. If we ever saw it, somebody may hold it still - even if it
        was free when we last looked, another candidate may have taken it since and be working
        now: the deletion counts as a change observed now, and a lease (the last one we saw, at
        least our own) must run out before we create a new one.

        A candidate that has never seen the lock creates it at once, as client-go does: it
        cannot know about a holder whose lock object was deleted before it started. Deleting
        the lock of a running election is unsafe for such candidates; do not.
        """
        previous = self._observed_record
        if previous is None:
            return False
        self._observe_missing()
        duration = max(self._duration(previous), self.timing.lease_duration)
        expires = self._observed_at + duration
        if anyio.current_time() >= expires:
            return False
        self._expires_at = expires
        return True

    def _record_for_new_term(self, previous: LeaderElectionRecord | None) -> LeaderElectionRecord:
        now = datetime.now(timezone.utc)
        transitions = self._max_transitions + 1
        if previous is not None:
            transitions = max(transitions, previous.leader_transitions + 1)
        base = previous if previous is not None else LeaderElectionRecord()
        return base.with_changes(
            strategy=None,
            preferred_holder=None,
            holder_identity=self.identity,
            lease_duration_seconds=self.timing.lease_duration_seconds,
            acquire_time=now,
            renew_time=now,
            leader_transitions=max(transitions, 0),
        )

    def _begin_term(self, observed: Observed, record: LeaderElectionRecord, sent: float) -> Term:
        self._observe(observed)
        self._own_record = record
        self._last_renew_sent = sent
        self._last_renew_done = anyio.current_time()
        self.counters.terms += 1
        self._ever_led = True
        term: Term = Term._create(
            identity=self.identity,
            number=self.counters.terms,
            fencing_token=record.leader_transitions,
            acquired_at=sent,
            acquired_wall=record.acquire_time,
            deadline=sent + self.timing.renew_deadline,
        )
        self._stopped_pending = term
        self.leadership._begin(term)
        if self.metrics is not None:
            self.metrics.term_started(self.name)
            self.metrics.leading(self.name, True)
        logger.info(
            "%s: %s became leader (term %d, fencing token %d)",
            self.lock.describe(),
            self.identity,
            term.number,
            term.fencing_token,
            extra={**self._log_extra, "term": term.number},
        )
        assert self._tg is not None
        self._tg.start_soon(self._record_event, f"{self.identity} became leader")
        if self.on_started_leading is not None:
            # The scope is opened here, synchronously, so that the term cannot end (and release
            # cannot happen) before the callback's work is accounted for.
            scope = term._open_scope()
            self._tg.start_soon(self._run_started, term, scope, self.on_started_leading)
        return term

    async def _run_started(
        self, term: Term, scope: anyio.CancelScope, callback: StartedCallback
    ) -> None:
        async with _Leading(self.leadership, term=term, scope=scope):
            await _maybe_await(callback(term))

    async def _record_event(self, message: str) -> None:
        # Best effort, off the renew path: never delays or fails a renewal.
        try:
            with anyio.move_on_after(self.timing.renew_deadline / 2):
                await self.lock.record_event(message)
        except Exception:
            logger.debug(
                "%s: could not record event",
                self.lock.describe(),
                exc_info=True,
                extra=self._log_extra,
            )

    # -- leading -------------------------------------------------------------------------------------

    async def _lead(self, term: Term) -> None:
        while term._reason is None:
            assert self._last_renew_done is not None
            # client-go renews every RP after the previous renewal finished, without jitter.
            await self._sleep_until(self._last_renew_done + self.timing.retry_period, term)
            if term._reason is not None:
                return
            await self._renew_pass(term)

    async def _sleep_until(self, when: float, term: Term) -> None:
        """Sleep until ``when``, or until the term ends, whichever is first."""
        with anyio.move_on_after(max(0.0, when - anyio.current_time())):
            await term.ended.wait()

    async def _renew_pass(self, term: Term) -> None:
        """Renew, retrying transient failures every RP, until success or the term's deadline."""
        started = anyio.current_time()
        while term._reason is None:
            now = anyio.current_time()
            remaining = term.deadline - now
            if remaining <= 0:
                self._end_term(term, "deadline")
                return
            try:
                renewed = await self._renew_once(
                    term, min(remaining, self.timing.renew_deadline / 2)
                )
            except LockError as exc:
                self.counters.renew_failures += 1
                self._failed(exc)
            else:
                if renewed:
                    if self.metrics is not None:
                        self.metrics.renewed(self.name, anyio.current_time() - started)
                    return
                self._end_term(term, "lost")
                return
            await self._sleep_until(min(now + self.timing.retry_period, term.deadline), term)

    async def _renew_once(self, term: Term, timeout: float) -> bool:
        with span("renew", term=term.number, **self._span_attributes):
            return await self._renew_once_traced(term, timeout)

    async def _renew_once_traced(self, term: Term, timeout: float) -> bool:
        """One renewal: the fast path (an update on the cached version, no GET), falling back to
        the slow path (GET, then decide) on a conflict. False means the lock is authoritatively
        someone else's."""
        async with self._io:
            record = self._renewal_record()
            sent = anyio.current_time()
            try:
                observed = await self._request(partial(self.lock.update, record), timeout)
            except LockConflict:
                self.counters.slow_path += 1
                if self.metrics is not None:
                    self.metrics.slow_path(self.name)
                fresh = await self._request(self.lock.get, self._time_left(term))
                if fresh is None:
                    return False  # deleted: whoever creates it next is the holder, not us
                self._observe(fresh)
                if not self._still_ours(term, fresh.record):
                    return False
                # Still ours, e.g. our previous write was applied but its reply was lost.
                record = self._renewal_record()
                sent = anyio.current_time()
                observed = await self._request(
                    partial(self.lock.update, record), self._time_left(term)
                )
            self._observe(observed)
            if anyio.current_time() >= term.deadline:
                # The reply came too late: the term's work was cancelled at its deadline and a
                # term never comes back to life. The lock still names us; the next term re-takes
                # it (with a new fencing token).
                return False
            self._own_record = record
            self._last_renew_sent = sent
            self._last_renew_done = anyio.current_time()
            self.counters.renewals += 1
            term._extend(sent + self.timing.renew_deadline)
            return True

    def _time_left(self, term: Term) -> float:
        return min(term.deadline - anyio.current_time(), self.timing.renew_deadline / 2)

    def _still_ours(self, term: Term, record: LeaderElectionRecord) -> bool:
        return (
            record.holder_identity == self.identity
            and record.leader_transitions == term.fencing_token
        )

    def _renewal_record(self) -> LeaderElectionRecord:
        assert self._own_record is not None
        return self._own_record.with_changes(renew_time=datetime.now(timezone.utc))

    def _end_term(self, term: Term, reason: str) -> None:
        if term._reason is not None:
            return
        term._end(reason)
        self.leadership._after_end()
        if self.metrics is not None:
            self.metrics.leading(self.name, False)
        # A lost or expired term is worth a warning; a shutdown is routine.
        level = logging.INFO if reason == "stopped" else logging.WARNING
        logger.log(
            level,
            "%s: %s stopped leading (term %d: %s)",
            self.lock.describe(),
            self.identity,
            term.number,
            reason,
            extra={**self._log_extra, "term": term.number},
        )
        if self._tg is not None:
            self._tg.start_soon(self._record_event, f"{self.identity} stopped leading")

    async def _after_term(self, term: Term) -> None:
        await term._wait_work_done()
        await self._stopped(term)

    async def _stopped(self, term: Term) -> None:
        if self._stopped_pending is term:
            self._stopped_pending = None
            if self.on_stopped_leading is not None:
                await _maybe_await(self.on_stopped_leading(term))

    # -- confirm, shutdown -----------------------------------------------------------------------

    async def confirm(self) -> bool:
        """``is_leader(confirm=True)``: a bounded fresh read of the lock.

        Concurrent confirmations share one read (single flight), so that any number of callers
        cost one request and can delay a due renewal by at most one bounded read.
        """
        term = self.leadership.term
        if term is None or not term.active:
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
            async with self._io:
                fresh = await self._request(self.lock.get, self._time_left(term))
        except LockError as exc:
            self._failed(exc)
            return False
        if fresh is None:
            self._end_term(term, "lost")
            return False
        self._observe(fresh)
        if not self._still_ours(term, fresh.record):
            self._end_term(term, "lost")
            return False
        return True

    async def _shutdown(self) -> None:
        """Runs shielded when the campaign ends for any reason: end the term, wait for leader work
        to finish, release the lock if asked to, then ``on_stopped_leading``."""
        term = self.leadership.term
        if term is not None:
            self._end_term(term, "stopped")
            await term._wait_work_done()
        if self.release_on_cancel and term is not None:
            await self._release(term)
        if term is not None:
            await self._stopped(term)

    async def _release(self, term: Term) -> None:
        with span("release", term=term.number, **self._span_attributes):
            await self._release_traced(term)

    async def _release_traced(self, term: Term) -> None:
        # Bounded by RD in total. Only our own last term is released: the fresh record must name
        # us *with that term's transition count*, so that a newer term of the same identity (a
        # restarted process) is never released from under it. update()'s compare-and-swap guards
        # against a takeover between the read and the write.
        with anyio.move_on_after(self.timing.renew_deadline) as scope:
            try:
                async with self._io:
                    fresh = await self._request(self.lock.get, self.timing.renew_deadline / 2)
                    if fresh is None or not self._still_ours(term, fresh.record):
                        return
                    now = datetime.now(timezone.utc)
                    released = fresh.record.with_changes(
                        strategy=None,
                        preferred_holder=None,
                        holder_identity="",
                        lease_duration_seconds=1,
                        acquire_time=now,
                        renew_time=now,
                    )
                    observed = await self._request(
                        partial(self.lock.update, released), self.timing.renew_deadline / 2
                    )
                self._observe(observed)
                logger.info(
                    "%s: released by %s", self.lock.describe(), self.identity, extra=self._log_extra
                )
            except Exception as exc:  # a failed release must never wedge the shutdown
                logger.warning(
                    "%s: release failed: %s", self.lock.describe(), exc, extra=self._log_extra
                )
        if scope.cancelled_caught:
            logger.warning("%s: release timed out", self.lock.describe(), extra=self._log_extra)

    # -- introspection -------------------------------------------------------------------------------

    def health_problem(self, tolerance: float) -> str | None:
        if self._fatal is not None:
            # The election is over for good (e.g. 403): a process that can never lead again is
            # not healthy, whatever else it still serves.
            return f"{self.lock.describe()}: the election failed: {self._fatal!r}"
        term = self.leadership.term
        if term is None or term._reason is not None or self._last_renew_done is None:
            return None
        stale = anyio.current_time() - self._last_renew_done
        if stale > self.timing.lease_duration + tolerance:
            return (
                f"{self.lock.describe()}: leading but not renewed for {stale:.1f}s "
                f"(lease duration {self.timing.lease_duration:g}s + tolerance {tolerance:g}s)"
            )
        return None

    def statistics(self) -> LeadershipStatistics:
        term = self.leadership.term
        c = self.counters
        return LeadershipStatistics(
            lock=self.lock.describe(),
            identity=self.identity,
            is_leader=self.leadership.is_leader_nowait(),
            leader=self.observed_holder or None,
            term=term.number if term is not None else 0,
            fencing_token=term.fencing_token if term is not None else None,
            terms=c.terms,
            leader_changes=c.leader_changes,
            acquire_attempts=c.acquire_attempts,
            renewals=c.renewals,
            renew_failures=c.renew_failures,
            slow_path=c.slow_path,
            last_renew_at=self._last_renew_done,
            last_error=c.last_error,
        )


async def campaign(
    lock: Lock,
    *,
    timing: Timing | None = None,
    release_on_cancel: bool = True,
    on_started_leading: StartedCallback | None = None,
    on_stopped_leading: StoppedCallback | None = None,
    on_new_leader: NewLeaderCallback | None = None,
    rng: random.Random | None = None,
    name: str | None = None,
    metrics: ElectionMetrics | None = None,
    watch: bool = True,
    task_status: TaskStatus[Leadership] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Campaign for ``lock`` until cancelled, for task groups::

        async with anyio.create_task_group() as tg:
            leadership = await tg.start(campaign, lock)

    Runs until cancelled (then, with ``release_on_cancel``, releases the lock after the leader work
    has finished) or until a fatal :class:`ElectionError` (e.g. 403 Forbidden), which it raises.
    Callbacks may be sync or async: ``on_started_leading(term)`` runs as leader work inside the
    term's cancel scope; ``on_stopped_leading(term)`` runs after that work has finished (and after
    the release); ``on_new_leader(identity)`` runs, in order, whenever the observed holder changes
    (``""`` when the lock is released). ``rng`` makes the retry jitter reproducible in tests.
    ``name`` labels logs and metrics (default: the lock's ``describe()``); ``metrics`` receives the
    elector's measurements (e.g. :class:`~aioleader.PrometheusMetrics`).

    Followers *watch* the lock when it supports watches (``LeaseLock``, ``MemoryLock``): no
    requests while the holder renews, an attempt the moment it releases, and exactly when an
    observed lease expires. ``watch=False``, or a lock without watches (or a watch refused by
    RBAC), polls every ``retry_period × uniform(1, 1 + jitter)`` as client-go does.
    """
    elector = _Elector(
        lock,
        timing=timing,
        release_on_cancel=release_on_cancel,
        on_started_leading=on_started_leading,
        on_stopped_leading=on_stopped_leading,
        on_new_leader=on_new_leader,
        rng=rng,
        name=name,
        metrics=metrics,
        watch=watch,
    )
    await elector.run(task_status=task_status)


@asynccontextmanager
async def elect(
    lock: Lock,
    *,
    timing: Timing | None = None,
    release_on_cancel: bool = True,
    on_started_leading: StartedCallback | None = None,
    on_stopped_leading: StoppedCallback | None = None,
    on_new_leader: NewLeaderCallback | None = None,
    rng: random.Random | None = None,
    name: str | None = None,
    metrics: ElectionMetrics | None = None,
    watch: bool = True,
) -> AsyncIterator[Leadership]:
    """Campaign for ``lock`` in the background for the duration of the block::

        async with elect(lock) as leadership:
            async with leadership.leading() as term:
                await leader_only_work()

    Leaving the block stops campaigning and (by default) releases the lock once leader work has
    finished. An exception raised in the block comes out as itself; a fatal election error (e.g.
    :class:`~aioleader.ForbiddenError`) cancels the block and comes out as itself. Options are
    those of :func:`campaign`.
    """
    _validate(lock, timing)  # in the caller's frame, before any task starts
    started: Any = partial(
        campaign,
        lock,
        timing=timing,
        release_on_cancel=release_on_cancel,
        on_started_leading=on_started_leading,
        on_stopped_leading=on_stopped_leading,
        on_new_leader=on_new_leader,
        rng=rng,
        name=name,
        metrics=metrics,
        watch=watch,
    )
    try:
        async with anyio.create_task_group() as tg:
            leadership: Leadership = await tg.start(started)
            try:
                yield leadership
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = _unwrap(group, f"election for {lock.describe()}")
    else:
        return
    raise error
