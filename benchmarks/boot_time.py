"""Whole-process time of `pyvmm boot guests/hello.bin`, against a bare Python start.

Interleaved pairs (A B A B ...): this host's clock drifts, so each pair gives
a ratio and the report is the median of the ratios, never two separate medians.

    python -m benchmarks.boot_time [--pairs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOT = [sys.executable, "-m", "pyvmm", "boot", "guests/hello.bin"]
BASELINE = [sys.executable, "-c", "pass"]


def time_command(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args()
    boots: list[float] = []
    bases: list[float] = []
    for _ in range(args.pairs):
        boots.append(time_command(BOOT))
        bases.append(time_command(BASELINE))
    ratios = [boot / base for boot, base in zip(boots, bases, strict=True)]
    print(
        f"pyvmm boot guests/hello.bin: median {statistics.median(boots) * 1000:.1f} ms "
        f"(min {min(boots) * 1000:.1f}, max {max(boots) * 1000:.1f})"
    )
    print(f"python -c pass:              median {statistics.median(bases) * 1000:.1f} ms")
    print(
        f"ratio boot/bare python (median of {args.pairs} pair ratios): "
        f"{statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
