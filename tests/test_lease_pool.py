"""Lease traffic never waits behind the application's: the locks' requests have a connection
pool of their own (:mod:`aioleader.kubernetes._transport`), so an application that keeps every
connection of its ``ApiClient`` busy (watches, slow lists) cannot starve the renewals of a lock
that borrows that client.

Real time with short timings (LD 2 s, RD 1.5 s, RP 0.25 s), as in test_elector_emulator.py: the
assertions are counts and invariants, not exact times.
"""

from __future__ import annotations

import asyncio
import datetime
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from _groups import NS, group
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from aioleader._record import LeaderElectionRecord
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


async def test_a_configured_proxy_carries_the_lease_traffic(emu: KubeEmulator) -> None:
    """With ``configuration.proxy`` the lean path sends through the proxy (on aiohttp, which
    speaks to proxies; a direct server gets the lean HTTP/1.1 client): every request of an
    election arrives at the proxy in absolute form."""
    configuration = await emu.configuration("proxied")
    server = configuration.host.removeprefix("http://")
    upstream_host, upstream_port = server.split(":")
    first_lines: list[bytes] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(upstream_host, int(upstream_port))
        head = await reader.readuntil(b"\r\n\r\n")
        first_lines.append(head.split(b"\r\n", 1)[0])
        up_writer.write(head)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    listener = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    configuration.proxy = f"http://127.0.0.1:{port}"
    api = ApiClient(configuration)
    try:
        lock = LeaseLock("proxied", NS, identity="p", api_client=api)
        now = datetime.datetime.now(datetime.timezone.utc)
        record = await lock.create(
            LeaderElectionRecord(
                holder_identity="p", lease_duration_seconds=15, acquire_time=now, renew_time=now
            )
        )
        assert record.record.holder_identity == "p"
        assert (await lock.get()) is not None
        await lock.aclose()
    finally:
        await api.close()
        listener.close()
    target = f"http://{server}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases".encode()
    assert first_lines[0] == b"POST " + target + b" HTTP/1.1"
    assert all(line.split(b" ")[1].startswith(b"http://") for line in first_lines)
