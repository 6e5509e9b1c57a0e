"""Seconds spent in each named step of a run, for the JSON record a stage writes."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class StepTimer(dict):
    """``{step: seconds}`` in the order the steps were declared or first ran; a repeated step adds up."""

    def __init__(self, steps: Iterable[str] = ()) -> None:
        super().__init__(dict.fromkeys(steps, 0.0))
        self.start = time.perf_counter()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self[name] = round(self.get(name, 0.0) + time.perf_counter() - t0, 3)

    def total(self) -> dict[str, float]:
        """The per-step seconds and the total since the timer started."""
        return {**self, "total": round(time.perf_counter() - self.start, 3)}
