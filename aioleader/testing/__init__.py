"""Test helpers for code that uses aioleader: a Kubernetes API emulator and an in-memory lock.

[`KubeEmulator`][KubeEmulator] is an in-process kube-apiserver (Leases, LeaseCandidates, ConfigMaps,
Endpoints, Events) that the real kubernetes_asyncio client talks to over HTTP, with per-client
fault injection and, optionally, kube-apiserver's coordinated leader election controller;
[`MemoryLock`][MemoryLock] is a lock for tests that do not need the API at all, and
[`FaultyLock`][FaultyLock] wraps any lock to inject failures on fake clocks. [`run_chaos()`][run_chaos] runs
candidates through seeded random faults and [`TermLog`][TermLog] records every interval of leader work
([`lead_forever()`][lead_forever]), for proving that leader-gated code never runs twice at once.
"""

from __future__ import annotations

from .._exports import publish as _publish
from ..locks._memory import MemoryLock as MemoryLock
from ._auth import ClientCertificate as ClientCertificate
from ._chaos import FAULTS as CHAOS_FAULTS
from ._chaos import ChaosReport as ChaosReport
from ._chaos import TermLog as TermLog
from ._chaos import WorkInterval as WorkInterval
from ._chaos import lead_forever as lead_forever
from ._chaos import run_chaos as run_chaos
from ._connection_faults import VERBS as VERBS
from ._connection_faults import WRITE_VERBS as WRITE_VERBS
from ._connection_faults import Faults as Faults
from ._emulator import EmulatorStatistics as EmulatorStatistics
from ._emulator import KubeEmulator as KubeEmulator
from ._endpoint import ClientEndpoint as ClientEndpoint
from ._faulty_lock import FaultyLock as FaultyLock
from ._faulty_lock import LockCall as LockCall
from ._request_log import RequestRecord as RequestRecord
from ._server_clock import ServerClock as ServerClock
from ._shard_chaos import SHARD_FAULTS as SHARD_FAULTS
from ._shard_chaos import ShardChaosReport as ShardChaosReport
from ._shard_chaos import run_shard_chaos as run_shard_chaos

__all__ = (
    "CHAOS_FAULTS",
    "SHARD_FAULTS",
    "VERBS",
    "WRITE_VERBS",
    "ChaosReport",
    "ClientCertificate",
    "ClientEndpoint",
    "EmulatorStatistics",
    "Faults",
    "FaultyLock",
    "KubeEmulator",
    "LockCall",
    "MemoryLock",
    "RequestRecord",
    "ServerClock",
    "ShardChaosReport",
    "TermLog",
    "WorkInterval",
    "lead_forever",
    "run_chaos",
    "run_shard_chaos",
)

_publish(globals())
