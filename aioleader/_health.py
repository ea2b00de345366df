"""Health checks with client-go's ``HealthzAdaptor`` semantics, for probes.

A candidate is unhealthy only when it believes it leads but has not renewed for
``lease_duration + tolerance`` — that is, its elector is stuck (a blocked event loop, a process that
was paused) — or when its election failed for good (e.g. 403 Forbidden). Standbys are healthy:
killing a healthy standby would not help anyone.

Three ways to expose it:

* [`check_health()`][check_health] — the check itself, for any framework (aiohttp: three lines, see
  ``examples/aiohttp_app.py``);
* [`healthz_app()`][healthz_app] — an ASGI application (route it at ``/healthz`` in Starlette/FastAPI);
* [`serve_healthz()`][serve_healthz] — a tiny HTTP server on anyio, used by ``aioleader run --healthz-addr``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, final

import anyio
from anyio.abc import SocketStream, TaskStatus

from ._leadership import Leadership

__all__ = ["HealthStatus", "check_health", "healthz_app", "serve_healthz"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@final
@dataclass(frozen=True)
class HealthStatus:
    healthy: bool
    problems: tuple[str, ...]

    @property
    def text(self) -> str:
        return "ok" if self.healthy else "\n".join(self.problems)


def check_health(
    leaderships: Leadership | Iterable[Leadership], tolerance: float = 0.0
) -> HealthStatus:
    """Check one election or several (a process healthy only if all of them are)."""
    if isinstance(leaderships, Leadership):
        leaderships = [leaderships]
    problems = tuple(
        problem
        for leadership in leaderships
        if (problem := leadership.health_problem(tolerance)) is not None
    )
    return HealthStatus(healthy=not problems, problems=problems)


def healthz_app(
    leaderships: Leadership | Iterable[Leadership] | Callable[[], Iterable[Leadership]],
    tolerance: float = 0.0,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering any GET with 200 ``ok`` or 500 and the problems, as text.

    Route it at an exact path (Starlette: ``Route("/healthz", endpoint=healthz_app(...))``);
    ``app.mount("/healthz", ...)`` would answer ``/healthz/`` and redirect ``/healthz``.

    ``leaderships`` may be a callable, for apps whose elections start after the app is built
    (FastAPI lifespan).
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        current = leaderships() if callable(leaderships) else leaderships
        status = check_health(current, tolerance)
        body = status.text.encode() + b"\n"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if status.healthy else 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


async def serve_healthz(
    host: str,
    port: int,
    leaderships: Callable[[], Iterable[Leadership]],
    *,
    tolerance: float = 0.0,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /healthz`` (and ``/``) until cancelled; ``task_status`` gets the bound port.

    Deliberately minimal HTTP/1.0 (one request per connection, no keep-alive): kubelet's probes
    and curl need nothing more, and the core keeps no HTTP server dependency.
    """

    async def handle(stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(5):
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    try:
                        request += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                line = request.split(b"\r\n", 1)[0].decode("latin-1").split()
                if len(line) < 2 or line[0] not in ("GET", "HEAD"):
                    await _reply(stream, 405, "method not allowed\n")
                    return
                if line[1].split("?", 1)[0] not in ("/", "/healthz", "/livez", "/readyz"):
                    await _reply(stream, 404, "not found\n")
                    return
                status = check_health(leaderships(), tolerance)
                await _reply(stream, 200 if status.healthy else 500, status.text + "\n")

    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(bound)
        await listener.serve(handle)


async def _reply(stream: SocketStream, code: int, text: str) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
    body = text.encode()
    head = (
        f"HTTP/1.0 {code} {reason[code]}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(head + body)
