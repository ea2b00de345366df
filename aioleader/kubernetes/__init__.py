"""Leader election locks stored in Kubernetes objects, through kubernetes_asyncio.

[`LeaseLock`][LeaseLock] (a ``coordination.k8s.io/v1`` Lease) is the lock to use; it is what client-go,
controller-runtime and kube-controller-manager use today. [`ConfigMapLock`][ConfigMapLock] and
[`EndpointsLock`][EndpointsLock] keep client-go's older annotation record, for interoperating with peers
that still use it and for migrating them to a Lease ([`aioleader.locks.MultiLock`][aioleader.locks.MultiLock]).

[`PodRoleLabel`][PodRoleLabel] and [`LeaderEndpoints`][LeaderEndpoints] are term hooks (``elect(..., hooks=[...])``)
that route a Service's traffic to the leader alone: a role label on the leader's Pod, or the
EndpointSlice of a selector-less Service.
[`LeaseCandidate`][LeaseCandidate] makes an election on a LeaseLock *coordinated* (KEP-4355);
[`Coordinator`][Coordinator] (``aioleader coordinate``) elects for strategies kube-apiserver leaves alone.
"""

from .._exports import publish as _publish
from ._candidate import CandidateStatus as CandidateStatus
from ._candidate import LeaseCandidate as LeaseCandidate
from ._candidate import list_lease_candidates as list_lease_candidates
from ._configmap import ConfigMapLock as ConfigMapLock
from ._coordinator import Coordinator as Coordinator
from ._endpoints import EndpointsLock as EndpointsLock
from ._leader_endpoints import LeaderEndpoints as LeaderEndpoints
from ._lease import LeaseLock as LeaseLock
from ._pod_label import PodRoleLabel as PodRoleLabel

__all__ = (
    "CandidateStatus",
    "ConfigMapLock",
    "Coordinator",
    "EndpointsLock",
    "LeaderEndpoints",
    "LeaseCandidate",
    "LeaseLock",
    "PodRoleLabel",
    "list_lease_candidates",
)

_publish(globals())
