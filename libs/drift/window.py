"""A sliding window of bin COUNTS, bounded in memory whatever the traffic.

Bins are fixed by the reference profile, so the window never needs raw values: each
slot holds rows per bin per feature, rows per predicted label, the expected confusion
matrix of its scored rows (`libs.drift.performance.expected_confusion`: a sum over rows)
and the observed one of the labelled feedback that arrived meanwhile. Counts and sums from
several windows (worker processes) add up, which is what makes the multi-worker merge
exact, for PSI and performance alike.

The window is cut into slots of a tenth of its size (rows and/or seconds); whole slots
leave it, so its edge is resolved to one slot. Memory: at most slots + 1 slots, each
a few integers per bin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SLOTS = 10
STARS = 5


def _square() -> np.ndarray:
    return np.zeros((STARS, STARS))


@dataclass
class Slot:
    """Counts of the rows observed between `start` and `end` (epoch seconds)."""

    start: float
    end: float
    rows: int = 0
    bins: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    expected: np.ndarray = field(default_factory=_square)  # expected confusion of the scored rows
    realised: np.ndarray = field(default_factory=_square)  # observed confusion of the feedback

    def add(
        self,
        bins: Mapping[str, np.ndarray],
        labels: Mapping[str, int],
        rows: int,
        now: float,
        expected: np.ndarray | None = None,
        realised: np.ndarray | None = None,
    ) -> None:
        for name, counts in bins.items():
            self.bins[name] = self.bins[name] + counts if name in self.bins else counts.copy()
        for label, count in labels.items():
            self.labels[label] = self.labels.get(label, 0) + count
        if expected is not None:
            self.expected = self.expected + expected
        if realised is not None:
            self.realised = self.realised + realised
        self.rows += rows
        self.end = now

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "rows": self.rows,
            "bins": {name: counts.tolist() for name, counts in self.bins.items()},
            "labels": self.labels,
            "expected": self.expected.tolist(),
            "realised": self.realised.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Slot:
        bins = {name: np.asarray(counts, dtype=np.int64) for name, counts in data["bins"].items()}
        labels = {str(label): int(count) for label, count in data["labels"].items()}
        squares = {  # absent from the files of older workers: zero
            name: np.asarray(data.get(name, _square()), dtype=np.float64).reshape(STARS, STARS)
            for name in ("expected", "realised")
        }
        return cls(float(data["start"]), float(data["end"]), int(data["rows"]), bins, labels, **squares)


class CountWindow:
    """The most recent `rows` rows and/or `seconds` seconds of one process's traffic."""

    def __init__(self, rows: int | None, seconds: float | None) -> None:
        if rows is None and seconds is None:
            raise ValueError("a window needs a size: rows, seconds or both")
        if (rows is not None and rows < 1) or (seconds is not None and seconds <= 0):
            raise ValueError(f"window size must be positive, got rows={rows}, seconds={seconds}")
        self.rows = rows
        self.seconds = seconds
        self.slots: list[Slot] = []

    def add(
        self,
        bins: Mapping[str, np.ndarray],
        labels: Mapping[str, int],
        rows: int,
        now: float,
        expected: np.ndarray | None = None,
    ) -> None:
        self._open(now).add(bins, labels, rows, now, expected=expected)
        self.slots = recent(self.slots, self.rows, self.seconds, now)

    def add_feedback(self, realised: np.ndarray, now: float) -> None:
        """Labelled feedback's observed confusion, in the slot open now: it leaves the window
        with the traffic of its time."""
        self._open(now).add({}, {}, 0, now, realised=realised)

    def _open(self, now: float) -> Slot:
        if not self.slots or self._full(self.slots[-1], now):
            self.slots.append(Slot(now, now))
        return self.slots[-1]

    def _full(self, slot: Slot, now: float) -> bool:
        by_rows = self.rows is not None and slot.rows >= max(self.rows // SLOTS, 1)
        by_time = self.seconds is not None and now - slot.start >= self.seconds / SLOTS
        return by_rows or by_time


def recent(slots: Iterable[Slot], rows: int | None, seconds: float | None, now: float) -> list[Slot]:
    """The newest slots making up the window, oldest first: used per process and across them.

    Slots last updated more than `seconds` ago are out; then the newest are kept until
    they hold at least `rows` rows.
    """
    live = [slot for slot in slots if seconds is None or slot.end >= now - seconds]
    live.sort(key=lambda slot: slot.end, reverse=True)
    kept: list[Slot] = []
    total = 0
    for slot in live:
        if rows is not None and total >= rows:
            break
        kept.append(slot)
        total += slot.rows
    return kept[::-1]


def total(slots: Iterable[Slot], names: Iterable[str], sizes: Mapping[str, int]) -> Slot:
    """All slots summed into one (the counts PSI is computed from)."""
    summed = Slot(0.0, 0.0, bins={name: np.zeros(sizes[name], dtype=np.int64) for name in names})
    for slot in slots:
        summed.add(slot.bins, slot.labels, slot.rows, max(summed.end, slot.end), slot.expected, slot.realised)
    return summed
