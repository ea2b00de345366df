"""Kubernetes Events on leadership transitions, as client-go records them, against the emulator.

What is checked: an election records ``"<identity> became leader"`` and, on a graceful stop,
``"<identity> stopped leading"`` on the lock object with client-go's fields; repeats are
aggregated into one Event (PATCH ``count + 1``); events are best effort (403, hangs, a closed
client never raise nor disturb the election) and bounded; ``events=False`` sends none.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio
import pytest

from aioleader import Timing, elect
from aioleader.kubernetes import ConfigMapLock, EndpointsLock, LeaseLock
from aioleader.testing import KubeEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)
NS = "default"
RFC3339_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")

LOCKS: dict[str, tuple[type[LeaseLock | ConfigMapLock | EndpointsLock], str, str, str]] = {
    # class, resource, involvedObject kind, involvedObject apiVersion
    "lease": (LeaseLock, "leases", "Lease", "coordination.k8s.io/v1"),
    "configmap": (ConfigMapLock, "configmaps", "ConfigMap", "v1"),
    "endpoints": (EndpointsLock, "endpoints", "Endpoints", "v1"),
}


async def wait_events(emu: KubeEmulator, count: int, limit: float = 5) -> list[dict[str, Any]]:
    with anyio.fail_after(limit):
        while len(emu.events) < count:
            await anyio.sleep(0.01)
    return emu.events


def event_requests(emu: KubeEmulator) -> list[str]:
    return [f"{r.verb} {r.status}" for r in emu.requests if r.resource == "events"]


@pytest.mark.parametrize("kind", sorted(LOCKS))
async def test_election_records_became_leader_and_stopped_leading(
    emu: KubeEmulator, kind: str
) -> None:
    cls, resource, involved_kind, involved_api_version = LOCKS[kind]
    lock = cls("my-lock", NS, identity="pod-a", api_client=await emu.api_client("a"))
    async with elect(lock, timing=TIMING) as leadership:
        await leadership.wait_term()
        (became,) = await wait_events(emu, 1)
        stored = emu.get_object(resource, NS, "my-lock")
        assert stored is not None
        uid = stored["metadata"]["uid"]
        # The reference names the lock object as the candidate last saw it (here: its own
        # acquiring write, or a renewal after it).
        assert int(became["involvedObject"]["resourceVersion"]) <= int(
            stored["metadata"]["resourceVersion"]
        )
    stopped_events = await wait_events(emu, 2)
    assert [e["message"] for e in stopped_events] == [
        "pod-a became leader",
        "pod-a stopped leading",
    ]
    for event in stopped_events:
        assert event["kind"] == "Event"
        assert event["apiVersion"] == "v1"
        assert event["type"] == "Normal"
        assert event["reason"] == "LeaderElection"
        assert event["count"] == 1
        assert event["source"] == {"component": "pod-a"}
        assert event["reportingComponent"] == "pod-a"
        assert RFC3339_SECONDS.fullmatch(event["firstTimestamp"])
        assert event["lastTimestamp"] == event["firstTimestamp"]
        assert event.get("eventTime") is None  # a core/v1 (legacy) Event, as client-go writes
        meta = event["metadata"]
        assert meta["namespace"] == NS
        assert re.fullmatch(r"my-lock\.[0-9a-f]+", meta["name"])
        involved = event["involvedObject"]
        assert involved["kind"] == involved_kind
        assert involved["apiVersion"] == involved_api_version
        assert involved["name"] == "my-lock"
        assert involved["namespace"] == NS
        assert involved["uid"] == uid
        assert involved["resourceVersion"].isdigit()
    # Unique names, in order; the stop was recorded about the object as released.
    names = [e["metadata"]["name"] for e in stopped_events]
    assert len(set(names)) == 2
    assert int(names[0].split(".")[1], 16) < int(names[1].split(".")[1], 16)
    released = emu.get_object(resource, NS, "my-lock")
    assert released is not None
    assert int(stopped_events[1]["involvedObject"]["resourceVersion"]) <= int(
        released["metadata"]["resourceVersion"]
    )
    assert event_requests(emu) == ["create 201", "create 201"]


async def test_forbidden_events_do_not_disturb_the_election(
    emu: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioleader")
    # The Lease exists (free), so every create and patch this client sends is about an Event:
    # RBAC without events, as in many clusters.
    emu.put_raw("leases", NS, "lock", {"spec": {"holderIdentity": ""}})
    faults = emu.faults("a")
    faults.error_rate = 1.0
    faults.error_status = 403
    faults.error_verbs = {"create", "patch"}
    lock = LeaseLock("lock", NS, identity="pod-a", api_client=await emu.api_client("a"))
    async with elect(lock, timing=TIMING) as leadership:
        term = await leadership.wait_term()
        await anyio.sleep(4 * TIMING.retry_period)  # some renewals
        assert term.active
        assert leadership.is_leader_nowait()
        stats = leadership.statistics()
        assert stats.renewals >= 2
        assert stats.renew_failures == 0
        assert stats.last_error is None  # an event is not an election error
    assert term.end_reason == "stopped"
    lease = emu.get_object("leases", NS, "lock")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""  # released as usual
    assert emu.events == []
    with anyio.fail_after(5):
        while len(event_requests(emu)) < 2:
            await anyio.sleep(0.01)
    assert event_requests(emu) == ["create 403", "create 403"]
    dropped = [r for r in caplog.records if "not recorded" in r.getMessage()]
    assert len(dropped) == 2
    assert all(r.levelno == logging.DEBUG for r in dropped)
    assert "403" in dropped[0].getMessage()
    assert "RBAC" in dropped[0].getMessage()
    assert dropped[0].__dict__["lock"] == "default/lock"
    assert dropped[0].__dict__["identity"] == "pod-a"


@pytest.mark.parametrize("kind", sorted(LOCKS))
async def test_events_false_sends_none(emu: KubeEmulator, kind: str) -> None:
    cls = LOCKS[kind][0]
    lock = cls("lock", NS, identity="pod-a", api_client=await emu.api_client("a"), events=False)
    async with elect(lock, timing=TIMING) as leadership:
        await leadership.wait_term()
        await lock.record_event("pod-a said so")  # called directly too: still nothing
    assert emu.events == []
    assert event_requests(emu) == []


async def test_repeats_are_aggregated_into_one_event(emu: KubeEmulator) -> None:
    lock = LeaseLock("lock", NS, identity="pod-a", api_client=await emu.api_client("a"))
    async with lock:
        # Before anything is read: a reference by name only.
        await lock.record_event("pod-a became leader")
        (first,) = emu.events
        assert "uid" not in first["involvedObject"]
        assert "resourceVersion" not in first["involvedObject"]

        async with elect(lock, timing=TIMING) as leadership:
            await leadership.wait_term()
            await wait_events(emu, 2)  # a new object (a uid now): a new Event
            await lock.record_event("pod-a became leader")
            await lock.record_event("pod-a became leader")
            events = emu.events
            assert len(events) == 2
            assert events[1]["count"] == 3
            assert events[1]["lastTimestamp"] >= events[1]["firstTimestamp"]
            # Gone (the API server's event TTL): the next repeat creates a new Event.
            assert emu.delete_object("events", NS, events[1]["metadata"]["name"])
            await lock.record_event("pod-a became leader")
            events = emu.events
            assert [e["count"] for e in events] == [1, 1]
    assert event_requests(emu)[:5] == [
        "create 201",
        "create 201",
        "patch 200",
        "patch 200",
        "patch 404",
    ]


async def test_events_are_bounded_and_never_raise(emu: KubeEmulator) -> None:
    lock = LeaseLock("lock", NS, identity="pod-a", api_client=await emu.api_client("a"))
    async with lock:
        emu.faults("a").hang = True
        start = anyio.current_time()
        with anyio.fail_after(3):
            await lock.record_event("pod-a became leader", timeout=0.3)
        assert 0.3 <= anyio.current_time() - start < 1.5
        with anyio.fail_after(5):
            await lock.record_event("pod-a became leader")  # the default bound: 2 s
        emu.faults("a").heal()
        emu.faults("a").fail_next(500, verbs={"create"})
        await lock.record_event("pod-a became leader")
        emu.faults("a").partition("refuse")
        await lock.record_event("pod-a became leader")
        emu.faults("a").heal()
    # (A request the client gave up on may still be applied once the hang is over, as on a real
    # server; what matters is that every call returned within its bound, without raising.)
    before = len(event_requests(emu))
    await lock.record_event("pod-a after close")  # a closed lock: dropped, not raised
    assert len(event_requests(emu)) == before


async def test_an_event_in_flight_survives_cancellation(emu: KubeEmulator) -> None:
    # The "stopped leading" Event of a graceful stop is recorded while the elector tears its
    # tasks down: the recorder's request is shielded (and bounded), not cut half-way.
    lock = LeaseLock("lock", NS, identity="pod-a", api_client=await emu.api_client("a"))
    emu.faults("a").latency = 0.2
    async with anyio.create_task_group() as tg:
        tg.start_soon(lock.record_event, "pod-a stopped leading")
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert [e["message"] for e in emu.events] == ["pod-a stopped leading"]


async def test_event_names_stay_valid_for_long_lock_names() -> None:
    name = "a" * 240 + ".b-c"
    lock = LeaseLock(name, NS, identity="pod-a", events=True)
    recorder = lock._events
    first = recorder._event_name()
    second = recorder._event_name()
    assert first != second
    for event_name in (first, second):
        assert len(event_name) <= 253
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", event_name)
        assert ".." not in event_name
