"""The sidecar: run a command only while this process leads (``aioleader run … -- CMD``).

The command's whole process tree is owned, not just its first process:

* The command runs in a session (and so a process group) of its own, started by a guardian
  process (``_guardian.py``) that the wrapper starts first and feeds the term's deadline after
  every renewal. Every signal the wrapper sends goes to the whole group.
* The guardian stops the group (SIGTERM, SIGKILL after the grace period) when the deadline passes,
  when the wrapper dies by any signal (SIGKILL included; ``PR_SET_PDEATHSIG`` and EOF on its
  pipe), or when the wrapper asks, so a wrapper that is frozen or killed stops nothing from
  happening. The SIGKILL comes no later than ``term.deadline + (LD - RD) / 2``, which is
  ``(LD - RD) / 2`` before the earliest moment another replica may take over; the grace period
  is at most ``(LD - RD) / 2`` for that reason (its default).
* The lock is released only once no live process is left in the group (not when the launcher,
  e.g. ``sh -c``, has exited and its children have not).

Signals: SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGUSR2 are forwarded to the command's process
group while it runs (the command decides: its exit ends the term, and the lock is released);
while not leading, each of them stops the wrapper (released if held, exit 0). SIGUSR1 means "step
down" ([`step_down()`][aioleader.Leadership.step_down]): a leader stops the command (SIGTERM, SIGKILL after
the grace period), releases the lock so that another replica takes over at once, and exits with
code 3 (the container restarts and campaigns again); a candidate that is not leading stays out of
the race for the cooldown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from ._election import campaign
from ._guardian import group_alive
from ._leadership import Leadership, Term
from ._lock import Lock
from ._options import Candidacy
from ._reachability import ApiMonitor
from ._timing import Timing

__all__ = ["EXIT_FATAL", "EXIT_LOST", "FORWARDED_SIGNALS", "Sidecar", "max_grace_period"]

EXIT_LOST = 3
EXIT_FATAL = 4
#: Forwarded to the command's process group while it runs; a stop while not leading.
FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR2,
)
_GUARDIAN = Path(__file__).with_name("_guardian.py")
_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


def max_grace_period(timing: Timing) -> float:
    """The longest grace period (and the default): ``(LD - RD) / 2``, so that the SIGKILL leaves
    at least that margin before another replica may take over."""
    return (timing.lease_duration - timing.renew_deadline) / 2


def _say(message: str) -> None:
    print(f"aioleader: {message}", file=sys.stderr, flush=True)


def _monotonic(when: float) -> float:
    """``anyio.current_time()`` as ``CLOCK_MONOTONIC`` (equal on asyncio; trio's clock has an
    offset), which the guardian shares with us."""
    return when - anyio.current_time() + time.monotonic()


class _Guardian:
    """The wrapper's end of the guardian process and of the command's process group."""

    def __init__(self, process: Process, grace: float) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.grace = grace
        self._reader = BufferedByteReceiveStream(process.stdout)
        self.pgid: int | None = None
        self.error: str | None = None
        #: Exit code when the command could not be started: 127 not found, 126 not runnable.
        self.start_failure = EXIT_FATAL
        self.exit_code: int | None = None
        self.empty = False
        self.eof = False

    @classmethod
    async def start(
        cls,
        cmd: Sequence[str],
        *,
        env: dict[str, str],
        deadline: float,
        grace: float,
        margin: float,
    ) -> _Guardian:
        passed: dict[str, int] = {}
        for name, fd in (("--stdin-fd", 0), ("--stdout-fd", 1)):
            with contextlib.suppress(OSError):  # a closed stdin/stdout stays closed
                passed[name] = os.dup(fd)
        try:
            # -I -S: only the standard library, no site: up in milliseconds.
            argv = [sys.executable, "-I", "-S", str(_GUARDIAN)]
            argv += ["--deadline", repr(deadline), "--grace", repr(grace)]
            argv += ["--margin", repr(margin), "--parent", str(os.getpid())]
            for name, fd in passed.items():
                argv += [name, str(fd)]
            process = await anyio.open_process(
                [*argv, "--", *cmd],
                stdin=PIPE,
                stdout=PIPE,
                stderr=None,
                env=env,
                # Its own session: a signal to the wrapper's group does not reach it.
                start_new_session=True,
                pass_fds=tuple(passed.values()),
            )
        finally:
            for fd in passed.values():
                os.close(fd)
        return cls(process, grace)

    async def _next(self) -> bool:
        """Read one report; False at EOF (the guardian has exited)."""
        if self.eof:
            return False
        try:
            line = (await self._reader.receive_until(b"\n", 65536)).decode(errors="replace")
        except _STREAM_ERRORS:
            self.eof = True
            return False
        word, _, value = line.partition(" ")
        if word == "started":
            self.pgid = int(value)
        elif word == "error":
            code, _, message = value.partition(" ")
            if code.isdigit():
                self.start_failure, value = int(code), message
            self.error = value
        elif word == "exited":
            self.exit_code = int(value)
        elif word == "empty":
            self.empty = True
        return True

    async def wait_started(self) -> bool:
        while self.pgid is None and self.error is None:
            if not await self._next():
                self.error = self.error or "the guardian exited before starting the command"
        return self.pgid is not None

    async def wait_exited(self) -> int | None:
        """The command's exit code (negative: killed by that signal); None if the guardian died."""
        while self.exit_code is None:
            if not await self._next():
                return None
        return self.exit_code

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self.process.stdin.send(f"{line}\n".encode())

    def signal(self, signum: int) -> None:
        if self.pgid is not None and not self.empty:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signum)

    async def close(self) -> None:
        """Stop what is left of the group, wait until nothing of it is alive, reap the guardian.
        Call shielded: the lock must not be released before this returns."""
        pgid = self.pgid
        if pgid is not None and not self.empty and group_alive(pgid):
            _say(
                f"stopping the command: SIGTERM to its process group, SIGKILL after {self.grace:g}s"
            )
        await self.send("stop")
        with anyio.move_on_after(self.grace + 2.0):
            while not self.empty and await self._next():
                pass
        if pgid is not None and not self.empty and group_alive(pgid):
            # The guardian is gone (or hung): do its work, without its clock.
            _say("the guardian did not stop the command: doing it (SIGTERM, then SIGKILL)")
            self.signal(signal.SIGTERM)
            with anyio.move_on_after(self.grace):
                await _wait_empty(pgid)
            self.signal(signal.SIGKILL)
        if self.process.returncode is None:
            with anyio.move_on_after(1.0):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
        await self.process.wait()
        if pgid is not None:
            # Unbounded on purpose: a process stuck in uninterruptible sleep is still the
            # leader's work, and we keep leading (renewing) until it is gone.
            with anyio.move_on_after(1.0):
                await _wait_empty(pgid)
            if group_alive(pgid):
                _say(f"process group {pgid} still has live processes after SIGKILL; waiting")
                await _wait_empty(pgid)
        await self.process.aclose()


async def _wait_empty(pgid: int) -> None:
    while True:
        if not group_alive(pgid):
            return
        await anyio.sleep(0.01)


class Sidecar:
    """Campaign for ``lock``; while leading, run ``cmd`` (see the module docstring)."""

    def __init__(
        self,
        lock: Lock,
        cmd: Sequence[str],
        *,
        timing: Timing,
        grace_period: float | None = None,
        metrics: Any = None,
        healthz: tuple[str, int] | None = None,
        hooks: Sequence[Any] = (),
        probe_lock: Callable[[], Lock] | None = None,
        candidate: Candidacy | None = None,
    ) -> None:
        limit = max_grace_period(timing)
        grace = limit if grace_period is None else grace_period
        if not 0 <= grace <= limit:
            raise ValueError(
                f"grace_period must be between 0 and (lease_duration - renew_deadline) / 2 = "
                f"{limit:g}, got {grace:g}"
            )
        self.lock = lock
        self.cmd = list(cmd)
        self.timing = timing
        self.grace = grace
        self.metrics = metrics
        self.healthz = healthz
        self.hooks = tuple(hooks)
        self.leadership: Leadership | None = None
        # Reports the API's state (one line per change); its probe reads through a lock of its
        # own. Quiet: longer than the longest gap between two failures of an election whose
        # requests keep failing (an attempt every RP × (1 + jitter), each bounded by RD).
        self.monitor = (
            None
            if probe_lock is None
            else ApiMonitor(
                _say,
                probe_lock=probe_lock,
                interval=timing.retry_period,
                timeout=timing.renew_deadline / 2,
                quiet=timing.retry_period * (1 + timing.jitter) + timing.renew_deadline,
                inner=metrics,
            )
        )
        self._holder = ""
        self.candidate = candidate
        self.guardian: _Guardian | None = None
        self.pending: list[int] = []
        self.exit_code: int | None = None

    async def run(self) -> int:
        """Campaign, run the command while leading, and return the exit code of ``aioleader run``."""
        async with self.lock, anyio.create_task_group() as tg:
            tg.start_soon(self._signals, tg.cancel_scope)
            monitor = self.monitor
            if monitor is not None:
                tg.start_soon(monitor.probe)
            leadership: Leadership = await tg.start(
                lambda task_status: campaign(
                    self.lock,
                    timing=self.timing,
                    metrics=self.metrics if monitor is None else monitor,
                    hooks=self.hooks,
                    on_new_leader=self._new_leader,
                    candidate=self.candidate,
                    task_status=task_status,
                )
            )
            self.leadership = leadership
            if monitor is not None:
                monitor.bind(lambda: leadership.statistics().last_error)
            if self.healthz is not None:
                from ._health import serve_healthz

                host, port = self.healthz
                await tg.start(serve_healthz, host, port, lambda: [leadership])
            async with leadership.leading() as term:
                _say(f"leading (fencing token {term.fencing_token}): starting {' '.join(self.cmd)}")
                await self._lead(term)
            if self.exit_code is None:
                # The term's scope was cancelled: leadership lost; the group is already empty.
                _say(f"leadership lost ({term.end_reason}); exiting with code {EXIT_LOST}")
                self.exit_code = EXIT_LOST
            tg.cancel_scope.cancel()  # stop campaigning: releases the lock if still ours
        return 0 if self.exit_code is None else self.exit_code

    def _new_leader(self, holder: str) -> None:
        """``on_new_leader``: say who leads (our own term is told by the "leading" line)."""
        if self.monitor is not None:
            self.monitor.answered()
        previous, self._holder = self._holder, holder
        if holder == self.lock.identity:
            return
        if not holder and previous == self.lock.identity:
            _say("lock released: nobody leads")
        else:
            _say(f"{holder or 'nobody'} leads")

    async def _lead(self, term: Term) -> None:
        env = {
            **os.environ,
            "AIOLEADER_FENCING_TOKEN": str(term.fencing_token),
            "AIOLEADER_IDENTITY": self.lock.identity,
        }
        guardian: _Guardian | None = None
        try:
            guardian = self.guardian = await _Guardian.start(
                self.cmd,
                env=env,
                deadline=_monotonic(term.deadline),
                grace=self.grace,
                margin=max_grace_period(self.timing),
            )
            if not await guardian.wait_started():
                _say(f"cannot run the command: {guardian.error}")
                self.exit_code = guardian.start_failure
                return
            for signum in self.pending:
                self._forward(guardian, signum)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed, term, guardian)
                code = await guardian.wait_exited()
                tg.cancel_scope.cancel()
            if code is None:
                _say("the guardian exited unexpectedly; stopping the command")
                self.exit_code = EXIT_FATAL
            else:
                self.exit_code = code if code >= 0 else 128 - code
                _say(f"command exited with code {self.exit_code}")
        finally:
            if guardian is not None:
                with anyio.CancelScope(shield=True):
                    await guardian.close()
            self.guardian = None

    async def _feed(self, term: Term, guardian: _Guardian) -> None:
        """Tell the guardian every new deadline (a renewal moved it forward)."""
        interval = min(0.25, self.timing.retry_period / 4)
        sent = term.deadline
        while True:
            await anyio.sleep(interval)
            deadline = term.deadline
            if deadline != sent:
                await guardian.send(f"deadline {_monotonic(deadline)!r}")
                sent = deadline

    def _forward(self, guardian: _Guardian, signum: int) -> None:
        _say(f"{signal.Signals(signum).name}: forwarding to the command's process group")
        guardian.signal(signum)

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(*FORWARDED_SIGNALS, signal.SIGUSR1) as signals:
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    if self.leadership is not None:
                        _say("SIGUSR1: stepping down")
                        await self.leadership.step_down()
                    continue
                guardian = self.guardian
                if guardian is None:
                    _say(f"{signal.Signals(signum).name}: stopping")
                    if self.exit_code is None:
                        self.exit_code = 0
                    scope.cancel()
                    return
                if guardian.pgid is None:
                    self.pending.append(signum)  # forwarded once the command has started
                else:
                    self._forward(guardian, signum)
