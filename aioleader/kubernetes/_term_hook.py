"""What the Kubernetes term hooks share: who this Pod is, and a loop that converges an object to
the state the elector wants, retrying with backoff and reporting failures.

A hook ([`PodRoleLabel`][aioleader.kubernetes.PodRoleLabel], [`LeaderEndpoints`][aioleader.kubernetes.LeaderEndpoints])
says how to apply one state (`ConvergingHook._apply()`: leading or standby); this module says
when: the standby state once at start-up (which clears what a crashed process left), then each
state the elector asks for ([`want()`][aioleader.TermHook.want]) until it is applied. A failure is
retried (exponential backoff from ``backoff_initial`` to ``backoff_max``, at once when the wanted
state changes), logged at WARNING once per streak, counted
([`hook_failed()`][aioleader.ElectionMetrics.hook_failed]), recorded as an Event on the lock object and
reported by `problem()` (which the election's health and statistics show).
Nothing here ever ends a term: the elector bounds its wait for the standby state by RD/2.
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Final

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import AioleaderError, ElectionError
from .._lock import Lock
from .._metrics import ElectionMetrics
from ._client import KubeClient
from ._names import check_name, check_namespace
from ._object import ObjectLock

if TYPE_CHECKING:
    from .._leadership import Term

__all__ = ["SERVICE_ACCOUNT_NAMESPACE", "ConvergingHook", "pod_name", "pod_namespace"]

logger = logging.getLogger("aioleader")

#: Where a Pod finds its own namespace (the service account's projected volume).
SERVICE_ACCOUNT_NAMESPACE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def pod_name(pod: str | None, hook: str) -> str:
    """``pod``, else ``$POD_NAME`` (Downward API ``fieldRef: metadata.name``); ValueError if neither."""
    if pod is None:
        pod = os.environ.get("POD_NAME") or None
        if pod is None:
            raise ValueError(
                f"{hook} needs the Pod's name: set POD_NAME from the Downward API "
                "(env: valueFrom: fieldRef: fieldPath: metadata.name) or pass pod="
            )
        return check_name(pod, "POD_NAME")
    return check_name(pod, "pod")


def pod_namespace(namespace: str | None, hook: str) -> str:
    """``namespace``, else ``$POD_NAMESPACE``, else the service account's namespace file."""
    if namespace is not None:
        return check_namespace(namespace)
    found = os.environ.get("POD_NAMESPACE") or None
    if found is not None:
        return check_namespace(found, "POD_NAMESPACE")
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            found = file.read().strip() or None
    except OSError:
        found = None
    if found is None:
        raise ValueError(
            f"{hook} needs the Pod's namespace: pass namespace=, set POD_NAMESPACE (Downward "
            f"API fieldPath: metadata.namespace) or run in a Pod ({SERVICE_ACCOUNT_NAMESPACE})"
        )
    return check_namespace(found, SERVICE_ACCOUNT_NAMESPACE)


def _positive(value: float, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{argument} must be a positive number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be finite, got {value!r}")
    return float(value)


class ConvergingHook(ABC):
    """A [`TermHook`][aioleader.TermHook] that keeps one Kubernetes object at the wanted state.

    Subclasses implement `_apply()` (one attempt, raising [`AioleaderError`][aioleader.AioleaderError]
    on failure) and `_describe()` (what the hook keeps, for messages).
    """

    def __init__(
        self,
        *,
        timeout: float,
        backoff_initial: float,
        backoff_max: float,
        metrics: ElectionMetrics | None,
        api_client: object | None,
    ) -> None:
        self._timeout = _positive(timeout, "timeout")
        self._backoff_initial = _positive(backoff_initial, "backoff_initial")
        self._backoff_max = _positive(backoff_max, "backoff_max")
        if self._backoff_max < self._backoff_initial:
            raise ValueError(
                f"backoff_max ({backoff_max!r}) must be at least backoff_initial "
                f"({backoff_initial!r})"
            )
        if metrics is not None and not isinstance(metrics, ElectionMetrics):
            raise TypeError(f"metrics must be ElectionMetrics, got {type(metrics).__name__}")
        self._metrics = metrics
        self._own_client = KubeClient(api_client) if api_client is not None else None
        self._events: MemoryObjectSendStream[str] | None = None
        self._name = ""
        # What the elector wants (generation counts want() calls) and what was applied.
        self._leading = False
        self._term: Term | None = None
        self._generation = 0
        self._applied_generation = -1
        self._applied = anyio.Event()
        self._changed = anyio.Event()
        self._problem: str | None = None
        self._failures = 0

    # -- what a hook says ------------------------------------------------------------------------

    @abstractmethod
    async def _apply(self, client: KubeClient, leading: bool, term: Term | None) -> None:
        """One attempt at the state (bounded by `_timeout` per request)."""

    @abstractmethod
    def _describe(self) -> str:
        """What the hook keeps, e.g. ``the label role of pod "a" in namespace "ns"``."""

    # -- TermHook --------------------------------------------------------------------------------

    async def run(self, lock: Lock, *, task_status: TaskStatus[None]) -> None:
        """Apply the standby state once (a 401/403 or a missing object here is fatal, raised as
        [`ElectionError`][aioleader.ElectionError]: a configuration mistake), then follow the elector's
        wishes until cancelled."""
        client = self._bind(lock)
        self._name = lock.describe()
        send, receive = anyio.create_memory_object_stream[str](math.inf)
        self._events = send
        try:
            generation = self._generation
            try:
                await self._apply(client, False, None)
            except ElectionError:
                raise
            except AioleaderError as exc:
                self._failed(exc)
            else:
                self._succeeded(generation)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._record_events, lock, receive)
                task_status.started()
                await self._converge(client)
        finally:
            self._events = None
            send.close()
            receive.close()
            if self._own_client is not None:
                await self._own_client.aclose()

    def want(self, leading: bool, term: Term | None) -> None:
        self._leading = leading
        self._term = term
        self._generation += 1
        if self._applied.is_set():
            self._applied = anyio.Event()
        self._changed.set()

    async def wait_applied(self) -> None:
        await self._applied.wait()

    def problem(self) -> str | None:
        return self._problem

    # -- the loop --------------------------------------------------------------------------------

    def _bind(self, lock: Lock) -> KubeClient:
        if self._own_client is not None:
            return self._own_client
        if isinstance(lock, ObjectLock):
            return lock.kube_client
        raise ElectionError(
            f"{type(self).__name__} needs a Kubernetes API client: the lock {lock.describe()} "
            f"({type(lock).__name__}) is not a Kubernetes lock, so pass api_client="
        )

    async def _converge(self, client: KubeClient) -> None:
        delay = self._backoff_initial
        while True:
            if self._applied_generation == self._generation:
                await self._changed.wait()
                self._changed = anyio.Event()
                continue
            self._changed = anyio.Event()
            generation, leading, term = self._generation, self._leading, self._term
            try:
                await self._apply(client, leading, term)
            except AioleaderError as exc:
                self._failed(exc)
                # Retry after the backoff, or at once if the wanted state changes meanwhile.
                with anyio.move_on_after(delay):
                    await self._changed.wait()
                delay = min(delay * 2, self._backoff_max)
                continue
            delay = self._backoff_initial
            self._succeeded(generation)

    def _succeeded(self, generation: int) -> None:
        if self._problem is not None:
            logger.info(
                "%s: %s is at the wanted state again (after %d failed attempts)",
                self._name,
                self._describe(),
                self._failures,
                extra={"lock": self._name},
            )
        self._problem = None
        self._failures = 0
        if generation == self._generation:
            self._applied_generation = generation
            self._applied.set()

    def _failed(self, exc: AioleaderError) -> None:
        self._failures += 1
        first = self._problem is None
        self._problem = f"cannot update {self._describe()}: {exc}"
        if self._metrics is not None:
            self._metrics.hook_failed(self._name, type(self).__name__)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "%s: %s (retrying)",
            self._name,
            self._problem,
            extra={"lock": self._name},
        )
        if first and self._events is not None:
            self._events.send_nowait(self._problem)

    @staticmethod
    async def _record_events(lock: Lock, messages: MemoryObjectReceiveStream[str]) -> None:
        # Best effort, off the retry path: record_event never raises and is bounded.
        async for message in messages:
            await lock.record_event(message)
