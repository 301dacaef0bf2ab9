"""`python -m benchmarks`: run every suite, print a table, write JSON and a chart.

    python -m benchmarks [--quick] [--suite NAME ...] [--json FILE] [--chart FILE]

Every comparison is a series of interleaved pairs (A B A B ...); the table
shows medians and min-max of each side and the median of the pair ratios B/A.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.comparison import Comparison
from pyvmm.kvm.host import kvm_backend

SUITES = {
    "kernels": "benchmarks.suite_kernels",
    "exits": "benchmarks.suite_exits",
    "startup": "benchmarks.suite_startup",
}


def machine_description() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kvm": kvm_backend(),
    }


def format_value(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def render_table(comparisons: list[Comparison]) -> str:
    header = (
        f"{'suite':<8} {'comparison':<44} {'unit':<8} {'A':<20} {'A median (min-max)':<24} "
        f"{'B':<20} {'B median (min-max)':<24} {'B/A':>8}"
    )
    lines = [header, "-" * len(header)]
    for item in comparisons:

        def cell(samples: list[float]) -> str:
            if not samples:
                return "-"
            ordered = sorted(samples)
            median = ordered[len(ordered) // 2]
            return (
                f"{format_value(median)} ({format_value(ordered[0])}-{format_value(ordered[-1])})"
            )

        ratio = item.ratio
        lines.append(
            f"{item.suite:<8} {item.name:<44} {item.unit:<8} {item.a_label:<20} "
            f"{cell(item.a):<24} {item.b_label:<20} {cell(item.b):<24} "
            f"{'-' if ratio is None else f'{ratio:.2f}x':>8}"
        )
        skipped = item.notes.get("skipped")
        if skipped:
            lines.append(f"{'':<8} {'':<44} skipped: {skipped}")
    return "\n".join(lines)


def draw_chart(comparisons: list[Comparison], path: Path) -> str | None:
    """A bar chart of the B/A ratios (log scale). Needs matplotlib (the [bench] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    rated = [item for item in comparisons if item.ratio is not None]
    if not rated:
        return "nothing to chart"
    labels = [f"{item.name}\n{item.b_label} / {item.a_label}" for item in rated]
    ratios = [item.ratio or 0.0 for item in rated]
    figure, axes = plt.subplots(figsize=(10, 0.5 * len(rated) + 1.5))
    axes.barh(range(len(rated)), ratios, color="#4a7ab5")
    axes.set_yticks(range(len(rated)), labels, fontsize=7)
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel("median of pair ratios B/A (log scale; 1 = same cost)")
    axes.invert_yaxis()
    for index, ratio in enumerate(ratios):
        axes.text(ratio, index, f" {ratio:.2f}x", va="center", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="run only these")
    parser.add_argument("--json", type=Path, default=Path("benchmark-results.json"))
    parser.add_argument("--chart", type=Path, default=Path("benchmark-results.png"))
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)

    started = time.monotonic()
    comparisons: list[Comparison] = []
    for name in args.suite or list(SUITES):
        module = importlib.import_module(SUITES[name])
        progress(f"{name}: starting")
        comparisons += module.collect(quick=args.quick, progress=progress)
    print("\r\033[K", end="", file=sys.stderr)

    machine = machine_description()
    print(
        f"machine: {machine['cpu']}, Linux {machine['kernel']}, Python {machine['python']}, "
        f"KVM {machine['kvm']}"
    )
    print(render_table(comparisons))
    elapsed = time.monotonic() - started
    print(f"\n{'quick' if args.quick else 'full'} run in {elapsed:.0f} s")
    args.json.write_text(
        json.dumps(
            {
                "machine": machine,
                "quick": args.quick,
                "seconds": elapsed,
                "comparisons": [item.to_json() for item in comparisons],
            },
            indent=2,
        )
    )
    print(f"results: {args.json}")
    problem = draw_chart(comparisons, args.chart)
    print(problem or f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
