"""Shared fixtures: an emulator per test, or a real cluster when ``AIOLEADER_E2E=1``; fake clocks.

* ``emulator`` (also as ``emu``): a started :class:`~aioleader.testing.KubeEmulator` (stopped
  after the test). Its options are the suite's defaults (:data:`EMULATOR_OPTIONS`), changed for a
  test or module by ``@pytest.mark.emulator(**options)`` (e.g. ``coordinated_election=True``).
* ``kube``: a :class:`KubeTarget` (an ``ApiClient`` and a namespace to work in). On the emulator
  the namespace is fresh by name (every namespace exists there); on a real cluster
  (``AIOLEADER_E2E=1``, kubeconfig from ``KUBECONFIG`` or ``~/.kube/config``) a namespace is
  created for the test and deleted after it. Fidelity tests written against ``kube`` run on both.

* ``anyio_backend`` for tests marked ``fake_clock``: anyio backends on fake clocks that jump to
  the next timer when every task is idle, asyncio with looptime's loop and trio with
  ``MockClock(autojump_threshold=0)``, a fresh clock per test. ``@pytest.mark.fake_clock`` runs
  on both, ``@pytest.mark.fake_clock("asyncio")`` on the named ones; the test (or module) also
  needs ``pytest.mark.anyio`` (a module's ``fake_clock`` leaves its pytest-asyncio tests alone).
  A test that parametrizes ``anyio_backend`` itself keeps its own
  (e.g. a real-time TCP test in a fake-clock module). Unmarked anyio tests get anyio's default:
  every backend, on its real clock.

Markers: ``emulator_only`` tests are skipped on a real cluster; ``e2e`` tests only run on one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
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

#: The suite's emulator: bookmarks every 0.2 s, so watch tests see several within a short test.
EMULATOR_OPTIONS: dict[str, Any] = {"bookmark_interval": 0.2}

#: The backends ``@pytest.mark.fake_clock`` runs a test on when it names none.
FAKE_CLOCK_BACKENDS = ("asyncio", "trio")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fake_clock(*backends): run the anyio test on fake clocks (looptime, trio MockClock); "
        "default both backends",
    )
    config.addinivalue_line(
        "markers", "emulator(**options): KubeEmulator options for the emulator/kube fixtures"
    )


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


@dataclass(frozen=True)
class FakeClock:
    """A parameter of ``anyio_backend``: the backend to run on a fake clock (a fresh clock per
    test: trio's MockClock keeps its time, so it must not be shared)."""

    backend: str

    def __str__(self) -> str:  # the test id: test_x[asyncio], test_x[trio]
        return self.backend

    def options(self) -> tuple[str, dict[str, Any]]:
        if self.backend == "asyncio":
            if sys.version_info < (3, 11):  # pragma: no cover - looptime >= 0.9 needs 3.11
                pytest.skip("asyncio fake clock (looptime >= 0.9) needs Python 3.11")
            import looptime

            return (
                "asyncio",
                {"loop_factory": lambda: looptime.new_event_loop(start=0, _enabled=True)},
            )
        if self.backend == "trio":
            from trio.testing import MockClock

            return ("trio", {"clock": MockClock(autojump_threshold=0)})
        raise pytest.UsageError(f"fake_clock: no fake clock for backend {self.backend!r}")


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("fake_clock")
    if marker is None:
        return
    if "anyio_backend" not in metafunc.fixturenames:
        # A module's fake_clock concerns its anyio tests; on a test itself it needs anyio.
        if any(m.name == "fake_clock" for m in metafunc.definition.own_markers):
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: fake_clock needs an anyio test (pytest.mark.anyio)"
            )
        return
    if any(
        "anyio_backend" in _argnames(m.args[0])
        for m in metafunc.definition.iter_markers("parametrize")
    ):
        return  # the test chose its backend itself
    backends = [FakeClock(name) for name in (marker.args or FAKE_CLOCK_BACKENDS)]
    # As a mark, so that pytest's own hooks apply it and let it win over the fixture's params.
    metafunc.definition.add_marker(
        pytest.mark.parametrize("anyio_backend", backends, ids=str, indirect=True, scope="function")
    )


def _argnames(argnames: str | tuple[str, ...] | list[str]) -> list[str]:
    if isinstance(argnames, str):
        return [n.strip() for n in argnames.split(",")]
    return list(argnames)


@pytest.fixture(scope="module", params=anyio.get_available_backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """anyio's own fixture (every backend, real clocks), or a fake clock (``fake_clock``)."""
    if isinstance(request.param, FakeClock):
        return request.param.options()
    return request.param


@dataclass(frozen=True)
class KubeTarget:
    """Where a fidelity test runs: a client, a namespace, and the emulator if there is one."""

    api_client: Any
    namespace: str
    emulator: KubeEmulator | None


def emulator_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """:data:`EMULATOR_OPTIONS`, updated by the test's ``@pytest.mark.emulator(**options)``."""
    options = dict(EMULATOR_OPTIONS)
    for marker in reversed(list(request.node.iter_markers("emulator"))):  # closest last: wins
        if marker.args:
            raise pytest.UsageError("pytest.mark.emulator takes keyword options only")
        options.update(marker.kwargs)
    return options


@asynccontextmanager
async def _running_emulator(options: dict[str, Any]) -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator(**options)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest_asyncio.fixture
async def emulator(request: pytest.FixtureRequest) -> AsyncIterator[KubeEmulator]:
    async with _running_emulator(emulator_options(request)) as emu:
        yield emu


@pytest_asyncio.fixture
async def emu(emulator: KubeEmulator) -> KubeEmulator:
    """The same emulator under the short name most tests use."""
    return emulator


@pytest_asyncio.fixture
async def kube(request: pytest.FixtureRequest) -> AsyncIterator[KubeTarget]:
    namespace = f"aioleader-test-{uuid.uuid4().hex[:8]}"
    if not E2E:
        async with _running_emulator(emulator_options(request)) as emu:
            yield KubeTarget(await emu.api_client(), namespace, emu)
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
