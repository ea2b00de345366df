"""Metrics hooks of the elector, and a Prometheus implementation (the ``metrics`` extra).

client-go exports two gauges/counters through a global provider; aioleader takes the provider as an
argument (``elect(lock, metrics=PrometheusMetrics())``) so that tests and multi-election processes
stay independent, and keeps client-go's names and meaning for those two:

* ``leader_election_master_status{name}`` — 1 while this process leads, else 0;
* ``leader_election_slowpath_total{name}`` — renewals that fell back from the one-request fast
  path to a GET.

plus ``aioleader_*``: terms started, renewal latency, API errors by kind, failed attempts of term
hooks (a Pod role label, the leader's EndpointSlice), and the event loop's lag
(``aioleader_event_loop_lag_seconds``: the worst lag in the last minute, read at scrape time from
the loop's monitor, `aioleader._looplag`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._looplag import worst_loop_lag

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ElectionMetrics", "PrometheusMetrics", "ShardMetrics"]


@runtime_checkable
class ElectionMetrics(Protocol):
    """What the elector reports. Every method must be fast and must not raise."""

    def leading(self, name: str, leading: bool) -> None:
        """This candidate started (True) or stopped (False) leading election ``name``."""

    def term_started(self, name: str) -> None:
        """A new term began (this candidate acquired the lock)."""

    def renewed(self, name: str, seconds: float) -> None:
        """A renewal succeeded; ``seconds`` from its first request's send to success."""

    def slow_path(self, name: str) -> None:
        """A renewal fell back from the fast path (update) to the slow path (GET first)."""

    def api_error(self, name: str, kind: str) -> None:
        """A request failed: ``kind`` is ``conflict``, ``timeout``, ``transient`` or ``fatal``."""

    def hook_failed(self, name: str, hook: str) -> None:
        """A term hook (``hook`` is its class name, e.g. ``PodRoleLabel``) failed to apply a
        state; it retries, and the term goes on."""


@runtime_checkable
class ShardMetrics(Protocol):
    """What a shard group ([`elect_shards()`][aioleader.elect_shards]) reports, per group, when its
    ``metrics`` option has these methods too (as [`PrometheusMetrics`][PrometheusMetrics] does)."""

    def shards_changed(self, group: str, owned: int, members: int) -> None:
        """This replica now leads ``owned`` shards of ``group``, which has ``members`` live
        members as this replica sees them."""

    def shard_moved(self, group: str, *, acquired: bool) -> None:
        """A shard term of ``group`` began here (``acquired``) or ended here."""


class PrometheusMetrics:
    """[`ElectionMetrics`][ElectionMetrics] on prometheus-client, in ``registry`` (default: the global one).

    ::

        from prometheus_client import CollectorRegistry
        registry = CollectorRegistry()
        async with elect(lock, metrics=PrometheusMetrics(registry)) as leadership: ...

    Create one per registry and share it between elections: series are labelled by ``name``.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, namespace: str = "") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "PrometheusMetrics needs prometheus-client: pip install 'aioleader[metrics]'"
            ) from exc
        kwargs: dict[str, Any] = {"registry": registry if registry is not None else prom.REGISTRY}
        if namespace:
            kwargs["namespace"] = namespace
        self._status = prom.Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, "
            "0 indicates backup, 1 indicates master. 'name' is the string used to identify "
            "the lease.",
            ["name"],
            **kwargs,
        )
        self._slowpath = prom.Counter(
            "leader_election_slowpath",
            "Total number of slow path exercised in renewing leader leases. 'name' is the string "
            "used to identify the lease.",
            ["name"],
            **kwargs,
        )
        self._terms = prom.Counter(
            "aioleader_terms",
            "Terms of leadership started by this process.",
            ["name"],
            **kwargs,
        )
        self._renew = prom.Histogram(
            "aioleader_renew_duration_seconds",
            "Time from sending a renewal to its success (retries included).",
            ["name"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            **kwargs,
        )
        self._errors = prom.Counter(
            "aioleader_api_errors",
            "Failed lock requests by kind (conflict, timeout, transient, fatal).",
            ["name", "kind"],
            **kwargs,
        )
        self._loop_lag = prom.Gauge(
            "aioleader_event_loop_lag_seconds",
            "The worst event-loop lag (a due wake-up running late) in the last minute, over "
            "the event loops running elections.",
            **kwargs,
        )
        self._loop_lag.set_function(worst_loop_lag)

        self._hook_failures = prom.Counter(
            "aioleader_hook_failures",
            "Failed attempts of term hooks (role label, leader endpoints) by hook class.",
            ["name", "hook"],
            **kwargs,
        )
        self._shards_owned = prom.Gauge(
            "aioleader_shards_owned",
            "Shards of the group this process leads.",
            ["group"],
            **kwargs,
        )
        self._shard_members = prom.Gauge(
            "aioleader_shard_members",
            "Live members of the shard group, as this process sees them.",
            ["group"],
            **kwargs,
        )
        self._shard_moves = prom.Counter(
            "aioleader_shard_moves",
            "Shard terms begun (direction=acquired) or ended (direction=released) here.",
            ["group", "direction"],
            **kwargs,
        )

    def leading(self, name: str, leading: bool) -> None:
        self._status.labels(name=name).set(1 if leading else 0)

    def term_started(self, name: str) -> None:
        self._terms.labels(name=name).inc()

    def renewed(self, name: str, seconds: float) -> None:
        self._renew.labels(name=name).observe(seconds)

    def slow_path(self, name: str) -> None:
        self._slowpath.labels(name=name).inc()

    def api_error(self, name: str, kind: str) -> None:
        self._errors.labels(name=name, kind=kind).inc()

    def hook_failed(self, name: str, hook: str) -> None:
        self._hook_failures.labels(name=name, hook=hook).inc()

    def shards_changed(self, group: str, owned: int, members: int) -> None:
        self._shards_owned.labels(group=group).set(owned)
        self._shard_members.labels(group=group).set(members)

    def shard_moved(self, group: str, *, acquired: bool) -> None:
        direction = "acquired" if acquired else "released"
        self._shard_moves.labels(group=group, direction=direction).inc()
