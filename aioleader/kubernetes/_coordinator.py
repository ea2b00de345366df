"""``aioleader coordinate``: a coordinated leader election controller for the strategies
kube-apiserver leaves to third parties (KEP-4355), itself leader-elected.

kube-apiserver's controller only elects with ``OldestEmulationVersion``; a Lease whose
candidates ask for another strategy gets that ``strategy`` and no holder, and waits for a
controller that knows it. [`Coordinator`][Coordinator] is one: it decides with the same pure election
step as kube-apiserver (`aioleader._coordination.election_step()`: ping the candidates, wait
for their answers, pick, assign a free or expired Lease, name a better candidate as
``preferredHolder``), with its own strategies, by default [`HIGHEST_PRIORITY`][HIGHEST_PRIORITY]
(``aioleader.dev/HighestPriority``: the highest ``aioleader.dev/priority`` label leads).

Only one instance acts: the coordinator campaigns with [`aioleader.elect()`][aioleader.elect] on its own
Lease and reconciles only inside its term (cancelled with it). While leading it makes one pass
every ``interval`` seconds over the namespace's LeaseCandidates: for every Lease they name whose
strategy (the newest binary version's) is one of its own, it reads the Lease, runs one election
step and writes what the step says (pings as candidate updates, the Lease as a create or a
compare-and-swap update). A conflict is left for the next pass, which reads again.

Adding a strategy is a pure function from the candidates that answered to the one that should
lead (`aioleader._coordination.Strategy`), registered under a qualified name::

    def lowest_name(candidates):
        return min(candidates, key=lambda c: c["metadata"]["name"], default=None)

    Coordinator(lock, strategies={**AIOLEADER_STRATEGIES, "example.com/LowestName": lowest_name})

RBAC: ``get``, ``list`` and ``update`` on ``leasecandidates`` and ``get``, ``create`` and
``update`` on ``leases`` in the namespace, plus what its own election needs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final, final

import anyio
from kubernetes_asyncio.client import CoordinationV1Api, CoordinationV1beta1Api

from .._coordination import (
    AIOLEADER_STRATEGIES,
    ELECTION_WINDOW,
    ElectionStep,
    Strategy,
    candidate_expired,
    election_step,
    pick_strategy,
)
from .._election import elect
from .._exceptions import ElectionError, LockConflict, LockError
from .._record import format_micro_time
from .._timing import Timing
from ._client import KubeClient
from ._errors import error_for
from ._lease import LeaseLock
from ._names import check_namespace, check_strategy
from ._object import client_of
from ._reply import ObjectRef, Reply, decode_json

__all__ = ["Coordinator"]

logger = logging.getLogger("aioleader.coordinate")

_GROUP: Final = "coordination.k8s.io"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@final
class Coordinator:
    """A leader-elected election controller for ``strategies`` (see the module docstring).

    Synopsis::

        lock = LeaseLock("aioleader-coordinator", namespace="default")
        async with lock:
            await Coordinator(lock).run()          # until cancelled

    ``lock`` is the coordinator's own election (its namespace is the one coordinated, unless
    ``namespace`` says another); ``election_window`` is how long pinged candidates have to
    answer (kube-apiserver: 5 s); ``interval`` the pause between passes.
    """

    def __init__(
        self,
        lock: LeaseLock,
        *,
        namespace: str | None = None,
        strategies: Mapping[str, Strategy] = AIOLEADER_STRATEGIES,
        election_window: float = ELECTION_WINDOW,
        interval: float = 1.0,
        timing: Timing | None = None,
    ) -> None:
        if not isinstance(lock, LeaseLock):
            raise ValueError(f"lock must be a LeaseLock, got {type(lock).__name__}")
        self.lock = lock
        self.namespace = check_namespace(namespace if namespace is not None else lock.namespace)
        if not strategies:
            raise ValueError("strategies must name at least one strategy")
        for name, pick in strategies.items():
            check_strategy(name, "a strategy name")
            if not callable(pick):
                raise ValueError(f"strategy {name!r} must be a function, got {pick!r}")
        self.strategies = dict(strategies)
        for label, value in (("election_window", election_window), ("interval", interval)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{label} must be a number of seconds, got {value!r}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be positive and finite, got {value!r}")
        self.election_window = float(election_window)
        self.interval = float(interval)
        self.timing = timing if timing is not None else Timing()
        self.client: KubeClient = client_of(lock)
        self.steps = 0  # election steps run while leading

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign for the coordinator's Lease and reconcile while leading, until cancelled."""
        async with elect(self.lock, timing=self.timing) as leadership:
            while True:
                async with leadership.leading():
                    logger.info(
                        "%s coordinates %s in namespace %s",
                        self.lock.identity,
                        ", ".join(sorted(self.strategies)),
                        self.namespace,
                    )
                    await self.reconcile_forever()

    async def reconcile_forever(self) -> None:
        """A pass every ``interval`` seconds; transient failures wait for the next one."""
        while True:
            try:
                await self.reconcile(_now())
            except ElectionError:
                raise
            except LockError as exc:
                logger.warning("coordination pass failed: %s", exc)
            await anyio.sleep(self.interval)

    async def reconcile(self, now: datetime) -> list[ElectionStep]:
        """One pass: one election step for every Lease whose candidates use our strategies."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for candidate in await self._candidates():
            spec = candidate.get("spec")
            lease_name = spec.get("leaseName") if isinstance(spec, dict) else None
            if isinstance(lease_name, str) and lease_name:
                groups.setdefault(lease_name, []).append(candidate)
        steps = []
        for lease_name, candidates in sorted(groups.items()):
            if not self._ours(candidates, now):
                continue
            lease = await self._lease(lease_name)
            step = election_step(
                self.namespace,
                lease_name,
                lease,
                candidates,
                now,
                window=self.election_window,
                strategies=self.strategies,
            )
            self.steps += 1
            if step.error is not None:
                logger.warning(
                    "election for Lease %s/%s: %s", self.namespace, lease_name, step.error
                )
            await self._apply(lease_name, step, candidates, now)
            steps.append(step)
        return steps

    def _ours(self, candidates: Sequence[dict[str, Any]], now: datetime) -> bool:
        live = [c for c in candidates if not candidate_expired(c, now)]
        if not live:
            return False
        strategy, error = pick_strategy(live)
        if error is not None:
            # Disagreeing strategies: ours to report only if one of them is ours.
            return any(
                isinstance(c.get("spec"), dict) and c["spec"].get("strategy") in self.strategies
                for c in live
            )
        return strategy in self.strategies

    # -- requests --------------------------------------------------------------------------------

    def _ref(self, plural: str, name: str) -> ObjectRef:
        return ObjectRef(group=_GROUP, plural=plural, namespace=self.namespace, name=name)

    async def _send(self, verb: str, ref: ObjectRef, api: Any, call: str, *args: Any) -> Reply:
        return await self.client.request(
            verb,
            ref,
            lambda client, t: getattr(api(client), call)(
                *args, _preload_content=False, _request_timeout=t
            ),
            timeout=None,
        )

    async def _candidates(self) -> list[dict[str, Any]]:
        ref = self._ref("leasecandidates", "*")
        reply = await self._send(
            "list", ref, CoordinationV1beta1Api, "list_namespaced_lease_candidate", self.namespace
        )
        if reply.status == 404:
            raise ElectionError(
                f"cannot list leasecandidates.{_GROUP} in namespace {self.namespace!r}: the API "
                "server does not serve LeaseCandidates; coordinated leader election needs the "
                "coordination.k8s.io/v1beta1 API (the CoordinatedLeaderElection feature gate)"
            )
        if not reply.ok:
            raise error_for("list", ref, reply)
        items = decode_json("list", ref, reply).get("items")
        return [item for item in items or () if isinstance(item, dict)]

    async def _lease(self, name: str) -> dict[str, Any] | None:
        ref = self._ref("leases", name)
        reply = await self._send(
            "get", ref, CoordinationV1Api, "read_namespaced_lease", name, self.namespace
        )
        if reply.status == 404 and reply.status_object() is not None:
            return None
        if not reply.ok:
            raise error_for("get", ref, reply)
        return decode_json("get", ref, reply)

    async def _apply(
        self,
        lease_name: str,
        step: ElectionStep,
        candidates: Sequence[dict[str, Any]],
        now: datetime,
    ) -> None:
        stamp = format_micro_time(now)
        by_name = {c.get("metadata", {}).get("name"): c for c in candidates}
        for name in step.pings:
            stored = by_name.get(name)
            if stored is None:
                continue
            pinged = {**stored, "spec": {**stored["spec"], "pingTime": stamp}}
            ref = self._ref("leasecandidates", name)
            reply = await self._send(
                "update",
                ref,
                CoordinationV1beta1Api,
                "replace_namespaced_lease_candidate",
                name,
                self.namespace,
                pinged,
            )
            if not reply.ok and not isinstance(error_for("update", ref, reply), LockConflict):
                raise error_for("update", ref, reply)
        if step.lease is None:
            return
        ref = self._ref("leases", lease_name)
        body = {"apiVersion": f"{_GROUP}/v1", "kind": "Lease", **step.lease}
        if step.create:
            reply = await self._send(
                "create", ref, CoordinationV1Api, "create_namespaced_lease", self.namespace, body
            )
        else:
            reply = await self._send(
                "update",
                ref,
                CoordinationV1Api,
                "replace_namespaced_lease",
                lease_name,
                self.namespace,
                body,
            )
        if not reply.ok:
            error = error_for("create" if step.create else "update", ref, reply)
            if isinstance(error, LockConflict):
                return  # somebody wrote first (the holder renewing): the next pass reads again
            raise error
        spec = step.lease.get("spec", {})
        logger.info(
            "Lease %s/%s %s: holder %r, preferred holder %r, strategy %r",
            self.namespace,
            lease_name,
            step.reason,
            spec.get("holderIdentity"),
            spec.get("preferredHolder"),
            spec.get("strategy"),
        )
