"""Run one leader-election candidate of another library, for ``tests/test_interop.py``.

Each peer runs in its own process so that the test can SIGKILL it (a crash: no release, no last
word). The peers are used exactly as their documentation shows, pointed at the emulator through a
kubeconfig::

    python tests/_interop_peers.py kubernetes lease --kubeconfig K --name lock --identity py-1
    python tests/_interop_peers.py kubernetes_asyncio configmap --kubeconfig K ... --wait

* ``kubernetes``: the official client's ``kubernetes.leaderelection`` (synchronous; the leader's
  ``onstarted_leading`` runs in a daemon thread and the renew loop in the main thread);
* ``kubernetes_asyncio``: ``kubernetes_asyncio.leaderelection`` (``onstarted_leading`` runs as a
  task that is cancelled when renewal fails).

The process prints one event a line on stdout, flushed, each with ``time.monotonic()`` (on Linux
CLOCK_MONOTONIC, the clock of every process on the machine, which is also what the test's asyncio
loop and so ``anyio.current_time()`` use):

* ``HELLO <t>``: imported and configured; about to campaign (with ``--wait``, after it has read a
  line on stdin, so that the test can start the process early and let it campaign later);
* ``LEADING <t>``: ``onstarted_leading`` was called;
* ``STOPPED <t>``: ``onstopped_leading`` was called; the process exits right after, which is
  when its "leader work" (the process) ends.

The peers' own logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import threading
import time
from typing import Any


def say(event: str) -> None:
    # One write per line: the renew loop and the onstarted thread may both print.
    sys.stdout.write(f"{event} {time.monotonic():.6f}\n")
    sys.stdout.flush()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=("kubernetes", "kubernetes_asyncio"))
    parser.add_argument("lock", choices=("lease", "configmap"))
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--name", default="lock")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--identity", required=True)
    # Both peers refuse a retry period or renew deadline under 1 s and need an integral lease
    # duration (they write it with int(str(lease_duration))).
    parser.add_argument("--lease-duration", type=int, default=2)
    parser.add_argument("--renew-deadline", type=float, default=1.5)
    parser.add_argument("--retry-period", type=float, default=1)
    parser.add_argument("--wait", action="store_true", help="campaign after a line on stdin")
    return parser.parse_args(argv)


def run_kubernetes(args: argparse.Namespace) -> None:
    # As Any: the package ships py.typed, but its leaderelection code is untyped.
    config: Any = importlib.import_module("kubernetes.config")
    electionconfig: Any = importlib.import_module("kubernetes.leaderelection.electionconfig")
    leaderelection: Any = importlib.import_module("kubernetes.leaderelection.leaderelection")
    resourcelock = "kubernetes.leaderelection.resourcelock"
    if args.lock == "lease":
        lock_type = importlib.import_module(f"{resourcelock}.leaselock").LeaseLock
    else:
        lock_type = importlib.import_module(f"{resourcelock}.configmaplock").ConfigMapLock

    config.load_kube_config(config_file=args.kubeconfig)
    lock = lock_type(args.name, args.namespace, args.identity)

    def started() -> None:
        say("LEADING")  # runs in a daemon thread; the work "goes on" until the process exits

    def stopped() -> None:
        say("STOPPED")

    election = leaderelection.LeaderElection(
        electionconfig.Config(
            lock,
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
            onstarted_leading=started,
            onstopped_leading=stopped,
        )
    )
    ready(args)
    election.run()


async def run_kubernetes_asyncio(args: argparse.Namespace) -> None:
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient
    from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
    from kubernetes_asyncio.leaderelection.resourcelock.configmaplock import ConfigMapLock
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

    await config.load_kube_config(config_file=args.kubeconfig)
    async with ApiClient() as api:
        lock_type: Any = LeaseLock if args.lock == "lease" else ConfigMapLock
        lock = lock_type(args.name, args.namespace, args.identity, api)

        async def started() -> None:
            say("LEADING")
            await asyncio.Event().wait()  # leader work until cancelled

        async def stopped() -> None:
            say("STOPPED")

        election = leaderelection.LeaderElection(
            electionconfig.Config(
                lock,
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
                onstarted_leading=started,
                onstopped_leading=stopped,
            )
        )
        await asyncio.to_thread(ready, args)
        await election.run()


def ready(args: argparse.Namespace) -> None:
    say("HELLO")
    if args.wait:
        sys.stdin.readline()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG,
        format=f"%(asctime)s {args.identity} %(name)s %(levelname)s %(message)s",
    )
    # Only the elections' own logs: the clients' wire logs would drown them.
    for noisy in ("urllib3", "kubernetes.client", "kubernetes_asyncio.client", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.peer == "kubernetes":
        run_kubernetes(args)
    else:
        asyncio.run(run_kubernetes_asyncio(args))
    # The official client's onstarted thread is a daemon; nothing else must keep us alive.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    threading.current_thread().name = "peer"
    sys.exit(main())
