"""Where the end-to-end tests run: a real cluster, or the emulator in a process of its own.

* ``AIOLEADER_E2E=1``: the cluster of the current kubeconfig (``$KUBECONFIG`` or
  ``~/.kube/config``); every test gets a namespace of its own, deleted after it.
* Otherwise: ``python -m aioleader.testing --port 0 --kubeconfig …``, started once per session
  (the ready line is awaited) and terminated at the end, so that the suite runs in every test run
  (CI here has no Docker). Every namespace exists on the emulator; tests still get a fresh name.

Candidates are real processes (``python -m aioleader run …``) in both modes, on this machine, so
that everything they report is on one clock (``CLOCK_MONOTONIC``, shared by all processes on
Linux).

The root ``tests/conftest.py`` skips ``e2e``-marked tests unless ``AIOLEADER_E2E=1``; these tests
have an emulator mode, so that skip is lifted here for the tests in this directory.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

E2E = os.environ.get("AIOLEADER_E2E") == "1"
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
_ROOT_SKIP_REASON = "needs a real cluster (AIOLEADER_E2E=1)"
_READY_PREFIX = "aioleader emulator listening on "
_READY_TIMEOUT = 30.0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run this directory's ``e2e`` tests on the emulator when there is no cluster: undo the
    root conftest's skip for them (and only for them)."""
    if E2E:
        return
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        item.own_markers[:] = [
            mark
            for mark in item.own_markers
            if not (mark.name == "skip" and mark.kwargs.get("reason") == _ROOT_SKIP_REASON)
        ]


@dataclass(frozen=True)
class Cluster:
    """The API server the candidates talk to."""

    #: The kubeconfig candidates use (``KUBECONFIG`` in their environment; may be a path list).
    kubeconfig: str
    #: True on the emulator: no authentication, no authorization, no kube-system.
    emulator: bool

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a candidate process."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        hosts = [h for h in env.get("NO_PROXY", "").split(",") if h]
        hosts += [h for h in ("127.0.0.1", "localhost") if h not in hosts]
        env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)
        env.pop("POD_NAME", None)  # identities are given explicitly
        env.update(extra)
        return env


def _start_emulator(directory: Path) -> tuple[subprocess.Popen[str], Cluster]:
    kubeconfig = directory / "kubeconfig"
    log = (directory / "emulator.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aioleader.testing",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--bookmark-interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=Cluster(str(kubeconfig), emulator=True).env(),
    )
    log.close()  # the child has its own descriptor
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], _READY_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    if not line.startswith(_READY_PREFIX):
        process.kill()
        process.wait()
        errors = (directory / "emulator.log").read_text()
        pytest.fail(
            f"the emulator did not print its ready line within {_READY_TIMEOUT:g} s "
            f"(got {line!r}); stderr:\n{errors}"
        )
    return process, Cluster(str(kubeconfig), emulator=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The real cluster (``AIOLEADER_E2E=1``) or a standalone emulator process for the session."""
    if E2E:
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        yield Cluster(path, emulator=False)
        return
    process, found = _start_emulator(tmp_path_factory.mktemp("emulator"))
    try:
        yield found
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@dataclass(frozen=True)
class Target:
    """One test's place on the cluster: a namespace, and an admin ``ApiClient`` for checks."""

    cluster: Cluster
    namespace: str
    api: Any  # kubernetes_asyncio.client.ApiClient

    @property
    def emulator(self) -> bool:
        return self.cluster.emulator


@pytest_asyncio.fixture
async def target(cluster: Cluster) -> AsyncIterator[Target]:
    """A fresh namespace (created and deleted on a real cluster) and an admin client."""
    from kubernetes_asyncio import client, config

    namespace = f"aioleader-e2e-{uuid.uuid4().hex[:8]}"
    # The first file of a path list: what a test reads and writes with is the admin's context.
    config_file = cluster.kubeconfig.split(os.pathsep)[0]
    api = await config.new_client_from_config(config_file=config_file)
    try:
        if cluster.emulator:
            yield Target(cluster, namespace, api)
            return
        core = client.CoreV1Api(api)
        await core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(
                    name=namespace, labels={"app.kubernetes.io/part-of": "aioleader-e2e"}
                )
            )
        )
        try:
            yield Target(cluster, namespace, api)
        finally:
            await core.delete_namespace(namespace)
    finally:
        await api.close()
