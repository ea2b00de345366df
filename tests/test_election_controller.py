"""The emulator's coordinated leader election controller, as kube-apiserver runs it.

Candidates are driven through the real client; the server clock is pinned, so the controller
moves only when the test moves the clock (``emu.advance``) or writes, and every time below is
exact. The test plays the candidates' part: it acknowledges a ping by writing ``renewTime``.
The pure decision is checked with plain objects in ``test_election_decisions.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from aioleader.testing import KubeEmulator

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.emulator_only,
    pytest.mark.emulator(coordinated_election=True),
]

NS = "default"
OEV = "OldestEmulationVersion"
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Cluster:
    """An emulator with the controller, its clock pinned at T0, and a candidates client."""

    def __init__(self, emu: KubeEmulator, api_client: client.ApiClient) -> None:
        self.emu = emu
        self.api_client = api_client
        self.api = client.CoordinationV1beta1Api(api_client)

    @property
    def now(self) -> datetime:
        return self.emu.clock.now()

    async def join(
        self,
        name: str,
        emulation: str | None,
        binary: str = "1.31.0",
        *,
        strategy: str = OEV,
        renewed: datetime | None = None,
        lease: str = "lock",
    ) -> None:
        """A candidate, last renewed at ``renewed`` (now by default)."""
        spec = {
            "leaseName": lease,
            "binaryVersion": binary,
            "emulationVersion": emulation,
            "strategy": strategy,
            "renewTime": stamp(renewed or self.now),
        }
        body: Any = {"metadata": {"name": name}, "spec": {k: v for k, v in spec.items() if v}}
        await self.api.create_namespaced_lease_candidate(NS, body)
        await self.emu.wait_election_idle()

    def candidate(self, name: str) -> dict[str, Any]:
        found = self.emu.get_object("leasecandidates", NS, name)
        assert found is not None, name
        return found

    def pinged(self) -> dict[str, str | None]:
        return {
            o["metadata"]["name"]: o["spec"].get("pingTime")
            for o in self.emu.objects("leasecandidates", NS)
        }

    async def ack(self, *names: str) -> None:
        """What a candidate does when pinged: renew (a write of ``renewTime = now``)."""
        for name in names:
            response: Any = await self.api.read_namespaced_lease_candidate(
                name, NS, _preload_content=False
            )
            body = json.loads(await response.read())
            assert body["spec"].get("pingTime"), f"{name} was not pinged"
            body["spec"]["renewTime"] = stamp(self.now)
            await self.api.replace_namespaced_lease_candidate(name, NS, body)
        await self.emu.wait_election_idle()

    async def advance(self, seconds: float) -> None:
        self.emu.advance(seconds)
        await self.emu.wait_election_idle()

    def lease(self, name: str = "lock") -> dict[str, Any] | None:
        found = self.emu.get_object("leases", NS, name)
        return None if found is None else found["spec"]


@pytest_asyncio.fixture
async def cluster(emu: KubeEmulator) -> Cluster:
    emu.set_time(T0)
    return Cluster(emu, await emu.api_client())


async def test_oldest_emulation_version_is_elected_after_the_pings(cluster: Cluster) -> None:
    stale = T0 - timedelta(minutes=1)
    await cluster.join("new-a", "1.31.0", renewed=stale)
    await cluster.join("old", "1.30.0", renewed=stale)
    await cluster.join("new-b", "1.31.0", renewed=stale)
    # Nobody renewed within the window: everyone is pinged, nothing is elected yet.
    assert cluster.pinged() == dict.fromkeys(["new-a", "new-b", "old"], stamp(T0))
    assert cluster.lease() is None
    await cluster.advance(1)
    await cluster.ack("new-a", "new-b")
    assert cluster.lease() is None  # "old" has four seconds left to answer
    await cluster.ack("old")
    # Everyone answered: the vote does not wait for the window to end.
    assert cluster.lease() == {
        "holderIdentity": "old",
        "leaseDurationSeconds": 5,
        "renewTime": stamp(T0 + timedelta(seconds=1)),
        "strategy": OEV,
    }


async def test_fresh_candidates_are_elected_at_once(cluster: Cluster) -> None:
    await cluster.join("a", "1.31.0")
    assert cluster.pinged() == {"a": None}
    assert cluster.lease() == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 5,
        "renewTime": stamp(T0),
        "strategy": OEV,
    }


async def test_an_older_candidate_is_announced_as_preferred_holder(cluster: Cluster) -> None:
    await cluster.join("a", "1.30.0")
    await cluster.join("b", "1.31.0")
    await cluster.join("c", "1.31.0")
    assert cluster.lease() is not None
    assert cluster.lease()["holderIdentity"] == "a"  # type: ignore[index]
    await cluster.advance(2)
    await cluster.join("d", "1.29.0")
    lease = cluster.lease()
    assert lease is not None
    # The holder is live: it is only asked to hand over.
    assert (lease["holderIdentity"], lease["preferredHolder"]) == ("a", "d")
    assert lease["renewTime"] == stamp(T0)
    # The holder steps down as client-go does: it stops renewing, and the Lease expires (5 s).
    # The next step pings whoever has not renewed within the window: not "d" (renewed at 2 s).
    await cluster.advance(3.5)
    at = T0 + timedelta(seconds=5.5)
    assert cluster.pinged() == {"a": stamp(at), "b": stamp(at), "c": stamp(at), "d": None}
    # Nobody answers; when their window ends, "d" has not renewed for too long either: pinged.
    await cluster.advance(5)
    assert cluster.pinged()["d"] == stamp(T0 + timedelta(seconds=10.5))
    assert cluster.lease()["holderIdentity"] == "a"  # type: ignore[index]
    await cluster.advance(0.5)
    await cluster.ack("d")
    # Only "d" answered: it gets the expired Lease, and preferredHolder is cleared.
    assert cluster.lease() == {
        "holderIdentity": "d",
        "leaseDurationSeconds": 5,
        "renewTime": stamp(T0 + timedelta(seconds=11)),
        "strategy": OEV,
    }


async def test_candidates_that_do_not_answer_pings_are_not_elected(cluster: Cluster) -> None:
    stale = T0 - timedelta(minutes=1)
    await cluster.join("oldest-but-gone", "1.29.0", renewed=stale)
    await cluster.join("answers", "1.31.0", renewed=stale)
    await cluster.advance(1)
    await cluster.ack("answers")
    assert cluster.lease() is None
    await cluster.advance(3.9)  # the window since the ping (T0) has not passed
    assert cluster.lease() is None
    await cluster.advance(0.2)
    assert cluster.lease() is not None
    assert cluster.lease()["holderIdentity"] == "answers"  # type: ignore[index]
    # The silent candidate is not pinged again.
    assert cluster.pinged()["oldest-but-gone"] == stamp(T0)


async def test_a_free_or_expired_lease_is_assigned(cluster: Cluster) -> None:
    # A Lease someone released (holder "") and one whose holder stopped renewing.
    for name, holder, renewed in (("free", "", T0), ("expired", "x", T0 - timedelta(seconds=20))):
        cluster.emu.put_raw(
            "leases",
            NS,
            name,
            {
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": 15,
                    "acquireTime": stamp(renewed),
                    "renewTime": stamp(renewed),
                    "leaseTransitions": 3,
                    "preferredHolder": "someone",
                    "strategy": OEV,
                }
            },
        )
        await cluster.join(f"c-{name}", "1.31.0", lease=name)
        assert cluster.lease(name) == {
            "holderIdentity": f"c-{name}",
            "leaseDurationSeconds": 5,
            "renewTime": stamp(T0),
            "leaseTransitions": 3,
            "strategy": OEV,
        }


async def test_a_live_lease_of_ordinary_leader_election_gets_a_strategy(cluster: Cluster) -> None:
    cluster.emu.put_raw(
        "leases",
        NS,
        "lock",
        {"spec": {"holderIdentity": "x", "leaseDurationSeconds": 15, "renewTime": stamp(T0)}},
    )
    await cluster.join("c", "1.31.0")
    assert cluster.lease() == {
        "holderIdentity": "x",
        "leaseDurationSeconds": 15,
        "renewTime": stamp(T0),
        "strategy": OEV,
        "preferredHolder": "c",
    }


async def test_a_third_party_strategy_is_left_to_its_controller(cluster: Cluster) -> None:
    custom = "example.com/highest-priority"
    await cluster.join("a", None, "1.31.0", strategy=custom)
    # The Lease is created, with the strategy and no holder: another controller's job.
    assert cluster.lease() == {
        "leaseDurationSeconds": 5,
        "renewTime": stamp(T0),
        "strategy": custom,
    }
    # That controller assigns it, and its holder renews; an older candidate at a lower binary
    # version (so the strategy stays) does not make the apiserver's controller step in.
    lease: Any = cluster.emu.get_object("leases", NS, "lock")
    assert lease is not None
    lease["spec"].update(holderIdentity="a", renewTime=stamp(T0 + timedelta(seconds=1)))
    await client.CoordinationV1Api(cluster.api_client).replace_namespaced_lease("lock", NS, lease)
    await cluster.advance(1)
    await cluster.join("b", "1.29.0", "1.30.0")
    assert cluster.lease() == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 5,
        "renewTime": stamp(T0 + timedelta(seconds=1)),
        "strategy": custom,
    }


async def test_the_newest_binary_version_chooses_the_strategy(cluster: Cluster) -> None:
    await cluster.join("custom", None, "1.31.0", strategy="example.com/custom")
    assert cluster.lease() == {
        "leaseDurationSeconds": 5,
        "renewTime": stamp(T0),
        "strategy": "example.com/custom",
    }
    await cluster.join("oev", "1.31.0", "1.32.0")
    # OldestEmulationVersion wins (binary 1.32 > 1.31); "custom" has no emulation version, so
    # it cannot be elected by it. The free Lease is assigned.
    lease = cluster.lease()
    assert lease is not None
    assert (lease["holderIdentity"], lease["strategy"]) == ("oev", OEV)


async def test_strategies_disagreeing_at_one_binary_version_stop_the_election(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    stale = T0 - timedelta(minutes=1)
    with caplog.at_level(logging.WARNING, "aioleader.testing.election"):
        await cluster.join("oev", "1.30.0", "1.31.0", renewed=stale)
        await cluster.join("custom", None, "1.31.0", strategy="example.com/custom", renewed=stale)
        await cluster.advance(1)
        await cluster.ack("oev", "custom")
        assert cluster.lease() is None
        assert (
            'candidates "custom", "oev" at same binary version but received differing '
            f"strategies example.com/custom, {OEV}"
        ) in caplog.text
        # It stays so: the next steps ping again, and elect nobody.
        await cluster.advance(6)
        await cluster.ack("oev", "custom")
    assert cluster.lease() is None


@pytest.mark.emulator(lease_candidate_gc_interval=60)
async def test_expired_candidates_are_collected_after_30_minutes(cluster: Cluster) -> None:
    await cluster.join("gone", "1.31.0")
    await cluster.advance(20 * 60)
    await cluster.join("recent", "1.31.0")
    await cluster.advance(10 * 60)  # "gone" was renewed exactly 30 min ago: still valid
    assert sorted(cluster.pinged()) == ["gone", "recent"]
    await cluster.advance(61)  # the next collection
    assert sorted(cluster.pinged()) == ["recent"]


async def test_every_15_minutes_an_election_pings_the_candidates(cluster: Cluster) -> None:
    # A leader that renews its Lease (here: for an hour) and is the best candidate.
    lease = {"holderIdentity": "a", "leaseDurationSeconds": 3600, "renewTime": stamp(T0)}
    cluster.emu.put_raw("leases", NS, "lock", {"spec": {**lease, "strategy": OEV}})
    await cluster.join("a", "1.31.0")
    await cluster.advance(15 * 60)
    assert cluster.pinged() == {"a": None}
    # Not renewed for more than half its 30 min at the next step (every 5 s): the election
    # pings it, so that a live candidate renews before the garbage collector would take it.
    await cluster.advance(4.9)
    assert cluster.pinged() == {"a": None}
    await cluster.advance(0.1)
    assert cluster.pinged() == {"a": stamp(T0 + timedelta(seconds=15 * 60 + 5))}
    await cluster.ack("a")
    assert cluster.lease() == {**lease, "strategy": OEV}


@pytest.mark.emulator(election_window=1.5)
async def test_in_real_time_with_a_short_window(emu: KubeEmulator) -> None:
    # A window long enough that the acknowledgement below lands inside it on a loaded machine.
    api = client.CoordinationV1beta1Api(await emu.api_client())
    old = stamp(emu.clock.now() - timedelta(minutes=1))
    for name, version in (("silent", "1.29.0"), ("live", "1.31.0")):
        spec = {
            "leaseName": "lock",
            "binaryVersion": "1.31.0",
            "emulationVersion": version,
            "strategy": OEV,
            "renewTime": old,
        }
        body: Any = {"metadata": {"name": name}, "spec": spec}
        await api.create_namespaced_lease_candidate(NS, body)
    await emu.wait_election_idle()
    response: Any = await api.read_namespaced_lease_candidate("live", NS, _preload_content=False)
    body = json.loads(await response.read())
    body["spec"]["renewTime"] = stamp(emu.clock.now())
    await api.replace_namespaced_lease_candidate("live", NS, body)
    # The vote waits for "silent" until its window ends, then elects "live".
    with anyio.fail_after(30):
        while (lease := emu.get_object("leases", NS, "lock")) is None:
            await emu.wait_election_idle()
            await asyncio.sleep(0.02)
    assert lease["spec"]["holderIdentity"] == "live"


@pytest.mark.emulator(coordinated_election=False)
async def test_configuration_errors(emu: KubeEmulator) -> None:
    with pytest.raises(ValueError, match="election_window must be positive"):
        KubeEmulator(coordinated_election=True, election_window=0)
    with pytest.raises(RuntimeError, match="without coordinated_election"):
        await emu.wait_election_idle()
