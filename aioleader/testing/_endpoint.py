"""One simulated client's port: a listening socket, its connections, and its faults.

Every client gets its own port over the shared state, so a fault can cut one client off while
the others carry on. The socket is ours rather than aiohttp's ``TCPSite`` because partitions
must act synchronously and on the same port: closing it refuses new connections before
``partition()`` returns, and a healed endpoint is listening (the kernel queues connections)
before ``heal()`` returns, while aiohttp's server picks the socket up on the next loop turn.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import final

from aiohttp import web

from ._connection_faults import Faults
from ._store import Watcher

__all__ = ["ClientEndpoint", "Dropped"]


class Dropped(Exception):
    """Raised inside a handler to reset the connection instead of answering."""


class _Signal:
    """Edge-triggered wake-up: ``wait()`` returns at the next ``fire()``."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


Handler = Callable[["ClientEndpoint", web.BaseRequest], Awaitable[web.StreamResponse]]


@final
class ClientEndpoint:
    """A port of the emulator dedicated to one simulated client.

    Get one with [`KubeEmulator.endpoint()`][KubeEmulator.endpoint]; point a client at [`url`][url] and break its
    connection through [`faults`][faults]. Its public face is [`name`][name], [`url`][url],
    [`port`][port], [`faults`][faults] and [`listening`][listening]; the other members serve the emulator.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        faults: Faults,
        handler: Handler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._name = name
        self._ssl = ssl_context
        self._host = host
        self._port = port
        self._faults = faults
        self._web = web.Server(
            lambda request: handler(self, request), handler_cancellation=True, access_log=None
        )
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._starting: asyncio.Task[None] | None = None
        self._down = False  # the whole server is down (restart)
        self._closed = False
        self._changed = _Signal()
        self.watchers: set[Watcher] = set()
        self.in_flight = 0

    def __repr__(self) -> str:
        return f"<ClientEndpoint {self._name!r} {self.url} {self._faults!r}>"

    @property
    def name(self) -> str:
        """The client's name, as it appears in the request log."""
        return self._name

    @property
    def host(self) -> str:
        """The interface it listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port (stable across partitions and restarts)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` for an emulator with ``tls=True``), the ``host``
        for a kubernetes_asyncio ``Configuration``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{self._port}"

    @property
    def faults(self) -> Faults:
        """This client's faults."""
        return self._faults

    @property
    def listening(self) -> bool:
        """Whether connects are accepted (false while partitioned ``"refuse"`` or restarting)."""
        return self._sock is not None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- listening --------------------------------------------------------------------------

    def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._sock = sock
        self._starting = asyncio.get_running_loop().create_task(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        # With a ready socket and start_serving=False this does not suspend, so the server is
        # known (and can be closed) before it starts accepting.
        server = await loop.create_server(self._web, sock=sock, ssl=self._ssl, start_serving=False)
        self._server = server
        await server.start_serving()

    def _unlisten(self) -> None:
        """Stop listening now and reset every open connection."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._server is not None:
            self._server.close()
        elif self._sock is not None:
            self._sock.close()
        self._sock = self._server = self._starting = None
        for connection in self._web.connections:
            if connection.transport is not None:
                connection.transport.abort()

    def _reconcile(self) -> None:
        """Bring the socket in line with the faults, and wake whatever waits on them."""
        wanted = not (self._closed or self._down or self._faults.partitioned == "refuse")
        if wanted and not self.listening:
            self._listen()
        elif not wanted and self.listening:
            self._unlisten()
        self._changed.fire()
        for watcher in self.watchers:
            watcher.wakeup.set()

    def open(self) -> None:
        """Start listening (unless partitioned); raises OSError if the port cannot be bound.

        From then on the socket follows the faults (see `_reconcile()`).
        """
        self._reconcile()
        self._faults._subscribe(self._reconcile)

    async def wait_listening(self) -> None:
        """Wait until aiohttp serves the socket (connects are queued, never refused, before)."""
        task = self._starting
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled():  # cancelled: a partition came first
                task.result()

    def set_down(self, down: bool) -> None:
        """Take the port down (connections reset, connects refused) or bring it back."""
        self._down = down
        self._reconcile()

    async def close(self) -> None:
        """Stop for good: reset connections, release waiting handlers, await them briefly."""
        self._closed = True
        self._reconcile()
        await self._web.shutdown(0.5)

    # -- used by handlers -------------------------------------------------------------------

    async def wait_while(self, held: Callable[[], bool]) -> None:
        """Wait while ``held()`` is true; raises `Dropped` if the endpoint closes."""
        while held() and not self._closed:
            await self._changed.wait()
        if self._closed:
            raise Dropped

    def abort(self, request: web.BaseRequest) -> None:
        """Reset the request's connection."""
        if request.transport is not None:
            request.transport.abort()
