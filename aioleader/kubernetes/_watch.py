"""Watching one namespaced object by name: the machinery behind the Kubernetes locks' ``watch()``.

The protocol is client-go's reflector, narrowed to one object:

1. **List** the collection with ``fieldSelector=metadata.name=<name>``: the object (or its absence)
   and the list's ``resourceVersion``. Report the state if it differs from the last one reported.
2. **Watch** from that ``resourceVersion`` (``allowWatchBookmarks``, ``timeoutSeconds``), reporting
   each change of the record; every event and BOOKMARK moves the resume point.
3. When the stream ends, **resume** from the last ``resourceVersion`` seen: at once after a healthy
   stream ended cleanly (``timeoutSeconds``), after an exponential, jittered backoff otherwise
   (early EOF, a reset, a refused connect, a garbage line, 5xx, 429 and its ``Retry-After``).
4. **Re-list** (back to 1) when the server says the resume point is gone (410 Expired, as an
   ``ERROR`` event or an HTTP status), on any other ``ERROR`` event, and when the stream went
   silent for longer than ``sock_read`` (a stalled watch may have been holding events back).
5. **Safety re-read** every ``relist_interval`` seconds, even while the stream looks alive: a list
   that disagrees with what the watch delivered is reported and the watch restarted from it; one
   that agrees leaves the stream alone.

What is reported is level, not edge: the current state first, then each state whose record bytes
(``Observed.raw``) or existence differ from the last one reported. BOOKMARKs, changes outside the
record (labels, other annotations, owner references) and the same state seen again after a re-list
report nothing. After a re-list, intermediate states the server no longer has are skipped; the latest is
never missed.

Why raw streaming rather than ``kubernetes_asyncio.watch.Watch``: ``Watch`` builds an ``ApiClient``
of its own per instance (a second aiohttp session, outside the lock's client ownership), turns
objects into models (whose ``MicroTime`` round trip is lossy), returns a garbage line as a string
rather than failing, retries a 410 once by resuming from the same stale version instead of
re-listing, and gives no handle on the response to close on cancellation. Reading the response
ourselves keeps every decision here: the exact resume point, lines bounded in size (4 MiB, above
etcd's 1.5 MiB object limit), a ``sock_read`` timeout for silent streams, reads that can be
interrupted for the safety re-read without losing a partial line, and a response that is closed
(synchronously) however the watch ends.

The watch is a [`WatchCursor`][aioleader.WatchCursor] ([`ObjectWatch`][ObjectWatch]), not a generator: every
step keeps its progress in the object (the open stream and its partial line, the resume point,
the instant a backoff ends), so a [`next()`][ObjectWatch.next] cancelled part-way loses nothing and
the next call continues. That is what lets a [`MultiLock`][aioleader.locks.MultiLock] wait on two
watches at once, and what a watch shared by many elections will need. A request cancelled
part-way (a list, the opening of a stream) is sent again by the next call.

Errors: 403 ([`ForbiddenError`][aioleader.ForbiddenError]) and the other fatal replies of
`error_for()` are raised by [`next()`][ObjectWatch.next];
everything transient is retried forever inside it, so the caller stops a watch by cancelling
the call and closing the cursor (``Lock.watch()`` is the cursor as a generator that does both).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import anyio

from .._exceptions import ElectionError, LockError
from .._lock import Observed, WatchCursor, same_state
from ._client import DEFAULT_TIMEOUT, KubeClient, Send, read_reply
from ._errors import error_for
from ._reply import ObjectRef, decode_json

__all__ = [
    "UNSET",
    "Lister",
    "ObjectDecoder",
    "ObjectWatch",
    "Reflector",
    "Unset",
    "WatchOptions",
    "changed_from",
]

logger = logging.getLogger("aioleader.watch")

#: Start a list or watch call of the object's collection: ``(api_client, query, client_timeout)``
#: where ``query`` holds kubernetes_asyncio keyword arguments (``field_selector``, ``watch``,
#: ``resource_version``, ``allow_watch_bookmarks``, ``timeout_seconds``). The lock adds the
#: namespace, ``_preload_content=False`` and ``_request_timeout=client_timeout``.
Lister = Callable[
    [Any, Mapping[str, Any], aiohttp.ClientTimeout], Awaitable[aiohttp.ClientResponse]
]

#: The lock's reading of one object (the JSON dict, as the server sent it) at a resourceVersion.
#: May raise [`LockError`][LockError] for an object it cannot read (retried like any transient error).
ObjectDecoder = Callable[[dict[str, Any], str], Observed]

# Longer lines are not watch events of a lock object (etcd refuses objects above 1.5 MiB).
_MAX_LINE: Final = 4 << 20
# aiohttp's sock_read timeout (before Python 3.11 not a builtin TimeoutError) and anyio's.
_TIMEOUTS: Final = (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)
# How long reading an error reply's body may take.
_ERROR_BODY_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class WatchOptions:
    """How a watch talks to the API server. Validated at construction (`ValueError`).

    * ``relist_interval``: seconds between safety re-reads while a stream looks alive.
    * ``timeout_seconds``: the ``timeoutSeconds`` asked of the server; it ends the stream cleanly
      then, and the watch resumes from its last resourceVersion without a list.
    * ``sock_connect``: bound of a TCP connect.
    * ``sock_read``: the longest silence tolerated on a stream (and the wait for its headers).
      Keep it above the server's bookmark interval (kube-apiserver: about a minute) or healthy
      quiet streams are cut, which costs a re-list each time.
    * ``backoff_initial``, ``backoff_max``: the reconnect delay doubles from the first to the
      second after each failure in a row; each delay is drawn from [d/2, d].
    * ``request_timeout``: the bound of each list request.
    """

    relist_interval: float = 300.0
    timeout_seconds: int = 290
    sock_connect: float = 10.0
    sock_read: float = 90.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    request_timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        for name in (
            "relist_interval",
            "sock_connect",
            "sock_read",
            "backoff_initial",
            "backoff_max",
            "request_timeout",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0 < value < math.inf)
            ):
                raise ValueError(
                    f"{name} must be a positive finite number of seconds, got {value!r}"
                )
        if (
            isinstance(self.timeout_seconds, bool)
            or not isinstance(self.timeout_seconds, int)
            or self.timeout_seconds < 1
        ):
            raise ValueError(
                f"timeout_seconds must be a positive integer, got {self.timeout_seconds!r}"
            )
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max!r}) must not be less than backoff_initial "
                f"({self.backoff_initial!r})"
            )


class Unset:
    """Nothing reported yet (distinct from ``None``, "the object does not exist")."""


UNSET: Final = Unset()


class _Garbage(Exception):
    """A line that is not a watch event: the stream cannot be trusted past it."""


class _Relist(Exception):
    """The resume point is gone (or the server reported an error): list again."""


def _metadata(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(name, resourceVersion)`` of an object, ``None`` where missing or not a string."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None, None
    name, version = meta.get("name"), meta.get("resourceVersion")
    return (
        name if isinstance(name, str) else None,
        version if isinstance(version, str) and version else None,
    )


def changed_from(last: Observed | Unset | None, state: Observed | None) -> bool:
    """Whether ``state`` is worth reporting after ``last`` (always, if nothing was reported)."""
    return isinstance(last, Unset) or not same_state(last, state)


class _Stream:
    """An open watch response and what was read of it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.lines = _Lines(response)
        self.healthy = False  # has it delivered anything valid?


class Reflector:
    """The list+watch protocol of the module docstring over one namespaced collection, keeping
    the states it saw by object name ([`objects`][objects]). Cancel-safe, like the cursors on top.

    ``ref`` names the collection (its ``name`` is used in messages only). ``name`` narrows the
    reflector to one object (``fieldSelector=metadata.name=<name>``, what RBAC can restrict by
    ``resourceNames``); ``None`` lists and watches the whole namespace, which is what one shared
    watch for many locks (`aioleader.kubernetes._informer`) needs.

    [`step()`][step] does the work until something changed: it returns the names whose state
    changed (empty after a list that changed nothing). The cursors compare what they last
    returned with [`objects`][objects]; the reflector never reports, it only keeps the states.
    """

    def __init__(
        self,
        client: KubeClient,
        ref: ObjectRef,
        lister: Lister,
        decode: ObjectDecoder,
        options: WatchOptions | None = None,
        *,
        name: str | None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.name = name
        self.lister = lister
        self.decode = decode
        self.options = options or WatchOptions()
        self.rng = rng or random.Random()
        self.failures = 0  # unproductive attempts in a row; 0 = the next request goes at once
        self.retry_after = 0.0  # a server's Retry-After for the next attempt
        self.resume_at: float | None = None  # the end of the backoff under way
        self.version: str | None = None  # where the next watch resumes
        self.objects: dict[str, Observed] = {}  # the states seen, by name
        self.listed = False  # has a list succeeded (are [`objects`][objects] complete)?
        self.need_list = True
        self.next_read = math.inf  # when the next safety re-read is due
        self.stream: _Stream | None = None

    def state(self, name: str) -> Observed | None:
        """The state of ``name`` as last seen (``None``: it does not exist)."""
        return self.objects.get(name)

    # -- the work --------------------------------------------------------------------------------

    async def step(self) -> list[str]:
        """Work until the states changed or a list completed; the names that changed.

        Raises the fatal errors ([`ElectionError`][aioleader.ElectionError]: 403 and the like); retries
        everything else."""
        while True:
            if self.need_list:
                changed = await self.relist()
                self.need_list = False
                self.listed = True
                self.next_read = anyio.current_time() + self.options.relist_interval
                return changed
            if self.stream is None:
                await self.pause()
                try:
                    response = await self.open()
                except _Relist as exc:
                    self.failed("%s; listing again", exc)
                    self.need_list = True
                    continue
                except ElectionError:
                    raise
                except LockError as exc:
                    self.note_retry_after(exc)
                    self.failed("cannot watch, retrying: %s", exc)
                    continue
                self.stream = _Stream(response)
            read = await self.read()
            if read:
                return read

    def close(self) -> None:
        """Close the stream if one is open (synchronously). The states are kept."""
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.response.close()

    # -- pacing --------------------------------------------------------------------------------

    def failed(self, message: str, *args: object, level: int = logging.INFO) -> None:
        self.failures += 1
        logger.log(level, "watch %s: " + message, self.described(), *args)

    def described(self) -> str:
        if self.name is not None:
            return str(self.ref)
        return f'{self.ref.resource} in namespace "{self.ref.namespace}"'

    async def pause(self) -> None:
        """Wait before the next request if the last attempts failed (until the same instant
        however often the wait is cancelled and resumed)."""
        if self.failures and self.resume_at is None:
            o = self.options
            ceiling = min(o.backoff_max, o.backoff_initial * 2.0 ** min(self.failures - 1, 60))
            delay = max(self.rng.uniform(ceiling / 2, ceiling), self.retry_after)
            self.retry_after = 0.0
            self.resume_at = anyio.current_time() + delay
        if self.resume_at is not None:
            await anyio.sleep_until(self.resume_at)
            self.resume_at = None

    def note_retry_after(self, exc: LockError) -> None:
        if exc.retry_after:
            self.retry_after = max(self.retry_after, exc.retry_after)

    # -- state -----------------------------------------------------------------------------------

    def replace(self, listed: dict[str, Observed]) -> list[str]:
        """Take a list's states; the names whose state differs from what was kept."""
        old = self.objects
        changed = [n for n, state in listed.items() if not same_state(old.get(n), state)]
        changed += [n for n in old if n not in listed]
        self.objects = listed
        return changed

    def apply(self, name: str, state: Observed | None) -> bool:
        """Take one event's state of ``name``; whether it differs from what was kept."""
        if state is None:
            return self.objects.pop(name, None) is not None
        differs = not same_state(self.objects.get(name), state)
        self.objects[name] = state
        return differs

    # -- list ------------------------------------------------------------------------------------

    def _send(self, query: Mapping[str, Any]) -> Send:
        return lambda api, timeout: self.lister(api, query, timeout)

    def _selector(self) -> dict[str, Any]:
        return {} if self.name is None else {"field_selector": f"metadata.name={self.name}"}

    async def list_once(self) -> tuple[dict[str, Observed], str]:
        """One list: the objects by name and the list's resourceVersion. Raises on failure."""
        reply = await self.client.request(
            "list", self.ref, self._send(self._selector()), timeout=self.options.request_timeout
        )
        if not reply.ok:
            raise error_for("list", self.ref, reply)
        data = decode_json("list", self.ref, reply)
        what = f"cannot list {self.ref}: the reply ({reply.status} {reply.reason})"
        if not isinstance(data.get("items"), list):
            raise LockError(f"{what} is not a list: {reply.excerpt()}")
        _, version = _metadata(data)
        if version is None:
            raise LockError(f"{what} has no metadata.resourceVersion: {reply.excerpt()}")
        found: dict[str, Observed] = {}
        for item in data["items"]:
            if not isinstance(item, dict):
                raise LockError(f"{what} holds an item that is not an object: {reply.excerpt()}")
            name, item_version = _metadata(item)
            if name is None or (self.name is not None and name != self.name):
                continue  # a server ignoring the field selector lists the whole namespace
            if item_version is None:
                raise LockError(f"{what}: the item has no metadata.resourceVersion")
            found[name] = self.decode(item, item_version)
        return found, version

    async def relist(self) -> list[str]:
        """List until it succeeds (transient failures back off); fatal errors raise."""
        self.close()
        while True:
            await self.pause()
            try:
                listed, version = await self.list_once()
            except ElectionError:
                raise
            except LockError as exc:
                self.note_retry_after(exc)
                self.failed("list failed, retrying: %s", exc)
                continue
            self.version = version
            self.failures = 0
            return self.replace(listed)

    # -- watch -----------------------------------------------------------------------------------

    async def open(self) -> aiohttp.ClientResponse:
        """Open a watch from [`version`][version]; raises `_Relist`, [`LockError`][LockError] or a
        fatal [`ElectionError`][ElectionError]. The caller closes the response it gets."""
        o = self.options
        query = {
            **self._selector(),
            "watch": True,
            "resource_version": self.version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": o.timeout_seconds,
        }
        try:
            response = await self.client.open_stream(
                "watch",
                self.ref,
                self._send(query),
                sock_connect=o.sock_connect,
                sock_read=o.sock_read,
            )
        except LockError as exc:
            if isinstance(exc.__cause__, _TIMEOUTS):
                raise _Relist(f"no reply to the watch request: {exc}") from exc
            raise
        if 200 <= response.status < 300:
            return response
        try:
            reply = await read_reply("watch", self.ref, response, timeout=_ERROR_BODY_TIMEOUT)
        finally:
            response.close()
        if reply.status == 410:
            raise _Relist(f"{reply.status} {reply.reason}: {reply.excerpt()}")
        raise error_for("watch", self.ref, reply)

    async def read(self) -> list[str] | None:
        """Read the open stream until a change (the names that changed) or its end (``None``,
        the stream closed and [`need_list`][need_list] set if the resume point cannot be trusted)."""
        stream = self.stream
        assert stream is not None
        o = self.options
        try:
            while True:
                line = stream.lines.next_nowait()
                if line is None:
                    if stream.lines.eof:
                        if not stream.healthy:
                            self.failed("the watch ended before sending anything")
                        break
                    now = anyio.current_time()
                    if now < self.next_read:
                        with anyio.move_on_after(self.next_read - now):
                            await stream.lines.fill()
                        continue
                    # The safety re-read, the stream left open: a failure is no reason to drop
                    # a stream that looks alive; try again a little later.
                    try:
                        listed, version = await self.list_once()
                    except ElectionError:
                        raise
                    except LockError as exc:
                        logger.info("watch %s: safety re-read failed: %s", self.described(), exc)
                        self.next_read = anyio.current_time() + min(
                            o.relist_interval, o.backoff_max
                        )
                        continue
                    self.next_read = anyio.current_time() + o.relist_interval
                    changed = self.replace(listed)
                    if changed:
                        # Either the stream stalled or the event is still in flight; a restart
                        # is right in both cases (and cheap).
                        logger.info(
                            "watch %s: the safety re-read found a change the watch had not "
                            "delivered; restarting the watch",
                            self.described(),
                        )
                        self.version = version
                        self.close()
                        return changed
                    continue
                if not line.strip():
                    continue
                changed_name = self.event(line)
                stream.healthy = True
                self.failures = 0
                if changed_name is not None:
                    return [changed_name]
        except _Relist as exc:
            self.failed("%s; listing again", exc)
            self.need_list = True
        except _Garbage as exc:
            self.failed("the stream sent %s; reconnecting", exc, level=logging.WARNING)
        except ElectionError:
            self.close()
            raise
        except LockError as exc:  # an undecodable object
            self.failed("%s; listing again", exc, level=logging.WARNING)
            self.need_list = True
        except _TIMEOUTS:  # aiohttp's sock_read: the stream went silent
            self.failed("no data for %g s; listing again", o.sock_read)
            self.need_list = True
        except (aiohttp.ClientError, OSError) as exc:
            self.failed("the stream broke (%s: %s); resuming", type(exc).__name__, exc)
        self.close()
        return None

    def event(self, line: bytes) -> str | None:
        """Apply one event line: the name whose state it changed, if any."""
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            raise _Garbage("a line that is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise _Garbage("a line that is not a watch event")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            code, message = obj.get("code"), obj.get("message")
            raise _Relist(f"ERROR event {code} {obj.get('reason')}: {message}")
        name, version = _metadata(obj)
        if version is None:
            raise _Garbage(f"a {kind} event without metadata.resourceVersion")
        if kind == "BOOKMARK":
            self.version = version
            return None
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise _Garbage(f"an event of unknown type {kind!r}")
        self.version = version
        if name is None or (self.name is not None and name != self.name):
            return None  # not ours (a server ignoring the field selector)
        state = None if kind == "DELETED" else self.decode(obj, version)
        return name if self.apply(name, state) else None


class ObjectWatch(WatchCursor):
    """One object's states, by list and watch by name (see the module docstring). Cancel-safe."""

    def __init__(
        self,
        client: KubeClient,
        ref: ObjectRef,
        lister: Lister,
        decode: ObjectDecoder,
        options: WatchOptions | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.ref = ref
        self.reflector = Reflector(client, ref, lister, decode, options, name=ref.name, rng=rng)
        self.last: Observed | Unset | None = UNSET  # what was returned last

    @property
    def options(self) -> WatchOptions:
        return self.reflector.options

    async def next(self) -> Observed | None:
        reflector = self.reflector
        while True:
            if reflector.listed and not reflector.need_list:
                state = reflector.state(self.ref.name)
                if changed_from(self.last, state):
                    self.last = state
                    return state
            await reflector.step()

    def close(self) -> None:
        self.reflector.close()


class _Lines:
    """Lines of a streamed response, read through our own buffer so that a read can be
    interrupted (for the safety re-read) without losing a partial line."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._content = response.content
        self._buffer = bytearray()
        self._eof = False

    def next_nowait(self) -> bytes | None:
        """A complete buffered line, or the unterminated tail at EOF; ``None`` if none yet."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > _MAX_LINE:
                raise _Garbage(f"a line longer than {_MAX_LINE} bytes")
            if self._eof and self._buffer:
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    @property
    def eof(self) -> bool:
        return self._eof and not self._buffer

    async def fill(self) -> None:
        """Wait for more data (or EOF). Safe to cancel: nothing read is lost."""
        chunk = await self._content.readany()
        if chunk:
            self._buffer += chunk
        else:
            self._eof = True
