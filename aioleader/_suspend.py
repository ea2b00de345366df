"""How long the host has been suspended: the one clock reading that ``CLOCK_MONOTONIC`` lacks.

``anyio.current_time()`` (``CLOCK_MONOTONIC`` on Linux) stands still while the host is suspended (a
laptop lid, a VM paused by its hypervisor); ``CLOCK_BOOTTIME`` keeps counting. A leader that resumes
after a suspend longer than what was left of its renew window must not believe it still has time:
another candidate, whose clock did run, may already lead. Their difference is the time spent
suspended since boot; a term compares it with the value at its last renewal.

On systems without ``CLOCK_BOOTTIME`` (macOS, Windows) this reads 0, and terms rely on the monotonic
clock alone. Tests replace [`suspended_seconds()`][suspended_seconds] to simulate a suspend on a fake clock.
"""

from __future__ import annotations

import time

__all__ = ["suspended_seconds"]

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def suspended_seconds() -> float:
    """Seconds the host has spent suspended since boot (``CLOCK_BOOTTIME - CLOCK_MONOTONIC``)."""
    if _BOOTTIME is None:  # pragma: no cover - not Linux
        return 0.0
    return time.clock_gettime(_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
