"""Shared statistics of the benchmark: percentiles, summaries, finiteness. One place, used by the
measurements, the scale worker and the report."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["finite", "percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(values: Sequence[float]) -> str:
    """``p50 / p99 (n)`` in milliseconds, for logs."""
    if not values:
        return "no samples"
    p50, p99 = percentile(list(values), 0.5), percentile(list(values), 0.99)
    assert p50 is not None
    assert p99 is not None
    return f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (n={len(values)})"


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
