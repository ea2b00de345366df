"""A FastAPI service whose replicas elect one leader to run a scheduled job.

Every replica serves HTTP; only the leader runs the scheduler. The election runs for the app's
lifetime, in the lifespan's task group::

    GET /leader    who leads, from this replica's point of view
    GET /healthz   liveness: 500 only if this replica believes it leads but its elector is stuck
    GET /readyz    readiness: the app has started

Run it against the cluster of your kubeconfig (or in a pod: see ``examples/deploy/``)::

    pip install aioleader fastapi uvicorn
    python examples/fastapi_app.py            # listens on :8080

The identity is ``$POD_NAME`` (the Downward API), the Lease lives in ``$POD_NAMESPACE``. The test
suite runs two instances of :func:`create_app` against the emulator.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from kubernetes_asyncio.client import ApiClient
from pydantic import BaseModel

from aioleader import Leadership, Term, Timing, campaign, check_health
from aioleader.kubernetes import LeaseLock

log = logging.getLogger("fastapi_app")

#: The Lease the replicas compete for (``examples/deploy/role.yaml`` grants access to it alone).
LOCK_NAME = "fastapi-scheduler"

Job = Callable[[Term], Awaitable[None]]


async def purge_expired_sessions(term: Term) -> None:
    """Stand-in for the scheduled job. The fencing token goes with every write it makes, so the
    store can refuse writes from a leader that has been replaced."""
    log.info("purging expired sessions (fencing token %d)", term.fencing_token)
    await anyio.sleep(0.01)  # the I/O it would do


class Scheduler:
    """Runs ``job`` every ``interval`` seconds, but only while this replica leads.

    The job runs inside ``leadership.leading()``: if a renewal misses the renew deadline, or
    another replica takes the lock, the job is cancelled before anybody else can start leading.
    """

    def __init__(self, job: Job, interval: float) -> None:
        self.job = job
        self.interval = interval
        self.runs = 0

    async def run(self, leadership: Leadership) -> None:
        while True:
            async with leadership.leading() as term:
                log.info("leading (fencing token %d): scheduler started", term.fencing_token)
                while True:
                    try:
                        await self.job(term)
                    except Exception:  # one failed run must not stop the schedule
                        log.exception("scheduled job failed")
                    self.runs += 1
                    await anyio.sleep(self.interval)
            log.warning(
                "stopped leading (fencing token %d: %s): scheduler paused",
                term.fencing_token,
                term.end_reason,
            )


class LeaderStatus(BaseModel):
    identity: str
    leader: str | None
    is_leader: bool
    fencing_token: int | None
    scheduler_runs: int


def create_app(
    *,
    api_client: ApiClient | None = None,
    identity: str | None = None,
    namespace: str | None = None,
    timing: Timing | None = None,
    interval: float = 30.0,
    job: Job = purge_expired_sessions,
) -> FastAPI:
    """The app. ``api_client`` defaults to the in-cluster or kubeconfig configuration,
    ``identity`` to ``$POD_NAME``, ``namespace`` to ``$POD_NAMESPACE`` (else ``default``)."""
    namespace = namespace or os.environ.get("POD_NAMESPACE") or "default"
    timing = timing or Timing()
    scheduler = Scheduler(job, interval)
    elections: list[Leadership] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lock = LeaseLock(LOCK_NAME, namespace, identity=identity, api_client=api_client)
        # Entered and left by the same (lifespan) task, so the task group may span the yield.
        async with lock, anyio.create_task_group() as tg:
            leadership: Leadership = await tg.start(partial(campaign, lock, timing=timing))
            elections.append(leadership)
            tg.start_soon(scheduler.run, leadership)
            yield
            # Shutdown: the job is cancelled and awaited, then the Lease is released, so that
            # another replica takes over at once instead of after the lease duration.
            tg.cancel_scope.cancel()

    app = FastAPI(title="aioleader FastAPI example", lifespan=lifespan)

    @app.get("/leader")
    async def leader() -> LeaderStatus:
        (leadership,) = elections
        term = leadership.term
        return LeaderStatus(
            identity=leadership.identity,
            leader=leadership.leader,
            is_leader=leadership.is_leader_nowait(),
            fencing_token=term.fencing_token if term is not None and term.active else None,
            scheduler_runs=scheduler.runs,
        )

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> PlainTextResponse:
        status = check_health(elections)
        return PlainTextResponse(status.text, status_code=200 if status.healthy else 500)

    @app.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> str:
        return "ok"

    return app


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(), host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
