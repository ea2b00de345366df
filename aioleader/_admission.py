"""Admission of acquisition attempts: at most [`ATTEMPTS`][ATTEMPTS] at a time per event loop.

A process that starts thousands of elections at once (one per shard, per tenant) would otherwise
send thousands of first attempts in the same instant: every one is a GET and a create or update,
the event loop runs them all before anything else (the loop lagged 4 to 6 s with 5,000), each
request's bound (half the renew deadline, counted from its send) runs out while it waits behind
the others, and the timed-out attempts retry together, so nothing is ever acquired and the few
terms that begin lose their renewals in the same queue.

Attempts therefore queue here first, in the order they arrive, and at most [`ATTEMPTS`][ATTEMPTS] run
at once; an attempt's request bounds are counted from its admission, so waiting costs it nothing.
Renewals and releases never queue here (a held term is never behind somebody's first attempt).
Admitted at the pace the client and server answer, acquisitions (and hence the renewals that
follow each one every retry period) are spread over time instead of landing in one instant.
"""

from __future__ import annotations

from typing import Final

import anyio
import anyio.lowlevel

__all__ = ["ATTEMPTS", "attempts_limiter"]

#: Concurrent acquisition attempts per event loop. Enough to keep a remote API server busy
#: (32 attempts of two requests at 50 ms round trips: 320 acquisitions a second, 10,000 in half
#: a minute), few enough that the loop stays responsive (32 requests in flight, not 5,000).
ATTEMPTS: Final = 32

_limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("aioleader_attempts")


def attempts_limiter() -> anyio.CapacityLimiter:
    """The current event loop's limiter of acquisition attempts."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(ATTEMPTS)
        _limiter.set(limiter)
        return limiter
