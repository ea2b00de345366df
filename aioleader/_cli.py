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
1     an internal error (a bug in aioleader): the traceback is printed
2     bad command line (one line on stderr)
3     leadership was lost: the command's process group was sent SIGTERM, then SIGKILL after the
      grace period; exiting non-zero makes Kubernetes restart the container, which campaigns again
4     fatal error: election (403 Forbidden, no usable kubeconfig, unwritable lock file), or the
      command's guardian process died
126   the command was found but cannot be run (not executable, a directory)
127   the command was not found
128+S the command was stopped by the forwarded signal S (e.g. 143 for SIGTERM)
====  =====================================================================================

``status`` exits 0 when the lock exists, 5 when it does not, 2 and 4 as above; ``watch`` runs
until interrupted (130 on Ctrl-C) and exits 2 or 4 as above. Every failure is one line on stderr
naming the flag or the input at fault (exit 1 only for bugs, with a traceback).

Output on stderr: the wrapper's lines start with ``aioleader:``, the guardian's with
``aioleader (guardian):``, the library's log records (``--log-level``, default ``warning``) with
``aioleader (library) LEVEL:``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

import anyio

from ._exceptions import AioleaderError, ClusterConfigError, ElectionError, LockError
from ._lock import Lock
from ._reachability import ApiMonitor
from ._sidecar import EXIT_FATAL, Sidecar, max_grace_period
from ._timing import Timing

__all__ = ["main"]

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NO_LOCK = 5
EXIT_NOT_RUNNABLE = 126
EXIT_NOT_FOUND = 127

_DEFAULT = Timing()
#: How ``watch`` checks the API while its lock is quiet (no record observed for that long).
_WATCH_IDLE = 10.0
#: The bound of ``status``'s read and of ``watch``'s probes.
_READ_TIMEOUT = 5.0
_LOG_FORMAT = "aioleader (library) %(levelname)s: %(message)s"


class _UsageError(Exception):
    pass


class _Failure(Exception):
    """A failure to report in one line with its own exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        print(f"aioleader: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _seconds(*, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, > 0 (or >= 0 with ``zero``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds, got {text!r}"
            ) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            bound = "zero or more" if zero else "greater than zero"
            raise argparse.ArgumentTypeError(f"must be {bound} seconds, got {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aioleader",
        description="Leader election for Python services on Kubernetes.",
        epilog="Exit codes: see 'aioleader run --help' and docs/operations.md.",
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
        p.add_argument(
            "--log-level",
            choices=["debug", "info", "warning", "error"],
            default="warning",
            help="the library's log records shown on stderr, prefixed 'aioleader (library)' "
            "(default: warning)",
        )

    def timing_options(p: argparse.ArgumentParser, timing: Timing, exclusive: str = "") -> None:
        p.add_argument(
            "--lease-duration",
            type=_seconds(),
            metavar="S",
            help="how long a lease holds without renewal: another candidate may take over that "
            f"long after the leader's last renewal (default: {timing.lease_duration:g}{exclusive})",
        )
        p.add_argument(
            "--renew-deadline",
            type=_seconds(),
            metavar="S",
            help="a leader that cannot renew for that long stops leading; less than "
            f"--lease-duration (default: {timing.renew_deadline:g}{exclusive})",
        )
        p.add_argument(
            "--retry-period",
            type=_seconds(),
            metavar="S",
            help="time between attempts to take or renew the lock "
            f"(default: {timing.retry_period:g}{exclusive})",
        )

    run = sub.add_parser(
        "run",
        epilog="Exit codes: N the command's own; 0 stopped by a signal while not leading; "
        "1 a bug; 2 bad command line; 3 leadership lost; 4 fatal error (403 Forbidden, no "
        "usable kubeconfig, the guardian died); 126 the command cannot be run; 127 the command "
        "was not found; 128+S the command was stopped by the forwarded signal S.",
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
    run.add_argument("--identity", help="holder identity (default: $POD_NAME, else hostname_pid)")
    timing_options(run, _DEFAULT, ", or --preset's")
    run.add_argument(
        "--preset",
        choices=["default", "latency-sensitive", "stability-first"],
        help="lease duration/renew deadline/retry period of 15/10/2, 10/8/1 or 30/20/5 seconds; "
        "not with the three flags above (default: default)",
    )
    run.add_argument(
        "--grace-period",
        type=_seconds(zero=True),
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

    status = sub.add_parser(
        "status",
        help="show who holds the lock (or each labelled Lease)",
        epilog="Exit codes: 0 the lock exists (held or not); 1 a bug; 2 bad command line; "
        "4 fatal error (unreachable API, 403 Forbidden, no usable kubeconfig); 5 no such lock.",
    )
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
    status.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="(default: text)"
    )
    status.add_argument("--shards", action="store_true", help=_SHARDS_HELP)

    watch = sub.add_parser(
        "watch",
        help="print one line per change of leader",
        epilog="Runs until interrupted (130 on Ctrl-C). Exit codes: 1 a bug; 2 bad command "
        "line; 4 fatal error (403 Forbidden, no usable kubeconfig).",
    )
    lock_options(watch)
    watch.add_argument(
        "--poll-interval",
        type=_seconds(),
        default=2.0,
        metavar="S",
        help="seconds between reads of a lock that cannot be watched (a file: lock), and "
        "between retries while the API is unavailable (default: 2)",
    )
    watch.add_argument("--shards", action="store_true", help=_SHARDS_HELP)

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
    coordinate.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account)",
    )
    coordinate.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="the library's log records shown on stderr, prefixed 'aioleader (library)' "
        "(default: warning)",
    )

    demo = sub.add_parser(
        "demo",
        help="run an election among three candidates on the embedded Kubernetes API emulator",
        description=(
            "Start the Kubernetes API emulator, run three candidates on one Lease, kill the "
            "leader, stop the next one gracefully, and print the failover times."
        ),
    )
    demo.add_argument(
        "--candidates", type=int, default=3, help="number of candidates, 3 or more (default: 3)"
    )
    timing_options(demo, Timing(4.0, 3.0, 0.5))
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


_TIMING_FLAGS = {
    "lease_duration": "--lease-duration",
    "renew_deadline": "--renew-deadline",
    "retry_period": "--retry-period",
}


def _flag_names(message: str) -> str:
    """A [`Timing`][Timing] error in the words of the command line: flags, not parameters."""
    return re.sub(
        r"\b(lease_duration|renew_deadline|retry_period)\b",
        lambda m: _TIMING_FLAGS[m.group(1)],
        message,
    )


def _timing(args: argparse.Namespace, base: Timing | None = None) -> Timing:
    explicit = [args.lease_duration, args.renew_deadline, args.retry_period]
    preset = getattr(args, "preset", None)
    if preset and any(v is not None for v in explicit):
        raise _UsageError(
            "--preset cannot be combined with --lease-duration/--renew-deadline/--retry-period"
        )
    if base is None:
        base = Timing.preset(preset) if preset else Timing()
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
        raise _UsageError(_flag_names(str(exc))) from exc


def _address(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise _UsageError(f"{flag} {value!r}: expected HOST:PORT")
    return host or "0.0.0.0", int(port)


def _say(message: str) -> None:
    print(f"aioleader: {message}", file=sys.stderr, flush=True)


# -- run -------------------------------------------------------------------------------------------


def _check_command(program: str) -> None:
    """Fail before campaigning if the command cannot be started (the shells' 127 and 126)."""
    if os.sep in program:
        path = program
        if not os.path.exists(program):
            raise _Failure(EXIT_NOT_FOUND, f"command {program!r}: no such file")
    else:
        found = shutil.which(program)
        if found is None:
            raise _Failure(EXIT_NOT_FOUND, f"command {program!r}: not found on PATH")
        path = found
    if os.path.isdir(path):
        raise _Failure(EXIT_NOT_RUNNABLE, f"command {program!r}: is a directory")
    if not os.access(path, os.X_OK):
        raise _Failure(EXIT_NOT_RUNNABLE, f"command {program!r}: not executable")


def _sidecar(args: argparse.Namespace, lock: Lock, probe_lock: Callable[[], Lock]) -> Sidecar:
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
    _check_command(cmd[0])
    metrics = None
    if args.metrics_addr:
        host, port = _address(args.metrics_addr, "--metrics-addr")
        try:
            import prometheus_client
        except ImportError as exc:
            raise _UsageError("--metrics-addr needs pip install 'aioleader[metrics]'") from exc
        from ._metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
        try:
            prometheus_client.start_http_server(port, addr=host)
        except OSError as exc:
            raise _UsageError(f"--metrics-addr {args.metrics_addr!r}: {exc.strerror}") from exc
    healthz = _address(args.healthz_addr, "--healthz-addr") if args.healthz_addr else None
    return Sidecar(
        lock,
        cmd,
        timing=timing,
        grace_period=args.grace_period,
        metrics=metrics,
        healthz=healthz,
        hooks=_hooks(args, metrics),
        probe_lock=probe_lock,
        candidate=_candidate(args, lock),
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


def _nobody(holder: str | None) -> str:
    return holder or "nobody"


async def _status(lock: Lock, output: str) -> int:
    async with lock:
        observed = await lock.get(timeout=_READ_TIMEOUT)
        candidates = await _candidates(lock)
    data = _status_data(lock.describe(), observed)
    if candidates:  # a coordinated election (an ordinary one shows none)
        data["candidates"] = candidates
    if output == "json":
        print(json.dumps(data))
    else:
        print(_status_line(data))
        for candidate in candidates or ():
            print(_candidate_line(candidate))
    return 0 if data["exists"] else EXIT_NO_LOCK


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
        if record.strategy or record.preferred_holder:
            data["strategy"] = record.strategy
            data["preferredHolder"] = record.preferred_holder
    return data


def _status_line(data: dict[str, Any]) -> str:
    if not data["exists"]:
        return f"{data['lock']}: no such lock"
    age_text = "?" if data["renewAgeSeconds"] is None else f"{data['renewAgeSeconds']:.1f}s ago"
    return (
        f"{data['lock']}: holder {_nobody(data['holder'])}, renewed {age_text}, "
        f"lease {data['leaseDurationSeconds']}s, transitions {data['transitions']}"
        + (f", strategy {data['strategy']}" if data.get("strategy") else "")
        + (f", preferred holder {data['preferredHolder']}" if data.get("preferredHolder") else "")
    )


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

    # The observer retries for ever, silently; the monitor tells when the API stops answering
    # (probing at once, then whenever nothing was observed for a while) and when it answers again.
    # renewals=True: every renewal is an answer; only changes of holder are printed.
    monitor = ApiMonitor(
        _say,
        probe_lock=lock,
        interval=poll_interval,
        timeout=_READ_TIMEOUT,
        idle=max(poll_interval, _WATCH_IDLE),
        raise_fatal=True,
    )
    async with lock, anyio.create_task_group() as tg:
        tg.start_soon(monitor.probe)
        tg.start_soon(_watch_candidates, lock, poll_interval)
        async with observe(lock, poll_interval=poll_interval, renewals=True) as changes:
            first = True
            async for change in changes:
                monitor.answered()
                if not first and change.holder == change.previous:
                    continue  # a renewal
                first = False
                when = change.renew_time.isoformat() if change.renew_time else "-"
                print(
                    f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                    f"holder={_nobody(change.holder)} previous={_nobody(change.previous)} "
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
    _say(message)
    raise SystemExit(code)


def _config_problem(exc: ClusterConfigError, flag: str | None) -> str:
    """A configuration failure in the command line's words: which flag or variable gave the
    kubeconfig, and how to give another one (not the library's ``api_client=``)."""
    if exc.source is None:
        return (
            f"the in-cluster service account: {exc.problem} (pass --kubeconfig PATH to use a "
            "kubeconfig instead)"
        )
    if flag is not None:
        return f"--kubeconfig {exc.source!r}: {exc.problem}"
    if os.environ.get("KUBECONFIG"):
        return (
            f"KUBECONFIG {exc.source!r}: {exc.problem} (pass --kubeconfig PATH or fix KUBECONFIG)"
        )
    return (
        f"kubeconfig {exc.source!r}: {exc.problem} (pass --kubeconfig PATH, set KUBECONFIG, or "
        "run in a pod)"
    )


def _log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    library = logging.getLogger("aioleader")
    library.addHandler(handler)
    library.setLevel(level.upper())
    library.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kubeconfig = getattr(args, "kubeconfig", None)
    try:
        if args.command == "demo":
            return _demo(args)
        _log_to_stderr(args.log_level)
        if args.command == "coordinate":
            return anyio.run(_coordinate, args)
        if args.command == "status" and (args.selector is None) == (args.lock is None):
            raise _UsageError("status: give either --lock SPEC or -l SELECTOR")
        if args.command == "status" and args.selector is not None:
            if args.kubeconfig:
                os.environ["KUBECONFIG"] = args.kubeconfig
            return anyio.run(_status_selected, args.selector, args.namespace, args.output)

        def new_lock() -> Lock:
            return make_lock(
                args.lock, identity=getattr(args, "identity", None), kubeconfig=kubeconfig
            )

        lock = new_lock()
        if getattr(args, "shards", False):
            return _shard_command(args, lock)
        if args.command == "run":
            return anyio.run(_sidecar(args, lock, new_lock).run)
        if args.command == "status":
            return anyio.run(_status, lock, args.output)
        if args.command == "watch":
            return anyio.run(_watch, lock, args.poll_interval)
    except BaseExceptionGroup as group:
        # Our own task groups wrap what the election raised; one error is reported as itself.
        leaves = group.exceptions
        if isinstance(leaves[0], AioleaderError) and all(
            isinstance(leaf, AioleaderError) for leaf in leaves
        ):
            _fail(EXIT_FATAL, _fatal_line(leaves[0], kubeconfig))
        raise
    except _UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    except _Failure as exc:
        _fail(exc.code, str(exc))
    except AioleaderError as exc:
        _fail(EXIT_FATAL, _fatal_line(exc, kubeconfig))
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)  # pragma: no cover - argparse rejects unknown commands


def _fatal_line(exc: AioleaderError, kubeconfig: str | None) -> str:
    if isinstance(exc, ClusterConfigError):
        return _config_problem(exc, kubeconfig)
    text = " ".join(str(exc).split())
    if isinstance(exc, ElectionError) or not isinstance(exc, LockError):
        return text
    return f"{text} (the API server may be unreachable)"


_SHARDS_HELP = (
    "the lock's name is a shard group (elect_shards(group=NAME)): show its live members and "
    "the shards each leads"
)


def _shard_command(args: argparse.Namespace, lock: Lock) -> int:
    from ._shard_status import print_group_status, watch_group

    if not lock.supports_listing:
        raise _UsageError(f"--shards: {type(lock).__name__} cannot list a shard group's locks")
    group = args.lock.rstrip("/").rsplit("/", 1)[-1].removeprefix("file:")
    if args.command == "status":
        return anyio.run(print_group_status, lock, group, args.output)
    return anyio.run(watch_group, lock, group, args.poll_interval)


def _demo(args: argparse.Namespace) -> int:
    if args.candidates < 3:
        raise _UsageError("demo: --candidates must be at least 3")
    timing = _timing(args, Timing(4.0, 3.0, 0.5))
    from ._demo import run_demo

    anyio.run(lambda: run_demo(timing=timing, candidates=args.candidates))
    return 0
