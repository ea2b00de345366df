"""Timing of an election: how long a lease lasts, how long a leader may fail to renew, how often
candidates retry."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, final

__all__ = ["Timing"]


@final
@dataclass(frozen=True)
class Timing:
    """The three durations of client-go's ``LeaderElectionConfig``, validated the same way.

    * ``lease_duration`` (LD): how long non-leaders wait after the last observed change of the lock
      before they may take it. It is written into the lock, and *the record's* value is what others
      honour.
    * ``renew_deadline`` (RD): how long the leader keeps retrying a failed renewal before it gives up.
      Leader work is cancelled no later than *send time of the last successful renew + RD*.
    * ``retry_period`` (RP): the pause between attempts; acquisition waits are jittered to
      ``RP × uniform(1, 1 + jitter)``.

    The margin ``LD − RD`` is what protects against two leaders: a leader stops working RD after
    its last good renew, while others start counting LD from the moment *they saw* that renew,
    which is later. So it must cover clock-rate drift between nodes and the time a request spends in
    flight. ``LD > RD > jitter × RP > 0`` is enforced.

    Presets::

        Timing()                    # 15 / 10 / 2, client-go's defaults
        Timing.latency_sensitive()  # 10 / 8 / 1
        Timing.stability_first()    # 30 / 20 / 5
    """

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    jitter: float = 1.2

    # Records carry leaseDurationSeconds as an int; we round up so others never see a shorter lease.
    PRESETS: ClassVar[tuple[str, ...]] = ("default", "latency_sensitive", "stability_first")

    def __post_init__(self) -> None:
        for name in ("lease_duration", "renew_deadline", "retry_period", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter!r}")
        if self.retry_period <= 0:
            raise ValueError(f"retry_period must be greater than zero, got {self.retry_period!r}")
        if self.lease_duration < 1:
            # The wire format counts whole seconds; anything shorter cannot be honoured by peers.
            raise ValueError(
                f"lease_duration must be at least 1 second, got {self.lease_duration!r}"
            )
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration!r}) must be greater than "
                f"renew_deadline ({self.renew_deadline!r})"
            )
        # client-go: RD > JitterFactor·RP. A jitter below 1 (tests use 0 for exact times) still
        # needs RD > RP, or a single retry could not fit in the renew window.
        factor = max(1.0, self.jitter)
        if self.renew_deadline <= factor * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline!r}) must be greater than "
                f"max(1, jitter) × retry_period ({factor!r} × {self.retry_period!r} = "
                f"{factor * self.retry_period!r})"
            )

    @property
    def lease_duration_seconds(self) -> int:
        """The whole seconds written into the record (rounded up)."""
        return math.ceil(self.lease_duration)

    @classmethod
    def latency_sensitive(cls) -> Timing:
        """10 / 8 / 1: faster failover, more API traffic, less tolerance for a slow API server."""
        return cls(lease_duration=10.0, renew_deadline=8.0, retry_period=1.0)

    @classmethod
    def stability_first(cls) -> Timing:
        """30 / 20 / 5: rides out long API-server hiccups at the price of slower failover."""
        return cls(lease_duration=30.0, renew_deadline=20.0, retry_period=5.0)

    @classmethod
    def preset(cls, name: str) -> Timing:
        """A preset by name: ``default``, ``latency_sensitive`` (or ``latency-sensitive``),
        ``stability_first``."""
        key = name.replace("-", "_")
        if key == "default":
            return cls()
        if key == "latency_sensitive":
            return cls.latency_sensitive()
        if key == "stability_first":
            return cls.stability_first()
        raise ValueError(f"unknown timing preset {name!r}; choose one of {', '.join(cls.PRESETS)}")
