"""bench.stats — medians, percentiles and ratios of measured runs.

SYNOPSIS
    median([3.0, 1.0, 2.0])               # 2.0
    percentile(latencies, 99.0)           # nearest-rank percentile
    safe_ratio(postgate, postfix)         # None when either side is missing or 0

DESCRIPTION
    Percentiles use the nearest-rank method (the value at rank ceil(p/100 * n)), so a
    reported p99 is a latency that was really observed, never an interpolation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def safe_ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
