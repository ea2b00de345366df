"""Leader election locks stored in Kubernetes objects, through kubernetes_asyncio.

:class:`LeaseLock` (a ``coordination.k8s.io/v1`` Lease) is the lock to use; it is what client-go,
controller-runtime and kube-controller-manager use today.
"""

from ._lease import LeaseLock as LeaseLock

__all__ = ("LeaseLock",)
