"""[`Flag`][Flag]: a one-shot event that costs nothing until somebody waits on it.

An election keeps about ten internal events (wake the acquire loop, the term's work is done, the
candidacy has ended, …), most of which are set without ever being waited on. An anyio Event on
asyncio builds an ``asyncio.Event`` and its waiter deque at once: some 850 bytes each, a fifth of
what a leading election held in memory. A Flag is a boolean until [`wait()`][Flag.wait] needs
an Event. Internal only: the public events (`Term.ended`, `Leadership.acquired`) stay anyio
Events.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

__all__ = ["Flag"]


class Flag:
    """Set once, waited on by any number of tasks (as ``anyio.Event``)."""

    __slots__ = ("_event", "_set")

    def __init__(self, *, is_set: bool = False) -> None:
        self._set = is_set
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        """Return once the flag is set (a checkpoint if it already is)."""
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()
