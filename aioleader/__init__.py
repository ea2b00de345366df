"""aioleader: asyncio-native (anyio) leader election for Python services on Kubernetes."""

from __future__ import annotations

from ._elector import campaign as campaign
from ._elector import elect as elect
from ._exceptions import AioleaderError as AioleaderError
from ._exceptions import ElectionError as ElectionError
from ._exceptions import ForbiddenError as ForbiddenError
from ._exceptions import LockConflict as LockConflict
from ._exceptions import LockError as LockError
from ._exceptions import LockNotFound as LockNotFound
from ._leadership import Leadership as Leadership
from ._leadership import LeadershipStatistics as LeadershipStatistics
from ._leadership import Term as Term
from ._lock import Lock as Lock
from ._lock import Observed as Observed
from ._metrics import ElectionMetrics as ElectionMetrics
from ._metrics import PrometheusMetrics as PrometheusMetrics
from ._record import LeaderElectionRecord as LeaderElectionRecord
from ._timing import Timing as Timing

__version__ = "0.1.0"

__all__ = (
    "AioleaderError",
    "ElectionError",
    "ElectionMetrics",
    "ForbiddenError",
    "LeaderElectionRecord",
    "Leadership",
    "LeadershipStatistics",
    "Lock",
    "LockConflict",
    "LockError",
    "LockNotFound",
    "Observed",
    "PrometheusMetrics",
    "Term",
    "Timing",
    "campaign",
    "elect",
)
