"""Coordinated leader election (KEP-4355) end to end: :class:`LeaseCandidate` through the real
client, against the emulator running kube-apiserver's election controller.

The server clock follows real time (candidates write ``renewTime`` with their own wall clock,
which the controller compares with the server's), so these tests run in real time with a short
election window; the times asserted are bounds, the figures are in ``docs/coordinated.md``.
The elector's part (never taking the lock itself, the handover) is on fake clocks in
``test_step_down.py``; the controller's decisions in ``test_election_decisions.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from aioleader import ElectionError, Leadership, Timing, elect
from aioleader.kubernetes import LeaseCandidate, LeaseLock, list_lease_candidates
from aioleader.locks import MemoryLock
from aioleader.testing import KubeEmulator, TermLog, lead_forever

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

NS = "default"
LOCK = "controller"
OEV = "OldestEmulationVersion"
HP = "aioleader.dev/HighestPriority"
WINDOW = 0.4
TIMING = Timing(lease_duration=3, renew_deadline=2, retry_period=0.5)
# The documented bound of a handover to a better candidate that joined (docs/coordinated.md):
# at most one retry period for the leader to see the preferred holder, then two pings (before
# preferredHolder is set, and again once the lease is free) of at most one window each, plus
# request latency.
HANDOVER_BOUND = TIMING.retry_period + 2 * WINDOW + 0.5


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


async def lease_lock(emu: KubeEmulator, identity: str) -> LeaseLock:
    return LeaseLock(LOCK, NS, identity=identity, api_client=await emu.api_client(identity))


async def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> float:
    """Wait until ``predicate()`` is true; return when it became true (``anyio.current_time``)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(step)
    return anyio.current_time()


def leader_of(leaderships: dict[str, Leadership]) -> list[str]:
    return sorted(name for name, ls in leaderships.items() if ls.is_leader_nowait())


class Candidates:
    """Candidates leading forever in one task group, each stoppable on its own."""

    def __init__(self, emu: KubeEmulator, tg: anyio.abc.TaskGroup, log: TermLog) -> None:
        self.emu, self.tg, self.log = emu, tg, log
        self.leaderships: dict[str, Leadership] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.done: dict[str, anyio.Event] = {}
        self.terms: list[str] = []  # who started a term, in order

    async def join(self, identity: str, candidate: LeaseCandidate) -> Leadership:
        lock = await lease_lock(self.emu, identity)
        scope = anyio.CancelScope()
        self.scopes[identity] = scope
        done = self.done[identity] = anyio.Event()

        async def run(*, task_status: anyio.abc.TaskStatus[Leadership]) -> None:
            try:
                with scope:
                    await lead_forever(
                        lock,
                        self.log,
                        candidate=candidate,
                        timing=TIMING,
                        on_started_leading=lambda term: self.terms.append(term.identity),
                        task_status=task_status,
                    )
            finally:
                done.set()

        leadership: Leadership = await self.tg.start(run)
        self.leaderships[identity] = leadership
        return leadership

    def leaders(self) -> list[str]:
        return leader_of(self.leaderships)

    def leads(self, identity: str) -> bool:
        return self.leaders() == [identity]

    async def leave(self, identity: str) -> None:
        self.scopes.pop(identity).cancel()
        del self.leaderships[identity]
        with anyio.fail_after(5):
            await self.done.pop(identity).wait()


def versions(emulation: str, binary: str | None = None, strategy: str = OEV) -> LeaseCandidate:
    return LeaseCandidate(
        binary_version=binary or emulation, emulation_version=emulation, strategy=strategy
    )


# -- the rolling upgrade -------------------------------------------------------------------------


async def test_the_oldest_version_leads_and_a_better_candidate_takes_over_at_once(
    cluster: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aioleader")
    log = TermLog(tolerance=0.05)
    async with anyio.create_task_group() as tg:
        group = Candidates(cluster, tg, log)
        await group.join("b-131", versions("1.31.0"))
        await group.join("a-130", versions("1.30.0", "1.31.0"))
        await group.join("c-131", versions("1.31.0"))
        await wait_for(lambda: group.leads("a-130"))
        lease = cluster.get_object("leases", NS, LOCK)
        assert lease is not None
        assert (lease["spec"]["holderIdentity"], lease["spec"]["strategy"]) == ("a-130", OEV)

        # The 1.30 leader exits cleanly: its candidate is withdrawn, the Lease released, and a
        # 1.31 candidate leads.
        await group.leave("a-130")
        assert cluster.get_object("leasecandidates", NS, "a-130") is None
        await wait_for(lambda: group.leaders() in (["b-131"], ["c-131"]))
        first_131 = group.leaders()[0]

        # A 1.29 candidate joins: the 1.31 leader hands over to it at once.
        joined = anyio.current_time()
        await group.join("d-129", versions("1.29.0", "1.31.0"))
        led = await wait_for(lambda: group.leads("d-129"))
        handover = led - joined
        print(
            f"preferred candidate leading {handover:.3f} s after it joined "
            f"(window {WINDOW} s, retry period {TIMING.retry_period} s)"
        )
        assert handover < HANDOVER_BOUND
        tg.cancel_scope.cancel()

    assert log.overlaps == []
    assert log.late_work == []
    assert log.fencing_monotonic
    # Whoever the controller named first (the first to join, before the others existed), the
    # 1.30 candidate led once all three were there; then a 1.31 one; then the 1.29 one.
    assert group.terms[-3:] == [
        "a-130",
        first_131,
        "d-129",
    ]
    assert f"{first_131} hands over (d-129 is the preferred holder)" in caplog.text


async def test_candidates_are_published_acknowledge_pings_and_are_withdrawn(
    cluster: KubeEmulator,
) -> None:
    lock = await lease_lock(cluster, "pod-a")
    api: Any = client.CoordinationV1beta1Api(await cluster.api_client("test"))
    candidate = LeaseCandidate(binary_version="1.36.2", emulation_version="1.36", priority=7)
    # An emulator-side object left by an earlier process with our identity, for another Lease:
    # replaced (leaseName is immutable).
    await api.create_namespaced_lease_candidate(
        NS,
        {
            "metadata": {"name": "pod-a"},
            "spec": {"leaseName": "other", "binaryVersion": "1.0.0", "strategy": HP},
        },
    )
    async with elect(lock, candidate=candidate, timing=TIMING):
        obj = cluster.get_object("leasecandidates", NS, "pod-a")
        assert obj is not None
        spec = obj["spec"]
        assert (spec["leaseName"], spec["binaryVersion"], spec["emulationVersion"]) == (
            LOCK,
            "1.36.2",
            "1.36.0",
        )
        assert (spec["strategy"], obj["metadata"]["labels"]) == (
            OEV,
            {"aioleader.dev/priority": "7"},
        )
        # A ping (written by hand here, server time) is answered at once.
        ping = datetime.now(timezone.utc) + timedelta(seconds=0.05)
        obj["spec"]["pingTime"] = stamp(ping)
        await api.replace_namespaced_lease_candidate("pod-a", NS, obj)

        def answered() -> bool:
            current = cluster.get_object("leasecandidates", NS, "pod-a")
            assert current is not None
            return bool(current["spec"]["renewTime"] >= current["spec"]["pingTime"])

        await wait_for(answered, timeout=2)
        listed = await list_lease_candidates(lock)
        assert [(c.identity, c.binary_version, c.emulation_version) for c in listed] == [
            ("pod-a", "1.36.2", "1.36.0")
        ]
        assert listed[0].ping_time is not None
        assert listed[0].renew_time is not None
        assert listed[0].renew_time >= listed[0].ping_time
    assert cluster.get_object("leasecandidates", NS, "pod-a") is None


async def test_a_deleted_candidate_is_published_again(cluster: KubeEmulator) -> None:
    lock = await lease_lock(cluster, "pod-a")
    async with elect(lock, candidate=versions("1.31.0"), timing=TIMING):
        first = cluster.get_object("leasecandidates", NS, "pod-a")
        assert first is not None
        assert cluster.delete_object("leasecandidates", NS, "pod-a")

        def again() -> bool:
            obj = cluster.get_object("leasecandidates", NS, "pod-a")
            return obj is not None and obj["metadata"]["uid"] != first["metadata"]["uid"]

        await wait_for(again, timeout=3)


async def test_candidates_that_stop_acknowledging_pings_are_not_elected(
    cluster: KubeEmulator,
) -> None:
    api: Any = client.CoordinationV1beta1Api(await cluster.api_client("test"))
    # The oldest version, but last renewed long ago by a process that no longer answers.
    stale = datetime.now(timezone.utc) - timedelta(seconds=60)
    await api.create_namespaced_lease_candidate(
        NS,
        {
            "metadata": {"name": "frozen-120"},
            "spec": {
                "leaseName": LOCK,
                "binaryVersion": "1.20.0",
                "emulationVersion": "1.20.0",
                "strategy": OEV,
                "renewTime": stamp(stale),
            },
        },
    )
    log = TermLog(tolerance=0.05)
    async with anyio.create_task_group() as tg:
        group = Candidates(cluster, tg, log)
        await group.join("live-131", versions("1.31.0"))
        await wait_for(lambda: group.leads("live-131"))
        frozen = cluster.get_object("leasecandidates", NS, "frozen-120")
        assert frozen is not None
        assert frozen["spec"]["pingTime"] > frozen["spec"]["renewTime"]  # pinged, never answered
        lease = cluster.get_object("leases", NS, LOCK)
        assert lease is not None
        assert "preferredHolder" not in lease["spec"]
        tg.cancel_scope.cancel()
    assert log.overlaps == []


async def test_strategies_disagreeing_at_the_same_binary_version_elect_nobody(
    cluster: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    log = TermLog()
    async with anyio.create_task_group() as tg:
        group = Candidates(cluster, tg, log)
        # The third-party candidate first: kube-apiserver's controller creates the Lease with
        # its strategy and no holder, leaving it to another controller...
        await group.join("prio", LeaseCandidate(binary_version="1.31.0", strategy=HP))
        await wait_for(lambda: cluster.get_object("leases", NS, LOCK) is not None)
        # ...then one that wants OldestEmulationVersion at the same binary version: a user
        # error, and the controller elects nobody, election window after election window.
        await group.join("oev", versions("1.31.0"))
        await anyio.sleep(4 * WINDOW)
        await cluster.wait_election_idle()
        assert group.leaders() == []
        lease = cluster.get_object("leases", NS, LOCK)
        assert lease is not None
        assert (lease["spec"].get("holderIdentity"), lease["spec"]["strategy"]) == (None, HP)
        tg.cancel_scope.cancel()
    assert "at same binary version but received differing strategies" in caplog.text
    assert log.intervals == []


# -- what is refused -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"binary_version": "v1.36.2"}, "binary_version must not start with 'v'"),
        ({"binary_version": "1.36.x"}, "binary_version must be a semantic version"),
        ({"binary_version": "1.036.0"}, "binary_version must be a semantic version"),
        ({"binary_version": ""}, "binary_version must be a semantic version"),
        ({"emulation_version": "1"}, "emulation_version must be a semantic version"),
        ({"emulation_version": None}, "emulation_version is required with strategy"),
        ({"emulation_version": "1.37"}, "must not be older than emulation_version"),
        ({"strategy": "HighestPriority"}, "strategy must be 'OldestEmulationVersion' or"),
        ({"strategy": "a/b/c"}, "is not a qualified name"),
        ({"strategy": "Example.com/x"}, "is not a qualified name"),
        ({"priority": True}, "priority must be an integer"),
        ({"labels": {"aioleader.dev/priority": "1"}, "priority": 2}, "either priority or"),
        ({"renew_interval": 0}, "renew_interval must be a positive number"),
    ],
)
async def test_bad_candidates_are_refused_naming_the_field(
    arguments: dict[str, Any], message: str
) -> None:
    full = {"binary_version": "1.36.2", "emulation_version": "1.36.0", **arguments}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        LeaseCandidate(**full)


async def test_versions_are_written_as_the_api_validates_them() -> None:
    candidate = LeaseCandidate(binary_version="1.36", emulation_version="1.36.0-rc.1+b.7")
    assert (candidate.binary_version, candidate.emulation_version) == ("1.36.0", "1.36.0-rc.1+b.7")
    third = LeaseCandidate(binary_version="2.0.0", strategy="example.com/my-strategy")
    assert third.emulation_version is None


async def test_a_candidate_needs_a_lease_lock_and_an_identity_that_names_an_object(
    cluster: KubeEmulator,
) -> None:
    with pytest.raises(ValueError, match="a LeaseCandidate goes with a LeaseLock"):
        async with elect(MemoryLock(identity="a"), candidate=versions("1.31.0")):
            pass
    lock = LeaseLock(LOCK, NS, identity="Pod_A", api_client=await cluster.api_client())
    with pytest.raises(ValueError, match="the lock's identity \\(the LeaseCandidate's name\\)"):
        async with elect(lock, candidate=versions("1.31.0")):
            pass


async def test_a_cluster_without_the_v1beta1_api_is_one_clear_error() -> None:
    async with KubeEmulator(lease_candidates=False) as emu:
        lock = LeaseLock(LOCK, NS, identity="pod-a", api_client=await emu.api_client())
        with pytest.raises(ElectionError) as caught:
            async with elect(lock, candidate=versions("1.31.0")):
                pass
        message = str(caught.value)
        assert "CoordinatedLeaderElection feature gate" in message
        assert "coordination.k8s.io/v1beta1" in message
        with pytest.raises(ElectionError, match="CoordinatedLeaderElection"):
            await list_lease_candidates(lock)
