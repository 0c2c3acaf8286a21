"""Latency statistics of the benchmark: pure functions, unit-tested."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100) by linear interpolation between closest ranks
    (NumPy's default); NaN for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """What a phase reports: completed operations per second and latency percentiles (ms)."""

    count: int
    errors: int
    seconds: float
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 2),
            "p50_ms": _finite(self.p50_ms),
            "p95_ms": _finite(self.p95_ms),
            "p99_ms": _finite(self.p99_ms),
            "max_ms": _finite(self.max_ms),
        }


def summarize(latencies_s: Sequence[float], errors: int, seconds: float) -> Summary:
    """Summary of successful operations' latencies (seconds) over a phase of `seconds`."""
    ms = [value * 1000.0 for value in latencies_s]
    return Summary(
        count=len(ms),
        errors=errors,
        seconds=seconds,
        rate=len(ms) / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms) if ms else math.nan,
    )


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, None when it is meaningless (no baseline)."""
    if denominator <= 0 or math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, 4)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


class Laps:
    """The steps of one operation, timed one after the other: `lap(step)` ends a step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = now - self._last
        self._last = now


def step_summary(laps: Sequence[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """p50 and p99 (ms) of each step over the operations, in the steps' order."""
    steps = list(laps[0]) if laps else []
    return {
        step: {
            "p50_ms": _finite(percentile([lap[step] * 1000.0 for lap in laps], 50)),
            "p99_ms": _finite(percentile([lap[step] * 1000.0 for lap in laps], 99)),
        }
        for step in steps
    }
