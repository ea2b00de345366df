"""[`now()`][now]: the event loop's clock, as ``anyio.current_time()`` reads it, without the
backend lookup on asyncio.

``anyio.current_time()`` asks sniffio which library runs the task, then the backend for its
clock: a few microseconds, and the elector reads the clock a dozen times per renewal (a sixth of
a renewal's CPU at 500 leases). On asyncio anyio's clock *is* the running loop's ``time()``, so
that is read directly; on any other backend (trio, and fake clocks there), anyio is asked.
"""

from __future__ import annotations

from asyncio import _get_running_loop

import anyio

__all__ = ["now"]


def now() -> float:
    """The current time of the running event loop (seconds, monotonic)."""
    loop = _get_running_loop()
    if loop is not None:
        return loop.time()
    return anyio.current_time()
