"""The guardian: a small process that owns the ``aioleader run`` command's process group.

The wrapper (``aioleader run``) cannot protect anything once it is dead or frozen, so the command is
not its child: the wrapper starts this guardian (stdlib only, run by path with ``python -I -S``
so that it is up in a few milliseconds), and the guardian starts the command in a session of its
own (its process group id is its pid, known before the command runs: no window in which it is
in nobody's care). Then the guardian

* holds the term's deadline on its own clock (``CLOCK_MONOTONIC`` is system-wide), fed by the
  wrapper after every renewal (deadlines only move forward);
* stops the group (SIGTERM, then SIGKILL after the grace period) when the deadline passes, when
  the wrapper vanishes (``PR_SET_PDEATHSIG`` on Linux, and EOF on its control pipe everywhere),
  or when the wrapper asks it to;
* always sends the SIGKILL no later than ``deadline + margin``, where the wrapper passes
  ``margin = (LD - RD) / 2``: the earliest takeover by another replica is ``deadline + LD - RD``;
* is a child subreaper (Linux): descendants whose parent exits are re-parented to it and reaped
  here, and one that left the group (``setsid()``, a daemon's double fork) is found among its
  children and stopped with the group, with its own group;
* reports ``empty`` only when no live process is left in the group or among its children.

Protocol, one line each way. From the wrapper, on stdin: ``deadline D`` (a later deadline on
``CLOCK_MONOTONIC``) and ``stop``. To the wrapper, on stdout: ``started PGID``, ``error CODE MESSAGE``
(the command could not be started; CODE 127: not found, 126: not runnable), ``exited CODE`` (the command's own process ended; negative:
killed by that signal) and ``empty`` (nothing of the group is left; the guardian then exits 0).

The command's stdin and stdout are the wrapper's, passed as ``--stdin-fd``/``--stdout-fd``;
stderr is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Guard", "escaped", "group_alive"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: How often a group being stopped is checked for members (also after the SIGKILL).
POLL_INTERVAL = 0.01


# -- the decision ------------------------------------------------------------------------------


@dataclass
class Guard:
    """When to send what, as plain values: ``now`` is always an argument.

    ``deadline`` is the term's deadline; ``grace`` the time between SIGTERM and SIGKILL;
    ``margin`` the latest the SIGKILL may come after the deadline (``grace <= margin``).
    """

    deadline: float
    grace: float
    margin: float
    #: Why the group is being stopped (``None`` while it runs).
    reason: str | None = None
    #: When the SIGKILL is due, once stopping.
    kill_at: float | None = None
    killed: bool = False

    def feed(self, deadline: float) -> None:
        """A renewal moved the deadline. Once stopping, nothing moves any more."""
        if self.reason is None:
            self.deadline = max(self.deadline, deadline)

    def expired(self, now: float) -> bool:
        return self.reason is None and now >= self.deadline

    def stop(self, now: float, reason: str) -> bool:
        """Start stopping (the caller sends SIGTERM if this returns True)."""
        if self.reason is not None:
            return False
        self.reason = reason
        self.kill_at = min(now + self.grace, self.deadline + self.margin)
        return True

    def kill_due(self, now: float) -> bool:
        """True once: the caller sends SIGKILL."""
        if self.kill_at is None or self.killed or now < self.kill_at:
            return False
        self.killed = True
        return True

    def timeout(self, now: float) -> float:
        """How long to wait for input before something is due."""
        if self.reason is None:
            return max(0.0, self.deadline - now)
        return POLL_INTERVAL


# -- process groups ----------------------------------------------------------------------------


def _processes() -> list[tuple[int, bytes, int, int]] | None:
    """(pid, state, ppid, pgrp) of every process in /proc; None without /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    found = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3:
            found.append((int(entry), fields[0], int(fields[1]), int(fields[2])))
    return found


def _live(state: bytes) -> bool:
    return state not in (b"Z", b"X")


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is alive. Zombies do no work and do not count:
    one whose parent never reaps it (a PID 1 that is not an init) must not hold the lock."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member we may not signal (it changed its user) is still a member
    processes = _processes()
    if processes is None:
        return True
    return any(pgrp == pgid and _live(state) for _, state, _, pgrp in processes)


def escaped(pgid: int, parent: int) -> dict[int, int]:
    """``{pid: pgid}`` of the live children of ``parent`` outside group ``pgid``.

    The guardian is a child subreaper: a process that left the command's group (``setsid()``,
    a daemon's double fork) is re-parented to it once its own parent exits, and shows up here.
    """
    return {
        pid: pgrp
        for pid, state, ppid, pgrp in _processes() or []
        if ppid == parent and pgrp != pgid and _live(state)
    }


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


# -- the process ---------------------------------------------------------------------------------


def _say(message: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(f"aioleader (guardian): {message}\n")
        sys.stderr.flush()


class _Guardian:
    def __init__(self, args: argparse.Namespace) -> None:
        self.guard = Guard(args.deadline, args.grace, args.margin)
        self.parent: int = args.parent
        self.cmd: list[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else list(args.cmd)
        self.stdin_fd: int | None = args.stdin_fd
        self.stdout_fd: int | None = args.stdout_fd
        self.pgid: int | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.gone: str | None = None
        self.terminated: set[int] = set()

    def report(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a dead wrapper reads nothing
            os.write(1, f"{line}\n".encode())

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.gone is None and signum != signal.SIGCHLD:
            self.gone = (
                "the wrapper died"
                if signum == signal.SIGHUP
                else f"{signal.Signals(signum).name} received"
            )

    def setup(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        # SIGHUP when the wrapper (the thread that started us: its event loop's) exits, by any
        # signal. Checked against a wrapper that died before this line.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
        if os.getppid() != self.parent:
            self.gone = "the wrapper died"
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)

    def launch(self) -> bool:
        if self.gone is not None or self.guard.expired(time.monotonic()):
            self.report("error the term ended before the command started")
            return False

        def in_child() -> None:  # in the command, after setsid(), before exec
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # we die: its first process dies too

        try:
            self.child = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL if self.stdin_fd is None else self.stdin_fd,
                stdout=self.stdout_fd,
                start_new_session=True,
                preexec_fn=in_child,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            # The shells' codes (and env's, timeout's): 127 not found, 126 found but not runnable.
            code = 127 if isinstance(exc, (FileNotFoundError, NotADirectoryError)) else 126
            self.report(f"error {code} {exc}")
            return False
        self.pgid = self.child.pid
        self.report(f"started {self.pgid}")
        return True

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and pid == self.child.pid:
                code = os.waitstatus_to_exitcode(status)
                self.child.returncode = code  # reaped here, not by Popen
                self.report(f"exited {code}")

    def read_control(self) -> None:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if self.gone is None:
                self.gone = "the wrapper died"
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            word, _, value = line.decode(errors="replace").partition(" ")
            if word == "deadline":
                with contextlib.suppress(ValueError):
                    self.guard.feed(float(value))
            elif word == "stop":
                self.begin_stop("stop", quiet=True)

    def begin_stop(self, reason: str, *, quiet: bool = False) -> None:
        assert self.pgid is not None
        now = time.monotonic()
        if not self.guard.stop(now, reason):
            return
        if not quiet:
            assert self.guard.kill_at is not None
            _say(
                f"{reason}: stopping the command (SIGTERM to its process group, SIGKILL after "
                f"{max(0.0, self.guard.kill_at - now):.3g}s)"
            )
        _signal_group(self.pgid, signal.SIGTERM)
        _signal_group(self.pgid, signal.SIGCONT)  # a stopped member must see its SIGTERM

    def stop_escaped(self) -> dict[int, int]:
        """Signal the processes that left the group and were re-parented to us: SIGTERM when
        first seen, SIGKILL once the group's is due (each with its own process group)."""
        assert self.pgid is not None
        found = escaped(self.pgid, os.getpid())
        for pid, pgrp in found.items():
            if self.guard.killed:
                signum = signal.SIGKILL
            elif pid not in self.terminated:
                signum = signal.SIGTERM
                self.terminated.add(pid)
                _say(f"process {pid} left the command's process group: SIGTERM to its group")
            else:
                continue
            _signal_group(pgrp, signum)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        return found

    def run(self) -> int:
        self.setup()
        if not self.launch():
            return 1
        assert self.pgid is not None
        os.set_blocking(0, False)
        while True:
            now = time.monotonic()
            self.reap()
            if self.gone is not None:
                self.begin_stop(self.gone)
            elif self.guard.expired(now):
                self.begin_stop("the term's deadline passed")
            if self.guard.reason is not None:
                if self.guard.kill_due(now):
                    if group_alive(self.pgid):
                        _say("grace period over: SIGKILL to the command's process group")
                    _signal_group(self.pgid, signal.SIGKILL)
                left = self.stop_escaped()
                if not group_alive(self.pgid) and not left:
                    self.reap()
                    self.report("empty")
                    return 0
            watched = [self.wake_r] if self.gone is not None else [0, self.wake_r]
            try:
                readable, _, _ = select.select(watched, [], [], self.guard.timeout(now))
            except InterruptedError:  # pragma: no cover - PEP 475 retries select
                continue
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
            if 0 in readable:
                self.read_control()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aioleader-guardian")
    parser.add_argument("--deadline", type=float, required=True)
    parser.add_argument("--grace", type=float, required=True)
    parser.add_argument("--margin", type=float, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--stdin-fd", type=int)
    parser.add_argument("--stdout-fd", type=int)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return _Guardian(_parser().parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
