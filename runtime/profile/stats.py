"""Timing loops and their statistics, in the style of trtexec (warm-up, then N iterations)."""

from __future__ import annotations

import time
from typing import Callable, Dict, List

import numpy as np

from ..backends.base import summarize

PERCENTILE_ORDER = ("min", "median", "p90", "p95", "p99", "max")


def timed(fn: Callable[[], object], iterations: int, warmup: int = 2) -> List[float]:
    """Call *fn* ``warmup`` times untimed, then *iterations* times; milliseconds per call."""
    for _ in range(max(0, warmup)):
        fn()
    out = []
    for _ in range(max(1, iterations)):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stat(values, cdf_points: int = 21) -> Dict[str, object]:
    """mean, median, p90, p95, p99, min, max and count of a list of milliseconds, and
    ``cdf``: the values at *cdf_points* evenly spaced quantiles (for the CDF plots)."""
    out = summarize(values)
    if out.get("count"):
        a = np.asarray(values, dtype=np.float64)
        out["cdf"] = [float(v) for v in np.quantile(a, np.linspace(0.0, 1.0, cdf_points))]
    return out


def consistent(s: Dict[str, float]) -> bool:
    """True when min <= median <= p90 <= p95 <= p99 <= max (and the mean lies within)."""
    if not s.get("count"):
        return True
    vals = [s[k] for k in PERCENTILE_ORDER]
    ordered = all(a <= b + 1e-12 for a, b in zip(vals, vals[1:]))
    return ordered and s["min"] - 1e-12 <= s["mean"] <= s["max"] + 1e-12


class StageClock:
    """Accumulates named stage samples: ``with clock("decode"): ...``."""

    def __init__(self):
        self.samples: Dict[str, List[float]] = {}

    def add(self, name: str, ms: float) -> None:
        self.samples.setdefault(name, []).append(ms)

    def __call__(self, name: str):
        return _Span(self, name)

    def summary(self) -> Dict[str, dict]:
        return {k: stat(v) for k, v in self.samples.items()}


class _Span:
    def __init__(self, clock: StageClock, name: str):
        self.clock = clock
        self.name = name

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.clock.add(self.name, (time.perf_counter() - self.t0) * 1e3)
