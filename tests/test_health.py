"""Health checks (client-go HealthzAdaptor semantics) on fake clocks, and the HTTP endpoints."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aioleader import ForbiddenError, LeaderElectionRecord, Leadership, Observed, elect
from aioleader._health import check_health, healthz_app, serve_healthz
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock("asyncio")]


class StuckLock(MemoryLock):
    """A lock whose updates, once ``stuck``, ignore cancellation: the elector task is wedged, as
    it would be behind a blocked event loop or a buggy transport."""

    stuck = False
    unstuck: anyio.Event | None = None

    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        if self.stuck:
            self.unstuck = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self.unstuck.wait()
        return await super().update(record, timeout=timeout)


async def test_standby_and_leader_are_healthy_and_a_wedged_leader_is_not() -> None:
    a = StuckLock("a")
    b = a.sibling("b")
    t0 = anyio.current_time()
    async with elect(a) as la, elect(b) as lb:
        term = await la.wait_term()
        await anyio.sleep(21)
        assert check_health([la, lb]).healthy
        a.stuck = True  # the renewal at 22 never returns
        try:
            await anyio.sleep(2)
            assert la.healthy()  # last renewal at 20: not yet LD (15) stale
            await anyio.sleep(12)  # t = 35: 15 s since the last renewal, exactly LD
            assert la.healthy()
            await anyio.sleep(0.5)
            assert not term.active  # the work deadline passed long ago (20 + RD = 30)
            status = check_health([la, lb])
            assert not status.healthy
            assert "leading but not renewed for 15.5s" in status.text
            assert la.healthy(tolerance=1)  # within the tolerance
            assert lb.healthy()  # the standby is fine
            assert anyio.current_time() - t0 == 35.5
        finally:
            a.stuck = False
            if a.unstuck is not None:
                a.unstuck.set()


async def test_asgi_app_answers_200_and_500() -> None:
    lock = MemoryLock("a")
    async with elect(lock) as leadership:
        await leadership.wait_term()
        app = healthz_app(lambda: [leadership])
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        await app({"type": "http", "method": "GET", "path": "/healthz"}, receive, send)
        assert sent[0]["status"] == 200
        assert sent[1]["body"] == b"ok\n"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serve_healthz_over_tcp(anyio_backend: str) -> None:
    lock = MemoryLock("a")
    async with elect(lock) as leadership, anyio.create_task_group() as tg:
        port = await tg.start(serve_healthz, "127.0.0.1", 0, lambda: [leadership])

        async def get(path: str) -> bytes:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = b""
                with anyio.fail_after(5):
                    while True:
                        try:
                            data += await stream.receive()
                        except anyio.EndOfStream:
                            return data

        ok = await get("/healthz")
        assert ok.startswith(b"HTTP/1.0 200 OK\r\n")
        assert ok.endswith(b"\r\n\r\nok\n")
        assert (await get("/nope")).startswith(b"HTTP/1.0 404")
        tg.cancel_scope.cancel()


async def test_a_failed_election_is_unhealthy() -> None:
    lock = FaultyLock(MemoryLock("a"), ops=frozenset({"get"}))
    lock.fail_next(ForbiddenError("get", 'leases.coordination.k8s.io "a"'))
    handles: list[Leadership] = []
    with pytest.raises(ForbiddenError):
        async with elect(lock) as leadership:
            handles.append(leadership)
            assert leadership.healthy()  # not failed yet
            await anyio.sleep(10)
    status = check_health(handles)
    assert not status.healthy
    assert "the election failed" in status.text
    assert "ForbiddenError" in status.text
