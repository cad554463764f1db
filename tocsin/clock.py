"""Time sources: the real one, and one that tests move by hand."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where Tocsin reads the time; everything time-dependent takes one."""

    def time(self) -> float:
        """Return wall-clock time as POSIX seconds."""

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes backwards."""


class SystemClock:
    """The host's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when a test calls :meth:`advance` or :meth:`set`."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._wall = start
        self._mono = 1000.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forwards")
        self._wall += seconds
        self._mono += seconds

    def set(self, wall: float) -> None:
        self.advance(wall - self._wall)
