"""The user's handle on an election ([`Leadership`][Leadership]) and one period of leadership ([`Term`][Term]).

The elector task owns the state; these classes only read it, and the only thing the elector does to
user code is move the deadline of, or cancel, cancel scopes that the user's own task entered
(``async with leadership.leading()``). Cancel scopes belong to the task that enters them.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, NoReturn, Protocol, final

import anyio

from . import _clock, _suspend
from ._decisions import term_deadline_passed
from ._exceptions import ElectionError
from ._flag import Flag

__all__ = ["ElectionState", "Leadership", "LeadershipStatistics", "Term"]

# Suspends shorter than this are clock-reading noise (two syscalls), not a suspended host.
_SUSPEND_NOISE = 1e-3


class ElectionState(Protocol):
    """What a [`Leadership`][Leadership] needs from the election that runs it (no import of the elector)."""

    @property
    def description(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def observed_holder(self) -> str: ...

    async def confirm(self) -> bool: ...

    async def step_down(self, cooldown: float | None) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    @property
    def paused(self) -> bool: ...

    def health_problem(self, tolerance: float) -> str | None: ...

    def statistics(self) -> LeadershipStatistics: ...


class _NoPublicConstructor(type):
    """Handles are built by the library (trio's ``NoPublicConstructor``): ``_create`` runs the
    class's private ``_init``; there is no ``__init__``, so no constructor signature is shown."""

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor")

    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        obj: Any = super().__call__()  # object.__init__: nothing to pass
        obj._init(*args, **kwargs)
        return obj


@final
class Term(metaclass=_NoPublicConstructor):
    """One uninterrupted period during which this candidate holds the lock.

    Attributes:
        identity: the holder identity written into the lock.
        number: 1 for the first term of this election, 2 after the first re-acquisition, ...
        fencing_token: the lock's ``leaseTransitions`` right after acquisition. It is strictly
            greater than the token of any earlier term on the same lock (aioleader counts a
            transition for every new term, even when it re-takes a lease that still names it), so
            downstream systems can reject writes from an older leader.
        acquired_at: ``_clock.now()`` when the acquiring request was *sent*.
        acquired_wall: the wall-clock time written as ``acquireTime``.
        deadline: the monotonic time by which leader work is cancelled unless a renewal succeeds:
            *send time of the last successful renew + renew_deadline*. It only moves forward.
        cancel_scope: the scope of the first ``leading()`` block of this term (each concurrent
            ``leading()`` block gets its own scope, all cancelled together).
        ended: an `anyio.Event` set when the term ends.
        ended_at: ``_clock.now()`` when the term ended (``None`` while active; at the
            latest its deadline).
        end_reason: ``None`` while active; then why it ended: ``"lost"`` (the lock names another
            holder, or was deleted), ``"deadline"`` (no successful renewal within the renew
            deadline, also counting time the host spent suspended), ``"stepped down"``
            (``step_down()``, ``pause()``, the ``ready`` signal, or ``max_term``; the lock is
            released), or ``"stopped"`` (the election was shut down; the lock is then released
            if ``release_on_cancel``).
    """

    identity: str
    number: int
    fencing_token: int
    acquired_at: float
    acquired_wall: datetime
    ended: anyio.Event
    ended_at: float | None

    def _init(
        self,
        *,
        identity: str,
        number: int,
        fencing_token: int,
        acquired_at: float,
        acquired_wall: datetime,
        deadline: float,
        suspended_at: float = 0.0,
    ) -> None:
        self.identity = identity
        self.number = number
        self.fencing_token = fencing_token
        self.acquired_at = acquired_at
        self.acquired_wall = acquired_wall
        self.ended = anyio.Event()
        self.ended_at: float | None = None
        self._reason: str | None = None
        self._deadline = deadline
        # _suspend.suspended_seconds() when the last successful renewal was sent.
        self._suspended_at = suspended_at
        self._scopes: list[anyio.CancelScope] = []
        self._first_scope: anyio.CancelScope | None = None
        self._open_blocks = 0
        self._work_done = Flag(is_set=True)

    def __repr__(self) -> str:
        state = "active" if self.active else f"ended ({self.end_reason})"
        return (
            f"<Term #{self.number} of {self.identity!r} fencing_token={self.fencing_token} {state}>"
        )

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def end_reason(self) -> str | None:
        """``None`` while active; why the term ended otherwise. A deadline that has passed reads as
        ``"deadline"`` at once, even before the elector task has run — also when the host was
        suspended (``CLOCK_BOOTTIME`` ran on, ``CLOCK_MONOTONIC`` did not) for longer than what
        was left of the window."""
        if self._reason is None and self._time_is_up(_clock.now()):
            return "deadline"
        return self._reason

    def _time_is_up(self, now: float) -> bool:
        if now >= self._deadline:
            return True
        suspended = _suspend.suspended_seconds() - self._suspended_at
        return suspended > _SUSPEND_NOISE and term_deadline_passed(now, self._deadline, suspended)

    @property
    def active(self) -> bool:
        """True until the term ends or its deadline passes (whichever the clock sees first)."""
        return self.end_reason is None

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        if self._first_scope is None:
            raise RuntimeError("no leading() block has been entered for this term yet")
        return self._first_scope

    async def wait_ended(self) -> None:
        """Wait until the term ends. The elector ends it no later than its deadline."""
        await self.ended.wait()

    # -- elector side ------------------------------------------------------------------------------

    def _extend(self, deadline: float, suspended_at: float) -> None:
        if deadline > self._deadline and self._reason is None:
            self._deadline = deadline
            self._suspended_at = suspended_at
            for scope in self._scopes:
                scope.deadline = deadline

    def _end(self, reason: str) -> None:
        if self._reason is not None:
            return
        now = _clock.now()
        # Once the deadline has passed, that is why the term ended, whatever was noticed later.
        self._reason = "deadline" if self._time_is_up(now) else reason
        self.ended_at = min(now, self._deadline)
        for scope in self._scopes:
            scope.cancel()
        self.ended.set()

    async def _wait_work_done(self) -> None:
        await self._work_done.wait()

    def _open_scope(self) -> anyio.CancelScope:
        scope = anyio.CancelScope(deadline=self._deadline)
        if self._reason is not None:
            scope.cancel()
        self._scopes.append(scope)
        if self._first_scope is None:
            self._first_scope = scope
        if self._open_blocks == 0:
            self._work_done = Flag()
        self._open_blocks += 1
        return scope

    def _close_scope(self, scope: anyio.CancelScope) -> None:
        self._scopes.remove(scope)
        self._open_blocks -= 1
        if self._open_blocks == 0:
            self._work_done.set()


@final
class _Leading:
    """``async with leadership.leading() as term``: wait for a term, run the body in its scope."""

    def __init__(
        self,
        leadership: Leadership,
        *,
        term: Term | None = None,
        scope: anyio.CancelScope | None = None,
    ) -> None:
        # The elector passes a term and a scope it already opened (on_started_leading); users get
        # the current term once there is one.
        self._leadership = leadership
        self._term = term
        self._scope = scope

    async def __aenter__(self) -> Term:
        if self._term is None:
            while True:
                # No checkpoint between wait_term()'s check and opening the scope: the term cannot
                # end in between, so the body never starts in a term that is already over.
                term = await self._leadership.wait_term()
                scope = term._open_scope()
                if term._reason is None:
                    break
                term._close_scope(scope)
            self._term, self._scope = term, scope
        term = self._term
        if self._scope is None:
            self._scope = term._open_scope()
        scope = self._scope
        try:
            scope.__enter__()
        except BaseException:
            term._close_scope(scope)
            raise
        return term

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._term is not None
        assert self._scope is not None
        try:
            return self._scope.__exit__(exc_type, exc, tb)
        finally:
            self._term._close_scope(self._scope)


@final
@dataclass(frozen=True)
class LeadershipStatistics:
    """A snapshot of an election (``leadership.statistics()``), in the manner of anyio's
    ``EventStatistics``. Times are ``_clock.now()`` values."""

    lock: str
    identity: str
    is_leader: bool
    leader: str | None
    term: int
    fencing_token: int | None
    terms: int
    leader_changes: int
    acquire_attempts: int
    renewals: int
    renew_failures: int
    slow_path: int
    last_renew_at: float | None
    last_error: str | None
    #: What the election's hooks (``hooks=``) report as not applied; never a reason to fail health.
    hook_problems: tuple[str, ...] = ()
    #: The worst event-loop lag (seconds a due wake-up ran late) in the last minute, measured by
    #: the loop's one monitor (`aioleader._looplag`).
    loop_lag: float = 0.0


@final
class Leadership(metaclass=_NoPublicConstructor):
    """The handle ``elect()`` yields and ``campaign()`` starts with.

    ::

        async with elect(lock) as leadership:
            async with leadership.leading() as term:   # waits until this candidate leads
                await leader_only_work(term.fencing_token)
            # leading() left: the term ended (or the body finished); campaigning goes on
    """

    def _init(self, election: ElectionState) -> None:
        self._election = election
        self._acquired = anyio.Event()
        self._term: Term | None = None
        self._closed = Flag()

    def __repr__(self) -> str:
        return (
            f"<Leadership {self._election.description} identity={self.identity!r} "
            f"leader={self.leader!r}>"
        )

    @property
    def identity(self) -> str:
        """This candidate's identity (the lock's ``identity``)."""
        return self._election.identity

    @property
    def acquired(self) -> anyio.Event:
        """Set when the current term began; after a loss, a fresh unset Event for the next one."""
        return self._acquired

    @property
    def term(self) -> Term | None:
        """The current term, or the last one (check ``term.active``), or ``None``."""
        return self._term

    @property
    def leader(self) -> str | None:
        """The holder identity last observed in the lock (``None`` if free or not read yet)."""
        return self._election.observed_holder or None

    def is_leader_nowait(self) -> bool:
        """Whether this candidate leads right now, by the local view (never blocks)."""
        term = self._term
        return term is not None and term.active

    async def is_leader(self, *, confirm: bool = False) -> bool:
        """Whether this candidate leads.

        With ``confirm=True`` the lock is re-read (one request, bounded by what is left of the
        renew window) and the answer is True only if the fresh record still names us *and* the
        term is active. A record naming somebody else ends the term at once.
        """
        await anyio.lowlevel.checkpoint()
        if not confirm or not self.is_leader_nowait():
            return self.is_leader_nowait()
        return await self._election.confirm()

    async def wait_term(self) -> Term:
        """Wait until this candidate leads and return the active term.

        The term is active when this returns (the check is the last thing before returning).
        """
        await anyio.lowlevel.checkpoint()
        while True:
            term = self._term
            if term is not None and term.active:
                return term
            if term is not None and term._reason is None and self._acquired.is_set():
                # Past its deadline, not yet ended by the elector (which runs at the same
                # instant): wait for that rather than spinning.
                await term.ended.wait()
                continue
            if self._closed.is_set():
                raise ElectionError(f"the election for {self._election.description} has ended")
            event = self._acquired
            async with anyio.create_task_group() as tg:
                # Wake on whichever comes first: a new term, or the end of the election.
                async def _closed() -> None:
                    await self._closed.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(_closed)
                await event.wait()
                tg.cancel_scope.cancel()

    def leading(self) -> AbstractAsyncContextManager[Term]:
        """Wait until leader, then run the body inside the term's cancel scope.

        The scope's deadline is *last successful renew send time + renew_deadline* and it moves
        with every renewal; it is cancelled at once when the lock is seen to name another holder.
        When the body is cancelled that way the block exits normally: check
        ``await leadership.is_leader()`` or ``term.end_reason`` afterwards.
        """
        return _Leading(self)

    async def step_down(self, *, cooldown: float | None = None) -> None:
        """End the current term and let another candidate take over.

        The leader work is cancelled and awaited, the lock is released, and this candidate stays
        out of the race for ``cooldown`` seconds (default: the lease duration), so a follower
        takes over (at once when it watches the lock). Returns once the release is written (at
        once if this candidate does not lead; the cooldown applies anyway). The ended term's
        ``end_reason`` is ``"stepped down"``.

        Raises:
            ValueError: ``cooldown`` is not a number of seconds >= 0.
        """
        await anyio.lowlevel.checkpoint()
        await self._election.step_down(cooldown)

    def pause(self) -> None:
        """Stop campaigning until [`resume()`][resume] (a leader steps down: its term ends with
        ``"stepped down"`` and the lock is released once its work has finished)."""
        self._election.pause()

    def resume(self) -> None:
        """Campaign again after [`pause()`][pause] (an attempt at once if the lock is free)."""
        self._election.resume()

    @property
    def paused(self) -> bool:
        """True while paused, or while the ``ready`` signal says the service is not ready."""
        return self._election.paused

    def healthy(self, tolerance: float = 0.0) -> bool:
        """client-go's ``HealthzAdaptor``: unhealthy only when we believe we lead but have not
        renewed for ``lease_duration + tolerance`` seconds (a stuck elector). Standbys are healthy."""
        return self.health_problem(tolerance) is None

    def health_problem(self, tolerance: float = 0.0) -> str | None:
        """Why this election is unhealthy (see [`healthy()`][healthy]), or ``None``."""
        return self._election.health_problem(tolerance)

    def statistics(self) -> LeadershipStatistics:
        """A frozen snapshot of the election's counters and state."""
        return self._election.statistics()

    # -- elector side ------------------------------------------------------------------------------

    def _begin(self, term: Term) -> None:
        self._term = term
        self._acquired.set()

    def _after_end(self) -> None:
        if self._acquired.is_set():
            self._acquired = anyio.Event()

    def _close(self) -> None:
        self._closed.set()
