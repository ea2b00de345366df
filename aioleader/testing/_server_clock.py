"""The emulated API server's wall clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import final

__all__ = ["ServerClock"]


@final
class ServerClock:
    """The time the emulated server believes it is, in UTC.

    It follows the real clock until `set()` pins it; from then on it moves only with
    [`advance()`][advance], so tests can assert exact ``creationTimestamp`` values. [`reset()`][reset]
    returns it to real time. The server's clock matters to what it writes (creation timestamps,
    the request log) and to the emulated election controller (ping windows, Lease expiry,
    LeaseCandidate garbage collection); leader election itself never trusts it.
    """

    def __init__(self, *, on_change: Callable[[], None] | None = None) -> None:
        """
        Args:
            on_change: called after every `set()`, [`advance()`][advance] and [`reset()`][reset]
                (the emulator's election controller re-evaluates what is due).
        """
        self._pinned: datetime | None = None
        self._on_change = on_change

    def now(self) -> datetime:
        """The current server time (aware, UTC)."""
        return self._pinned if self._pinned is not None else datetime.now(timezone.utc)

    def set(self, moment: datetime) -> None:
        """Pin the clock at ``moment`` (naive datetimes are taken as UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        self._pinned = moment.astimezone(timezone.utc)
        self._changed()

    def advance(self, seconds: float) -> None:
        """Move the clock forward (pinning it at real time + ``seconds`` if it was not pinned)."""
        self._pinned = self.now() + timedelta(seconds=seconds)
        self._changed()

    def reset(self) -> None:
        """Follow the real clock again."""
        self._pinned = None
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    @property
    def pinned(self) -> bool:
        """Whether the clock is pinned (moves only when told)."""
        return self._pinned is not None
