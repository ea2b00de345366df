"""The ``aioleader`` command line (argparse + anyio).

``aioleader run --lock lease/NS/NAME -- CMD ARGS…`` is the sidecar/wrapper mode: CMD runs only while
this process leads. Exit codes of ``run``:

====  =====================================================================================
code  meaning
====  =====================================================================================
N     the command exited by itself with code N (the lock is released first)
0     stopped by SIGTERM/SIGINT while not leading (released if held)
2     bad command line (one line on stderr)
3     leadership was lost: the command was sent SIGTERM, then SIGKILL after the grace period;
      exiting non-zero makes Kubernetes restart the container, which campaigns again
4     fatal election error (403 Forbidden, no usable kubeconfig, unwritable lock file)
128+S the command was stopped by the forwarded signal S (e.g. 143 for SIGTERM)
====  =====================================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

import anyio
from anyio.abc import Process

from ._election import campaign
from ._exceptions import AioleaderError, ElectionError
from ._leadership import Leadership
from ._lock import Lock
from ._timing import Timing

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_LOST = 3
EXIT_FATAL = 4


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
        description="Campaign for the lock and run COMMAND while leading. On loss of "
        "leadership COMMAND gets SIGTERM, then SIGKILL after --grace-period, and aioleader "
        "exits with code 3 so that the container restarts. SIGTERM/SIGINT are forwarded.",
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
        help="seconds between SIGTERM and SIGKILL when leadership is lost "
        "(default: lease duration - renew deadline, the time before another replica may start)",
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


class _Runner:
    def __init__(self, args: argparse.Namespace, lock: Lock, timing: Timing) -> None:
        self.args = args
        self.lock = lock
        self.timing = timing
        self.cmd: list[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else list(args.cmd)
        grace = args.grace_period
        self.grace = timing.lease_duration - timing.renew_deadline if grace is None else grace
        self.process: Process | None = None
        self.exit_code: int | None = None
        self.signalled: int | None = None

    async def run(self) -> int:
        metrics = None
        if self.args.metrics_addr:
            host, port = _address(self.args.metrics_addr, "--metrics-addr")
            try:
                import prometheus_client
            except ImportError as exc:
                raise _UsageError("--metrics-addr needs pip install 'aioleader[metrics]'") from exc
            from ._metrics import PrometheusMetrics

            metrics = PrometheusMetrics()
            prometheus_client.start_http_server(port, addr=host)
        healthz = (
            _address(self.args.healthz_addr, "--healthz-addr") if self.args.healthz_addr else None
        )
        async with self.lock, anyio.create_task_group() as tg:
            tg.start_soon(self._signals, tg.cancel_scope)
            leadership: Leadership = await tg.start(
                lambda task_status: campaign(
                    self.lock, timing=self.timing, metrics=metrics, task_status=task_status
                )
            )
            if healthz is not None:
                from ._health import serve_healthz

                await tg.start(serve_healthz, healthz[0], healthz[1], lambda: [leadership])
            async with leadership.leading() as term:
                _say(
                    f"leading (term {term.number}, fencing token {term.fencing_token}): "
                    f"starting {' '.join(self.cmd)}"
                )
                await self._run_child(term.fencing_token)
            if self.exit_code is None and self.signalled is None:
                # The scope was cancelled: leadership lost (the child has been stopped).
                _say(f"leadership lost ({term.end_reason}); exiting with code {EXIT_LOST}")
                self.exit_code = EXIT_LOST
            tg.cancel_scope.cancel()  # stop campaigning: releases the lock if still ours
        if self.exit_code is not None:
            return self.exit_code
        return 0

    async def _run_child(self, fencing_token: int) -> None:
        env = {
            **os.environ,
            "AIOLEADER_FENCING_TOKEN": str(fencing_token),
            "AIOLEADER_IDENTITY": self.lock.identity,
        }
        process = await anyio.open_process(self.cmd, stdin=None, stdout=None, stderr=None, env=env)
        self.process = process
        try:
            code = await process.wait()
            self.exit_code = code if code >= 0 else 128 - code
            _say(f"command exited with code {self.exit_code}")
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_child(process)
            self.process = None

    async def _stop_child(self, process: Process) -> None:
        if process.returncode is not None:
            return
        _say(f"stopping the command: SIGTERM, SIGKILL after {self.grace:g}s")
        process.terminate()
        with anyio.move_on_after(self.grace):
            await process.wait()
            return
        process.kill()
        await process.wait()

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.signalled = signum
                process = self.process
                if process is None or process.returncode is not None:
                    _say(f"{signal.Signals(signum).name}: stopping")
                    self.exit_code = 0
                    scope.cancel()
                    return
                _say(f"{signal.Signals(signum).name}: forwarding to the command")
                process.send_signal(signum)  # its exit ends the term's work, then we release


def _say(message: str) -> None:
    print(f"aioleader: {message}", file=sys.stderr, flush=True)


# -- status / watch ----------------------------------------------------------------------------------


async def _status(lock: Lock, output: str) -> int:
    async with lock:
        observed = await lock.get(timeout=10)
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
    if output == "json":
        print(json.dumps(data))
    elif not data["exists"]:
        print(f"{data['lock']}: no such lock")
    else:
        age_text = "?" if data["renewAgeSeconds"] is None else f"{data['renewAgeSeconds']:.1f}s ago"
        print(
            f"{data['lock']}: holder {data['holder'] or '(none)'}, renewed {age_text}, "
            f"lease {data['leaseDurationSeconds']}s, transitions {data['transitions']}"
        )
    return 0


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
        lock = make_lock(
            args.lock, identity=getattr(args, "identity", None), kubeconfig=args.kubeconfig
        )
        if args.command == "run":
            timing = _timing(args)
            runner = _Runner(args, lock, timing)
            if not runner.cmd:
                raise _UsageError("run: missing the command (aioleader run --lock … -- CMD ARGS…)")
            if runner.grace < 0:
                raise _UsageError("--grace-period must be >= 0")
            return anyio.run(runner.run)
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
    except FileNotFoundError as exc:
        _fail(EXIT_FATAL, f"cannot run the command: {exc}")
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
