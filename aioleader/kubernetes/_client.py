"""The request path of the Kubernetes locks: the API client, bounded requests and streams.

* **Client ownership.** A lock given an ``ApiClient`` borrows it and never closes it. A lock given
  none loads the in-cluster or kubeconfig configuration on first use (`._config`), owns the
  client it builds and closes it in `KubeClient.aclose()`.
* **Bounded requests.** kubernetes_asyncio waits forever by default. Every request here carries an
  aiohttp total timeout *and* runs under `anyio.fail_after()` with the same budget, so neither a
  hung socket nor a hung credential plugin can hold the elector past its renew deadline.
* **Cheap requests.** The hot requests ([`KubeClient.send()`][KubeClient.send]: get, create and update of the
  lock's object) take the lean path of `._transport`: a body the lock serialized itself,
  sent on a connection pool kept for lease traffic, with the client's configuration and
  credentials. The others (lists, watches, Events) go through kubernetes_asyncio with
  ``_preload_content=False``: we get aiohttp's response, read the body and parse the JSON
  ourselves (`._reply`), skipping the generated models (which would also re-serialize
  ``MicroTime`` fields with ``isoformat()``, a format kube-apiserver rejects).
* **Errors.** A request that gets no reply raises [`LockError`][aioleader.LockError] through
  `transport_errors()`, the one place transport failures are translated; a reply is
  returned whatever its status, for the lock to judge with `error_for()`.

Only this package imports kubernetes_asyncio and aiohttp, and they are asyncio-only: the Kubernetes
locks run on anyio's asyncio backend.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import anyio
import anyio.lowlevel

from .._exceptions import ElectionError, LockError
from ._config import load_api_client
from ._errors import transport_errors
from ._reply import ObjectRef, Reply, reply_of
from ._transport import LeaseTransport, lease_transport

__all__ = ["DEFAULT_TIMEOUT", "KubeClient", "Send", "read_reply"]

#: The bound of a request made with ``timeout=None``. Never unbounded: a request without a deadline
#: is how a leader keeps "leading" through a partition.
DEFAULT_TIMEOUT: Final = 10.0

#: What a lock passes to [`KubeClient.request()`][KubeClient.request]: start one API call on the given client with
#: ``_preload_content=False`` and the given ``_request_timeout``, returning aiohttp's response.
Send = Callable[[Any, aiohttp.ClientTimeout], Awaitable[aiohttp.ClientResponse]]


class KubeClient:
    """A borrowed or lazily built-and-owned ``ApiClient``, and bounded, translated requests on it."""

    def __init__(self, api_client: Any | None) -> None:
        self._api_client: Any = api_client
        self._owned = api_client is None
        self._loading: anyio.Lock | None = None  # made on first use: most locks are given a client
        self._closed = False
        self._transport: LeaseTransport | None = None

    @property
    def owned(self) -> bool:
        """Whether the client is built (and closed) by us rather than passed in."""
        return self._owned

    async def _client(self, ref: ObjectRef) -> Any:
        if self._closed:
            raise ElectionError(f"cannot use the lock on {ref}: it was closed")
        if self._api_client is not None:
            return self._api_client
        if self._loading is None:
            self._loading = anyio.Lock()
        async with self._loading:
            if self._api_client is None:
                self._api_client = await load_api_client()
            return self._api_client

    async def send(
        self,
        verb: str,
        ref: ObjectRef,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        timeout: float | None,
        content_type: str = "application/json",
    ) -> Reply:
        """One request on the lease pool (`._transport`): ``method`` on ``path`` (from the
        server's root) with the JSON ``body``, bounded by ``timeout`` seconds
        ([`DEFAULT_TIMEOUT`][DEFAULT_TIMEOUT] if ``None``).

        Returns the reply whatever its status; raises as [`request()`][request] does.
        """
        seconds, client_timeout = _bound(verb, ref, timeout)
        if client_timeout is None:
            await anyio.lowlevel.checkpoint()
            raise LockError(f"cannot {verb} {ref}: no time left for the request ({seconds!r} s)")
        # One deadline, but no cancel scope on the common path (it costs a renewal more than a
        # tenth of its CPU): aiohttp's total timeout bounds the request from waiting for a
        # connection to the last byte of the body; a scope bounds only what aiohttp does not
        # see, loading the configuration (first use) and a credential hook (exec plugins hang).
        with transport_errors(verb, ref, seconds):
            api_client = self._api_client
            if api_client is None or self._closed:
                with anyio.fail_after(seconds):
                    api_client = await self._client(ref)
            transport = self._transport
            if transport is None:
                transport = self._transport = lease_transport(api_client)
                transport.use(self)
            return await transport.request(
                api_client, method, path, body, seconds, content_type=content_type
            )

    async def request(
        self,
        verb: str,
        ref: ObjectRef,
        send: Send,
        *,
        timeout: float | None,
    ) -> Reply:
        """Run one API call bounded by ``timeout`` seconds ([`DEFAULT_TIMEOUT`][DEFAULT_TIMEOUT] if ``None``).

        Returns the reply whatever its status; raises [`LockError`][LockError] if there is none (timeout,
        connection refused or reset, TLS failure, …) and [`ElectionError`][ElectionError] if no client can
        be configured.
        """
        seconds, client_timeout = _bound(verb, ref, timeout)
        if client_timeout is None:
            await anyio.lowlevel.checkpoint()
            raise LockError(f"cannot {verb} {ref}: no time left for the request ({seconds!r} s)")
        # aiohttp's own timeout ends the request cleanly; fail_after is the backstop that also
        # covers loading the configuration and refreshing credentials (exec plugins can hang).
        with transport_errors(verb, ref, seconds), anyio.fail_after(seconds):
            api_client = await self._client(ref)
            response = await send(api_client, client_timeout)
            try:
                body = await response.read()
            finally:
                # A half-read response (cancelled) closes its connection instead of reusing it.
                response.release()
        return reply_of(response, body)

    async def open_stream(
        self,
        verb: str,
        ref: ObjectRef,
        send: Send,
        *,
        sock_connect: float,
        sock_read: float,
    ) -> aiohttp.ClientResponse:
        """Start a streaming call (a watch) and return the response once its headers are in.

        The caller owns the response, whatever its status, and must ``close()`` it. A stream
        lives as long as the server keeps it open, so there is no total timeout: aiohttp bounds
        connecting by ``sock_connect`` and every read, the headers included, by ``sock_read``
        (a silent stream fails with a timeout). `anyio.fail_after()` with their sum is the
        backstop for the opening, as in [`request()`][request] (credential plugins can hang).

        Raises [`LockError`][LockError] if no response arrives (its ``__cause__`` is a
        `TimeoutError` when the server stayed silent) and [`ElectionError`][ElectionError] if no
        client can be configured.
        """
        client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=sock_connect, sock_read=sock_read
        )
        bound = sock_connect + sock_read
        with transport_errors(verb, ref, bound), anyio.fail_after(bound):
            api_client = await self._client(ref)
            return await send(api_client, client_timeout)

    async def aclose(self) -> None:
        """Close the client if we built it; a borrowed client stays open. Idempotent.

        The lease pool closes with the last open lock that uses it."""
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            with anyio.move_on_after(5, shield=True):
                await transport.release(self)
        client, self._api_client = self._api_client, None
        if client is not None and self._owned:
            # Shielded and bounded: a cancelled aclose must still close the session (or it leaks
            # with an "Unclosed client session" warning), but it must not hang either.
            with anyio.move_on_after(5, shield=True):
                await client.close()


def _bound(
    verb: str, ref: ObjectRef, timeout: float | None
) -> tuple[float, aiohttp.ClientTimeout | None]:
    """The request's budget in seconds, and aiohttp's timeout for it (``None``: no time left)."""
    seconds = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    if not seconds > 0:  # also NaN
        return seconds, None
    # aiohttp computes ceil(now + total) and cannot take an infinite total.
    return seconds, aiohttp.ClientTimeout(total=seconds if math.isfinite(seconds) else None)


async def read_reply(
    verb: str, ref: ObjectRef, response: aiohttp.ClientResponse, *, timeout: float
) -> Reply:
    """Read the rest of a response opened by [`KubeClient.open_stream()`][KubeClient.open_stream] (an error reply)
    within ``timeout`` seconds. The caller still closes the response. Raises [`LockError`][LockError]
    if the body cannot be read."""
    with transport_errors(verb, ref, timeout, waiting_for="the reply was not read"):
        with anyio.fail_after(timeout):
            body = await response.read()
    return reply_of(response, body)
