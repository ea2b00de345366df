"""aioleader against kubernetes_asyncio's elector: ``python bench/run.py [--quick]``.

One command measures, in the same run, on the same API server and with the same timings, for
aioleader and for ``kubernetes_asyncio.leaderelection`` (LeaseLock):

1. graceful handover (aioleader; kubernetes_asyncio has no release) and crash failover beyond the
   lease duration, p50/p99 — at short timings (LD 4 / RD 3 / RP 1: kubernetes_asyncio refuses a
   retry period under 1 s) for the distribution, and a smaller sample at 15/10/2;
2. requests per minute per role (leader, follower) and verb in steady state at 15/10/2, from the
   emulator's per-client request log;
3. CPU time per renewal, and how many leases one process holds at 15/10/2 on one core without a
   missed renewal (1,000 … 10,000 elections in one process, one shared ``ApiClient``), with
   renewal latency and event-loop lag;
4. memory per candidate (RSS delta / candidates).

It prints the table and writes ``docs/benchmarks.md`` and ``docs/benchmarks.png`` (``--out``).
The emulator runs in a process of its own, pinned to another core than the candidates when the
machine has two. ``--kubeconfig PATH`` runs against a real cluster instead (requests are then
counted on the client side; the scale runs create that many Leases in ``--namespace`` and delete
them afterwards). ``--quick`` takes about two minutes, with fewer samples (and says so).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as ``python bench/run.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from aioleader import Timing
from bench._backends import (
    IMPLS,
    REPO,
    Backend,
    ClusterBackend,
    EmulatorBackend,
    EmulatorProcess,
    Impl,
    run_id,
)
from bench._latency import LatencyResult, measure_crash, measure_handover
from bench._rates import measure_steady
from bench._report import Report, markdown, plot, table, targets
from bench._scaling import ScaleResult, run_scale
from bench._stats import summarize

DEFAULT = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
SHORT = Timing(lease_duration=4, renew_deadline=3, retry_period=1)
SLOW = Timing(lease_duration=30, renew_deadline=20, retry_period=5)
# Following: the Leases are held elsewhere for an hour. kubernetes_asyncio's elector judges
# expiry by its own lease duration, not the record's, so at 15 s it would take them over; an hour
# keeps it following. Neither renews; both followers check every RP (polling or watching).
FOLLOW = Timing(lease_duration=3600, renew_deadline=10, retry_period=2)

PLANS: dict[str, dict[str, Any]] = {
    "full": {
        "handover": 200,
        "handover_lanes": 3,
        "crash_short": 200,
        "crash_short_lanes": 10,
        "crash_default": 24,
        "crash_default_lanes": 12,
        "steady_window": 180.0,
        "cpu_leases": 200,
        "cpu_window": 60.0,
        "sizes": (1000, 2000, 5000, 10000),
        "slow_sizes": (5000, 10000),
        "scale_window": 60.0,
        "scale_impls": IMPLS,
        "default_pool_check": 1000,
        "follow_leases": 1000,
        "follow_window": 30.0,
    },
    "quick": {
        "handover": 20,
        "handover_lanes": 2,
        "crash_short": 20,
        "crash_short_lanes": 5,
        "crash_default": 4,
        "crash_default_lanes": 4,
        "steady_window": 20.0,
        "cpu_leases": 200,
        "cpu_window": 10.0,
        "sizes": (1000,),
        "slow_sizes": (),
        "scale_window": 10.0,
        "scale_impls": ("aioleader",),
        "default_pool_check": 0,
        "follow_leases": 200,
        "follow_window": 10.0,
    },
}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(pinning: str) -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    commit = _git("rev-parse", "--short", "HEAD") or "?"
    dirty = (
        " + uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else ""
    )
    subject = _git("log", "-1", "--format=%s")
    return {
        "Machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}",
        "Pinning": pinning,
        "Software": f"Python {platform.python_version()}, kubernetes_asyncio "
        f"{version('kubernetes_asyncio')}, aiohttp {version('aiohttp')}, anyio "
        f"{version('anyio')}",
        "aioleader": f"{commit}{dirty} ({subject})",
    }


def choose_cpus() -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """(our CPUs, the emulator's CPUs, a description); no pinning on a single CPU."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return (), (), "none (no sched_setaffinity here)"
    if len(available) < 2:
        return (), (), f"none: one CPU available ({available})"
    ours, emulator = (available[0],), (available[-1],)
    os.sched_setaffinity(0, set(ours))
    return (
        ours,
        emulator,
        f"candidates and scale workers on CPU {ours[0]}, the emulator on CPU {emulator[0]} "
        f"(of {len(available)} available)",
    )


async def run(args: argparse.Namespace, report: Report) -> None:
    plan = dict(PLANS["quick" if args.quick else "full"])
    if args.sizes:
        plan["sizes"] = tuple(int(s) for s in args.sizes.split(","))
    elif args.kubeconfig:
        plan["sizes"] = (100,)  # do not create thousands of Leases in somebody's cluster
        plan["slow_sizes"] = ()
        plan["cpu_leases"] = 100
        plan["follow_leases"] = 100
    ours, emu_cpus, pinning = choose_cpus() if not args.no_pin else ((), (), "none (--no-pin)")
    report.machine = machine_info(pinning)
    tag = f"bench-{run_id()}"
    logs = anyio.Path(args.logs)
    await logs.mkdir(parents=True, exist_ok=True)
    report.settings = {
        "Timings": f"LD/RD/RP {_t(DEFAULT)} s for the steady state, CPU and scale figures and a "
        f"crash-failover sample; {_t(SHORT)} s for the latency distributions "
        "(kubernetes_asyncio refuses a retry period or renew deadline under 1 s)",
        "Samples": f"graceful handover {plan['handover']} ({plan['handover_lanes']} leases at "
        f"once), crash failover {plan['crash_short']} per implementation at {_t(SHORT)} "
        f"({plan['crash_short_lanes']} leases at once each) and {plan['crash_default']} at "
        f"{_t(DEFAULT)}; three candidates per lease, each with its own client",
        "Steady state": f"three candidates per implementation, {plan['steady_window']:.0f} s "
        "window after a warm-up",
        "CPU per renewal": f"{plan['cpu_leases']} leases in one process, "
        f"{plan['cpu_window']:.0f} s window",
        "Leases per process": f"sizes {', '.join(f'{s:,}' for s in plan['sizes'])} for "
        f"{', '.join(plan['scale_impls'])}; {plan['scale_window']:.0f} s window after all leases "
        "are acquired (ramp bounded by min(120 s, 30 s + leases / 50 s)); a fresh process per "
        "size; the next size is skipped once one fails; one ApiClient with a pool of "
        "leases + 100 connections (see the notes for the default pool of 100); at "
        f"{_t(SLOW)} sizes {', '.join(f'{s:,}' for s in plan['slow_sizes']) or 'none'}",
        "Following": f"{plan['follow_leases']:,} Leases held by another holder, followed by one "
        f"process (one election each, one ApiClient), {plan['follow_window']:.0f} s window",
        "API server": "kubeconfig " + args.kubeconfig
        if args.kubeconfig
        else "aioleader.testing.KubeEmulator in its own process (bench/_emuproc.py), watch "
        "BOOKMARKs every 60 s as kube-apiserver's watch cache sends them (the emulator's default "
        "of 1 s is meant for tests)",
        "Worker logs": str(logs),
    }
    with open(logs / "emulator.log", "wb") as emu_log, open(logs / "workers.log", "wb") as log:  # noqa: ASYNC230
        emulator: EmulatorProcess | None = None
        backend: Backend
        if args.kubeconfig:
            backend = ClusterBackend(args.kubeconfig, args.namespace)
        else:
            emulator = EmulatorProcess(cpus=emu_cpus, log=emu_log)
            await emulator.start()
            backend = EmulatorBackend(emulator, args.namespace)
        try:
            await _phases(args, plan, report, backend, emulator, tag, ours, log)
        finally:
            await backend.aclose()
            if isinstance(backend, ClusterBackend):
                with anyio.CancelScope(shield=True), anyio.move_on_after(300):
                    deleted = await backend.delete_leases(tag)
                    say(f"deleted {deleted} leases named {tag}-*")
            if emulator is not None:
                await emulator.aclose()


def _t(timing: Timing) -> str:
    return f"{timing.lease_duration:g}/{timing.renew_deadline:g}/{timing.retry_period:g}"


async def _phases(
    args: argparse.Namespace,
    plan: dict[str, Any],
    report: Report,
    backend: Backend,
    emulator: EmulatorProcess | None,
    tag: str,
    cpus: tuple[int, ...],
    log: IO[bytes],
) -> None:
    seed = args.seed
    say(f"graceful handover: {plan['handover']} samples at {_t(DEFAULT)}")
    report.handover = await measure_handover(
        backend,
        samples=plan["handover"],
        timing=DEFAULT,
        lanes=plan["handover_lanes"],
        prefix=f"{tag}-h",
        seed=seed,
        progress=say,
    )
    say(f"graceful handover: {summarize(report.handover.values)}")

    say(f"crash failover at {_t(SHORT)}: {plan['crash_short']} samples per implementation")
    report.crash_short = await _crash_both(
        backend, plan["crash_short"], SHORT, plan["crash_short_lanes"], f"{tag}-cs", seed
    )

    say(
        f"steady state ({plan['steady_window']:.0f} s) and crash failover at {_t(DEFAULT)} "
        f"({plan['crash_default']} samples per implementation), side by side"
    )
    async with anyio.create_task_group() as tg:

        async def crash_default() -> None:
            report.crash_default = await _crash_both(
                backend,
                plan["crash_default"],
                DEFAULT,
                plan["crash_default_lanes"],
                f"{tag}-cd",
                seed,
            )

        tg.start_soon(crash_default)
        rates = await measure_steady(
            backend, IMPLS, timing=DEFAULT, window=plan["steady_window"], prefix=f"{tag}-s"
        )
        report.rates = {r.impl: r for r in rates}
    for impl, r in report.rates.items():
        say(f"steady state {impl}: leader {r.leader}, follower {r.follower}")

    for impl in IMPLS:
        say(f"CPU per renewal: {impl}, {plan['cpu_leases']} leases, {plan['cpu_window']:.0f} s")
        report.cpu[impl] = await _scale(
            backend, impl, plan["cpu_leases"], plan["cpu_window"], f"{tag}-u", cpus, emulator, log
        )
    for timing, sizes, store in (
        (DEFAULT, plan["sizes"], report.scale),
        (SLOW, plan["slow_sizes"], report.scale_slow),
    ):
        for impl in plan["scale_impls"]:
            store[impl] = []
            for size in sizes:
                failed = [r for r in store[impl] if not r.ok]
                if failed:
                    note = (
                        f"{impl} at {size:,} leases ({_t(timing)}): skipped, "
                        f"{failed[0].leases:,} already failed ({failed[0].problem})"
                    )
                    report.skipped.append(note)
                    say(note)
                    continue
                say(
                    f"leases per process: {impl}, {size:,} leases at {_t(timing)}, "
                    f"{plan['scale_window']:.0f} s"
                )
                store[impl].append(
                    await _scale(
                        backend,
                        impl,
                        size,
                        plan["scale_window"],
                        f"{tag}-n{timing.retry_period:g}",
                        cpus,
                        emulator,
                        log,
                        timing=timing,
                    )
                )
    for impl in IMPLS:
        size = plan["follow_leases"]
        say(f"following: {impl}, {size:,} leases held elsewhere, {plan['follow_window']:.0f} s")
        report.following[impl] = await _scale(
            backend,
            impl,
            size,
            plan["follow_window"],
            f"{tag}-f",
            cpus,
            emulator,
            log,
            timing=FOLLOW,
            mode="follow",
        )
    if plan["default_pool_check"]:
        size = plan["default_pool_check"]
        say(f"leases per process: aioleader, {size:,} leases, kubernetes_asyncio's default pool")
        report.default_pool = await _scale(
            backend, "aioleader", size, 10.0, f"{tag}-p", cpus, emulator, log, pool=0
        )


async def _crash_both(
    backend: Backend, samples: int, timing: Timing, lanes: int, prefix: str, seed: int
) -> dict[Impl, LatencyResult]:
    results: dict[Impl, LatencyResult] = {}

    async def one(impl: Impl) -> None:
        results[impl] = await measure_crash(
            backend,
            impl,
            samples=samples,
            timing=timing,
            lanes=lanes,
            prefix=prefix,
            seed=seed,
            progress=say,
        )
        say(f"crash failover {impl} at {_t(timing)}: beyond LD {summarize(results[impl].values)}")

    async with anyio.create_task_group() as tg:
        for impl in IMPLS:
            tg.start_soon(one, impl)
    return results


async def _scale(
    backend: Backend,
    impl: Impl,
    leases: int,
    window: float,
    prefix: str,
    cpus: tuple[int, ...],
    emulator: EmulatorProcess | None,
    log: IO[bytes],
    *,
    pool: int | None = None,
    timing: Timing = DEFAULT,
    mode: str = "lead",
) -> ScaleResult:
    result = await run_scale(
        backend,
        impl,
        leases,
        duration=window,
        timing=timing,
        mode=mode,
        prefix=f"{prefix}-{impl[:3]}-{leases}",
        cpus=cpus,
        ramp_timeout=min(120.0, 30.0 + leases / 50),
        pool=leases + 100 if pool is None else pool,
        emulator=emulator,
        log=log,
    )
    per = result.cpu_per_renewal
    if mode == "follow":
        f = result.figures
        say(
            f"  {impl} following {leases:,}: {f.get('sockets')} sockets, server watches "
            f"{f.get('server_watches')}, requests {f.get('server_requests')}, "
            f"CPU {result.cpu_util or 0:.1%}"
        )
        return result
    say(
        f"  {impl} {leases:,}: {'held' if result.ok else 'FAILED: ' + str(result.problem)}; "
        f"CPU/renewal {per * 1000 if per else float('nan'):.2f} ms, "
        f"CPU {result.cpu_util or 0:.0%}, renew p99 {result.get('renew_p99')}, "
        f"lag p99 {result.get('lag_p99')}"
    )
    return result


def notes(report: Report, quick: bool) -> list[str]:
    found = [
        "Graceful handover: 'stop' is the moment the leader's `elect()` block is left "
        "(release_on_cancel, the default): its work is cancelled and awaited, then the lock is "
        "read and written free; 'new leader' is the moment another candidate's "
        "`on_started_leading` runs. 'release written' is when the server answered the release.",
        "Crash failover: the leader's campaign is cancelled without a release (aioleader "
        "`release_on_cancel=False`; kubernetes_asyncio cannot release). 'Last renewal' is when the "
        "server answered the old leader's last successful write of the Lease (the emulator's "
        "request log; on a real cluster the client-side receipt), so the figure is "
        "new leader − last renewal − LD: how long after the earliest safe moment the new leader "
        "started. Each stop comes after a random pause, at a random phase of the renew period; "
        "replacement candidates start after a random pause of up to RP.",
        "kubernetes_asyncio's elector has no release: its leader stopping is a crash failover, "
        "so its handover cell reports stop → new leader of the crash runs (the lease must "
        "expire). Its followers poll (GET every RP, no jitter); its leader renews with "
        "GET + PUT every RP; its first renewal follows the acquisition at once.",
        "Requests per minute: every request that *started* in the window, per client; followers "
        "are averaged. A watch is counted when it is (re-)established, not for its events.",
        "CPU time per renewal: process CPU time (user + system) over the window divided by the "
        "successful renewals in it, with one candidate per lease (all of them leaders); it "
        "includes the client stack (kubernetes_asyncio + aiohttp) and the event loop. The "
        "'projected' lease count is RP / CPU per renewal: an upper bound, not a measurement.",
        "Leases per process: one candidate per Lease, all sharing one ApiClient (a pool of "
        "leases + 100 connections), started at once. A size holds when every lease was acquired "
        "within the ramp bound, no term was lost during the ramp or the window, and no lease "
        "went longer than RD without a successful renewal in the window (kubernetes_asyncio's "
        "elector never notices a late renewal: it bounds no request, so it 'holds' leases that "
        "others would long have taken over). Renewal latency: aioleader's "
        "`ElectionMetrics.renewed` (send of the first request to success); kubernetes_asyncio: "
        "one renewing `try_acquire_or_renew` (GET + PUT). Loop lag: how late a 100 ms ticker "
        "wakes. Memory: RSS after the window minus RSS before the first candidate, per lease "
        "(RSS does not shrink, so it includes what the ramp allocated: connections, buffers).",
    ]
    found.append(
        "Leases per process at 30/20/5: the same runs with LD 30 / RD 20 / RP 5 (2,000 renewals a "
        "second at 10,000 leases instead of 5,000 at 15/10/2). In every scale run aioleader's "
        "elections start at once and their acquisition attempts queue in one admission limiter "
        "per event loop (32 at a time, aioleader/_admission.py), so that 10,000 first attempts "
        "are not sent in the same instant."
    )
    found.append(
        "Following: the Leases are created held by another identity for an hour (renewed at "
        "the start, LD 3600 s, also in the candidates' timing: kubernetes_asyncio's elector judges "
        "expiry by its own lease duration and would otherwise take them over after 15 s), then "
        "one process runs an election per Lease through one ApiClient; every election follows. "
        "'Watches held at the server' is the emulator's count of open watch streams at the end of "
        "the window; 'sockets' counts the process's open sockets then (its connections, idle "
        "pooled ones included); requests are every request the server saw in the window. "
        "aioleader's followers share one list+watch of the namespace "
        "(aioleader/kubernetes/_informer.py); kubernetes_asyncio's poll with a GET every RP."
    )
    check = report.default_pool
    if check is not None:
        outcome = "held" if check.ok else f"failed: {check.problem}"
        errors = check.get("errors_in_ramp")
        found.append(
            f"Connection pool: the same {check.leases:,} aioleader elections on one ApiClient with "
            f"kubernetes_asyncio's default pool of 100 connections: {outcome} (ramp "
            f"{check.get('ramp_s') or 0:.1f} s, {errors or 0} request errors in it). Mind the "
            "pool when many elections share a client: a candidate that is not leading follows "
            "the lock through a watch, which holds one connection for as long as it follows, so "
            "with more following candidates than connections the others' requests (renewals "
            "included) wait for a free one. The sizes above use a pool of leases + 100."
        )
    if quick:
        found.append(
            "--quick: small samples. A p99 of fewer than 100 samples is the maximum (nearest "
            "rank) and is labelled 'max'."
        )
    else:
        found.append("p99 of fewer than 100 samples is the maximum and is labelled 'max'.")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="about two minutes, small samples")
    parser.add_argument("--kubeconfig", help="run against this cluster instead of the emulator")
    parser.add_argument("--namespace", default="default", help="namespace of the Leases")
    parser.add_argument("--out", default="docs", help="where benchmarks.md/.png go (docs/)")
    parser.add_argument("--sizes", help="leases per process to try, e.g. 1000,5000,10000")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random pauses")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    parser.add_argument(
        "--logs", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "aioleader-bench")
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("no_proxy", os.environ["NO_PROXY"])
    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)
    # kubernetes_asyncio's elector logs every 409 with a traceback; aioleader warns on losses.
    for noisy in ("kubernetes_asyncio", "aioleader"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)

    command = "python bench/run.py" + (" " + shlex.join(argv) if argv else "")
    if argv is None:
        command = "python bench/run.py" + (
            "" if len(sys.argv) < 2 else " " + shlex.join(sys.argv[1:])
        )
    started = datetime.now(timezone.utc)
    report = Report(command=command, started=started.strftime("%Y-%m-%d %H:%M UTC"))
    report.default_timing = (DEFAULT.lease_duration, DEFAULT.renew_deadline, DEFAULT.retry_period)
    clock = time.monotonic()
    anyio.run(run, args, report, backend="asyncio")
    report.duration_s = time.monotonic() - clock
    report.finished = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.notes = notes(report, args.quick)

    print(table(report))
    print()
    for t in targets(report):
        mark = "not measured" if t.met is None else ("met" if t.met else "MISSED")
        print(f"- {t.what}: {mark} — {t.detail}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.md").write_text(markdown(report))
    if plot(report, out / "benchmarks.png"):
        say(f"wrote {out / 'benchmarks.md'} and {out / 'benchmarks.png'}")
    else:
        report.notes.append("No plot: matplotlib is not installed (pip install '.[bench]').")
        (out / "benchmarks.md").write_text(markdown(report))
        say(f"wrote {out / 'benchmarks.md'} (no plot: pip install '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
