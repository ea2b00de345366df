"""One process holding N leases: ``python -m bench._scale --impl aioleader --leases 1000 ...``.

Started by :func:`bench._scaling.run_scale` (one fresh process per size, so that CPU time and
memory are this size's alone). Each lease is its own election with a single candidate, so after
the ramp every election is led by this process and renews every retry period; all of them share
one ``ApiClient`` (one aiohttp connection pool, kubernetes_asyncio's default of 100 connections).

Prints one JSON object a line on stdout:

* ``{"event": "window-start", "t": T}`` when every election leads (or the ramp timed out), and
  ``{"event": "window-end", "t": T}`` after ``--duration`` seconds of steady state, so that the
  caller can read the emulator's CPU time over the same window;
* ``{"event": "result", ...}``: the figures (see :class:`bench._scaling.ScaleResult`).

What is measured in the window: process CPU time (user + system, all threads) per successful
renewal; renewals done against the ``leases / retry_period`` a second that the timing asks for;
terms lost (a renewal that missed the renew deadline, or a lease lost to someone else) in the
window and during the ramp; the longest time a lease went without a successful renewal, and how
often that exceeded RD and LD; renewal latency (aioleader: send of the first request to success, as
its ``ElectionMetrics.renewed`` reports it; kubernetes_asyncio: one ``try_acquire_or_renew`` call,
its GET + PUT); event-loop lag (how late a 100 ms ticker wakes up); resident memory before the
first candidate and after the window.

``--mode follow`` measures following instead: the worker first creates the Leases held by
somebody else for an hour, so that every election follows its Lease for the whole run; the
figures are the process's open sockets at the end of the window (its connections to the API
server), CPU and memory (the caller adds the server's open watches and the requests it saw).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from aioleader import Term, Timing, campaign
from aioleader.kubernetes import LeaseLock

from ._stats import percentile

TICK = 0.1


def open_sockets() -> int:
    """Sockets the process holds open (Linux ``/proc/self/fd``): its connections."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return -1
    count = 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


async def hold_elsewhere(api: Any, namespace: str, names: list[str]) -> None:
    """Create ``names`` as Leases held by ``elsewhere`` for an hour (renewed now)."""
    from datetime import datetime, timezone

    from kubernetes_asyncio.client import CoordinationV1Api

    leases: Any = CoordinationV1Api(api)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    limiter = anyio.CapacityLimiter(32)

    async def create(name: str) -> None:
        async with limiter:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "holderIdentity": "elsewhere",
                    "leaseDurationSeconds": 3600,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            await leases.create_namespaced_lease(namespace, body)

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(create, name)


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``), else the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Tally:
    """What the candidates report, shared by all of them (one event loop: no locking).

    Besides counts, the gaps between successive successful renewals of each lease (from the
    acquisition for the first one): a gap longer than RD is a renewal that a strict elector
    misses (aioleader then ends the term; kubernetes_asyncio's elector does not notice), one
    longer than LD lets any other candidate take the lease. Only gaps that end in the window
    count, and at its end so does every lease's open gap.
    """

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.leading = 0
        self.renewals = 0
        self.renew_latencies: list[float] = []
        self.ended: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.lags: list[float] = []
        self.last_renewal: dict[str, float] = {}
        self.window = False
        self.max_gap = 0.0
        self.gaps_over_rd = 0
        self.gaps_over_ld = 0

    def leading_changed(self, leading: bool) -> None:
        self.leading += 1 if leading else -1

    def acquired(self, name: str) -> None:
        self.last_renewal[name] = anyio.current_time()

    def lost(self, name: str) -> None:
        self.last_renewal.pop(name, None)

    def renewed(self, name: str, seconds: float) -> None:
        now = anyio.current_time()
        self.renewals += 1
        self.renew_latencies.append(seconds)
        last = self.last_renewal.get(name)
        self.last_renewal[name] = now
        if last is not None and self.window:
            self._gap(now - last)

    def _gap(self, gap: float) -> None:
        self.max_gap = max(self.max_gap, gap)
        self.gaps_over_rd += gap > self.timing.renew_deadline
        self.gaps_over_ld += gap > self.timing.lease_duration

    def close_window(self) -> None:
        now = anyio.current_time()
        for last in self.last_renewal.values():
            self._gap(now - last)
        self.window = False


class Metrics:
    """:class:`aioleader.ElectionMetrics` feeding a :class:`Tally`."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def leading(self, name: str, leading: bool) -> None:
        self.tally.leading_changed(leading)
        if not leading:
            self.tally.lost(name)

    def term_started(self, name: str) -> None:
        self.tally.acquired(name)

    def renewed(self, name: str, seconds: float) -> None:
        self.tally.renewed(name, seconds)

    def slow_path(self, name: str) -> None:
        self.tally.errors["slow_path"] += 1

    def api_error(self, name: str, kind: str) -> None:
        self.tally.errors[kind] += 1

    def hook_failed(self, name: str, hook: str) -> None:
        self.tally.errors["hook"] += 1


async def ticker(tally: Tally) -> None:
    while True:
        before = anyio.current_time()
        await anyio.sleep(TICK)
        tally.lags.append(anyio.current_time() - before - TICK)


async def aioleader_candidate(
    api: Any, name: str, namespace: str, identity: str, timing: Timing, tally: Tally
) -> None:
    def stopped(term: Term) -> None:
        tally.ended[term.end_reason or "?"] += 1

    lock = LeaseLock(name, namespace=namespace, identity=identity, api_client=api)
    await campaign(
        lock,
        timing=timing,
        release_on_cancel=False,  # shutdown is not measured; 10,000 releases would be slow
        metrics=Metrics(tally),
        on_stopped_leading=stopped,
        name=name,
    )


async def kubernetes_asyncio_candidate(
    api: Any, name: str, namespace: str, identity: str, timing: Timing, tally: Tally
) -> None:
    """kubernetes_asyncio's elector as documented; re-run after a loss, as a supervisor would."""
    from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import (
        LeaseLock as K8sLeaseLock,
    )

    leading = False

    async def started() -> None:
        nonlocal leading
        leading = True
        tally.leading_changed(True)
        tally.acquired(name)

    async def stopped() -> None:
        nonlocal leading
        leading = False
        tally.leading_changed(False)
        tally.lost(name)
        tally.ended["lost"] += 1

    lock = K8sLeaseLock(name, namespace, identity, api)
    while True:
        election: Any = leaderelection.LeaderElection(
            electionconfig.Config(
                lock,
                lease_duration=int(timing.lease_duration),
                renew_deadline=timing.renew_deadline,
                retry_period=timing.retry_period,
                onstarted_leading=started,
                onstopped_leading=stopped,
            )
        )
        attempt: Callable[[], Awaitable[bool]] = election.try_acquire_or_renew

        async def timed(attempt: Callable[[], Awaitable[bool]] = attempt) -> bool:
            sent = anyio.current_time()
            ok = await attempt()
            if ok and leading:
                tally.renewed(name, anyio.current_time() - sent)
            return ok

        election.try_acquire_or_renew = timed
        try:
            await election.run()
        except Exception as exc:  # its transport errors escape run(): count, restart
            tally.errors[type(exc).__name__] += 1
            if leading:
                await stopped()
            await anyio.sleep(timing.retry_period)


CANDIDATES = {
    "aioleader": aioleader_candidate,
    "kubernetes_asyncio": kubernetes_asyncio_candidate,
}


def emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


async def make_api_client(host: str | None, kubeconfig: str | None, pool: int) -> Any:
    """One ``ApiClient`` for every election; ``pool`` > 0 sets its connection pool size
    (``connection_pool_maxsize``, kubernetes_asyncio's default is 100)."""
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient, Configuration

    configuration = Configuration(host=host) if host else Configuration()
    if not host:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    if pool > 0:
        configuration.connection_pool_maxsize = pool
    return ApiClient(configuration)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    timing = Timing(*(float(x) for x in args.timing.split(",")))
    tally = Tally(timing)
    api = await make_api_client(args.host, args.kubeconfig, args.pool)
    candidate = CANDIDATES[args.impl]
    result: dict[str, Any] = {
        "impl": args.impl,
        "leases": args.leases,
        "mode": args.mode,
        "timing": args.timing,
        "pool": api.rest_client.pool_manager.connector.limit,
    }
    names = [f"{args.prefix}-{i}" for i in range(args.leases)]
    if args.mode == "follow":
        await hold_elsewhere(api, args.namespace, names)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker, tally)
            await anyio.sleep(0.5)
            rss_before = rss_bytes()
            ramp_started = anyio.current_time()
            for i, name in enumerate(names):
                tg.start_soon(
                    candidate, api, name, args.namespace, f"{args.impl}-{i}", timing, tally
                )
            if args.mode == "follow":
                # Every first attempt finds the Lease held; then the followers settle.
                await anyio.sleep(min(args.ramp_timeout, 5.0 + args.leases / 500))
            with anyio.move_on_after(args.ramp_timeout):
                while args.mode == "lead" and tally.leading < args.leases:
                    await anyio.sleep(0.05)
            ramp = anyio.current_time() - ramp_started
            result.update(
                ramp_s=ramp,
                leading_at_start=tally.leading,
                ended_in_ramp=sum(tally.ended.values()),
                errors_in_ramp=sum(tally.errors.values()),
            )
            await _window(args, tally, result)
            result["rss_before"] = rss_before
            result["rss_after"] = rss_bytes()
            tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(10, shield=True):
            await api.close()
    return result


async def _window(args: argparse.Namespace, tally: Tally, result: dict[str, Any]) -> None:
    await anyio.sleep(1.0)  # let the last acquisitions' first renewals settle
    tally.renew_latencies.clear()
    tally.lags.clear()
    ended, errors, renewals = sum(tally.ended.values()), Counter(tally.errors), tally.renewals
    emit({"event": "window-start", "t": anyio.current_time()})
    tally.window = True
    cpu0, wall0 = time.process_time(), anyio.current_time()
    await anyio.sleep(args.duration)
    cpu1, wall1 = time.process_time(), anyio.current_time()
    tally.close_window()
    result["sockets"] = open_sockets()
    emit({"event": "window-end", "t": wall1})
    done = tally.renewals - renewals
    result.update(
        window_s=wall1 - wall0,
        cpu_s=cpu1 - cpu0,
        renewals=done,
        renewals_expected=args.leases * (wall1 - wall0) / float(args.timing.split(",")[2]),
        ended_in_window=sum(tally.ended.values()) - ended,
        end_reasons=dict(tally.ended),
        errors_in_window=dict(tally.errors - errors),
        leading_at_end=tally.leading,
        renew_p50=percentile(tally.renew_latencies, 0.50),
        renew_p99=percentile(tally.renew_latencies, 0.99),
        renew_max=max(tally.renew_latencies, default=None),
        lag_p50=percentile(tally.lags, 0.50),
        lag_p99=percentile(tally.lags, 0.99),
        lag_max=max(tally.lags, default=None),
        max_gap=tally.max_gap,
        gaps_over_rd=tally.gaps_over_rd,
        gaps_over_ld=tally.gaps_over_ld,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--impl", choices=sorted(CANDIDATES), required=True)
    parser.add_argument("--leases", type=int, required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--ramp-timeout", type=float, default=60.0)
    parser.add_argument("--timing", default="15,10,2", help="LD,RD,RP in seconds")
    parser.add_argument("--host", help="the API server URL (the emulator)")
    parser.add_argument("--kubeconfig", help="a kubeconfig (a real cluster)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument(
        "--mode", choices=("lead", "follow"), default="lead", help="hold the leases or follow them"
    )
    parser.add_argument("--prefix", default="bench-scale")
    parser.add_argument("--cpus", default="", help="pin to these CPUs, e.g. 0")
    parser.add_argument(
        "--pool", type=int, default=0, help="connection pool size (0: the client's default)"
    )
    args = parser.parse_args()
    cpus = {int(c) for c in args.cpus.split(",") if c.strip()}
    if cpus:
        os.sched_setaffinity(0, cpus)
    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)
    for noisy in ("kubernetes_asyncio", "aioleader"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    result = anyio.run(run, args, backend="asyncio")
    result["cpus"] = sorted(os.sched_getaffinity(0))
    emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
