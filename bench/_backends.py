"""Where the benchmark runs and what it counts: the API server (the emulator in a process of its
own, or a real cluster through ``--kubeconfig``), one ``ApiClient`` per candidate, and the
request log (the emulator's per-client log, or one kept on the client side on a cluster).

Times are ``anyio.current_time()``, which on asyncio is ``time.monotonic()``, CLOCK_MONOTONIC on
Linux: one clock for the benchmark, the emulator process (whose request log uses its loop's
clock) and the scale workers.
"""

from __future__ import annotations

import importlib
import json
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

REPO = Path(__file__).resolve().parent.parent
Impl = Literal["aioleader", "kubernetes_asyncio"]
IMPLS: tuple[Impl, ...] = ("aioleader", "kubernetes_asyncio")
WRITE_VERBS = frozenset({"update", "create", "patch"})  # patch: a watched lock taken
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


def run_id() -> str:
    """A short random tag for lease names, so that runs never share a lease."""
    return uuid.uuid4().hex[:6]
