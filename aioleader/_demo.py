"""``aioleader demo``: a real election on the embedded Kubernetes API emulator.

Three candidates campaign for one ``coordination.k8s.io/v1`` Lease through kubernetes_asyncio over
HTTP. The demo kills the leader without a release (it simply vanishes), then stops the next leader
gracefully, and prints what it observed: who led, the fencing tokens, and the failover times.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TextIO

import anyio

from ._election import campaign
from ._leadership import Leadership
from ._timing import Timing

__all__ = ["run_demo"]

NAMESPACE = "default"
LOCK = "demo-lock"


@dataclass
class _Candidate:
    identity: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    leadership: Leadership | None = None


async def run_demo(
    *, timing: Timing | None = None, candidates: int = 3, out: TextIO = sys.stdout
) -> dict[str, float]:
    """Run the demo; returns the measured failover times (seconds) by scenario."""
    # Imported here: the core never needs aiohttp or kubernetes_asyncio.
    from .kubernetes import LeaseLock
    from .testing import KubeEmulator

    timing = timing or Timing(lease_duration=4, renew_deadline=3, retry_period=0.5)
    t0 = anyio.current_time()

    def say(message: str) -> None:
        print(f"[{anyio.current_time() - t0:6.2f}s] {message}", file=out, flush=True)

    results: dict[str, float] = {}
    async with KubeEmulator() as emulator:
        say(f"Kubernetes API emulator listening on {emulator.url}")
        say(
            f"timing: lease {timing.lease_duration:g}s, renew deadline "
            f"{timing.renew_deadline:g}s, retry period {timing.retry_period:g}s"
        )
        pool = [_Candidate(f"pod-{chr(ord('a') + i)}") for i in range(candidates)]

        async def run(candidate: _Candidate, *, task_status: anyio.abc.TaskStatus[None]) -> None:
            api = await emulator.api_client(candidate.identity)
            lock = LeaseLock(LOCK, NAMESPACE, identity=candidate.identity, api_client=api)
            with candidate.scope:
                async with anyio.create_task_group() as tg:
                    leadership: Leadership = await tg.start(
                        lambda task_status: campaign(
                            lock,
                            timing=timing,
                            release_on_cancel=candidate.identity != pool[0].identity,
                            task_status=task_status,
                        )
                    )
                    candidate.leadership = leadership
                    task_status.started()
                    while True:
                        async with leadership.leading() as term:
                            say(
                                f"{candidate.identity} is leading "
                                f"(fencing token {term.fencing_token})"
                            )
                            await anyio.sleep(math.inf)  # the leader-only work

        def leader() -> _Candidate | None:
            for c in pool:
                if c.leadership is not None and c.leadership.is_leader_nowait():
                    return c
            return None

        async def next_leader(old: _Candidate) -> tuple[_Candidate, float]:
            start = anyio.current_time()
            while True:
                current = leader()
                if current is not None and current is not old:
                    return current, anyio.current_time() - start
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            say(
                f"{', '.join(c.identity for c in pool)} campaign for the Lease "
                f"{NAMESPACE}/{LOCK} ({pool[0].identity} starts first)"
            )
            await tg.start(run, pool[0])
            await next_leader(_Candidate("nobody"))
            for c in pool[1:]:
                await tg.start(run, c)
            first = leader()
            assert first is not None
            await anyio.sleep(2 * timing.retry_period)

            say(f"killing {first.identity} (no release: it just vanishes)")
            first.scope.cancel()
            second, took = await next_leader(first)
            results["crash"] = took
            say(
                f"{second.identity} took over {took:.2f}s after the crash "
                f"(lease duration {timing.lease_duration:g}s)"
            )
            await anyio.sleep(2 * timing.retry_period)

            say(f"stopping {second.identity} gracefully (leader work cancelled, lock released)")
            second.scope.cancel()
            third, took = await next_leader(second)
            results["graceful"] = took
            say(f"{third.identity} took over {took:.2f}s after the release")

            lease = emulator.get_object("leases", NAMESPACE, LOCK)
            if lease is not None:
                spec = lease.get("spec") or {}
                say(
                    f"Lease {NAMESPACE}/{LOCK}: holderIdentity={spec.get('holderIdentity')!r} "
                    f"leaseTransitions={spec.get('leaseTransitions')} "
                    f"renewTime={spec.get('renewTime')} "
                    f"resourceVersion={lease['metadata']['resourceVersion']}"
                )
            tg.cancel_scope.cancel()
    print(
        f"\nfailover after a crash: {results['crash']:.2f}s (the others wait the lease "
        f"duration, {timing.lease_duration:g}s, from the last renewal they saw)\n"
        f"handover after a graceful release: {results['graceful']:.2f}s (followers watch the "
        "lock, so they see the release at once)",
        file=out,
    )
    return results
