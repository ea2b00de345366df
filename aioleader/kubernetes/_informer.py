"""One list+watch per namespace and kind, shared by every lock in the process that follows an
object there: client-go's shared informer, for the Kubernetes locks' watches.

A process that follows many Leases in a namespace (one election per shard, per tenant, per
managed object) would otherwise hold one watch connection per election. An [`Informer`][Informer]
lists and watches the namespace once (a `Reflector` without
a name: the same bookmarks, 410 re-list, safety re-read, backoff and ``sock_read`` cut of silent
streams as the per-name watch) and keeps every object's state by name; each lock's
`watch_cursor()` is a [`SharedCursor`][SharedCursor] on it,
which returns what that one object's own watch would: the object now, each change of it,
``None`` while it does not exist.

**Who reads.** No background task: whichever follower is waiting in [`SharedCursor.next()`][SharedCursor.next]
reads the shared stream for all of them (the *reader*), as httpcore's HTTP/2 connection is read
by whichever stream is waiting for data. The reader applies each event to the shared states and
wakes the followers of the object it changed; when its own object changes, it returns, and hands
the reading to one other waiting follower. Every step of the reflector keeps its progress in the
reflector (it is cancel-safe), so a reader cancelled part-way (an election that won and cancels
its watch) loses nothing: the next reader continues where it stopped. Nothing outlives the
calls: no task is held across a ``yield``, and no task group is left to own.

**Lifetime.** Informers are kept per (event loop, API client, lock kind, namespace, watch
options) and reference-counted by the cursors open on them: the first follower's first
[`next()`][SharedCursor.next] lists and opens the stream, and the last follower's
[`close()`][SharedCursor.close] closes it (synchronously) and forgets the states. There is no linger
with the stream open: nothing would read it meanwhile (so a follower coming back would need a
list anyway to trust it), and a connection left open past its last user outlives the code that
closes the client (``asyncio.run()`` ending, an ``async with ApiClient()`` block), which aiohttp
reports as an unclosed connection. What is kept for a while is a refusal (below).

**RBAC.** Listing and watching a namespace needs ``list`` and ``watch`` on the kind *without*
``resourceNames`` (a rule restricted by name only allows requests with
``fieldSelector=metadata.name=<name>``). When the namespace-wide list or watch is refused (403),
every cursor on the informer falls back to a watch of its own object by name
(`ObjectWatch`), and cursors that join it later do so at once,
for as long as the informer is kept (at least ``relist_interval`` seconds after the refusal),
then the shared watch is tried again. A 403 of the per-name watch is then what the elector sees
([`ForbiddenError`][aioleader.ForbiddenError]: it polls instead).

**Staleness.** A cursor's first state is the shared one, which may trail a read its lock made
just before by the stream's delivery delay (as any informer's cache); it never goes back to a
state older than one the cursor returned.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import anyio
import anyio.lowlevel

from .._exceptions import ElectionError, ForbiddenError
from .._lock import Observed, WatchCursor
from ._client import KubeClient
from ._reply import ObjectRef
from ._watch import UNSET, Lister, ObjectDecoder, Reflector, Unset, WatchOptions, changed_from

__all__ = ["Informer", "SharedCursor", "open_informers", "shared_cursor"]

logger = logging.getLogger("aioleader.watch")

_Key = tuple[int, int, type, str, WatchOptions]
_informers: dict[_Key, Informer] = {}


def open_informers() -> int:
    """How many shared informers the process holds (for tests and benchmarks)."""
    return len(_informers)


def shared_cursor(
    source: object,
    client: KubeClient,
    ref: ObjectRef,
    kind: type,
    lister: Lister,
    decode: ObjectDecoder,
    options: WatchOptions,
    *,
    fallback: Callable[[], WatchCursor],
    rng: random.Random | None = None,
) -> SharedCursor:
    """A cursor on ``ref``'s object served by the process's informer for ``ref``'s namespace.

    ``source`` identifies the connection the informer may be shared over (the borrowed
    ``ApiClient``, or the lock's own [`KubeClient`][KubeClient] when it built its client); ``client``
    sends the requests; ``kind`` (the lock class), the namespace and ``options`` complete the
    key. ``fallback`` builds the per-name cursor used when the namespace cannot be listed (403).
    Creating a cursor sends nothing. Must be called in the event loop the client runs on.
    """
    loop = asyncio.get_running_loop()
    key: _Key = (id(loop), id(source), kind, ref.namespace, options)
    informer = _informers.get(key)
    if informer is None:
        # Informers of loops that are gone (their timers never ran) are forgotten; holding the
        # loop and the source keeps each id() in a key unique while it is registered.
        for stale in [k for k, i in _informers.items() if i.loop.is_closed()]:
            del _informers[stale]
        collection = ObjectRef(group=ref.group, plural=ref.plural, namespace=ref.namespace, name="")
        reflector = Reflector(client, collection, lister, decode, options, name=None, rng=rng)
        informer = Informer(key, loop, source, reflector)
        _informers[key] = informer
    return SharedCursor(informer, ref.name, fallback)


class Informer:
    """The shared states of one namespace's objects of one kind (see the module docstring)."""

    def __init__(
        self,
        key: _Key,
        loop: asyncio.AbstractEventLoop,
        source: object,
        reflector: Reflector,
    ) -> None:
        self.key = key
        self.loop = loop
        self.source = source
        self.reflector = reflector
        self.followers: dict[str, dict[SharedCursor, None]] = {}
        self.count = 0
        self.reader: SharedCursor | None = None
        self.waiting: dict[SharedCursor, None] = {}  # in the order they began to wait
        self.forbidden: ForbiddenError | None = None
        self.fatal: ElectionError | None = None
        self.timer: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        """Whether the states are complete and current enough to answer from."""
        r = self.reflector
        return r.listed and not r.need_list

    # -- followers -------------------------------------------------------------------------------

    def join(self, cursor: SharedCursor) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.count += 1
        self.followers.setdefault(cursor.name, {})[cursor] = None

    def leave(self, cursor: SharedCursor) -> None:
        followers = self.followers.get(cursor.name)
        if followers is None or cursor not in followers:
            return
        del followers[cursor]
        if not followers:
            del self.followers[cursor.name]
        self.count -= 1
        if self.count:
            return
        self.reflector.close()
        if self.forbidden is not None and not self.loop.is_closed():
            # Refused: remember it for a while, so that followers joining soon do not ask again.
            delay = self.reflector.options.relist_interval
            self.timer = self.loop.call_later(delay, self.expire)
        else:
            self.expire()

    def expire(self) -> None:
        """Forget the informer (its stream is closed), unless a follower came back."""
        self.timer = None
        if self.count:
            return
        if _informers.get(self.key) is self:
            del _informers[self.key]

    # -- reading ---------------------------------------------------------------------------------

    def hand_over(self) -> None:
        """Wake one waiting follower to take over the reading, if nobody reads."""
        if self.reader is None:
            for cursor in self.waiting:
                cursor.wake()
                return

    def wake_all(self) -> None:
        for cursor in self.waiting:
            cursor.wake()

    async def work(self) -> None:
        """One step of the reader: read until something changed; wake whom it concerns."""
        r = self.reflector
        was_ready = self.ready
        try:
            changed = await r.step()
        except ForbiddenError as exc:
            logger.warning(
                "cannot list and watch %s (%s); following each lock by name instead (grant "
                "list and watch on %s without resourceNames to share one watch)",
                r.described(),
                exc,
                r.ref.resource,
            )
            self.forbidden = exc
            r.close()
            self.wake_all()
            return
        except ElectionError as exc:
            self.fatal = exc
            r.close()
            self.wake_all()
            if _informers.get(self.key) is self:
                del _informers[self.key]  # followers joining later try again
            raise
        if self.ready and not was_ready:
            self.wake_all()  # the first answers, absences included
            return
        for name in changed:
            for cursor in self.followers.get(name, ()):
                cursor.wake()


class SharedCursor(WatchCursor):
    """One object's states from the namespace's [`Informer`][Informer]. Cancel-safe."""

    def __init__(self, informer: Informer, name: str, fallback: Callable[[], WatchCursor]) -> None:
        self.informer = informer
        self.name = name
        self._fallback = fallback
        self._own: WatchCursor | None = None
        self._last: Observed | Unset | None = UNSET
        self._wakeup: anyio.Event | None = None
        self._joined = False

    @property
    def shared(self) -> bool:
        """Whether the states come from the shared watch (not a per-name fallback)."""
        return self._own is None

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def next(self) -> Observed | None:
        if self._own is None:
            state = await self._next_shared()
            if not isinstance(state, Unset):
                return state
            # Refused: from now on, a watch of our own object by name.
            self._leave()
            self._own = self._fallback()
        while True:
            state = await self._own.next()
            if changed_from(self._last, state):
                self._last = state
                return state

    async def _next_shared(self) -> Observed | Unset | None:
        informer = self.informer
        if not self._joined:
            informer.join(self)
            self._joined = True
        try:
            while True:
                if informer.forbidden is not None:
                    await anyio.lowlevel.checkpoint()
                    return UNSET
                if informer.fatal is not None:
                    raise informer.fatal
                if informer.ready:
                    state = informer.reflector.state(self.name)
                    if changed_from(self._last, state):
                        self._last = state
                        return state
                if informer.reader is None:
                    informer.reader = self
                if informer.reader is self:
                    await informer.work()
                    continue
                wakeup = self._wakeup = anyio.Event()
                informer.waiting[self] = None
                try:
                    await wakeup.wait()
                finally:
                    self._wakeup = None
                    informer.waiting.pop(self, None)
        finally:
            if informer.reader is self:
                informer.reader = None
            informer.hand_over()

    def _leave(self) -> None:
        if self._joined:
            self._joined = False
            self.informer.leave(self)

    def close(self) -> None:
        self._leave()
        if self._own is not None:
            self._own.close()
