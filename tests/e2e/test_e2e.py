"""End to end: ``aioleader run`` candidates as real processes against an API server.

Each candidate is ``python -m aioleader run --lock lease/NS/NAME -- python child.py`` in a process
group of its own. A signal to that group reaches the wrapper alone: its command runs in a session
of its own, under a guardian process that stops it when the wrapper dies or stays frozen past its
term's deadline (``tests/test_sidecar.py`` covers the process tree in detail). The command is a
small "worker" that reports, on the shared monotonic clock,
when it started, every unit of work it does (every 50 ms) and when it was told to stop. Work
intervals ``[started, last unit of work]`` of different candidates must never overlap.

The API server is the cluster of the current kubeconfig with ``AIOLEADER_E2E=1``, else the
emulator in a process of its own (see ``conftest.py``). Timings are short: LD 3 s, RD 2 s, RP 0.5 s.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from .conftest import Target

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

LD, RD, RP = 3.0, 2.0, 0.5
JITTER = 1.2
TIMING = ["--lease-duration", f"{LD:g}", "--renew-deadline", f"{RD:g}", "--retry-period", f"{RP:g}"]
# Process scheduling, Python start-up of the command, a loaded CI runner.
SLACK = 1.5

CHILD = """
import os, signal, sys, time
out, name = sys.argv[1], sys.argv[2]
token = os.environ["AIOLEADER_FENCING_TOKEN"]
def log(event):
    with open(out, "a") as f:
        f.write(f"{event} {name} {time.monotonic():.6f} {token} {os.getpid()}\\n")
def stop(signum, frame):
    log("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
log("started")
while True:
    log("work")
    time.sleep(0.05)
"""


@dataclass
class Work:
    """What one candidate's command reported."""

    name: str
    token: int
    started: float
    last_work: float
    stopped: float | None


def read_work(path: Path) -> Work | None:
    if not path.exists():
        return None
    started = last = stopped = None
    name, token = "", -1
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue  # a line being written
        event, name, when, token_text, _pid = parts
        at, token = float(when), int(token_text)
        if event == "started":
            started = last = at
        elif event == "work":
            last = at
        elif event == "stopped":
            stopped = at
    if started is None or last is None:
        return None
    return Work(name, token, started, last, stopped)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Candidate:
    name: str
    process: Process
    log: Path
    work_file: Path
    healthz_port: int

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the wrapper leads its own group

    def work(self) -> Work | None:
        return read_work(self.work_file)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@dataclass
class Election:
    target: Target
    lock: str
    directory: Path
    candidates: dict[str, Candidate] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return f"lease/{self.target.namespace}/{self.lock}"

    async def start(self, name: str, *extra: str) -> Candidate:
        child = self.directory / "child.py"
        if not child.exists():
            child.write_text(CHILD)
        work_file = self.directory / f"work-{name}.log"
        log = self.directory / f"wrapper-{name}.log"
        port = free_port()
        with log.open("w") as sink:
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-m",
                    "aioleader",
                    "run",
                    "--lock",
                    self.spec,
                    "--identity",
                    name,
                    *TIMING,
                    "--healthz-addr",
                    f"127.0.0.1:{port}",
                    *extra,
                    "--",
                    sys.executable,
                    str(child),
                    str(work_file),
                    name,
                ],
                stdin=None,
                stdout=sink,
                stderr=sink,
                env=self.target.cluster.env(),
                start_new_session=True,
            )
        candidate = Candidate(name, process, log, work_file, port)
        self.candidates[name] = candidate
        return candidate

    async def wait_up(self, candidate: Candidate, limit: float = 30) -> None:
        """Until its health endpoint answers (it campaigns), and a little longer (it has read
        the lock and follows it)."""
        with anyio.fail_after(limit):
            while True:
                assert candidate.process.returncode is None, candidate.output()
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", candidate.healthz_port)
                except OSError:
                    await anyio.sleep(0.05)
                    continue
                async with stream:
                    await stream.send(b"GET /healthz HTTP/1.0\r\n\r\n")
                    reply = b""
                    try:
                        while True:
                            reply += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        pass
                if reply.startswith(b"HTTP/1.0 200"):
                    break
                await anyio.sleep(0.05)
        await anyio.sleep(2 * RP)

    def working(self) -> dict[str, Work]:
        return {n: w for n, c in self.candidates.items() if (w := c.work()) is not None}

    async def wait_for(self, predicate: Callable[[], object], limit: float, what: str) -> None:
        with anyio.move_on_after(limit):
            while not predicate():
                await anyio.sleep(0.02)
            return
        logs = "\n".join(f"--- {n}:\n{c.output()}" for n, c in self.candidates.items())
        pytest.fail(f"timed out after {limit:g} s waiting for {what}\n{logs}")

    async def wait_leader(self, *, other_than: set[str] | None = None, limit: float = 30) -> Work:
        excluded = other_than or set()
        await self.wait_for(
            lambda: any(n not in excluded for n in self.working()), limit, "a leader's command"
        )
        (work,) = [w for n, w in self.working().items() if n not in excluded]
        return work

    def assert_no_overlap(self) -> None:
        intervals = sorted(self.working().values(), key=lambda w: w.started)
        for earlier, later in itertools.pairwise(intervals):
            assert earlier.last_work < later.started, (
                f"{earlier.name} worked until {earlier.last_work:.3f}, after {later.name} "
                f"started at {later.started:.3f}"
            )
            assert earlier.token < later.token, "fencing tokens must increase"

    async def lease(self) -> dict[str, Any]:
        from kubernetes_asyncio import client

        # Typed Any: with _preload_content=False the call returns aiohttp's response.
        leases: Any = client.CoordinationV1Api(self.target.api)
        response = await leases.read_namespaced_lease(
            self.lock, self.target.namespace, _preload_content=False
        )
        async with response:
            data: dict[str, Any] = json.loads(await response.read())
        return data

    async def events(self) -> list[dict[str, Any]]:
        from kubernetes_asyncio import client

        core: Any = client.CoreV1Api(self.target.api)
        response = await core.list_namespaced_event(self.target.namespace, _preload_content=False)
        async with response:
            data = json.loads(await response.read())
        return [e for e in data["items"] if e["involvedObject"]["name"] == self.lock]


async def signal_group(candidate: Candidate, signum: int) -> None:
    os.killpg(candidate.pgid, signum)
    await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def election(target: Target, tmp_path: Path) -> AsyncIterator[Election]:
    e = Election(target, f"e2e-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        yield e
    finally:
        # Stop what is left gracefully (SIGTERM), then by force.
        # A group is only signalled while its leader (the wrapper) has not been reaped.
        for c in e.candidates.values():
            if c.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.pgid, signal.SIGCONT)
                    c.process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(10):
            for c in e.candidates.values():
                await c.process.wait()
        for c in e.candidates.values():
            if c.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.pgid, signal.SIGKILL)
            await c.process.wait()
            await c.process.aclose()


# -- scenarios -----------------------------------------------------------------------------------


async def test_sigkill_of_the_leader_fails_over_within_the_bound(
    target: Target, tmp_path: Path
) -> None:
    async with election(target, tmp_path) as e:
        for name in ("a", "b", "c"):
            await e.start(name)
        for candidate in e.candidates.values():
            await e.wait_up(candidate)
        first = await e.wait_leader()

        killed_at = anyio.current_time()
        await signal_group(e.candidates[first.name], signal.SIGKILL)  # a crash: no release
        assert await e.candidates[first.name].process.wait() == -signal.SIGKILL

        bound = LD + (1 + JITTER) * RP + SLACK
        second = await e.wait_leader(other_than={first.name}, limit=bound + 10)
        failover = second.started - killed_at
        print(f"SIGKILL failover: {failover:.2f} s (bound {bound:.2f} s)")
        assert 0 < failover <= bound
        old_work = e.working()[first.name]
        assert old_work.stopped is not None  # the guardian's SIGTERM, at once
        assert old_work.last_work < killed_at + SLACK
        assert second.token > first.token
        lease = await e.lease()
        assert lease["spec"]["holderIdentity"] == second.name
        assert lease["spec"]["leaseDurationSeconds"] == int(LD)
        e.assert_no_overlap()


async def test_sigterm_of_the_leader_hands_over_within_a_poll(
    target: Target, tmp_path: Path
) -> None:
    async with election(target, tmp_path) as e:
        for name in ("a", "b"):
            await e.start(name)
        for candidate in e.candidates.values():
            await e.wait_up(candidate)
        first = await e.wait_leader()

        leader = e.candidates[first.name]
        leader.process.send_signal(signal.SIGTERM)  # forwarded to the command, then released
        with anyio.fail_after(RD + 10):
            assert await leader.process.wait() == 0, leader.output()
        stopped = e.working()[first.name].stopped
        assert stopped is not None  # the command was told to stop, and did

        bound = (1 + JITTER) * RP + SLACK
        second = await e.wait_leader(other_than={first.name}, limit=bound + 10)
        handover = second.started - stopped
        print(f"SIGTERM handover: {handover:.2f} s (bound {bound:.2f} s)")
        assert 0 < handover <= bound
        assert "forwarding to the command" in leader.output()
        assert second.token > first.token
        e.assert_no_overlap()

        # client-go's Events on the Lease, from both processes.
        messages = [ev["message"] for ev in await e.events()]
        assert f"{first.name} became leader" in messages
        assert f"{first.name} stopped leading" in messages
        with anyio.fail_after(5):
            while f"{second.name} became leader" not in messages:
                await anyio.sleep(0.1)
                messages = [ev["message"] for ev in await e.events()]


async def test_frozen_leader_wrapper_guardian_stops_its_command_before_takeover(
    target: Target, tmp_path: Path
) -> None:
    """The wrapper is frozen (SIGSTOP to its group) past LD; another candidate takes over; then
    it thaws. A frozen wrapper cannot stop anything: its guardian (not frozen with it) SIGTERMs
    the command at the term's deadline, before the lease may be taken over; on resuming, the
    wrapper finds its term over and exits 3 without writing to the lock.

    (A whole pod frozen by the cgroup freezer freezes the guardian and the command too; they
    thaw in no particular order, and a command that runs first can do work until the guardian's
    SIGTERM reaches it: the window that fencing tokens close, ``AIOLEADER_FENCING_TOKEN``.)
    """
    async with election(target, tmp_path) as e:
        for name in ("a", "b"):
            await e.start(name)
        for candidate in e.candidates.values():
            await e.wait_up(candidate)
        first = await e.wait_leader()
        old = e.candidates[first.name]
        command_pid = int(old.work_file.read_text().split()[4])

        frozen_at = anyio.current_time()
        await signal_group(old, signal.SIGSTOP)
        # Nobody renews: the other candidate takes over once the lease it saw expires.
        second = await e.wait_leader(other_than={first.name}, limit=LD + (1 + JITTER) * RP + 10)
        assert second.started > frozen_at + LD - RP - 0.2, "the lease was taken before it expired"
        old_work = e.working()[first.name]
        assert old_work.stopped is not None  # SIGTERM from the guardian
        assert old_work.last_work < frozen_at + RD + SLACK
        with pytest.raises(ProcessLookupError):
            os.kill(command_pid, 0)

        await signal_group(old, signal.SIGCONT)
        with anyio.fail_after(10):
            assert await old.process.wait() == 3, old.output()
        assert "the term's deadline passed: stopping the command" in old.output()
        assert "leadership lost" in old.output()
        assert second.token > first.token
        e.assert_no_overlap()
        lease = await e.lease()
        assert lease["spec"]["holderIdentity"] == second.name  # the old leader did not write


async def test_forbidden_service_account_exits_4_and_names_the_missing_permission(
    target: Target, tmp_path: Path
) -> None:
    if target.emulator:
        pytest.skip("the emulator has no authentication or authorization: nothing is forbidden")
    kubeconfig = await limited_kubeconfig(target, tmp_path)
    spec = f"lease/{target.namespace}/forbidden"
    result = await anyio.run_process(
        [sys.executable, "-m", "aioleader", "run", "--lock", spec, *TIMING, "--", "true"],
        env=target.cluster.env(KUBECONFIG=str(kubeconfig)),
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 4, stderr
    assert "forbidden" in stderr
    assert "create" in stderr
    assert "leases.coordination.k8s.io" in stderr
    assert "Traceback" not in stderr


async def test_reads_the_go_written_kube_scheduler_lease(target: Target) -> None:
    if target.emulator:
        pytest.skip(
            "no kube-scheduler on the emulator, and put_raw() is not available across processes"
        )
    result = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "aioleader",
            "status",
            "--lock",
            "lease/kube-system/kube-scheduler",
            "-o",
            "json",
        ],
        env=target.cluster.env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    status = json.loads(result.stdout)
    assert status["exists"] is True
    assert status["holder"]  # kube-scheduler's identity: <node>_<uuid>
    assert status["leaseDurationSeconds"] == 15  # kube-scheduler's default
    assert status["transitions"] >= 0
    # MicroTime written by Go, read as UTC; renewed every 2 s by default.
    assert status["renewAgeSeconds"] is not None
    assert -60 < status["renewAgeSeconds"] < 60


# -- a ServiceAccount that may read Leases but not write them ----------------------------------


async def limited_kubeconfig(target: Target, tmp_path: Path) -> Path:
    """A kubeconfig for a ServiceAccount whose Role allows get/list/watch on leases only."""
    from kubernetes_asyncio import client

    ns = target.namespace
    core = client.CoreV1Api(target.api)
    rbac = client.RbacAuthorizationV1Api(target.api)
    await core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="limited"))
    )
    await rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-leases"),
            rules=[
                client.V1PolicyRule(
                    api_groups=["coordination.k8s.io"],
                    resources=["leases"],
                    verbs=["get", "list", "watch"],
                )
            ],
        ),
    )
    await rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="read-leases"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-leases"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="limited", namespace=ns)],
        ),
    )
    request = await core.create_namespaced_service_account_token(
        "limited",
        ns,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    token = request.status.token
    configuration = target.api.configuration
    cluster: dict[str, Any] = {"server": configuration.host}
    if configuration.ssl_ca_cert:
        ca = await anyio.Path(configuration.ssl_ca_cert).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    elif not configuration.verify_ssl:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": "limited", "user": {"token": token}}],
        "contexts": [
            {"name": "limited", "context": {"cluster": "e2e", "user": "limited", "namespace": ns}}
        ],
        "current-context": "limited",
    }
    fd, name = tempfile.mkstemp(dir=tmp_path, suffix=".kubeconfig")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    return Path(name)
