"""aioleader: asyncio-native (anyio) leader election for Python services on Kubernetes."""

from __future__ import annotations

from ._election import campaign as campaign
from ._election import elect as elect
from ._exceptions import AioleaderError as AioleaderError
from ._exceptions import ClusterConfigError as ClusterConfigError
from ._exceptions import ElectionError as ElectionError
from ._exceptions import ForbiddenError as ForbiddenError
from ._exceptions import LockConflict as LockConflict
from ._exceptions import LockError as LockError
from ._exceptions import LockNotFound as LockNotFound
from ._exports import publish as _publish
from ._health import HealthStatus as HealthStatus
from ._health import check_health as check_health
from ._health import healthz_app as healthz_app
from ._health import serve_healthz as serve_healthz
from ._leadership import Leadership as Leadership
from ._leadership import LeadershipStatistics as LeadershipStatistics
from ._leadership import Term as Term
from ._lock import Lock as Lock
from ._lock import Observed as Observed
from ._lock import WatchCursor as WatchCursor
from ._metrics import ElectionMetrics as ElectionMetrics
from ._metrics import PrometheusMetrics as PrometheusMetrics
from ._metrics import ShardMetrics as ShardMetrics
from ._observer import LeaderChange as LeaderChange
from ._observer import LeaderChanges as LeaderChanges
from ._observer import observe as observe
from ._options import Candidacy as Candidacy
from ._options import ElectionOptions as ElectionOptions
from ._options import TermHook as TermHook
from ._record import MAX_LEASE_DURATION as MAX_LEASE_DURATION
from ._record import UNPARSEABLE_HOLDER as UNPARSEABLE_HOLDER
from ._record import LeaderElectionRecord as LeaderElectionRecord
from ._shard_decisions import shard_for as shard_for
from ._shards import Shards as Shards
from ._shards import ShardStatistics as ShardStatistics
from ._shards import elect_shards as elect_shards
from ._signals import StopOnSignals as StopOnSignals
from ._signals import cancel_on_signals as cancel_on_signals
from ._signals import stop_on_signals as stop_on_signals
from ._timing import Timing as Timing

__version__ = "0.1.0"

__all__ = (
    "MAX_LEASE_DURATION",
    "UNPARSEABLE_HOLDER",
    "AioleaderError",
    "Candidacy",
    "ClusterConfigError",
    "ElectionError",
    "ElectionMetrics",
    "ElectionOptions",
    "ForbiddenError",
    "HealthStatus",
    "LeaderChange",
    "LeaderChanges",
    "LeaderElectionRecord",
    "Leadership",
    "LeadershipStatistics",
    "Lock",
    "LockConflict",
    "LockError",
    "LockNotFound",
    "Observed",
    "PrometheusMetrics",
    "ShardMetrics",
    "ShardStatistics",
    "Shards",
    "StopOnSignals",
    "Term",
    "TermHook",
    "Timing",
    "WatchCursor",
    "campaign",
    "cancel_on_signals",
    "check_health",
    "elect",
    "elect_shards",
    "healthz_app",
    "observe",
    "serve_healthz",
    "shard_for",
    "stop_on_signals",
)

_publish(globals())
