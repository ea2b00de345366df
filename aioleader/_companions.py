"""What runs beside an election outside the lock: the candidacy of a coordinated election and the
term hooks (a Pod role label, the leader's EndpointSlice).

Both outlive the campaign's cancellation on purpose: at shutdown the candidacy is withdrawn
*before* the release (withdrawn after it, the controller would name us again at once), and the
hooks are asked for their standby state before the release. The election cancels them itself
once its shutdown is over ([`Companions.cancel()`][Companions.cancel]).
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._flag import Flag
from ._leadership import Term
from ._lock import Lock
from ._options import Candidacy, TermHook

__all__ = ["Companions"]

logger = logging.getLogger("aioleader")


class Companions:
    """The candidacy (if any) and the hooks of one election."""

    def __init__(
        self,
        candidate: Candidacy | None,
        hooks: tuple[TermHook, ...],
        *,
        bound: float,
        description: str,
        log_extra: dict[str, str],
    ) -> None:
        self.candidate = candidate
        self.hooks = hooks
        #: How long a withdrawal may take (RD); the hooks' standby gets half of it.
        self.bound = bound
        self.description = description
        self.log_extra = log_extra
        self._scopes: list[anyio.CancelScope] = []
        self._candidacy_scope = anyio.CancelScope()
        self._candidacy_done = Flag()
        if candidate is None:
            self._candidacy_done.set()

    async def start(self, tg: TaskGroup, lock: Lock) -> None:
        """Publish the candidacy and start the hooks (their standby state applied first)."""
        if self.candidate is not None:
            # The candidacy exists before anyone can be told we campaign; shielded once it is.
            await tg.start(self._keep_candidacy, self.candidate, lock)
            self._candidacy_scope.shield = True
        for hook in self.hooks:
            await tg.start(self._run_hook, hook, lock)

    async def _keep_candidacy(
        self, candidate: Candidacy, lock: Lock, *, task_status: TaskStatus[None]
    ) -> None:
        try:
            with self._candidacy_scope:
                await candidate.keep(lock, task_status=task_status)
        finally:
            self._candidacy_done.set()

    async def _run_hook(self, hook: TermHook, lock: Lock, *, task_status: TaskStatus[None]) -> None:
        scope = anyio.CancelScope(shield=True)
        self._scopes.append(scope)
        with scope:
            await hook.run(lock, task_status=task_status)

    def leading(self, term: Term) -> None:
        for hook in self.hooks:
            hook.want(True, term)

    async def standby(self) -> None:
        """Before a release: every hook back at its standby state, or RD/2 spent trying."""
        if not self.hooks:
            return
        for hook in self.hooks:
            hook.want(False, None)
        with anyio.move_on_after(self.bound / 2) as scope:
            for hook in self.hooks:
                await hook.wait_applied()
        if scope.cancelled_caught:
            failing = [type(h).__name__ for h in self.hooks if h.problem() is not None]
            logger.warning(
                "%s: the standby state of %s was not applied within RD/2; releasing anyway",
                self.description,
                ", ".join(failing) or "a hook",
                extra=self.log_extra,
            )

    async def withdraw_candidacy(self) -> None:
        """Stop the candidacy and wait (at most RD) until it is withdrawn."""
        self._candidacy_scope.cancel()
        with anyio.move_on_after(self.bound):
            await self._candidacy_done.wait()

    def problems(self) -> tuple[str, ...]:
        return tuple(p for h in self.hooks if (p := h.problem()) is not None)

    def cancel(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        self._candidacy_scope.cancel()
