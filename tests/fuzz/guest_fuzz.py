"""Guest fuzzing: random code and random register states in every entry mode.

Each case is a flat image, loaded at its mode's default address: either pure
random bytes or a chain of snippets biased towards what stresses a VMM (port
and string I/O to real and random ports, MMIO and writes above RAM, control
registers, MSRs, descriptor tables, far transfers, self-modifying code),
sometimes with an interrupt table or page tables of its own so that it gets
past its first fault. After `build_machine` and before `run`, the case sets
random general registers, RIP and RFLAGS, and sometimes perturbs a few sregs
fields. A few cases have several vCPUs (mostly 2 to 8, now and then up to
pyvmm's ceiling of 255), host input on COM1, or a --trace/--stats observer; a
few run as `pyvmm boot` with a pseudo-terminal for stdin.

Every run must end in a named outcome (never VMM_ERROR, DEBUG, INTERRUPTED or
an exception) with a one-line message, within its limits, and must leave the
host process as it found it: the same file descriptors, threads, signal
handlers, interval timer and terminal modes.

With `--kind virtio` the cases are of another kind (guest_virtio.py): a
user-mode guest brings up pyvmm's virtio-mmio devices (console, block on a
temporary disk image, entropy, balloon) and drives them with hostile
virtqueues: looping chains, descriptors outside RAM or in the MMIO hole,
overflowing lengths, wrong directions, bad indirect tables, avail indexes that
jump, queue sizes that are no power of 2, misplaced rings, missing queues,
status writes out of order, resets mid-request, configuration accesses of every
width. On top of the above, the guest must reach the end of its script, the
devices must touch nothing outside guest RAM, and the disk image may change
only where the block device wrote.

Each case draws from its own `random.Random` seeded with (seed, index), so any
case re-runs alone:

    python -m tests.fuzz.guest_fuzz --count 5000 --seed 1      # a campaign
    python -m tests.fuzz.guest_fuzz --seed 1 --case 1234 -v    # one case, shown
    python -m tests.fuzz.guest_fuzz --kind virtio --count 5000 --seed 1

This module runs campaigns, reports them and replays one case; the code, the
cases, one run and the host checks are in guest_code.py, guest_cases.py,
guest_run.py and host_state.py, the virtio kind in guest_virtio.py.
"""

from __future__ import annotations

import argparse
import faulthandler
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.outcome import OutcomeKind
from tests.fuzz.guest_cases import ALL_MODES, KINDS, GuestCase, Tweak, generate_case
from tests.fuzz.guest_code import CODE_BITS
from tests.fuzz.guest_run import CaseResult, Limits, run_case
from tests.fuzz.guest_virtio import describe_op
from tests.fuzz.host_state import (
    HostState,
    address_space_size,
    host_differences,
    settled_state,
)
from tests.integration.vcpu_limits import most_vcpus

# --- campaigns --------------------------------------------------------------

# Findings in pyvmm code that is not this harness's to fix, until they are fixed: a
# failure whose text contains a key here is counted under "known bug" instead of
# failing the campaign. Each has a strict xfail test in
# tests/integration/test_guest_fuzz_regressions.py (the virtio kind's: in
# tests/fuzz/test_guest_virtio.py); when that test starts to pass, delete its entry here.
KNOWN_BUGS: dict[str, str] = {}


@dataclass
class Failure:
    seed: int
    index: int
    mode: str
    what: str
    detail: str = ""
    mode_options: str = ""  # the --mode (or --kind) options the campaign ran with, if any

    @property
    def reproducer(self) -> str:
        return (
            f"python -m tests.fuzz.guest_fuzz --seed {self.seed} --case {self.index}"
            f"{self.mode_options} -v"
        )


@dataclass
class Report:
    seed: int
    mode_options: str = ""
    per_mode: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    by_mode: Counter[tuple[str, str]] = field(default_factory=Counter)
    smp: int = 0  # guests with more than one vCPU
    cpus: Counter[int] = field(default_factory=Counter)  # guests by vCPU count
    exits: int = 0
    failures: list[Failure] = field(default_factory=list)
    known: Counter[str] = field(default_factory=Counter)  # KNOWN_BUGS seen, by pattern
    stopped: str | None = None  # why the campaign ended early (Ctrl-C, SIGTERM)
    cli: Counter[str] = field(default_factory=Counter)  # `pyvmm boot` runs, by how they ended
    skipped_modes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    slowest: float = 0.0
    address_space_growth: int = 0
    kind: str = "code"
    # Virtio cases: what the devices counted (refusals by kind, ...) and the watchers saw.
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def guests(self) -> int:
        return sum(self.per_mode.values())

    def add(self, result: CaseResult) -> None:
        mode = result.case.mode.value
        if result.cli_end is not None:
            self.cli[result.cli_end] += 1
        self.per_mode[mode] += 1
        self.smp += result.case.cpus > 1
        self.cpus[result.case.cpus] += 1
        self.slowest = max(self.slowest, result.seconds)
        self.exits += result.exits
        self.counts.update(result.counts)
        kind = "pyvmm boot" if result.cli_end is not None else result.kind  # CLI: see self.cli
        self.outcomes[kind] += 1
        self.by_mode[mode, kind] += 1

    def fail(self, result: CaseResult, what: str, detail: str = "") -> None:
        case = result.case
        for pattern in KNOWN_BUGS:
            if pattern in what:
                self.known[pattern] += 1
                return
        failure = Failure(self.seed, case.index, case.mode.value, what, detail, self.mode_options)
        self.failures.append(failure)

    def summary(self) -> str:
        modes = sorted(self.per_mode)
        kinds = sorted(self.outcomes)
        rate = self.guests / self.seconds if self.seconds else 0.0
        lines = [
            f"guest fuzz{'' if self.kind == 'code' else ' (' + self.kind + ')'}, "
            f"seed {self.seed}: {self.guests} guests in {self.seconds:.1f} s "
            f"({rate:.0f}/s, slowest {self.slowest:.2f} s), {self.smp} with several vCPUs, "
            f"{len(self.failures)} failures",
            f"{self.exits} VM exits served ({self.exits / max(self.guests, 1):.0f} per guest); "
            f"address space growth: {self.address_space_growth >> 20} MiB",
        ]
        if self.smp:
            counts = ", ".join(f"{cpus}: {n}" for cpus, n in sorted(self.cpus.items()) if cpus > 1)
            lines.append(f"vCPU counts over 1 (count: guests): {counts}")
        lines += [f"skipped {mode} mode: {why}" for mode, why in self.skipped_modes.items()]
        if self.stopped:
            lines.append(f"campaign cut short: {self.stopped}")
        width = max((len(kind) for kind in kinds), default=8)
        header = " ".join(f"{mode:>9}" for mode in modes)
        lines.append(f"{'outcome':<{width}} {header}    total")
        for kind in kinds:
            counts = " ".join(f"{self.by_mode[mode, kind]:>9}" for mode in modes)
            lines.append(f"{kind:<{width}} {counts} {self.outcomes[kind]:>8}")
        totals = " ".join(f"{self.per_mode[mode]:>9}" for mode in modes)
        lines.append(f"{'guests':<{width}} {totals} {self.guests:>8}")
        if self.cli:
            ends = ", ".join(f"{label} {count}" for label, count in sorted(self.cli.items()))
            lines.append(f"of which run as `pyvmm boot` on a pseudo-terminal: {ends}")
        if self.counts:
            lines += virtio_summary(self.counts)
        for pattern, seen in self.known.items():
            lines.append(f"known bug, {seen} times: {pattern} ({KNOWN_BUGS[pattern]})")
        for failure in self.failures[:20]:
            lines.append(f"FAIL case {failure.index} ({failure.mode}): {failure.what}")
            lines.append(f"     {failure.reproducer}")
        if len(self.failures) > 20:
            lines.append(f"... and {len(self.failures) - 20} more failures")
        return "\n".join(lines)


def virtio_summary(counts: Counter[str]) -> list[str]:
    """What the virtio devices counted over a campaign: refusals first, then the rest."""
    refusals = sorted(
        (
            (name.removeprefix("refused "), n)
            for name, n in counts.items()
            if name.startswith("refused ")
        ),
        key=lambda item: -item[1],
    )
    lines = [
        "refused (virtqueue rules): " + (", ".join(f"{name} {n}" for name, n in refusals) or "none")
    ]
    block = sorted(
        (
            (name.removeprefix("block "), n)
            for name, n in counts.items()
            if name.startswith("block ")
        ),
        key=lambda item: -item[1],
    )
    if block:
        lines.append("block requests failed: " + ", ".join(f"{why} {n}" for why, n in block))
    rest = [
        f"{name} {n}"
        for name, n in sorted(counts.items())
        if not name.startswith(("refused ", "block "))
    ]
    lines.append("counted: " + ", ".join(rest))
    return lines


def available_modes() -> tuple[tuple[CpuMode, ...], dict[str, str]]:
    """Every entry mode this host's KVM can enter, and why any other is skipped."""
    from tests.integration.helpers import host_keeps_32bit_paging

    if host_keeps_32bit_paging():
        return ALL_MODES, {}
    modes = tuple(mode for mode in ALL_MODES if mode is not CpuMode.PAGED)
    return modes, {"paged": "this host's KVM cannot enter 32-bit paging"}


def warm_up(modes: Iterable[CpuMode], limits: Limits, kind: str = "code") -> None:
    """Run one trivial guest per mode, so lazy imports and caches are not counted as leaks.

    And one with the most vCPUs: the C library gives threads malloc arenas of
    their own (up to 8 per host CPU, 64 MiB of address space each, kept for the
    life of the process), a one-time growth that is not a guest's doing. For
    the virtio kind, one virtio case first (the devices' modules, their threads).
    """
    if kind == "virtio":
        run_case(generate_case(0, 0, (), "virtio"), limits)
    modes = tuple(modes)
    for mode in modes:
        run_case(GuestCase(-1, mode, b"\xf4"), limits)
    if modes:
        run_case(GuestCase(-1, modes[0], b"\xf4", cpus=most_vcpus()), limits)


def run_campaign(
    count: int,
    seed: int,
    limits: Limits | None = None,
    start: int = 0,
    modes: tuple[CpuMode, ...] | None = None,
    progress: Callable[[int, Report], None] | None = None,
    kind: str = "code",
) -> Report:
    """Run cases start..start+count-1 of `seed` of `kind` ("code" or "virtio"); check
    the outcome and the host after each."""
    limits = limits or Limits()
    usable, skipped = available_modes()
    if kind == "virtio":
        options, modes, skipped = " --kind virtio", (CpuMode.USER,), {}
    else:
        options = "".join(f" --mode {mode.value}" for mode in modes or ())
        modes = tuple(mode for mode in (modes or usable) if mode in usable)
    report = Report(seed, options, skipped_modes=skipped, kind=kind)
    warm_up(modes, limits, kind)
    memory_before = address_space_size()
    started = time.perf_counter()
    try:
        run_cases(report, range(start, start + count), modes, limits, progress)
    except KeyboardInterrupt:  # between two runs; during one, pyvmm turns it into an outcome
        report.stopped = "stopped by SIGINT"
    report.seconds = time.perf_counter() - started
    report.address_space_growth = address_space_size() - memory_before
    return report


def run_cases(
    report: Report,
    indices: range,
    modes: tuple[CpuMode, ...],
    limits: Limits,
    progress: Callable[[int, Report], None] | None,
) -> None:
    """Run and check each case; the host state is compared with the one before the first."""
    baseline = settled_state()
    for index in indices:
        result = run_case(generate_case(report.seed, index, modes, report.kind), limits)
        if result.outcome is not None and result.outcome.kind is OutcomeKind.INTERRUPTED:
            report.stopped = result.outcome.message
            return
        report.add(result)
        if result.failure is not None:
            report.fail(result, result.failure, result.detail)
        differences = host_differences(baseline)
        for difference in differences:
            report.fail(result, difference)
        if differences:
            baseline = HostState.now()  # report each leak once, not on every later case
        if progress is not None:
            progress(index, report)


# --- one case, shown --------------------------------------------------------


def describe_case(case: GuestCase, result: CaseResult) -> str:
    bits = CODE_BITS[case.mode]
    load = default_load_gpa(case.mode)
    lines = [
        f"case {case.index}: {case.mode.value} mode, {case.cpus} vCPU(s), irqchip "
        f"{case.irqchip}, RAM 0x{case.ram_size:x}, {len(case.image)}-byte image at 0x{load:x}",
        f"observer {case.observer or 'none'}, console input {case.console_input!r}",
    ]
    if case.virtio is not None:
        lines += describe_virtio(case)
    else:
        lines += [
            f"image = bytes.fromhex({case.image.hex()!r})",
            f"regs = {format_tweaks(case.regs)}",
            f"sregs = {format_tweaks(case.sregs)}",
            "code:",
            *disassemble(case.image, bits, load),
        ]
    if result.rejected is not None:
        lines.append(f"rejected: {result.rejected}")
    if result.outcome is not None:
        outcome = result.outcome
        kind, status = outcome.kind.value, outcome.exit_status
        lines.append(f"outcome: {kind}, status {status}: {outcome.message}")
    if result.failure is not None:
        lines.append(f"FAILURE: {result.failure}")
    if result.detail:
        lines.append(result.detail.rstrip())
    if result.counts:
        lines += virtio_summary(result.counts)
    lines.append(f"{result.exits} exits, {result.seconds:.3f} s")
    return "\n".join(lines)


def describe_virtio(case: GuestCase, limit: int = 400) -> list[str]:
    """The machine's devices and disk, and the guest's script, one access or store a line."""
    setup = case.virtio
    assert setup is not None
    script = setup.script
    lines = [
        f"virtio devices {', '.join(setup.devices)}; disk of {len(setup.disk)} bytes"
        f"{' (read-only)' if setup.read_only else ''}; via `pyvmm boot`: {case.via_cli}; "
        f"notifications {'by ioeventfd' if setup.eventfds else 'by MMIO exit'}",
        f"script ({len(script)} steps), then debug-exit 0x{setup.end_value:x} "
        f"(status {(setup.end_value << 1) | 1}):",
    ]
    lines += [f"  {describe_op(op)}" for op in script[:limit]]
    if len(script) > limit:
        lines.append(f"  ... and {len(script) - limit} more")
    return lines


def format_tweaks(tweaks: tuple[Tweak, ...]) -> str:
    return "(" + ", ".join(f"({name!r}, {op!r}, 0x{value:x})" for name, op, value in tweaks) + ")"


def disassemble(code: bytes, bits: int, address: int, limit: int = 60) -> list[str]:
    import capstone

    mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, mode)
    lines = []
    for insn in disassembler.disasm(code, address):
        lines.append(f"  {insn.address:8x}: {insn.bytes.hex():<24} {insn.mnemonic} {insn.op_str}")
        if len(lines) >= limit:
            lines.append("  ...")
            break
    return lines


def replay_case(case: GuestCase, limits: Limits, verbose: bool) -> int:
    """Run one case with the campaign's checks, host state included; 1 if it fails."""
    warm_up((case.mode,), limits, "code" if case.virtio is None else "virtio")
    baseline = settled_state()
    result = run_case(case, limits)
    leftovers = host_differences(baseline)
    unknown = [what for what in leftovers if not any(known in what for known in KNOWN_BUGS)]
    if verbose or result.failure is not None or leftovers:
        print(describe_case(case, result))
    else:
        print(f"case {case.index}: {result.kind}")
    for what in leftovers:
        print(f"{'known bug' if what not in unknown else 'FAILURE'}: {what}")
    return 1 if result.failure is not None or unknown else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.guest_fuzz", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000, help="cases to run (default 1000)")
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--case", type=int, help="run this one case only (with -v: show it)")
    parser.add_argument("--mode", choices=[mode.value for mode in ALL_MODES], action="append")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="code",
        help="code: random code in every mode (default); virtio: hostile virtqueues",
    )
    parser.add_argument("--timeout", type=float, default=Limits.timeout)
    parser.add_argument("--max-exits", type=int, default=Limits.max_exits)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    limits = Limits(timeout=args.timeout, max_exits=args.max_exits)
    faulthandler.enable()  # a crash in the binding still names where it happened

    usable, _ = available_modes()
    modes = tuple(CpuMode(value) for value in args.mode) if args.mode else None
    if args.case is not None:
        case_modes = tuple(mode for mode in (modes or usable) if mode in usable)
        case = generate_case(args.seed, args.case, case_modes, args.kind)
        return replay_case(case, limits, args.verbose)

    def show_progress(index: int, report: Report) -> None:
        done = index - args.start + 1
        if args.verbose or done % 500 == 0:
            print(f"... {done} guests, {len(report.failures)} failures", file=sys.stderr)

    report = run_campaign(
        args.count, args.seed, limits, args.start, modes, show_progress, args.kind
    )
    print(report.summary())
    return 1 if report.failures or report.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
