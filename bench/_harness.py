"""The measurements behind ``bench/run.py``: aioleader and kubernetes_asyncio's elector, side by side.

Everything here drives both implementations through their public APIs only:

* aioleader: ``elect(LeaseLock(...), timing=..., release_on_cancel=..., on_started_leading=...)``
  — whatever the elector does when run (watching followers, polling, ...) is what is measured;
* kubernetes_asyncio: ``LeaderElection(Config(LeaseLock(...), ...)).run()``, as its docs show.

Each candidate has an ``ApiClient`` of its own. On the emulator every candidate also has an
endpoint (a port) of its own, so the emulator's request log tells whose request each one was; the
emulator runs in a separate process (:mod:`bench._emuproc`) so that the API server's CPU time is
not the electors'. On a real cluster (``--kubeconfig``) the same log is kept on the client side,
by wrapping each ``ApiClient``'s REST call.

Times are ``anyio.current_time()``, which on asyncio is ``time.monotonic()``, CLOCK_MONOTONIC on
Linux: one clock for the benchmark, the emulator process (whose request log uses its loop's
clock) and the scale workers.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import ssl
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from aioleader import Leadership, Term, Timing, elect
from aioleader.kubernetes import LeaseLock

from ._scale import percentile

__all__ = [
    "ClusterBackend",
    "EmulatorBackend",
    "EmulatorProcess",
    "LatencyResult",
    "RateResult",
    "Req",
    "ScaleResult",
    "measure_crash",
    "measure_handover",
    "measure_steady",
    "run_scale",
]

REPO = Path(__file__).resolve().parent.parent
Impl = Literal["aioleader", "kubernetes_asyncio"]
IMPLS: tuple[Impl, ...] = ("aioleader", "kubernetes_asyncio")
WRITE_VERBS = frozenset({"update", "create"})
# Verbs as the table shows them (HTTP method, or LIST/WATCH for collection reads).
VERB_LABELS = {
    "get": "GET",
    "update": "PUT",
    "create": "POST",
    "list": "LIST",
    "watch": "WATCH",
    "patch": "PATCH",
    "delete": "DELETE",
}


def verb_label(r: Req) -> str:
    """``GET``, ``PUT``, ``LIST``, ``WATCH`` ... for the lease; other resources are named."""
    label = VERB_LABELS.get(r.verb, r.verb.upper())
    return label if r.resource in ("leases", "") else f"{label} {r.resource}"


class BenchError(Exception):
    """A measurement could not be taken (no leader emerged in time, a worker failed, ...)."""


def subprocess_env() -> dict[str, str]:
    """The environment of our child processes: the repo importable, no proxy for the emulator."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
    hosts = [h for h in env.get("NO_PROXY", "").split(",") if h]
    hosts += [h for h in ("127.0.0.1", "localhost") if h not in hosts]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# -- the request log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """One API request: whose, which verb (``get``/``list``/``watch``/``create``/``update``...)
    on which resource (``leases``, ``events``, ...), the HTTP status (0: no reply), and when it
    started and ended (for a watch: when its stream started)."""

    client: str
    verb: str
    resource: str
    status: int
    start: float
    end: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Backend(Protocol):
    """Where the candidates' requests go, and where their request log comes from."""

    namespace: str
    kind: str

    async def api_client(self, client: str) -> Any:
        """A kubernetes_asyncio ``ApiClient`` whose requests are logged under ``client``."""
        ...

    async def requests(self, since: float, clients: Sequence[str] | None = None) -> list[Req]:
        """Requests (of ``clients``, or everyone's) that ended at or after ``since``."""
        ...

    def worker_target(self) -> list[str]:
        """``bench._scale`` arguments that point a worker at the same API server."""
        ...

    async def aclose(self) -> None: ...


class EmulatorProcess:
    """``python -m bench._emuproc`` as a child process, driven over its stdin/stdout."""

    def __init__(
        self,
        *,
        cpus: Sequence[int] = (),
        log: IO[bytes] | None = None,
        bookmark_interval: float = 60.0,
    ) -> None:
        self.cpus = tuple(cpus)
        self.bookmark_interval = bookmark_interval
        self._log = log
        self._process: anyio.abc.Process | None = None
        self._stdout: BufferedByteReceiveStream | None = None
        self._lock = anyio.Lock()
        self.url = ""
        self.pid = 0

    async def start(self) -> None:
        argv = [sys.executable, "-m", "bench._emuproc"]
        argv += ["--bookmark-interval", str(self.bookmark_interval)]
        if self.cpus:
            argv += ["--cpus", ",".join(map(str, self.cpus))]
        self._process = await anyio.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            cwd=REPO,
            env=subprocess_env(),
        )
        assert self._process.stdout is not None
        self._stdout = BufferedByteReceiveStream(self._process.stdout)
        with anyio.fail_after(30):
            hello = json.loads(await self._stdout.receive_until(b"\n", 1 << 16))
        self.url, self.pid = str(hello["url"]), int(hello["pid"])

    async def command(self, op: str, **arguments: Any) -> dict[str, Any]:
        if self._process is None or self._stdout is None or self._process.stdin is None:
            raise BenchError("the emulator process is not running")
        async with self._lock:
            line = json.dumps({"op": op, **arguments}).encode() + b"\n"
            with anyio.fail_after(60):
                await self._process.stdin.send(line)
                reply: dict[str, Any] = json.loads(await self._stdout.receive_until(b"\n", 1 << 30))
        if "error" in reply:
            raise BenchError(f"emulator: {reply['error']}")
        return reply

    async def aclose(self) -> None:
        """Ask it to stop; terminate, then kill it if it does not within a few seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                if process.stdin is not None:
                    with anyio.move_on_after(2):
                        await process.stdin.send(b'{"op":"quit"}\n')
                    await process.stdin.aclose()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


class _SharedSSLContext:
    """Stands in for the ``ssl`` module while a plain-HTTP ``ApiClient`` is built."""

    def __init__(self) -> None:
        self._context: ssl.SSLContext | None = None

    def create_default_context(self, *args: Any, **kwargs: Any) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context(*args, **kwargs)
        return self._context

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)


_SHARED_SSL = _SharedSSLContext()


def http_api_client(url: str) -> Any:
    """A kubernetes_asyncio ``ApiClient`` for a plain-HTTP server, built without its own SSL
    context.

    kubernetes_asyncio builds an SSL context for every ``ApiClient`` (loading the CA store:
    about 35 ms of blocking CPU here), even for ``http://``, where it is never used. A service
    does that once at start-up; the benchmark builds a client for every replacement candidate,
    and those 35 ms would stall the event loop in the middle of other leases' measurements. So
    the emulator's clients share one context (the swap is synchronous: no other task runs while
    the client is built)."""
    from kubernetes_asyncio.client import ApiClient, Configuration

    rest: Any = importlib.import_module("kubernetes_asyncio.client.rest")
    real = rest.ssl
    rest.ssl = _SHARED_SSL
    try:
        return ApiClient(Configuration(host=url))
    finally:
        rest.ssl = real


class EmulatorBackend:
    """Candidates on the emulator process, each on an endpoint (port) of its own."""

    kind = "emulator"

    def __init__(self, emulator: EmulatorProcess, namespace: str = "default") -> None:
        self.emulator = emulator
        self.namespace = namespace
        self._clients: list[Any] = []

    async def api_client(self, client: str) -> Any:
        url = (await self.emulator.command("endpoint", client=client))["url"]
        api = http_api_client(url)
        self._clients.append(api)
        return api

    async def requests(self, since: float, clients: Sequence[str] | None = None) -> list[Req]:
        # Filtered there: decoding everyone's requests here would stall the event loop (and
        # whatever another lease is measuring) for tens of milliseconds.
        arguments: dict[str, Any] = {"since": since}
        if clients is not None:
            arguments["clients"] = list(clients)
        rows = (await self.emulator.command("requests", **arguments))["records"]
        return [
            Req(str(c), str(v), str(r), int(s), float(a), float(b)) for c, v, r, s, a, b in rows
        ]

    def worker_target(self) -> list[str]:
        return ["--host", self.emulator.url]

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        with anyio.CancelScope(shield=True):
            for api in clients:
                await api.close()


class ClusterBackend:
    """Candidates on a real cluster (a kubeconfig); requests logged on the client side."""

    kind = "cluster"

    def __init__(self, kubeconfig: str, namespace: str = "default") -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self._log: list[Req] = []
        self._clients: list[Any] = []

    async def api_client(self, client: str) -> Any:
        from kubernetes_asyncio import config
        from kubernetes_asyncio.client import ApiClient, Configuration

        configuration = Configuration()
        await config.load_kube_config(
            config_file=self.kubeconfig, client_configuration=configuration
        )
        api = ApiClient(configuration)
        _record_requests(api, client, self._log)
        self._clients.append(api)
        return api

    async def requests(self, since: float, clients: Sequence[str] | None = None) -> list[Req]:
        await anyio.lowlevel.checkpoint()
        wanted = None if clients is None else set(clients)
        return [r for r in self._log if r.end >= since and (wanted is None or r.client in wanted)]

    def worker_target(self) -> list[str]:
        return ["--kubeconfig", self.kubeconfig]

    async def delete_leases(self, prefix: str) -> int:
        """Delete the Leases whose names start with ``prefix`` (what the benchmark created)."""
        from kubernetes_asyncio.client import CoordinationV1Api

        api = await self.api_client("cleanup")
        leases: Any = CoordinationV1Api(api)
        listed = await leases.list_namespaced_lease(self.namespace)
        deleted = 0
        for lease in listed.items:
            if lease.metadata.name.startswith(prefix):
                await leases.delete_namespaced_lease(lease.metadata.name, self.namespace)
                deleted += 1
        return deleted

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        with anyio.CancelScope(shield=True):
            for api in clients:
                await api.close()


_RESOURCES = ("leases", "events", "configmaps", "endpoints")


def _classify(method: str, url: str, query: Any) -> tuple[str, str]:
    """(verb, resource) of a REST call, as the emulator's log names them."""
    params = dict(query or ())
    parts = url.split("?", 1)[0].rstrip("/").split("/")
    collection = parts[-1] in _RESOURCES
    resource = parts[-1] if collection else (parts[-2] if len(parts) > 1 else "")
    method = method.upper()
    if method == "GET":
        if str(params.get("watch", "")).lower() == "true" or "watch" in parts:
            return "watch", resource
        return ("list" if collection else "get"), resource
    verbs = {"PUT": "update", "POST": "create", "PATCH": "patch", "DELETE": "delete"}
    return verbs.get(method, method.lower()), resource


def _record_requests(api: Any, client: str, log: list[Req]) -> None:
    """Log every request of ``api`` (a real cluster has no emulator log to read)."""
    rest = api.rest_client
    send = rest.request

    async def request(method: str, url: str, query_params: Any = None, **kwargs: Any) -> Any:
        verb, resource = _classify(method, url, query_params)
        start = anyio.current_time()
        status = 0
        try:
            response = await send(method, url, query_params=query_params, **kwargs)
            status = int(getattr(response, "status", 0) or 0)
            return response
        except Exception as exc:
            status = int(getattr(exc, "status", 0) or 0)
            raise
        finally:
            log.append(Req(client, verb, resource, status, start, anyio.current_time()))

    rest.request = request


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


# -- latency ---------------------------------------------------------------------------------------


@dataclass
class LatencyResult:
    """Latency samples of one implementation and scenario, in seconds.

    ``values``: the headline figure of each sample (graceful: stop requested → another candidate
    leads; crash: new leader − last successful renewal − lease duration). ``secondary``: graceful:
    release written → new leader; crash: stop → new leader. ``failures``: samples in which no new
    leader emerged within the bound.
    """

    impl: Impl
    scenario: Literal["graceful", "crash"]
    timing: tuple[float, float, float]
    values: list[float] = field(default_factory=list)
    secondary: list[float] = field(default_factory=list)
    failures: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    def p(self, q: float, secondary: bool = False) -> float | None:
        return percentile(self.secondary if secondary else self.values, q)


def _timing_tuple(timing: Timing) -> tuple[float, float, float]:
    return (timing.lease_duration, timing.renew_deadline, timing.retry_period)


def _last_write(records: list[Req], client: str, before: float) -> float | None:
    """When ``client``'s last successful write of the lease (not of an Event) was answered."""
    ends = [
        r.end
        for r in records
        if r.client == client
        and r.resource == "leases"
        and r.verb in WRITE_VERBS
        and r.ok
        and r.end <= before
    ]
    return max(ends) if ends else None


async def _failovers(
    backend: Backend,
    impl: Impl,
    scenario: Literal["graceful", "crash"],
    *,
    samples: int,
    timing: Timing,
    lanes: int,
    prefix: str,
    seed: object,
    progress: Callable[[str], None] | None,
) -> LatencyResult:
    """Stop the leader of a lane of three candidates, time the takeover, replace the stopped
    candidate, repeat; ``lanes`` leases at once, each sample after a random pause (so that the stop
    falls at a random phase of the renew period)."""
    result = LatencyResult(impl, scenario, _timing_tuple(timing))
    bound = timing.lease_duration + timing.renew_deadline + 4 * timing.retry_period + 5
    lanes = max(1, min(lanes, samples))
    remaining = samples
    taken = 0

    async def lane_loop(index: int, tg: anyio.abc.TaskGroup) -> None:
        nonlocal remaining, taken
        rng = random.Random(f"{seed}:{impl}:{scenario}:{index}")
        lane = Lane(
            backend,
            impl,
            f"{prefix}-{scenario[:2]}-{impl[:3]}-{index}",
            timing,
            tg,
            release=scenario == "graceful",
            # A takeover after a release does not depend on the candidates' renew phases.
            start_jitter=timing.retry_period if scenario == "crash" else 0.0,
            seed=seed,
        )
        try:
            await lane.fill()
            while remaining > 0:
                remaining -= 1
                leader = await lane.settled(bound)
                await anyio.sleep(rng.uniform(0.3, 0.3 + timing.retry_period))
                if lane.leaders() != [leader]:
                    remaining += 1  # changed under us (should not happen): sample again
                    continue
                stopped_at = anyio.current_time()
                await lane.stop(leader)
                new_at = await lane.next_leader(leader, stopped_at, bound)
                if new_at is None:
                    result.failures += 1
                else:
                    records = await backend.requests(leader.started_at, [leader.client])
                    written = _last_write(records, leader.client, new_at)
                    if written is None:
                        result.notes.append(f"{leader.identity}: no successful write logged")
                    elif scenario == "graceful":
                        result.values.append(new_at - stopped_at)
                        if written >= stopped_at:  # the release
                            result.secondary.append(new_at - written)
                    else:
                        result.values.append(new_at - written - timing.lease_duration)
                        result.secondary.append(new_at - stopped_at)
                taken += 1
                if progress is not None and taken % max(1, samples // 5) == 0:
                    progress(f"{scenario} {impl} {result.timing}: {taken}/{samples}")
                await lane.fill()
        finally:
            await lane.aclose()

    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as lanes_tg:
            for index in range(lanes):
                lanes_tg.start_soon(lane_loop, index, tg)
                # Stagger the lanes, so that their stops and takeovers rarely coincide.
                await anyio.sleep(timing.retry_period / lanes)
        tg.cancel_scope.cancel()
    return result


async def measure_handover(
    backend: Backend,
    *,
    samples: int,
    timing: Timing,
    prefix: str,
    lanes: int = 1,
    seed: object = 0,
    progress: Callable[[str], None] | None = None,
) -> LatencyResult:
    """aioleader's graceful handover: the leader leaves ``elect()`` (``release_on_cancel``, the
    default) and another of three candidates takes over. ``values``: stop requested → another
    candidate leads; ``secondary``: release written (as the server logged it) → another leads.

    kubernetes_asyncio's elector has no release: stopping its leader is a crash failover."""
    return await _failovers(
        backend,
        "aioleader",
        "graceful",
        samples=samples,
        timing=timing,
        lanes=lanes,
        prefix=prefix,
        seed=seed,
        progress=progress,
    )


async def measure_crash(
    backend: Backend,
    impl: Impl,
    *,
    samples: int,
    timing: Timing,
    lanes: int,
    prefix: str,
    seed: object = 0,
    progress: Callable[[str], None] | None = None,
) -> LatencyResult:
    """Crash failover: the leader stops without a release (aioleader: ``release_on_cancel=False``;
    kubernetes_asyncio has no release at all). ``values``: new leader − the old leader's last
    successful renewal (as the server logged it) − lease duration; ``secondary``: stop → new
    leader."""
    return await _failovers(
        backend,
        impl,
        "crash",
        samples=samples,
        timing=timing,
        lanes=lanes,
        prefix=prefix,
        seed=seed,
        progress=progress,
    )


# -- steady-state request rates --------------------------------------------------------------------


@dataclass
class RateResult:
    """Requests per minute in steady state, by role and verb (``GET``/``PUT``/``LIST``/...).

    ``follower`` is the mean over the followers. ``leader_changes`` should be 0 (else the window
    was not steady).
    """

    impl: Impl
    timing: tuple[float, float, float]
    window_s: float
    followers: int
    leader: dict[str, float] = field(default_factory=dict)
    follower: dict[str, float] = field(default_factory=dict)
    leader_changes: int = 0
    errors: int = 0

    def total(self, role: Literal["leader", "follower"]) -> float:
        return sum((self.leader if role == "leader" else self.follower).values())


async def measure_steady(
    backend: Backend,
    impls: Sequence[Impl],
    *,
    timing: Timing,
    window: float,
    prefix: str,
    candidates: int = 3,
    warmup: float | None = None,
) -> list[RateResult]:
    """``candidates`` candidates of each implementation on a lease of its own (concurrently), then
    every request that started within a window of ``window`` seconds, per role and verb."""
    warmup = 3 * timing.retry_period + 1 if warmup is None else warmup
    bound = timing.lease_duration + timing.renew_deadline + 10
    results: list[RateResult] = []
    async with anyio.create_task_group() as tg:
        lanes = [
            Lane(
                backend,
                impl,
                f"{prefix}-steady-{impl[:3]}",
                timing,
                tg,
                release=True,
                start_jitter=timing.retry_period,
            )
            for impl in impls
        ]
        try:
            for lane in lanes:
                lane.size = candidates
                await lane.fill()
            leaders = [await lane.settled(bound) for lane in lanes]
            await anyio.sleep(warmup)
            begin = anyio.current_time()
            await anyio.sleep(window)
            end = anyio.current_time()
            clients = [c.client for lane in lanes for c in lane.alive]
            records = [r for r in await backend.requests(begin, clients) if begin <= r.start < end]
            for lane, leader in zip(lanes, leaders, strict=True):
                result = RateResult(
                    lane.impl, _timing_tuple(timing), end - begin, followers=len(lane.alive) - 1
                )
                if not leader.leading:
                    result.leader_changes += 1
                per_minute = 60.0 / (end - begin)
                mine = {c.client for c in lane.alive}
                counts: dict[str, Counter[str]] = {c.client: Counter() for c in lane.alive}
                for r in records:
                    if r.client in mine:
                        counts[r.client][verb_label(r)] += 1
                        result.errors += 0 if r.ok else 1
                result.leader = {v: n * per_minute for v, n in counts[leader.client].items()}
                follower_total: Counter[str] = Counter()
                for c in lane.alive:
                    if c is not leader:
                        follower_total.update(counts[c.client])
                result.follower = {
                    v: n * per_minute / max(1, result.followers) for v, n in follower_total.items()
                }
                result.leader_changes += sum(
                    1 for c in lane.alive for t in c.lead_starts if begin <= t < end
                )
                results.append(result)
        finally:
            for lane in lanes:
                await lane.aclose()
    return results


# -- leases per process ----------------------------------------------------------------------------


@dataclass
class ScaleResult:
    """One ``bench._scale`` run: ``leases`` single-candidate elections in one process."""

    impl: Impl
    leases: int
    ok: bool
    problem: str | None
    figures: dict[str, Any]
    emulator_cpu_util: float | None = None

    def get(self, key: str) -> Any:
        return self.figures.get(key)

    @property
    def cpu_util(self) -> float | None:
        cpu, window = self.get("cpu_s"), self.get("window_s")
        return None if cpu is None or not window else float(cpu) / float(window)

    @property
    def cpu_per_renewal(self) -> float | None:
        cpu, renewals = self.get("cpu_s"), self.get("renewals")
        return None if cpu is None or not renewals else float(cpu) / float(renewals)

    @property
    def memory_per_lease(self) -> float | None:
        before, after = self.get("rss_before"), self.get("rss_after")
        if before is None or after is None or not self.leases:
            return None
        return (float(after) - float(before)) / self.leases

    @property
    def missed(self) -> int:
        return int(self.get("ended_in_ramp") or 0) + int(self.get("ended_in_window") or 0)


def _judge(figures: dict[str, Any], leases: int, timing: Timing) -> str | None:
    """Why a size failed the "holds N leases without a missed renewal" bar, or None.

    A renewal is missed when a term is lost (aioleader ends a term whose renewal missed the
    renew deadline) or when a lease goes longer than the renew deadline without a successful
    renewal (kubernetes_asyncio's elector never bounds a request, so it keeps "leading" however
    late its renewals are; a lease not renewed for LD is up for grabs by anyone else)."""
    if figures.get("leading_at_start", 0) < leases:
        return f"only {figures.get('leading_at_start', 0)}/{leases} leases acquired in the ramp"
    lost = int(figures.get("ended_in_ramp", 0)) + int(figures.get("ended_in_window", 0))
    if lost:
        return f"{lost} term(s) lost (renewal missed the deadline, or lease lost)"
    late, gap = int(figures.get("gaps_over_rd", 0)), figures.get("max_gap")
    if late:
        beyond_ld = int(figures.get("gaps_over_ld", 0))
        return (
            f"{late} time(s) a lease went more than RD ({timing.renew_deadline:g} s) without a "
            f"renewal, {beyond_ld} of them more than LD ({timing.lease_duration:g} s); "
            f"longest {gap:.1f} s"
        )
    if figures.get("leading_at_end", 0) < leases:
        return f"only {figures.get('leading_at_end', 0)}/{leases} leases held at the end"
    return None


async def run_scale(
    backend: Backend,
    impl: Impl,
    leases: int,
    *,
    duration: float,
    timing: Timing,
    prefix: str,
    cpus: Sequence[int] = (),
    ramp_timeout: float = 60.0,
    pool: int = 0,
    emulator: EmulatorProcess | None = None,
    log: IO[bytes] | None = None,
) -> ScaleResult:
    """Run ``leases`` elections of ``impl`` in a fresh process (``bench._scale``), pinned to
    ``cpus``, sharing one ``ApiClient`` with a pool of ``pool`` connections (0: the client's
    default, 100); read the emulator's CPU time over the worker's steady window."""
    argv = [sys.executable, "-m", "bench._scale", "--impl", impl, "--leases", str(leases)]
    argv += ["--duration", str(duration), "--ramp-timeout", str(ramp_timeout)]
    argv += ["--timing", f"{timing.lease_duration},{timing.renew_deadline},{timing.retry_period}"]
    argv += ["--namespace", backend.namespace, "--prefix", prefix, *backend.worker_target()]
    argv += ["--pool", str(pool)]
    if cpus:
        argv += ["--cpus", ",".join(map(str, cpus))]
    figures: dict[str, Any] = {}
    emu_cpu: list[float] = []
    emu_wall: list[float] = []
    bound = ramp_timeout + duration + 60
    process = await anyio.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        cwd=REPO,
        env=subprocess_env(),
    )
    try:
        assert process.stdout is not None
        stream = BufferedByteReceiveStream(process.stdout)
        with anyio.move_on_after(bound):
            while True:
                try:
                    line = await stream.receive_until(b"\n", 1 << 20)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    break
                event = json.loads(line)
                if event.get("event") in ("window-start", "window-end") and emulator is not None:
                    emu_cpu.append(float((await emulator.command("stats"))["cpu"]))
                    emu_wall.append(anyio.current_time())
                elif event.get("event") == "result":
                    figures = {k: v for k, v in event.items() if k != "event"}
                    break
        with anyio.move_on_after(15):
            await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()
    if not figures:
        failure = f"the worker gave no result within {bound:g} s (exit {process.returncode})"
        return ScaleResult(impl, leases, False, failure, {})
    util = None
    if len(emu_cpu) == 2 and emu_wall[1] > emu_wall[0]:
        util = (emu_cpu[1] - emu_cpu[0]) / (emu_wall[1] - emu_wall[0])
    problem = _judge(figures, leases, timing)
    if problem is not None and util is not None and util > 0.9:
        problem += f" (the emulator used {util:.0%} of its core: the API server was a limit too)"
    return ScaleResult(impl, leases, problem is None, problem, figures, util)


def run_id() -> str:
    """A short random tag for lease names, so that runs never share a lease."""
    return uuid.uuid4().hex[:6]


def summarize(values: Sequence[float]) -> str:
    """``p50 / p99 (n)`` in milliseconds, for logs."""
    if not values:
        return "no samples"
    p50, p99 = percentile(list(values), 0.5), percentile(list(values), 0.99)
    assert p50 is not None
    assert p99 is not None
    return f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (n={len(values)})"


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
