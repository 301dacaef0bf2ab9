"""Compute kernels natively and in a guest, at CPL3 and at CPL0, per unit of work.

For each kernel two comparisons, A = native (this process), B = guest:
"<kernel> CPL3" (pyvmm's user-mode entry state) and "<kernel> CPL0" (long
mode, ring 0). Samples are nanoseconds per iteration (per byte for
mem_checksum), taken as interleaved pairs with the same n on both sides.

n is not fixed: a guest probe run picks it so that one guest run takes about
a target time, capped at a full size. Where guest ring-0 code is emulated (a
kvm_pvm host: thousands of times slower than native) CPL0 gets a much
smaller n than CPL3; on VT-x/AMD-V both reach the cap. Hence the per-unit
figures: only they compare across rings and hosts. Each comparison's notes
say which n it used, how it was chosen, the guest's fixed cost (a run with
n = 0: entry, the stub, three port-I/O exits), the results on both sides and
whether they matched.

    python -m benchmarks.suite_kernels [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.comparison import Comparison, Progress, interleave
from pyvmm.demos.kernels import (
    EQUIVALENT_KERNELS,
    KernelRunError,
    run_in_guest,
    run_native,
)

SUITE = "kernels"
RINGS = (3, 0)
NANOSECONDS = 1e9


@dataclass(frozen=True)
class KernelPlan:
    name: str
    unit: str
    iteration: str  # what one unit of work is
    start_n: int  # the first probe's n
    quick_max_n: int
    full_max_n: int


PLANS = (
    KernelPlan("int_loop", "ns/iter", "one xorshift round", 1_000, 10_000_000, 100_000_000),
    KernelPlan("mem_checksum", "ns/byte", "one byte filled and summed", 4_096, 8 << 20, 64 << 20),
    KernelPlan("sieve", "ns/iter", "one number up to n", 1_000, 4_000_000, 30_000_000),
    KernelPlan("cpuid_loop", "ns/iter", "one CPUID (leaf 0)", 100, 10_000, 100_000),
)


@dataclass(frozen=True)
class Settings:
    pairs: int
    target_seconds: dict[int, float]  # per ring: how long one guest run should take
    overhead_runs: int


QUICK = Settings(pairs=3, target_seconds={3: 0.05, 0: 0.4}, overhead_runs=3)
FULL = Settings(pairs=7, target_seconds={3: 0.5, 0: 1.2}, overhead_runs=5)

# CPUID leaves that tell whose CPUID a guest sees: KVM's vCPU table or the host CPU's.
CPUID_LEAVES = (0x0, 0x1, 0x7, 0xD, 0x8000_0008)


@dataclass(frozen=True)
class Calibration:
    n: int
    probe_n: int
    probe_seconds: float


def calibrate(
    run: Callable[[int], float], start_n: int, max_n: int, target_seconds: float
) -> Calibration:
    """The n (at most max_n) for which one `run(n)` takes about `target_seconds`.

    Probes grow n eightfold until a run takes an eighth of the target, then
    extrapolate linearly; an n below max_n is rounded down to two significant
    digits.
    """
    n = min(start_n, max_n)
    while True:
        seconds = run(n)
        if n >= max_n or seconds >= target_seconds / 8:
            break
        n = min(n * 8, max_n)
    scaled = max_n if seconds <= 0 else int(n * target_seconds / seconds)
    chosen = max_n if scaled >= max_n else round_down(max(scaled, 1))
    return Calibration(chosen, n, seconds)


def round_down(n: int) -> int:
    """n rounded down to two significant digits: 197531 -> 190000."""
    scale = 10 ** max(len(str(n)) - 2, 0)
    return n // scale * scale


def compare_kernel(
    plan: KernelPlan, ring: int, quick: bool, progress: Progress | None
) -> Comparison:
    settings = QUICK if quick else FULL
    max_n = plan.quick_max_n if quick else plan.full_max_n
    target = settings.target_seconds[ring]

    def guest_seconds(n: int) -> float:
        return run_in_guest(plan.name, n, ring, check=False).seconds

    calibration = calibrate(guest_seconds, plan.start_n, max_n, target)
    n = calibration.n
    overhead = statistics.median(
        run_in_guest(plan.name, 0, ring, check=False).seconds for _ in range(settings.overhead_runs)
    )
    native_results: list[int] = []
    guest_results: list[int] = []
    guest_exits: list[int] = []

    def native() -> float:
        run = run_native(plan.name, n)
        native_results.append(run.result)
        return run.seconds * NANOSECONDS / n

    def guest() -> float:
        run = run_in_guest(plan.name, n, ring, check=False)
        guest_results.append(run.result)
        guest_exits.append(run.exits or 0)
        return run.seconds * NANOSECONDS / n

    comparison = Comparison(
        suite=SUITE,
        name=f"{plan.name} CPL{ring}",
        a_label="native",
        b_label=f"guest CPL{ring}",
        unit=plan.unit,
    )
    interleave(comparison, native, guest, settings.pairs, progress)

    # cpuid_loop returns the count of CPUIDs it ran, on both sides.
    expected = set(native_results) if plan.name in EQUIVALENT_KERNELS else {n}
    matched = len(expected) == 1 and set(guest_results) == expected
    comparison.notes.update(
        {
            "n": n,
            "ring": ring,
            "iteration": plan.iteration,
            "n_choice": {
                "target_guest_seconds": target,
                "max_n": max_n,
                "probe_n": calibration.probe_n,
                "probe_guest_seconds": calibration.probe_seconds,
                "capped": n == max_n,
            },
            "guest_fixed_seconds": overhead,
            "guest_exits": sorted(set(guest_exits)),
            "native_results": [f"0x{result:x}" for result in sorted(set(native_results))],
            "guest_results": [f"0x{result:x}" for result in sorted(set(guest_results))],
            "results_match": matched,
        }
    )
    if plan.name == "cpuid_loop":
        comparison.notes["cpuid_view"] = cpuid_view(ring)
    if not matched and progress is not None:
        progress(f"{SUITE}: {comparison.name}: guest and native results DIFFER")
    return comparison


def cpuid_view(ring: int) -> dict[str, Any]:
    """EAX | EBX << 32 of a few CPUID leaves natively and in a guest at `ring`."""
    leaves: dict[str, dict[str, str]] = {}
    for leaf in CPUID_LEAVES:
        native = run_native("cpuid_leaf", leaf).result
        guest = run_in_guest("cpuid_leaf", leaf, ring, check=False).result
        leaves[f"0x{leaf:08x}"] = {"native": f"0x{native:016x}", "guest": f"0x{guest:016x}"}
    same = all(values["native"] == values["guest"] for values in leaves.values())
    return {"leaves_eax_ebx": leaves, "guest_sees_host_values": same}


def collect(quick: bool, progress: Progress | None = None) -> list[Comparison]:
    comparisons = []
    for plan in PLANS:
        for ring in RINGS:
            comparisons.append(compare_kernel(plan, ring, quick, progress))
    return comparisons


def format_comparison(comparison: Comparison) -> str:
    """One line: n, medians of both sides, the median pair ratio, the guest's fixed cost."""
    ratio = comparison.ratio
    if ratio is None:
        return f"{comparison.name}: no samples"
    notes = comparison.notes
    return (
        f"{comparison.name:<18} n={notes['n']:<11,} "
        f"native {statistics.median(comparison.a):>9.3f}  "
        f"guest {statistics.median(comparison.b):>10.3f} {comparison.unit:<8} "
        f"ratio {ratio:>8.2f}  fixed {notes['guest_fixed_seconds'] * 1e3:6.2f} ms  "
        f"exits {notes['guest_exits']}  match {notes['results_match']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few pairs (< 20 s)")
    parser.add_argument("--json", action="store_true", help="print every sample as JSON")
    args = parser.parse_args(argv)
    try:
        comparisons = collect(args.quick, lambda line: print(line, file=sys.stderr))
    except KernelRunError as error:
        print(f"suite_kernels: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([comparison.to_json() for comparison in comparisons], indent=2))
        return 0
    for comparison in comparisons:
        print(format_comparison(comparison))
    return 0


if __name__ == "__main__":
    sys.exit(main())
