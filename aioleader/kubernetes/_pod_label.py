"""A role label on the candidate's own Pod (Patroni's ``role_label``), for a Service that selects
the leader alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, final

from kubernetes_asyncio.client import CoreV1Api

from .._exceptions import ElectionError
from .._metrics import ElectionMetrics
from ._client import KubeClient
from ._errors import error_for
from ._names import check_string_map
from ._reply import ObjectRef
from ._term_hook import ConvergingHook, pod_name, pod_namespace

if TYPE_CHECKING:
    from .._leadership import Term

__all__ = ["PodRoleLabel"]

_MERGE_PATCH: Final = "application/merge-patch+json"


def _core(api_client: Any) -> Any:
    """The core/v1 API, typed ``Any``: with ``_preload_content=False`` it returns aiohttp's
    response, and it takes plain dict bodies."""
    return CoreV1Api(api_client)


@final
class PodRoleLabel(ConvergingHook):
    """Keep a label on this candidate's Pod saying whether it leads: a
    [TermHook][aioleader.TermHook] for ``elect(..., hooks=[...])``.

    Synopsis::

        label = PodRoleLabel("role", leader="leader", standby="standby")
        async with elect(lock, hooks=[label]) as leadership: ...

    and a Service with ``selector: {app: my-app, role: leader}`` routes to the leader alone.

    The label is set to ``standby`` when the election starts (which also clears a ``leader``
    value left by a crashed process in the same Pod), to ``leader`` once a term starts, and to
    ``standby`` again *before* the lock is released at the end of a term (the elector waits for
    it, at most RD/2), so the old leader leaves the Service before a new one can join it.
    ``standby=None`` removes the label instead.

    Each change is one JSON merge patch of ``metadata.labels`` (``patch`` on ``pods``, which RBAC
    can restrict to the Pod's name only if the Pod's name is known in advance, e.g. in a
    StatefulSet; otherwise ``patch`` on ``pods`` in the namespace). A failed patch is retried
    (backoff from ``backoff_initial`` to ``backoff_max`` seconds, each request bounded by
    ``timeout``), logged, counted (``metrics``: [`hook_failed()`][aioleader.ElectionMetrics.hook_failed]),
    recorded as an Event on the lock and shown by `problem()` (and so in the election's
    ``statistics().hook_problems``); it never ends a term. A 401, 403 or missing Pod at start-up
    is a configuration mistake and ends the election with [`ElectionError`][aioleader.ElectionError].

    The Pod is ``pod`` in ``namespace``; by default ``$POD_NAME`` and ``$POD_NAMESPACE`` (the
    Downward API) or the service account's namespace. The API client is the lock's
    (a [`LeaseLock`][aioleader.kubernetes.LeaseLock] or another Kubernetes lock) unless
    ``api_client`` is given.
    """

    def __init__(
        self,
        key: str = "role",
        leader: str = "leader",
        standby: str | None = "standby",
        *,
        pod: str | None = None,
        namespace: str | None = None,
        timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        metrics: ElectionMetrics | None = None,
        api_client: Any | None = None,
    ) -> None:
        values = {"leader": leader} if standby is None else {"leader": leader, "standby": standby}
        for argument, value in values.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{argument} must be a non-empty label value, got {value!r}")
        if not isinstance(key, str):
            raise ValueError(f"key must be a label key, got {key!r}")
        for value in values.values():
            check_string_map({key: value}, "pod label", label_values=True)
        if leader == standby:
            raise ValueError(f"leader and standby must differ, both are {leader!r}")
        super().__init__(
            timeout=timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            metrics=metrics,
            api_client=api_client,
        )
        self.key = key
        self.leader = leader
        self.standby = standby
        self._ref = ObjectRef(
            group="",
            plural="pods",
            namespace=pod_namespace(namespace, "PodRoleLabel"),
            name=pod_name(pod, "PodRoleLabel"),
        )

    def __repr__(self) -> str:
        return (
            f"PodRoleLabel({self.key!r}, leader={self.leader!r}, standby={self.standby!r}, "
            f"pod={self._ref.name!r}, namespace={self._ref.namespace!r})"
        )

    @property
    def pod(self) -> str:
        return self._ref.name

    @property
    def namespace(self) -> str:
        return self._ref.namespace

    def _describe(self) -> str:
        return f"the label {self.key} of {self._ref}"

    async def _apply(self, client: KubeClient, leading: bool, term: Term | None) -> None:
        value = self.leader if leading else self.standby
        body = {"metadata": {"labels": {self.key: value}}}
        ref = self._ref
        reply = await client.request(
            "patch",
            ref,
            lambda api, t: _core(api).patch_namespaced_pod(
                ref.name,
                ref.namespace,
                body,
                _content_type=_MERGE_PATCH,
                _preload_content=False,
                _request_timeout=t,
            ),
            timeout=self._timeout,
        )
        if reply.ok:
            return
        error = error_for("patch", ref, reply)
        if reply.status == 404 and not isinstance(error, ElectionError):
            # No such Pod: POD_NAME or the namespace is wrong (or the Pod is being deleted).
            raise ElectionError(
                f"cannot patch {ref}: it does not exist (check POD_NAME and the namespace)"
            )
        raise error
