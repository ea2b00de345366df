"""Lease metadata (labels, annotations, owner references) and the no-create mode, with the real
LeaseLock and kubernetes_asyncio against the emulator."""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio
import pytest
from _groups import NS, TIMING
from kubernetes_asyncio import client

from aioleader import LeaderElectionRecord, LockNotFound, elect
from aioleader.kubernetes import ConfigMapLock, LeaseLock
from aioleader.testing import KubeEmulator

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

OWNER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "name": "web",
    "uid": "6d1b0bd4-5b0b-4d5e-9a1e-2f1d6c1b2a3c",
    "controller": True,
}


def lease(emu: KubeEmulator, name: str = "lock") -> dict[str, Any]:
    obj = emu.get_object("leases", NS, name)
    assert obj is not None
    return obj


async def test_metadata_is_written_on_create_and_kept_and_labels_follow_the_holder(
    emu: KubeEmulator,
) -> None:
    api_a = await emu.api_client("a")
    api_b = await emu.api_client("b")
    a = LeaseLock(
        "lock",
        NS,
        identity="a",
        api_client=api_a,
        labels={"app": "web", "zone": "z1"},
        annotations={"example.com/owner": "team-a"},
        owner_references=[OWNER],
    )
    b = LeaseLock("lock", NS, identity="b", api_client=api_b, labels={"app": "web", "zone": "z2"})
    async with elect(a, timing=TIMING) as la:
        await la.wait_term()
        meta = lease(emu)["metadata"]
        assert meta["labels"] == {"app": "web", "zone": "z1"}
        assert meta["annotations"] == {"example.com/owner": "team-a"}
        assert meta["ownerReferences"] == [OWNER]
        # Somebody else labels the Lease: renewals keep it.
        obj = lease(emu)
        obj["metadata"]["labels"]["team"] = "x"
        emu.put_raw("leases", NS, "lock", obj)
        await anyio.sleep(0.6)  # two renewals
        assert lease(emu)["metadata"]["labels"] == {"app": "web", "zone": "z1", "team": "x"}
        async with elect(b, timing=TIMING) as lb:
            await la.step_down(cooldown=60)
            await lb.wait_term()
            meta = lease(emu)["metadata"]
            # The new holder's labels replace the old holder's; the rest is kept.
            assert meta["labels"] == {"app": "web", "zone": "z2", "team": "x"}
            assert meta["annotations"] == {"example.com/owner": "team-a"}
            assert meta["ownerReferences"] == [OWNER]


async def test_annotation_locks_write_labels_on_create_only(emu: KubeEmulator) -> None:
    api = await emu.api_client("a")
    lock = ConfigMapLock("lock", NS, identity="a", api_client=api, labels={"app": "web"})
    async with elect(lock, timing=TIMING) as leadership:
        await leadership.wait_term()
        obj = emu.get_object("configmaps", NS, "lock")
        assert obj is not None
        del obj["metadata"]["labels"]
        emu.put_raw("configmaps", NS, "lock", obj)
        await anyio.sleep(0.6)
        obj = emu.get_object("configmaps", NS, "lock")
        assert obj is not None
        assert "labels" not in obj["metadata"]


async def test_no_create_mode_waits_for_the_lease_with_one_warning(
    emu: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "aioleader")
    api = await emu.api_client("a")
    lock = LeaseLock("lock", NS, identity="a", api_client=api, create=False)
    async with elect(lock, timing=TIMING) as leadership:
        await anyio.sleep(1.5)  # several attempts, every one refused by the lock itself
        assert not leadership.is_leader_nowait()
        stats = leadership.statistics()
        assert stats.acquire_attempts >= 3
        assert stats.last_error is not None
        assert stats.last_error.startswith("LockNotFound: ")
        assert "create=False" in stats.last_error
        assert emu.counters("a").get("create", 0) == 0  # never sent
        # An operator creates the Lease (as examples/deploy/lease.yaml does): we lead.
        coordination: Any = client.CoordinationV1Api(api)
        await coordination.create_namespaced_lease(
            NS,
            {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lock"}},
        )
        with anyio.fail_after(5):
            await leadership.wait_term()
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "create=False" in r.message
    ]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == (
        'default/lock: leases.coordination.k8s.io "lock" in namespace "default" does not exist, '
        "and this lock was built with create=False: create it beforehand (e.g. kubectl apply -f "
        "a manifest of the Lease); retrying"
    )


async def test_no_create_mode_raises_lock_not_found_without_a_request(emu: KubeEmulator) -> None:
    api = await emu.api_client("a")
    lock = LeaseLock("lock", NS, identity="a", api_client=api, create=False)
    with pytest.raises(LockNotFound, match="create=False"):
        await lock.create(LeaderElectionRecord(holder_identity="a", lease_duration_seconds=15))
    assert emu.requests == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"owner_references": OWNER}, "owner_references must be a list"),
        ({"owner_references": [{**OWNER, "uid": ""}]}, r"owner_references\[0\].uid must be"),
        ({"owner_references": [{**OWNER, "Kind": "x"}]}, "unknown field 'Kind'"),
        ({"owner_references": [{**OWNER, "controller": "yes"}]}, "controller must be True or"),
        ({"owner_references": [OWNER, {**OWNER, "name": "b"}]}, "only one reference can"),
        ({"create": "no"}, "create must be True or False"),
        ({"labels": {"zone": "bad value"}}, "invalid value 'bad value'"),
    ],
)
async def test_metadata_options_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseLock("lock", NS, identity="a", api_client=object(), **kwargs)
