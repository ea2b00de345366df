"""What the fake-clock tests share: a jitter source that always picks one point of its range, and
the clock they read."""

from __future__ import annotations

import random

import anyio


class Jitter(random.Random):
    """A jitter source that always picks the same point of the range (0 = low end, 1 = high), and
    records the ranges it was asked for."""

    def __init__(self, point: float = 0.0) -> None:
        super().__init__(0)
        self.point = point
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return a + (b - a) * self.point


def now() -> float:
    return anyio.current_time()
