"""The coordinated handover figure: a better candidate joins; how long until it leads?

On the emulator with kube-apiserver's election controller (election window ``WINDOW``, 5 s as
kube-apiserver by default) and ``Timing()`` (15/10/2). The leader has led for 7 s when the
better candidate joins, so every candidate's last renewal is older than the window and the
controller pings them first, as it would in a cluster (candidates renew every 5 min)::

    python -m bench.coordinated [WINDOW] [ROUNDS]
"""

from __future__ import annotations

import sys
from functools import partial

import anyio
from anyio.abc import TaskGroup

from aioleader import Leadership, Timing
from aioleader.kubernetes import LeaseCandidate, LeaseLock
from aioleader.testing import KubeEmulator, TermLog, lead_forever


async def join(
    emu: KubeEmulator, tg: TaskGroup, log: TermLog, lock_name: str, identity: str, version: str
) -> Leadership:
    lock = LeaseLock(
        lock_name, "default", identity=identity, api_client=await emu.api_client(identity)
    )
    candidate = LeaseCandidate(binary_version="1.31.0", emulation_version=version)
    leadership: Leadership = await tg.start(
        partial(lead_forever, lock, log, candidate=candidate, timing=Timing())
    )
    return leadership


async def main(window: float, rounds: int) -> None:
    async with KubeEmulator(coordinated_election=True, election_window=window) as emu:
        for round_ in range(rounds):
            log = TermLog(tolerance=0.05)
            async with anyio.create_task_group() as tg:
                leader = await join(emu, tg, log, f"lock{round_}", "a", "1.31.0")
                while not leader.is_leader_nowait():
                    await anyio.sleep(0.01)
                await anyio.sleep(7)
                joined = anyio.current_time()
                better = await join(emu, tg, log, f"lock{round_}", "b", "1.29.0")
                while not better.is_leader_nowait():
                    await anyio.sleep(0.01)
                print(
                    f"window {window:g} s, retry period 2 s: preferred candidate leading "
                    f"{anyio.current_time() - joined:.3f} s after it joined",
                    flush=True,
                )
                tg.cancel_scope.cancel()
            assert log.overlaps == []


if __name__ == "__main__":
    anyio.run(
        main,
        float(sys.argv[1]) if len(sys.argv) > 1 else 5.0,
        int(sys.argv[2]) if len(sys.argv) > 2 else 5,
    )
