"""The application examples (FastAPI, aiohttp, kopf, a worker, several elections) and the deploy
manifests, run against the emulator with short real-time timings."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from asgi_lifespan import LifespanManager
from kubernetes_asyncio.client import CoordinationV1Api, CoreV1Api, V1ConfigMap, V1ObjectMeta

from aioleader import Leadership, Timing, elect
from aioleader.kubernetes import LeaseLock
from aioleader.testing import KubeEmulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEPLOY = EXAMPLES / "deploy"

# LD 2 s, RD 1.5 s, RP 0.25 s: a crashed or cut-off leader is replaced in about 2 s.
TIMING = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.25)

pytestmark = pytest.mark.emulator_only


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses and pydantic resolve the module's annotations.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def holder(emu: KubeEmulator, name: str, namespace: str = "default") -> str | None:
    lease = emu.get_object("leases", namespace, name)
    return None if lease is None else lease["spec"].get("holderIdentity")


# -- FastAPI ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fastapi_app_runs_its_scheduler_on_the_leader_only(emulator: KubeEmulator) -> None:
    fastapi_app = load_example("fastapi_app")
    names = ("app-a", "app-b")
    stacks = {name: AsyncExitStack() for name in names}
    clients: dict[str, httpx.AsyncClient] = {}

    async def status(name: str) -> dict[str, Any]:
        response = await clients[name].get("/leader")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    try:
        for name in names:
            app = fastapi_app.create_app(
                api_client=await emulator.api_client(name),
                identity=name,
                timing=TIMING,
                interval=0.05,
            )
            manager = await stacks[name].enter_async_context(LifespanManager(app))
            clients[name] = await stacks[name].enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
                )
            )

        # Exactly one leads, and both agree on who.
        with anyio.fail_after(5):
            while True:
                views = {name: await status(name) for name in names}
                if all(view["leader"] for view in views.values()):
                    break
                await anyio.sleep(0.05)
        leader = views["app-a"]["leader"]
        follower = next(name for name in names if name != leader)
        assert views[follower]["leader"] == leader
        assert [name for name in names if views[name]["is_leader"]] == [leader]

        # Only the leader's scheduler runs.
        with anyio.fail_after(5):
            while (await status(leader))["scheduler_runs"] < 3:
                await anyio.sleep(0.05)
        assert (await status(leader))["fencing_token"] == 0
        assert (await status(follower))["scheduler_runs"] == 0
        assert (await status(follower))["fencing_token"] is None
        for name in names:
            response = await clients[name].get("/healthz")
            assert (response.status_code, response.text) == (200, "ok")
            assert (await clients[name].get("/readyz")).status_code == 200

        # Stopping the leader's app releases the Lease: the other takes over at once (well
        # before the lease duration) and its scheduler starts.
        await stacks[leader].aclose()
        stopped = anyio.current_time()
        assert holder(emulator, fastapi_app.LOCK_NAME) in ("", follower)
        with anyio.fail_after(5):
            while not (await status(follower))["is_leader"]:
                await anyio.sleep(0.02)
        assert anyio.current_time() - stopped < TIMING.lease_duration
        with anyio.fail_after(5):
            while (await status(follower))["scheduler_runs"] < 3:
                await anyio.sleep(0.05)
        assert (await status(follower))["fencing_token"] == 1
        assert holder(emulator, fastapi_app.LOCK_NAME) == follower
        assert (await clients[follower].get("/healthz")).status_code == 200
    finally:
        for stack in stacks.values():
            await stack.aclose()


# -- aiohttp ---------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aiohttp_app_runs_its_task_on_the_leader_only(emulator: KubeEmulator) -> None:
    aiohttp_app = load_example("aiohttp_app")
    names = ("web-a", "web-b")
    stacks = {name: AsyncExitStack() for name in names}
    clients: dict[str, TestClient[Any, Any]] = {}

    async def status(name: str) -> dict[str, Any]:
        response = await clients[name].get("/leader")
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body

    try:
        for name in names:
            app = aiohttp_app.create_app(
                api_client=await emulator.api_client(name),
                identity=name,
                timing=TIMING,
                interval=0.05,
            )
            # A real server on 127.0.0.1, on a free port; cleanup_ctx runs on start and close.
            clients[name] = await stacks[name].enter_async_context(TestClient(TestServer(app)))

        await eventually(lambda: holder(emulator, aiohttp_app.LOCK_NAME))
        leader = holder(emulator, aiohttp_app.LOCK_NAME)
        assert leader in names
        follower = next(name for name in names if name != leader)
        with anyio.fail_after(5):
            while (await status(leader))["runs"] < 3 or (await status(follower))["leader"] is None:
                await anyio.sleep(0.05)
        assert (await status(leader))["is_leader"] is True
        follower_view = await status(follower)
        assert (follower_view["is_leader"], follower_view["leader"]) == (False, leader)
        assert follower_view["runs"] == 0
        for name in names:
            response = await clients[name].get("/healthz")
            assert (response.status, await response.text()) == (200, "ok")

        # Closing the leader's app runs the cleanup context: the task stops, the Lease is
        # released, and the other replica takes over well before the lease duration.
        await stacks[leader].aclose()
        stopped = anyio.current_time()
        with anyio.fail_after(5):
            while (await status(follower))["runs"] < 3:
                await anyio.sleep(0.02)
        assert holder(emulator, aiohttp_app.LOCK_NAME) == follower
        assert anyio.current_time() - stopped < TIMING.lease_duration + 0.5
        assert (await clients[follower].get("/healthz")).status == 200
    finally:
        for stack in stacks.values():
            await stack.aclose()


# -- worker ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_worker_loses_a_partition_then_leads_again_with_a_higher_token(
    emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    worker = load_example("worker")
    caplog.set_level("INFO", logger="worker")
    store = worker.FencedStore()
    stops = {name: anyio.Event() for name in ("worker-a", "worker-b")}
    reports: dict[str, list[Any]] = {}

    async def run(name: str) -> None:
        reports[name] = await worker.main(
            api_client=await emulator.api_client(name),
            identity=name,
            timing=TIMING,
            store=store,
            interval=0.05,
            stop=stops[name],
        )

    def writers() -> list[tuple[str, int]]:
        return [(write.writer, write.fencing_token) for write in store.writes]

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "worker-a")
        await eventually(lambda: ("worker-a", 0) in writers())
        tg.start_soon(run, "worker-b")
        await anyio.sleep(0.5)
        assert {writer for writer, _ in writers()} == {"worker-a"}

        # Cut worker-a off: its renewals hang, its term ends at the renew deadline (its work
        # is cancelled), and worker-b takes over once the lease has expired.
        emulator.faults("worker-a").partition("blackhole")
        await eventually(lambda: holder(emulator, worker.LOCK_NAME) == "worker-b", timeout=6)
        await eventually(lambda: ("worker-b", 1) in writers())

        # Healed, worker-a reads (or watches) the Lease again and stays a follower while
        # worker-b renews.
        emulator.faults("worker-a").heal()
        healed = len(emulator.requests)
        await anyio.sleep(1.0)
        reads = [
            r
            for r in emulator.requests[healed:]
            if r.client == "worker-a" and r.verb in ("get", "list", "watch") and r.status == 200
        ]
        assert reads, "worker-a did not campaign again after the partition healed"
        assert holder(emulator, worker.LOCK_NAME) == "worker-b"

        # worker-b stops (and releases): worker-a leads again, in a new term with a new token.
        stops["worker-b"].set()
        await eventually(lambda: ("worker-a", 2) in writers())
        stops["worker-a"].set()

    a_terms = [(r.number, r.fencing_token, r.end_reason) for r in reports["worker-a"]]
    b_terms = [(r.number, r.fencing_token, r.end_reason) for r in reports["worker-b"]]
    assert a_terms == [(1, 0, "deadline"), (2, 2, "stopped")]
    assert b_terms == [(1, 1, "stopped")]
    assert all(r.writes > 0 for r in reports["worker-a"] + reports["worker-b"])
    # The store saw the tokens in order: no write of an old term after a newer one.
    tokens = [token for _, token in writers()]
    assert tokens == sorted(tokens)
    messages = [record.getMessage() for record in caplog.records if record.name == "worker"]
    assert "leading (fencing token 0)" in messages
    assert "leading (fencing token 2)" in messages
    assert any(m.startswith("stopped leading (fencing token 0: deadline)") for m in messages)
    assert holder(emulator, worker.LOCK_NAME) == ""


# -- several elections -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_multiple_elections_lead_and_release_independently(emulator: KubeEmulator) -> None:
    multiple = load_example("multiple_elections")
    timings = {
        "scheduler": TIMING,
        "cleanup": Timing(lease_duration=3, renew_deadline=2, retry_period=0.5),
    }

    def elections() -> dict[str, Any]:
        return {
            name: multiple.Election(name, timings[name], job, interval=0.05)
            for name, job in (
                ("scheduler", multiple.schedule_reports),
                ("cleanup", multiple.delete_orphans),
            )
        }

    replicas = {name: elections() for name in ("pod-a", "pod-b")}
    leaderships: dict[str, Mapping[str, Leadership]] = {}
    stops = {name: anyio.Event() for name in replicas}

    async def run(name: str) -> None:
        await multiple.main(
            api_client=await emulator.api_client(name),  # one client for both locks
            identity=name,
            elections=replicas[name],
            stop=stops[name],
            started=lambda found: leaderships.__setitem__(name, found),
        )

    def runs(name: str) -> dict[str, int]:
        return {election: e.runs for election, e in replicas[name].items()}

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "pod-a")
        await eventually(lambda: min(runs("pod-a").values()) >= 3)
        tg.start_soon(run, "pod-b")
        await eventually(lambda: "pod-b" in leaderships)
        await eventually(
            lambda: all(lead.leader == "pod-a" for lead in leaderships["pod-b"].values())
        )
        assert runs("pod-b") == {"scheduler": 0, "cleanup": 0}
        for lock_name, timing in timings.items():
            lease = emulator.get_object("leases", "default", lock_name)
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "pod-a"
            assert lease["spec"]["leaseDurationSeconds"] == timing.lease_duration_seconds
        # Both of pod-a's locks went through its one client.
        assert {r.name for r in emulator.requests if r.client == "pod-a"} >= set(timings)

        # pod-a stops: both of its Leases are released and pod-b leads both elections.
        stops["pod-a"].set()
        await eventually(lambda: min(runs("pod-b").values()) >= 3)
        assert all(lead.is_leader_nowait() for lead in leaderships["pod-b"].values())
        assert all(not lead.is_leader_nowait() for lead in leaderships["pod-a"].values())
        stops["pod-b"].set()

    for lock_name in timings:
        assert holder(emulator, lock_name) == ""


# -- kopf ------------------------------------------------------------------------------------------

# kopf's namespace observer waits for ``namespaces`` to appear in the /api/v1 discovery document,
# even when it never lists them (scanning disabled, as in the example). Until the emulator lists
# that resource, the operator runs with kopf's discovery scan completed by this shim.
KOPF_DISCOVERY_SHIM = """
import runpy, sys
from kopf._cogs.clients import scanning
from kopf._cogs.structs import references

_scan = scanning.scan_resources

async def scan_resources(**kwargs):
    found = set(await _scan(**kwargs))
    if not any(r.group == "" and r.plural == "namespaces" for r in found):
        found.add(references.Resource(
            group="", version="v1", plural="namespaces", kind="Namespace", singular="namespace",
            namespaced=False, preferred=True, verbs=["get", "list", "watch"]))
    return found

scanning.scan_resources = scan_resources
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def write_kubeconfig(path: Path, server: str) -> None:
    """A kubeconfig (JSON is YAML) for one emulator endpoint."""
    name = "emulator"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {"token": "dummy"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(json.dumps(config))


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@asynccontextmanager
async def kopf_replica(
    emu: KubeEmulator, name: str, tmp_path: Path, *, shim: bool
) -> AsyncIterator[anyio.abc.Process]:
    """``python examples/kopf_operator.py`` as replica ``name``, talking to its own endpoint."""
    endpoint = await emu.endpoint(name)
    kubeconfig = tmp_path / f"{name}.kubeconfig"
    write_kubeconfig(kubeconfig, endpoint.url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    env.update(
        KUBECONFIG=str(kubeconfig),
        POD_NAME=name,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    script = [str(EXAMPLES / "kopf_operator.py"), "--namespace", "default"]
    script += ["--lease-duration", str(TIMING.lease_duration)]
    script += ["--renew-deadline", str(TIMING.renew_deadline)]
    script += ["--retry-period", str(TIMING.retry_period)]
    command = [sys.executable, *(["-c", KOPF_DISCOVERY_SHIM] if shim else []), *script]
    with (tmp_path / f"{name}.log").open("wb") as log:
        process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def terminate(process: anyio.abc.Process) -> tuple[int, float]:
    """SIGTERM, as the kubelet sends: the exit status, and how long the process took."""
    started = anyio.current_time()
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(10):
        status = await process.wait()
    return status, anyio.current_time() - started


@pytest.mark.asyncio
async def test_kopf_operator_replicas_reconcile_and_only_the_leader_writes(
    emulator: KubeEmulator, tmp_path: Path
) -> None:
    kopf_operator = load_example("kopf_operator")
    lock_name, summarize = kopf_operator.LOCK_NAME, kopf_operator.summarize
    core = CoreV1Api(await emulator.api_client("test"))
    discovery = await core.get_api_resources()
    shim = "namespaces" not in {resource.name for resource in discovery.resources}
    logs = {name: tmp_path / f"{name}.log" for name in ("op-a", "op-b", "op-c")}

    def annotations() -> Mapping[str, str]:
        cm = emulator.get_object("configmaps", "default", "app-settings")
        return {} if cm is None else cm["metadata"].get("annotations") or {}

    def watching(name: str) -> bool:
        return any(
            r.client == name and r.verb == "watch" and r.resource == "configmaps"
            for r in emulator.requests
        )

    async def summarized(data: Mapping[str, str], timeout: float = 5) -> str:
        """Wait for the summary of ``data``; return who wrote it (identity and fencing token)."""
        await eventually(
            lambda: annotations().get(kopf_operator.SUMMARY) == summarize(data), timeout
        )
        return annotations()[kopf_operator.WRITER]

    async with AsyncExitStack() as stack:
        processes: dict[str, anyio.abc.Process] = {}

        async def start(name: str) -> None:
            replica = kopf_replica(emulator, name, tmp_path, shim=shim)
            processes[name] = await stack.enter_async_context(replica)

        try:
            await start("op-a")
            await start("op-b")
            await eventually(lambda: watching("op-a") and watching("op-b"), timeout=20)
            await eventually(lambda: holder(emulator, lock_name) in processes)
            leader = holder(emulator, lock_name)
            assert leader is not None
            follower = next(name for name in processes if name != leader)

            # Both replicas reconcile the new ConfigMap; only the leader writes its summary.
            data = {"a": "1", "b": "2"}
            metadata = V1ObjectMeta(name="app-settings", labels={kopf_operator.LABEL: "true"})
            await core.create_namespaced_config_map(
                "default", V1ConfigMap(metadata=metadata, data=data)
            )
            assert await summarized(data) == f"{leader} 0"
            await eventually(
                lambda: (
                    f"default/app-settings: {summarize(data)} (not written here"
                    in read_log(logs[follower])
                )
            )

            # Cut the leader off, then change the data: the old leader never sees the change;
            # the follower takes over once the lease expires and catches up on it.
            emulator.faults(leader).partition("refuse")
            data["c"] = "3"
            await core.patch_namespaced_config_map("app-settings", "default", {"data": data})
            assert await summarized(data, timeout=8) == f"{follower} 1"
            emulator.faults(leader).heal()

            # The old leader, healed, follows again; SIGTERM stops it promptly (kopf runs in a
            # thread of its own, so it does not hold up the election's tasks as its own).
            healed = len(emulator.requests)
            await eventually(
                lambda: any(
                    r.client == leader and r.resource == "leases" and r.status == 200
                    for r in emulator.requests[healed:]
                )
            )
            status, took = await terminate(processes[leader])
            assert (status, holder(emulator, lock_name)) == (0, follower)
            assert took < 3

            # A new replica joins; SIGTERM the leader: kopf stops, the Lease is released, and
            # the newcomer leads at once, in a new term with a higher fencing token.
            await start("op-c")
            await eventually(lambda: watching("op-c"), timeout=20)
            status, took = await terminate(processes[follower])
            assert (status, took < 3) == (0, True)
            await eventually(lambda: holder(emulator, lock_name) == "op-c")
            data["d"] = "4"
            await core.patch_namespaced_config_map("app-settings", "default", {"data": data})
            assert await summarized(data) == "op-c 2"
            assert (await terminate(processes["op-c"]))[0] == 0
        except BaseException:
            for name, path in logs.items():
                print(f"---- {name} ----\n{read_log(path)}")
            raise

    # Every status write came from whichever replica led at the time, and kopf itself wrote
    # nothing on the objects.
    patches = [
        (r.client, r.status)
        for r in emulator.requests
        if r.verb == "patch" and r.resource == "configmaps" and r.client != "test"
    ]
    assert patches == [(leader, 200), (follower, 200), ("op-c", 200)]
    assert holder(emulator, lock_name) == ""


# -- deploy manifests ------------------------------------------------------------------------------


def load_manifest(name: str) -> dict[str, Any]:
    with (DEPLOY / name).open() as f:
        document: dict[str, Any] = yaml.safe_load(f)
    return document


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str) -> bool:
    """Whether RBAC ``rules`` allow ``verb`` on ``resource`` (named ``name``, if any)."""
    for rule in rules:
        if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
            continue
        if verb not in rule.get("verbs", []):
            continue
        names = rule.get("resourceNames")
        if not names or (name and name in names):
            return True
    return False


def record_queries(api_client: Any, into: list[tuple[str, str, dict[str, str]]]) -> None:
    """Record the method, path and query of every request ``api_client`` sends (the emulator's
    log has no queries, and RBAC authorizes a list or watch by its ``metadata.name`` field
    selector)."""
    send = api_client.request

    def request(method: str, url: str, query_params: Any = None, **kwargs: Any) -> Any:
        into.append((method, urlsplit(url).path, dict(query_params or ())))
        return send(method, url, query_params=query_params, **kwargs)

    api_client.request = request


@pytest.mark.asyncio
async def test_role_grants_exactly_what_the_lease_lock_uses(emulator: KubeEmulator) -> None:
    lock_name = load_example("fastapi_app").LOCK_NAME
    role = load_manifest("role.yaml")
    assert role["kind"] == "Role"
    rules: list[dict[str, Any]] = role["rules"]
    queries: list[tuple[str, str, dict[str, str]]] = []

    # An election through the LeaseLock: pod-a creates and renews the Lease while pod-b follows
    # it, pod-a releases it, pod-b takes it over.
    async def candidate(name: str, stop: anyio.Event, led: anyio.Event) -> None:
        api_client = await emulator.api_client(name)
        record_queries(api_client, queries)
        lock = LeaseLock(lock_name, "default", name, api_client=api_client)
        async with elect(lock, timing=TIMING) as leadership:
            await leadership.wait_term()
            led.set()
            await stop.wait()

    stops = {name: anyio.Event() for name in ("pod-a", "pod-b")}
    led = {name: anyio.Event() for name in ("pod-a", "pod-b")}
    # The emulator does not authorize; the Role refuses the shared, namespace-wide list (no
    # fieldSelector) that pod-b tries first, so the emulator is told to refuse it too.
    emulator.faults("pod-b").fail_next(403, verbs={"list"})
    async with anyio.create_task_group() as tg:
        tg.start_soon(candidate, "pod-a", stops["pod-a"], led["pod-a"])
        await led["pod-a"].wait()
        tg.start_soon(candidate, "pod-b", stops["pod-b"], led["pod-b"])
        await anyio.sleep(3 * TIMING.retry_period)
        stops["pod-a"].set()
        await led["pod-b"].wait()
        stops["pod-b"].set()

    requests = [r for r in emulator.requests if r.client in stops]
    # (patch: pod-b takes the released Lease with one PATCH on the version it watched)
    assert {r.verb for r in requests if r.resource == "leases"} == {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
    }
    # get and update name the Lease in their URL; list and watch select it by name; a create
    # names nothing that authorization sees (the name is in the body), which is why RBAC cannot
    # restrict it by resourceNames.
    assert {(r.verb, r.name) for r in requests if r.resource == "leases" and r.name} <= {
        ("get", lock_name),
        ("update", lock_name),
        ("patch", lock_name),
    }
    # (a list or a watch: a GET of the collection) The first is the shared list of the
    # namespace, which the Role refuses (403); after it, every one selects the Lease by name.
    collection = [q for method, path, q in queries if method == "GET" and path.endswith("/leases")]
    assert len(collection) >= 3
    assert "fieldSelector" not in collection[0]
    assert not allowed(rules, "coordination.k8s.io", "leases", "list", "")
    assert all(
        query.get("fieldSelector") == f"metadata.name={lock_name}" for query in collection[1:]
    )
    refused = [r for r in requests if r.status == 403]
    assert [(r.client, r.verb) for r in refused] == [("pod-b", "list")]
    for r in requests:
        if r.status == 403:
            continue
        name = lock_name if r.verb in ("list", "watch") else r.name
        assert allowed(rules, r.group, r.resource, r.verb, name), r

    # And nothing more: that one Lease, create (which RBAC cannot restrict by name), and Events
    # for the transitions.
    granted = {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        *(
            ("coordination.k8s.io", "leases", verb, (lock_name,))
            for verb in ("get", "list", "watch", "update", "patch")
        ),
        ("coordination.k8s.io", "leases", "create", ()),
        ("", "events", "create", ()),
        ("", "events", "patch", ()),
    }
    assert not allowed(rules, "coordination.k8s.io", "leases", "update", "another-lease")
    assert not allowed(rules, "coordination.k8s.io", "leases", "delete", lock_name)


@pytest.mark.asyncio
async def test_the_no_create_role_grants_exactly_what_a_no_create_lease_lock_uses(
    emulator: KubeEmulator,
) -> None:
    lock_name = load_example("fastapi_app").LOCK_NAME
    role = load_manifest("role-no-create.yaml")
    lease = load_manifest("lease.yaml")
    assert role["kind"] == "Role"
    assert (lease["kind"], lease["metadata"]["name"]) == ("Lease", lock_name)
    rules: list[dict[str, Any]] = role["rules"]
    # Whoever deploys applies lease.yaml first (through the API, validated like any create).
    setup = await emulator.api_client("deployer")
    coordination: Any = CoordinationV1Api(setup)
    await coordination.create_namespaced_lease("default", lease)

    async def candidate(name: str, stop: anyio.Event, led: anyio.Event) -> None:
        api_client = await emulator.api_client(name)
        lock = LeaseLock(lock_name, "default", name, api_client=api_client, create=False)
        async with elect(lock, timing=TIMING) as leadership:
            await leadership.wait_term()
            led.set()
            await stop.wait()

    stops = {name: anyio.Event() for name in ("pod-a", "pod-b")}
    led = {name: anyio.Event() for name in ("pod-a", "pod-b")}
    async with anyio.create_task_group() as tg:
        tg.start_soon(candidate, "pod-a", stops["pod-a"], led["pod-a"])
        await led["pod-a"].wait()
        tg.start_soon(candidate, "pod-b", stops["pod-b"], led["pod-b"])
        await anyio.sleep(3 * TIMING.retry_period)
        stops["pod-a"].set()
        await led["pod-b"].wait()
        stops["pod-b"].set()

    requests = [r for r in emulator.requests if r.client in stops]
    assert {r.verb for r in requests if r.resource == "leases"} == {
        "get",
        "list",
        "watch",
        "update",
        "patch",
    }
    for r in requests:
        name = lock_name if r.verb in ("list", "watch") else r.name
        assert allowed(rules, r.group, r.resource, r.verb, name), r
    # Nothing but the one Lease: not even create.
    assert not allowed(rules, "coordination.k8s.io", "leases", "create", "")
    assert not allowed(rules, "coordination.k8s.io", "leases", "update", "another-lease")


def test_deployment_wires_the_identity_probes_and_grace_period() -> None:
    fastapi_app = load_example("fastapi_app")
    kustomization = load_manifest("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(
        ["serviceaccount.yaml", "role.yaml", "rolebinding.yaml", "deployment.yaml"]
    )
    service_account = load_manifest("serviceaccount.yaml")
    role = load_manifest("role.yaml")
    binding = load_manifest("rolebinding.yaml")
    deployment = load_manifest("deployment.yaml")

    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account["metadata"]["name"]}
    ]

    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == service_account["metadata"]["name"]
    # The release on SIGTERM is bounded by the renew deadline: the kubelet must wait longer.
    assert pod["terminationGracePeriodSeconds"] > Timing().renew_deadline
    (container,) = pod["containers"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}

    # The probes hit paths the app serves, on its port.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == int(env["PORT"]["value"])
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"] == {"path": "/healthz", "port": "http"}
    assert readiness["httpGet"]["port"] == "http"
    paths = {getattr(route, "path", None) for route in fastapi_app.create_app().routes}
    assert {liveness["httpGet"]["path"], readiness["httpGet"]["path"]} <= paths


# -- the long-running examples as programs: SIGTERM stops them gracefully ---------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("example", "locks"),
    [("worker", ["worker"]), ("multiple_elections", ["scheduler", "cleanup"])],
)
async def test_long_running_example_releases_its_leases_on_sigterm(
    emulator: KubeEmulator, tmp_path: Path, example: str, locks: list[str]
) -> None:
    endpoint = await emulator.endpoint(example)
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, endpoint.url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    env.update(
        KUBECONFIG=str(kubeconfig),
        POD_NAME=f"{example}-1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    log = tmp_path / "log"
    with log.open("wb") as sink:
        process = await anyio.open_process(
            [sys.executable, str(EXAMPLES / f"{example}.py")],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        await eventually(
            lambda: all(holder(emulator, name) == f"{example}-1" for name in locks), timeout=20
        )
        status, took = await terminate(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
    output = read_log(log)
    assert status == 0, output
    assert took < 3, output
    assert [holder(emulator, name) for name in locks] == [""] * len(locks), output
    assert "Traceback" not in output
    assert "Unclosed" not in output
