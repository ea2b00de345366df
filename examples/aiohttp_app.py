"""An aiohttp service whose replicas elect one leader to run a background task.

The election runs for the app's lifetime through ``cleanup_ctx``; every replica serves HTTP, only
the leader refreshes the shared exchange-rate cache::

    GET /leader    who leads, from this replica's point of view
    GET /healthz   liveness: 500 only if this replica believes it leads but its elector is stuck

Run it against the cluster of your kubeconfig (or in a pod, with ``POD_NAME`` and
``POD_NAMESPACE`` from the Downward API)::

    python examples/aiohttp_app.py            # listens on :8080

The test suite runs two instances of :func:`create_app` against the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import anyio
from aiohttp import web
from kubernetes_asyncio.client import ApiClient

from aioleader import Leadership, Term, Timing, campaign, check_health
from aioleader.kubernetes import LeaseLock

log = logging.getLogger("aiohttp_app")

LOCK_NAME = "aiohttp-rates"

Job = Callable[[Term], Awaitable[None]]


async def refresh_exchange_rates(term: Term) -> None:
    """Stand-in for leader-only work; its writes carry the fencing token."""
    log.info("refreshing exchange rates (fencing token %d)", term.fencing_token)
    await anyio.sleep(0.01)  # the I/O it would do


@dataclass
class Election:
    """What ``cleanup_ctx`` needs to run the election, and the leader-only task's progress."""

    api_client: ApiClient | None
    identity: str | None
    namespace: str
    timing: Timing
    interval: float
    job: Job
    runs: int = 0
    leaderships: list[Leadership] = field(default_factory=list)

    async def run(self, started: asyncio.Future[None]) -> None:
        """Campaign, and run the job every ``interval`` seconds while leading, until cancelled."""
        lock = LeaseLock(LOCK_NAME, self.namespace, self.identity, api_client=self.api_client)
        async with lock, anyio.create_task_group() as tg:
            leadership: Leadership = await tg.start(partial(campaign, lock, timing=self.timing))
            self.leaderships.append(leadership)
            started.set_result(None)
            while True:
                async with leadership.leading() as term:  # cancelled if leadership is lost
                    while True:
                        try:
                            await self.job(term)
                        except Exception:  # one failed run must not end the election
                            log.exception("leader-only job failed")
                        self.runs += 1
                        await anyio.sleep(self.interval)


ELECTION = web.AppKey("election", Election)


async def election_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the election runs in a background task for the app's lifetime.

    A task of its own (aiohttp's background-task pattern) because the election's task group must
    not stay open across the ``yield`` of this async generator. On cleanup the task is
    cancelled: leader work stops, then the Lease is released for the next replica.
    """
    election = app[ELECTION]
    started = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(election.run(started))
    await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        await task  # the election could not start: fail the app's startup with its error
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def leader(request: web.Request) -> web.Response:
    (leadership,) = request.app[ELECTION].leaderships
    return web.json_response(
        {
            "identity": leadership.identity,
            "leader": leadership.leader,
            "is_leader": leadership.is_leader_nowait(),
            "runs": request.app[ELECTION].runs,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    status = check_health(request.app[ELECTION].leaderships)
    return web.Response(status=200 if status.healthy else 500, text=status.text)


def create_app(
    *,
    api_client: ApiClient | None = None,
    identity: str | None = None,
    namespace: str | None = None,
    timing: Timing | None = None,
    interval: float = 60.0,
    job: Job = refresh_exchange_rates,
) -> web.Application:
    """The app. ``api_client`` defaults to the in-cluster or kubeconfig configuration,
    ``identity`` to ``$POD_NAME``, ``namespace`` to ``$POD_NAMESPACE`` (else ``default``)."""
    app = web.Application()
    app[ELECTION] = Election(
        api_client=api_client,
        identity=identity,
        namespace=namespace or os.environ.get("POD_NAMESPACE") or "default",
        timing=timing or Timing(),
        interval=interval,
        job=job,
    )
    app.cleanup_ctx.append(election_ctx)
    app.router.add_get("/leader", leader)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    web.run_app(create_app(), port=int(os.environ.get("PORT", "8080")))
