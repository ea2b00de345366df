"""HTTP in front of the registry: requests, injected faults, responses and watch streams.

One handler serves every endpoint; the endpoint tells it whose faults apply. A request goes
through the fault pipeline in the order a network and a loaded server would impose:
``latency`` → ``hang``/blackhole → one-shot ``drop``/``fail`` → ``error_rate`` → handling →
``apply_then_drop`` → ``reply_latency`` → blackhole (the reply is held until healed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ._auth import UNAUTHORIZED, ServerAuth
from ._connection_faults import Faults
from ._decode import DecodeError, go_json_loads
from ._endpoint import ClientEndpoint, Dropped
from ._registry import Registry
from ._request_log import RequestLog, RequestRecord
from ._resources import ResourceType
from ._routes import Operation, resolve
from ._selectors import Predicate, parse_bool, parse_int, selector_predicate
from ._server_clock import ServerClock
from ._status import ApiError
from ._store import Store, Watcher

__all__ = ["ApiServer"]

GARBAGE_LINE = b"<html><body>502 Bad Gateway: not a watch event</body></html>\n"


# Go's json.Encoder: compact, newline-terminated. One encoder for every reply (json.dumps with an
# option builds a new one per call).
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))

# Audit-Id: a UUID per reply, as kube-apiserver sends; a random prefix and a counter (uuid4 reads
# the system's random source for every one).
_AUDIT_PREFIX: Final = str(uuid.uuid4())[:24]
_audit_ids = itertools.count()


def _encode(document: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(document).encode() + b"\n"


def _audit_id() -> str:
    return f"{_AUDIT_PREFIX}{next(_audit_ids) % 16**12:012x}"


def _json_response(
    status: int, document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=_encode(document),
        headers={
            "Content-Type": "application/json",
            "Cache-Control": "no-cache, private",
            "Audit-Id": _audit_id(),
            **(headers or {}),
        },
    )


@dataclass
class _Outcome:
    """How a request ended, recorded once: when the reply starts, or when the handler exits."""

    record: Callable[[_Outcome], None]
    status: int = 0
    fault: str | None = None
    committed: bool = False

    def commit(self, status: int) -> None:
        if not self.committed:
            self.committed = True
            self.status = status
            self.record(self)


class ApiServer:
    """Serves the Kubernetes API over HTTP for every endpoint of one emulator."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: ServerClock,
        log: RequestLog,
        bookmark_interval: float,
        served: Collection[ResourceType],
        auth: ServerAuth | None = None,
    ) -> None:
        self.served = frozenset(served)
        self.auth = auth
        self.store = store
        self.registry = registry
        self.clock = clock
        self.log = log
        self.bookmark_interval = bookmark_interval

    async def handle(self, ep: ClientEndpoint, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        wall = self.clock.now()
        op = resolve(request.method, request.path, request.query, request.host, self.served)

        def record(outcome: _Outcome) -> None:
            self.log.append(
                RequestRecord(
                    client=ep.name,
                    verb=op.verb,
                    group=op.rt.group if op.rt else "",
                    resource=op.rt.plural if op.rt else "",
                    namespace=op.namespace or "",
                    name=op.name,
                    status=outcome.status,
                    started=started,
                    duration=loop.time() - started,
                    wall=wall,
                    fault=outcome.fault,
                )
            )

        outcome = _Outcome(record)
        ep.in_flight += 1
        try:
            response = await self._serve(ep, request, op, outcome)
            outcome.commit(response.status)
            return response
        except Dropped:
            ep.abort(request)
            # The connection is gone; aiohttp discards what we return.
            return web.Response(status=499)
        finally:
            ep.in_flight -= 1
            outcome.commit(0)

    async def _serve(
        self, ep: ClientEndpoint, request: web.BaseRequest, op: Operation, outcome: _Outcome
    ) -> web.StreamResponse:
        faults = ep.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        await ep.wait_while(lambda: faults._holds_requests)
        if self.auth is not None and not self.auth.admits(request):
            # Authentication comes first in kube-apiserver's chain: no fault, no handling.
            return _json_response(401, UNAUTHORIZED)
        response = self._injected(faults, op.verb, outcome)
        if response is None:
            if op.verb == "watch" and op.error is None:
                return await self._watch(ep, request, op, outcome)
            response = await self._respond(request, op)
            if op.verb != "watch" and faults._take(("apply_then_drop",), op.verb):
                outcome.fault = "apply_then_drop"
                raise Dropped
        if faults.reply_latency > 0:
            await asyncio.sleep(faults.reply_latency)
        await ep.wait_while(lambda: faults.partitioned == "blackhole")
        return response

    @staticmethod
    def _injected(faults: Faults, verb: str, outcome: _Outcome) -> web.Response | None:
        """The answer of a one-shot or random failure, if one applies; raises for a drop."""
        planned = faults._take(("fail", "drop"), verb)
        if planned is not None and planned.action == "drop":
            outcome.fault = "drop"
            raise Dropped
        if planned is not None:
            outcome.fault = "fail"
            status, retry_after, body = planned.status, planned.retry_after, planned.body
        elif (rolled := faults._roll_error(verb)) is not None:
            outcome.fault = "error_rate"
            status, retry_after, body = rolled, None, None
        else:
            return None
        error = ApiError.injected(status, retry_after)
        if body is None:
            return _json_response(status, error.status(), error.headers)
        content_type = planned.content_type if planned is not None else None
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": content_type or "text/plain", **error.headers},
        )

    async def _respond(self, request: web.BaseRequest, op: Operation) -> web.Response:
        """Handle a non-watch request; failures become Status responses."""
        try:
            if op.error is not None:
                raise op.error
            if op.document is not None:
                if isinstance(op.document, str):
                    return web.Response(text=op.document, content_type="text/plain")
                return _json_response(200, op.document)
            assert op.rt is not None
            body = await request.read()
            status, document = self._dispatch(request, op, op.rt, body)
            return _json_response(status, document)
        except ApiError as error:
            return _json_response(error.code, error.status(), error.headers)

    def _predicate(self, query: Mapping[str, str], op: Operation) -> Predicate:
        field_selector = query.get("fieldSelector")
        if op.name:
            # /watch/namespaces/{ns}/{plural}/{name}: a name is a field selector entry.
            name_term = f"metadata.name={op.name}"
            field_selector = f"{field_selector},{name_term}" if field_selector else name_term
        return selector_predicate(field_selector, query.get("labelSelector"), op.namespace)

    def _dispatch(
        self, request: web.BaseRequest, op: Operation, rt: ResourceType, body: bytes
    ) -> tuple[int, Mapping[str, Any]]:
        registry, query = self.registry, request.query
        namespace = op.namespace or ""
        content_type = request.headers.get("Content-Type", "application/json")
        if op.verb == "get":
            return 200, rt.with_kind(registry.get(rt, namespace, op.name))
        if op.verb == "list":
            limit = parse_int("limit", query.get("limit"))
            return 200, registry.list(rt, self._predicate(query, op), limit, query.get("continue"))
        if op.verb == "create":
            created = registry.create(rt, namespace, registry.decode(rt, body, content_type))
            return 201, rt.with_kind(created)
        if op.verb == "update":
            stored, created_by_put = registry.update(
                rt, namespace, op.name, registry.decode(rt, body, content_type)
            )
            return (201 if created_by_put else 200), rt.with_kind(stored)
        if op.verb == "patch":
            return 200, rt.with_kind(registry.patch(rt, namespace, op.name, body, content_type))
        if op.verb == "delete":
            return 200, registry.delete(rt, namespace, op.name, self._delete_options(body))
        if op.verb == "deletecollection":
            return 200, registry.delete_collection(rt, self._predicate(query, op))
        raise ApiError.method_not_allowed()

    @staticmethod
    def _delete_options(body: bytes) -> Mapping[str, Any]:
        if not body.strip():
            return {}
        try:
            options = go_json_loads(body)
        except DecodeError as exc:
            raise ApiError.bad_request(str(exc)) from None
        return options if isinstance(options, dict) else {}

    # -- watch ------------------------------------------------------------------------------

    async def _watch(
        self, ep: ClientEndpoint, request: web.BaseRequest, op: Operation, outcome: _Outcome
    ) -> web.StreamResponse:
        assert op.rt is not None
        rt, query, faults = op.rt, request.query, ep.faults
        try:
            timeout = parse_int("timeoutSeconds", query.get("timeoutSeconds"))
            predicate = self._predicate(query, op)
            since = self._watch_start(rt, query)
        except ApiError as error:
            return _json_response(error.code, error.status(), error.headers)
        bookmarks = parse_bool(query.get("allowWatchBookmarks"))
        watcher: Watcher | None = None
        failure: ApiError | None = None
        if faults._take_watch_expire():
            outcome.fault = "watch_expire"
            failure = ApiError.expired(
                f"too old resource version: {since or 0} ({self.store.revision})"
            )
        else:
            try:
                watcher = self.store.watch(rt, predicate, since)
            except ApiError as error:
                failure = error
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        outcome.commit(200)
        if failure is not None:
            # The apiserver reports these inside the stream, then ends it.
            await response.write(_encode({"type": "ERROR", "object": failure.status()}))
            return response
        assert watcher is not None
        initial_end = bookmarks and parse_bool(query.get("sendInitialEvents"))
        try:
            ep.watchers.add(watcher)
            await self._stream(ep, response, rt, watcher, timeout, bookmarks, initial_end)
        finally:
            ep.watchers.discard(watcher)
            self.store.unwatch(watcher)
        return response

    def _watch_start(self, rt: ResourceType, query: Mapping[str, str]) -> int | None:
        """The revision to replay after, or None for a synthetic ADDED of the current state."""
        raw = query.get("resourceVersion") or ""
        if raw and not (raw.isascii() and raw.isdigit()):
            raise ApiError(
                422,
                "Invalid",
                f'{rt.qualified} "" is invalid: resourceVersion: Invalid value: "{raw}": '
                f'strconv.ParseUint: parsing "{raw}": invalid syntax',
                {"group": rt.group, "kind": rt.plural},
            )
        since = int(raw) if raw else 0
        if "sendInitialEvents" in query:
            # Streaming list: the current state first, or explicitly nothing before "now".
            return None if parse_bool(query["sendInitialEvents"]) else since or self.store.revision
        # Unset or "0": start at the most recent state, beginning with it as synthetic ADDED.
        return since or None

    async def _stream(
        self,
        ep: ClientEndpoint,
        response: web.StreamResponse,
        rt: ResourceType,
        watcher: Watcher,
        timeout: int | None,
        bookmarks: bool,
        initial_end: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        faults = ep.faults
        deadline = loop.time() + timeout if timeout else None
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
        eof_after = faults._take_watch_eof()
        sent = 0

        def bookmark(annotations: Mapping[str, str] | None = None) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(self.store.revision)}
            if annotations:
                meta["annotations"] = dict(annotations)
            return _encode(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
                }
            )

        while not ep.closed:
            # Clear before draining: anything arriving while we write sets it again.
            watcher.wakeup.clear()
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            held = faults._holds_output
            if not held:
                if faults._take_watch_garbage():
                    await response.write(GARBAGE_LINE)
                while watcher.pending:
                    if eof_after is not None and sent >= eof_after:
                        return
                    event_type, obj = watcher.pending.popleft()
                    await response.write(_encode({"type": event_type, "object": rt.with_kind(obj)}))
                    sent += 1
                if eof_after is not None and sent >= eof_after:
                    return
                if initial_end:
                    initial_end = False
                    await response.write(bookmark({"k8s.io/initial-events-end": "true"}))
                if next_bookmark is not None and loop.time() >= next_bookmark:
                    await response.write(bookmark())
                    next_bookmark = loop.time() + self.bookmark_interval
                if watcher.wakeup.is_set():
                    continue
            wake_at = min(
                (t for t in (deadline, None if held else next_bookmark) if t is not None),
                default=None,
            )
            timer = loop.call_at(wake_at, watcher.wakeup.set) if wake_at is not None else None
            try:
                await watcher.wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()
