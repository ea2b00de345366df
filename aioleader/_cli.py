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

from ._exceptions import AioleaderError, ElectionError
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

    def lock_options(p: argparse.ArgumentParser, *, required: bool = True) -> None:
        p.add_argument(
            "--lock",
            required=required,
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
        "released once no process of the group is left. SIGUSR1 steps down: the command is "
        "stopped, the lock released for another replica, and aioleader exits with code 3.",
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
    run.add_argument("--healthz-addr", metavar="HOST:PORT", help="serve GET /healthz there")
    run.add_argument("--metrics-addr", metavar="HOST:PORT", help="serve Prometheus /metrics there")
    run.add_argument(
        "--pod-label",
        metavar="KEY=LEADER[,STANDBY]",
        help="label this Pod ($POD_NAME) KEY=LEADER while leading and KEY=STANDBY otherwise "
        "(removed if no STANDBY), e.g. role=leader,standby, for a Service selecting the leader",
    )
    run.add_argument(
        "--leader-endpoints",
        metavar="SERVICE:PORT[,PORT…]",
        help="point the EndpointSlice of the selector-less Service SERVICE at this Pod ($POD_IP) "
        "while leading; PORT is NUMBER or NAME=NUMBER (the Service port's name)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS…]")

    status = sub.add_parser("status", help="show who holds the lock (or each labelled Lease)")
    lock_options(status, required=False)
    status.add_argument(
        "-l",
        "--selector",
        metavar="SELECTOR",
        help="instead of --lock: one line per Lease matching this label selector (e.g. app=web)",
    )
    status.add_argument(
        "-n", "--namespace", help="with -l: the namespace (default: every namespace)"
    )
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")

    watch = sub.add_parser("watch", help="print one line per change of leader")
    lock_options(watch)
    watch.add_argument("--poll-interval", type=float, default=2.0, metavar="S")

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
        hooks=_hooks(args, metrics),
    )


def _hooks(args: argparse.Namespace, metrics: Any) -> list[Any]:
    """The term hooks ``--pod-label`` and ``--leader-endpoints`` ask for."""
    hooks: list[Any] = []
    if args.pod_label is None and args.leader_endpoints is None:
        return hooks
    from . import kubernetes as kube

    if args.pod_label is not None:
        key, equals, values = args.pod_label.partition("=")
        leader, _, standby = values.partition(",")
        if not equals or not key or not leader:
            raise _UsageError(
                f"--pod-label {args.pod_label!r}: expected KEY=LEADER[,STANDBY], "
                "e.g. role=leader,standby"
            )
        try:
            hooks.append(kube.PodRoleLabel(key, leader, standby or None, metrics=metrics))
        except ValueError as exc:
            raise _UsageError(f"--pod-label {args.pod_label!r}: {exc}") from exc
    if args.leader_endpoints is not None:
        service, colon, port_list = args.leader_endpoints.partition(":")
        if not colon or not service or not port_list:
            raise _UsageError(
                f"--leader-endpoints {args.leader_endpoints!r}: expected SERVICE:PORT[,PORT…], "
                "e.g. my-svc:http=8080"
            )
        ports: list[Any] = []
        for item in port_list.split(","):
            name, equals, number = item.rpartition("=")
            if not number.isdigit():
                raise _UsageError(
                    f"--leader-endpoints {args.leader_endpoints!r}: port {item!r} is not NUMBER "
                    "or NAME=NUMBER"
                )
            ports.append((name, int(number)) if equals else int(number))
        try:
            hooks.append(kube.LeaderEndpoints(service, ports, metrics=metrics))
        except ValueError as exc:
            raise _UsageError(f"--leader-endpoints {args.leader_endpoints!r}: {exc}") from exc
    return hooks


# -- status / watch ----------------------------------------------------------------------------------


async def _status(lock: Lock, output: str) -> int:
    async with lock:
        observed = await lock.get(timeout=10)
    data = _status_data(lock.describe(), observed)
    if output == "json":
        print(json.dumps(data))
    else:
        print(_status_line(data))
    return 0


async def _status_selected(selector: str, namespace: str | None, output: str) -> int:
    from .kubernetes._listing import list_leases

    found = await list_leases(selector, namespace)
    rows = [_status_data(f"{ns}/{name}", observed) for ns, name, observed in found]
    if output == "json":
        print(json.dumps(rows))
    elif not rows:
        where = f"namespace {namespace!r}" if namespace else "any namespace"
        print(f"no Lease matches {selector!r} in {where}")
    else:
        for row in rows:
            print(_status_line(row))
    return 0


def _status_data(lock: str, observed: Any) -> dict[str, Any]:
    if observed is None:
        data: dict[str, Any] = {"lock": lock, "exists": False, "holder": None}
    else:
        record = observed.record
        age = None
        if record.renew_time is not None:
            age = (datetime.now(timezone.utc) - record.renew_time).total_seconds()
        data = {
            "lock": lock,
            "exists": True,
            "holder": record.holder_identity or None,
            "leaseDurationSeconds": record.lease_duration_seconds,
            "acquireTime": record.acquire_time.isoformat() if record.acquire_time else None,
            "renewTime": record.renew_time.isoformat() if record.renew_time else None,
            "renewAgeSeconds": None if age is None else round(age, 3),
            "transitions": record.leader_transitions,
            "resourceVersion": observed.version,
        }
    return data


def _status_line(data: dict[str, Any]) -> str:
    if not data["exists"]:
        return f"{data['lock']}: no such lock"
    age_text = "?" if data["renewAgeSeconds"] is None else f"{data['renewAgeSeconds']:.1f}s ago"
    return (
        f"{data['lock']}: holder {data['holder'] or '(none)'}, renewed {age_text}, "
        f"lease {data['leaseDurationSeconds']}s, transitions {data['transitions']}"
    )


async def _watch(lock: Lock, poll_interval: float) -> int:
    from . import observe  # type: ignore[attr-defined,unused-ignore]

    async with lock, observe(lock, poll_interval=poll_interval) as changes:
        async for change in changes:
            when = change.renew_time.isoformat() if change.renew_time else "-"
            print(
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                f"holder={change.holder or '(none)'} previous={change.previous or '(none)'} "
                f"transitions={change.transitions} renewTime={when}",
                flush=True,
            )
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
        if args.command == "status" and (args.selector is None) == (args.lock is None):
            raise _UsageError("status: give either --lock SPEC or -l SELECTOR")
        if args.command == "status" and args.selector is not None:
            if args.kubeconfig:
                os.environ["KUBECONFIG"] = args.kubeconfig
            return anyio.run(_status_selected, args.selector, args.namespace, args.output)
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
