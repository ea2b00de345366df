"""Lease traffic never waits behind the application's: the locks' requests have a connection
pool of their own (:mod:`aioleader.kubernetes._transport`), so an application that keeps every
connection of its ``ApiClient`` busy (watches, slow lists) cannot starve the renewals of a lock
that borrows that client.

Real time with short timings (LD 2 s, RD 1.5 s, RP 0.25 s), as in test_elector_emulator.py: the
assertions are counts and invariants, not exact times.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from _groups import NS, group
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from aioleader.kubernetes import LeaseLock
from aioleader.testing import KubeEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

POOL = 2


async def test_renewals_do_not_queue_behind_the_applications_requests(emu: KubeEmulator) -> None:
    configuration = await emu.configuration("app")
    configuration.connection_pool_maxsize = POOL
    api = ApiClient(configuration)
    core = CoreV1Api(api)
    async with AsyncExitStack() as held:
        held.push_async_callback(api.close)
        # The application holds every connection of its client's pool: long watches.
        for _ in range(POOL):
            response: Any = await core.list_namespaced_config_map(
                NS, watch=True, timeout_seconds=60, _preload_content=False
            )
            held.callback(response.close)
        # The pool is exhausted: one more application request waits for a connection.
        with anyio.move_on_after(0.5) as waited:
            await core.read_namespaced_config_map("anything", NS)
        assert waited.cancelled_caught

        def make_lock(lock_name: str, identity: str, _: Any) -> LeaseLock:
            return LeaseLock(lock_name, NS, identity=identity, api_client=api)

        async with group(emu, make_lock=make_lock) as g:
            await g.start("app")
            await g.wait_leader(limit=2)
            emu.reset_log()
            await anyio.sleep(2.0)  # longer than LD: renewals every RP, none late
            assert g.leaders() == ["app"]
        renewals = [r for r in emu.requests if r.client == "app" and r.verb == "update"]
        # Every RP (0.25 s) for 2 s, less a little scheduling slack; all succeeded.
        assert len(renewals) >= 6
        assert all(r.status == 200 for r in renewals)
