"""Shared fixtures: an emulator per test, or a real cluster when ``AIOLEADER_E2E=1``.

* ``emulator``: a started :class:`~aioleader.testing.KubeEmulator` (stopped after the test).
* ``kube``: a :class:`KubeTarget` (an ``ApiClient`` and a namespace to work in). On the emulator
  the namespace is fresh by name (every namespace exists there); on a real cluster
  (``AIOLEADER_E2E=1``, kubeconfig from ``KUBECONFIG`` or ``~/.kube/config``) a namespace is
  created for the test and deleted after it. Fidelity tests written against ``kube`` run on both.

Markers: ``emulator_only`` tests are skipped on a real cluster; ``e2e`` tests only run on one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from aioleader.testing import KubeEmulator

# kubernetes_asyncio's aiohttp session trusts proxy variables; the emulator is local.
for _variable in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_variable, "").split(",") if h]
    os.environ[_variable] = ",".join(
        [*_hosts, *(h for h in ("127.0.0.1", "localhost") if h not in _hosts)]
    )

E2E = os.environ.get("AIOLEADER_E2E") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E and item.get_closest_marker("emulator_only"):
            item.add_marker(pytest.mark.skip(reason="checks an emulator-only feature"))
        if not E2E and item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.skip(reason="needs a real cluster (AIOLEADER_E2E=1)"))


@pytest.fixture(autouse=True)
def _closed_default_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give every test not run by pytest-asyncio an event loop that is closed after it.

    looptime's pytest plugin asks the policy for the current event loop around every test (sync
    and anyio ones too), which creates a loop nobody closes; its ResourceWarning then fails
    whichever asyncio test the garbage collector happens to run in (``filterwarnings = error``).
    ``-p no:looptime_plugin`` would also do: the suite uses looptime's loops, not its plugin.
    """
    if request.node.get_closest_marker("asyncio"):
        yield
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _looptime_loop() -> Any:
    import looptime

    return looptime.new_event_loop(start=0, _enabled=True)


@pytest.fixture(params=["asyncio", "trio"])
def fake_clock_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """anyio backends on fake clocks that jump to the next timer when every task is idle:
    asyncio with looptime's loop, trio with ``MockClock(autojump_threshold=0)``. A test module
    opts in by defining ``anyio_backend`` as a fixture that returns this one."""
    if request.param == "asyncio":
        if sys.version_info < (3, 11):  # pragma: no cover - looptime >= 0.9 needs 3.11
            pytest.skip("asyncio fake clock (looptime >= 0.9) needs Python 3.11")
        return ("asyncio", {"loop_factory": _looptime_loop})
    from trio.testing import MockClock

    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@dataclass(frozen=True)
class KubeTarget:
    """Where a fidelity test runs: a client, a namespace, and the emulator if there is one."""

    api_client: Any
    namespace: str
    emulator: KubeEmulator | None


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator(bookmark_interval=0.2)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest_asyncio.fixture
async def emu(emulator: KubeEmulator) -> KubeEmulator:
    """The same emulator under the short name most tests use."""
    return emulator


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[KubeTarget]:
    namespace = f"aioleader-test-{uuid.uuid4().hex[:8]}"
    if not E2E:
        emu = KubeEmulator(bookmark_interval=0.2)
        await emu.start()
        try:
            yield KubeTarget(await emu.api_client(), namespace, emu)
        finally:
            await emu.stop()
        return

    from kubernetes_asyncio import client, config

    api = await config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
    core = client.CoreV1Api(api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        yield KubeTarget(api, namespace, None)
    finally:
        try:
            await core.delete_namespace(namespace)
        finally:
            await api.close()
