"""``aioleader run`` owns its command's whole process tree: real processes, real signals.

Two wrappers, ``a`` and ``b``, campaign on one Lease of the in-process emulator (each on its own
endpoint, so that one can be partitioned). Their commands are workers that append a line per
event and per unit of work (every 20 ms) to one file, stamped with ``time.monotonic()``
(``CLOCK_MONOTONIC`` is shared by every process of the machine). Each scenario asserts that
nothing of the old leader's command (its launcher and the launcher's child) does work after the
new leader's command started, and that the old processes are gone by then.

Timings are short: LD 2 s, RD 1.5 s, RP 0.25 s; so the grace period is (LD - RD) / 2 = 0.25 s and
the guardian's SIGKILL is due at most 0.25 s after the term's deadline, 0.25 s before the earliest
takeover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from _processes import config_for, env, stop, wait_for
from anyio.abc import Process

from aioleader._guardian import Guard, group_alive
from aioleader.testing import KubeEmulator

LD, RD, RP = 2.0, 1.5, 0.25
TIMING = ["--lease-duration", f"{LD:g}", "--renew-deadline", f"{RD:g}", "--retry-period", f"{RP:g}"]
MARGIN = (LD - RD) / 2
# Process scheduling and Python start-up on a loaded machine.
SLACK = 0.5

WORKER = """
import os, signal, sys, time
out, name, role, mode = sys.argv[1:5]
stopping = None
def log(event):
    with open(out, "a") as f:
        f.write(f"{event} {name} {role} {os.getpid()} {os.getpgid(0)} {time.monotonic():.6f}\\n")
def on_term(signum, frame):
    global stopping
    log("sigterm")
    if mode == "normal":
        sys.exit(0)
    if mode == "slow-stop":
        stopping = time.monotonic()
signal.signal(signal.SIGTERM, on_term)
log("started")
while True:
    log("work")
    if stopping is not None and time.monotonic() - stopping > 0.15:
        log("stopped")
        sys.exit(0)
    time.sleep(0.02)
"""


# A launcher that daemonizes its worker (fork, setsid, fork: the worker is in a session of its own
# and its parent exits) and exits 0 once the worker has started.
DAEMONIZE = """
import os, sys, time
out, worker = sys.argv[1], sys.argv[2:]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(worker[0], worker)
    os._exit(0)
with open(out, "a") as f:
    f.write(f"launcher a launcher {os.getpid()} {os.getpgid(0)} {time.monotonic():.6f}\\n")
while " daemon " not in open(out).read():
    time.sleep(0.01)
"""


@dataclass(frozen=True)
class Line:
    event: str
    name: str
    role: str
    pid: int
    pgid: int
    at: float


def read_lines(path: Path) -> list[Line]:
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        parts = text.split()
        if len(parts) == 6:  # else: a line being written
            event, name, role, pid, pgid, at = parts
            lines.append(Line(event, name, role, int(pid), int(pgid), float(at)))
    return lines


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process: a zombie (dead, not yet reaped) does no work."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


@dataclass
class Replicas:
    emu: KubeEmulator
    tmp_path: Path
    lock: str
    out: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def worker(self, name: str, role: str, mode: str = "normal") -> list[str]:
        return [sys.executable, str(self.tmp_path / "worker.py"), str(self.out), name, role, mode]

    def launcher(self, name: str, mode: str = "normal") -> list[str]:
        """``sh -c 'worker & wait'``: a shell that does not exec, with the worker as its child."""
        command = " ".join(self.worker(name, "grandchild", mode))
        return ["sh", "-c", f"{command} & wait"]

    def log(self, name: str) -> str:
        path = self.tmp_path / f"wrapper-{name}.log"
        return path.read_text() if path.exists() else ""

    async def start(
        self, name: str, cmd: list[str], *extra: str, environ: dict[str, str] | None = None
    ) -> Process:
        config = await config_for(self.emu, name, self.tmp_path)
        with (self.tmp_path / f"wrapper-{name}.log").open("w") as sink:
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-m",
                    "aioleader",
                    "run",
                    "--lock",
                    f"lease/default/{self.lock}",
                    "--identity",
                    name,
                    "--kubeconfig",
                    str(config),
                    *TIMING,
                    *extra,
                    "--",
                    *cmd,
                ],
                stdin=None,
                stdout=sink,
                stderr=sink,
                env={**env(), **(environ or {})},
            )
        self.processes[name] = process
        return process

    def lines(self, name: str | None = None) -> list[Line]:
        return [line for line in read_lines(self.out) if name is None or line.name == name]

    async def wait_started(self, name: str, role: str, limit: float = 15) -> Line:
        await wait_for(
            lambda: any(x.event == "started" and x.role == role for x in self.lines(name)), limit
        )
        return next(x for x in self.lines(name) if x.event == "started" and x.role == role)

    async def wait_following(self, name: str) -> None:
        """Until ``name`` has asked the API server about the lock (it campaigns), and a poll."""
        await wait_for(lambda: any(r.client == name for r in self.emu.requests))
        await anyio.sleep(2 * RP)

    def holder(self) -> str | None:
        lease = self.emu.get_object("leases", "default", self.lock)
        return None if lease is None else str(lease["spec"].get("holderIdentity"))

    def assert_handed_over(self, old: str, new: Line) -> list[Line]:
        """Nothing of ``old``'s command worked after ``new`` started."""
        before = self.lines(old)
        assert before, self.log(old)
        last = max(x.at for x in before)
        assert last < new.at, f"{old}'s command worked at {last:.3f} after {new.at:.3f}"
        assert new.name != old
        return before


@asynccontextmanager
async def replicas(emu: KubeEmulator, tmp_path: Path, lock: str) -> AsyncIterator[Replicas]:
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "daemonize.py").write_text(DAEMONIZE)
    r = Replicas(emu, tmp_path, lock, tmp_path / "work.log")
    try:
        yield r
    finally:
        for process in r.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(10):
            for process in r.processes.values():
                await process.wait()
        for process in r.processes.values():
            await stop(process)


async def watch_group(pgid: int, since: float) -> float:
    """Seconds from ``since`` until no live process is left in group ``pgid``."""
    while group_alive(pgid):
        await anyio.sleep(0.002)
    return time.monotonic() - since


# -- the guardian's decisions, on plain values ------------------------------------------------


def test_guard_kills_no_later_than_the_deadline_plus_the_margin() -> None:
    guard = Guard(deadline=100.0, grace=0.25, margin=0.25)
    assert guard.timeout(99.0) == 1.0
    guard.feed(101.5)  # a renewal
    guard.feed(101.0)  # a stale line: deadlines only move forward
    assert guard.deadline == 101.5
    assert not guard.expired(101.4)
    assert guard.expired(101.5)
    assert guard.stop(101.5, "deadline")
    assert guard.kill_at == 101.75
    assert not guard.stop(101.6, "again")  # the first reason stands
    guard.feed(200.0)  # nothing moves once stopping
    assert guard.deadline == 101.5
    assert not guard.kill_due(101.74)
    assert guard.kill_due(101.75)
    assert not guard.kill_due(101.8)  # once


def test_guard_late_trigger_kills_at_once() -> None:
    """A guardian that notices late (the wrapper died just before the deadline, or it was
    itself descheduled) still kills by deadline + margin, cutting the grace period short."""
    guard = Guard(deadline=10.0, grace=0.25, margin=0.25)
    assert guard.stop(10.2, "the wrapper died")
    assert guard.kill_at == 10.25
    late = Guard(deadline=10.0, grace=0.25, margin=0.25)
    assert late.stop(11.0, "the term's deadline passed")
    assert late.kill_at == 10.25
    assert late.kill_due(11.0)
    early = Guard(deadline=10.0, grace=0.1, margin=0.25)
    assert early.stop(5.0, "stop")
    assert early.kill_at == 5.1


def test_grace_period_above_the_margin_is_rejected_naming_the_flag() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aioleader",
            "run",
            "--lock",
            "lease/default/x",
            *TIMING,
            "--grace-period",
            "0.5",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "aioleader: --grace-period 0.5: must be between 0 and (lease duration - renew deadline)"
        " / 2 = 0.25, so that the command is dead before another replica may take over\n"
    )


# -- real processes ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sigkill_of_the_wrapper_pid_ends_the_command_tree(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    async with replicas(emu, tmp_path, "kill") as r:
        a = await r.start("a", r.launcher("a"))
        first = await r.wait_started("a", "grandchild")
        await r.start("b", r.worker("b", "command"))
        await r.wait_following("b")

        killed_at = time.monotonic()
        os.kill(a.pid, signal.SIGKILL)  # the wrapper alone, as the OOM killer does
        dead_after = await watch_group(first.pgid, killed_at)
        assert await a.wait() == -signal.SIGKILL
        print(f"wrapper SIGKILL -> command's group dead: {dead_after * 1000:.0f} ms")
        assert dead_after < MARGIN + SLACK  # SIGTERM from the guardian, at once
        assert not alive(first.pid)
        assert [x.event for x in r.lines("a")][-1] == "sigterm"  # stopped by the guardian

        new = await r.wait_started("b", "command", limit=LD + 10)
        r.assert_handed_over("a", new)
        print(f"wrapper SIGKILL -> next command started: {new.at - killed_at:.2f} s")


@pytest.mark.asyncio
async def test_sighup_to_the_wrapper_ends_the_command_tree(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    async with replicas(emu, tmp_path, "hup") as r:
        a = await r.start("a", r.launcher("a"))
        first = await r.wait_started("a", "grandchild")
        await r.start("b", r.worker("b", "command"))
        await r.wait_following("b")

        os.kill(a.pid, signal.SIGHUP)  # forwarded: the shell and its child die of it
        with anyio.fail_after(10):
            assert await a.wait() == 128 + signal.SIGHUP, r.log("a")
        assert not alive(first.pid)
        assert not group_alive(first.pgid)
        assert "SIGHUP: forwarding to the command's process group" in r.log("a")
        assert r.holder() in ("", "b")  # released (or already taken)

        new = await r.wait_started("b", "command")
        r.assert_handed_over("a", new)


@pytest.mark.asyncio
async def test_sigusr1_steps_down_and_the_pod_label_follows(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    for pod in ("a", "b"):
        emu.put_raw("pods", "default", pod, {"metadata": {"labels": {"role": "leader"}}})

    def role(pod: str) -> str | None:
        obj = emu.get_object("pods", "default", pod)
        assert obj is not None
        value: str | None = obj["metadata"].get("labels", {}).get("role")
        return value

    async with replicas(emu, tmp_path, "usr1") as r:
        label = ("--pod-label", "role=leader,standby")
        a = await r.start(
            "a",
            r.worker("a", "command"),
            *label,
            environ={"POD_NAME": "a", "POD_NAMESPACE": "default"},
        )
        await r.wait_started("a", "command")
        assert role("a") == "leader"
        await r.start(
            "b",
            r.worker("b", "command"),
            *label,
            environ={"POD_NAME": "b", "POD_NAMESPACE": "default"},
        )
        await r.wait_following("b")
        assert role("b") == "standby"  # the stale label cleared at start-up

        os.kill(a.pid, signal.SIGUSR1)
        with anyio.fail_after(10):
            assert await a.wait() == 3, r.log("a")
        assert "SIGUSR1: stepping down" in r.log("a")
        assert "leadership lost (stepped down)" in r.log("a")
        assert role("a") == "standby"
        new = await r.wait_started("b", "command", limit=5)  # released: taken at once
        r.assert_handed_over("a", new)
        await wait_for(lambda: role("b") == "leader")


@pytest.mark.asyncio
async def test_graceful_stop_waits_for_the_launchers_child(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    """``sh -c 'worker & wait'``: on SIGTERM the shell dies at once; its child takes 0.15 s to
    stop, working meanwhile. The lock is released only after that child is gone."""
    async with replicas(emu, tmp_path, "launcher") as r:
        a = await r.start("a", r.launcher("a", "slow-stop"))
        first = await r.wait_started("a", "grandchild")
        await r.start("b", r.worker("b", "command"))
        await r.wait_following("b")

        released_at: list[float] = []

        async def watch_release() -> None:
            while r.holder() == "a":
                await anyio.sleep(0.002)
            released_at.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_release)
            os.kill(a.pid, signal.SIGTERM)
            with anyio.fail_after(10):
                # sh died of the forwarded SIGTERM: 128 + 15.
                assert await a.wait() == 128 + signal.SIGTERM, r.log("a")
        old = r.lines("a")
        assert [x.event for x in old][-1] == "stopped"  # the child's own graceful end
        last = max(x.at for x in old)
        assert last - next(x.at for x in old if x.event == "sigterm") >= 0.15
        assert last < released_at[0], "the lock was released while the child still worked"
        assert not alive(first.pid)
        print(f"child's last work -> lock released: {(released_at[0] - last) * 1000:.0f} ms")

        new = await r.wait_started("b", "command")
        r.assert_handed_over("a", new)


@pytest.mark.asyncio
async def test_command_ignoring_sigterm_is_killed_within_the_bound(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    """Leadership lost by deadline (partition) while the wrapper is alive; the command ignores
    SIGTERM: SIGKILLed by the term's deadline + (LD - RD) / 2, before anyone may take over."""
    async with replicas(emu, tmp_path, "ignore") as r:
        a = await r.start("a", r.launcher("a", "ignore-term"))
        first = await r.wait_started("a", "grandchild")
        await r.start("b", r.worker("b", "command"))
        await r.wait_following("b")

        cut_at = time.monotonic()
        emu.faults("a").partition("blackhole")
        # The last renewal that succeeded was sent at most RP before the cut: the deadline is
        # at most cut + RD, the SIGKILL at most cut + RD + margin.
        dead_after = await watch_group(first.pgid, cut_at)
        with anyio.fail_after(10):
            assert await a.wait() == 3, r.log("a")
        old = r.lines("a")
        assert "sigterm" in [x.event for x in old]  # it was asked first, and ignored it
        last = max(x.at for x in old)
        print(
            f"partition -> group SIGKILLed and dead: {dead_after:.3f} s "
            f"(bound RD + margin = {RD + MARGIN:g} s)"
        )
        assert RD - RP - 0.05 < dead_after < RD + MARGIN + SLACK
        assert last - cut_at < RD + MARGIN + SLACK
        assert "leadership lost (deadline); exiting with code 3" in r.log("a")

        new = await r.wait_started("b", "command", limit=LD + 10)
        r.assert_handed_over("a", new)
        print(f"command dead -> next command started: {new.at - cut_at - dead_after:.3f} s")


@pytest.mark.asyncio
async def test_frozen_wrapper_guardian_stops_the_command_before_takeover(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    """The wrapper alone is frozen (SIGSTOP) past LD: it cannot stop anything, so the guardian
    does, on its own clock at the term's deadline; on resuming, the wrapper exits 3."""
    async with replicas(emu, tmp_path, "frozen") as r:
        a = await r.start("a", r.launcher("a"))
        first = await r.wait_started("a", "grandchild")
        await r.start("b", r.worker("b", "command"))
        await r.wait_following("b")

        frozen_at = time.monotonic()
        os.kill(a.pid, signal.SIGSTOP)
        dead_after = await watch_group(first.pgid, frozen_at)
        print(f"wrapper frozen -> group dead: {dead_after:.3f} s (deadline <= {RD:g} s)")
        assert RD - RP - 0.05 < dead_after < RD + MARGIN + SLACK
        assert [x.event for x in r.lines("a")][-1] == "sigterm"  # SIGTERM at the deadline

        new = await r.wait_started("b", "command", limit=LD + 10)
        r.assert_handed_over("a", new)
        assert not alive(first.pid)
        print(f"group dead -> next command started: {new.at - frozen_at - dead_after:.3f} s")

        os.kill(a.pid, signal.SIGCONT)
        with anyio.fail_after(10):
            assert await a.wait() == 3, r.log("a")
        assert "the term's deadline passed: stopping the command" in r.log("a")
        assert r.holder() == "b"  # the old wrapper wrote nothing on resuming


@pytest.mark.asyncio
async def test_a_daemon_that_left_the_group_is_stopped_before_the_release(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    """The command daemonizes a worker (``setsid()``, double fork) and exits 0. The worker is in
    no group of ours, but it was re-parented to the guardian (a child subreaper), which stops
    it before the wrapper releases the lock."""
    async with replicas(emu, tmp_path, "daemon") as r:
        daemonize = [sys.executable, str(tmp_path / "daemonize.py"), str(r.out)]
        a = await r.start("a", [*daemonize, *r.worker("a", "daemon")])
        await r.wait_started("a", "daemon")
        await r.start("b", r.worker("b", "command"))
        with anyio.fail_after(15):
            assert await a.wait() == 0, r.log("a")
        launcher = next(x for x in r.lines("a") if x.role == "launcher")
        daemon = next(x for x in r.lines("a") if x.role == "daemon")
        assert daemon.pgid != launcher.pgid  # it left the command's group
        assert not alive(daemon.pid)
        assert [x.event for x in r.lines("a")][-1] == "sigterm"
        assert f"process {daemon.pid} left the command's process group" in r.log("a")

        new = await r.wait_started("b", "command")
        r.assert_handed_over("a", new)


@pytest.mark.asyncio
async def test_a_command_that_cannot_start_is_one_line_and_exit_127_before_campaigning(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    async with replicas(emu, tmp_path, "missing") as r:
        a = await r.start("a", [str(tmp_path / "no-such-command")])
        with anyio.fail_after(10):
            assert await a.wait() == 127
        assert r.log("a") == f"aioleader: command '{tmp_path / 'no-such-command'}': no such file\n"
        assert r.holder() is None  # never campaigned


@pytest.mark.parametrize(
    ("command", "report"),
    [
        ("/no-such-command", "error 127 [Errno 2] No such file or directory: '/no-such-command'"),
        ("/", "error 126 [Errno 13] Permission denied: '/'"),
    ],
)
def test_the_guardian_reports_a_command_it_cannot_start_with_the_shells_code(
    command: str, report: str
) -> None:
    """The wrapper checks the command before campaigning; one that vanishes in between is
    reported by the guardian with the same code (127 not found, 126 not runnable)."""
    guardian = Path(__file__).parent.parent / "aioleader" / "_guardian.py"
    deadline = time.monotonic() + 60
    proc = subprocess.run(
        [
            *[sys.executable, "-I", "-S", str(guardian), "--deadline", repr(deadline)],
            *["--grace", "0.1", "--margin", "0.1", "--parent", str(os.getpid()), "--", command],
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (proc.returncode, proc.stdout) == (1, f"{report}\n")
