"""The emulator: an in-process kube-apiserver for the APIs leader election uses."""

from __future__ import annotations

import asyncio
import base64
import copy
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from ._auth import ClientCertificate, ServerAuth
from ._connection_faults import Faults
from ._decode import format_time
from ._election_controller import ELECTION_WINDOW, GC_INTERVAL, ElectionController
from ._endpoint import ClientEndpoint
from ._registry import Registry
from ._request_log import RequestLog, RequestRecord
from ._resources import (
    EVENTS,
    EVENTS_V1,
    LEASECANDIDATES,
    RESOURCES,
    ResourceType,
    resource_type,
)
from ._server import ApiServer
from ._server_clock import ServerClock
from ._store import Store

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

__all__ = ["EmulatorStatistics", "KubeEmulator"]

DEFAULT_CLIENT = "default"


@final
@dataclass(frozen=True)
class EmulatorStatistics:
    """A snapshot of the emulator's state, for assertions (no leaked watches or requests)."""

    revision: int
    objects: int
    watches: int
    in_flight: int
    endpoints: int


@final
class KubeEmulator:
    """An in-process kube-apiserver for the APIs leader election uses, with fault injection.

    It serves Leases (``coordination.k8s.io/v1``), LeaseCandidates
    (``coordination.k8s.io/v1beta1``), ConfigMaps, Endpoints, Pods (metadata only), Events (core
    ``v1`` and ``events.k8s.io/v1``) and EndpointSlices (``discovery.k8s.io/v1``) over HTTP, so code under test talks to it through the real
    kubernetes_asyncio client. What a real server does is reproduced where leader election can
    tell: one revision counter for all objects; server-set ``uid``, ``creationTimestamp`` and
    ``resourceVersion``; optimistic concurrency with the real 409 Conflict; PUT rules per type
    (a Lease may be created by PUT and must carry a resourceVersion to be updated; a ConfigMap
    may not, and need not); 422 validation with ``details.causes``; 400 for bodies the server
    cannot decode (a ``MicroTime`` without six fractional digits); selectors; and watches with
    replay, 410 Expired after compaction, bookmarks and ``timeoutSeconds``. Error bodies are
    ``Status`` objects with kube-apiserver's exact messages.

    Each simulated client gets its own port over the shared state ([`endpoint()`][endpoint]), with its
    own [`Faults`][Faults]; the default endpoint ([`url`][url]) is the client ``"default"``::

        async with KubeEmulator() as emu:
            api_a = await emu.api_client("pod-a")
            api_b = await emu.api_client("pod-b")
            emu.faults("pod-a").partition("refuse")   # pod-a is cut off
            ...
            assert emu.counters("pod-b")["update"] > 0

    With ``coordinated_election=True`` it also runs kube-apiserver's coordinated leader
    election controller and LeaseCandidate garbage collector (``CoordinatedLeaderElection``):
    it pings candidates, elects by strategy and writes the Lease (``holderIdentity`` or
    ``preferredHolder``, ``strategy``), on the server clock. Pin the clock ([`set_time()`][set_time])
    and it moves only with [`advance()`][advance] or when objects change; [`wait_election_idle()`][wait_election_idle]
    waits until it has handled everything so far. Its writes go through the same validation and
    watches as a client's but are not in the request log.

    With ``tls=True`` it serves HTTPS with a CA of its own ([`ca_file`][ca_file]); ``token=`` makes
    it refuse requests without that bearer token (401 ``Unauthorized``, as kube-apiserver;
    [`set_token()`][set_token] rotates it) and ``client_ca=True`` also admits client certificates it
    issued ([`client_certificate()`][client_certificate]). [`api_client()`][api_client] and [`kubeconfig()`][kubeconfig] are configured
    accordingly::

        async with KubeEmulator(tls=True, token="s3cret") as emu:
            api = await emu.api_client("pod-a")      # https, the CA, "Bearer s3cret"

    Not emulated: authorization (every authenticated request is allowed), namespaces as
    objects (every namespace exists), finalizers and graceful deletion, ``dryRun``,
    server-side apply and ``managedFields``, label and annotation validation, and list
    consistency (``resourceVersion`` on a list is ignored; ``limit``/``continue`` page through
    the current state rather than a snapshot). A watch whose object stops matching its label
    selector gets a DELETED event, as from the watch cache.

    The emulator runs on asyncio (it is an aiohttp server). Start it with ``await start()`` and
    stop it with ``await stop()`` (or use ``async with``), which resets every connection, so it
    returns promptly even with hung requests and open watches. kubernetes_asyncio honours
    ``HTTP(S)_PROXY``: if your environment sets one, add ``127.0.0.1`` to ``NO_PROXY``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        history_size: int = 1000,
        bookmark_interval: float = 1.0,
        seed: object = 0,
        lease_candidates: bool = True,
        coordinated_election: bool = False,
        election_window: float = ELECTION_WINDOW,
        lease_candidate_gc_interval: float = GC_INTERVAL,
        tls: bool = False,
        token: str | Iterable[str] | None = None,
        client_ca: bool = False,
    ) -> None:
        """
        Args:
            host: the interface every endpoint listens on.
            port: the default endpoint's port; 0 picks a free one.
            history_size: changes kept per resource type for watches to resume from; older
                resourceVersions get 410 Expired (see also [`compact()`][compact]).
            bookmark_interval: seconds between BOOKMARK events on watches that allow them.
            seed: seeds every client's ``error_rate`` draws (with the client name).
            lease_candidates: serve ``coordination.k8s.io/v1beta1`` LeaseCandidates (a cluster
                with that API enabled); False is a cluster without it (404s, not in discovery).
            coordinated_election: run kube-apiserver's coordinated leader election controller
                and the LeaseCandidate garbage collector (the ``CoordinatedLeaderElection``
                feature gate); needs ``lease_candidates``.
            election_window: the controller's election window in seconds (kube-apiserver: 5),
                also its requeue interval; shorten it for tests that run in real time.
            lease_candidate_gc_interval: seconds between garbage collections of candidates not
                renewed for 30 minutes (kube-apiserver: 30 min).
            tls: serve HTTPS with a generated CA (needs ``trustme``, in the ``testing`` extra).
            token: the bearer token (or tokens) a request must carry; ``None`` checks none.
            client_ca: admit client certificates issued by the emulator's CA (needs ``tls``);
                with ``token`` as well, either one authenticates a request.
        """
        if bookmark_interval <= 0:
            raise ValueError("bookmark_interval must be positive")
        if coordinated_election and not lease_candidates:
            raise ValueError("coordinated_election needs lease_candidates (the v1beta1 API)")
        tokens = () if token is None else (token,) if isinstance(token, str) else tuple(token)
        self._auth = ServerAuth(tls=tls, tokens=tokens, client_ca=client_ca)
        self._host = host
        self._port = port
        self._seed = seed
        self._clock = ServerClock(on_change=self._clock_changed)
        self._store = Store(history_size)
        self._log = RequestLog()
        registry = Registry(self._store, self._clock)
        served = [rt for rt in RESOURCES if lease_candidates or rt is not LEASECANDIDATES]
        self._server = ApiServer(
            self._store,
            registry,
            self._clock,
            self._log,
            bookmark_interval,
            served,
            self._auth if self._auth.checks else None,
        )
        self._controller: ElectionController | None = None
        if coordinated_election:
            self._controller = ElectionController(
                self._store,
                registry,
                self._clock,
                election_window=election_window,
                gc_interval=lease_candidate_gc_interval,
            )
        self._endpoints: dict[str, ClientEndpoint] = {}
        self._faults: dict[str, Faults] = {}
        self._clients: list[ApiClient] = []
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        state = "running" if self._started and not self._stopped else "stopped"
        url = self.url if self._started else "-"
        return f"<KubeEmulator {state} {url} revision={self._store.revision}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening (the default endpoint); returns when requests are served."""
        if self._started:
            raise RuntimeError("the emulator was already started")
        self._started = True
        if self._controller is not None:
            self._controller.start()
        await self.endpoint(DEFAULT_CLIENT, port=self._port)

    async def stop(self) -> None:
        """Stop: close every port and connection, and the API clients made by [`api_client()`][api_client].

        Hung requests and open watches see their connection reset. Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._controller is not None:
            await self._controller.stop()
        await asyncio.gather(*(ep.close() for ep in self._endpoints.values()))
        clients, self._clients = self._clients, []
        if clients:
            # Let requests in flight see the reset (and fail aiohttp's retry against the closed
            # port) before their session closes under them, which would fail them obscurely.
            await asyncio.sleep(0.02)
        for client in clients:
            await client.close()
        self._auth.close()

    async def __aenter__(self) -> KubeEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def restart(self, downtime: float = 0.0) -> None:
        """Simulate an API server restart: every connection is reset and connects are refused
        for ``downtime`` seconds; then every port listens again. State and watch history are
        kept (partitioned endpoints stay partitioned)."""
        self._check_running()
        for ep in self._endpoints.values():
            ep.set_down(True)
        await asyncio.sleep(downtime)
        for ep in self._endpoints.values():
            ep.set_down(False)
        await asyncio.gather(*(ep.wait_listening() for ep in self._endpoints.values()))

    def _check_running(self) -> None:
        if not self._started:
            raise RuntimeError("the emulator is not started")
        if self._stopped:
            raise RuntimeError("the emulator is stopped")

    # -- clients ----------------------------------------------------------------------------

    async def endpoint(self, client: str = DEFAULT_CLIENT, *, port: int = 0) -> ClientEndpoint:
        """The port dedicated to ``client``, opened on first use (idempotent).

        ``port`` is only used when the endpoint is created; 0 picks a free one.
        """
        if self._stopped:
            raise RuntimeError("the emulator is stopped")
        ep = self._endpoints.get(client)
        if ep is None:
            ep = ClientEndpoint(
                client,
                self._host,
                port,
                self.faults(client),
                self._server.handle,
                self._auth.server_context,
            )
            ep.open()
            self._endpoints[client] = ep
        await ep.wait_listening()
        return ep

    async def api_client(self, client: str = DEFAULT_CLIENT, *, auth: str = "auto") -> ApiClient:
        """A kubernetes_asyncio ``ApiClient`` for ``client``'s endpoint, with the emulator's CA
        and credentials: ``auth`` is ``"token"`` (the first accepted token, as it is now),
        ``"certificate"`` ([`client_certificate()`][client_certificate]), ``"none"``, or ``"auto"``: a token if
        the emulator checks tokens, else a certificate if it checks those, else none.

        The emulator closes it on [`stop()`][stop] (closing it earlier is fine).
        """
        from kubernetes_asyncio.client import ApiClient

        api = ApiClient(await self.configuration(client, auth=auth))
        self._clients.append(api)
        return api

    async def configuration(self, client: str = DEFAULT_CLIENT, *, auth: str = "auto") -> Any:
        """The kubernetes_asyncio ``Configuration`` that [`api_client()`][api_client] uses."""
        from kubernetes_asyncio.client import Configuration

        ep = await self.endpoint(client)
        configuration = Configuration(host=ep.url)
        if self._auth.tls:
            configuration.ssl_ca_cert = str(self._auth.ca_file)
        mode = self._auth.resolve(auth)
        user = self._auth.kubeconfig_user(client, mode)  # checks ``auth``
        if mode == "token":
            configuration.api_key = {"BearerToken": f"Bearer {user['token']}"}
        elif mode == "certificate":
            cert = self._auth.client_certificate(client)
            configuration.cert_file, configuration.key_file = (
                str(cert.cert_file),
                str(cert.key_file),
            )
        return configuration

    async def kubeconfig(
        self,
        client: str = DEFAULT_CLIENT,
        *,
        auth: str = "auto",
        namespace: str = "default",
        exec_command: Sequence[str] | None = None,
        token_file: str | Path | None = None,
    ) -> dict[str, Any]:
        """A kubeconfig (a dict: dump it as JSON, which is YAML) for ``client``'s endpoint with
        the CA inline and the credentials of [`api_client()`][api_client]; or, instead, a user whose token
        comes from an exec plugin (``exec_command``: the command and its arguments, printing an
        ``ExecCredential``) or from a file read by the client (``token_file``)."""
        ep = await self.endpoint(client)
        cluster: dict[str, Any] = {"server": ep.url}
        if self._auth.tls:
            cluster["certificate-authority-data"] = _b64(self._auth.ca_pem)
        if exec_command is not None:
            command = list(exec_command)
            if not command:
                raise ValueError("exec_command must name a command")
            user: dict[str, Any] = {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": command[0],
                    "args": command[1:],
                    "interactiveMode": "Never",
                }
            }
        elif token_file is not None:
            user = {"tokenFile": str(token_file)}
        else:
            user = self._auth.kubeconfig_user(client, self._auth.resolve(auth))
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": client, "user": user}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": client, "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }

    # -- authentication ---------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        """Whether the emulator serves HTTPS."""
        return self._auth.tls

    @property
    def ca_file(self) -> Path:
        """The emulator's CA certificate (PEM file; ``tls=True`` only), to trust its server."""
        return self._auth.ca_file

    @property
    def tokens(self) -> frozenset[str]:
        """The bearer tokens accepted now (empty: tokens are not checked)."""
        return self._auth.tokens

    def set_token(self, *tokens: str) -> None:
        """Rotate: accept exactly ``tokens`` from now on, refuse the others with 401. Needs an
        emulator built with ``token=`` (one that checks tokens)."""
        if not self._auth.checks:
            raise RuntimeError("the emulator checks no credentials (KubeEmulator(token=...))")
        if not tokens and not self._auth.client_ca:
            raise ValueError("set_token() needs a token: none would lock every client out")
        self._auth.set_tokens(tokens)

    def client_certificate(self, client: str = DEFAULT_CLIENT) -> ClientCertificate:
        """A client certificate for ``client`` signed by the emulator's CA (``client_ca=True``
        only), as PEM files."""
        return self._auth.client_certificate(client)

    @property
    def url(self) -> str:
        """The default endpoint's URL (client ``"default"``)."""
        return self._default().url

    @property
    def port(self) -> int:
        """The default endpoint's port."""
        return self._default().port

    def faults(self, client: str = DEFAULT_CLIENT) -> Faults:
        """``client``'s faults (usable before its endpoint is opened)."""
        faults = self._faults.get(client)
        if faults is None:
            faults = self._faults[client] = Faults(f"{self._seed}:{client}")
        return faults

    def _default(self) -> ClientEndpoint:
        try:
            return self._endpoints[DEFAULT_CLIENT]
        except KeyError:
            raise RuntimeError("the emulator is not started") from None

    def endpoints(self) -> dict[str, ClientEndpoint]:
        """Every endpoint opened so far, by client name."""
        return dict(self._endpoints)

    # -- clock ------------------------------------------------------------------------------

    @property
    def clock(self) -> ServerClock:
        """The server's wall clock (creation timestamps, the request log, the controller)."""
        return self._clock

    def _clock_changed(self) -> None:
        if self._controller is not None:
            self._controller.wake()

    @property
    def coordinated_election(self) -> bool:
        """Whether the coordinated leader election controller runs."""
        return self._controller is not None

    async def wait_election_idle(self) -> None:
        """Wait until the election controller has handled every change made so far and all
        that is due at the current server time (pings, elections, garbage collection).

        With the server clock pinned, the controller then does nothing more until the clock
        moves or an object changes, so a test can step through an election::

            emu.set_time(t0)
            ...                                # candidates created, pings acknowledged
            emu.advance(5)                     # the election window passes
            await emu.wait_election_idle()
            assert emu.get_object("leases", ns, "lock")["spec"]["holderIdentity"] == "a"
        """
        if self._controller is None:
            raise RuntimeError("the emulator runs without coordinated_election")
        self._check_running()
        await self._controller.wait_idle()

    def set_time(self, moment: datetime) -> None:
        """Pin the server clock at ``moment``; it then moves only with [`advance()`][advance]."""
        self._clock.set(moment)

    def advance(self, seconds: float) -> None:
        """Move the server clock forward."""
        self._clock.advance(seconds)

    # -- request log ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request so far, in order of outcome."""
        return self._log.records()

    def counters(self, client: str | None = None) -> dict[str, int]:
        """Requests per verb for ``client`` (all clients if None)."""
        return dict(self._log.counters(client))

    def reset_log(self) -> None:
        """Forget the request log (counters start from zero)."""
        self._log.clear()

    # -- state ------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The current global revision (the latest ``resourceVersion`` handed out)."""
        return self._store.revision

    def compact(self) -> None:
        """Drop the watch history: watches resuming from older versions get 410 Expired."""
        self._store.compact()

    def get_object(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of a stored object, as a GET would return it, or None.

        ``resource`` is a plural (``"leases"``, ``"configmaps"``, ``"endpoints"``,
        ``"events"``) or a qualified name (``"events.events.k8s.io"``).
        """
        rt = resource_type(resource)
        obj = self._store.get(rt, namespace, name)
        return None if obj is None else _served(rt, obj)

    def put_raw(
        self, resource: str, namespace: str, name: str, obj: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store ``obj`` as is, bypassing decoding and validation, and notify watchers.

        For states a client must survive but cannot write through the API: a ``null`` spec,
        a negative duration, a garbage timestamp. ``metadata.name``, ``namespace`` and
        ``resourceVersion`` are set; ``uid`` and ``creationTimestamp`` are kept from the
        stored object (or made up). Returns a copy of what was stored.
        """
        rt = resource_type(resource)
        document = {
            k: v for k, v in copy.deepcopy(dict(obj)).items() if k not in ("kind", "apiVersion")
        }
        meta = document.get("metadata")
        meta = dict(meta) if isinstance(meta, Mapping) else {}
        old_meta = (self._store.get(rt, namespace, name) or {}).get("metadata", {})
        for kept in ("uid", "creationTimestamp"):
            if kept not in meta and kept in old_meta:
                meta[kept] = old_meta[kept]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", format_time(self._clock.now()))
        meta.update(name=name, namespace=namespace)
        return _served(rt, self._store.put(rt, {**document, "metadata": meta}))

    def delete_object(self, resource: str, namespace: str, name: str) -> bool:
        """Delete an object behind the clients' backs (watchers see DELETED)."""
        rt = resource_type(resource)
        if self._store.get(rt, namespace, name) is None:
            return False
        self._store.delete(rt, namespace, name)
        return True

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the stored objects of a type (in one namespace, or all), in key order."""
        rt = resource_type(resource)
        return [
            _served(rt, o)
            for o in self._store.list(
                rt, lambda o: namespace is None or o["metadata"].get("namespace") == namespace
            )
        ]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every stored Event (core ``v1`` and ``events.k8s.io/v1``), oldest first."""
        found = [
            _served(rt, o)
            for rt in (EVENTS, EVENTS_V1)
            for o in self._store.list(rt, lambda o: True)
        ]
        return sorted(found, key=lambda event: int(event["metadata"]["resourceVersion"]))

    def statistics(self) -> EmulatorStatistics:
        """Counts for assertions: objects, open watches, requests in progress."""
        return EmulatorStatistics(
            revision=self._store.revision,
            objects=self._store.count(),
            # HTTP watches only: the election controller's own do not count.
            watches=sum(len(ep.watchers) for ep in self._endpoints.values()),
            in_flight=sum(ep.in_flight for ep in self._endpoints.values()),
            endpoints=len(self._endpoints),
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _served(rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a stored object, as a GET returns it."""
    return copy.deepcopy(rt.with_kind(obj))
