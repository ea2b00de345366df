"""Prometheus metrics of the elector, on a fake clock, in a private registry."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import CollectorRegistry

from aioleader import ElectionMetrics, LockError, PrometheusMetrics, elect
from aioleader.locks import MemoryLock
from aioleader.testing import FaultyLock

pytestmark = [pytest.mark.anyio, pytest.mark.fake_clock("asyncio")]


def value(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


async def test_client_go_metrics_and_aioleader_metrics() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    assert isinstance(metrics, ElectionMetrics)
    lock = FaultyLock(MemoryLock("a"))
    async with elect(lock, name="scheduler", metrics=metrics) as leadership:
        await leadership.wait_term()
        assert value(registry, "leader_election_master_status", name="scheduler") == 1
        assert value(registry, "aioleader_terms_total", name="scheduler") == 1
        lock.apply_then_fail_next()  # renewal at 2 lands, reply lost; at 4 the slow path
        lock.fail_next(LockError("503"))
        await anyio.sleep(7)
        assert value(registry, "leader_election_slowpath_total", name="scheduler") == 1
        assert (
            value(registry, "aioleader_api_errors_total", name="scheduler", kind="transient") == 2
        )
        # renewals at 2 (failed), 4 (503), 6 (slow path ok): one observation of 4 s
        assert value(registry, "aioleader_renew_duration_seconds_count", name="scheduler") == 1
        assert value(registry, "aioleader_renew_duration_seconds_sum", name="scheduler") == 4
    assert value(registry, "leader_election_master_status", name="scheduler") == 0


async def test_follower_reports_backup_and_conflicts_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    a = MemoryLock("a")
    b = a.sibling("b")
    async with elect(a, name="one", metrics=metrics) as la:
        await la.wait_term()
        async with elect(b, name="two", metrics=metrics):
            await anyio.sleep(10)
            assert value(registry, "leader_election_master_status", name="one") == 1
            assert value(registry, "leader_election_master_status", name="two") is None
            assert value(registry, "aioleader_terms_total", name="two") is None


def test_metrics_default_name_is_the_lock() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry).leading("memory/x", True)
    assert value(registry, "leader_election_master_status", name="memory/x") == 1


def test_hook_failures_are_counted_by_election_and_hook() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.hook_failed("default/app", "PodRoleLabel")
    metrics.hook_failed("default/app", "PodRoleLabel")
    metrics.hook_failed("default/app", "LeaderEndpoints")
    counted = "aioleader_hook_failures_total"
    assert value(registry, counted, name="default/app", hook="PodRoleLabel") == 2
    assert value(registry, counted, name="default/app", hook="LeaderEndpoints") == 1
