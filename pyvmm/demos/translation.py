"""Binary translation: the same kernels four ways, from direct execution to interpretation.

The benchmark kernels (benchmarks/kernels/kernels.bin, pyvmm.demos.kernels)
run on the same inputs:

1. natively, called by this process on the host CPU;
2. in a pyvmm guest at CPL3: direct execution, the CPU runs the guest's own
   instructions and the VMM sees only its exits;
3. under dynamic binary translation by unicorn (pyvmm.demos.translator):
   each basic block is translated once into host code and cached;
4. in a pyvmm guest at CPL0: on a host whose KVM emulates kernel-mode code
   (kvm_pvm, detected as the efficiency demo does) every instruction is
   decoded and executed in software; on VT-x/AMD-V this is direct execution
   too, and the demo says so.

Every result must equal the native one for the same n (the same bytes on
the same input), and the report gives ns per iteration (per unit of n) and
the ratio to native for each way. Each measurement is the best of REPEAT
runs, the four ways interleaved in each round.

Status: 0 when the results are identical and the ladder holds (direct
execution fastest, translation between, emulated CPL0 slowest where it is
emulated), 4 when not, 2 when unicorn or the kernels are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import geometric_mean
from typing import TextIO

from pyvmm.demos import kernels, translator
from pyvmm.demos.common import DemoCannotRun, HostFacts, Report, detect_host, format_ratio

QUOTE = (
    "\"a statistically dominant subset of the virtual processor's instructions be "
    'executed directly by the real processor" (efficiency), and what a VMM pays '
    "when they are not: translated, or interpreted one by one."
)

REPEAT = 3
# Translation may not beat direct execution by more than timing noise (a ratio of ratios).
NOISE = 0.67
# Emulated CPL0 must cost at least this many times the dearer of the other two ways.
INTERPRETATION_GAP = 10.0

# (kernel, n for the direct and translated ways, n at CPL0 where CPL0 is emulated)
KERNEL_RUNS: tuple[tuple[str, int, int], ...] = (
    ("int_loop", 5_000_000, 20_000),
    ("mem_checksum", 4_000_000, 20_000),
    ("sieve", 2_000_000, 5_000),
)

# The four ways, in the ladder's order.
NATIVE = "native"
DIRECT = "guest CPL3"
TRANSLATED = "unicorn (TCG)"
RING0 = "guest CPL0"
WAYS = (NATIVE, DIRECT, TRANSLATED, RING0)


@dataclass
class Way:
    """One kernel run one way: the best time of REPEAT runs at n, and every result seen."""

    n: int
    seconds: float = float("inf")
    results: set[int] = field(default_factory=set)

    def add(self, result: int, seconds: float) -> None:
        self.results.add(result)
        self.seconds = min(self.seconds, seconds)

    @property
    def ns_per_iteration(self) -> float:
        return self.seconds * 1e9 / self.n


@dataclass
class KernelLadder:
    """One kernel's four ways, and the native runs at each n they used (the references)."""

    kernel: str
    ways: dict[str, Way]
    native_at: dict[int, Way]

    def identical(self, way: str) -> bool:
        run = self.ways[way]
        return run.results == self.native_at[run.n].results and len(run.results) == 1

    def ratio(self, way: str) -> float:
        """ns per iteration of `way` over native's at the same n."""
        run = self.ways[way]
        return run.ns_per_iteration / self.native_at[run.n].ns_per_iteration


def measure(kernel: str, n: int, n_ring0: int) -> KernelLadder:
    """REPEAT interleaved rounds of the four ways (raises KernelRunError, TranslatorUnavailable)."""
    ways = {NATIVE: Way(n), DIRECT: Way(n), TRANSLATED: Way(n), RING0: Way(n_ring0)}
    native_at = {n: ways[NATIVE], n_ring0: Way(n_ring0)} if n_ring0 != n else {n: ways[NATIVE]}
    for _ in range(REPEAT):
        for size, reference in native_at.items():
            run = kernels.run_native(kernel, size)
            reference.add(run.result, run.seconds)
        guest = kernels.run_in_guest(kernel, n, ring=3, check=False)
        ways[DIRECT].add(guest.result, guest.seconds)
        translated = translator.run_translated(kernel, n)
        ways[TRANSLATED].add(translated.result, translated.seconds)
        guest = kernels.run_in_guest(kernel, n_ring0, ring=0, check=False)
        ways[RING0].add(guest.result, guest.seconds)
    return KernelLadder(kernel, ways, native_at)


def run(out: TextIO) -> int:
    host = detect_host()
    translator.load_unicorn()  # before any output: missing unicorn is one line, status 2
    try:
        kernels.load_kernel_image()
    except kernels.KernelRunError as error:
        raise DemoCannotRun(f"the benchmark kernels cannot run: {error}") from None
    report = Report(out)
    report.header("Binary translation", QUOTE, host)
    ladders = []
    for kernel, n, n_ring0 in KERNEL_RUNS:
        n_ring0 = n_ring0 if host.ring0_is_emulated else n
        report.section(
            f"{kernel}: n = {n:,} (CPL0: {n_ring0:,}), best of {REPEAT} interleaved rounds"
        )
        try:
            ladder = measure(kernel, n, n_ring0)
        except kernels.KernelsUnavailable as error:
            raise DemoCannotRun(f"the benchmark kernels cannot run natively: {error}") from None
        except (kernels.KernelRunError, translator.TranslatedRunError) as error:
            report.text(f"{kernel} failed: {error}")
            return report.verdict(False, f"{kernel} did not run to its end every way")
        report.table(
            ["way", "n", "result", "same as native", "ns/iteration", "vs native"],
            [row(ladder, way) for way in WAYS],
        )
        ladders.append(ladder)
    identical = all(ladder.identical(way) for ladder in ladders for way in WAYS)
    ladder_holds = ladder_order_holds(ladders, host)
    explain(report, host, ladders)
    if not identical:
        return report.verdict(False, "a way gave a different result from the same bytes")
    if not ladder_holds:
        return report.verdict(
            False, "the results agree, but the times do NOT form the ladder (see the tables)"
        )
    ladder = (
        "direct < translated < interpreted" if host.ring0_is_emulated else "direct < translated"
    )
    return report.verdict(True, f"identical results four ways; the ladder holds: {ladder}")


def row(ladder: KernelLadder, way: str) -> list[str]:
    run = ladder.ways[way]
    results = sorted(run.results)
    result = f"0x{results[0]:016x}" if len(results) == 1 else "varies"
    return [
        way,
        f"{run.n:,}",
        result,
        "yes" if ladder.identical(way) else "NO",
        f"{run.ns_per_iteration:,.2f}",
        "1.0x" if way == NATIVE else format_ratio(ladder.ratio(way)),
    ]


def ladder_order_holds(ladders: list[KernelLadder], host: HostFacts) -> bool:
    """Direct execution is the cheapest way, translation next, emulated CPL0 far behind.

    A translator can keep a tight ALU loop within noise of the CPU (int_loop),
    so per kernel translation may not beat direct execution by more than
    NOISE; across the kernels (geometric mean) it must cost more. Where CPL0
    is emulated it must cost INTERPRETATION_GAP times more than either other way.
    """
    direct = [ladder.ratio(DIRECT) for ladder in ladders]
    translated = [ladder.ratio(TRANSLATED) for ladder in ladders]
    if any(t < d * NOISE for d, t in zip(direct, translated, strict=True)):
        return False
    if geometric_mean(translated) <= geometric_mean(direct):
        return False
    if host.ring0_is_emulated:
        return all(
            ladder.ratio(RING0) > INTERPRETATION_GAP * max(d, t)
            for ladder, d, t in zip(ladders, direct, translated, strict=True)
        )
    return True


def explain(report: Report, host: HostFacts, ladders: list[KernelLadder]) -> None:
    def span(way: str) -> str:
        ratios = sorted(ladder.ratio(way) for ladder in ladders)
        low, high = format_ratio(ratios[0]), format_ratio(ratios[-1])
        return low if low == high else f"{low}-{high}"

    report.text(
        f"Direct execution ({span(DIRECT)} native): in the CPL3 guest the CPU runs the "
        "kernel's own instructions; the VMM is involved only at the few exits that "
        "start and end the run. This is what VT-x and AMD-V made possible for all guest "
        "code, and what trap-and-emulate needs: every sensitive instruction must trap."
    )
    report.text(
        f"Binary translation ({span(TRANSLATED)} native): unicorn (QEMU's TCG) reads each "
        "basic block of guest code once, emits host code for it and caches it; the loop "
        "then runs as host code, each memory access checked by the translator's software "
        "MMU. Pure ALU loops come out close to native, loops that touch memory pay most "
        "(mem_checksum and sieve against int_loop). A VMM that translates can rewrite the "
        "few instructions x86 lets a guest run unnoticed (pyvmm demo sensitive-instructions): "
        "that is how VMware virtualized x86 before VT-x."
    )
    if host.ring0_is_emulated:
        report.text(
            f"Interpretation ({span(RING0)} native): {host.explain_rings()} Each instruction is "
            "fetched, decoded and executed by software every time it runs: no cache of work "
            "done, so the cost per iteration is thousands of times the CPU's."
        )
    else:
        report.text(
            f"{host.explain_rings()} The CPL0 row is therefore direct execution too "
            f"({span(RING0)} native); on a host without VT-x/AMD-V (kvm_pvm) it is "
            "interpreted, thousands of times slower."
        )
