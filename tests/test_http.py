"""The lean path's HTTP/1.1 client (aioleader/kubernetes/_http.py) against a scripted server on a
real socket: framing (Content-Length, chunked, end of connection, interim replies), keep-alive
and its limits, the one retry of an idempotent request on a connection the server had closed,
deadlines, cancellation, and generated garbage (hypothesis) that must end as an HttpError or a
reply, never as another exception or a hang."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioleader.kubernetes._http import MAX_REPLY, HttpError, HttpPool, _dechunk, _parse_head
from aioleader.kubernetes._transport import _request_bytes

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Script:
    """What the server does on each connection: for each request read, the next reply (a list of
    byte chunks written with a short pause between them, ending in ``b""`` to close the
    connection after it), or ``None`` to close the connection without answering; ``"hang"`` to
    never answer; ``"reset-after:<bytes>"`` to send those bytes, then reset the connection."""

    replies: list[list[bytes] | str | None]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


@asynccontextmanager
async def server(script: Script) -> AsyncIterator[HttpPool]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        try:
            while script.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                script.requests.append(head + body)
                reply = script.replies.pop(0)
                if reply is None:
                    break
                if reply == "hang":
                    await asyncio.sleep(3600)
                if isinstance(reply, str) and reply.startswith("reset-after:"):
                    # Part of a reply, then a reset (RST, not a FIN: no end of stream).
                    writer.write(reply.removeprefix("reset-after:").encode())
                    await writer.drain()
                    await asyncio.sleep(0.02)
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                assert isinstance(reply, list)
                for chunk in reply:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.005)
                if reply and reply[-1] == b"":
                    break  # b"" at the end: close after the reply
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = HttpPool("127.0.0.1", port, limit=2)
    try:
        yield pool
    finally:
        pool.close()
        listener.close()


def get(path: str = "/x") -> bytes:
    return _request_bytes("GET", path, "h", {"Accept": "application/json"}, None)


def put(body: bytes = b"{}") -> bytes:
    return _request_bytes("PUT", "/x", "h", {"Content-Type": "application/json"}, body)


def soon(seconds: float = 2.0) -> float:
    return asyncio.get_running_loop().time() + seconds


@pytest.mark.asyncio
async def test_a_reply_split_anywhere_is_read_whole_and_the_connection_kept() -> None:
    script = Script([[OK[:5], OK[5:30], OK[30:]], [OK]])
    async with server(script) as pool:
        first = await pool.request("GET", get(), soon())
        second = await pool.request("GET", get(), soon())
    assert (first.status, first.reason, first.content_type, first.body) == (
        200,
        "OK",
        "application/json",
        b"{}",
    )
    assert second.body == b"{}"
    assert script.connections == 1  # kept alive
    assert script.requests[0].startswith(b"GET /x HTTP/1.1\r\nHost: h\r\n")


@pytest.mark.asyncio
async def test_chunked_replies_and_interim_replies() -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\nRetry-After: 1\r\n\r\n"
        b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n"
    )
    script = Script([[chunked[:40], chunked[40:90], chunked[90:]], [OK]])
    async with server(script) as pool:
        reply = await pool.request("PUT", put(), soon())
        again = await pool.request("GET", get(), soon())
    assert (reply.status, reply.reason, reply.body, reply.retry_after) == (
        409,
        "Conflict",
        b"abc0123456789abcdef",
        "1",
    )
    assert again.status == 200
    assert script.connections == 1


@pytest.mark.asyncio
async def test_connection_close_and_close_delimited_bodies_are_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nA"
    delimited = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    script = Script([[closing, b""], [delimited, b""], [OK]])
    async with server(script) as pool:
        assert (await pool.request("GET", get(), soon())).body == b"A"
        assert (await pool.request("GET", get(), soon())).body == b"until the end"
        assert (await pool.request("GET", get(), soon())).body == b"{}"
    assert script.connections == 3


@pytest.mark.asyncio
async def test_an_idempotent_request_is_sent_once_more_when_a_kept_connection_was_closed() -> None:
    # The first connection answers once, then closes when the second request arrives (an idle
    # connection the server timed out): the PUT is sent again on a fresh connection.
    script = Script([[OK], None, [OK]])
    async with server(script) as pool:
        await pool.request("GET", get(), soon())
        reply = await pool.request("PUT", put(b'{"a":1}'), soon())
    assert reply.status == 200
    assert script.connections == 2
    assert [r.split(b" ")[0] for r in script.requests] == [b"GET", b"PUT", b"PUT"]


@pytest.mark.asyncio
async def test_a_reply_cut_short_is_not_sent_again() -> None:
    """The server started answering (so it has the request) and then the connection went: the
    PUT is not sent again, even on a kept-alive connection."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    script = Script([[OK], "reset-after:" + head.decode(), [OK]])
    async with server(script) as pool:
        await pool.request("GET", get(), soon())
        with pytest.raises(ConnectionResetError):
            await pool.request("PUT", put(), soon())
    assert [r.split(b" ")[0] for r in script.requests] == [b"GET", b"PUT"]


@pytest.mark.asyncio
async def test_a_post_is_never_sent_twice() -> None:
    script = Script([[OK], None, [OK]])
    async with server(script) as pool:
        await pool.request("GET", get(), soon())
        post = _request_bytes("POST", "/x", "h", {}, b"{}")
        with pytest.raises(ConnectionResetError):
            await pool.request("POST", post, soon())
    assert [r.split(b" ")[0] for r in script.requests] == [b"GET", b"POST"]


@pytest.mark.asyncio
async def test_a_silent_server_is_a_timeout_at_the_deadline_and_the_connection_is_dropped() -> None:
    script = Script(["hang", [OK]])
    async with server(script) as pool:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request("GET", get(), start + 0.2)
        assert 0.2 <= loop.time() - start < 1.0
        assert pool.connections == 0  # half an exchange is never reused
        assert (await pool.request("GET", get(), soon())).status == 200
    assert script.connections == 2


@pytest.mark.asyncio
async def test_a_cancelled_exchange_drops_its_connection() -> None:
    script = Script(["hang", [OK]])
    async with server(script) as pool:
        task = asyncio.ensure_future(pool.request("GET", get(), soon(30)))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.connections == 0
        assert (await pool.request("GET", get(), soon())).status == 200


@pytest.mark.asyncio
async def test_the_limit_makes_requests_wait_for_a_connection_within_their_deadline() -> None:
    script = Script(["hang", "hang", [OK]])
    async with server(script) as pool:  # limit=2
        hung = [asyncio.ensure_future(pool.request("GET", get(), soon(30))) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert pool.connections == 2
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request("GET", get(), start + 0.2)
        assert 0.2 <= loop.time() - start < 1.0
        hung[0].cancel()  # frees a connection slot: the next request connects
        reply = await pool.request("GET", get(), soon())
        assert reply.status == 200
        hung[1].cancel()
        await asyncio.gather(*hung, return_exceptions=True)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP reply"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP reply"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "repeated"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "in the middle of a reply"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: " + str(MAX_REPLY + 1).encode() + b"\r\n\r\n",
            "larger than",
        ),
    ],
)
@pytest.mark.asyncio
async def test_a_reply_that_is_not_http_is_an_http_error(reply: bytes, message: str) -> None:
    script = Script([[reply, b""]])
    async with server(script) as pool:
        with pytest.raises(HttpError, match=message):
            await pool.request("GET", get(), soon())
        assert pool.connections == 0


def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    with pytest.raises(HttpError, match="'Authorization' holds a line break"):
        _request_bytes("GET", "/x", "h", {"Authorization": "Bearer abc\n"}, None)
    with pytest.raises(HttpError, match="not Latin-1"):
        _request_bytes("GET", "/x", "h", {"Authorization": "Bearer \u20ac"}, None)


@settings(deadline=None)
@given(
    body=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=20),
)
def test_dechunk_reads_back_any_chunking(body: bytes, sizes: list[int]) -> None:
    encoded = bytearray()
    at = 0
    for size in sizes:
        part = body[at : at + size]
        if part:
            encoded += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        at += size
    rest = body[at:]
    if rest:
        encoded += f"{len(rest):x}\r\n".encode() + rest + b"\r\n"
    encoded += b"0\r\n\r\n"
    assert _dechunk(encoded) == (body, len(encoded))
    for cut in range(len(encoded)):  # any prefix is incomplete, never an error or a wrong body
        assert _dechunk(encoded[:cut]) == (None, 0)


@settings(deadline=None)
@given(st.binary(max_size=400))
def test_garbage_heads_and_bodies_are_http_errors_or_replies(data: bytes) -> None:
    for parse in (_parse_head, _dechunk_bytes):
        with suppress(HttpError):
            parse(data)


def _dechunk_bytes(data: bytes) -> object:
    return _dechunk(bytearray(data))


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(1, 50))
def test_a_server_sending_garbage_yields_an_error_or_a_reply_never_a_hang(
    data: bytes, split: int
) -> None:
    async def run() -> None:
        chunks = [data[i : i + split] for i in range(0, len(data), split)]
        script = Script([[*chunks, b""]])
        async with server(script) as pool:
            try:
                reply = await pool.request("GET", get(), soon(2))
            except (HttpError, ConnectionResetError):
                pass  # the server closes after its bytes: a complete reply or an error
            else:
                assert 0 <= reply.status <= 999
            assert pool.connections == 0 or script.connections == 1

    asyncio.run(run())


@pytest.mark.asyncio
async def test_idle_connections_are_closed_after_the_keepalive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aioleader.kubernetes import _http

    monkeypatch.setattr(_http, "KEEPALIVE", 0.2)
    script = Script(["hang", [OK], [OK], [OK]])
    async with server(script) as pool:
        hung = asyncio.ensure_future(pool.request("GET", get(), soon(30)))
        await asyncio.sleep(0.05)
        await asyncio.gather(*(pool.request("GET", get(), soon()) for _ in range(1)))
        assert pool.connections == 2  # one busy, one idle
        await asyncio.sleep(0.35)
        assert pool.connections == 1  # the idle one was closed; the busy one stays
        assert (await pool.request("GET", get(), soon())).status == 200  # a fresh one
        hung.cancel()
        await asyncio.gather(hung, return_exceptions=True)
