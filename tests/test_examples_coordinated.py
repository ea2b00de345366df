"""examples/rolling_upgrade.py on the emulator with kube-apiserver's election controller: a
rollout 1.30.0 -> 1.31.0 of three replicas, one pod at a time (maxSurge 1, maxUnavailable 0),
keeps the leader on 1.30.0 until the last old pod is gone."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from aioleader import Term, Timing
from aioleader.testing import KubeEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMING = Timing(lease_duration=3, renew_deadline=2, retry_period=0.5)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_leader_stays_on_the_old_version_until_the_rollout_completes() -> None:
    example = load_example("rolling_upgrade")
    terms: list[tuple[str, str]] = []  # (identity, version) of every term, in order
    async with KubeEmulator(coordinated_election=True, election_window=0.4) as emu:
        async with anyio.create_task_group() as tg:
            pods: dict[str, anyio.CancelScope] = {}
            done: dict[str, anyio.Event] = {}

            async def start(name: str, version: str) -> None:
                scope, finished = anyio.CancelScope(), anyio.Event()
                pods[name], done[name] = scope, finished
                api = await emu.api_client(name)

                def note(term: Term) -> None:
                    terms.append((term.identity, version))

                async def pod() -> None:
                    try:
                        with scope:
                            await example.replica(
                                api, identity=name, version=version, timing=TIMING, on_term=note
                            )
                    finally:
                        finished.set()

                tg.start_soon(pod)
                with anyio.fail_after(5):
                    while emu.get_object("leasecandidates", "default", name) is None:
                        await anyio.sleep(0.02)

            async def stop(name: str) -> None:
                pods.pop(name).cancel()
                with anyio.fail_after(10):
                    await done.pop(name).wait()

            def holder() -> str | None:
                lease = emu.get_object("leases", "default", example.LOCK_NAME)
                return None if lease is None else lease["spec"].get("holderIdentity")

            async def settle() -> None:
                await anyio.sleep(4 * 0.4 + TIMING.retry_period)
                await emu.wait_election_idle()

            for name in ("old-1", "old-2", "old-3"):
                await start(name, "1.30.0")
            with anyio.fail_after(10):
                while not terms:
                    await anyio.sleep(0.02)
            # The rollout: a new pod, then an old one goes, three times.
            for step in (1, 2, 3):
                await start(f"new-{step}", "1.31.0")
                await settle()
                assert holder() is not None
                assert holder().startswith("old-"), f"step {step}: {holder()} leads"  # type: ignore[union-attr]
                victim = (
                    holder() if step == 1 else sorted(pods.keys() & {"old-1", "old-2", "old-3"})[0]
                )
                await stop(victim)  # type: ignore[arg-type]
                await settle()
            # Every old pod is gone: a new one leads.
            assert holder() is not None
            assert holder().startswith("new-")  # type: ignore[union-attr]
            tg.cancel_scope.cancel()
    versions = [version for _, version in terms]
    # Old versions led until the end of the rollout, then only the new one.
    first_new = versions.index("1.31.0")
    assert set(versions[:first_new]) == {"1.30.0"}
    assert set(versions[first_new:]) == {"1.31.0"}
