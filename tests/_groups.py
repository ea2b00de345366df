"""Election groups: the one helper for tests that run several candidates.

A :class:`Group` runs candidates in one task group, each in a cancel scope of its own so a test can
stop one (graceful: it releases; a crash when the test cut its network first, or with
``release_on_cancel=False``), with one term log checked for safety when the group ends.

* :func:`group` — on the emulator in real time: candidates on one lock (a Lease unless
  ``make_lock`` says otherwise), each through its own emulator endpoint (so the request log counts
  per candidate), with the short :data:`TIMING`.
* :func:`candidates` — any locks (e.g. MemoryLocks on a fake clock), the test's own timing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from aioleader import Leadership, Lock, Timing, campaign
from aioleader.kubernetes import LeaseLock
from aioleader.testing import KubeEmulator, TermLog, lead_forever

TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)
NS = "default"
#: How late real-time leader work may end after its deadline: the loop's scheduling latency.
REAL_TIME_TOLERANCE = 0.2

#: ``(lock name, identity, api_client) -> lock``.
MakeKubeLock = Callable[[str, str, Any], Lock]
#: ``identity -> lock``.
MakeLock = Callable[[str], Awaitable[Lock]]


def lease_lock(name: str, identity: str, api: Any) -> Lock:
    return LeaseLock(name, NS, identity=identity, api_client=api)


def on_emulator(emu: KubeEmulator, make: MakeKubeLock = lease_lock, name: str = "lock") -> MakeLock:
    """Locks called ``name``, each candidate's through its own endpoint of ``emu``."""

    async def make_lock(identity: str) -> Lock:
        return make(name, identity, await emu.api_client(identity))

    return make_lock


class Group:
    """Candidates in one task group, each in its own cancel scope, with one term log."""

    def __init__(
        self,
        tg: TaskGroup,
        make_lock: MakeLock | None = None,
        *,
        timing: Timing | None = None,
        work: bool = True,
        tolerance: float = 1e-6,
    ) -> None:
        """
        Args:
            make_lock: builds a candidate's lock from its identity (for ``start(name)``).
            timing: every candidate's, unless ``start`` is given one.
            work: run ``lead_forever`` (leader work in every term, logged), or only ``campaign``
                (the test enters ``leading()`` itself).
            tolerance: the term log's (how late work may end after its deadline).
        """
        self.tg = tg
        self.make_lock = make_lock
        self.timing = timing
        self.work = work
        self.log = TermLog(tolerance=tolerance)
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.leaderships: dict[str, Leadership] = {}

    async def start(self, candidate: str | Lock, **options: Any) -> Leadership:
        """Start a candidate (an identity for ``make_lock``, or a lock) with ``campaign`` options."""
        if isinstance(candidate, Lock):
            lock = candidate
        else:
            if self.make_lock is None:
                raise TypeError("this group has no make_lock: start it with a lock")
            lock = await self.make_lock(candidate)
        if self.timing is not None:
            options = {"timing": self.timing, **options}
        scope = anyio.CancelScope()
        self.scopes[lock.identity] = scope

        async def run(*, task_status: anyio.abc.TaskStatus[Leadership]) -> None:
            with scope:
                if self.work:
                    await lead_forever(lock, self.log, task_status=task_status, **options)
                else:
                    await campaign(lock, task_status=task_status, **options)

        leadership: Leadership = await self.tg.start(run)
        self.leaderships[lock.identity] = leadership
        return leadership

    def leaders(self) -> list[str]:
        return [n for n, lead in self.leaderships.items() if lead.is_leader_nowait()]

    async def wait_leader(self, *, other_than: str | None = None, limit: float = 10) -> str:
        """Wait until a running candidate (but ``other_than``) leads; never two at once."""
        with anyio.fail_after(limit):
            while True:
                current = [n for n in self.leaders() if n != other_than]
                if current:
                    assert len(current) == 1, f"two leaders at once: {current}"
                    return current[0]
                await anyio.sleep(0.01)

    def stop(self, name: str) -> None:
        """Cancel a candidate (it releases the lock unless it cannot reach it, or was told not to)."""
        self.scopes.pop(name).cancel()
        del self.leaderships[name]

    def assert_safe(self) -> None:
        assert self.log.overlaps == []
        assert self.log.late_work == []
        assert self.log.fencing_monotonic


@asynccontextmanager
async def candidates(
    make_lock: MakeLock | None = None,
    *,
    timing: Timing | None = None,
    work: bool = True,
    tolerance: float = 1e-6,
) -> AsyncIterator[Group]:
    """A :class:`Group`; on leaving, every candidate is stopped and the term log checked."""
    async with anyio.create_task_group() as tg:
        g = Group(tg, make_lock, timing=timing, work=work, tolerance=tolerance)
        yield g
        tg.cancel_scope.cancel()
    g.assert_safe()


def group(
    emu: KubeEmulator,
    make_lock: MakeKubeLock = lease_lock,
    *,
    name: str = "lock",
    tolerance: float = REAL_TIME_TOLERANCE,
) -> AbstractAsyncContextManager[Group]:
    """Candidates on the emulator in real time, with :data:`TIMING`."""
    return candidates(on_emulator(emu, make_lock, name), timing=TIMING, tolerance=tolerance)
