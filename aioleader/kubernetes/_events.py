"""Kubernetes Events about a lock object: client-go's ``RecordEvent`` and event recorder.

client-go's locks report every transition as a core/v1 Event on the lock object: type ``Normal``,
reason ``LeaderElection``, message ``"<identity> became leader"`` or ``"<identity> stopped
leading"``, so that ``kubectl describe lease NAME`` and ``kubectl get events`` show who led when.
[`EventRecorder`][EventRecorder] writes the same Event (``tools/record``'s ``makeEvent``): the name
``<lock name>.<hex nanoseconds>``, ``involvedObject`` referring to the lock object as last read or
written (kind, namespace, name, uid, apiVersion, resourceVersion), ``source.component`` and
``reportingComponent`` the candidate's identity, ``firstTimestamp = lastTimestamp = now`` in RFC 3339
seconds, ``count: 1``. A repeat of the same message about the same object is aggregated as
client-go's ``EventCorrelator`` does: a strategic merge PATCH of the first Event with ``count + 1``
and a new ``lastTimestamp`` (a new Event if that one is gone, e.g. after the API server's one-hour
event TTL).

Events are best effort, by design:

* **Never raise.** Every failure - 403 (RBAC for events is often missing), 422, 5xx, a timeout, a
  closed client - is logged at DEBUG on the ``aioleader`` logger and dropped; client-go drops
  events the server rejects, too.
* **Never block long.** One call is bounded by ``timeout`` ([`DEFAULT_EVENT_TIMEOUT`][DEFAULT_EVENT_TIMEOUT] if
  ``None``), waiting for an earlier event included.
* **Never delay a renewal.** The elector calls `record_event()`
  in a task of its own, and the recorder shares nothing with the lock's requests but the
  ``ApiClient``: it reads the cached object (replaced whole, never mutated) and writes nothing back.
* **Survive shutdown.** The call runs shielded (and bounded), so that the "stopped leading" Event of
  a graceful stop is not cancelled half-way when the elector's tasks are torn down.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

import anyio
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from .._record import format_rfc3339
from ._client import KubeClient
from ._reply import ObjectRef, Reply

__all__ = ["DEFAULT_EVENT_TIMEOUT", "EVENT_REASON", "EventRecorder"]

logger = logging.getLogger("aioleader")

#: The bound of one [`EventRecorder.record()`][EventRecorder.record] made with ``timeout=None``, in seconds. An Event
#: POST takes milliseconds on a healthy API server; on an unhealthy one it is not worth waiting for.
DEFAULT_EVENT_TIMEOUT: Final = 2.0

#: client-go's reason for leader election Events.
EVENT_REASON: Final = "LeaderElection"

# Repeats are aggregated for this many distinct (object, message) pairs, the oldest forgotten first
# (client-go keeps an LRU of 4096 across all objects; one lock has a handful of messages).
_REMEMBERED: Final = 64
_MAX_NAME: Final = 253
_STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"


def _core(api_client: ApiClient) -> Any:
    """The core/v1 API, typed ``Any``: with ``_preload_content=False`` its methods return aiohttp's
    response, and they take plain dict bodies."""
    return CoreV1Api(api_client)


@dataclass
class _Seen:
    """An Event we created, for aggregating repeats into it."""

    name: str
    count: int


class EventRecorder:
    """Writes leader election Events about one lock object. Private to the Kubernetes locks.

    ``kind`` and ``api_version`` name the lock object's type (``Lease``,
    ``coordination.k8s.io/v1``); ``component`` is the Event's source (the candidate's identity).
    ``enabled=False`` makes [`record()`][record] a no-op that sends nothing.
    """

    def __init__(
        self,
        client: KubeClient,
        ref: ObjectRef,
        *,
        kind: str,
        api_version: str,
        component: str,
        enabled: bool = True,
    ) -> None:
        self._client = client
        self._ref = ref
        self._kind = kind
        self._api_version = api_version
        self._component = component
        self.enabled = enabled
        self._seen: OrderedDict[tuple[str, str], _Seen] = OrderedDict()
        self._last_stamp = 0
        # One event at a time: keeps the aggregation state consistent and Events in order.
        self._serial = anyio.Lock()
        self._log_extra = {"lock": f"{ref.namespace}/{ref.name}", "identity": component}

    async def record(
        self,
        message: str,
        involved: Mapping[str, Any] | None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Record a ``Normal`` ``LeaderElection`` Event with ``message`` about the lock object.

        ``involved`` is the lock object as last read or written (its ``metadata`` gives the
        reference's ``uid`` and ``resourceVersion``); ``None`` refers to it by name only. Never
        raises (but lets cancellation through), never takes longer than ``timeout`` seconds.
        """
        if not self.enabled:
            return
        seconds = DEFAULT_EVENT_TIMEOUT if timeout is None else float(timeout)
        if not seconds > 0:  # also NaN
            return
        reference = self._reference(involved)
        # Shielded, so that a transition recorded while the elector shuts down still reaches the
        # API server; bounded, so that this can never hold the shutdown for long.
        with anyio.CancelScope(shield=True), anyio.move_on_after(seconds) as scope:
            deadline = anyio.current_time() + seconds
            try:
                async with self._serial:
                    await self._record(message, reference, deadline)
            except Exception as exc:  # best effort: nothing may reach the elector
                self._dropped(message, f"{type(exc).__name__}: {exc}")
        if scope.cancelled_caught:
            self._dropped(message, f"no response within {seconds:g} s")

    # -- helpers -------------------------------------------------------------------------------

    def _reference(self, involved: Mapping[str, Any] | None) -> dict[str, str]:
        """A ``v1.ObjectReference`` to the lock object, in Go's field order."""
        reference = {
            "kind": self._kind,
            "namespace": self._ref.namespace,
            "name": self._ref.name,
        }
        metadata = involved.get("metadata") if involved is not None else None
        if isinstance(metadata, Mapping):
            uid = metadata.get("uid")
            if isinstance(uid, str) and uid:
                reference["uid"] = uid
        reference["apiVersion"] = self._api_version
        if isinstance(metadata, Mapping):
            version = metadata.get("resourceVersion")
            if isinstance(version, str) and version:
                reference["resourceVersion"] = version
        return reference

    async def _record(self, message: str, reference: dict[str, str], deadline: float) -> None:
        now = format_rfc3339(datetime.now(timezone.utc))
        key = (reference.get("uid", ""), message)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            reply = await self._patch(seen, message, now, deadline)
            if reply.ok:
                seen.count += 1
                return
            if reply.status != 404:
                self._rejected("patch", message, reply)
                return
            del self._seen[key]  # gone (the event TTL): start a new one
        name = self._event_name()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": self._ref.namespace},
            "involvedObject": reference,
            "reason": EVENT_REASON,
            "message": message,
            "source": {"component": self._component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": "Normal",
            "reportingComponent": self._component,
            "reportingInstance": "",
        }
        reply = await self._client.request(
            "create",
            self._named(name),
            lambda api, t: _core(api).create_namespaced_event(
                self._ref.namespace, body, _preload_content=False, _request_timeout=t
            ),
            timeout=deadline - anyio.current_time(),
        )
        if not reply.ok:
            self._rejected("create", message, reply)
            return
        self._seen[key] = _Seen(name=name, count=1)
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)
        logger.debug(
            "%s: recorded event %r (%s)",
            self._describe(),
            message,
            name,
            extra=self._log_extra,
        )

    async def _patch(self, seen: _Seen, message: str, now: str, deadline: float) -> Reply:
        # What client-go's EventCorrelator sends for a repeat (a strategic merge patch).
        patch = {"count": seen.count + 1, "lastTimestamp": now, "message": message}
        return await self._client.request(
            "patch",
            self._named(seen.name),
            lambda api, t: _core(api).patch_namespaced_event(
                seen.name,
                self._ref.namespace,
                patch,
                _content_type=_STRATEGIC_MERGE_PATCH,
                _preload_content=False,
                _request_timeout=t,
            ),
            timeout=deadline - anyio.current_time(),
        )

    def _event_name(self) -> str:
        """``<lock name>.<hex nanoseconds>``, as client-go names Events, unique in this process
        even for two events within one clock tick."""
        stamp = max(time.time_ns(), self._last_stamp + 1)
        self._last_stamp = stamp
        suffix = f".{stamp:x}"
        # The lock name may be a 253-character subdomain already; keep the Event name valid.
        prefix = self._ref.name[: _MAX_NAME - len(suffix)].rstrip(".-")
        return prefix + suffix

    def _named(self, name: str) -> ObjectRef:
        return ObjectRef(group="", plural="events", namespace=self._ref.namespace, name=name)

    def _describe(self) -> str:
        return f"{self._ref.namespace}/{self._ref.name}"

    def _rejected(self, verb: str, message: str, reply: Reply) -> None:
        status = reply.status_object()
        detail = status.get("message") if status is not None else None
        text = f"{verb} answered {reply.status} {reply.reason}"
        if isinstance(detail, str) and detail:
            text += f": {detail}"
        if reply.status == 403:
            text += " (RBAC: the service account needs create and patch on events)"
        self._dropped(message, text)

    def _dropped(self, message: str, why: str) -> None:
        logger.debug(
            "%s: event %r not recorded: %s",
            self._describe(),
            message,
            why,
            extra=self._log_extra,
        )
