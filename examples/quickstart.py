"""aioleader's API end to end: ``elect()``, ``leading()``, ``is_leader()``, ``campaign()``.

Run it against the cluster of your kubeconfig (or ``python -m aioleader.testing --port 8080
--kubeconfig /tmp/kubeconfig`` and ``KUBECONFIG=/tmp/kubeconfig``)::

    python examples/quickstart.py

The test suite runs ``main()`` against the emulator, so this file never rots.
"""

from __future__ import annotations

import logging

import anyio
from kubernetes_asyncio.client import ApiClient

from aioleader import Term, Timing, campaign, elect
from aioleader.kubernetes import LeaseLock

log = logging.getLogger("quickstart")


async def leader_only_work(term: Term, steps: int) -> int:
    """Stand-in for work only the leader may do. The fencing token goes with every write, so
    the system written to can refuse writes from an older term."""
    done = 0
    for _ in range(steps):
        log.info("leader work step %d, fencing token %d", done, term.fencing_token)
        await anyio.sleep(0.1)
        done += 1
    return done


async def main(
    api_client: ApiClient | None = None, identity: str | None = None
) -> dict[str, object]:
    """Campaign, do leader work, confirm leadership, hand over; then the task-group style."""
    seen: dict[str, object] = {}
    new_leaders: list[str] = []
    lock = LeaseLock("quickstart", namespace="default", identity=identity, api_client=api_client)
    timing = Timing(lease_duration=15, renew_deadline=10, retry_period=2)

    async with lock:  # closes the API client if the lock created it
        async with elect(
            lock,
            timing=timing,
            release_on_cancel=True,
            on_new_leader=new_leaders.append,  # every change of holder, ours included
        ) as leadership:
            await leadership.acquired.wait()
            async with leadership.leading() as term:
                seen["steps"] = await leader_only_work(term, steps=3)
                seen["fencing_token"] = term.fencing_token
            seen["is_leader"] = await leadership.is_leader()
            seen["confirmed"] = await leadership.is_leader(confirm=True)
            seen["nowait"] = leadership.is_leader_nowait()
            seen["leader"] = leadership.leader
        # Leaving elect(): leader work was done, and the lock was released.

        async with anyio.create_task_group() as tg:
            leadership = await tg.start(campaign, lock)
            term = await leadership.wait_term()
            seen["second_fencing_token"] = term.fencing_token
            tg.cancel_scope.cancel()
    seen["new_leaders"] = new_leaders
    return seen


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(anyio.run(main))
