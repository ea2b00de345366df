"""The options of an election, written once (client-go's ``LeaderElectionConfig``).

[`elect()`][aioleader.elect] and [`campaign()`][aioleader.campaign] take the same keyword options, typed by
[`ElectionOptions`][ElectionOptions]; [`ElectionConfig.build()`][ElectionConfig.build] validates them in one place, in the caller's
frame, and the elector receives the frozen result whole.
"""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypedDict, runtime_checkable

from anyio.abc import TaskStatus

from ._leadership import Term  # at run time too: typing.get_type_hints(ElectionOptions)
from ._lock import Lock
from ._metrics import ElectionMetrics
from ._timing import Timing

__all__ = ["Candidacy", "ElectionConfig", "ElectionOptions", "TermHook"]

#: The jitter source of elections given no ``rng``: one per process (a Mersenne Twister's state is
#: 2.5 KiB, more than the rest of a following election), re-seeded in a forked child so that
#: replicas forked from one parent do not draw the same retry times.
_JITTER: Final = random.Random()
os.register_at_fork(after_in_child=_JITTER.seed)

StartedCallback = (
    Callable[["Term"], Awaitable[object] | object] | Callable[[], Awaitable[object] | object]
)
StoppedCallback = StartedCallback
NewLeaderCallback = Callable[[str], Awaitable[object] | object]
ReadySignal = Callable[[], bool | Awaitable[bool]]


@runtime_checkable
class Candidacy(Protocol):
    """A candidacy in a *coordinated* election (KEP-4355), e.g.
    [`aioleader.kubernetes.LeaseCandidate`][aioleader.kubernetes.LeaseCandidate]: an object that announces this candidate to an
    election controller, which then names the lock's holder.

    `keep()` runs for as long as the election does: it publishes the candidate, signals
    ``task_status.started()`` once it exists, keeps it fresh (acknowledging the controller's
    pings), and withdraws it when cancelled. A fatal error (e.g. no such API on the cluster)
    raises [`ElectionError`][aioleader.ElectionError], which ends the election.
    """

    async def keep(self, lock: Lock, *, task_status: TaskStatus[None]) -> None: ...


@runtime_checkable
class TermHook(Protocol):
    """Something outside the lock that follows this candidate's terms, e.g. a Pod role label or
    the leader's EndpointSlice ([`aioleader.kubernetes`][aioleader.kubernetes]), so traffic can be routed to the
    leader alone.

    The elector tells the hook what it wants ([`want()`][want]: ``True`` while a term runs, ``False``
    otherwise); the hook's [`run()`][run] task, started with the election and cancelled at its end,
    converges the outside object to that state and retries on failure, reporting failures itself
    (logs, metrics, `problem()`). A hook never ends a term. At the end of a term the elector
    asks for the standby state and waits for it ([`wait_applied()`][wait_applied], bounded by RD/2) *before*
    the lock is released, so the old leader stops receiving traffic before a new one can exist.
    """

    async def run(self, lock: Lock, *, task_status: TaskStatus[None]) -> None:
        """Apply the standby state (which also clears what a crashed process left), signal
        ``task_status.started()``, then keep the outside object at the wanted state."""
        ...

    def want(self, leading: bool, term: Term | None) -> None:
        """The state to converge to (``term`` is the term that leads, when ``leading``)."""
        ...

    async def wait_applied(self) -> None:
        """Return once the state last wanted has been applied."""
        ...

    def problem(self) -> str | None:
        """Why the outside object is not at the wanted state (e.g. the last patch failed)."""
        ...


class ElectionOptions(TypedDict, total=False):
    """The keyword options of [`elect()`][aioleader.elect] and [`campaign()`][aioleader.campaign].

    Attributes:
        timing: lease duration, renew deadline and retry period (default: ``Timing()``, 15/10/2).
        release_on_cancel: release the lock when the election ends, after leader work has
            finished (default ``True``); the next candidate then takes over at once instead of
            after the lease duration.
        on_started_leading: called when a term starts, as leader work inside the term's cancel
            scope; sync or async, with the [`Term`][aioleader.Term] or with no argument.
        on_stopped_leading: called after a term's work has finished (and after the release);
            sync or async, with the term or with no argument. On the shutdown path it is
            bounded by the renew deadline.
        on_new_leader: called with the new holder's identity (``""``: nobody leads) whenever the
            observed holder changes; callbacks run in order in a task of their own.
        rng: the source of retry jitter (reproducible tests).
        name: the label of logs and metrics (default: the lock's ``describe()``).
        metrics: receives the elector's measurements (e.g. [`PrometheusMetrics`][aioleader.PrometheusMetrics]).
        watch: followers watch the lock when it supports watches (default ``True``); ``False``
            polls every ``retry_period × uniform(1, 1 + jitter)`` as client-go does.
        max_term: rotate the leader: a term that has lasted this many seconds steps down (work
            cancelled and awaited, lock released) and this candidate stays out of the race for
            ``(1 + jitter) × retry_period + retry_period``, long enough for a polling follower
            to take over (default ``None``: terms last as long as renewals succeed).
        ready: campaign only while this says the service is ready: a callable returning a bool
            (or an awaitable of one), asked before the first attempt and every retry period. A
            leader that stops being ready steps down; a candidate that is not ready does not
            campaign. An exception counts as "not ready" (and is logged).
        candidate: make the election *coordinated* (KEP-4355): the candidacy (e.g. a
            [`LeaseCandidate`][aioleader.kubernetes.LeaseCandidate]) is published while the election runs,
            and the elector never takes the lock itself: it leads when the election controller
            names it, then renews as usual (deadline, bounded requests, a fencing token that
            strictly increases). A leader whose lock names another ``preferredHolder`` hands
            over at once (client-go lets its lease expire).
        hooks: [TermHook][aioleader.TermHook] objects that follow this candidate's terms
            outside the lock (e.g. [`aioleader.kubernetes.PodRoleLabel`][aioleader.kubernetes.PodRoleLabel]): told when a term
            starts, and waited for (bounded by RD/2) before the lock is released at its end.
    """

    timing: Timing | None
    release_on_cancel: bool
    on_started_leading: StartedCallback | None
    on_stopped_leading: StoppedCallback | None
    on_new_leader: NewLeaderCallback | None
    rng: random.Random | None
    name: str | None
    metrics: ElectionMetrics | None
    watch: bool
    max_term: float | None
    ready: ReadySignal | None
    candidate: Candidacy | None
    hooks: Sequence[TermHook]


_OPTION_NAMES = frozenset(ElectionOptions.__annotations__)


@dataclass(frozen=True)
class ElectionConfig:
    """One election's validated options. Built by [`build()`][build]; read by the elector."""

    lock: Lock
    timing: Timing
    release_on_cancel: bool
    on_started_leading: Callable[[Term], Awaitable[object] | object] | None
    on_stopped_leading: Callable[[Term], Awaitable[object] | object] | None
    on_new_leader: NewLeaderCallback | None
    rng: random.Random
    name: str
    metrics: ElectionMetrics | None
    watch: bool
    max_term: float | None
    ready: ReadySignal | None
    candidate: Candidacy | None
    hooks: tuple[TermHook, ...]

    @classmethod
    def build(cls, lock: Lock, options: ElectionOptions | dict[str, Any]) -> ElectionConfig:
        """Validate ``options`` for ``lock``; raises ``TypeError``/``ValueError`` naming the option."""
        if not isinstance(lock, Lock):
            raise TypeError(f"lock must be an aioleader Lock, got {type(lock).__name__}")
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise TypeError(
                f"unknown election option {unknown[0]!r} (options: {', '.join(sorted(_OPTION_NAMES))})"
            )
        timing = options.get("timing")
        if timing is None:
            timing = Timing()
        elif not isinstance(timing, Timing):
            raise TypeError(f"timing must be an aioleader.Timing, got {type(timing).__name__}")
        for flag in ("release_on_cancel", "watch"):
            value = options.get(flag, True)
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        max_term = options.get("max_term")
        if max_term is not None:
            if isinstance(max_term, bool) or not isinstance(max_term, int | float):
                raise TypeError(f"max_term must be a number of seconds, got {max_term!r}")
            if not max_term > timing.retry_period:
                raise ValueError(
                    f"max_term must be longer than the retry period ({timing.retry_period:g}s), "
                    f"got {max_term!r}"
                )
        for callback in ("on_started_leading", "on_stopped_leading", "on_new_leader", "ready"):
            value = options.get(callback)
            if value is not None and not callable(value):
                raise TypeError(f"{callback} must be callable, got {type(value).__name__}")
        candidate = options.get("candidate")
        if candidate is not None and not isinstance(candidate, Candidacy):
            raise TypeError(
                f"candidate must be a candidacy such as aioleader.kubernetes.LeaseCandidate, "
                f"got {type(candidate).__name__}"
            )
        hooks = tuple(options.get("hooks", ()))
        for hook in hooks:
            if not isinstance(hook, TermHook):
                raise TypeError(
                    f"hooks must be TermHook objects (run, want, wait_applied, problem), "
                    f"got {type(hook).__name__}"
                )
        name = options.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        rng = options.get("rng")
        return cls(
            lock=lock,
            timing=timing,
            release_on_cancel=options.get("release_on_cancel", True),
            on_started_leading=_with_term(options.get("on_started_leading")),
            on_stopped_leading=_with_term(options.get("on_stopped_leading")),
            on_new_leader=options.get("on_new_leader"),
            rng=rng if rng is not None else _JITTER,
            name=name if name is not None else lock.describe(),
            metrics=options.get("metrics"),
            watch=options.get("watch", True),
            max_term=max_term,
            ready=options.get("ready"),
            candidate=candidate,
            hooks=hooks,
        )


def _with_term(
    callback: StartedCallback | None,
) -> Callable[[Term], Awaitable[object] | object] | None:
    """Term callbacks may take the term or nothing (client-go's ``OnStartedLeading(ctx)`` ports
    naturally to a zero-argument coroutine function)."""
    if callback is None:
        return None
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: pass the term
        return callback  # type: ignore[return-value]
    takes_one = any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )
    if takes_one:
        return callback  # type: ignore[return-value]
    bare: Callable[[], Awaitable[object] | object] = callback  # type: ignore[assignment]
    return lambda term: bare()
