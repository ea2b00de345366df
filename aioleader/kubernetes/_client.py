"""Plumbing shared by the Kubernetes locks: the API client, bounded requests, error translation.

Every Kubernetes lock (Lease today; ConfigMap and Endpoints later) talks to the API server the same
way, so the decisions live here once:

* **Client ownership.** A lock given an ``ApiClient`` borrows it and never closes it. A lock given
  none loads the in-cluster or kubeconfig configuration on first use, owns the client it builds and
  closes it in :meth:`KubeClient.aclose`.
* **Bounded requests.** kubernetes_asyncio waits forever by default. Every request here carries an
  aiohttp total timeout *and* runs under :func:`anyio.fail_after` with the same budget, so neither a
  hung socket nor a hung credential plugin can hold the elector past its renew deadline.
* **Cheap requests.** Calls use ``_preload_content=False``: we get aiohttp's response, read the body
  and parse the JSON ourselves, skipping the generated models (which would also re-serialize
  ``MicroTime`` fields with ``isoformat()``, a format kube-apiserver rejects).
* **Error translation.** HTTP statuses and transport failures become the exceptions of
  :mod:`aioleader._exceptions` here and nowhere else (see :func:`error_for`).

Only this package imports kubernetes_asyncio and aiohttp, and they are asyncio-only: the Kubernetes
locks run on anyio's asyncio backend.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import anyio
import anyio.lowlevel
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import (
    ConfigException,
    load_incluster_config,
    load_kube_config,
)

from .._exceptions import (
    AioleaderError,
    ElectionError,
    ForbiddenError,
    LockConflict,
    LockError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "KubeClient",
    "ObjectRef",
    "Reply",
    "Send",
    "check_identity",
    "check_name",
    "check_namespace",
    "check_string_map",
    "decode_object",
    "default_identity",
    "error_for",
    "read_reply",
]

#: The bound of a request made with ``timeout=None``. Never unbounded: a request without a deadline
#: is how a leader keeps "leading" through a partition.
DEFAULT_TIMEOUT: Final = 10.0

_DNS1123_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN: Final = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL)
# The name part of a qualified name (label and annotation keys) and a label value.
_QUALIFIED_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024

# How much of an unexpected body goes into an error message.
_EXCERPT: Final = 160


# -- configuration checks (ValueError at construction) ----------------------------------------------


def default_identity() -> str:
    """``$POD_NAME`` (the Downward API convention) if set and non-empty, else ``hostname_pid``.

    The pid keeps two candidates in one pod (or on one laptop) distinct, as client-go's examples do
    with a UUID; unlike a UUID it is stable for the life of the process and readable in the Lease.
    """
    pod_name = os.environ.get("POD_NAME", "")
    return pod_name or f"{socket.gethostname()}_{os.getpid()}"


def check_identity(identity: str | None) -> str:
    """The identity to use: ``identity`` itself, or :func:`default_identity` when it is ``None``."""
    if identity is None:
        return default_identity()
    if not isinstance(identity, str) or not identity:
        raise ValueError(f"identity must be a non-empty string, got {identity!r}")
    return identity


def check_name(name: str, argument: str = "name") -> str:
    """Object names are DNS-1123 subdomains (kube-apiserver answers anything else with 422)."""
    if not (isinstance(name, str) and len(name) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(name)):
        raise ValueError(
            f"{argument} must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit, at most 253 characters), got {name!r}"
        )
    return name


def check_namespace(namespace: str, argument: str = "namespace") -> str:
    """Namespaces are DNS-1123 labels."""
    if not (
        isinstance(namespace, str)
        and len(namespace) <= 63
        and _DNS1123_LABEL_RE.fullmatch(namespace)
    ):
        raise ValueError(
            f"{argument} must be a DNS-1123 label (lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit, at most 63 characters), got {namespace!r}"
        )
    return namespace


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return "its prefix must be a DNS-1123 subdomain"
    if not (len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name)):
        return (
            "its name must be at most 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        )
    return None


def check_string_map(
    value: Mapping[str, str] | None, argument: str, *, label_values: bool
) -> dict[str, str]:
    """Validate labels (``label_values=True``) or annotations as kube-apiserver would.

    Checked here because the lock only writes them on create: a 422 then would surface as a
    transient error on every acquisition attempt instead of at construction.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{argument} must be a mapping of strings to strings, got {value!r}")
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"{argument} must map strings to strings, got {key!r}: {item!r}")
        problem = _qualified_name_problem(key)
        if problem is not None:
            raise ValueError(f"{argument}: invalid key {key!r}: {problem}")
        if label_values and not (
            item == "" or (len(item) <= 63 and _QUALIFIED_NAME.fullmatch(item))
        ):
            raise ValueError(
                f"{argument}: invalid value {item!r} for {key!r}: a label value is empty or at "
                "most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        result[key] = item
    if not label_values:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in result.items())
        if size > _ANNOTATIONS_MAX_BYTES:
            raise ValueError(f"{argument} total {size} bytes, more than the 256 KiB allowed")
    return result


# -- what a request is about, and what came back ------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """The object a lock lives in, for URLs' sake and for messages that name it precisely."""

    group: str  # "" for the core API
    plural: str
    namespace: str
    name: str

    @property
    def resource(self) -> str:
        """``leases.coordination.k8s.io``, or ``configmaps`` for the core group (as RBAC names it)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def __str__(self) -> str:
        return f'{self.resource} "{self.name}" in namespace "{self.namespace}"'


@dataclass(frozen=True)
class Reply:
    """An HTTP response, fully read."""

    status: int
    reason: str
    content_type: str
    body: bytes
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> object:
        """The decoded body, or :data:`_NOT_JSON` (a sentinel, never raises)."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # JSONDecodeError and bad UTF-8 are ValueErrors
            return _NOT_JSON

    def status_object(self) -> dict[str, Any] | None:
        """The ``kind: Status`` object in the body, if the body is one (every apiserver error is)."""
        data = self.json()
        if isinstance(data, dict) and data.get("kind") == "Status":
            return data
        return None

    def excerpt(self) -> str:
        text = self.body[: _EXCERPT * 4].decode("utf-8", "replace")
        text = " ".join(text.split())
        return repr(text[:_EXCERPT] + ("…" if len(text) > _EXCERPT else ""))


_NOT_JSON: Final = object()


def _describe_failure(reply: Reply) -> str:
    """``503 ServiceUnavailable: <message>`` from a Status body, or a readable excerpt otherwise."""
    status = reply.status_object()
    if status is not None:
        reason = status.get("reason") or reply.reason
        message = status.get("message")
        text = f"{reply.status} {reason}"
        if isinstance(message, str) and message:
            text += f": {message}"
    else:
        kind = reply.content_type or "no content type"
        body = reply.excerpt() if reply.body else "an empty body"
        text = f"{reply.status} {reply.reason} (not a Kubernetes Status, {kind}: {body})"
    if reply.retry_after:
        text += f" (Retry-After: {reply.retry_after})"
    return text


def _server_message(reply: Reply) -> str:
    status = reply.status_object()
    message = status.get("message") if status is not None else None
    return message if isinstance(message, str) and message else _describe_failure(reply)


def error_for(verb: str, ref: ObjectRef, reply: Reply) -> AioleaderError:
    """Translate a non-2xx reply to ``verb`` on ``ref`` into the aioleader exception to raise.

    ======================================  ===========================================
    401 Unauthorized                        :class:`ElectionError` (credentials are bad)
    403 Forbidden                           :class:`ForbiddenError` (RBAC; fatal)
    404 without a Status body               :class:`ElectionError`: the path is not served
    404 on update                           :class:`LockConflict`: deleted under us
    404 otherwise (create: no namespace)    :class:`LockError`
    409 Conflict / AlreadyExists            :class:`LockConflict`
    400, 422 and anything else              :class:`LockError`
    ======================================  ===========================================

    400 and 422 are not fatal although retrying the same request cannot succeed: the elector's
    next step after a failed write is a fresh read, and the invalid part may be the object another
    writer left (we preserve its unknown fields) rather than our record. A leader that keeps failing
    loses its term at the renew deadline, the safe outcome; the message carries the server's causes.

    A 404 is judged by its body. kube-apiserver answers a missing *object* with a Status naming
    it, but a path it does not serve at all (the coordination API disabled, a kubeconfig pointing
    at something that is not an API server) with Go's plain ``404 page not found``; no retry fixes
    that. A 404 without a Status is classified as that fatal case.
    """
    what = f"cannot {verb} {ref}"
    if reply.status == 401:
        return ElectionError(
            f"{what}: {_describe_failure(reply)} (the credentials were rejected; check the "
            "kubeconfig or the service account token)"
        )
    if reply.status == 403:
        return ForbiddenError(verb, str(ref), _server_message(reply))
    if reply.status == 404:
        if reply.status_object() is None:
            return ElectionError(
                f"{what}: the API server does not serve {ref.resource}: {_describe_failure(reply)}"
            )
        if verb == "update":
            return LockConflict(f"{what}: it was deleted: {_describe_failure(reply)}")
    if reply.status == 409:
        return LockConflict(f"{what}: {_describe_failure(reply)}")
    return LockError(f"{what}: {_describe_failure(reply)}", retry_after=_seconds(reply.retry_after))


def _seconds(retry_after: str | None) -> float | None:
    """``Retry-After`` as seconds, when it is the delta-seconds form (the API server's)."""
    if retry_after is None:
        return None
    try:
        seconds = float(retry_after.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


def decode_object(verb: str, ref: ObjectRef, reply: Reply, kind: str) -> tuple[dict[str, Any], str]:
    """The object in a 2xx reply and its ``metadata.resourceVersion``.

    Anything else (a proxy's HTML page with status 200, a truncated body, an object of another
    kind or without a resourceVersion) is a :class:`LockError` with a readable message: the lock
    cannot compare-and-swap without a version, and a malformed reply must never crash the elector.
    """
    data = reply.json()
    what = f"cannot {verb} {ref}: the reply ({reply.status} {reply.reason})"
    if data is _NOT_JSON:
        content_type = reply.content_type or "no content type"
        raise LockError(f"{what} is not JSON ({content_type}: {reply.excerpt()})")
    if not isinstance(data, dict):
        raise LockError(f"{what} is not a JSON object: {reply.excerpt()}")
    found = data.get("kind")
    if found is not None and found != kind:
        raise LockError(f"{what} is a {found!r}, not a {kind}: {reply.excerpt()}")
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        raise LockError(f"{what} has no metadata: {reply.excerpt()}")
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not version:
        raise LockError(f"{what} has no metadata.resourceVersion: {reply.excerpt()}")
    name = metadata.get("name")
    if name is not None and name != ref.name:
        raise LockError(f"{what} is about {name!r}")
    return data, version


# -- the client ----------------------------------------------------------------------------------

#: What a lock passes to :meth:`KubeClient.request`: start one API call on the given client with
#: ``_preload_content=False`` and the given ``_request_timeout``, returning aiohttp's response.
Send = Callable[[Any, aiohttp.ClientTimeout], Awaitable[aiohttp.ClientResponse]]


class KubeClient:
    """A borrowed or lazily built-and-owned ``ApiClient``, and bounded, translated requests on it."""

    def __init__(self, api_client: ApiClient | None) -> None:
        self._api_client: Any = api_client
        self._owned = api_client is None
        self._loading = anyio.Lock()
        self._closed = False

    @property
    def owned(self) -> bool:
        """Whether the client is built (and closed) by us rather than passed in."""
        return self._owned

    async def _client(self, ref: ObjectRef) -> Any:
        if self._closed:
            raise ElectionError(f"cannot use the lock on {ref}: it was closed")
        if self._api_client is not None:
            return self._api_client
        async with self._loading:
            if self._api_client is None:
                self._api_client = await _load_api_client()
            return self._api_client

    async def request(
        self,
        verb: str,
        ref: ObjectRef,
        send: Send,
        *,
        timeout: float | None,
    ) -> Reply:
        """Run one API call bounded by ``timeout`` seconds (:data:`DEFAULT_TIMEOUT` if ``None``).

        Returns the reply whatever its status; raises :class:`LockError` if there is none (timeout,
        connection refused or reset, TLS failure, …) and :class:`ElectionError` if no client can
        be configured.
        """
        seconds = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        if not seconds > 0:  # also NaN
            await anyio.lowlevel.checkpoint()
            raise LockError(f"cannot {verb} {ref}: no time left for the request ({seconds!r} s)")
        # aiohttp computes ceil(now + total) and cannot take an infinite total.
        client_timeout = aiohttp.ClientTimeout(total=seconds if math.isfinite(seconds) else None)
        try:
            # aiohttp's own timeout ends the request cleanly; fail_after is the backstop that also
            # covers loading the configuration and refreshing credentials (exec plugins can hang).
            with anyio.fail_after(seconds):
                api_client = await self._client(ref)
                response = await send(api_client, client_timeout)
                try:
                    body = await response.read()
                finally:
                    # A half-read response (cancelled) closes its connection instead of reusing it.
                    response.release()
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise LockError(f"cannot {verb} {ref}: no response within {seconds:g} s") from exc
        except (aiohttp.ClientError, OSError, ApiException, ConfigException) as exc:
            # ConfigException here comes from refreshing credentials (an empty token file during
            # rotation, a failing exec plugin): worth retrying, unlike failing to load any config.
            raise LockError(f"cannot {verb} {ref}: {type(exc).__name__}: {exc}") from exc
        return Reply(
            status=response.status,
            reason=response.reason or "",
            content_type=response.headers.get("Content-Type", ""),
            body=body,
            retry_after=response.headers.get("Retry-After"),
        )

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
        (a silent stream fails with a timeout). :func:`anyio.fail_after` with their sum is the
        backstop for the opening, as in :meth:`request` (credential plugins can hang).

        Raises :class:`LockError` if no response arrives (its ``__cause__`` is a
        :class:`TimeoutError` when the server stayed silent) and :class:`ElectionError` if no
        client can be configured.
        """
        client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=sock_connect, sock_read=sock_read
        )
        bound = sock_connect + sock_read
        try:
            with anyio.fail_after(bound):
                api_client = await self._client(ref)
                return await send(api_client, client_timeout)
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise LockError(f"cannot {verb} {ref}: no response within {bound:g} s") from exc
        except (aiohttp.ClientError, OSError, ApiException, ConfigException) as exc:
            raise LockError(f"cannot {verb} {ref}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the client if we built it; a borrowed client stays open. Idempotent."""
        self._closed = True
        client, self._api_client = self._api_client, None
        if client is not None and self._owned:
            # Shielded and bounded: a cancelled aclose must still close the session (or it leaks
            # with an "Unclosed client session" warning), but it must not hang either.
            with anyio.move_on_after(5, shield=True):
                await client.close()


async def read_reply(
    verb: str, ref: ObjectRef, response: aiohttp.ClientResponse, *, timeout: float
) -> Reply:
    """Read the rest of a response opened by :meth:`KubeClient.open_stream` (an error reply)
    within ``timeout`` seconds. The caller still closes the response. Raises :class:`LockError`
    if the body cannot be read."""
    try:
        with anyio.fail_after(timeout):
            body = await response.read()
    except TimeoutError as exc:
        raise LockError(
            f"cannot {verb} {ref}: the reply was not read within {timeout:g} s"
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise LockError(f"cannot {verb} {ref}: {type(exc).__name__}: {exc}") from exc
    return Reply(
        status=response.status,
        reason=response.reason or "",
        content_type=response.headers.get("Content-Type", ""),
        body=body,
        retry_after=response.headers.get("Retry-After"),
    )


def _config_source() -> tuple[str | None, str]:
    """``(kubeconfig path or None for in-cluster, description)``, from the environment now:
    kubernetes_asyncio's own default path reads ``$KUBECONFIG`` once, at import time."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None, "the in-cluster service account (KUBERNETES_SERVICE_HOST is set)"
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return path, f"the kubeconfig {path!r}"


def _missing_kubeconfig(path: str) -> bool:
    """Whether none of the files of a ``KUBECONFIG``-style path list exists."""
    return not any(os.path.exists(os.path.expanduser(p)) for p in path.split(os.pathsep) if p)


async def _load_api_client() -> Any:
    """An ``ApiClient`` for the in-cluster service account if ``KUBERNETES_SERVICE_HOST`` is set,
    else for ``$KUBECONFIG`` (or ``~/.kube/config``). A fresh ``Configuration``: the process-wide
    default that kubernetes_asyncio's loaders would otherwise set is left alone."""
    configuration = Configuration()
    config_file, source = _config_source()
    if config_file is not None and _missing_kubeconfig(config_file):
        await anyio.lowlevel.checkpoint()
        raise ElectionError(
            f"cannot configure a Kubernetes client: there is no kubeconfig at {config_file!r} "
            "(set KUBECONFIG, run in a pod, or pass api_client=)"
        )
    try:
        if config_file is None:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            # persist_config=False: never rewrite the user's kubeconfig behind their back.
            await load_kube_config(
                config_file=config_file,
                client_configuration=configuration,
                persist_config=False,
            )
    except Exception as exc:  # ConfigException, OSError, YAML errors, a failing exec plugin, ...
        raise ElectionError(
            f"cannot configure a Kubernetes client from {source}: {type(exc).__name__}: {exc} "
            "(pass api_client= to use a client configured elsewhere)"
        ) from exc
    return ApiClient(configuration=configuration)
