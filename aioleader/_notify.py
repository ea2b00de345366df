"""``on_new_leader`` callbacks: run in order, in a task of their own, bounded at shutdown."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Awaitable, Callable

import anyio

from ._flag import Flag

__all__ = ["Notifier", "maybe_await"]

NewLeaderCallback = Callable[[str], Awaitable[object] | object]


async def maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


class Notifier:
    """One task runs the callbacks in order, so a slow callback never delays a renewal.

    Its scope is shielded so that callbacks queued during shutdown (our own release) still run;
    [`close()`][close] lets them finish for at most ``bound`` seconds, then cancels the rest.
    """

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[
            tuple[NewLeaderCallback, str]
        ](math.inf)
        self._done = Flag()
        self._scope = anyio.CancelScope(shield=True)

    def post(self, callback: NewLeaderCallback, holder: str) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait((callback, holder))

    async def run(self) -> None:
        try:
            with self._scope:
                async with self._receive:
                    async for callback, holder in self._receive:
                        await maybe_await(callback(holder))
        finally:
            self._done.set()

    async def close(self, bound: float) -> None:
        """No more callbacks; wait (shielded, at most ``bound``) for the queued ones."""
        self._send.close()
        with anyio.CancelScope(shield=True), anyio.move_on_after(bound):
            await self._done.wait()
        self._scope.cancel()
