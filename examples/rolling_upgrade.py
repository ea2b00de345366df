"""Leadership that stays on the old version until a rolling upgrade completes (KEP-4355).

A controller whose leader must never run newer code than some replica can follow (a schema it
writes, a protocol its followers speak) publishes a LeaseCandidate with its version, and lets
kube-apiserver's election controller choose: with ``OldestEmulationVersion`` the oldest version
leads. During a rollout of ``1.30.0 → 1.31.0`` the leader stays a 1.30 replica while any is left;
when the last one goes, a 1.31 replica is named. A 1.29 replica joining (a rollback) is named
``preferredHolder`` and the leader hands over to it at once.

Run it in the Deployment of ``examples/deploy/coordinated/`` (``APP_VERSION`` comes from the
image tag there; the cluster needs the ``CoordinatedLeaderElection`` feature gate)::

    POD_NAME=pod-1 APP_VERSION=1.30.0 python examples/rolling_upgrade.py
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import anyio
from kubernetes_asyncio.client import ApiClient

from aioleader import Term, Timing, elect, stop_on_signals
from aioleader.kubernetes import LeaseCandidate, LeaseLock

log = logging.getLogger("rolling-upgrade")

LOCK_NAME = "rolling-upgrade"


async def reconcile(term: Term, version: str) -> None:
    """The leader's work: here, a heartbeat naming the version that leads."""
    while True:
        log.info(
            "leader %s runs version %s (fencing token %d)",
            term.identity,
            version,
            term.fencing_token,
        )
        await anyio.sleep(5)


async def replica(
    api_client: ApiClient | None,
    *,
    identity: str | None = None,
    version: str,
    namespace: str = "default",
    timing: Timing | None = None,
    on_term: Callable[[Term], object] | None = None,
) -> None:
    """One replica: a candidate at ``version`` that leads when the controller names it."""
    lock = LeaseLock(LOCK_NAME, namespace, identity=identity, api_client=api_client)
    candidate = LeaseCandidate(binary_version=version, emulation_version=version)
    async with lock, elect(lock, candidate=candidate, timing=timing) as leadership:
        while True:
            async with leadership.leading() as term:
                if on_term is not None:
                    on_term(term)
                await reconcile(term, version)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    version = os.environ["APP_VERSION"]
    namespace = os.environ.get("POD_NAMESPACE", "default")
    async with stop_on_signals():  # SIGTERM: work cancelled, candidate withdrawn, Lease released
        await replica(None, version=version, namespace=namespace)


if __name__ == "__main__":
    anyio.run(main)
