"""The elector with the real LeaseLock and kubernetes_asyncio, over HTTP, against the emulator.

Real time with short timings (LD 2 s, RD 1.5 s, RP 0.25 s): these tests assert invariants (never
two leaders, never a crash, never leader work past its deadline) and coarse bounds, not exact
times. Exact times are asserted on fake clocks in test_elector.py.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import anyio
import pytest
from _groups import TIMING, group

from aioleader import ForbiddenError, Timing, elect
from aioleader.kubernetes import LeaseLock
from aioleader.testing import KubeEmulator

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

NS = "default"


def lease_spec(emu: KubeEmulator, name: str = "lock") -> dict[str, Any]:
    lease = emu.get_object("leases", NS, name)
    assert lease is not None
    spec = lease["spec"]
    assert isinstance(spec, dict)
    return spec


async def test_contention_among_five_candidates_elects_exactly_one(emu: KubeEmulator) -> None:
    async with group(emu) as g:
        for name in ("a", "b", "c", "d", "e"):
            await g.start(name)
        leader = await g.wait_leader()
        await anyio.sleep(3)  # longer than LD: the leader keeps renewing, nobody else takes over
        assert g.leaders() == [leader]
        assert lease_spec(emu)["holderIdentity"] == leader
        assert len(g.log.intervals) == 0  # the one term is still running
        # Steady state: the leader only PUTs (the fast path); followers only GET.
        counters = emu.counters(leader)
        assert counters.get("update", 0) >= 8
    assert len(g.log.intervals) == 1


async def test_graceful_stop_hands_over_and_crash_fails_over(emu: KubeEmulator) -> None:
    async with group(emu) as g:
        for name in ("a", "b", "c"):
            await g.start(name)
        first = await g.wait_leader()
        start = anyio.current_time()
        g.stop(first)  # graceful: released
        second = await g.wait_leader(other_than=first)
        handover = anyio.current_time() - start
        assert handover < (1 + TIMING.jitter) * TIMING.retry_period + 0.5
        # crash: the leader's endpoint goes dark, then its task is gone
        emu.faults(second).partition("blackhole")
        start = anyio.current_time()
        g.stop(second)
        third = await g.wait_leader(other_than=second)
        failover = anyio.current_time() - start
        assert third not in (first, second)
        # its last renewal was at most one RP before the crash, and b counts LD from seeing it
        assert failover >= TIMING.lease_duration - TIMING.retry_period - 0.05
        assert failover < TIMING.lease_duration + 2.2 * TIMING.retry_period + 1.0


async def test_foreign_write_makes_the_fast_path_conflict_and_the_slow_path_keeps_leading(
    emu: KubeEmulator,
) -> None:
    async with group(emu) as g:
        leadership = await g.start("a")
        term = await leadership.wait_term()
        # Somebody (kubectl label ...) changes the Lease: our cached resourceVersion is stale.
        other = await emu.api_client("kubectl")
        from kubernetes_asyncio.client import CoordinationV1Api

        await CoordinationV1Api(other).patch_namespaced_lease(
            "lock", NS, {"metadata": {"labels": {"team": "x"}}}
        )
        await anyio.sleep(1)
        assert term.active
        stats = leadership.statistics()
        assert stats.slow_path >= 1
        assert stats.renewals >= 3


async def test_reply_lost_after_write_applied_keeps_one_leader(emu: KubeEmulator) -> None:
    async with group(emu) as g:
        a = await g.start("a")
        await g.start("b")
        term = await a.wait_term()
        emu.faults("a").apply_then_drop(3, verbs={"update"})
        await anyio.sleep(2)
        assert term.active
        assert g.leaders() == ["a"]
        assert a.statistics().slow_path >= 1


@pytest.mark.parametrize("fault", ["hang", "refuse", "blackhole"])
async def test_leader_cut_off_longer_than_lease_duration(emu: KubeEmulator, fault: str) -> None:
    async with group(emu) as g:
        a = await g.start("a")
        await g.start("b")
        await g.start("c")
        term = await a.wait_term()
        faults = emu.faults("a")
        if fault == "hang":
            faults.hang = True
        else:
            faults.partition(fault)  # type: ignore[arg-type]
        cut = anyio.current_time()
        await term.wait_ended()
        # The leader's work ended by last renew send + RD, i.e. at most RD after the cut.
        assert term.end_reason == "deadline"
        assert anyio.current_time() - cut <= TIMING.renew_deadline + 0.1
        new = await g.wait_leader(other_than="a")
        assert new in ("b", "c")
        assert anyio.current_time() - cut >= TIMING.lease_duration - TIMING.retry_period - 0.05
        faults.heal()
        await anyio.sleep(1)
        assert g.leaders() == [new]


async def test_api_server_restart(emu: KubeEmulator) -> None:
    async with group(emu) as g:
        a = await g.start("a")
        await g.start("b")
        term = await a.wait_term()
        await emu.restart(downtime=0.5)  # shorter than RD: the leader rides it out
        await anyio.sleep(1)
        assert term.active
        await emu.restart(downtime=3)  # longer than LD: the term ends, someone leads after
        assert not term.active
        await g.wait_leader()


async def test_forbidden_is_fatal_and_names_the_verb_and_resource(emu: KubeEmulator) -> None:
    api = await emu.api_client("a")
    lock = LeaseLock("lock", NS, identity="a", api_client=api)
    emu.faults("a").fail_next(403, count=10, verbs={"get"})
    with pytest.raises(ForbiddenError, match=r"cannot get leases\.coordination\.k8s\.io"):
        async with elect(lock, timing=TIMING) as leadership:
            await leadership.wait_term()


async def test_non_json_error_bodies_are_transient(emu: KubeEmulator) -> None:
    async with group(emu) as g:
        a = await g.start("a")
        term = await a.wait_term()
        emu.faults("a").fail_next(
            502, count=2, body=b"<html><body>Bad Gateway</body></html>", content_type="text/html"
        )
        emu.faults("a").fail_next(429, count=1, retry_after=1)
        await anyio.sleep(1)
        assert term.active
        assert a.statistics().renew_failures >= 2
        assert a.statistics().last_error is not None


@pytest.mark.parametrize(
    ("spec", "takes_over_at_once"),
    [
        (None, True),  # null spec: a free lock
        ({"holderIdentity": None}, True),
        ({"holderIdentity": ""}, True),
        ({"holderIdentity": "x", "leaseDurationSeconds": -5}, False),
        ({"holderIdentity": "x"}, False),  # missing duration: our own LD, not "expired"
        ({"holderIdentity": "x", "leaseDurationSeconds": 1, "renewTime": "yesterday"}, False),
        ({"holderIdentity": "x", "leaseDurationSeconds": "ten", "leaseTransitions": -3}, False),
        # A holder that is not a string is somebody we cannot name: waited out, never free.
        ({"holderIdentity": 42, "acquireTime": 7}, False),
    ],
)
async def test_malformed_leases_never_crash_and_are_taken_safely(
    emu: KubeEmulator, spec: Any, takes_over_at_once: bool
) -> None:
    emu.put_raw(
        "leases",
        NS,
        "lock",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "lock", "namespace": NS},
            "spec": spec,
        },
    )
    async with group(emu) as g:
        start = anyio.current_time()
        a = await g.start("a")
        term = await a.wait_term()
        took = anyio.current_time() - start
        if takes_over_at_once:
            assert took < 0.5
        else:
            assert took >= 0.9  # at least the (sanitized) duration after first seeing it
        assert lease_spec(emu)["holderIdentity"] == "a"
        assert term.fencing_token >= 1


async def test_pod_name_identity_and_lock_object_on_the_wire(
    emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAME", "web-7d9f-abcde")
    api = await emu.api_client("pod")
    lock = LeaseLock("lock", NS, api_client=api)
    async with elect(lock, timing=TIMING) as leadership:
        await leadership.wait_term()
        spec = lease_spec(emu)
        assert spec["holderIdentity"] == "web-7d9f-abcde"
        assert spec["leaseDurationSeconds"] == 2
        assert spec["leaseTransitions"] == 0
        for field in ("acquireTime", "renewTime"):
            value = spec[field]
            assert value.endswith("Z")
            assert len(value) == len("2026-01-01T00:00:00.000000Z")
    spec = lease_spec(emu)
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1


async def test_two_elections_in_one_process_use_partial(emu: KubeEmulator) -> None:
    # campaign() composes with functools.partial for tg.start, as documented.
    from aioleader import campaign

    api = await emu.api_client("a")
    async with anyio.create_task_group() as tg:
        one = await tg.start(partial(campaign, LeaseLock("one", NS, "a", api), timing=TIMING))
        two = await tg.start(
            partial(campaign, LeaseLock("two", NS, "a", api), timing=Timing.latency_sensitive())
        )
        await one.wait_term()
        await two.wait_term()
        tg.cancel_scope.cancel()
    assert lease_spec(emu, "one")["holderIdentity"] == ""
    assert lease_spec(emu, "two")["holderIdentity"] == ""


async def test_watching_followers_send_nothing_while_the_leader_renews(emu: KubeEmulator) -> None:
    async with group(emu) as g:
        for name in ("a", "b", "c"):
            await g.start(name)
        leader = await g.wait_leader()
        await anyio.sleep(1)
        emu.reset_log()
        await anyio.sleep(3)
        for name in ("a", "b", "c"):
            counters = emu.counters(name)
            if name == leader:
                # the fast path: one PUT per renewal, no GET
                assert counters.get("get", 0) == 0
                assert 3 / TIMING.retry_period * 0.7 <= counters.get("update", 0)
            else:
                assert {verb: n for verb, n in counters.items() if n} == {}, name


async def test_graceful_handover_to_a_watching_follower_is_immediate(emu: KubeEmulator) -> None:
    async with group(emu) as g:
        for name in ("a", "b", "c"):
            await g.start(name)
        first = await g.wait_leader()
        await anyio.sleep(0.5)
        emu.reset_log()
        start = anyio.current_time()
        g.stop(first)
        second = await g.wait_leader(other_than=first)
        took = anyio.current_time() - start
        assert took < 0.25  # the release is seen through the watch, not at the next poll
        # The release is one PUT on the version the leader last wrote (after the renewal in
        # flight at the stop, if any: its reply is read, not abandoned); the new leader takes the
        # watched free lock with one PATCH on the watched version: nobody reads first.
        leases = [r for r in emu.requests if r.resource == "leases"]
        released = [r.verb for r in leases if r.client == first]
        assert released in (["update"], ["update", "update"]), released
        taken = [r.verb for r in leases if r.client == second]
        assert taken[0] == "patch"
        assert "get" not in taken
