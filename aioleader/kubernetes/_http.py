"""A small HTTP/1.1 client for lease traffic: keep-alive connections straight on asyncio's
transports, one request in flight per connection.

Why not aiohttp here. A renewal is one PUT of a body the lock serialized, and a reply of a few
hundred bytes of which the lock reads the status and the JSON. aiohttp's client builds a request
object, a response object, a timer context, a header multidict and a stream reader per request,
and keeps them all alive for the round trip: on this machine that was two fifths of a renewal's
CPU, and it fed the garbage collector's oldest generation (objects that live a round trip under
load outlive two young collections), whose full collections paused the loop for a fifth of a
second at 1,000 leases. This client keeps per request one future, one timer and the bytes.

What it speaks: ``HTTP/1.1`` requests with ``Content-Length``; replies framed by
``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the connection; 1xx interim
replies skipped; ``Connection: close`` honoured. TLS through the SSL context given, with the SNI
and the name checked given as ``server_hostname``. What it leaves to aiohttp (the caller,
`._transport`, routes those requests there): proxies.

Failures are exceptions the request path already translates (`._errors.transport_errors`):
`TimeoutError` past the deadline, `OSError` for the connection (`ConnectionResetError` when
the server closes it mid-reply), [`HttpError`][HttpError] (an `OSError`) for a reply that is not
HTTP. A connection whose exchange did not end cleanly (a timeout, a cancellation, an error) is
closed, never reused. A request on a reused keep-alive connection that the server closed before
answering is sent once more on a fresh one when its method is idempotent (GET, PUT), as aiohttp
does: an idle connection the server timed out is not a failure of the API.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Final

from ._reply import Reply

__all__ = ["HttpError", "HttpPool"]

#: The largest reply read (head and body): a Lease or ConfigMap lock is a few KiB; a larger reply
#: is not one of ours (a proxy's page, a runaway object) and is refused rather than buffered.
MAX_REPLY: Final = 16 * 1024 * 1024

#: Seconds a connection may sit idle in the pool before it is closed (aiohttp's keep-alive
#: default): a process whose elections all follow (through the shared watch) sends nothing, and
#: must not hold the connections its start-up reads opened.
KEEPALIVE: Final = 15.0

_IDEMPOTENT: Final = frozenset({"GET", "PUT", "HEAD", "DELETE", "OPTIONS"})
_NO_BODY: Final = frozenset({204, 304})


class HttpError(OSError):
    """The server's bytes are not an HTTP/1.1 reply we can read (or a header we would send is
    not one: a credential with a line break)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time."""

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Reply] | None = None
        self._head: tuple[int, str, dict[bytes, bytes], int] | None = None
        self._eof = False
        self._received = False  # a byte of a reply arrived in the current exchange
        self.reused = False
        self.alive = True
        self.idle_since = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for (the server talks out of turn): the connection is unusable.
            self._fail(HttpError("the server sent bytes without a request"))
            return
        self._received = True
        self._buffer += data
        if len(self._buffer) > MAX_REPLY:
            self._fail(HttpError(f"the reply is larger than {MAX_REPLY} bytes"))
            return
        self._try_complete()

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiter is not None and (self._buffer or self._head is not None):
            self._try_complete()  # a reply delimited by the end, or one cut short
        self._fail(ConnectionResetError("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # -- the exchange ----------------------------------------------------------------------------

    async def exchange(self, request: bytes, deadline: float) -> Reply:
        """Send ``request`` and return the reply, by ``deadline`` (the loop's clock)."""
        transport = self._transport
        if transport is None or not self.alive or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        self._waiter = waiter
        self._received = False
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            transport.write(request)
            reply = await waiter
        except BaseException:
            self.close()  # half an exchange: the connection's state is unknown
            raise
        finally:
            timer.cancel()
            self._waiter = None
        return reply

    def close(self) -> None:
        self.alive = False
        if self._transport is not None:
            self._transport.close()
        self._pool._forget(self)

    @property
    def answered_nothing(self) -> bool:
        """Whether the last failed exchange got no byte of a reply (safe to send again)."""
        return not self._received

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.alive:
            self.close()

    def _try_complete(self) -> None:
        try:
            reply, reusable = self._parse()
        except HttpError as exc:
            self._fail(exc)
            return
        if reply is None:
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
        if not reusable:
            self.close()

    def _parse(self) -> tuple[Reply | None, bool]:
        """The reply in the buffer once it is complete (and whether the connection can be
        reused), or ``(None, _)`` while more is needed."""
        buffer = self._buffer
        while self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if self._eof:
                    raise HttpError("the server closed the connection before a full reply")
                return None, False
            head = _parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
            if 100 <= head[0] < 200:
                continue  # an interim reply (100 Continue): the real one follows
            self._head = head
        status, reason, headers, _ = self._head
        connection = headers.get(b"connection", b"").lower()
        reusable = self._head[3] >= 11 and b"close" not in connection
        encoding = headers.get(b"transfer-encoding", b"").lower()
        if status in _NO_BODY:
            body: bytes | None = b""
            consumed = 0
        elif encoding:
            if encoding != b"chunked":
                raise HttpError(f"unsupported Transfer-Encoding {encoding.decode('latin-1')!r}")
            body, consumed = _dechunk(buffer)
        elif b"content-length" in headers:
            length = _content_length(headers[b"content-length"])
            body = bytes(buffer[:length]) if len(buffer) >= length else None
            consumed = length
        else:  # delimited by the end of the connection
            body = bytes(buffer) if self._eof else None
            consumed, reusable = len(buffer), False
        if body is None:
            if self._eof:
                raise HttpError("the server closed the connection in the middle of a reply")
            return None, False
        if len(buffer) > consumed:
            reusable = False  # bytes after the reply: nothing we asked for
        self._buffer = bytearray()
        self._head = None
        reply = Reply(
            status=status,
            reason=reason,
            content_type=headers.get(b"content-type", b"").decode("latin-1"),
            body=body,
            retry_after=(
                headers[b"retry-after"].decode("latin-1") if b"retry-after" in headers else None
            ),
        )
        return reply, reusable


def _expire(waiter: asyncio.Future[Reply]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


_WANTED: Final = frozenset(
    {b"connection", b"content-length", b"content-type", b"retry-after", b"transfer-encoding"}
)


def _parse_head(head: bytes) -> tuple[int, str, dict[bytes, bytes], int]:
    """``(status, reason, the headers we read (lower-cased names), version*10)`` of a reply head."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise HttpError(f"not an HTTP reply: {status_line[:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HttpError(f"malformed header line {line[:80]!r}")
        key = name.lower()
        if key in _WANTED:
            if key in headers and key in (b"content-length", b"transfer-encoding"):
                raise HttpError(f"repeated {name.decode('latin-1')} header")
            headers[key] = value.strip()
    if b"content-length" in headers and b"transfer-encoding" in headers:
        raise HttpError("both Content-Length and Transfer-Encoding")  # request smuggling shape
    return int(code), reason.decode("latin-1"), headers, 11 if version == b"HTTP/1.1" else 10


def _content_length(value: bytes) -> int:
    if not value.isdigit() or not value.isascii() or len(value) > 12:
        raise HttpError(f"bad Content-Length {value[:40]!r}")
    length = int(value)
    if length > MAX_REPLY:
        raise HttpError(f"the reply is larger than {MAX_REPLY} bytes ({length})")
    return length


def _dechunk(buffer: bytearray) -> tuple[bytes | None, int]:
    """A chunked body in ``buffer``: ``(body, bytes consumed)``, or ``(None, 0)`` if incomplete."""
    body = bytearray()
    at = 0
    while True:
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None, 0
        size_text = bytes(buffer[at:end]).split(b";", 1)[0].strip()
        try:
            if not size_text or not size_text.isascii():
                raise ValueError
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"bad chunk size {bytes(buffer[at:end])[:40]!r}") from None
        if size < 0 or len(body) + size > MAX_REPLY:
            raise HttpError(f"bad chunk size {size}")
        at = end + 2
        if size == 0:
            # Trailers (ignored), then the empty line.
            while True:
                end = buffer.find(b"\r\n", at)
                if end < 0:
                    return None, 0
                line_empty = end == at
                at = end + 2
                if line_empty:
                    return bytes(body), at
        if len(buffer) < at + size + 2:
            return None, 0
        body += buffer[at : at + size]
        if buffer[at + size : at + size + 2] != b"\r\n":
            raise HttpError("a chunk does not end with CRLF")
        at += size + 2


class HttpPool:
    """Keep-alive connections to one server (``host:port``, plain or TLS), at most ``limit``
    open at once (0: no limit)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        limit: int = 0,
    ) -> None:
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._limit = limit
        self._idle: collections.deque[_Connection] = collections.deque()
        self._open: set[_Connection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._sweep: asyncio.TimerHandle | None = None

    @property
    def connections(self) -> int:
        """Connections open now (idle or busy)."""
        return len(self._open)

    async def request(self, method: str, request: bytes, deadline: float) -> Reply:
        """Send ``request`` (a whole HTTP/1.1 request, head and body) and read the reply, all of
        it (waiting for a connection, connecting, the exchange) by ``deadline`` (the loop's
        clock)."""
        if self._closed:
            raise ConnectionResetError("the connection pool is closed")
        connection = await self._acquire(deadline)
        try:
            return await self._exchange(connection, request, deadline)
        except ConnectionError:
            if not (
                connection.reused
                and connection.answered_nothing
                and method in _IDEMPOTENT
                and asyncio.get_running_loop().time() < deadline
            ):
                raise
        # A kept-alive connection the server had closed: once more, on a fresh connection.
        connection = await self._acquire(deadline, fresh=True)
        return await self._exchange(connection, request, deadline)

    async def _exchange(self, connection: _Connection, request: bytes, deadline: float) -> Reply:
        try:
            reply = await connection.exchange(request, deadline)
        finally:
            self._release(connection)
        return reply

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection that is still alive (the likeliest to stay)."""
        while self._idle:
            connection = self._idle.pop()
            if connection.alive:
                connection.reused = True
                return connection
        return None

    async def _acquire(self, deadline: float, *, fresh: bool = False) -> _Connection:
        if not fresh and (idle := self._take_idle()) is not None:
            return idle
        while self._limit and len(self._open) >= self._limit:
            if fresh and self._idle:
                self._idle.popleft().close()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if not fresh and (idle := self._take_idle()) is not None:
                return idle
        return await self._connect(deadline)

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(self)
        self._open.add(connection)
        try:
            async with asyncio.timeout_at(deadline):
                await loop.create_connection(
                    lambda: connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname if self._ssl else None,
                )
        except BaseException:
            connection.close()
            raise
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.alive and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
            self._schedule_sweep()
        self._wake()

    def _schedule_sweep(self) -> None:
        # The oldest idle connection is on the left (requests take the most recent, on the
        # right): one timer, at the moment it has been idle for KEEPALIVE seconds.
        if self._sweep is None and self._idle and not self._closed:
            oldest = self._idle[0].idle_since
            self._sweep = asyncio.get_running_loop().call_at(oldest + KEEPALIVE, self._close_idle)

    def _close_idle(self) -> None:
        self._sweep = None
        now = asyncio.get_running_loop().time()
        while self._idle and now - self._idle[0].idle_since >= KEEPALIVE:
            self._idle.popleft().close()
        self._schedule_sweep()

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every connection (those in an exchange fail it)."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
