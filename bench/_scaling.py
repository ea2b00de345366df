"""Leases per process: one fresh ``bench._scale`` worker per size, and what it reports (leases
held, terms lost, CPU per renewal, memory per lease, loop lag, the emulator's CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from aioleader import Timing

from ._backends import REPO, Backend, EmulatorProcess, Impl, subprocess_env

# -- leases per process ----------------------------------------------------------------------------


@dataclass
class ScaleResult:
    """One ``bench._scale`` run: ``leases`` single-candidate elections in one process."""

    impl: Impl
    leases: int
    ok: bool
    problem: str | None
    figures: dict[str, Any]
    emulator_cpu_util: float | None = None

    def get(self, key: str) -> Any:
        return self.figures.get(key)

    @property
    def cpu_util(self) -> float | None:
        cpu, window = self.get("cpu_s"), self.get("window_s")
        return None if cpu is None or not window else float(cpu) / float(window)

    @property
    def cpu_per_renewal(self) -> float | None:
        cpu, renewals = self.get("cpu_s"), self.get("renewals")
        return None if cpu is None or not renewals else float(cpu) / float(renewals)

    @property
    def memory_per_lease(self) -> float | None:
        before, after = self.get("rss_before"), self.get("rss_after")
        if before is None or after is None or not self.leases:
            return None
        return (float(after) - float(before)) / self.leases

    @property
    def missed(self) -> int:
        return int(self.get("ended_in_ramp") or 0) + int(self.get("ended_in_window") or 0)


def _judge(figures: dict[str, Any], leases: int, timing: Timing) -> str | None:
    """Why a size failed the "holds N leases without a missed renewal" bar, or None.

    A renewal is missed when a term is lost (aioleader ends a term whose renewal missed the
    renew deadline) or when a lease goes longer than the renew deadline without a successful
    renewal (kubernetes_asyncio's elector never bounds a request, so it keeps "leading" however
    late its renewals are; a lease not renewed for LD is up for grabs by anyone else)."""
    if figures.get("leading_at_start", 0) < leases:
        return f"only {figures.get('leading_at_start', 0)}/{leases} leases acquired in the ramp"
    lost = int(figures.get("ended_in_ramp", 0)) + int(figures.get("ended_in_window", 0))
    if lost:
        return f"{lost} term(s) lost (renewal missed the deadline, or lease lost)"
    late, gap = int(figures.get("gaps_over_rd", 0)), figures.get("max_gap")
    if late:
        beyond_ld = int(figures.get("gaps_over_ld", 0))
        return (
            f"{late} time(s) a lease went more than RD ({timing.renew_deadline:g} s) without a "
            f"renewal, {beyond_ld} of them more than LD ({timing.lease_duration:g} s); "
            f"longest {gap:.1f} s"
        )
    if figures.get("leading_at_end", 0) < leases:
        return f"only {figures.get('leading_at_end', 0)}/{leases} leases held at the end"
    return None


async def run_scale(
    backend: Backend,
    impl: Impl,
    leases: int,
    *,
    duration: float,
    timing: Timing,
    prefix: str,
    cpus: Sequence[int] = (),
    ramp_timeout: float = 60.0,
    pool: int = 0,
    emulator: EmulatorProcess | None = None,
    log: IO[bytes] | None = None,
    mode: str = "lead",
) -> ScaleResult:
    """Run ``leases`` elections of ``impl`` in a fresh process (``bench._scale``), pinned to
    ``cpus``, sharing one ``ApiClient`` with a pool of ``pool`` connections (0: the client's
    default, 100); read the emulator's CPU time over the worker's steady window."""
    argv = [sys.executable, "-m", "bench._scale", "--impl", impl, "--leases", str(leases)]
    argv += ["--duration", str(duration), "--ramp-timeout", str(ramp_timeout)]
    argv += ["--timing", f"{timing.lease_duration},{timing.renew_deadline},{timing.retry_period}"]
    argv += ["--namespace", backend.namespace, "--prefix", prefix, *backend.worker_target()]
    argv += ["--pool", str(pool), "--mode", mode]
    if cpus:
        argv += ["--cpus", ",".join(map(str, cpus))]
    figures: dict[str, Any] = {}
    emu_cpu: list[float] = []
    emu_wall: list[float] = []
    emu_requests: list[dict[str, int]] = []
    emu_watches = None
    bound = ramp_timeout + duration + 60
    process = await anyio.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        cwd=REPO,
        env=subprocess_env(),
    )
    try:
        assert process.stdout is not None
        stream = BufferedByteReceiveStream(process.stdout)
        with anyio.move_on_after(bound):
            while True:
                try:
                    line = await stream.receive_until(b"\n", 1 << 20)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    break
                event = json.loads(line)
                if event.get("event") in ("window-start", "window-end") and emulator is not None:
                    stats = await emulator.command("stats")
                    emu_cpu.append(float(stats["cpu"]))
                    emu_wall.append(anyio.current_time())
                    emu_requests.append(dict(stats["requests"]))
                    emu_watches = int(stats["watches"])
                elif event.get("event") == "result":
                    figures = {k: v for k, v in event.items() if k != "event"}
                    break
        with anyio.move_on_after(15):
            await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()
    if not figures:
        failure = f"the worker gave no result within {bound:g} s (exit {process.returncode})"
        return ScaleResult(impl, leases, False, failure, {})
    util = None
    if len(emu_cpu) == 2 and emu_wall[1] > emu_wall[0]:
        util = (emu_cpu[1] - emu_cpu[0]) / (emu_wall[1] - emu_wall[0])
    if len(emu_requests) == 2:
        # Every request the server saw in the window (the worker is alone then), and the
        # watches it held open at the window's end.
        before, after = emu_requests
        figures["server_requests"] = {v: n - before.get(v, 0) for v, n in after.items()}
        figures["server_watches"] = emu_watches
    if mode == "follow":
        return ScaleResult(impl, leases, True, None, figures, util)
    problem = _judge(figures, leases, timing)
    if problem is not None and util is not None and util > 0.9:
        problem += f" (the emulator used {util:.0%} of its core: the API server was a limit too)"
    return ScaleResult(impl, leases, problem is None, problem, figures, util)
