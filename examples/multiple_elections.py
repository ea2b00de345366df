"""Several elections in one process, each with its own timing and its own leader-only work.

A replica may lead the ``scheduler`` election, the ``cleanup`` election, both or neither: they are
independent Leases. The scheduler wants quick failover (client-go's defaults, 15/10/2); the cleanup
job can wait and should not flap under a slow API server (``Timing.stability_first()``, 30/20/5).
All the locks share one ``ApiClient``, so one connection pool serves every election::

    POD_NAME=pod-1 python examples/multiple_elections.py
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial

import anyio
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration

from aioleader import Leadership, Term, Timing, campaign, stop_on_signals
from aioleader.kubernetes import LeaseLock

log = logging.getLogger("multiple_elections")

Job = Callable[[Term], Awaitable[None]]


async def schedule_reports(term: Term) -> None:
    log.info("scheduling reports (fencing token %d)", term.fencing_token)
    await anyio.sleep(0.01)  # the I/O it would do


async def delete_orphans(term: Term) -> None:
    log.info("deleting orphaned uploads (fencing token %d)", term.fencing_token)
    await anyio.sleep(0.01)


@dataclass
class Election:
    """One election: its Lease, its timing, and the job its leader runs every ``interval``."""

    lock_name: str
    timing: Timing
    job: Job
    interval: float
    runs: int = 0

    async def lead(self, leadership: Leadership) -> None:
        while True:
            async with leadership.leading() as term:
                log.info("%s: leading (fencing token %d)", self.lock_name, term.fencing_token)
                while True:
                    await self.job(term)
                    self.runs += 1
                    await anyio.sleep(self.interval)
            log.warning(
                "%s: stopped leading (fencing token %d: %s)",
                self.lock_name,
                term.fencing_token,
                term.end_reason,
            )


def default_elections() -> dict[str, Election]:
    return {
        "scheduler": Election("scheduler", Timing(), schedule_reports, interval=10),
        "cleanup": Election("cleanup", Timing.stability_first(), delete_orphans, interval=60),
    }


async def load_api_client() -> ApiClient:
    """In a pod, the service account; elsewhere ``$KUBECONFIG`` or ``~/.kube/config``."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return ApiClient(configuration)
    return await config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


async def main(
    *,
    api_client: ApiClient | None = None,
    identity: str | None = None,
    namespace: str | None = None,
    elections: Mapping[str, Election] | None = None,
    stop: anyio.Event | None = None,
    started: Callable[[Mapping[str, Leadership]], object] | None = None,
) -> None:
    """Run every election until ``stop`` is set; then each leader's work is cancelled and its
    Lease released. ``started`` gets the leaderships once every campaign has started."""
    namespace = namespace or os.environ.get("POD_NAMESPACE") or "default"
    elections = elections if elections is not None else default_elections()
    stop = stop if stop is not None else anyio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if api_client is None:
            api_client = await load_api_client()
            stack.push_async_callback(api_client.close)  # after every election has released
        async with anyio.create_task_group() as tg:
            leaderships: dict[str, Leadership] = {}
            for name, election in elections.items():
                # Locks borrow the shared client: they never close it.
                lock = LeaseLock(election.lock_name, namespace, identity, api_client=api_client)
                leaderships[name] = await tg.start(
                    partial(campaign, lock, timing=election.timing, name=name)
                )
                tg.start_soon(election.lead, leaderships[name])
            if started is not None:
                started(leaderships)
            await stop.wait()
            tg.cancel_scope.cancel()


async def run_until_signalled() -> None:
    """Run until SIGTERM or Ctrl+C: then every leader's work is cancelled and awaited, and
    every Lease this process holds is released before it exits."""
    async with stop_on_signals():
        await main()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    anyio.run(run_until_signalled)
