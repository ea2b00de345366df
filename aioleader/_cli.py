"""The ``aioleader`` command line (argparse + anyio).

``aioleader run --lock lease/NS/NAME -- CMD ARGS…`` is the sidecar/wrapper mode: CMD runs only while
this process leads, in a process group of its own guarded by a separate process (see
``_sidecar.py``). Exit codes of ``run``:

====  =====================================================================================
code  meaning
====  =====================================================================================
N     the command exited by itself with code N (the rest of its process group is stopped and
      the lock released first)
0     stopped by a signal while not leading (released if held)
2     bad command line (one line on stderr)
3     leadership was lost: the command's process group was sent SIGTERM, then SIGKILL after the
      grace period; exiting non-zero makes Kubernetes restart the container, which campaigns again
4     fatal error: election (403 Forbidden, no usable kubeconfig, unwritable lock file), the
      command cannot be started, or its guardian process died
128+S the command was stopped by the forwarded signal S (e.g. 143 for SIGTERM)
====  =====================================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

import anyio

from ._exceptions import AioleaderError, ElectionError, LockError
from ._lock import Lock
from ._sidecar import EXIT_FATAL, Sidecar, max_grace_period
from ._timing import Timing

__all__ = ["main"]

EXIT_USAGE = 2


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioleader",
        description="Leader election for Python services on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def lock_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--lock",
            required=True,
            metavar="SPEC",
            help="lease/NAMESPACE/NAME, configmap/NAMESPACE/NAME, endpoints/NAMESPACE/NAME or "
            "file:PATH",
        )
        p.add_argument(
            "--kubeconfig",
            metavar="PATH",
            help="kubeconfig (default: $KUBECONFIG, "
            "~/.kube/config, or the in-cluster service account)",
        )

    run = sub.add_parser(
        "run",
        help="run a command only while this process leads",
        description="Campaign for the lock and run COMMAND while leading, in a process group "
        "of its own. On loss of leadership, or if this process dies or freezes, the group gets "
        "SIGTERM, then SIGKILL after --grace-period (from a guardian process that holds the "
        "term's deadline), and aioleader exits with code 3 so that the container restarts. "
        "SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGUSR2 are forwarded to the group; the lock is "
        "released once no process of the group is left.",
    )
    lock_options(run)
    run.add_argument("--identity", help="holder identity (default: $POD_NAME, else host_pid)")
    run.add_argument("--lease-duration", type=float, metavar="S")
    run.add_argument("--renew-deadline", type=float, metavar="S")
    run.add_argument("--retry-period", type=float, metavar="S")
    run.add_argument(
        "--preset",
        choices=["default", "latency-sensitive", "stability-first"],
        help="15/10/2, 10/8/1 or 30/20/5 seconds",
    )
    run.add_argument(
        "--grace-period",
        type=float,
        metavar="S",
        help="seconds between SIGTERM and SIGKILL when the command is stopped; at most, and "
        "by default, (lease duration - renew deadline) / 2, so that the command is dead that "
        "long before another replica may take over",
    )
    coordinated = run.add_argument_group(
        "coordinated election (KEP-4355): publish a LeaseCandidate and lead when an election "
        "controller names this replica (lease locks only)"
    )
    coordinated.add_argument("--binary-version", metavar="V", help="e.g. 1.31.2")
    coordinated.add_argument("--emulation-version", metavar="V", help="e.g. 1.31")
    coordinated.add_argument(
        "--strategy",
        metavar="S",
        help="OldestEmulationVersion (default; kube-apiserver elects) or e.g. "
        "aioleader.dev/HighestPriority (aioleader coordinate elects)",
    )
    coordinated.add_argument(
        "--priority", type=int, metavar="N", help="the aioleader.dev/priority label"
    )
    run.add_argument("--healthz-addr", metavar="HOST:PORT", help="serve GET /healthz there")
    run.add_argument("--metrics-addr", metavar="HOST:PORT", help="serve Prometheus /metrics there")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS…]")

    status = sub.add_parser("status", help="show who holds the lock")
    lock_options(status)
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")

    watch = sub.add_parser("watch", help="print one line per change of leader")
    lock_options(watch)
    watch.add_argument("--poll-interval", type=float, default=2.0, metavar="S")

    coordinate = sub.add_parser(
        "coordinate",
        help="run an election controller for strategies kube-apiserver leaves alone",
        description="Elect the holders of the Leases whose LeaseCandidates ask for "
        "aioleader.dev/HighestPriority (the highest aioleader.dev/priority label leads), in "
        "one namespace. Replicas of the coordinator elect one of themselves on --lock; only "
        "that one acts.",
    )
    coordinate.add_argument(
        "--lock",
        default=None,
        metavar="SPEC",
        help="the coordinators' own Lease (default: lease/NAMESPACE/aioleader-coordinator)",
    )
    coordinate.add_argument("--namespace", default="default", help="the namespace coordinated")
    coordinate.add_argument(
        "--identity", help="holder identity (default: $POD_NAME, else host_pid)"
    )
    coordinate.add_argument("--election-window", type=float, default=5.0, metavar="S")
    coordinate.add_argument("--interval", type=float, default=1.0, metavar="S")
    coordinate.add_argument("--kubeconfig", metavar="PATH")

    demo = sub.add_parser(
        "demo",
        help="run an election among three candidates on the embedded Kubernetes API emulator",
        description=(
            "Start the Kubernetes API emulator, run three candidates on one Lease, kill the "
            "leader, stop the next one gracefully, and print the failover times."
        ),
    )
    demo.add_argument("--candidates", type=int, default=3, help="number of candidates (≥ 3)")
    demo.add_argument("--lease-duration", type=float, default=4.0, metavar="S")
    demo.add_argument("--renew-deadline", type=float, default=3.0, metavar="S")
    demo.add_argument("--retry-period", type=float, default=0.5, metavar="S")
    return parser


# -- lock specs ------------------------------------------------------------------------------------


def make_lock(spec: str, *, identity: str | None, kubeconfig: str | None) -> Lock:
    """Build the lock a ``--lock`` spec names. Raises ``_UsageError`` with one clear line."""
    try:
        if spec.startswith("file:"):
            path = spec[len("file:") :]
            if not path:
                raise _UsageError("--lock file:PATH needs a path")
            from .locks import FileLock  # type: ignore[attr-defined,unused-ignore]

            lock: Lock = FileLock(path, identity=identity)
            return lock
        kind, _, rest = spec.partition("/")
        namespace, _, name = rest.partition("/")
        if not kind or not namespace or not name or "/" in name:
            raise _UsageError(
                f"--lock {spec!r}: expected lease/NAMESPACE/NAME, configmap/NAMESPACE/NAME, "
                "endpoints/NAMESPACE/NAME or file:PATH"
            )
        if kubeconfig:
            os.environ["KUBECONFIG"] = kubeconfig
        from . import kubernetes as kube

        classes: dict[str, Any] = {"lease": kube.LeaseLock, "leases": kube.LeaseLock}
        for key, attr in (("configmap", "ConfigMapLock"), ("endpoints", "EndpointsLock")):
            if hasattr(kube, attr):
                classes[key] = classes[key + "s"] = getattr(kube, attr)
        if kind.lower() not in classes:
            raise _UsageError(f"--lock {spec!r}: unknown lock kind {kind!r}")
        return classes[kind.lower()](name, namespace, identity=identity)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise _UsageError(f"--lock {spec!r}: {exc}") from exc


def _timing(args: argparse.Namespace) -> Timing:
    explicit = [args.lease_duration, args.renew_deadline, args.retry_period]
    if args.preset and any(v is not None for v in explicit):
        raise _UsageError(
            "--preset cannot be combined with --lease-duration/--renew-deadline/--retry-period"
        )
    base = Timing.preset(args.preset) if args.preset else Timing()
    try:
        return Timing(
            lease_duration=args.lease_duration
            if args.lease_duration is not None
            else base.lease_duration,
            renew_deadline=args.renew_deadline
            if args.renew_deadline is not None
            else base.renew_deadline,
            retry_period=args.retry_period if args.retry_period is not None else base.retry_period,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc


def _address(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise _UsageError(f"{flag} {value!r}: expected HOST:PORT")
    return host or "0.0.0.0", int(port)


# -- run -------------------------------------------------------------------------------------------


def _sidecar(args: argparse.Namespace, lock: Lock) -> Sidecar:
    timing = _timing(args)
    cmd: list[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else list(args.cmd)
    if not cmd:
        raise _UsageError("run: missing the command (aioleader run --lock … -- CMD ARGS…)")
    limit = max_grace_period(timing)
    if args.grace_period is not None and not 0 <= args.grace_period <= limit:
        raise _UsageError(
            f"--grace-period {args.grace_period:g}: must be between 0 and (lease duration - "
            f"renew deadline) / 2 = {limit:g}, so that the command is dead before another "
            "replica may take over"
        )
    metrics = None
    if args.metrics_addr:
        host, port = _address(args.metrics_addr, "--metrics-addr")
        try:
            import prometheus_client
        except ImportError as exc:
            raise _UsageError("--metrics-addr needs pip install 'aioleader[metrics]'") from exc
        from ._metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
        prometheus_client.start_http_server(port, addr=host)
    healthz = _address(args.healthz_addr, "--healthz-addr") if args.healthz_addr else None
    return Sidecar(
        lock,
        cmd,
        timing=timing,
        grace_period=args.grace_period,
        metrics=metrics,
        healthz=healthz,
        candidate=_candidate(args, lock),
    )


def _candidate(args: argparse.Namespace, lock: Lock) -> Any:
    """The LeaseCandidate of ``run --binary-version …``, or None for an ordinary election."""
    flags = (args.binary_version, args.emulation_version, args.strategy, args.priority)
    if all(flag is None for flag in flags):
        return None
    if args.binary_version is None:
        raise _UsageError("--emulation-version, --strategy and --priority need --binary-version")
    from .kubernetes import LeaseCandidate, LeaseLock

    if not isinstance(lock, LeaseLock):
        raise _UsageError(
            "--binary-version: coordinated election needs a lease/NAMESPACE/NAME lock"
        )
    try:
        return LeaseCandidate(
            binary_version=args.binary_version,
            emulation_version=args.emulation_version,
            strategy=args.strategy or "OldestEmulationVersion",
            priority=args.priority,
        )
    except ValueError as exc:
        raise _UsageError(f"run: {exc}") from exc


# -- status / watch ----------------------------------------------------------------------------------


async def _status(lock: Lock, output: str) -> int:
    async with lock:
        observed = await lock.get(timeout=10)
        candidates = await _candidates(lock)
    if observed is None:
        data: dict[str, Any] = {"lock": lock.describe(), "exists": False, "holder": None}
    else:
        record = observed.record
        age = None
        if record.renew_time is not None:
            age = (datetime.now(timezone.utc) - record.renew_time).total_seconds()
        data = {
            "lock": lock.describe(),
            "exists": True,
            "holder": record.holder_identity or None,
            "leaseDurationSeconds": record.lease_duration_seconds,
            "acquireTime": record.acquire_time.isoformat() if record.acquire_time else None,
            "renewTime": record.renew_time.isoformat() if record.renew_time else None,
            "renewAgeSeconds": None if age is None else round(age, 3),
            "transitions": record.leader_transitions,
            "resourceVersion": observed.version,
        }
        if record.strategy or record.preferred_holder:
            data["strategy"] = record.strategy
            data["preferredHolder"] = record.preferred_holder
    if candidates is not None:
        data["candidates"] = candidates
    if output == "json":
        print(json.dumps(data))
        return 0
    if not data["exists"]:
        print(f"{data['lock']}: no such lock")
    else:
        age_text = "?" if data["renewAgeSeconds"] is None else f"{data['renewAgeSeconds']:.1f}s ago"
        print(
            f"{data['lock']}: holder {data['holder'] or '(none)'}, renewed {age_text}, "
            f"lease {data['leaseDurationSeconds']}s, transitions {data['transitions']}"
            + (f", strategy {data['strategy']}" if data.get("strategy") else "")
            + (
                f", preferred holder {data['preferredHolder']}"
                if data.get("preferredHolder")
                else ""
            )
        )
    for candidate in candidates or ():
        print(_candidate_line(candidate))
    return 0


async def _candidates(lock: Lock) -> list[dict[str, Any]] | None:
    """The LeaseCandidates of a lease lock (None: not a Lease, or no v1beta1 API)."""
    from .kubernetes import LeaseLock, list_lease_candidates

    if not isinstance(lock, LeaseLock):
        return None
    try:
        found = await list_lease_candidates(lock, timeout=10)
    except (ElectionError, LockError):
        return None
    now = datetime.now(timezone.utc)

    def age(when: datetime | None) -> float | None:
        return None if when is None else round((now - when).total_seconds(), 3)

    return [
        {
            "identity": c.identity,
            "binaryVersion": c.binary_version,
            "emulationVersion": c.emulation_version,
            "strategy": c.strategy,
            "pingTime": c.ping_time.isoformat() if c.ping_time else None,
            "renewTime": c.renew_time.isoformat() if c.renew_time else None,
            "pingAgeSeconds": age(c.ping_time),
            "renewAgeSeconds": age(c.renew_time),
            "labels": dict(c.labels),
        }
        for c in found
    ]


def _candidate_line(c: dict[str, Any]) -> str:
    def ago(key: str) -> str:
        return "never" if c[key] is None else f"{c[key]:.1f}s ago"

    return (
        f"  candidate {c['identity']}: binary {c['binaryVersion']}, emulation "
        f"{c['emulationVersion'] or '-'}, strategy {c['strategy']}, pinged {ago('pingAgeSeconds')}, "
        f"renewed {ago('renewAgeSeconds')}"
    )


async def _watch(lock: Lock, poll_interval: float) -> int:
    from . import observe  # type: ignore[attr-defined,unused-ignore]

    async with (
        lock,
        anyio.create_task_group() as tg,
        observe(lock, poll_interval=poll_interval) as changes,
    ):
        tg.start_soon(_watch_candidates, lock, poll_interval)
        async for change in changes:
            when = change.renew_time.isoformat() if change.renew_time else "-"
            print(
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                f"holder={change.holder or '(none)'} previous={change.previous or '(none)'} "
                f"transitions={change.transitions} renewTime={when}",
                flush=True,
            )
    return 0


async def _watch_candidates(lock: Lock, poll_interval: float) -> None:
    """One line per candidate that appears, changes (versions, ping, renewal) or leaves."""
    seen: dict[str, dict[str, Any]] = {}
    while True:
        candidates = await _candidates(lock)
        if candidates is None:
            return  # not a Lease, or no LeaseCandidates on this cluster
        current = {c["identity"]: c for c in candidates}
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for identity, c in current.items():
            key = ("binaryVersion", "emulationVersion", "strategy", "pingTime", "renewTime")
            if identity not in seen or any(seen[identity][k] != c[k] for k in key):
                print(
                    f"{stamp} candidate={identity} binary={c['binaryVersion']} "
                    f"emulation={c['emulationVersion'] or '-'} strategy={c['strategy']} "
                    f"pingTime={c['pingTime'] or '-'} renewTime={c['renewTime'] or '-'}",
                    flush=True,
                )
        for identity in seen.keys() - current.keys():
            print(f"{stamp} candidate={identity} withdrawn", flush=True)
        seen = current
        await anyio.sleep(poll_interval)


# -- coordinate ------------------------------------------------------------------------------------


async def _coordinate(args: argparse.Namespace) -> int:
    from .kubernetes import Coordinator, LeaseLock

    spec = args.lock or f"lease/{args.namespace}/aioleader-coordinator"
    lock = make_lock(spec, identity=args.identity, kubeconfig=args.kubeconfig)
    if not isinstance(lock, LeaseLock):
        raise _UsageError(f"--lock {spec!r}: the coordinator campaigns on a lease/NAMESPACE/NAME")
    try:
        coordinator = Coordinator(
            lock,
            namespace=args.namespace,
            election_window=args.election_window,
            interval=args.interval,
        )
    except ValueError as exc:
        raise _UsageError(f"coordinate: {exc}") from exc
    from ._signals import stop_on_signals

    async with stop_on_signals(), lock:
        await coordinator.run()
    return 0


# -- main ------------------------------------------------------------------------------------------


def _fail(code: int, message: str) -> NoReturn:
    print(f"aioleader: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "coordinate":
            return anyio.run(_coordinate, args)
        lock = make_lock(
            args.lock, identity=getattr(args, "identity", None), kubeconfig=args.kubeconfig
        )
        if args.command == "run":
            return anyio.run(_sidecar(args, lock).run)
        if args.command == "status":
            return anyio.run(_status, lock, args.output)
        if args.command == "watch":
            return anyio.run(_watch, lock, args.poll_interval)
    except BaseExceptionGroup as group:
        # Our own task groups wrap what the election raised; one error is reported as itself.
        leaves = group.exceptions
        if len(leaves) == 1 and isinstance(leaves[0], AioleaderError):
            _fail(EXIT_FATAL, str(leaves[0]))
        raise
    except _UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    except ElectionError as exc:
        _fail(EXIT_FATAL, str(exc))
    except AioleaderError as exc:
        _fail(EXIT_FATAL, f"{exc} (the API server may be unreachable)")
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)  # pragma: no cover - argparse rejects unknown commands


def _demo(args: argparse.Namespace) -> int:
    if args.candidates < 3:
        raise _UsageError("demo: --candidates must be at least 3")
    try:
        timing = Timing(args.lease_duration, args.renew_deadline, args.retry_period)
    except ValueError as exc:
        raise _UsageError(f"demo: {exc}") from exc
    from ._demo import run_demo

    anyio.run(lambda: run_demo(timing=timing, candidates=args.candidates))
    return 0
