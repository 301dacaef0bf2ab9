"""Equivalence: the same machine code gives the same answers natively and in a guest.

The benchmark kernels (benchmarks/kernels/kernels.bin, shipped with pyvmm
and run by pyvmm.demos.kernels) are run by this process on the host CPU and
in pyvmm guests at CPL3 and CPL0, on the same inputs; the results must be
bit-identical. Then the demo shows what Popek and Goldberg allow to differ:
timing, and what CPUID reports (the resources the VMM chooses to offer).

Kernels that cannot run natively leave the demo unable to run (status 2); a
guest run that ends other than the way the kernels end is evidence against
equivalence (status 1).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from pyvmm.demos import kernels
from pyvmm.demos.common import (
    EVIDENCE_FAILS,
    DemoCannotRun,
    HostFacts,
    Report,
    detect_host,
    format_ratio,
    format_seconds,
    run_guest,
)
from pyvmm.demos.native import (
    CPUID_RESULTS_GPA,
    GUEST_DEBUG_EXIT_STATUS,
    Cpuid,
    guest_cpuid_image,
    native_cpuid,
)
from pyvmm.loaders.entry import CpuMode

QUOTE = (
    '"any program run under the VMM should exhibit an effect identical with that '
    "demonstrated if the program had been run on the original machine directly, with "
    "the possible exception of differences caused by the availability of system "
    'resources and differences caused by timing dependencies."'
)

# (kernel, n at CPL3, n at CPL0). Ring 0 is emulated on some hosts: small n there.
KERNEL_RUNS: tuple[tuple[str, int, int], ...] = (
    ("int_loop", 10_000_000, 20_000),
    ("mem_checksum", 4_000_000, 20_000),
    ("sieve", 2_000_000, 5_000),
    ("cpuid_loop", 10_000, 200),
)
# cpuid_loop returns how many CPUIDs ran, not what they said (that differs by design).
COUNTING_KERNELS = frozenset({"cpuid_loop"})
REPEAT = 3  # each timing is the best of this many runs

LEAF_FEATURES = 1
LEAF_HYPERVISOR = 0x4000_0000
CPUID_LEAVES = [LEAF_FEATURES, LEAF_HYPERVISOR]

# CPUID.1:ECX bits, named as in the Intel SDM vol. 2A, table 3-10 (bit 31: hypervisor).
ECX_FEATURES = {
    0: "SSE3",
    1: "PCLMULQDQ",
    3: "MONITOR",
    5: "VMX",
    6: "SMX",
    9: "SSSE3",
    12: "FMA",
    13: "CMPXCHG16B",
    17: "PCID",
    19: "SSE4.1",
    20: "SSE4.2",
    21: "x2APIC",
    22: "MOVBE",
    23: "POPCNT",
    24: "TSC-deadline",
    25: "AES",
    26: "XSAVE",
    27: "OSXSAVE",
    28: "AVX",
    29: "F16C",
    30: "RDRAND",
    31: "hypervisor",
}


@dataclass(frozen=True)
class KernelComparison:
    kernel: str
    ring: int
    n: int
    native: int
    guest: int
    native_seconds: float
    guest_seconds: float

    @property
    def identical(self) -> bool:
        if self.kernel in COUNTING_KERNELS:
            return self.native == self.guest == self.n
        return self.native == self.guest

    def format(self, value: int) -> str:
        return f"{value:,} done" if self.kernel in COUNTING_KERNELS else f"0x{value:016x}"


def run_natively(kernel: str, n: int) -> kernels.KernelRun:
    """One native run; raises DemoCannotRun when the host cannot run the kernels."""
    try:
        return kernels.run_native(kernel, n)
    except kernels.KernelRunError as error:
        raise DemoCannotRun(f"the kernels cannot run natively: {error}") from None


def compare_kernels() -> list[KernelComparison]:
    """Every KERNEL_RUNS row natively and in guests; raises KernelRunError for a failed guest."""
    comparisons = []
    for kernel, n_ring3, n_ring0 in KERNEL_RUNS:
        for ring, n in ((3, n_ring3), (0, n_ring0)):
            native = [run_natively(kernel, n) for _ in range(REPEAT)]
            # check=False: the demo compares (and shows) the results itself.
            guest = [kernels.run_in_guest(kernel, n, ring, check=False) for _ in range(REPEAT)]
            native_results = {run.result for run in native}
            guest_results = {run.result for run in guest}
            comparisons.append(
                KernelComparison(
                    kernel=kernel,
                    ring=ring,
                    n=n,
                    # A kernel that disagrees with itself shows as a mismatch (-1).
                    native=native_results.pop() if len(native_results) == 1 else -1,
                    guest=guest_results.pop() if len(guest_results) == 1 else -1,
                    native_seconds=min(run.seconds for run in native),
                    guest_seconds=min(run.seconds for run in guest),
                )
            )
    return comparisons


@dataclass(frozen=True)
class CpuidViews:
    native: list[Cpuid]
    ring0: list[Cpuid]
    ring3: list[Cpuid]


def read_cpuid_views() -> CpuidViews:
    """The same CPUID instructions natively and in guests at CPL0 and CPL3."""
    image = guest_cpuid_image(CPUID_LEAVES)
    results = [(CPUID_RESULTS_GPA + 16 * index, 16) for index in range(len(CPUID_LEAVES))]
    views = {}
    for mode in (CpuMode.LONG, CpuMode.USER):
        run, memory = run_guest(image, mode, results=results)
        if run.outcome.exit_status != GUEST_DEBUG_EXIT_STATUS:
            raise RuntimeError(f"the CPUID guest ({mode.value} mode): {run.outcome.message}")
        views[mode] = [Cpuid.from_bytes(data) for data in memory]
    return CpuidViews(native_cpuid(CPUID_LEAVES), views[CpuMode.LONG], views[CpuMode.USER])


def feature_difference(a: int, b: int) -> str:
    changed = a ^ b
    names = [ECX_FEATURES.get(bit, f"bit {bit}") for bit in range(32) if changed >> bit & 1]
    return ", ".join(names) if names else "none"


def run(out: TextIO) -> int:
    host = detect_host()
    report = Report(out)
    try:
        kernels.load_kernel_image()  # missing (ShippedFileMissing) or broken: cannot run
    except kernels.KernelRunError as error:
        raise DemoCannotRun(f"{kernels.KERNELS_IMAGE}: {error}") from None
    report.header("Equivalence", QUOTE, host)
    try:
        comparisons = compare_kernels()
        views = read_cpuid_views()
    except (kernels.KernelRunError, RuntimeError) as error:  # RuntimeError: the CPUID guest
        # The same bytes ran natively: a guest run that ends otherwise is a difference.
        out.flush()
        print(f"pyvmm demo equivalence: {error}", file=sys.stderr)
        return EVIDENCE_FAILS
    report_kernels(report, comparisons)
    report_cpuid(report, host, views)
    explain(report, host, comparisons, views)
    holds = all(item.identical for item in comparisons)
    return report.verdict(
        holds,
        "every result is bit-identical; only timing and CPUID differ"
        if holds
        else "some results DIFFER between the host and the guest",
    )


def report_kernels(report: Report, comparisons: list[KernelComparison]) -> None:
    report.section(
        "the same kernels (benchmarks/kernels/kernels.bin), same inputs, "
        f"best time of {REPEAT} runs each"
    )
    rows = [
        [
            item.kernel,
            f"CPL{item.ring}",
            f"{item.n:,}",
            item.format(item.native),
            item.format(item.guest),
            "identical" if item.identical else "DIFFERENT",
            format_seconds(item.native_seconds),
            format_seconds(item.guest_seconds),
            format_ratio(item.guest_seconds / item.native_seconds),
        ]
        for item in comparisons
    ]
    report.table(
        [
            "kernel",
            "guest",
            "n",
            "native result",
            "guest result",
            "same?",
            "native",
            "guest",
            "guest/native",
        ],
        rows,
    )


def report_cpuid(report: Report, host: HostFacts, views: CpuidViews) -> None:
    features = [view[0] for view in (views.native, views.ring0, views.ring3)]
    signatures = [
        view[1].vendor_signature if view[0].hypervisor_bit else "-"
        for view in (views.native, views.ring0, views.ring3)
    ]
    native_ecx = views.native[0].ecx
    report.section("what may differ: CPUID, the same instructions natively and in guests")
    report.table(
        ["", "native (this process)", "guest CPL0", "guest CPL3"],
        [
            ["CPUID.1:ECX bit 31 (hypervisor)", *(str(cpuid.hypervisor_bit) for cpuid in features)],
            ["CPUID.0x40000000 signature", *signatures],
            ["CPUID.1:ECX", *(f"0x{cpuid.ecx:08x}" for cpuid in features)],
            [
                "  bits differing from native",
                "",
                *(feature_difference(native_ecx, cpuid.ecx) for cpuid in features[1:]),
            ],
            ["/proc/cpuinfo 'hypervisor'", "yes" if host.host_is_a_guest else "no", "", ""],
        ],
    )


def explain(
    report: Report, host: HostFacts, comparisons: list[KernelComparison], views: CpuidViews
) -> None:
    identical = sum(item.identical for item in comparisons)

    def ratios(ring: int) -> str:
        values = sorted(
            item.guest_seconds / item.native_seconds
            for item in comparisons
            if item.ring == ring and item.kernel not in COUNTING_KERNELS
        )
        return f"{format_ratio(values[0])}-{format_ratio(values[-1])}"

    report.text(
        f"{identical} of {len(comparisons)} runs gave bit-identical results: the same "
        "bytes on the same inputs cannot tell pyvmm's guest from the real machine by what "
        f"they compute, only by time (guest/native {ratios(3)} at CPL3, {ratios(0)} at "
        "CPL0) and by what CPUID reports, the two differences Popek and Goldberg allow."
    )
    native, ring0, ring3 = (view[0].ecx for view in (views.native, views.ring0, views.ring3))
    sentences = []
    if host.host_is_a_guest:
        sentences.append(
            "The hypervisor bit and signature show up natively too because this host is "
            "itself a virtual machine; on bare metal bit 31 reads 0 natively and 1 in a guest."
        )
    if ring0 != native:
        sentences.append(
            "At CPL0 the guest sees the CPUID table pyvmm gave KVM (KVM_SET_CPUID2), which "
            f"differs from the host's in {feature_difference(native, ring0)}."
        )
    if ring3 == native != ring0:
        sentences.append(
            "At CPL3 it got the host's own answer, not pyvmm's table: this KVM does not "
            "intercept a ring-3 CPUID. There CPUID is sensitive but not privileged, the kind "
            "of instruction Popek and Goldberg's theorem requires to trap."
        )
    if sentences:
        report.text(" ".join(sentences))
    report.text(host.explain_rings())
