"""A fault-injecting wrapper around any lock, for tests of leader-gated code on fake clocks."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar, final

import anyio

from .._exceptions import AioleaderError, LockConflict, LockError
from .._lock import Lock, Observed
from .._record import LeaderElectionRecord

__all__ = ["FaultyLock", "LockCall"]

T = TypeVar("T")


class _ReplyLost(LockError):
    """The write was applied; the caller sees a transport error, as after a dropped reply."""


@final
@dataclass(frozen=True)
class LockCall:
    """One call through a [`FaultyLock`][FaultyLock]: what, when it started and ended, and how."""

    op: str
    started: float
    ended: float
    outcome: str  # "ok", "conflict", "error", "applied-then-error", "timeout"


@dataclass
class _Plan:
    latency: float = 0.0
    reply_latency: float = 0.0
    hang: bool = False
    error_rate: float = 0.0
    apply_then_fail_rate: float = 0.0
    fail_next: list[AioleaderError] = field(default_factory=list)
    apply_then_fail_next: int = 0


class FaultyLock(Lock):
    """Wraps a lock and injects the faults an API server shows, without any network.

    Works on every anyio backend and on fake clocks (latency is an ``anyio.sleep``), which makes it
    the tool for exact-time tests and seeded chaos runs::

        lock = FaultyLock(MemoryLock("a"))
        lock.hang = True                         # every request hangs until cancelled
        lock.fail_next(LockError("503"))         # the next request fails
        lock.apply_then_fail_next()              # the next write lands, but its reply is "lost"

    ``ops`` (a set of ``"get"``, ``"create"``, ``"update"``) limits the faults to some operations;
    ``calls`` records every call with its start and end time.
    """

    def __init__(
        self,
        inner: Lock,
        *,
        rng: random.Random | None = None,
        ops: frozenset[str] = frozenset({"get", "create", "update", "watch", "list"}),
        watch: bool = False,
    ) -> None:
        self.inner = inner
        self._watch_enabled = watch
        self.rng = rng if rng is not None else random.Random()
        self.ops = ops
        self.calls: list[LockCall] = []
        #: The raw record of the last observation handed to the caller (``None``: none, or the
        #: lock did not exist): what the candidate using this lock has seen last.
        self.last_delivered: bytes | None = None
        self._plan = _Plan()

    # -- the knobs -----------------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds each request takes before it reaches the lock."""
        return self._plan.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._plan.latency = value

    @property
    def reply_latency(self) -> float:
        """Seconds between a request taking effect and its reply arriving. A caller that times out
        in between has its write applied without knowing it."""
        return self._plan.reply_latency

    @reply_latency.setter
    def reply_latency(self, value: float) -> None:
        self._plan.reply_latency = value

    @property
    def hang(self) -> bool:
        """While true, requests never complete (until the caller's timeout cancels them)."""
        return self._plan.hang

    @hang.setter
    def hang(self, value: bool) -> None:
        self._plan.hang = value

    @property
    def error_rate(self) -> float:
        """Probability that a request fails with [`LockError`][aioleader.LockError] (not applied)."""
        return self._plan.error_rate

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        self._plan.error_rate = value

    @property
    def apply_then_fail_rate(self) -> float:
        """Probability that a write is applied but its reply is lost."""
        return self._plan.apply_then_fail_rate

    @apply_then_fail_rate.setter
    def apply_then_fail_rate(self, value: float) -> None:
        self._plan.apply_then_fail_rate = value

    def fail_next(self, *errors: AioleaderError) -> None:
        """The next requests fail with these errors, one each, before reaching the lock."""
        self._plan.fail_next.extend(errors)

    def apply_then_fail_next(self, count: int = 1) -> None:
        """The next ``count`` writes are applied, then fail as if the reply was lost."""
        self._plan.apply_then_fail_next += count

    def heal(self) -> None:
        """Clear every fault."""
        self._plan = _Plan()

    # -- Lock ----------------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self.inner.identity

    def describe(self) -> str:
        return self.inner.describe()

    @property
    def supports_watch(self) -> bool:
        """With ``watch=True`` (and a watchable inner lock), watches pass through, faulted:
        ``latency`` delays each event, ``hang`` holds them (a stalled stream), ``error_rate``
        breaks the stream, and ``fail_next`` errors are raised when the watch starts."""
        return self._watch_enabled and self.inner.supports_watch

    def watch(self) -> AsyncGenerator[Observed | None, None]:
        if not self.supports_watch:
            raise NotImplementedError(f"{self.describe()} is not watched")
        return self._watched()

    async def _watched(self) -> AsyncGenerator[Observed | None, None]:
        started = anyio.current_time()
        outcome = "ok"
        try:
            if "watch" in self.ops and self._plan.fail_next:
                raise self._plan.fail_next.pop(0)
            async with contextlib.aclosing(self.inner.watch()) as states:
                async for observed in states:
                    if "watch" in self.ops:
                        while self._plan.hang:  # noqa: ASYNC110 - a plain attribute knob
                            await anyio.sleep(0.05)
                        if self._plan.latency:
                            await anyio.sleep(self._plan.latency)
                        if self._plan.error_rate and self.rng.random() < self._plan.error_rate:
                            raise LockError(f"{self.describe()}: injected watch failure")
                    self._delivered(observed)
                    yield observed
        except AioleaderError:
            outcome = "error"
            raise
        finally:
            self.calls.append(LockCall("watch", started, anyio.current_time(), outcome))

    async def get(self, *, timeout: float | None = None) -> Observed | None:
        return await self._call("get", lambda: self.inner.get(timeout=timeout), write=False)

    async def create(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        return await self._call("create", lambda: self.inner.create(record, timeout=timeout))

    async def update(
        self, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        return await self._call("update", lambda: self.inner.update(record, timeout=timeout))

    @property
    def supports_update_from(self) -> bool:
        return self.inner.supports_update_from

    async def update_from(
        self, base: Observed, record: LeaderElectionRecord, *, timeout: float | None = None
    ) -> Observed:
        return await self._call(
            "update", lambda: self.inner.update_from(base, record, timeout=timeout)
        )

    @property
    def supports_listing(self) -> bool:
        return self.inner.supports_listing

    async def list_siblings(
        self, prefix: str, *, timeout: float | None = None
    ) -> dict[str, Observed]:
        """The inner lock's listing, faulted like a read (op ``"list"``)."""
        return await self._call(
            "list", lambda: self.inner.list_siblings(prefix, timeout=timeout), write=False
        )

    async def record_event(self, message: str) -> None:
        await self.inner.record_event(message)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _call(self, op: str, call: Callable[[], Awaitable[T]], *, write: bool = True) -> T:
        started = anyio.current_time()
        outcome = "timeout"
        try:
            result = await self._faulted(op, call, write)
        except _ReplyLost:
            outcome = "applied-then-error"
            raise
        except LockConflict:
            outcome = "conflict"
            raise
        except AioleaderError:
            outcome = "error"
            raise
        else:
            outcome = "ok"
            self._delivered(result)
            return result
        finally:
            self.calls.append(LockCall(op, started, anyio.current_time(), outcome))

    def _delivered(self, result: object) -> None:
        if result is None or isinstance(result, Observed):
            self.last_delivered = None if result is None else result.raw

    async def _faulted(self, op: str, call: Callable[[], Awaitable[T]], write: bool) -> T:
        plan = self._plan
        if op not in self.ops:
            return await call()
        if plan.latency:
            await anyio.sleep(plan.latency)
        if plan.hang:
            await anyio.sleep(math.inf)
        if plan.fail_next:
            raise plan.fail_next.pop(0)
        if plan.error_rate and self.rng.random() < plan.error_rate:
            raise LockError(f"{self.describe()}: injected {op} failure")
        if write and (
            plan.apply_then_fail_next
            or (plan.apply_then_fail_rate and self.rng.random() < plan.apply_then_fail_rate)
        ):
            if plan.apply_then_fail_next:
                plan.apply_then_fail_next -= 1
            # Locks that cache the last version (all of ours) must not learn the new one: the reply
            # carrying it was lost. Locks that expose their cache state let us roll it back.
            state = self._cache_state()
            await call()
            self._restore_cache_state(state)
            raise _ReplyLost(f"{self.describe()}: {op} applied, reply lost")
        state = self._cache_state()
        result = await call()
        if plan.reply_latency:
            try:
                await anyio.sleep(plan.reply_latency)
            except BaseException:
                self._restore_cache_state(state)  # the caller gave up: the reply never arrived
                raise
        return result

    def _cache_state(self) -> object:
        return getattr(self.inner, "_cache_state", lambda: None)()

    def _restore_cache_state(self, state: object) -> None:
        restore = getattr(self.inner, "_restore_cache_state", None)
        if restore is not None:
            restore(state)
