"""Sensitive instructions: why x86 was not virtualizable by trap-and-emulate, and the fix.

Popek and Goldberg's theorem: a VMM can be built by trap-and-emulate when
every sensitive instruction (one that reads or changes the machine's
privileged state) is privileged (traps when run outside the most privileged
mode). Robin and Irvine (USENIX Security 2000) listed the x86 instructions
that break it. guests/sensitive.bin runs them at CPL3 as a deprivileged
kernel would, under a miniature trap-and-emulate monitor
(pyvmm.demos.trap_monitor), three times:

1. as it is: what each instruction reveals, or silently does, without a trap;
2. with CR4.UMIP set (where this host's KVM allows it): the descriptor-table
   instructions now fault, and the monitor emulates them;
3. translated: pyvmm.demos.rewriter rewrites every sensitive instruction to
   `hlt`, which traps, and the monitor performs the original on the guest's
   virtual CPU (pyvmm.demos.virtual_cpu).

Status: 0 when the translated run gives every virtual answer and the plain
run shows the hole (some answer differs from the virtual one without a
trap), 4 when not, 2 when the guest cannot run.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from pyvmm.demos.common import DemoCannotRun, Report, cpu_flags, detect_host, guest_image
from pyvmm.demos.rewriter import Rewrite, rewrite
from pyvmm.demos.trap_monitor import (
    MONITOR_GDT,
    MONITOR_IDT,
    MonitorRun,
    Trap,
    TrapMonitor,
    UmipUnavailable,
)
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.outcome import OutcomeKind

QUOTE = (
    '"For any conventional third generation computer, a virtual machine monitor may be '
    "constructed if the set of sensitive instructions for that computer is a subset of "
    'the set of privileged instructions." (Theorem 1)'
)
GUEST = "sensitive.bin"
LOAD_GPA = 0x10_0000
RESULTS_GPA = 0x20_0000  # guests/sensitive.s: RESULTS
SLOT_SIZE = 16
SENTINEL = 0x5A5A_5A5A_5A5A_5A5A
RAM_SIZE = 4 << 20
RUN_TIMEOUT = 30.0
EXPECTED_STATUS = 1  # the guest writes 0 to the debug-exit port
RFLAGS_ZF = 1 << 6
RFLAGS_IF = 1 << 9


def _table_register(data: bytes) -> str:
    limit, base = struct.unpack_from("<HQ", data)
    return f"base 0x{base:x} limit 0x{limit:x}"


def _selector(value: int) -> str:
    return "unchanged" if value == SENTINEL else f"0x{value & 0xFFFF:x}"


def _msw(value: int) -> str:
    if value == SENTINEL:
        return "unchanged"
    return f"0x{value & 0xFFFF:04x}" + (" (TS=1)" if value & 0x8 else "")


def _flags(value: int) -> str:
    return f"IF={value >> 9 & 1} IOPL={value >> 12 & 3}"


def _popf(first: int, second: int) -> str:
    before, after = first >> 9 & 1, second >> 9 & 1
    return f"IF {before}->{after}" + (" (ignored)" if before == after else "")


def _code_selector(value: int) -> str:
    return "unchanged" if value == SENTINEL else f"0x{value & 0xFFFF:x} (CPL{value & 3})"


def _zf(flags: int, value: int | None, what: str) -> str:
    if not flags & RFLAGS_ZF:
        return "ZF=0 refused"
    return f"ZF=1 {what}" if value is None else f"ZF=1 {what} 0x{value & 0xFFFF_FFFF:x}"


@dataclass(frozen=True)
class Row:
    """One instruction of guests/sensitive.s, its slot and how to print what it stored."""

    text: str
    slot: int
    show: Callable[[int, int, bytes], str]
    mnemonic: str  # capstone's, to find its traps


ROWS = (
    Row("sgdt [mem]", 0, lambda a, b, raw: _table_register(raw), "sgdt"),
    Row("sidt [mem]", 1, lambda a, b, raw: _table_register(raw), "sidt"),
    Row("sldt eax", 2, lambda a, b, raw: _selector(a), "sldt"),
    Row("smsw rax", 3, lambda a, b, raw: _msw(a), "smsw"),
    Row("str eax", 4, lambda a, b, raw: _selector(a), "str"),
    Row("pushf", 5, lambda a, b, raw: _flags(a), "pushfq"),
    Row("popf (flip IF)", 6, lambda a, b, raw: _popf(a, b), "popfq"),
    Row("mov eax, cs", 7, lambda a, b, raw: _code_selector(a), "mov"),
    Row("mov eax, ss", 8, lambda a, b, raw: _code_selector(a), "mov"),
    Row("lar eax, 0x08", 9, lambda a, b, raw: _zf(b, a, "rights"), "lar"),
    Row("lsl eax, 0x10", 10, lambda a, b, raw: _zf(b, a, "limit"), "lsl"),
    Row("verr 0x08", 11, lambda a, b, raw: _zf(b, None, "readable"), "verr"),
    Row("verw 0x10", 12, lambda a, b, raw: _zf(b, None, "writable"), "verw"),
)
UMIP_ROWS = frozenset({"sgdt", "sidt", "sldt", "smsw", "str"})


@dataclass(frozen=True)
class GuestAnswers:
    """One run of guests/sensitive.bin: each row's answer and whether the monitor trapped it."""

    name: str
    answers: dict[str, str]
    trapped: dict[str, bool]
    run: MonitorRun
    virtual_gdt: tuple[int, int]  # (base, limit) the guest's own GDT
    cr0: int  # the guest's CR0 as pyvmm's entry state set it
    user_cs: int  # the CPL3 code selector pyvmm loaded (KVM_SET_SREGS)


def answers(data: bytes) -> dict[str, str]:
    """Each row's printed answer from the results area (SLOT_SIZE bytes per slot)."""
    shown = {}
    for row in ROWS:
        raw = data[row.slot * SLOT_SIZE : (row.slot + 1) * SLOT_SIZE]
        first, second = struct.unpack("<QQ", raw)
        shown[row.text] = row.show(first, second, raw)
    return shown


def virtual_answers(gdt_base: int, gdt_limit: int, cr0: int) -> dict[str, str]:
    """What a kernel really at CPL0 on pyvmm's user-mode machine reads (virtual_cpu's state)."""
    return {
        "sgdt [mem]": f"base 0x{gdt_base:x} limit 0x{gdt_limit:x}",
        "sidt [mem]": "base 0x0 limit 0x0",
        "sldt eax": "0x0",
        "smsw rax": _msw(cr0),
        "str eax": "0x0",
        "pushf": "IF=0 IOPL=0",
        "popf (flip IF)": "IF 0->1",
        "mov eax, cs": "0x8 (CPL0)",
        "mov eax, ss": "0x10 (CPL0)",
        # pyvmm's kernel code descriptor (gdt.flat_gdt): G=1 L=1, limit 19:16 0xf, P=1
        # DPL=0 S=1, type 0xa (execute/read, not yet accessed).
        "lar eax, 0x08": "ZF=1 rights 0xaf9a00",
        "lsl eax, 0x10": "ZF=1 limit 0xffffffff",
        "verr 0x08": "ZF=1 readable",
        "verw 0x10": "ZF=1 writable",
    }


def trapped_rows(traps: list[Trap], side_table: dict[int, object], code: bytes) -> dict[str, bool]:
    """Which rows the monitor took a trap at (matched by address, in the order of ROWS)."""
    from pyvmm.demos.rewriter import decoder

    addresses: dict[str, int] = {}
    wanted = iter(ROWS)
    row = next(wanted)
    for instruction in decoder().disasm(code, LOAD_GPA):
        if instruction.mnemonic == row.mnemonic and (
            row.mnemonic != "mov" or instruction.op_str.endswith(row.text.split()[-1])
        ):
            addresses[row.text] = instruction.address
            row = next(wanted, None)
            if row is None:
                break
    hit = {trap.rip for trap in traps}
    return {row.text: addresses.get(row.text) in hit for row in ROWS}


def run_guest(name: str, image: bytes, code: bytes, side_table: dict, umip: bool) -> GuestAnswers:
    """Build a user-mode machine of `code`, run it under the monitor, read its answers."""
    from pyvmm.machine.builder import MachineConfig, build_machine

    config = MachineConfig(
        image=code, ram_size=RAM_SIZE, console=lambda data: None, mode=CpuMode.USER
    )
    with build_machine(config) as machine:
        sregs = machine.vcpu.get_sregs()
        monitor = TrapMonitor(machine, side_table, umip=umip)
        run = monitor.run(RUN_TIMEOUT)
        outcome = run.outcome
        if outcome.kind is not OutcomeKind.DEBUG_EXIT or outcome.exit_status != EXPECTED_STATUS:
            raise DemoCannotRun(f"guests/{GUEST} ({name}) did not finish: {outcome.message}")
        data = machine.memory.read(RESULTS_GPA, SLOT_SIZE * len(ROWS))
    return GuestAnswers(
        name,
        answers(data),
        trapped_rows(run.traps, side_table, image),
        run,
        (sregs.gdt.base, sregs.gdt.limit),
        sregs.cr0,
        sregs.cs.selector,
    )


def run(out: TextIO) -> int:
    host = detect_host()
    image = guest_image(GUEST).read_bytes()
    report = Report(out)
    report.header("Sensitive instructions", QUOTE, host)
    flags = cpu_flags()
    report.section(f"guests/{GUEST} at CPL3 under pyvmm's trap-and-emulate monitor: as it is")
    plain = run_guest("as it is", image, image, {}, umip=False)
    virtual = virtual_answers(*plain.virtual_gdt, cr0=plain.cr0)
    runs = [plain]
    umip_note = ""
    report.section("... with CR4.UMIP set")
    try:
        runs.append(run_guest("CR4.UMIP", image, image, {}, umip=True))
    except UmipUnavailable as error:
        umip_note = f"{error} (host CPU flag umip: {'yes' if 'umip' in flags else 'no'})"
        report.text(f"(no UMIP column: {umip_note})")
    translation = rewrite(image, LOAD_GPA)
    report.section(
        f"... translated: {len(translation.side_table)} sensitive instructions rewritten"
    )
    translated = run_guest("translated", image, translation.code, translation.side_table, False)
    runs.append(translated)

    header = ["instruction", *[f"{guest.name}" for guest in runs], "its own CPU (CPL0)"]
    report.table(header, [table_row(row.text, runs, virtual) for row in ROWS])
    report.text(
        "Each cell is what the guest read; '*' marks an answer that is not what its own "
        "CPU at CPL0 would give, '[trap]' an instruction pyvmm's monitor received as a "
        f"trap. The monitor's real GDT is at 0x{MONITOR_GDT:x} and its IDT at "
        f"0x{MONITOR_IDT:x}; the guest's own GDT is at 0x{plain.virtual_gdt[0]:x}, and "
        "it has no IDT. The monitor also keeps CR0.TS set (lazy FPU switching)."
    )
    leaks = [row.text for row in ROWS if plain.answers[row.text] != virtual[row.text]]
    silent_leaks = [text for text in leaks if not plain.trapped[text]]
    explain(report, plain, runs, virtual, silent_leaks, translation, umip_note)
    translated_right = all(translated.answers[row.text] == virtual[row.text] for row in ROWS)
    every_rewrite_trapped = len(translated.run.traps) == len(translation.side_table) and all(
        trap.emulated for trap in translated.run.traps
    )
    holds = bool(silent_leaks) and translated_right and every_rewrite_trapped
    if not silent_leaks:
        return report.verdict(False, "no instruction revealed anything at CPL3 on this host")
    if not holds:
        return report.verdict(False, "the translated guest did NOT get its virtual CPU's answers")
    return report.verdict(
        True,
        f"{len(silent_leaks)} of {len(ROWS)} instructions leak at CPL3 without a trap; "
        "translated, the guest sees only its own CPU",
    )


def table_row(text: str, runs: list[GuestAnswers], virtual: dict[str, str]) -> list[str]:
    cells = [text]
    for guest in runs:
        answer = guest.answers[text]
        mark = "" if answer == virtual[text] else " *"
        trap = " [trap]" if guest.trapped[text] else ""
        cells.append(f"{answer}{mark}{trap}")
    return [*cells, virtual[text]]


def explain(
    report: Report,
    plain: GuestAnswers,
    runs: list[GuestAnswers],
    virtual: dict[str, str],
    silent_leaks: list[str],
    translation: Rewrite,
    umip_note: str,
) -> None:
    report.text(
        f"As it is, {len(silent_leaks)} instructions told the deprivileged kernel something "
        f"its own CPU would not, and none trapped to the monitor: {', '.join(silent_leaks)}. "
        "CS and SS carry the real CPL in their low bits; pushf shows the real IF and IOPL, "
        "and popf drops the kernel's change to IF without a fault; lar, lsl, verr and verw "
        "refuse the kernel's own ring-0 segments. These instructions are sensitive but not "
        "privileged, so a pure trap-and-emulate VMM never sees them: x86 broke the theorem's "
        "condition until VT-x and AMD-V (2005-06) added a real guest ring 0."
    )
    cs_read = plain.answers["mov eax, cs"].split()[0]
    if int(cs_read, 16) != plain.user_cs:
        backend = detect_host().backend.split()[0]
        report.text(
            f"On this host mov from CS read {cs_read}, not the selector 0x{plain.user_cs:x} "
            f"pyvmm loaded: its KVM ({backend}) runs guest CPL3 code on the "
            "host CPU the way the host runs a process, with the host's user selectors and "
            "IF, so these instructions reveal even the host beneath the VMM."
        )
    plain_sgdt = plain.answers["sgdt [mem]"]
    if plain_sgdt.startswith(f"base 0x{MONITOR_GDT:x} "):
        report.text(
            "sgdt and sidt read the monitor's tables, not the guest's: the real GDTR and IDTR "
            "are the VMM's, and these instructions read them at any CPL."
        )
    umip = next((guest for guest in runs if guest.name == "CR4.UMIP"), None)
    if umip is not None:
        caught = [row.text for row in ROWS if umip.trapped[row.text]]
        report.text(
            f"With CR4.UMIP (CPUs since 2017; KVM on VT-x emulates it where the CPU lacks it) the "
            f"descriptor-table instructions fault at CPL3: the monitor received "
            f"{len(caught)} traps ({', '.join(caught)}) and emulated them with the virtual "
            "CPU's values. The others still run silently: UMIP closes part of the hole only."
        )
    elif umip_note:
        report.text(f"UMIP could not be tried here: {umip_note}.")
    traps = len(translated_run(runs).traps)
    per_trap = translated_run(runs).seconds / max(traps, 1)
    report.text(
        f"The translator (capstone) found {len(translation.side_table)} sensitive instructions "
        "in the guest's code and rewrote each to hlt, which is privileged: "
        + "; ".join(translation.describe()[:3])
        + f"; ... The monitor took {traps} traps, one per rewrite "
        f"({per_trap * 1e3:.2f} ms each here, a VM exit and pyvmm's emulation), performed "
        "each original instruction on the virtual CPU and resumed after it: the guest now "
        "reads its own CPU, as VMware's binary translator made x86 guests do from 1999."
    )


def translated_run(runs: list[GuestAnswers]) -> MonitorRun:
    return runs[-1].run
