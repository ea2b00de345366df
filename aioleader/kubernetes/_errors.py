"""Failures translated into aioleader's exceptions, here and nowhere else.

Two boundaries, as httpcore's ``map_exceptions``:

* **No reply** ([`transport_errors()`][transport_errors]): a timeout, a refused or reset connection, a TLS
  failure, kubernetes_asyncio's ``ApiException`` (status 0 included), a failing credential
  refresh. All are [`LockError`][aioleader.LockError] (transient), raised ``from`` the original.
* **A reply that says no** ([`error_for()`][error_for]): the status-to-exception table.

A reply whose body is not the JSON expected is decided in `._reply`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException

from .._exceptions import (
    AioleaderError,
    ElectionError,
    ForbiddenError,
    LockConflict,
    LockError,
)
from ._reply import ObjectRef, Reply

__all__ = ["error_for", "transport_errors"]


@contextmanager
def transport_errors(
    verb: str, ref: ObjectRef, seconds: float, *, waiting_for: str = "no response"
) -> Iterator[None]:
    """Translate what can go wrong before a reply is in hand into [`LockError`][LockError].

    A `TimeoutError` (anyio's ``fail_after``, aiohttp's timeouts) reads
    ``cannot <verb> <ref>: <waiting_for> within <seconds> s``; everything else names the
    exception. ``ConfigException`` here comes from refreshing credentials (an empty token file
    during rotation, a failing exec plugin): worth retrying, unlike failing to load any
    configuration (`._config`, fatal).
    """
    try:
        yield
    except TimeoutError as exc:  # before OSError: TimeoutError is one
        raise LockError(f"cannot {verb} {ref}: {waiting_for} within {seconds:g} s") from exc
    except (aiohttp.ClientError, OSError, ApiException, ConfigException) as exc:
        raise LockError(f"cannot {verb} {ref}: {type(exc).__name__}: {exc}") from exc


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
    401 Unauthorized                        [`ElectionError`][ElectionError] (credentials are bad)
    403 Forbidden                           [`ForbiddenError`][ForbiddenError] (RBAC; fatal)
    404 without a Status body               [`ElectionError`][ElectionError]: the path is not served
    404 on update                           [`LockConflict`][LockConflict]: deleted under us
    404 otherwise (create: no namespace)    [`LockError`][LockError]
    409 Conflict / AlreadyExists            [`LockConflict`][LockConflict]
    400, 422 and anything else              [`LockError`][LockError]
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
