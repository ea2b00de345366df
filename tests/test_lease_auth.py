"""The lean request path keeps the user's kubernetes_asyncio configuration: the server, its CA,
client certificates and bearer tokens, including tokens that change while the lock runs (a
kubeconfig exec plugin, the projected service-account token re-read from its file).

Every test runs over each way a client authenticates, against an emulator that checks it
(``KubeEmulator(tls=..., token=..., client_ca=...)``): a credential the lean path dropped or
failed to refresh is a 401 here, and an untrusted server a TLS failure.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import pytest_asyncio
from _groups import NS, group
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import incluster_config, load_incluster_config, load_kube_config

from aioleader import ElectionError, LockConflict, LockError
from aioleader._record import LeaderElectionRecord
from aioleader.kubernetes import LeaseLock
from aioleader.testing import KubeEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

#: How a client authenticates: plain HTTP (nothing checked), HTTPS with a static token, HTTPS with
#: a client certificate, HTTPS with an exec plugin's token (re-run on every request, as for a
#: credential that has expired), HTTPS with the in-cluster token file (re-read on every request).
MODES = ["http", "https-token", "https-cert", "exec-token", "token-file"]
REFRESHING = ("exec-token", "token-file")

#: The exec plugin: prints an ExecCredential with the token in ``token.txt`` and counts its runs.
PLUGIN = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
with open(here / "calls.log", "a") as calls:
    calls.write("x")
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {"token": (here / "token.txt").read_text().strip(),
               "expirationTimestamp": "2000-01-01T00:00:00Z"},
}))
"""


@dataclass
class Secured:
    """An emulator that checks ``mode``'s credentials, and clients that present them."""

    emu: KubeEmulator
    mode: str
    tmp: Path
    clients: list[ApiClient] = field(default_factory=list)

    @property
    def token_file(self) -> Path:
        return self.tmp / "token.txt"

    @property
    def plugin_runs(self) -> int:
        calls = self.tmp / "calls.log"
        return len(calls.read_text()) if calls.exists() else 0

    async def api_client(self, name: str) -> ApiClient:
        if self.mode == "exec-token":
            configuration = await self._exec_configuration(name)
        elif self.mode == "token-file":
            configuration = await self._in_cluster_configuration(name)
        else:
            return await self.emu.api_client(name)
        api = ApiClient(configuration)
        self.clients.append(api)
        return api

    async def _exec_configuration(self, name: str) -> Configuration:
        script = self.tmp / "plugin.py"
        if not script.exists():
            script.write_text(PLUGIN)
        kubeconfig = await self.emu.kubeconfig(
            name, exec_command=[sys.executable, str(script), str(self.tmp)]
        )
        path = self.tmp / f"{name}.kubeconfig"
        path.write_text(json.dumps(kubeconfig))
        configuration = Configuration()
        loader = await load_kube_config(
            config_file=str(path), client_configuration=configuration, persist_config=False
        )

        # What a user of kubernetes_asyncio wires for a credential that expires: the hook runs
        # before every request and re-runs the plugin once the credential has expired.
        async def refresh(conf: Configuration) -> None:
            await loader.load_from_exec_plugin()
            conf.api_key["BearerToken"] = loader.token

        configuration.refresh_api_key_hook = refresh
        return configuration

    async def _in_cluster_configuration(self, name: str) -> Configuration:
        port = (await self.emu.endpoint(name)).port
        configuration = Configuration()
        load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration,
            token_filename=str(self.token_file),
            cert_filename=str(self.emu.ca_file),
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)},
        )
        return configuration

    async def rotate(self, new: str, *, overlap: float = 0.0) -> None:
        """Rotate the token at its source; the emulator accepts both for ``overlap`` seconds
        (as a cluster accepts an old projected token until it expires), then only ``new``."""
        if overlap:
            self.emu.set_token(*self.emu.tokens, new)
        self.token_file.write_text(new)
        await anyio.sleep(overlap)
        self.emu.set_token(new)


@pytest_asyncio.fixture(params=MODES)
async def secured(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Secured]:
    mode: str = request.param
    if mode == "http":
        emu = KubeEmulator()
    elif mode == "https-cert":
        emu = KubeEmulator(tls=True, client_ca=True)
    else:
        emu = KubeEmulator(tls=True, token="t-0")
    (tmp_path / "token.txt").write_text("t-0")
    # The in-cluster loader re-reads its token file once a minute; every request here.
    monkeypatch.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    await emu.start()
    secured = Secured(emu, mode, tmp_path)
    try:
        yield secured
    finally:
        for api in secured.clients:
            await api.close()
        await emu.stop()


def _record(holder: str, renew: datetime.datetime | None = None) -> LeaderElectionRecord:
    now = renew or datetime.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)
    return LeaderElectionRecord(
        holder_identity=holder,
        lease_duration_seconds=15,
        acquire_time=now,
        renew_time=now,
        leader_transitions=0,
    )


def _statuses(emu: KubeEmulator, client: str) -> list[int]:
    return [r.status for r in emu.requests if r.client == client]


async def test_round_trip(secured: Secured) -> None:
    lock = LeaseLock("lock", NS, identity="a", api_client=await secured.api_client("a"))
    async with lock:
        assert await lock.get() is None
        created = await lock.create(_record("a"))
        renewal = _record("a", datetime.datetime(2030, 1, 2, 3, 4, 7, 1, tzinfo=datetime.UTC))
        updated = await lock.update(renewal)
        read = await lock.get()
    assert read is not None
    assert read.record.renew_time == renewal.renew_time
    assert int(updated.version) > int(created.version)
    assert read.version == updated.version
    assert _statuses(secured.emu, "a") == [404, 201, 200, 200]
    assert secured.emu.tls == (secured.mode != "http")
    if secured.mode == "exec-token":
        assert secured.plugin_runs >= 4  # an expired credential: the plugin runs every time


async def test_stale_version_is_a_conflict(secured: Secured) -> None:
    a = LeaseLock("lock", NS, identity="a", api_client=await secured.api_client("a"))
    b = LeaseLock("lock", NS, identity="b", api_client=await secured.api_client("b"))
    async with a, b:
        await a.create(_record("a"))
        assert await b.get() is not None
        await a.update(_record("a"))
        with pytest.raises(LockConflict, match="has been modified"):
            await b.update(_record("b"))


async def test_missing_credentials_are_fatal(secured: Secured) -> None:
    if secured.mode == "http":
        pytest.skip("plain HTTP checks no credentials")
    # The emulator's CA but no credentials at all: 401, which no retry fixes.
    lock = LeaseLock(
        "lock", NS, identity="x", api_client=await secured.emu.api_client("x", auth="none")
    )
    async with lock:
        with pytest.raises(ElectionError, match=r"401 Unauthorized.*credentials were rejected"):
            await lock.get()


async def test_an_untrusted_server_is_a_transient_tls_failure(secured: Secured) -> None:
    if secured.mode == "http":
        pytest.skip("plain HTTP has no certificate to check")
    configuration = await secured.emu.configuration("x")
    configuration.ssl_ca_cert = None  # the system's CAs: they never signed the emulator's
    api = ApiClient(configuration)
    secured.clients.append(api)
    async with LeaseLock("lock", NS, identity="x", api_client=api) as lock:
        with pytest.raises(LockError, match="certificate verify failed") as caught:
            await lock.get()
    assert not isinstance(caught.value, ElectionError)
    assert _statuses(secured.emu, "x") == []  # refused in the handshake: nothing reached it


async def test_a_rotated_token_is_picked_up(secured: Secured) -> None:
    if secured.mode not in REFRESHING:
        pytest.skip("a static credential does not change")
    api = await secured.api_client("a")
    async with LeaseLock("lock", NS, identity="a", api_client=api) as lock:
        await lock.create(_record("a"))
        runs = secured.plugin_runs
        await secured.rotate("t-1")  # the old token is refused from now on
        await lock.update(_record("a"))
        assert await lock.get() is not None
    assert _statuses(secured.emu, "a") == [201, 200, 200]
    if secured.mode == "exec-token":
        assert secured.plugin_runs > runs
    # The old token is really refused: a client that keeps it gets a 401.
    configuration = await secured.emu.configuration("s", auth="none")
    configuration.api_key = {"BearerToken": "Bearer t-0"}
    api_old = ApiClient(configuration)
    secured.clients.append(api_old)
    async with LeaseLock("lock", NS, identity="s", api_client=api_old) as old:
        with pytest.raises(ElectionError, match="401"):
            await old.get()


async def test_an_election_over_each_auth_mode(secured: Secured) -> None:
    names = ("a", "b", "c")
    apis = {name: await secured.api_client(name) for name in names}

    def make_lock(lock_name: str, identity: str, api: Any) -> LeaseLock:
        return LeaseLock(lock_name, NS, identity=identity, api_client=apis[identity])

    async with group(secured.emu, make_lock=make_lock) as g:
        for name in names:
            await g.start(name)
        first = await g.wait_leader()
        await anyio.sleep(0.8)
        if secured.mode in REFRESHING:
            # Rotated under the running election; every client switches within the overlap.
            await secured.rotate("t-1", overlap=1.0)
            await anyio.sleep(0.8)
        assert g.leaders() == [first]
        g.stop(first)  # graceful: a release, then a follower's acquisition
        second = await g.wait_leader(other_than=first)
        await anyio.sleep(0.5)
        assert g.leaders() == [second]
    statuses = [r.status for r in secured.emu.requests if r.client in names]
    assert 401 not in statuses
    assert secured.emu.counters(first)["update"] >= 4  # it renewed (and released)


async def test_a_hung_credential_hook_is_bounded_by_the_request_timeout(emu: KubeEmulator) -> None:
    configuration = await emu.configuration("a")

    async def hang(conf: Configuration) -> None:
        await anyio.sleep_forever()  # an exec plugin waiting for a prompt nobody answers

    configuration.api_key = {"BearerToken": "Bearer t"}  # the hook runs for a token only
    configuration.refresh_api_key_hook = hang
    api = ApiClient(configuration)
    try:
        async with LeaseLock("lock", NS, identity="a", api_client=api) as lock:
            started = anyio.current_time()
            with pytest.raises(LockError, match=r"no response within 0\.3 s"):
                await lock.get(timeout=0.3)
            assert 0.3 <= anyio.current_time() - started < 1.0
    finally:
        await api.close()
    assert emu.requests == []  # it never got as far as sending


async def test_an_owned_client_from_a_kubeconfig_refreshes_an_exec_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock given no client builds one from $KUBECONFIG; kubernetes_asyncio's loader installs
    no refresh, so without ours an exec plugin's token would be sent until it is refused. With
    it, a rotated token is in use from the next request after REFRESH_INTERVAL."""
    from aioleader.kubernetes import _config

    monkeypatch.setattr(_config, "REFRESH_INTERVAL", 0.0)
    async with KubeEmulator(tls=True, token="t-0") as emu:
        secured = Secured(emu, "exec-token", tmp_path)
        secured.token_file.write_text("t-0")
        script = tmp_path / "plugin.py"
        script.write_text(PLUGIN)
        kubeconfig = await emu.kubeconfig(
            "owned", exec_command=[sys.executable, str(script), str(tmp_path)]
        )
        path = tmp_path / "owned.kubeconfig"
        path.write_text(json.dumps(kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(path))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        async with LeaseLock("lock", NS, identity="a") as lock:
            await lock.create(_record("a"))
            runs = secured.plugin_runs
            await secured.rotate("t-1")  # the old token is refused from now on
            await lock.update(_record("a"))
            assert await lock.get() is not None
        assert _statuses(emu, "owned") == [201, 200, 200]
        assert secured.plugin_runs > runs
