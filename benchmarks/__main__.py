"""`python -m benchmarks`: run every suite, print a table, write JSON and a chart.

    python -m benchmarks [--quick] [--suite NAME [--suite NAME ...]] [--json FILE]
                         [--chart FILE]
                         [--compare OLD.json [NEW.json]]

Every comparison is a series of interleaved pairs (A B A B ...); the table
shows medians and min-max of each side and the median of the pair ratios B/A.

--compare OLD.json runs as usual, then prints, for every comparison in both
runs, the old and the new ratio B/A and new/old (below 1: B got cheaper
relative to A); --compare OLD.json NEW.json compares two saved runs and runs
nothing (see benchmarks/compare.py).

The JSON (every sample) and the chart go, unless --json and --chart say
otherwise, to a new pair of files named after the run's start time in
$XDG_STATE_HOME/pyvmm/benchmarks/ (~/.local/state/pyvmm/benchmarks/): never
into the current directory, so a run inside a checkout changes nothing in it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from benchmarks.compare import CompareError, compare_runs, load_run, render_comparison
from benchmarks.comparison import Comparison
from pyvmm.kvm.host import kvm_backend
from pyvmm.shipped import run_installed_if_shadowed

SUITES = {
    "kernels": "benchmarks.suite_kernels",
    "exits": "benchmarks.suite_exits",
    "linux": "benchmarks.suite_linux",
    "startup": "benchmarks.suite_startup",
    "virtio": "benchmarks.suite_virtio",
}
# Run only when --suite names them: linux boots Debian's kernel for minutes and
# needs the checkout's tests/linux.
ASKED_ONLY = frozenset({"linux"})


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


def format_ratio(ratio: float) -> str:
    """`1.09x`; a ratio below 0.1 keeps three significant digits (`0.00408x`)."""
    return f"{ratio:.3g}x" if ratio < 0.1 else f"{ratio:.2f}x"


def render_table(comparisons: list[Comparison]) -> str:
    """One line per row: labels, each side's median (min-max), and the median of the pair
    ratios B/A; every column as wide as its widest cell."""

    def cell(samples: list[float]) -> str:
        if not samples:
            return "-"
        median = statistics.median(samples)  # as the JSON's: the mean of the middle two
        return f"{format_value(median)} ({format_value(min(samples))}-{format_value(max(samples))})"

    header = ["suite", "comparison", "unit", "A", "A median (min-max)", "B", "B median (min-max)"]
    rows = [
        [
            item.suite,
            item.name,
            item.unit,
            item.a_label,
            cell(item.a),
            item.b_label,
            cell(item.b),
            "-" if item.ratio is None else format_ratio(item.ratio),
        ]
        for item in comparisons
    ]
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(len(header))]
    ratio_width = max([3, *(len(row[-1]) for row in rows)])

    def line(cells: list[str], ratio: str) -> str:
        left = " ".join(f"{text:<{width}}" for text, width in zip(cells, widths, strict=True))
        return f"{left} {ratio:>{ratio_width}}"

    lines = [line(header, "B/A")]
    lines.insert(1, "-" * len(lines[0]))
    for item, row in zip(comparisons, rows, strict=True):
        lines.append(line(row[:-1], row[-1]))
        skipped = item.notes.get("skipped")
        if skipped:
            lines.append(f"{'':<{widths[0]}} {'':<{widths[1]}} skipped: {skipped}")
    return "\n".join(lines)


def draw_chart(comparisons: list[Comparison], path: Path) -> str | None:
    """A bar chart of the B/A ratios (log scale). Needs matplotlib (the [bench] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (the [bench] extra): no chart"
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
        axes.text(ratio, index, f" {format_ratio(ratio)}", va="center", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def results_directory(environ: Mapping[str, str] = os.environ) -> Path:
    """Where runs keep their results: $XDG_STATE_HOME/pyvmm/benchmarks.

    XDG_STATE_HOME defaults to ~/.local/state; a relative value is ignored,
    as the XDG Base Directory Specification says.
    """
    state = environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "pyvmm" / "benchmarks"


def default_outputs(quick: bool, started: time.struct_time) -> tuple[Path, Path]:
    """(JSON, chart) paths for a run that started at `started`, new in results_directory()."""
    stem = time.strftime("%Y%m%d-%H%M%S", started) + ("-quick" if quick else "-full")
    directory = results_directory()
    return directory / f"{stem}.json", directory / f"{stem}.png"


class ProgressLine:
    """Benchmark progress on `stream`.

    On a terminal, one line redrawn in place for each message. Anywhere else
    (a log file, a pipe, CI) plain lines, one per step: the per-pair counter
    updates of a step ("... pair 3/7") are left out after the step's first.
    """

    PAIR_COUNTER = re.compile(r" pair \d+/(\d+)$")

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.step: str | None = None

    def __call__(self, message: str) -> None:
        if self.terminal:
            print(f"\r\033[K{message}", end="", file=self.stream, flush=True)
            return
        counter = self.PAIR_COUNTER.search(message)
        step = message[: counter.start()] if counter else message
        if step != self.step:
            self.step = step
            pairs = counter.group(1) if counter else ""
            line = f"{step} ({pairs} pair{'' if pairs == '1' else 's'})" if counter else message
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Clear the redrawn line (on a terminal) before the results are printed."""
        if self.terminal:
            print("\r\033[K", end="", file=self.stream, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument(
        "--suite",
        action="append",
        choices=sorted(SUITES),
        help="run only this suite; repeat the option for more (default: all but linux, "
        "which boots Linux kernels for 8-15 minutes, about 1 with --quick, and runs only "
        "from a checkout)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="write every sample here (default: see above)"
    )
    parser.add_argument(
        "--chart", type=Path, metavar="FILE", help="draw the ratios here (default: see above)"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="OLD.json: compare this run's ratios with OLD's; OLD.json NEW.json: compare "
        "two saved runs, running nothing",
    )
    args = parser.parse_args(argv)
    old_run: dict[str, Any] | None = None
    if args.compare:
        if len(args.compare) > 2:
            parser.error("--compare takes OLD.json, or OLD.json NEW.json")
        try:
            runs = [load_run(path) for path in args.compare]
        except CompareError as error:
            parser.error(f"--compare: {error}")
        if len(runs) == 2:
            if args.quick or args.suite or args.json or args.chart:
                parser.error(
                    "--compare OLD.json NEW.json compares two saved runs and runs nothing: "
                    "it takes no --quick, --suite, --json or --chart"
                )
            result = compare_runs(runs[0], runs[1])
            print(render_comparison(result, str(args.compare[0]), str(args.compare[1])))
            return 0
        old_run = runs[0]
    default_json, default_chart = default_outputs(args.quick, time.localtime())
    json_path: Path = args.json or default_json
    chart_path: Path = args.chart or default_chart

    progress = ProgressLine(sys.stderr)
    started = time.monotonic()
    comparisons: list[Comparison] = []
    for name in args.suite or [name for name in SUITES if name not in ASKED_ONLY]:
        module = importlib.import_module(SUITES[name])
        progress(f"{name}: starting")
        comparisons += module.collect(quick=args.quick, progress=progress)
    progress.close()

    machine = machine_description()
    print(
        f"machine: {machine['cpu']}, Linux {machine['kernel']}, Python {machine['python']}, "
        f"KVM {machine['kvm']}"
    )
    print(render_table(comparisons))
    elapsed = time.monotonic() - started
    print(f"\n{'quick' if args.quick else 'full'} run in {elapsed:.0f} s")
    for path in (json_path, chart_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    run = {
        "machine": machine,
        "quick": args.quick,
        "seconds": elapsed,
        "comparisons": [item.to_json() for item in comparisons],
    }
    json_path.write_text(json.dumps(run, indent=2))
    print(f"results: {json_path}")
    problem = draw_chart(comparisons, chart_path)
    print(problem or f"chart: {chart_path}")
    if old_run is not None:
        print()
        print(render_comparison(compare_runs(old_run, run), str(args.compare[0]), str(json_path)))
    return 0


if __name__ == "__main__":
    # Inside a checkout whose pyvmm is not built (a non-editable install), run the installed one.
    run_installed_if_shadowed("benchmarks")
    sys.exit(main())
