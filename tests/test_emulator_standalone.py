"""``python -m aioleader.testing`` serves unmodified kubernetes_asyncio programs and exits cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.emulator_only

ROOT = Path(__file__).resolve().parent.parent

# An ordinary program: nothing in it knows about the emulator.
SCRIPT = """
import asyncio, sys
from kubernetes_asyncio import client, config

async def main():
    await config.load_kube_config(config_file=sys.argv[1])
    async with client.ApiClient() as api:
        leases = client.CoordinationV1Api(api)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name="standalone"),
            spec=client.V1LeaseSpec(holder_identity="script", lease_duration_seconds=15),
        )
        await leases.create_namespaced_lease("default", body)
        lease = await leases.read_namespaced_lease("standalone", "default")
        print(lease.spec.holder_identity, lease.metadata.resource_version)

asyncio.run(main())
"""


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_a_kubeconfig_and_stops_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = subprocess.Popen(
        [sys.executable, "-m", "aioleader.testing", "--port", "0", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        prefix = "aioleader emulator listening on http://127.0.0.1:"
        assert ready.startswith(prefix), ready
        assert ready.rstrip().endswith(f"(kubeconfig: {kubeconfig})")
        port = int(ready[len(prefix) :].split(" ", 1)[0])
        assert port > 0
        script = tmp_path / "script.py"
        script.write_text(SCRIPT)
        run = subprocess.run(
            [sys.executable, str(script), str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=30,
            env=environment(),
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout == "script 1\n"
        server.send_signal(signum)
        out, err = server.communicate(timeout=10)
        assert server.returncode == 0, err
        assert out == ""  # exactly one line, read above
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


# A candidate in the kubernetes_asyncio way (JSON body: the models' MicroTimes do not decode).
CANDIDATE_SCRIPT = """
import asyncio, sys
from datetime import datetime, timezone
from kubernetes_asyncio import client, config

async def main():
    await config.load_kube_config(config_file=sys.argv[1])
    async with client.ApiClient() as api:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"leaseName": "lock", "binaryVersion": "1.36.2", "emulationVersion": "1.36.0",
                "strategy": "OldestEmulationVersion", "renewTime": now}
        await client.CoordinationV1beta1Api(api).create_namespaced_lease_candidate(
            "default", {"metadata": {"name": "pod-a"}, "spec": spec})
        leases = client.CoordinationV1Api(api)
        for _ in range(500):
            found = await leases.list_namespaced_lease("default")
            if found.items:
                print(found.items[0].spec.holder_identity, found.items[0].spec.strategy)
                return
            await asyncio.sleep(0.01)

asyncio.run(main())
"""


def test_runs_the_coordinated_election_controller(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    command = [sys.executable, "-m", "aioleader.testing", "--kubeconfig", str(kubeconfig)]
    server = subprocess.Popen(
        [*command, "--coordinated-election", "--election-window", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("aioleader emulator listening on")
        script = tmp_path / "candidate.py"
        script.write_text(CANDIDATE_SCRIPT)
        run = subprocess.run(
            [sys.executable, str(script), str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=30,
            env=environment(),
        )
        assert (run.returncode, run.stdout) == (0, "pod-a OldestEmulationVersion\n"), run.stderr
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=10)
        assert server.returncode == 0, err
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    refused = subprocess.run(
        [*command, "--coordinated-election", "--no-lease-candidates"],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment(),
    )
    assert refused.returncode == 2
    assert "--coordinated-election needs LeaseCandidates" in refused.stderr


def test_stops_promptly_with_a_watch_and_an_idle_connection_open(tmp_path: Path) -> None:
    """SIGTERM with clients still connected (a watch streaming, a kept-alive idle connection):
    the process is gone at once, it does not wait for them."""
    kubeconfig = tmp_path / "kubeconfig"
    server = subprocess.Popen(
        [sys.executable, "-m", "aioleader.testing", "--port", "0", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        port = int(ready.split("127.0.0.1:", 1)[1].split(" ", 1)[0])
        with (
            socket.create_connection(("127.0.0.1", port)) as watch,
            socket.create_connection(("127.0.0.1", port)) as idle,
        ):
            watch.sendall(
                b"GET /apis/coordination.k8s.io/v1/namespaces/default/leases?watch=true "
                b"HTTP/1.1\r\nHost: emulator\r\n\r\n"
            )
            assert watch.recv(4096).startswith(b"HTTP/1.1 200")
            idle.sendall(b"GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: e\r\n\r\n")
            assert idle.recv(65536).startswith(b"HTTP/1.1 200")
            sent = time.monotonic()
            server.send_signal(signal.SIGTERM)
            _, err = server.communicate(timeout=10)
            took = time.monotonic() - sent
        print(f"\nstandalone emulator: SIGTERM -> exit {took * 1000:.0f} ms (2 clients connected)")
        assert server.returncode == 0, err
        assert took < 1.0  # generous: about 50 ms here
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
