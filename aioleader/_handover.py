"""Handing leadership over on purpose: step down, pause/resume, readiness, rotation.

Every voluntary end of a term goes the same way: the candidate stays out of the race for a while
(a *hold* in the decision core, `hold()`), the term ends with
``"stepped down"``, and the election releases the lock once the work has finished, so another
candidate takes over at once instead of after the lease duration.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable

import anyio

from . import _clock
from ._decisions import LockView
from ._flag import Flag
from ._leadership import Term
from ._options import ReadySignal
from ._timing import Timing

__all__ = ["STEPPED_DOWN", "Handover"]

logger = logging.getLogger("aioleader")

#: ``Term.end_reason`` of a term ended on purpose (step_down, pause, not ready, max_term, a
#: preferred holder).
STEPPED_DOWN = "stepped down"


class Handover:
    """The voluntary side of one election (see the module docstring).

    ``current_term`` returns the election's current term (or ``None``); ``end_term`` ends one;
    ``wake`` wakes the acquire loop to re-decide; ``term_closed`` returns the Event that is set
    once the current term's work has finished and its release is written.
    """

    def __init__(
        self,
        view: LockView,
        timing: Timing,
        *,
        ready: ReadySignal | None,
        current_term: Callable[[], Term | None],
        end_term: Callable[[Term, str], None],
        wake: Callable[[], None],
        term_closed: Callable[[], Flag],
        description: str,
        log_extra: dict[str, str],
    ) -> None:
        self.view = view
        self.timing = timing
        self.ready = ready
        self.current_term = current_term
        self.end_term = end_term
        self.wake = wake
        self.term_closed = term_closed
        self.description = description
        self.log_extra = log_extra
        self._paused = False
        self._unready = False

    @property
    def paused(self) -> bool:
        return self._paused or self._unready

    def _log(self, message: str, *args: object) -> None:
        logger.info(
            "%s: %s " + message, self.description, self.view.identity, *args, extra=self.log_extra
        )

    # -- step down --------------------------------------------------------------------------------

    async def step_down(self, cooldown: float | None) -> None:
        """End the current term (work cancelled and awaited, lock released) and stay out of the
        race for ``cooldown`` seconds (default: the lease duration), counted from the release."""
        if cooldown is None:
            cooldown = self.timing.lease_duration
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or not cooldown >= 0:
            raise ValueError(f"cooldown must be a number of seconds >= 0, got {cooldown!r}")
        self.view.hold(math.inf)  # out of the race while the work winds down
        term = self.current_term()
        if term is not None and term.active:
            self._log("steps down")
            closed = self.term_closed()
            self.end_term(term, STEPPED_DOWN)
            await closed.wait()
        self.view.hold(math.inf if self.paused else _clock.now() + cooldown)
        self.wake()

    def hand_over(self, term: Term, why: str) -> None:
        """End ``term`` so that another candidate leads (rotation, a preferred holder): this
        candidate stays out long enough for a polling follower to take over,
        ``(1 + jitter) × RP + RP``."""
        if not term.active:
            return
        self._log("hands over (%s)", why)
        t = self.timing
        rest = (1 + t.jitter) * t.retry_period + t.retry_period
        self.view.hold(max(self.view.held_until, _clock.now() + rest))
        self.end_term(term, STEPPED_DOWN)

    def decline(self, term: Term) -> None:
        """A term began while this candidate was holding off (a pause or a step-down raced with
        an attempt already in flight): end it at once, so it is released."""
        self._log("declines a term won while holding off")
        self.end_term(term, STEPPED_DOWN)

    async def keep_at_most(
        self, term: Term, max_term: float | None, keep: Callable[[Term], Awaitable[None]]
    ) -> None:
        """Run ``keep(term)`` (the renew loop); with ``max_term``, hand over once the term has
        lasted that long."""
        if max_term is None:
            await keep(term)
            return
        with anyio.move_on_after(term.acquired_at + max_term - _clock.now()):
            await keep(term)
            return
        self.hand_over(term, f"rotation after a {max_term:g}s term")

    # -- pause, readiness ---------------------------------------------------------------------------

    def pause(self) -> None:
        self._paused = True
        self._apply()

    def resume(self) -> None:
        self._paused = False
        self._apply()

    def _apply(self) -> None:
        if self.paused:
            self.view.hold(math.inf)
            term = self.current_term()
            if term is not None and term.active:
                self._log("steps down (%s)", "paused" if self._paused else "not ready")
                self.end_term(term, STEPPED_DOWN)
        else:
            self.view.hold(-math.inf)
        self.wake()

    async def check_ready(self) -> None:
        """Ask the ``ready`` signal; an exception counts as "not ready"."""
        assert self.ready is not None
        try:
            value = self.ready()
            if inspect.isawaitable(value):
                value = await value
            ready = bool(value)
        except Exception as exc:
            logger.warning(
                "%s: the readiness check failed (%r): not ready",
                self.description,
                exc,
                extra=self.log_extra,
            )
            ready = False
        if ready == self._unready:
            self._log("is %s", "ready: campaigning" if ready else "not ready: not campaigning")
            self._unready = not ready
            self._apply()

    async def follow_readiness(self) -> None:
        """Re-check readiness every RP, for as long as the election runs."""
        while True:
            await anyio.sleep(self.timing.retry_period)
            await self.check_ready()
