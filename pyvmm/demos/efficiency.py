"""Efficiency: almost every guest instruction runs on the real processor, untouched.

guests/user.bin sums 1..1,000,000 with a two-instruction loop and prints the
result one `out` at a time. The demo counts the instructions it executes
from the loop in its machine code, counts the exits pyvmm handled, and times
the same loop natively, in ring 3 (--mode user) and in ring 0 (--mode long).
It also times the int_loop benchmark kernel (pyvmm.demos.kernels) natively
and at both CPLs.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TextIO

from pyvmm.demos import kernels
from pyvmm.demos.common import (
    CANNOT_RUN,
    GuestRun,
    HostFacts,
    Report,
    detect_host,
    format_ratio,
    format_seconds,
    guest_image,
    run_guest,
)
from pyvmm.demos.native import SUM_LOOP_BODY, time_native_sum
from pyvmm.loaders.entry import CpuMode

QUOTE = (
    "\"a statistically dominant subset of the virtual processor's instructions be "
    'executed directly by the real processor, with no software intervention by the VMM."'
)

# user.s: xor eax, eax; mov ecx, imm32 (the count); then the loop body.
LOOP_SETUP = re.compile(rb"\x31\xc0\xb9(.{4})" + re.escape(SUM_LOOP_BODY), re.DOTALL)
INSTRUCTIONS_PER_ITERATION = 2  # add rax, rcx; loop
SUM_LINE = re.compile(rb"sum=0x([0-9a-f]+)")
RING3_REPEAT = 3

# The evidence supports direct execution when exits are rarer than one per
# MIN_INSTRUCTIONS_PER_EXIT instructions and the guest runs within
# MAX_DIRECT_SLOWDOWN of native speed (the exits themselves cost some time).
MIN_INSTRUCTIONS_PER_EXIT = 1000
MAX_DIRECT_SLOWDOWN = 10.0

# The int_loop kernel at each CPL: (ring, n). Ring 0 may be emulated: small n.
KERNEL = "int_loop"
KERNEL_RUNS = ((3, 10_000_000), (0, 20_000))


@dataclass(frozen=True)
class LoopRuns:
    native_seconds: float
    native_result: int
    ring3: GuestRun  # the fastest of RING3_REPEAT runs
    ring0: GuestRun


def loop_count(image: bytes) -> int | None:
    """The iteration count of user.s's loop, read from its machine code."""
    match = LOOP_SETUP.search(image)
    return int.from_bytes(match.group(1), "little") if match else None


def printed_sum(run: GuestRun) -> int | None:
    match = SUM_LINE.search(run.console)
    return int(match.group(1), 16) if match else None


def run_loops(image: bytes, iterations: int) -> LoopRuns:
    result, seconds = time_native_sum(iterations)
    ring3 = [run_guest(image, CpuMode.USER)[0] for _ in range(RING3_REPEAT)]
    ring0, _ = run_guest(image, CpuMode.LONG)
    return LoopRuns(seconds, result, min(ring3, key=lambda run: run.seconds), ring0)


def time_kernel() -> list[tuple[int, int, float, float]]:
    """(ring, n, native seconds, guest seconds) for int_loop, best of 3 each."""
    rows = []
    for ring, n in KERNEL_RUNS:
        native = min(kernels.run_native(KERNEL, n).seconds for _ in range(3))
        guest = min(kernels.run_in_guest(KERNEL, n, ring).seconds for _ in range(3))
        rows.append((ring, n, native, guest))
    return rows


def run(out: TextIO) -> int:
    host = detect_host()
    report = Report(out)
    image = guest_image("user.bin").read_bytes()
    iterations = loop_count(image)
    if iterations is None:
        print(
            "pyvmm demo efficiency: guests/user.bin has no loop this demo can count",
            file=sys.stderr,
        )
        return CANNOT_RUN
    instructions = INSTRUCTIONS_PER_ITERATION * iterations
    report.header("Efficiency", QUOTE, host)

    loops = run_loops(image, iterations)
    expected = iterations * (iterations + 1) // 2
    results = [loops.native_result, printed_sum(loops.ring3), printed_sum(loops.ring0)]
    report.section(
        f"guests/user.bin: {iterations:,} iterations of `add rax, rcx; loop` = "
        f"{instructions:,} instructions (plus a few hundred to print)"
    )
    rows = [["native (this process)", "-", loops.native_seconds, None]]
    rows += [["guest --mode user", "CPL3", loops.ring3.seconds, loops.ring3.exits]]
    rows += [["guest --mode long", "CPL0", loops.ring0.seconds, loops.ring0.exits]]
    report.table(
        ["run", "ring", "sum", "VM exits", "instructions/exit", "time", "vs native"],
        [
            [
                label,
                ring,
                "right" if result == expected else "WRONG",
                "-" if exits is None else f"{exits}",
                "-" if exits is None else f"{instructions // max(exits, 1):,}",
                format_seconds(seconds),
                format_ratio(seconds / loops.native_seconds),
            ]
            for (label, ring, seconds, exits), result in zip(rows, results, strict=True)
        ],
    )

    kernel_rows: list[tuple[int, int, float, float]] = []
    try:
        kernel_rows = time_kernel()
    except kernels.KernelRunError as error:
        report.text(f"(the {KERNEL} kernel could not run: {error})")
    if kernel_rows:
        report.section(f"benchmark kernel {KERNEL} (benchmarks/kernels/kernels.bin), best of 3")
        report.table(
            ["guest ring", "n", "native", "guest", "guest/native"],
            [
                [
                    f"CPL{ring}",
                    f"{n:,}",
                    format_seconds(native_s),
                    format_seconds(guest_s),
                    format_ratio(guest_s / native_s),
                ]
                for ring, n, native_s, guest_s in kernel_rows
            ],
        )

    # Speed is judged on the kernel when there is one: user.bin's run is so short
    # that its 41 exits weigh in its time.
    slowdown = {ring: guest_s / native_s for ring, _, native_s, guest_s in kernel_rows} or {
        3: loops.ring3.seconds / loops.native_seconds,
        0: loops.ring0.seconds / loops.native_seconds,
    }
    direct = {ring: ratio <= MAX_DIRECT_SLOWDOWN for ring, ratio in slowdown.items()}
    rare_exits = instructions // max(loops.ring3.exits, 1) >= MIN_INSTRUCTIONS_PER_EXIT
    sums_right = all(result == expected for result in results)
    explain(report, host, loops, instructions, slowdown, direct)

    holds = sums_right and rare_exits and direct[3] and (direct[0] or host.ring0_is_emulated)
    if not holds:
        what = "the evidence does NOT show direct execution (see the tables)"
    elif direct[0]:
        what = "guest code runs directly on the CPU in ring 3 and ring 0"
    else:
        what = "holds for ring-3 guest code; on this host ring-0 guest code is emulated"
    return report.verdict(holds, what)


def explain(
    report: Report,
    host: HostFacts,
    loops: LoopRuns,
    instructions: int,
    slowdown: dict[int, float],
    direct: dict[int, bool],
) -> None:
    ring3, ring0 = loops.ring3, loops.ring0
    share = 100 * ring3.exits / instructions
    outs = len(ring3.console) + 1
    exits_are_outs = (
        f"one per `out` instruction ({len(ring3.console)} console bytes and the debug-exit write)"
        if ring3.exits == outs
        else "mostly its `out` instructions"
    )
    per_exit = (ring3.seconds - loops.native_seconds) / ring3.exits
    report.text(
        f"Of about {instructions:,} guest instructions, pyvmm saw {ring3.exits} exits, "
        f"{exits_are_outs}: it intervened in {share:.4f}% of them, and the other "
        "instructions never left the CPU (if the ring-3 run's extra time over native is "
        f"all exits, each cost about {format_seconds(per_exit)}). Exits alone do not prove direct "
        f"execution, though: ring 0 caused the same {ring0.exits} exits, and only time "
        f"tells the rings apart: {format_ratio(slowdown[3])} native in ring 3, "
        f"{format_ratio(slowdown[0])} in ring 0."
    )
    if host.ring0_is_emulated and not direct[0]:
        report.text(
            host.explain_rings() + " The emulation happens inside the host kernel, where "
            "pyvmm cannot see it, so on this host Popek and Goldberg's efficiency holds "
            "for ring-3 code only; on VT-x/AMD-V hosts both rings run directly."
        )
    else:
        report.text(host.explain_rings())
