"""Traffic to the leader only: PodRoleLabel and LeaderEndpoints with the real LeaseLock and
kubernetes_asyncio over HTTP, against the emulator.

Real time with short timings (LD 2 s, RD 1.5 s, RP 0.25 s), as in test_elector_emulator.py: these
tests assert orderings and states (the label and the slice follow every handover, the standby
state lands before the release), not exact times.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
import pytest
from _groups import NS, TIMING, group

from aioleader import ElectionError, elect
from aioleader.kubernetes import LeaderEndpoints, LeaseLock, PodRoleLabel
from aioleader.testing import KubeEmulator

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

PODS = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}


def make_pods(emu: KubeEmulator, role: str | None = None) -> None:
    for name in PODS:
        labels = {"app": "x"} if role is None else {"app": "x", "role": role}
        emu.put_raw("pods", NS, name, {"metadata": {"labels": labels}, "spec": {}})


def roles(emu: KubeEmulator) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PODS:
        pod = emu.get_object("pods", NS, name)
        assert pod is not None
        found[name] = pod["metadata"].get("labels", {}).get("role")
    return found


def slice_addresses(emu: KubeEmulator, name: str = "svc-leader") -> list[str] | None:
    obj = emu.get_object("endpointslices", NS, name)
    if obj is None:
        return None
    return [a for e in obj.get("endpoints") or [] for a in e["addresses"]]


def hooks(name: str) -> list[Any]:
    return [
        PodRoleLabel("role", pod=name, namespace=NS, backoff_initial=0.05, backoff_max=0.2),
        LeaderEndpoints(
            "svc",
            ports=[("http", 8080)],
            address=PODS[name],
            namespace=NS,
            pod=name,
            backoff_initial=0.05,
            backoff_max=0.2,
        ),
    ]


async def wait_for(condition: Any, limit: float = 10) -> None:
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.01)


async def test_the_label_and_the_slice_follow_every_handover_and_a_crash(
    emu: KubeEmulator,
) -> None:
    make_pods(emu, role="leader")  # stale labels everywhere, as after crashes
    async with group(emu) as g:
        for name in PODS:
            await g.start(name, hooks=hooks(name))
        # Every candidate set standby at start-up; then the one leader is labelled.
        first = await g.wait_leader()
        await wait_for(lambda: roles(emu)[first] == "leader")
        assert roles(emu) == {n: "leader" if n == first else "standby" for n in PODS}
        await wait_for(lambda: slice_addresses(emu) == [PODS[first]])
        service_slice = emu.get_object("endpointslices", NS, "svc-leader")
        assert service_slice is not None
        assert service_slice["metadata"]["labels"] == {
            "kubernetes.io/service-name": "svc",
            "endpointslice.kubernetes.io/managed-by": "aioleader",
        }
        assert service_slice["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
        assert service_slice["endpoints"][0]["targetRef"] == {
            "kind": "Pod",
            "namespace": NS,
            "name": first,
        }

        # Graceful handover: the old leader is standby and out of the slice before the release.
        g.stop(first)
        second = await g.wait_leader(other_than=first)
        await wait_for(lambda: roles(emu)[second] == "leader")
        await wait_for(lambda: slice_addresses(emu) == [PODS[second]])
        assert roles(emu)[first] == "standby"
        assert [n for n, r in roles(emu).items() if r == "leader"] == [second]

        # The leader steps down: the third candidate takes over, labels and slice follow.
        third = next(n for n in PODS if n not in (first, second))
        await g.leaderships[second].step_down(cooldown=1)
        assert roles(emu)[second] == "standby"
        await g.wait_leader(other_than=second)
        await wait_for(lambda: roles(emu)[third] == "leader")
        await wait_for(lambda: slice_addresses(emu) == [PODS[third]])

        # A crash: the leader's process dies without a word (its pod keeps role=leader).
        emu.faults(third).partition("refuse")
        g.stop(third)  # its standby patch cannot land; the release is refused too
        await g.wait_leader(other_than=third, limit=15)
        assert g.leaders() == [second]
        await wait_for(lambda: roles(emu)[second] == "leader")
        await wait_for(lambda: slice_addresses(emu) == [PODS[second]])
        assert roles(emu)[third] == "leader"  # stale, as a crashed process leaves it
        # A new process in the crashed Pod sets standby at start.
        emu.faults(third).heal()
        await g.start(third, hooks=hooks(third))
        await wait_for(lambda: roles(emu)[third] == "standby")
        assert [n for n, r in roles(emu).items() if r == "leader"] == [second]
        assert slice_addresses(emu) == [PODS[second]]


async def test_the_standby_state_is_written_before_the_release(emu: KubeEmulator) -> None:
    make_pods(emu)
    api = await emu.api_client("a")
    lock = LeaseLock("lock", NS, identity="a", api_client=api)
    async with elect(lock, timing=TIMING, hooks=hooks("a")) as leadership:
        await leadership.wait_term()
        await wait_for(lambda: slice_addresses(emu) == [PODS["a"]])
        emu.reset_log()
    writes = [
        (r.resource, r.verb)
        for r in emu.requests
        if r.verb in ("patch", "update") and r.resource in ("pods", "endpointslices", "leases")
    ]
    # Both hooks' standby writes precede the release (the one update of the Lease at the end).
    assert writes[-1] == ("leases", "update")
    assert sorted(writes[:-1]) == [("endpointslices", "update"), ("pods", "patch")]
    assert roles(emu)["a"] == "standby"
    assert slice_addresses(emu) == []
    lease = emu.get_object("leases", NS, "lock")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""


async def test_a_failing_patch_is_retried_and_reported_but_the_term_continues(
    emu: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    make_pods(emu)
    api = await emu.api_client("a")
    lock = LeaseLock("lock", NS, identity="a", api_client=api)
    label = PodRoleLabel("role", pod="a", namespace=NS, backoff_initial=0.1, backoff_max=0.2)
    emu.faults("a").fail_next(500, count=4, verbs=["patch"])
    caplog.set_level(logging.DEBUG, "aioleader")
    async with elect(lock, timing=TIMING, hooks=[label]) as leadership:
        term = await leadership.wait_term()
        # start-up standby failed; the leader label keeps failing for a while
        assert label.problem() is not None
        assert "500" in (label.problem() or "")
        assert leadership.statistics().hook_problems == (label.problem(),)
        await wait_for(lambda: roles(emu)["a"] == "leader")
        # The patch lands before its reply: the problem clears when the reply is read.
        await wait_for(lambda: label.problem() is None)
        assert leadership.statistics().hook_problems == ()
        assert term.active  # the failures never touched the term
        assert leadership.is_leader_nowait()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "role" in r.message]
    assert len(warnings) == 1  # once per streak; the retries are DEBUG
    assert "cannot update the label role of pods" in warnings[0].getMessage()
    statuses = [r.status for r in emu.requests if r.resource == "pods" and r.verb == "patch"]
    # Four 500s, then the leader label and the standby label (and, if the election had not
    # started the term by then, a retry of the start-up standby first).
    assert statuses[:4] == [500] * 4
    assert statuses[4:] in ([200] * 2, [200] * 3)
    assert roles(emu)["a"] == "standby"
    # The failure was recorded as an Event on the Lease.
    messages = [e.get("message", "") for e in emu.events]
    assert any("cannot update the label role" in m for m in messages)


async def test_a_late_standby_never_empties_a_newer_leaders_slice(emu: KubeEmulator) -> None:
    api = await emu.api_client("a")
    lock = LeaseLock("lock", NS, identity="a", api_client=api)
    endpoints = LeaderEndpoints("svc", ports=[80], address="10.0.0.1", namespace=NS)
    async with elect(lock, timing=TIMING, hooks=[endpoints]) as leadership:
        await leadership.wait_term()
        await wait_for(lambda: slice_addresses(emu) == ["10.0.0.1"])
        current = emu.get_object("endpointslices", NS, "svc-leader")
        assert current is not None
        # Somebody else (a newer leader) points the slice at itself.
        emu.put_raw(
            "endpointslices",
            NS,
            "svc-leader",
            {**current, "endpoints": [{"addresses": ["10.0.0.9"]}]},
        )
    assert slice_addresses(emu) == ["10.0.0.9"]


async def test_a_missing_pod_at_start_up_is_a_clear_fatal_error(emu: KubeEmulator) -> None:
    api = await emu.api_client("a")
    lock = LeaseLock("lock", NS, identity="a", api_client=api)
    label = PodRoleLabel(pod="ghost", namespace=NS)
    with pytest.raises(ElectionError, match=r'pods "ghost" in namespace "default": it does not'):
        async with elect(lock, timing=TIMING, hooks=[label]):
            pass  # pragma: no cover - never entered
    assert emu.get_object("leases", NS, "lock") is None  # never campaigned
