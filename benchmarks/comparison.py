"""What every benchmark suite returns: paired samples of two things, A and B.

Samples are taken as interleaved pairs (A B A B ...) because this host's
clock drifts: the honest figure is the median of per-pair ratios B/A, never
the ratio of two medians taken at different times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[str], None]


@dataclass
class Comparison:
    """`a` and `b` hold one sample per pair, in `unit` (e.g. "us/exit", "ms", "s")."""

    suite: str
    name: str
    a_label: str
    b_label: str
    unit: str
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.a, self.b, strict=True) if a > 0]

    @property
    def ratio(self) -> float | None:
        """Median of the pair ratios B/A: how many times B costs A."""
        ratios = self.ratios
        return statistics.median(ratios) if ratios else None

    def to_json(self) -> dict[str, Any]:
        def summary(samples: list[float]) -> dict[str, float] | None:
            if not samples:
                return None
            return {
                "median": statistics.median(samples),
                "min": min(samples),
                "max": max(samples),
            }

        return {
            "suite": self.suite,
            "name": self.name,
            "unit": self.unit,
            "a_label": self.a_label,
            "b_label": self.b_label,
            "a": summary(self.a),
            "b": summary(self.b),
            "ratio_b_over_a": self.ratio,
            "pairs": len(self.ratios),
            "samples": {"a": self.a, "b": self.b},
            "notes": self.notes,
        }


def interleave(
    comparison: Comparison,
    run_a: Callable[[], float],
    run_b: Callable[[], float],
    pairs: int,
    progress: Progress | None = None,
) -> Comparison:
    """Fill `comparison` with `pairs` samples of A then B, alternating."""
    for index in range(pairs):
        comparison.a.append(run_a())
        comparison.b.append(run_b())
        if progress is not None:
            progress(f"{comparison.suite}: {comparison.name} pair {index + 1}/{pairs}")
    return comparison


def timed(function: Callable[[], object]) -> float:
    """Seconds of wall-clock time one call takes (perf_counter)."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
