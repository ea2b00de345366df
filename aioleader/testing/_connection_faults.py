"""Fault injection for one simulated client's connection to the emulator.

A [`Faults`][Faults] object is plain mutable state that tests set; the endpoint consults it on every
request and reacts to changes at once (a cleared ``hang`` releases waiting requests, a
``partition`` closes the listening socket before the call returns).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, final

__all__ = ["VERBS", "WRITE_VERBS", "Faults"]

#: Request verbs, named as in the Kubernetes audit log.
VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)
#: The verbs that change state.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

PartitionMode = Literal["refuse", "blackhole"]


@dataclass
class Planned:
    """A one-shot fault waiting for matching requests."""

    action: Literal["fail", "drop", "apply_then_drop"]
    verbs: frozenset[str] | None
    remaining: int
    status: int = 0
    retry_after: float | None = None
    body: bytes | None = None
    content_type: str | None = None

    def matches(self, verb: str) -> bool:
        return self.verbs is None or verb in self.verbs


def _verbs(verbs: Collection[str] | None) -> frozenset[str] | None:
    if verbs is None:
        return None
    chosen = frozenset(verbs)
    unknown = chosen - VERBS
    if unknown:
        raise ValueError(f"unknown verbs {sorted(unknown)}; verbs are {sorted(VERBS)}")
    return chosen


def _count(count: int) -> int:
    if count < 1:
        raise ValueError("count must be at least 1")
    return count


@final
class Faults:
    """What goes wrong for one client. Mutate it from the test; [`heal()`][heal] clears it.

    Plain attributes, read on every request:

    * ``latency``: seconds added before a request is handled;
    * ``reply_latency``: seconds added after it is handled, before the reply is sent (a write
      is then visible to others before its author hears back);
    * ``error_rate``: probability that a request fails with ``error_status`` (default 500),
      drawn from a generator seeded per client, so runs repeat (see [`reseed()`][reseed]);
      ``error_verbs`` limits it to some verbs.

    Switches that take effect at once, for requests already waiting too:

    * ``hang``: requests are accepted and left unanswered until it is cleared (they are then
      handled normally) or the client gives up;
    * ``watch_silence``: watch streams stay open but send nothing, not even bookmarks; events
      are held back and delivered, in order, when it is cleared.

    One-shot faults, consumed by the next matching requests (``verbs`` narrows them, e.g.
    ``{"update"}``; verbs are ``get list watch create update patch delete deletecollection``):
    [`fail_next()`][fail_next], [`drop_next()`][drop_next], [`apply_then_drop()`][apply_then_drop], and the watch faults
    [`watch_expire()`][watch_expire], [`watch_eof_after()`][watch_eof_after], [`watch_garbage_next()`][watch_garbage_next].

    Network faults: [`partition()`][partition] (``"refuse"`` or ``"blackhole"``), undone by [`heal()`][heal].

    Mind the client's own retry: kubernetes_asyncio's aiohttp session resends a GET, PUT or
    DELETE once when the connection drops, so ``drop_next(2)`` is what makes a GET fail, and a
    PUT dropped after it was applied comes back as a 409 Conflict with itself.

    Get a client's faults from [`KubeEmulator.faults()`][KubeEmulator.faults]; call the methods from the event
    loop's thread (they may act on sockets).
    """

    def __init__(self, seed: object = None) -> None:
        self.latency = 0.0
        self.reply_latency = 0.0
        self.error_rate = 0.0
        self.error_status = 500
        self.error_verbs: Collection[str] | None = None
        self._rng = random.Random(str(seed))
        self._hang = False
        self._watch_silence = False
        self._partition: PartitionMode | None = None
        self._planned: list[Planned] = []
        self._watch_expire = 0
        self._watch_eof: list[int] = []
        self._watch_garbage = 0
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        active = {
            "latency": self.latency,
            "reply_latency": self.reply_latency,
            "error_rate": self.error_rate,
            "hang": self._hang,
            "watch_silence": self._watch_silence,
            "partition": self._partition,
            "planned": len(self._planned),
        }
        shown = ", ".join(f"{k}={v!r}" for k, v in active.items() if v)
        return f"Faults({shown})"

    # -- switches ---------------------------------------------------------------------------

    @property
    def hang(self) -> bool:
        """Leave new and waiting requests unanswered while true."""
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        self._hang = bool(value)
        self._changed()

    @property
    def watch_silence(self) -> bool:
        """Keep watch streams open but silent (events held back) while true."""
        return self._watch_silence

    @watch_silence.setter
    def watch_silence(self, value: bool) -> None:
        self._watch_silence = bool(value)
        self._changed()

    @property
    def partitioned(self) -> PartitionMode | None:
        """The current network partition, if any."""
        return self._partition

    def partition(self, mode: PartitionMode = "refuse") -> None:
        """Cut this client off the server until [`heal()`][heal].

        ``"refuse"``: the listening socket is closed and open connections are reset; connects
        fail with "connection refused". ``heal`` listens again on the same port.
        ``"blackhole"``: connections are accepted but nothing is processed or answered, and open
        watch streams go silent; after ``heal`` the waiting requests are handled and held
        events delivered, as when a network path comes back before TCP gives up.
        """
        if mode not in ("refuse", "blackhole"):
            raise ValueError(f"partition mode must be 'refuse' or 'blackhole', not {mode!r}")
        self._partition = mode
        self._changed()

    def heal(self) -> None:
        """Clear every fault: switches, rates, latencies, pending one-shots and partitions."""
        self.latency = self.reply_latency = self.error_rate = 0.0
        self.error_status = 500
        self.error_verbs = None
        self._hang = self._watch_silence = False
        self._partition = None
        self._planned.clear()
        self._watch_expire = self._watch_garbage = 0
        self._watch_eof.clear()
        self._changed()

    def reseed(self, seed: object) -> None:
        """Restart the ``error_rate`` draws from ``seed``."""
        self._rng = random.Random(str(seed))

    # -- one-shot request faults ------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        content_type: str | None = None,
        verbs: Collection[str] | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``, without handling them.

        By default the body is the ``Status`` a real control plane sends for that code (429
        carries ``Retry-After``, 1 second unless ``retry_after`` says otherwise). ``body``
        replaces it with raw bytes or text (an HTML page from a proxy, say; ``content_type``
        defaults to ``text/plain``) or a JSON object.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error code (400-599)")
        raw: bytes | None = None
        if isinstance(body, Mapping):
            raw = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body
        if raw is not None:
            content_type = content_type or "text/plain; charset=utf-8"
        self._planned.append(
            Planned(
                "fail",
                _verbs(verbs),
                _count(count),
                status=status,
                retry_after=retry_after,
                body=raw,
                content_type=content_type,
            )
        )

    def drop_next(self, count: int = 1, *, verbs: Collection[str] | None = None) -> None:
        """Reset the connection of the next ``count`` matching requests before handling them."""
        self._planned.append(Planned("drop", _verbs(verbs), _count(count)))

    def apply_then_drop(
        self, count: int = 1, *, verbs: Collection[str] | None = WRITE_VERBS
    ) -> None:
        """Handle the next ``count`` matching requests, then reset instead of replying.

        The write is applied and visible to everybody but its author, who sees a disconnect:
        the ambiguous outcome a leader must survive. Defaults to write verbs; never applies
        to watches.
        """
        self._planned.append(Planned("apply_then_drop", _verbs(verbs), _count(count)))

    # -- one-shot watch faults --------------------------------------------------------------

    def watch_expire(self, count: int = 1) -> None:
        """The next ``count`` watches get a 410 Expired ``ERROR`` event and end."""
        self._watch_expire += _count(count)

    def watch_eof_after(self, events: int, count: int = 1) -> None:
        """The next ``count`` watches end cleanly after sending ``events`` events."""
        if events < 0:
            raise ValueError("events must not be negative")
        self._watch_eof.extend([events] * _count(count))

    def watch_garbage_next(self, count: int = 1) -> None:
        """The next ``count`` lines sent on this client's watch streams are preceded by a
        line that is not JSON."""
        self._watch_garbage += _count(count)
        self._changed()

    # -- consumed by the server (package-private) -----------------------------------------------------------

    def _take(self, actions: Collection[str], verb: str) -> Planned | None:
        """Consume the first planned fault among ``actions`` that matches ``verb``."""
        for planned in self._planned:
            if planned.action in actions and planned.matches(verb):
                planned.remaining -= 1
                if planned.remaining == 0:
                    self._planned.remove(planned)
                return planned
        return None

    def _roll_error(self, verb: str) -> int | None:
        """The status of a random failure for this request, if one is drawn."""
        if self.error_rate <= 0 or (self.error_verbs is not None and verb not in self.error_verbs):
            return None
        return self.error_status if self._rng.random() < self.error_rate else None

    def _take_watch_expire(self) -> bool:
        if self._watch_expire:
            self._watch_expire -= 1
            return True
        return False

    def _take_watch_eof(self) -> int | None:
        return self._watch_eof.pop(0) if self._watch_eof else None

    def _take_watch_garbage(self) -> bool:
        if self._watch_garbage:
            self._watch_garbage -= 1
            return True
        return False

    @property
    def _holds_requests(self) -> bool:
        """Whether new requests must wait (hang or blackhole)."""
        return self._hang or self._partition == "blackhole"

    @property
    def _holds_output(self) -> bool:
        """Whether nothing may be written (blackhole), or to watches (silence)."""
        return self._watch_silence or self._partition == "blackhole"

    def _subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change of a switch or partition."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
