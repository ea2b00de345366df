"""The lean request path: lease traffic on a connection pool of its own, built from the
``ApiClient``'s configuration.

The hot requests of a lock (get, create, update and patch of its object: a renewal, a release,
an acquisition) skip kubernetes_asyncio's generated API methods (argument checks, recursive
serialization of the body, response models) and aiohttp's client: a body the lock has already
serialized goes out on `._http`'s HTTP/1.1 connections (one future and one timer per request;
aiohttp's request and response objects were two fifths of a renewal's CPU, and what they kept
alive for a round trip fed the garbage collector's full collections). Through a proxy the
requests go through aiohttp, which speaks to proxies. What they keep of the user's configuration,
read from the client's ``Configuration`` as kubernetes_asyncio's ``RESTClientObject`` reads it:

* **the server**: ``configuration.host``;
* **TLS**: an SSL context built once per client from ``ssl_ca_cert``, ``cert_file`` and
  ``key_file``, ``verify_ssl``, ``disable_strict_ssl_verification`` and ``tls_server_name`` (the
  SNI and the name checked);
* **credentials, per request**: ``ApiClient.update_params_for_auth`` with ``BearerToken``, the
  very call every generated method makes, so a ``refresh_api_key_hook`` runs and a token that
  changes is sent as it changes: the projected service-account token that
  ``load_incluster_config`` re-reads, an exec plugin's or OIDC token that the user's refresh
  task or hook puts in ``configuration.api_key``; plus the client's ``default_headers``
  (``User-Agent``) and ``cookie``;
* **proxies and netrc**: ``configuration.proxy`` and ``proxy_headers``; and what
  kubernetes_asyncio's session takes from the environment (``trust_env``): the ``HTTP(S)_PROXY``
  / ``NO_PROXY`` proxy for the server and ``~/.netrc`` (``$NETRC``) credentials for it when
  there is no token. Those are read once, when the pool opens, with aiohttp's own functions:
  aiohttp reads them again in a worker thread for every request, two thread hops that cost a
  lease renewal more CPU than everything else it does;
* **the pool size**: ``connection_pool_maxsize``.

**Why a pool of its own.** kubernetes_asyncio's session has one connector limited to
``connection_pool_maxsize`` connections (100 by default), shared by everything the application
does with the client: its watches hold a connection each for minutes, its lists of thousands of
objects take seconds. A renewal queued behind them for longer than the renew deadline loses
leadership although the API server is healthy (the failure of kubernetes-sigs/controller-runtime
#3092). So lease traffic has its own connector, shared by every lock on the same ``ApiClient``
and used by nothing else. The cost: a second set of connections to the API server (for leases
only: usually one or a few) and a second SSL context (built once, on the first lean request).
What it does not give: a credential that kubernetes_asyncio itself would only apply while
building its session (none today), and a change the user makes to the ``ssl`` or connector of
the client's session after building it (we read the configuration, not the session).

**Lifetime.** The pool is opened on the first request of a lock on the client, and closed when
the last lock using it is closed (``aclose``), when the user's own session turns out to be
closed at the next request (the client was closed: the request fails as it would have on the
client), or, for locks never closed, when the client and its locks are garbage (a finalizer closes
it without waiting, as nothing can be awaited there).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import weakref
from collections.abc import Awaitable, Generator
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp
import anyio
import anyio.lowlevel
from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env
from yarl import URL

from .._exceptions import ElectionError
from ._http import HttpError, HttpPool
from ._reply import Reply, reply_of

__all__ = ["LeaseTransport", "lease_transport"]

#: The auth setting kubernetes_asyncio's generated methods name (its only one).
_AUTH_SETTINGS: Final = ["BearerToken"]

_TRANSPORTS: weakref.WeakKeyDictionary[Any, LeaseTransport] = weakref.WeakKeyDictionary()


def lease_transport(api_client: Any) -> LeaseTransport:
    """The lease pool of ``api_client`` (one per client, shared by its locks)."""
    transport = _TRANSPORTS.get(api_client)
    if transport is None:
        transport = _TRANSPORTS[api_client] = LeaseTransport()
    return transport


class ClientClosed(ElectionError):
    """The ``ApiClient`` a lock borrows was closed: no request on it can succeed again."""


class LeaseTransport:
    """One ``ApiClient``'s pool for lease traffic (see the module docstring)."""

    def __init__(self) -> None:
        self._pool: aiohttp.ClientSession | HttpPool | None = None
        self._host_header = ""
        self._base_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        # From the environment, read when the pool opens: the proxy for the server (and its
        # credentials), and netrc credentials for the server.
        self._env_proxy: tuple[URL, aiohttp.BasicAuth | None] | None = None
        self._netrc_auth: aiohttp.BasicAuth | None = None
        self._users: set[object] = set()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def use(self, user: object) -> None:
        """Count ``user`` (a lock's client) among those that keep the pool open."""
        self._users.add(user)

    async def release(self, user: object) -> None:
        """``user`` is done; the last one closes the pool."""
        self._users.discard(user)
        if not self._users:
            await self.aclose()

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if isinstance(pool, HttpPool):
            pool.close()
            await anyio.lowlevel.checkpoint()
        elif pool is not None and not pool.closed:
            await pool.close()

    def _open(self, api_client: Any) -> aiohttp.ClientSession | HttpPool:
        """The pool for ``api_client``'s server: our own HTTP/1.1 client (`._http`) when the
        server is reached directly, aiohttp through the proxy otherwise."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is not None and (not isinstance(pool, aiohttp.ClientSession) or not pool.closed):
            if self._loop is loop:
                return pool
            # A pool opened on another event loop (a client reused across loops) is unusable.
            _discard(pool)
        configuration = api_client.configuration
        host = str(configuration.host)
        server = URL(host)
        context = _ssl_context(configuration) if _is_https(host) else None
        self._env_proxy, self._netrc_auth = _from_environment(server)
        limit = int(configuration.connection_pool_maxsize or 0)
        if configuration.proxy or self._env_proxy is not None:
            connector = aiohttp.TCPConnector(
                limit=limit,
                ssl=context if context is not None else True,
                # Exact deadlines: aiohttp rounds those of 5 s and more up to a whole second.
                timeout_ceil_threshold=math.inf,
            )
            # trust_env=False: the environment is read here, once (see the module docstring).
            pool = aiohttp.ClientSession(connector=connector, trust_env=False)
        else:
            if server.host is None:
                raise ElectionError(f"the ApiClient's host {host!r} names no server")
            pool = HttpPool(
                server.host,
                server.explicit_port or (443 if context is not None else 80),
                ssl_context=context,
                server_hostname=configuration.tls_server_name or server.host,
                limit=limit,
            )
            self._host_header = server.raw_authority
            self._base_path = server.raw_path.rstrip("/")
        self._pool, self._loop = pool, loop
        self._finalizer = weakref.finalize(self, _discard, pool)
        return pool

    async def request(
        self,
        api_client: Any,
        method: str,
        path: str,
        body: bytes | None,
        seconds: float,
        *,
        content_type: str = "application/json",
    ) -> Reply:
        """Send ``method path`` with the ``body`` (of ``content_type``) as ``api_client`` would,
        and read the reply, all of it (the credentials, the wait for a connection, the exchange)
        within ``seconds``. Raises `TimeoutError` past the bound, `OSError` or what aiohttp raises for the connection,
        [`ClientClosed`][ClientClosed] if the client was closed, and whatever the credential hook
        raises."""
        user_session = api_client.rest_client.pool_manager
        if user_session.closed:
            await self.aclose()
            raise ClientClosed(
                "the kubernetes_asyncio ApiClient the lock uses was closed (close it after the "
                "elections that use it)"
            )
        configuration = api_client.configuration
        headers: dict[str, str] = {**api_client.default_headers}
        if api_client.cookie:
            headers["Cookie"] = api_client.cookie
        headers["Accept"] = "application/json"
        if body is not None:
            headers["Content-Type"] = content_type
        queries: list[tuple[str, str]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if configuration.refresh_api_key_hook is None:
            # Reads of the configuration only: nothing that can block.
            await api_client.update_params_for_auth(headers, queries, _AUTH_SETTINGS)
        else:
            with anyio.fail_after(seconds):
                await api_client.update_params_for_auth(headers, queries, _AUTH_SETTINGS)
            seconds = deadline - loop.time()
            if not seconds > 0:
                raise TimeoutError
        pool = self._open(api_client)
        if self._netrc_auth is not None and "authorization" not in (k.lower() for k in headers):
            headers["Authorization"] = self._netrc_auth.encode()
        if isinstance(pool, HttpPool):
            target = self._base_path + path
            if queries:
                target += "?" + urlencode(queries)
            return await pool.request(
                method, _request_bytes(method, target, self._host_header, headers, body), deadline
            )
        return await self._via_proxy(
            pool, configuration, method, path, body, headers, queries, deadline - loop.time()
        )

    async def _via_proxy(
        self,
        session: aiohttp.ClientSession,
        configuration: Any,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        queries: list[tuple[str, str]],
        seconds: float,
    ) -> Reply:
        # aiohttp computes ceil(now + total) and cannot take an infinite total.
        timeout = aiohttp.ClientTimeout(total=seconds if math.isfinite(seconds) else None)
        text = f"{configuration.host}{path}"
        if queries:
            text += "?" + urlencode(queries)
        url = URL(text)
        extra: dict[str, Any] = {}
        if configuration.proxy:
            extra["proxy"] = configuration.proxy
        elif self._env_proxy is not None:
            extra["proxy"], extra["proxy_auth"] = self._env_proxy
        if configuration.proxy_headers:
            extra["proxy_headers"] = configuration.proxy_headers
        if configuration.tls_server_name:
            extra["server_hostname"] = configuration.tls_server_name
        response = await session.request(
            method, url, data=body, headers=headers, timeout=timeout, **extra
        )
        try:
            content = await response.read()
        finally:
            response.release()
        return reply_of(response, content)


def _request_bytes(
    method: str, target: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    """One HTTP/1.1 request, head and body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise HttpError(
                f"the request header {name!r} holds a line break (a credential read with one?)"
            )
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines)
    try:
        encoded = head.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HttpError(f"a request header is not Latin-1: {exc}") from None
    return encoded + b"\r\n\r\n" + (body or b"")


def _from_environment(
    server: URL,
) -> tuple[tuple[URL, aiohttp.BasicAuth | None] | None, aiohttp.BasicAuth | None]:
    """What aiohttp's ``trust_env`` would find for ``server``: its proxy (with credentials)
    unless ``NO_PROXY`` bypasses it, and its netrc credentials."""
    try:
        proxy: tuple[URL, aiohttp.BasicAuth | None] | None = get_env_proxy_for_url(server)
    except LookupError:
        proxy = None
    netrc_auth: aiohttp.BasicAuth | None = None
    if server.host is not None:
        with contextlib.suppress(LookupError):
            netrc_auth = basicauth_from_netrc(netrc_from_env(), server.host)
    return proxy, netrc_auth


def _is_https(host: str) -> bool:
    return host[:8].lower() == "https://"


def _ssl_context(configuration: Any) -> ssl.SSLContext:
    """The SSL context kubernetes_asyncio builds for ``configuration`` (its ``rest.py``)."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _discard(session: aiohttp.ClientSession | HttpPool) -> None:
    """Close ``session`` without awaiting (a finalizer, or a pool left on another loop).

    The closing is synchronous in aiohttp (the connector closes its transports at once); only
    waiting for the sockets to finish closing is async. Driving the coroutine to its first
    suspension does the synchronous part and leaves the rest to the loop, if it still runs,
    without the warnings an abandoned session or connector would print."""
    if isinstance(session, HttpPool):
        with contextlib.suppress(RuntimeError):  # its loop is closed: the sockets went with it
            session.close()
        return
    if session.closed:
        return
    _start(session.close())


def _start(awaitable: Awaitable[Any]) -> None:
    steps: Generator[Any, None, Any] = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration:
        return
    except RuntimeError:  # no running loop to schedule the rest on: nothing more to do
        return
    steps.close()
