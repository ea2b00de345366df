"""Sharded leadership with real processes on the emulator: the sharded controller example, three
replicas, one SIGKILLed, the rest SIGTERMed; LeaseLock's listing through kubernetes_asyncio."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

import anyio
import anyio.abc
import pytest
from _processes import ROOT, config_for, env, stop, wait_for
from kubernetes_asyncio.client import CoreV1Api, V1ConfigMap, V1ObjectMeta

from aioleader import LeaderElectionRecord, shard_for
from aioleader.kubernetes import LeaseLock
from aioleader.testing import KubeEmulator

pytestmark = pytest.mark.emulator_only

SHARDS = 8
WIDGETS = 16
STATUS = "widgets.example.com/status"


@asynccontextmanager
async def replica(emu: KubeEmulator, name: str, tmp_path: Path) -> AsyncIterator[anyio.abc.Process]:
    kubeconfig = await config_for(emu, name, tmp_path)
    command = [
        sys.executable,
        str(ROOT / "examples" / "sharded_controller.py"),
        *("--shards", str(SHARDS), "--interval", "0.1"),
        *("--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.3"),
    ]
    with (tmp_path / f"{name}.log").open("wb") as log:
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env(), "KUBECONFIG": str(kubeconfig), "POD_NAME": name},
        )
        try:
            yield process
        finally:
            await stop(process)


def holders(emu: KubeEmulator) -> list[str]:
    result = []
    for i in range(SHARDS):
        lease = emu.get_object("leases", "default", f"widgets-{i}")
        result.append("" if lease is None else lease["spec"].get("holderIdentity") or "")
    return result


def statuses(emu: KubeEmulator) -> dict[str, str]:
    return {
        o["metadata"]["name"]: (o["metadata"].get("annotations") or {}).get(STATUS, "")
        for o in emu.objects("configmaps", "default")
        if (o["metadata"].get("labels") or {}).get("app") == "widget"
    }


def settled(emu: KubeEmulator, live: set[str]) -> bool:
    """Every shard led by a live replica, 2 or 3 each (8 over 3) or 4 each (over 2), and every
    widget's status written by its shard's leader."""
    owners = holders(emu)
    counts = Counter(owners)
    if set(counts) != live:
        return False
    low, high = SHARDS // len(live), -(-SHARDS // len(live))
    if not all(low <= n <= high for n in counts.values()):
        return False
    for name, status in statuses(emu).items():
        shard = shard_for(f"default/{name}", SHARDS)
        if not status.startswith(f"{owners[shard]} shard {shard} token "):
            return False
    return True


@pytest.mark.asyncio
async def test_sharded_controller_replicas_split_the_shards_and_heal_after_a_kill(
    emulator: KubeEmulator, tmp_path: Path
) -> None:
    api = await emulator.api_client("setup")
    core = CoreV1Api(api)
    for i in range(WIDGETS):
        await core.create_namespaced_config_map(
            "default",
            V1ConfigMap(metadata=V1ObjectMeta(name=f"widget-{i}", labels={"app": "widget"})),
        )
    async with AsyncExitStack() as stack:
        processes = {
            name: await stack.enter_async_context(replica(emulator, name, tmp_path))
            for name in ("pod-1", "pod-2", "pod-3")
        }
        await wait_for(lambda: settled(emulator, {"pod-1", "pod-2", "pod-3"}), limit=30)

        processes["pod-3"].send_signal(signal.SIGKILL)
        await processes["pod-3"].wait()
        with anyio.fail_after(10):
            # Its leases expire (LD 2 s), then the two others split its shards.
            while not settled(emulator, {"pod-1", "pod-2"}):
                await anyio.sleep(0.05)

        for name in ("pod-1", "pod-2"):
            processes[name].send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await processes["pod-1"].wait() == 0
            assert await processes["pod-2"].wait() == 0
    assert holders(emulator) == [""] * SHARDS  # released on SIGTERM
    members = [
        o["spec"].get("holderIdentity")
        for o in emulator.objects("leases", "default")
        if o["metadata"]["name"].startswith("widgets-member-")
    ]
    assert sorted(members) == ["", "", "pod-3"]  # the killed one's lock was never released
    await api.close()


@pytest.mark.asyncio
async def test_lease_lock_lists_its_siblings_by_prefix(emulator: KubeEmulator) -> None:
    api = await emulator.api_client("lister")
    now = datetime.now(timezone.utc)
    for name, holder in (("g-member-a", "a"), ("g-member-b", "b"), ("g-0", "a")):
        lock = LeaseLock(name, "default", holder, api_client=api)
        await lock.create(
            LeaderElectionRecord(
                holder_identity=holder, lease_duration_seconds=2, acquire_time=now, renew_time=now
            )
        )
    await LeaseLock("elsewhere", "other", "a", api_client=api).create(
        LeaderElectionRecord(holder_identity="a", lease_duration_seconds=2)
    )
    lock = LeaseLock("g-0", "default", "a", api_client=api)
    listed = await lock.list_siblings("g-member-", timeout=2)
    assert {n: o.record.holder_identity for n, o in listed.items()} == {
        "g-member-a": "a",
        "g-member-b": "b",
    }
    assert all(o.version.isdigit() for o in listed.values())
    assert [r.verb for r in emulator.requests if r.client == "lister"][-1] == "list"
    emulator.faults("lister").partition("refuse")
    with pytest.raises(Exception, match="cannot list"):
        await lock.list_siblings("g-member-", timeout=1)
    await api.close()


@pytest.mark.asyncio
async def test_cli_status_and_watch_show_a_shard_group(
    emulator: KubeEmulator, tmp_path: Path
) -> None:
    from functools import partial

    from aioleader import Timing, elect_shards

    timing = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.3)
    apis = [await emulator.api_client(name) for name in ("a", "b")]
    kubeconfig = await config_for(emulator, "cli", tmp_path)
    command = [sys.executable, "-m", "aioleader"]
    lock = ["--lock", "lease/default/grp", "--kubeconfig", str(kubeconfig)]
    async with (
        elect_shards(
            partial(LeaseLock, namespace="default", identity="a", api_client=apis[0]),
            group="grp",
            shards=4,
            timing=timing,
        ) as sa,
        elect_shards(
            partial(LeaseLock, namespace="default", identity="b", api_client=apis[1]),
            group="grp",
            shards=4,
            timing=timing,
        ) as sb,
    ):
        with anyio.fail_after(10):
            while not (len(sa.owned()) == 2 and len(sb.owned()) == 2):
                await anyio.sleep(0.02)
        status = await anyio.run_process(
            [*command, "status", *lock, "--shards", "-o", "json"], env=env()
        )
        data = json.loads(status.stdout)
        assert data["group"] == "grp"
        assert data["shards"] == 4
        assert data["members"] == ["a", "b"]
        assert data["fairShare"] == 2
        assert data["owned"] == {"a": sorted(sa.owned()), "b": sorted(sb.owned())}
        text = (await anyio.run_process([*command, "status", *lock, "--shards"], env=env())).stdout
        assert text.decode().splitlines() == [
            "shard group grp: 2 live members, 4 shards (fair share 2)",
            f"  a: 2 shards {' '.join(map(str, sorted(sa.owned())))}",
            f"  b: 2 shards {' '.join(map(str, sorted(sb.owned())))}",
        ]
        async with await anyio.open_process(
            [*command, "watch", *lock, "--shards", "--poll-interval", "0.1"], env=env()
        ) as watcher:
            assert watcher.stdout is not None
            first = (await watcher.stdout.receive()).decode()
            assert "shard group grp: 2 live members, 4 shards" in first
            watcher.terminate()
    for api in apis:
        await api.close()
