"""A graceful stop on SIGTERM and SIGINT, opt-in: signals become cancellation of a scope.

Kubernetes stops a pod with SIGTERM. A Python process whose SIGTERM disposition is the default
dies on it at once: no leader work is cancelled, no lock released, and the other replicas wait
out the lease duration. Turning the signal into cancellation of the block that runs the election
makes ``elect()`` (or ``campaign``) leave the way it does on any cancellation: leader work
cancelled and awaited, then the lock released, so that the next leader starts at once.

A library must not install signal handlers behind the application's back, so nothing here
happens unless the application asks for it, for the signals it names, for as long as the block
(or task) lasts. The previous handlers are put back as soon as the first signal arrives (or the
block ends), so that a second signal meets the disposition the process had before.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Final, final

import anyio
import anyio.abc

__all__ = ["StopOnSignals", "cancel_on_signals", "stop_on_signals"]

logger = logging.getLogger("aioleader")

#: What a pod gets from the kubelet (SIGTERM) and a terminal from Ctrl+C (SIGINT).
DEFAULT_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _signals(signals: tuple[int, ...]) -> tuple[signal.Signals, ...]:
    if not signals:
        return DEFAULT_SIGNALS
    chosen: list[signal.Signals] = []
    for signum in signals:
        if isinstance(signum, bool) or not isinstance(signum, int):
            raise TypeError(f"signals must be signal numbers (e.g. signal.SIGTERM), got {signum!r}")
        try:
            chosen.append(signal.Signals(signum))
        except ValueError:
            raise ValueError(f"{signum!r} is not a signal number") from None
    return tuple(dict.fromkeys(chosen))


async def cancel_on_signals(
    scope: anyio.CancelScope,
    *signals: int,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> signal.Signals:
    """Wait for the first of ``signals`` (default SIGTERM and SIGINT), cancel ``scope``, return it.

    Synopsis::

        async with anyio.create_task_group() as tg:
            await tg.start(aioleader.cancel_on_signals, tg.cancel_scope)
            leadership = await tg.start(aioleader.campaign, lock)
            ...

    With ``tg.start`` the handlers are in place when it returns. Only the signals named are
    handled, and only until the first of them arrives (or the task is cancelled): then the
    handlers that were there before are put back. So a second signal during a slow stop gets the
    process's previous disposition: by default a second SIGTERM ends the process at once (no
    release: the others take over after the lease duration), and a second Ctrl+C interrupts the
    stop (``KeyboardInterrupt``).

    Works on asyncio and trio, in the main thread only (a limit of Python's signal handling).
    On asyncio, a handler the application registered with ``loop.add_signal_handler`` for one of
    these signals is replaced, not restored: use this helper instead of such a handler.
    """
    chosen = _signals(signals)
    previous: dict[signal.Signals, _Handler] = {s: signal.getsignal(s) for s in chosen}
    try:
        with anyio.open_signal_receiver(*chosen) as received:
            task_status.started()
            stopped = signal.Signals(await anext(received))
    finally:
        # asyncio's remove_signal_handler installs SIG_DFL (or default_int_handler), not what
        # was there before; trio restores by itself. Put back exactly what we found.
        for s, handler in previous.items():
            if handler is not None and signal.getsignal(s) is not handler:
                signal.signal(s, handler)
    logger.info(
        "%s: stopping gracefully (a second signal is handled as before aioleader took it)",
        stopped.name,
        extra={"signal": stopped.name},
    )
    scope.cancel()
    return stopped


@final
class StopOnSignals:
    """The block of [`stop_on_signals()`][stop_on_signals]; ``signal`` says which signal stopped it, if any."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self._signals = _signals(signals)
        self._scope = anyio.CancelScope()
        self._group: anyio.abc.TaskGroup | None = None
        self._received: signal.Signals | None = None

    @property
    def signal(self) -> signal.Signals | None:
        """The signal that cancelled the block, ``None`` while none has arrived."""
        return self._received

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        """The scope the body runs in; cancelling it stops the block as a signal would."""
        return self._scope

    async def _watch(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._received = await cancel_on_signals(
            self._scope, *self._signals, task_status=task_status
        )

    async def __aenter__(self) -> StopOnSignals:
        if self._group is not None:
            raise RuntimeError("stop_on_signals() blocks cannot be entered twice")
        group = anyio.create_task_group()
        await group.__aenter__()
        try:
            await group.start(self._watch)
        except BaseException:
            await group.__aexit__(*sys.exc_info())
            raise
        self._group = group
        self._scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        group = self._group
        assert group is not None
        try:
            suppressed = bool(self._scope.__exit__(exc_type, exc, tb))
        finally:
            # The watcher never fails once started, so the body's exception (if any) is the
            # only one: keep it out of the group, which would wrap it in an ExceptionGroup.
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
        return suppressed


def stop_on_signals(*signals: int) -> StopOnSignals:
    """A block that ends gracefully on the first of ``signals`` (default SIGTERM and SIGINT).

    Synopsis::

        async with aioleader.stop_on_signals(), lock, aioleader.elect(lock) as leadership:
            ...  # SIGTERM: leader work cancelled and awaited, the lock released, block left

    The body runs in a cancel scope that the first signal cancels: everything in it unwinds as
    on any cancellation (``elect()`` cancels the leader work, awaits it and releases the lock),
    then the block is left normally, so the program goes on after it and can exit with 0.
    Use it outermost, around the lock and the election. ``stopping.signal`` says which signal
    arrived (``None`` if the block ended otherwise).

    Handlers are installed on entry, for the signals named only, and the previous ones are put
    back on the first signal or on exit, whichever comes first: a second signal during a slow
    stop meets the process's previous disposition (by default SIGTERM ends it at once, without
    a release; Ctrl+C raises ``KeyboardInterrupt``). See [`cancel_on_signals()`][cancel_on_signals] for the
    task-group form. Works on asyncio and trio, in the main thread.
    """
    return StopOnSignals(signals)
