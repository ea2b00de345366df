"""``aioleader coordinate`` (:class:`~aioleader.kubernetes.Coordinator`) on the emulator, with
kube-apiserver's own controller running too (it leaves ``aioleader.dev/HighestPriority`` alone).

Real time with a short election window, as in ``test_coordinated.py``; the priority strategy's
pure decisions are checked with plain objects in ``test_coordination.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from aioleader import Leadership, Timing
from aioleader.kubernetes import Coordinator, LeaseCandidate, LeaseLock
from aioleader.testing import KubeEmulator, TermLog, lead_forever

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

NS = "default"
LOCK = "worker"
HP = "aioleader.dev/HighestPriority"
WINDOW = 0.4
TIMING = Timing(lease_duration=3, renew_deadline=2, retry_period=0.5)
COORDINATOR_TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator(bookmark_interval=0.2, coordinated_election=True, election_window=WINDOW)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


async def wait_for(predicate: Any, timeout: float = 10.0) -> float:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)
    return anyio.current_time()


async def coordinator(emu: KubeEmulator, identity: str) -> Coordinator:
    lock = LeaseLock(
        "aioleader-coordinator", NS, identity=identity, api_client=await emu.api_client(identity)
    )
    return Coordinator(lock, election_window=WINDOW, interval=0.1, timing=COORDINATOR_TIMING)


class Replicas:
    def __init__(self, emu: KubeEmulator, tg: anyio.abc.TaskGroup) -> None:
        self.emu, self.tg = emu, tg
        self.log = TermLog(tolerance=0.05)
        self.leaderships: dict[str, Leadership] = {}

    async def join(self, identity: str, priority: int) -> None:
        lock = LeaseLock(
            LOCK, NS, identity=identity, api_client=await self.emu.api_client(identity)
        )
        candidate = LeaseCandidate(binary_version="2.0.0", strategy=HP, priority=priority)
        self.leaderships[identity] = await self.tg.start(
            lambda task_status: lead_forever(
                lock, self.log, candidate=candidate, timing=TIMING, task_status=task_status
            )
        )

    def leaders(self) -> list[str]:
        return sorted(n for n, ls in self.leaderships.items() if ls.is_leader_nowait())


async def test_the_highest_priority_leads_and_a_higher_one_takes_over(
    cluster: KubeEmulator,
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon((await coordinator(cluster, "coordinator-a")).run)
        replicas = Replicas(cluster, tg)
        await replicas.join("p1", 1)
        await replicas.join("p5", 5)
        await replicas.join("p3", 3)
        await wait_for(lambda: replicas.leaders() == ["p5"])
        lease = cluster.get_object("leases", NS, LOCK)
        assert lease is not None
        assert (lease["spec"]["holderIdentity"], lease["spec"]["strategy"]) == ("p5", HP)

        # A replica with a higher priority joins: named preferredHolder, p5 hands over at once.
        joined = anyio.current_time()
        await replicas.join("p9", 9)
        led = await wait_for(lambda: replicas.leaders() == ["p9"])
        print(f"HighestPriority handover: p9 leading {led - joined:.3f} s after it joined")
        assert led - joined < TIMING.retry_period + 2 * WINDOW + 1.0
        tg.cancel_scope.cancel()
    assert replicas.log.overlaps == []
    assert replicas.log.fencing_monotonic


async def test_candidates_that_do_not_answer_pings_are_not_elected(cluster: KubeEmulator) -> None:
    api: Any = client.CoordinationV1beta1Api(await cluster.api_client("test"))
    await api.create_namespaced_lease_candidate(
        NS,
        {
            "metadata": {"name": "silent", "labels": {"aioleader.dev/priority": "100"}},
            "spec": {
                "leaseName": LOCK,
                "binaryVersion": "2.0.0",
                "strategy": HP,
                "renewTime": stamp(datetime.now(timezone.utc) - timedelta(seconds=30)),
            },
        },
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon((await coordinator(cluster, "coordinator-a")).run)
        replicas = Replicas(cluster, tg)
        await replicas.join("p1", 1)
        await wait_for(lambda: replicas.leaders() == ["p1"])
        silent = cluster.get_object("leasecandidates", NS, "silent")
        assert silent is not None
        assert silent["spec"]["pingTime"] > silent["spec"]["renewTime"]
        lease = cluster.get_object("leases", NS, LOCK)
        assert lease is not None
        assert "preferredHolder" not in lease["spec"]
        tg.cancel_scope.cancel()


async def test_only_one_coordinator_acts_and_another_takes_over(cluster: KubeEmulator) -> None:
    first = await coordinator(cluster, "coordinator-a")
    second = await coordinator(cluster, "coordinator-b")
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def run_first() -> None:
            with scope:
                await first.run()

        tg.start_soon(run_first)
        replicas = Replicas(cluster, tg)
        await replicas.join("p1", 1)
        await wait_for(lambda: replicas.leaders() == ["p1"])
        assert first.steps > 0
        # A second coordinator campaigns but does not act while the first one leads.
        tg.start_soon(second.run)
        await anyio.sleep(5 * WINDOW)
        assert second.steps == 0
        # The first one stops (and releases its Lease): the second takes over the elections.
        scope.cancel()
        await replicas.join("p7", 7)
        await wait_for(lambda: replicas.leaders() == ["p7"])
        assert second.steps > 0
        tg.cancel_scope.cancel()
    assert replicas.log.overlaps == []


async def test_oldest_emulation_version_is_left_to_kube_apiserver(cluster: KubeEmulator) -> None:
    coord = await coordinator(cluster, "coordinator-a")
    async with anyio.create_task_group() as tg:
        tg.start_soon(coord.run)
        log = TermLog()
        lock = LeaseLock(LOCK, NS, identity="oev", api_client=await cluster.api_client("oev"))
        candidate = LeaseCandidate(binary_version="1.31.0", emulation_version="1.31.0")
        leadership: Leadership = await tg.start(
            lambda task_status: lead_forever(
                lock, log, candidate=candidate, timing=TIMING, task_status=task_status
            )
        )
        await wait_for(leadership.is_leader_nowait)
        await anyio.sleep(3 * WINDOW)
        assert coord.steps == 0
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategies": {}}, "at least one strategy"),
        ({"strategies": {"Nope": lambda cs: None}}, "a strategy name must be"),
        ({"election_window": 0}, "election_window must be positive"),
        ({"interval": float("inf")}, "interval must be positive and finite"),
        ({"namespace": "Bad_NS"}, "namespace must be a DNS-1123 label"),
    ],
)
async def test_bad_coordinator_options_are_refused(options: dict[str, Any], message: str) -> None:
    lock = LeaseLock("c", NS, identity="a", api_client=object())
    with pytest.raises(ValueError, match=message):
        Coordinator(lock, **options)
