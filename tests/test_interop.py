"""Interop: aioleader candidates and other libraries' electors contend for the same lock.

The peers are the two Python electors people run today, each used as documented:

* ``kubernetes`` (the official client): ``kubernetes.leaderelection`` with its ``LeaseLock`` and
  ``ConfigMapLock``, synchronous;
* ``kubernetes_asyncio``: ``kubernetes_asyncio.leaderelection`` with its ``LeaseLock`` and
  ``ConfigMapLock``.

Each peer runs in its own process (``tests/_interop_peers.py``), so that it can be SIGKILLed, with a
kubeconfig for its own emulator endpoint, and reports ``LEADING``/``STOPPED`` with
``time.monotonic()``. That is CLOCK_MONOTONIC, one clock for every process on a Linux machine, and
the clock of the test's asyncio loop (``anyio.current_time()``), which :func:`shared_clock`
checks; every interval of leader work, the peers' and aioleader's, is then on one time line, and
no two may overlap.

The peers refuse a retry period under 1 s, so they run with LD 2 s, RD 1.5 s, RP 1 s; aioleader
runs with the same lease duration and renew deadline (a deployment configures its candidates
alike) and a shorter retry period. Real time throughout: these tests assert invariants and coarse
bounds.

What each peer writes and how it decides, and the quirks tested here, are in ``docs/interop.md``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import pytest
import pytest_asyncio
from anyio.streams.buffered import BufferedByteReceiveStream

from aioleader import Leadership, Timing
from aioleader._lock import Lock
from aioleader._record import LEADER_ANNOTATION
from aioleader.kubernetes import ConfigMapLock, LeaseLock
from aioleader.locks import MultiLock
from aioleader.testing import KubeEmulator, TermLog, WorkInterval, lead_forever
from aioleader.testing.__main__ import kubeconfig

# Every test here points peers at per-client emulator endpoints and reads or plants raw objects.
pytestmark = [pytest.mark.asyncio, pytest.mark.emulator_only]

PeerKind = Literal["kubernetes", "kubernetes_asyncio"]
LockKind = Literal["lease", "configmap"]
PEERS: tuple[PeerKind, ...] = ("kubernetes", "kubernetes_asyncio")
LOCKS: tuple[LockKind, ...] = ("lease", "configmap")

PEER_SCRIPT = Path(__file__).with_name("_interop_peers.py")
# Both peers exit (sys.exit / ValueError) on a retry period or renew deadline under 1 s, and
# write the lease duration with int(str(...)), so it must be integral.
PEER_LD, PEER_RD, PEER_RP = 2, 1.5, 1.0
TIMING = Timing(lease_duration=PEER_LD, renew_deadline=PEER_RD, retry_period=0.25)
# The peers run 14 hours east of UTC (a POSIX TZ string: no tzdata needed), so that a local time
# written as UTC cannot pass unnoticed.
PEER_TZ = "PEER-14"
PEER_UTC_OFFSET = timedelta(hours=14)
NS = "default"
NAME = "interop"
# Real time: the loops' and the processes' scheduling latency on a busy CI machine.
SLACK = 0.5


@pytest_asyncio.fixture
async def shared_clock() -> None:
    """Intervals from other processes are comparable with ours only on one system-wide clock:
    CLOCK_MONOTONIC, which is time.monotonic(), which is asyncio's loop.time(), which is
    anyio.current_time() - checked here; each peer's first line is checked against it too."""
    if not sys.platform.startswith("linux"):
        pytest.skip("comparing time.monotonic() across processes needs Linux's CLOCK_MONOTONIC")
    assert time.get_clock_info("monotonic").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    before = time.monotonic()
    loop_now = asyncio.get_running_loop().time()
    anyio_now = anyio.current_time()
    after = time.monotonic()
    assert before <= loop_now <= anyio_now <= after


# -- peers -------------------------------------------------------------------------------------


class Peer:
    """One peer process: its events (first occurrence, by name) and its stderr, for failures."""

    def __init__(self, kind: PeerKind, lock: LockKind, identity: str) -> None:
        self.kind = kind
        self.lock = lock
        self.identity = identity
        self.process: anyio.abc.Process | None = None
        self.events: dict[str, float] = {}
        self.stderr = bytearray()
        self.spawned_at = 0.0
        self.killed_at: float | None = None
        self._changed = anyio.Event()
        self._readers_done = anyio.Event()
        self._readers = 0

    def __repr__(self) -> str:
        return f"<Peer {self.kind}/{self.lock} {self.identity} {self.events}>"

    def log(self) -> str:
        return bytes(self.stderr[-6000:]).decode(errors="replace")

    async def spawn(self, tg: anyio.abc.TaskGroup, config: Path, *, tz: str) -> None:
        argv = [sys.executable, str(PEER_SCRIPT), self.kind, self.lock]
        argv += ["--kubeconfig", str(config), "--name", NAME, "--namespace", NS]
        argv += ["--identity", self.identity, "--lease-duration", str(PEER_LD)]
        argv += ["--renew-deadline", str(PEER_RD), "--retry-period", str(PEER_RP), "--wait"]
        self.spawned_at = anyio.current_time()
        self.process = await anyio.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TZ": tz, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        self._readers = 2
        tg.start_soon(self._read_events)
        tg.start_soon(self._read_stderr)

    async def _read_events(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        stream = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                line = (await stream.receive_until(b"\n", 4096)).decode()
                event, _, stamp = line.partition(" ")
                self.events.setdefault(event, float(stamp))
                self._changed.set()
                self._changed = anyio.Event()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            pass
        finally:
            self._reader_done()

    async def _read_stderr(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        try:
            async for chunk in self.process.stderr:
                self.stderr += chunk
        finally:
            self._reader_done()

    def _reader_done(self) -> None:
        self._readers -= 1
        if self._readers == 0:
            self._readers_done.set()
        self._changed.set()

    async def wait(self, event: str, limit: float) -> float:
        """When the peer reported ``event``, waiting up to ``limit`` seconds for it."""
        with anyio.move_on_after(limit):
            while event not in self.events and not self._readers_done.is_set():
                await self._changed.wait()
        if event not in self.events:
            raise AssertionError(f"{self!r} did not report {event} in {limit}s:\n{self.log()}")
        return self.events[event]

    async def go(self) -> None:
        """Let a peer that reported HELLO campaign."""
        hello = await self.wait("HELLO", 20)
        # The peer's time.monotonic() falls between our spawn and our reading its line: one clock.
        assert self.spawned_at <= hello <= anyio.current_time()
        assert self.process is not None
        assert self.process.stdin is not None
        await self.process.stdin.send(b"go\n")

    async def kill(self) -> float:
        """SIGKILL (no release, no last word); returns when the process is gone."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        if self.killed_at is None:
            self.killed_at = anyio.current_time()
        return self.killed_at

    async def close(self) -> None:
        await self.kill()
        await self._readers_done.wait()
        assert self.process is not None
        await self.process.aclose()

    def interval(self) -> WorkInterval | None:
        """The peer's leader work: from ``onstarted_leading`` until ``onstopped_leading`` (the
        process exits right after it) or until the process was killed."""
        start = self.events.get("LEADING")
        if start is None:
            return None
        end = self.events.get("STOPPED", self.killed_at)
        assert end is not None, f"{self!r} is still running"
        return WorkInterval(self.identity, 1, -1, start, end, math.inf, "peer")


# -- the arena: aioleader candidates and peers on one lock --------------------------------------


def make_lock(kind: LockKind, identity: str, api: Any) -> Lock:
    if kind == "lease":
        return LeaseLock(NAME, NS, identity=identity, api_client=api)
    return ConfigMapLock(NAME, NS, identity=identity, api_client=api)


def stored_record(emu: KubeEmulator, kind: LockKind) -> dict[str, Any]:
    """The record as stored: a Lease's spec, or a ConfigMap's annotation JSON."""
    if kind == "lease":
        lease = emu.get_object("leases", NS, NAME)
        assert lease is not None
        spec = lease["spec"]
        assert isinstance(spec, dict)
        return spec
    configmap = emu.get_object("configmaps", NS, NAME)
    assert configmap is not None
    record = json.loads(configmap["metadata"]["annotations"][LEADER_ANNOTATION])
    assert isinstance(record, dict)
    return record


def transitions_field(kind: LockKind) -> str:
    return "leaseTransitions" if kind == "lease" else "leaderTransitions"


class Arena:
    """aioleader candidates (each through its own endpoint, terms in one :class:`TermLog`) and
    peer processes on one lock."""

    def __init__(
        self, emu: KubeEmulator, tg: anyio.abc.TaskGroup, kind: LockKind, tmp: Path
    ) -> None:
        self.emu = emu
        self.tg = tg
        self.kind = kind
        self.tmp = tmp
        self.log = TermLog(tolerance=0.05)
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.done: dict[str, anyio.Event] = {}
        self.leaderships: dict[str, Leadership] = {}
        self.peers: list[Peer] = []

    async def spawn(self, kind: PeerKind, identity: str, *, tz: str = PEER_TZ) -> Peer:
        endpoint = await self.emu.endpoint(identity)
        config = self.tmp / f"{identity}.kubeconfig"
        config.write_text(kubeconfig(endpoint.url, NS))
        peer = Peer(kind, self.kind, identity)
        self.peers.append(peer)
        await peer.spawn(self.tg, config, tz=tz)
        return peer

    async def start(
        self, name: str, timing: Timing = TIMING, *, multilock: bool = False
    ) -> Leadership:
        api = await self.emu.api_client(name)
        lock = make_lock(self.kind, name, api)
        if multilock:  # the migration's new replicas: the old lock first, the Lease second
            lock = MultiLock(lock, LeaseLock(NAME, NS, identity=name, api_client=api))
        scope = anyio.CancelScope()
        done = anyio.Event()
        self.scopes[name] = scope
        self.done[name] = done

        async def run(*, task_status: anyio.abc.TaskStatus[Leadership]) -> None:
            try:
                with scope:
                    await lead_forever(lock, self.log, task_status=task_status, timing=timing)
            finally:
                done.set()

        leadership: Leadership = await self.tg.start(run)
        self.leaderships[name] = leadership
        return leadership

    async def stop(self, name: str) -> float:
        """Stop a candidate gracefully; returns when its leader work ended and it released."""
        self.scopes[name].cancel()
        del self.leaderships[name]
        await self.done[name].wait()
        return anyio.current_time()

    def leaders(self) -> list[str]:
        return [n for n, lead in self.leaderships.items() if lead.is_leader_nowait()]

    async def wait_leader(self, limit: float) -> str:
        with anyio.fail_after(limit):
            while not self.leaders():
                await anyio.sleep(0.01)
        return self.leaders()[0]

    async def wait_requests(self, client: str, verb: str, count: int, limit: float) -> None:
        with anyio.fail_after(limit):
            while self.emu.counters(client).get(verb, 0) < count:
                await anyio.sleep(0.02)

    def record(self) -> dict[str, Any]:
        return stored_record(self.emu, self.kind)

    def intervals(self) -> list[WorkInterval]:
        found = list(self.log.intervals)
        for peer in self.peers:
            interval = peer.interval()
            if interval is not None:
                found.append(interval)
        return found

    def overlaps(self) -> list[tuple[WorkInterval, WorkInterval]]:
        return TermLog(intervals=self.intervals()).overlaps


@asynccontextmanager
async def arena(
    emu: KubeEmulator, kind: LockKind, tmp: Path, *, check: bool = True
) -> AsyncIterator[Arena]:
    """Run candidates and peers; on exit kill the peers, stop the candidates and (unless told
    otherwise) assert that no two of all their intervals of leader work overlapped."""
    async with anyio.create_task_group() as tg:
        a = Arena(emu, tg, kind, tmp)
        try:
            yield a
        finally:
            with anyio.CancelScope(shield=True):
                for peer in a.peers:
                    await peer.close()
            tg.cancel_scope.cancel()
    if check:
        assert a.overlaps() == [], "\n\n".join(p.log() for p in a.peers)
        assert a.log.late_work == []
        assert a.log.fencing_monotonic


# -- what each peer writes ----------------------------------------------------------------------


def parse_local(value: str) -> datetime:
    """``str(datetime.fromtimestamp(t))``, the peers' record time: local, naive, space-separated,
    with or without microseconds."""
    for layout in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, layout)
        except ValueError:
            pass
    raise AssertionError(f"not str(datetime): {value!r}")


def assert_peer_record(peer: Peer, record: dict[str, Any]) -> None:
    """The record exactly as the peer writes it, quirks included (docs/interop.md)."""
    now = datetime.now(timezone.utc)
    assert record["holderIdentity"] == peer.identity
    if peer.lock == "configmap":
        # Both peers: the four fields only (no leaderTransitions), the duration as a JSON string
        # (str(lease_duration)), times as str() of the *local* naive datetime.
        assert set(record) == {"holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime"}
        assert record["leaseDurationSeconds"] == str(PEER_LD)
        local_now = now.replace(tzinfo=None) + PEER_UTC_OFFSET
        renewed = parse_local(record["renewTime"])
        assert abs(renewed - local_now) < timedelta(seconds=30)
        return
    # Lease: no leaseTransitions on create (and the peers never write it afterwards).
    assert "leaseTransitions" not in record
    assert record["leaseDurationSeconds"] == PEER_LD
    renewed = datetime.strptime(record["renewTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
    renewed = renewed.replace(tzinfo=timezone.utc)
    if peer.kind == "kubernetes_asyncio":
        # time_str_to_iso(): the local wall clock with a "Z" appended - 14 hours in the future.
        assert abs(renewed - (now + PEER_UTC_OFFSET)) < timedelta(seconds=30)
    else:
        # The official client converts local time to UTC (on the wire as "+00:00", which the
        # server accepts and stores as "Z"; see test_official_lease_lock_offset_times_...).
        assert abs(renewed - now) < timedelta(seconds=30)


# -- the contest --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LOCKS)
@pytest.mark.parametrize("peer_kind", PEERS)
async def test_peer_crash_failover_and_graceful_handover(
    emu: KubeEmulator, tmp_path: Path, shared_clock: None, peer_kind: PeerKind, kind: LockKind
) -> None:
    """A peer leads, aioleader candidates wait; the peer is SIGKILLed and aioleader takes over
    within LD + 2.2·RP; aioleader releases and a peer takes over within its retry period. No two
    leaders at any time, peers included."""
    async with arena(emu, kind, tmp_path) as a:
        first = await a.spawn(peer_kind, "peer-1")
        await first.go()
        await first.wait("LEADING", 10)
        assert_peer_record(first, a.record())
        # The second peer starts up now (importing a client takes seconds), campaigns later.
        second = await a.spawn(peer_kind, "peer-2")

        await a.start("aio-a")
        await a.start("aio-b")
        await anyio.sleep(1.2 * PEER_RP)  # the peer renews; aioleader only watches
        assert a.leaders() == []
        assert a.record()["holderIdentity"] == first.identity

        # Crash: aioleader waits the record's lease duration (the peers write 2, as an integer
        # in a Lease and as the string "2" in a ConfigMap, which aioleader reads as "invalid,
        # use our own": also 2 here) after it last saw the record change.
        killed = await first.kill()
        winner = await a.wait_leader(PEER_LD + 2.2 * TIMING.retry_period + 2 * SLACK)
        took = anyio.current_time() - killed
        assert PEER_LD - PEER_RP - SLACK <= took <= PEER_LD + 2.2 * TIMING.retry_period + SLACK
        record = a.record()
        assert record["holderIdentity"] == winner
        # The peer wrote no transition count; aioleader's takeover is transition 1.
        assert record[transitions_field(kind)] == 1

        # Graceful handover to a peer: aioleader releases (holder "") and the peer, which reads
        # an empty holder as a free lock, takes it at its next retry.
        await second.go()
        await a.wait_requests(second.identity, "get", 1, limit=2 * PEER_RP + SLACK)
        assert "LEADING" not in second.events
        loser = "aio-b" if winner == "aio-a" else "aio-a"
        await a.stop(loser)
        released = await a.stop(winner)
        # Released (or already taken: the peer may have polled since).
        assert a.record()["holderIdentity"] in ("", second.identity)
        started = await second.wait("LEADING", PEER_RP + 2 * SLACK)
        assert started - released <= PEER_RP + SLACK
        record = a.record()
        assert record["holderIdentity"] == second.identity
        if kind == "lease":
            # The peers keep the spec they read: leaseTransitions stays at aioleader's 1, so a
            # peer's term shares the fencing token of the aioleader term before it.
            assert record["leaseTransitions"] == 1
        else:
            # ... and rewrite the whole annotation: leaderTransitions is gone (reads as 0).
            assert "leaderTransitions" not in record
    assert len(a.log.intervals) == 1
    assert [i.identity for i in sorted(a.intervals(), key=lambda i: i.start)] == [
        "peer-1",
        winner,
        "peer-2",
    ]


@pytest.mark.parametrize("peer_kind", PEERS)
async def test_peer_with_a_hung_request_outlives_its_lease(
    emu: KubeEmulator, tmp_path: Path, shared_clock: None, peer_kind: PeerKind
) -> None:
    """The peers' worst safety gap, which no other candidate can close: they send requests
    without a timeout and check their renew deadline only between requests. A leader whose
    request hangs goes on leading while aioleader, correctly, takes the expired lease: two
    leaders, until the hung request returns. (aioleader bounds every request by what is left of
    its renew window: test_elector_emulator.py::test_leader_cut_off_longer_than_lease_duration.)
    """
    async with arena(emu, "lease", tmp_path, check=False) as a:
        peer = await a.spawn(peer_kind, "peer-1")
        await peer.go()
        await peer.wait("LEADING", 10)
        leadership = await a.start("aio")
        await anyio.sleep(0.3)
        emu.faults(peer.identity).hang = True
        hung = anyio.current_time()
        with anyio.fail_after(PEER_LD + 2.2 * TIMING.retry_period + 2 * SLACK):
            term = await leadership.wait_term()
        assert anyio.current_time() - hung <= PEER_LD + 2.2 * TIMING.retry_period + SLACK
        # The peer's own deadline (RD after its last renewal attempt began) is past, but it is
        # still waiting for an answer, so it has not noticed.
        await anyio.sleep(SLACK)
        assert "STOPPED" not in peer.events
        emu.faults(peer.identity).hang = False
        # It learns at its next answer, then sleeps RP before it looks at its deadline again.
        stopped = await peer.wait("STOPPED", PEER_RP + 2 * SLACK)
        assert term.active  # aioleader was never disturbed
    [(first, second)] = a.overlaps()
    assert (first.identity, second.identity) == (peer.identity, "aio")
    assert stopped - second.start >= SLACK


# -- quirks, one by one (docs/interop.md) -------------------------------------------------------


async def wait_term_of(a: Arena, name: str, limit: float) -> float:
    """Start candidate ``name``; return how long it took to become leader."""
    start = anyio.current_time()
    leadership = await a.start(name)
    with anyio.fail_after(limit):
        await leadership.wait_term()
    return anyio.current_time() - start


@pytest.mark.parametrize("skew_hours", [14, -14])
async def test_lease_times_in_the_wrong_zone_are_ignored(
    emu: KubeEmulator, tmp_path: Path, skew_hours: int
) -> None:
    """kubernetes_asyncio writes local time with a "Z" (see the contest's record check). A reader
    judging expiry on renewTime would wait 14 hours, or take a live lease at once; aioleader
    waits the record's duration after it *observed* the record, whatever its times say."""
    fake = datetime.now(timezone.utc) + timedelta(hours=skew_hours)
    stamp = fake.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    emu.put_raw(
        "leases",
        NS,
        NAME,
        {
            "metadata": {},
            # As kubernetes_asyncio creates it: no leaseTransitions.
            "spec": {
                "holderIdentity": "peer",
                "leaseDurationSeconds": 1,
                "acquireTime": stamp,
                "renewTime": stamp,
            },
        },
    )
    async with arena(emu, "lease", tmp_path) as a:
        took = await wait_term_of(a, "aio", 1 + 2 * SLACK)
        assert 1 - 0.05 <= took <= 1 + SLACK
        assert a.record()["leaseTransitions"] == 1


async def test_configmap_record_written_by_python_peers(emu: KubeEmulator, tmp_path: Path) -> None:
    """Both Python peers write the annotation with str() values: the duration as a JSON string and
    the times as local naive datetimes. client-go cannot decode that record at all (json.Unmarshal
    fails, so it never takes such a lock over); aioleader reads the holder and the duration written
    as a string (the peer's own lease duration applies, not ours) and ignores the times."""
    local = datetime.now() + PEER_UTC_OFFSET
    annotation = json.dumps(
        {
            "holderIdentity": "peer",
            "leaseDurationSeconds": "3",
            "acquireTime": str(local),
            "renewTime": str(local.replace(microsecond=0)),
        }
    )
    emu.put_raw(
        "configmaps",
        NS,
        NAME,
        {"metadata": {"annotations": {LEADER_ANNOTATION: annotation}}},
    )
    async with arena(emu, "configmap", tmp_path) as a:
        start = anyio.current_time()
        leadership = await a.start("aio")
        with anyio.fail_after(TIMING.lease_duration + 2 * SLACK):
            while leadership.leader is None:
                await anyio.sleep(0.01)
        assert leadership.leader == "peer"  # a holder, not an unreadable record
        await leadership.wait_term()
        took = anyio.current_time() - start
        assert 3 - 0.05 <= took <= 3 + SLACK  # the peer's "3", longer than our own 2
        record = a.record()
        assert record == {
            "holderIdentity": "aio",
            "leaseDurationSeconds": TIMING.lease_duration_seconds,
            "acquireTime": record["acquireTime"],
            "renewTime": record["renewTime"],
            "leaderTransitions": 1,
        }
        datetime.strptime(record["renewTime"], "%Y-%m-%dT%H:%M:%SZ")


async def test_kubernetes_asyncio_lease_lock_writes_no_times_at_whole_seconds(
    emu: KubeEmulator, tmp_path: Path
) -> None:
    """kubernetes_asyncio's time_str_to_iso() parses str(now) only with microseconds; when they are
    0 (one write in a million) it logs an error and writes no time: a new Lease then has no
    acquireTime/renewTime, and a renewal leaves the spec as it was, invisible to followers.
    aioleader takes such a Lease over after its duration, times or not."""
    from kubernetes_asyncio.leaderelection.leaderelectionrecord import (
        LeaderElectionRecord as PeerRecord,
    )
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import (
        LeaseLock as PeerLeaseLock,
    )

    lock = PeerLeaseLock(NAME, NS, "peer", await emu.api_client("peer"))
    whole = str(datetime.fromtimestamp(math.floor(time.time())))
    assert await lock.create(NAME, NS, PeerRecord("peer", "1", whole, whole))
    spec = stored_record(emu, "lease")
    assert spec == {"holderIdentity": "peer", "leaseDurationSeconds": 1}
    ok, _ = await lock.get(NAME, NS)
    assert ok
    assert await lock.update(NAME, NS, PeerRecord("peer", "1", whole, whole))
    assert stored_record(emu, "lease") == spec  # "renewed", and nothing changed
    async with arena(emu, "lease", tmp_path) as a:
        took = await wait_term_of(a, "aio", 1 + 2 * SLACK)
        assert 1 - 0.05 <= took <= 1 + SLACK
        assert a.record()["leaseTransitions"] == 1


def official(module: str) -> Any:
    """A module of the official client, as ``Any``: the package ships ``py.typed``, but its
    ``leaderelection`` code is untyped (as kubernetes_asyncio, which mypy is told to ignore)."""
    return importlib.import_module(f"kubernetes.{module}")


@contextmanager
def official_lease_lock(url: str) -> Iterator[Any]:
    """The official client's LeaseLock for the emulator at ``url``. It takes no API client (it
    builds one from the global default configuration), so its API object is swapped for one on
    the emulator, leaving the global configuration alone."""
    client = official("client")
    lock = official("leaderelection.resourcelock.leaselock").LeaseLock(NAME, NS, "peer")
    lock.api_instance.api_client.close()
    api = client.ApiClient(client.Configuration(host=url))
    try:
        lock.api_instance = client.CoordinationV1Api(api)
        yield lock
    finally:
        api.close()


def official_lease_writes(url: str) -> tuple[Any, bool]:
    """Through the official client's LeaseLock: create with a fractional time, then renew at a
    whole second. Returns the spec as serialized for the wire and the renewal's result."""
    record = official("leaderelection.leaderelectionrecord").LeaderElectionRecord
    fraction, whole = "2026-01-01 12:00:00.250000", "2026-01-01 12:00:01"
    with official_lease_lock(url) as lock:
        assert lock.create(NAME, NS, record("peer", "2", fraction, fraction))
        spec = lock.get_lease_spec(record("peer", "2", fraction, whole))
        wire = lock.api_instance.api_client.sanitize_for_serialization(spec)
        renewed: bool = lock.update(NAME, NS, record("peer", "2", fraction, whole))
        return wire, renewed


async def test_official_lease_lock_writes_offset_times_and_fails_at_whole_seconds(
    emu: KubeEmulator,
) -> None:
    """The official client serializes MicroTime with isoformat(): "+00:00" rather than "Z", which
    kube-apiserver's RFC3339Micro layout accepts, and no fraction at all when the microseconds are
    0, which it rejects with 400. So one write in a million fails: a missed renewal (retried
    after RP), never a wrong record."""
    endpoint = await emu.endpoint("peer")
    wire, renewed = await anyio.to_thread.run_sync(official_lease_writes, endpoint.url)
    assert wire["acquireTime"].endswith(".250000+00:00")
    assert wire["renewTime"].endswith(":01+00:00")
    assert not renewed
    assert [(r.verb, r.status) for r in emu.requests] == [("create", 201), ("update", 400)]
    # What the server stored is canonical MicroTime; the time is local time converted to UTC.
    expected = datetime.strptime("2026-01-01 12:00:00.250000", "%Y-%m-%d %H:%M:%S.%f").astimezone()
    spec = stored_record(emu, "lease")
    assert spec["acquireTime"] == expected.astimezone(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )


def official_attempt(url: str) -> str:
    """One try_acquire_or_renew() of the official elector; what happened, by type name."""
    elections = official("leaderelection.leaderelection")
    configs = official("leaderelection.electionconfig")
    with official_lease_lock(url) as lock:
        config = configs.Config(lock, PEER_LD, PEER_RD, PEER_RP, lambda: None, None)
        try:
            return str(elections.LeaderElection(config).try_acquire_or_renew())
        except Exception as exc:
            return type(exc).__name__


async def kubernetes_asyncio_attempt(api: Any) -> str:
    from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import (
        LeaseLock as PeerLeaseLock,
    )

    async def nothing() -> None:
        pass

    lock = PeerLeaseLock(NAME, NS, "peer", api)
    config = electionconfig.Config(lock, PEER_LD, PEER_RD, PEER_RP, nothing, nothing)
    try:
        return str(await leaderelection.LeaderElection(config).try_acquire_or_renew())
    except Exception as exc:
        return type(exc).__name__


@pytest.mark.parametrize(
    ("peer_kind", "outcomes"),
    [
        ("kubernetes", {"html": "False", "refused": "MaxRetryError"}),
        ("kubernetes_asyncio", {"html": "JSONDecodeError", "refused": "ClientConnectorError"}),
    ],
)
async def test_peers_die_on_transient_errors(
    emu: KubeEmulator, peer_kind: PeerKind, outcomes: dict[str, str]
) -> None:
    """A refused connection (an API server restarting) raises out of both peers' election loop,
    and a non-JSON error body (a proxy's 502 page) out of kubernetes_asyncio's: the process dies
    and its lease expires, so this is an availability problem, not a safety one. aioleader
    retries both (test_elector_emulator.py::test_non_json_error_bodies_are_transient,
    ::test_api_server_restart)."""
    endpoint = await emu.endpoint("peer")
    api = await emu.api_client("peer")
    found: dict[str, str] = {}
    for fault in ("html", "refused"):
        faults = emu.faults("peer")
        if fault == "html":
            faults.fail_next(502, body=b"<html>Bad Gateway</html>", content_type="text/html")
        else:
            faults.partition("refuse")
        if peer_kind == "kubernetes":
            found[fault] = await anyio.to_thread.run_sync(official_attempt, endpoint.url)
        else:
            found[fault] = await kubernetes_asyncio_attempt(api)
        faults.heal()
    assert found == outcomes


@pytest.mark.parametrize("peer_kind", PEERS)
async def test_multilock_migration_next_to_a_peer_on_the_old_configmap_lock(
    emu: KubeEmulator, tmp_path: Path, shared_clock: None, peer_kind: PeerKind
) -> None:
    """Step 1 of a ConfigMap → Lease migration with a real peer still on the ConfigMap lock:
    the new replicas use MultiLock(ConfigMapLock, LeaseLock), respect the peer's lease, take over
    after it dies, and write both objects; then a peer takes over again after their release."""
    async with arena(emu, "configmap", tmp_path) as a:
        old = await a.spawn(peer_kind, "old-1")
        await old.go()
        await old.wait("LEADING", 10)
        again = await a.spawn(peer_kind, "old-2")
        await a.start("new-a", multilock=True)
        await a.start("new-b", multilock=True)
        await anyio.sleep(1.2 * PEER_RP)
        assert a.leaders() == []  # the peer's ConfigMap record is respected
        killed = await old.kill()
        winner = await a.wait_leader(PEER_LD + 2.2 * TIMING.retry_period + 2 * SLACK)
        assert anyio.current_time() - killed >= PEER_LD - PEER_RP - SLACK
        assert a.record()["holderIdentity"] == winner  # the ConfigMap (primary)
        lease = emu.get_object("leases", NS, NAME)
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == winner  # and the Lease (secondary)
        await again.go()
        loser = "new-b" if winner == "new-a" else "new-a"
        await a.stop(loser)
        await a.stop(winner)
        await again.wait("LEADING", PEER_RP + 2 * SLACK)
        assert a.record()["holderIdentity"] == again.identity
    assert [i.identity for i in sorted(a.intervals(), key=lambda i: i.start)] == [
        "old-1",
        winner,
        "old-2",
    ]
