"""The candidates of the latency and rate measurements: aioleader and kubernetes_asyncio's
elector through their public APIs only, each with an ``ApiClient`` (and on the emulator an
endpoint) of its own, and a :class:`Lane` of candidates on one lease.

* aioleader: ``elect(LeaseLock(...), timing=..., release_on_cancel=..., on_started_leading=...)``
  — whatever the elector does when run (watching followers, polling, ...) is what is measured;
* kubernetes_asyncio: ``LeaderElection(Config(LeaseLock(...), ...)).run()``, as its docs show.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from aioleader import Leadership, Term, Timing, elect
from aioleader.kubernetes import LeaseLock

from ._backends import Backend, BenchError, Impl

# -- candidates ------------------------------------------------------------------------------------


class Candidate:
    """One candidate of one implementation on one lease, run in the caller's task group."""

    impl: Impl

    def __init__(
        self,
        backend: Backend,
        lease: str,
        identity: str,
        timing: Timing,
        *,
        release: bool,
        on_lead: Callable[[Candidate], None],
    ) -> None:
        self.backend = backend
        self.lease = lease
        self.identity = identity
        self.client = identity  # the request log's name for it
        self.timing = timing
        self.release = release
        self._on_lead = on_lead
        self.lead_starts: list[float] = []
        self.leading = False
        self.started_at = 0.0
        self.error: BaseException | None = None
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        self._api: Any = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity} leading={self.leading}>"

    def observed(self) -> str | None:
        """The holder this candidate last saw in the lock (None before its first read)."""
        raise NotImplementedError

    def _started_leading(self) -> None:
        self.leading = True
        self.lead_starts.append(anyio.current_time())
        self._on_lead(self)

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        self.started_at = anyio.current_time()
        self._api = await self.backend.api_client(self.client)
        await tg.start(self._run)

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            with self._scope:
                await self._campaign(task_status)
        except Exception as exc:  # a broken candidate must not end the benchmark; it is reported
            self.error = exc
        finally:
            self.leading = False
            self._done.set()

    async def _campaign(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop campaigning (with a release if the implementation and ``release`` allow it)."""
        self._scope.cancel()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.timing.renew_deadline + 5):
                await self._done.wait()
            if self._api is not None:
                await self._api.close()


class AioleaderCandidate(Candidate):
    impl: Impl = "aioleader"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leadership: Leadership | None = None

    def observed(self) -> str | None:
        if self.leadership is None:
            return None
        return self.leadership.leader or ""

    async def _campaign(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        lock = LeaseLock(
            self.lease,
            namespace=self.backend.namespace,
            identity=self.identity,
            api_client=self._api,
        )

        def started(term: Term) -> None:
            self._started_leading()

        def stopped(term: Term) -> None:
            self.leading = False

        async with elect(
            lock,
            timing=self.timing,
            release_on_cancel=self.release,
            on_started_leading=started,
            on_stopped_leading=stopped,
        ) as leadership:
            self.leadership = leadership
            task_status.started()
            await anyio.sleep_forever()


class KubernetesAsyncioCandidate(Candidate):
    """``kubernetes_asyncio.leaderelection``: no release exists, so ``stop()`` is a crash."""

    impl: Impl = "kubernetes_asyncio"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.election: Any = None

    def observed(self) -> str | None:
        record = None if self.election is None else self.election.observed_record
        return None if record is None else str(record.holder_identity or "")

    async def _campaign(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
        from kubernetes_asyncio.leaderelection.resourcelock.leaselock import (
            LeaseLock as K8sLeaseLock,
        )

        async def started() -> None:
            self._started_leading()

        async def stopped() -> None:
            self.leading = False

        lock = K8sLeaseLock(self.lease, self.backend.namespace, self.identity, self._api)
        first = True
        while True:  # run() returns when leadership is lost; campaign again, as a supervisor would
            self.election = leaderelection.LeaderElection(
                electionconfig.Config(
                    lock,
                    lease_duration=int(self.timing.lease_duration),
                    renew_deadline=self.timing.renew_deadline,
                    retry_period=self.timing.retry_period,
                    onstarted_leading=started,
                    onstopped_leading=stopped,
                )
            )
            if first:
                task_status.started()
                first = False
            await self.election.run()


CANDIDATE_TYPES: dict[Impl, type[Candidate]] = {
    "aioleader": AioleaderCandidate,
    "kubernetes_asyncio": KubernetesAsyncioCandidate,
}


class Lane:
    """One lease contended by ``size`` candidates of one implementation; stopped candidates are
    replaced by new ones (new identities, new clients)."""

    def __init__(
        self,
        backend: Backend,
        impl: Impl,
        lease: str,
        timing: Timing,
        tg: anyio.abc.TaskGroup,
        *,
        release: bool,
        size: int = 3,
        start_jitter: float = 0.0,
        seed: object = 0,
    ) -> None:
        self.backend = backend
        self.impl = impl
        self.lease = lease
        self.timing = timing
        self.tg = tg
        self.release = release
        self.size = size
        self.start_jitter = start_jitter
        self.rng = random.Random(f"{seed}:{lease}")
        self.alive: list[Candidate] = []
        self.everyone: list[Candidate] = []
        self._serial = 0
        self._changed = anyio.Event()

    def _notify(self, candidate: Candidate) -> None:
        self._changed.set()

    async def _wait_change(self, timeout: float) -> None:
        event = self._changed
        with anyio.move_on_after(timeout):
            await event.wait()
        if event.is_set() and self._changed is event:
            self._changed = anyio.Event()

    async def fill(self) -> None:
        """Start candidates until there are ``size``, each after a random pause of up to
        ``start_jitter`` seconds: a replacement started right after a takeover would otherwise
        poll in step with the new leader's renewals (a polling elector's failover time depends on
        that phase, and in a real deployment it is random)."""
        while len(self.alive) < self.size:
            if self.start_jitter > 0:
                await anyio.sleep(self.rng.uniform(0, self.start_jitter))
            self._serial += 1
            candidate = CANDIDATE_TYPES[self.impl](
                self.backend,
                self.lease,
                f"{self.lease}-c{self._serial}",
                self.timing,
                release=self.release,
                on_lead=self._notify,
            )
            await candidate.start(self.tg)
            self.alive.append(candidate)
            self.everyone.append(candidate)

    def leaders(self) -> list[Candidate]:
        return [c for c in self.alive if c.leading]

    async def settled(self, timeout: float) -> Candidate:
        """Wait until exactly one candidate leads and every other has seen it do so."""
        with anyio.move_on_after(timeout):
            while True:
                leaders = self.leaders()
                if len(leaders) == 1 and all(
                    c.observed() == leaders[0].identity for c in self.alive
                ):
                    return leaders[0]
                await self._wait_change(0.02)
        states = {c.identity: (c.leading, c.observed(), c.error) for c in self.alive}
        raise BenchError(f"{self.lease}: no settled leader within {timeout:g} s: {states}")

    async def stop(self, candidate: Candidate) -> None:
        self.alive.remove(candidate)
        await candidate.stop()

    async def next_leader(self, old: Candidate, after: float, timeout: float) -> float | None:
        """When a candidate other than ``old`` started leading after ``after`` (None: not within
        ``timeout``)."""
        with anyio.move_on_after(timeout):
            while True:
                starts = [t for c in self.alive if c is not old for t in c.lead_starts if t > after]
                if starts:
                    return min(starts)
                await self._wait_change(0.05)
        return None

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            for candidate in list(self.alive):
                await self.stop(candidate)
