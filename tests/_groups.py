"""An election group on the emulator: candidates on one lock, each through its own emulator
endpoint (so the request log counts per candidate), with a shared term log checked for safety."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from aioleader import Leadership, Lock, Timing
from aioleader.kubernetes import LeaseLock
from aioleader.testing import KubeEmulator, TermLog, lead_forever

TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)
NS = "default"

#: ``(lock name, identity, api_client) -> lock``.
MakeLock = Callable[[str, str, Any], Lock]


def lease_lock(name: str, identity: str, api: Any) -> Lock:
    return LeaseLock(name, NS, identity=identity, api_client=api)


class Group:
    """Candidates on one Lease, each through its own emulator endpoint, with a shared term log."""

    def __init__(
        self,
        emu: KubeEmulator,
        tg: TaskGroup,
        lock_name: str = "lock",
        make_lock: MakeLock | None = None,
    ) -> None:
        self.emu = emu
        self.tg = tg
        self.lock_name = lock_name
        self.make_lock = make_lock or lease_lock
        self.log = TermLog(tolerance=0.2)  # real time: the loop's scheduling latency under load
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.leaderships: dict[str, Leadership] = {}

    async def start(self, name: str, **options: Any) -> Leadership:
        api = await self.emu.api_client(name)
        lock = self.make_lock(self.lock_name, name, api)
        scope = anyio.CancelScope()
        self.scopes[name] = scope

        async def run(*, task_status: anyio.abc.TaskStatus[Leadership]) -> None:
            with scope:
                await lead_forever(
                    lock, self.log, task_status=task_status, **{"timing": TIMING, **options}
                )

        leadership: Leadership = await self.tg.start(run)
        self.leaderships[name] = leadership
        return leadership

    def leaders(self) -> list[str]:
        return [n for n, lead in self.leaderships.items() if lead.is_leader_nowait()]

    async def wait_leader(self, *, other_than: str | None = None, limit: float = 10) -> str:
        with anyio.fail_after(limit):
            while True:
                current = [n for n in self.leaders() if n != other_than]
                if current:
                    return current[0]
                await anyio.sleep(0.01)

    def stop(self, name: str) -> None:
        self.scopes[name].cancel()
        del self.leaderships[name]

    def assert_safe(self) -> None:
        assert self.log.overlaps == []
        assert self.log.late_work == []
        assert self.log.fencing_monotonic


@asynccontextmanager
async def group(emu: KubeEmulator, make_lock: MakeLock | None = None) -> AsyncIterator[Group]:
    async with anyio.create_task_group() as tg:
        g = Group(emu, tg, make_lock=make_lock)
        yield g
        tg.cancel_scope.cancel()
    g.assert_safe()
