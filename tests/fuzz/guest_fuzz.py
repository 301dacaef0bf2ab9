"""Guest fuzzing: random code and random register states in every entry mode.

Each case is a flat image, loaded at its mode's default address: either pure
random bytes or a chain of snippets biased towards what stresses a VMM (port
and string I/O to real and random ports, MMIO and writes above RAM, control
registers, MSRs, descriptor tables, far transfers, self-modifying code),
sometimes with an interrupt table or page tables of its own so that it gets
past its first fault. After `build_machine` and before `run`, the case sets
random general registers, RIP and RFLAGS, and sometimes perturbs a few sregs
fields. A few cases have two vCPUs, host input on COM1, or a --trace/--stats
observer; a few run as `pyvmm boot` with a pseudo-terminal for stdin.

Every run must end in a named outcome (never VMM_ERROR, DEBUG, INTERRUPTED or
an exception) with a one-line message, within its limits, and must leave the
host process as it found it: the same file descriptors, threads, signal
handlers, interval timer and terminal modes.

Each case draws from its own `random.Random` seeded with (seed, index), so any
case re-runs alone:

    python -m tests.fuzz.guest_fuzz --count 5000 --seed 1      # a campaign
    python -m tests.fuzz.guest_fuzz --seed 1 --case 1234 -v    # one case, shown
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.arch.x86_64.gdt import CODE_SELECTOR
from pyvmm.builder import Machine, MachineConfig, build_machine
from pyvmm.console import ConsoleWriter
from pyvmm.console_input import InputBuffer
from pyvmm.errors import PyvmmError
from pyvmm.exit_stats import ExitStatistics, FanOut
from pyvmm.loaders.entry import CpuMode
from pyvmm.outcome import (
    EXIT_GUEST_FAULT,
    EXIT_HALTED,
    EXIT_LIMIT,
    EXIT_TIMEOUT,
    OutcomeKind,
    RunOutcome,
)
from pyvmm.trace import ExitTracer

MIB = 1 << 20
RAM_SIZE = 16 * MIB
# Now and then the smallest RAM pyvmm takes, or enough to reach past the 32-bit
# MMIO hole into a second slot above 4 GiB (mapped lazily: it costs nothing).
RAM_SIZES = (  # (size, weight)
    (RAM_SIZE, 8),
    (layout.MIN_RAM_SIZE, 1),
    (layout.MMIO_GAP_START + RAM_SIZE, 1),
)
CODE_BITS = {
    CpuMode.REAL: 16,
    CpuMode.PROTECTED: 32,
    CpuMode.PAGED: 32,
    CpuMode.LONG: 64,
    CpuMode.USER: 64,
}
ALL_MODES = (CpuMode.REAL, CpuMode.PROTECTED, CpuMode.PAGED, CpuMode.LONG, CpuMode.USER)

# Every kind a fuzzed guest may end in. DEBUG needs a debugger and INTERRUPTED a
# signal from outside: neither may happen here, and VMM_ERROR is pyvmm failing.
ALLOWED_KINDS = frozenset(OutcomeKind) - {
    OutcomeKind.VMM_ERROR,
    OutcomeKind.DEBUG,
    OutcomeKind.INTERRUPTED,
}
STATUS_OF_KIND: dict[OutcomeKind, Callable[[int], bool]] = {
    OutcomeKind.HALTED: lambda status: status == EXIT_HALTED,
    OutcomeKind.DEBUG_EXIT: lambda status: status % 2 == 1,
    OutcomeKind.SYSTEM_EVENT: lambda status: status in (EXIT_HALTED, EXIT_GUEST_FAULT),
    OutcomeKind.TRIPLE_FAULT: lambda status: status == EXIT_GUEST_FAULT,
    OutcomeKind.FAIL_ENTRY: lambda status: status == EXIT_GUEST_FAULT,
    OutcomeKind.INTERNAL_ERROR: lambda status: status == EXIT_GUEST_FAULT,
    OutcomeKind.TIMEOUT: lambda status: status == EXIT_TIMEOUT,
    OutcomeKind.EXIT_LIMIT: lambda status: status == EXIT_LIMIT,
}


@dataclass(frozen=True)
class Limits:
    """How long one guest may run: short, since ring-0 code is emulated on some hosts."""

    timeout: float = 0.5
    max_exits: int = 2000
    # A run that takes this much longer than `timeout` to return counts as a hang;
    # the watchdog kills the process outright if one never returns.
    hang_slack: float = 5.0
    watchdog: float = 60.0


# --- the machine code -------------------------------------------------------

EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)


def _le(value: int, size: int) -> bytes:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


class Asm:
    """Just enough of an x86 encoder for the snippets, in 16-, 32- or 64-bit code."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def mov(self, reg: int, value: int) -> bytes:
        """mov reg, imm (ax/eax in real mode, eax/rax otherwise)."""
        if self.bits == 16:
            if value & 0xFFFF == value:
                return bytes([0xB8 + reg]) + _le(value, 2)
            return bytes([0x66, 0xB8 + reg]) + _le(value, 4)
        if self.bits == 64 and value & 0xFFFF_FFFF != value:
            return bytes([0x48, 0xB8 + reg]) + _le(value, 8)
        return bytes([0xB8 + reg]) + _le(value, 4)

    def mov_dx(self, port: int) -> bytes:
        return (b"" if self.bits == 16 else b"\x66") + b"\xba" + _le(port, 2)

    def operand_size(self, size: int) -> bytes:
        """The prefix that makes an instruction's full-width form `size` bytes wide."""
        if size == 8:
            return b"\x48" if self.bits == 64 else b""
        if size == 2:
            return b"" if self.bits == 16 else b"\x66"
        return b"\x66" if self.bits == 16 else b""

    def point_at(self, gpa: int, reg: int = EAX) -> tuple[bytes, bytes, int]:
        """(setup, prefix, rm): address `gpa` through a register (and ES in real mode).

        In real mode the address becomes ES:DI (ES = gpa >> 4), since a 16-bit
        offset reaches no further; elsewhere it is [reg].
        """
        if self.bits == 16:
            setup = self.mov(EAX, (gpa >> 4) & 0xFFFF) + b"\x8e\xc0" + self.mov(EDI, gpa & 0xF)
            return setup, b"\x26", 0b101  # es: [di]
        return self.mov(reg, gpa), b"", reg

    def jump_rel(self, distance: int) -> bytes:
        """A near jump `distance` bytes from its own start."""
        if -126 <= distance <= 129:
            return b"\xeb" + _le(distance - 2, 1)
        if self.bits == 16:
            return b"\xe9" + _le(distance - 3, 2)
        return b"\xe9" + _le(distance - 5, 4)


def modrm(mod: int, reg: int, rm: int) -> int:
    return (mod << 6) | ((reg & 7) << 3) | (rm & 7)


# --- interesting values -----------------------------------------------------

# Ports pyvmm serves, ports real PCs have, and their neighbours.
PORTS = (
    [0x3F8 + offset for offset in range(8)]
    + [0xF4, 0xF5, 0xF6, 0xF7, 0xF3, 0xF8]  # debug-exit (4 ports) and its edges
    + [0x510, 0x511, 0x512, 0x514, 0x518]  # fw_cfg, its DMA port (absent)
    + [0xCF8, 0xCF9, 0xCFA, 0xCFB, 0xCFC, 0xCFD, 0xCFE, 0xCFF, 0xCF7, 0xD00]  # PCI
    + [0x80, 0x20, 0x21, 0xA0, 0xA1, 0x40, 0x43, 0x60, 0x64, 0x70, 0x71, 0x92, 0x402]
    + [0x2F8, 0x3E8, 0x0, 0xFFFF, 0xFFFE, 0xFFFD]
)
MSRS = (
    0x10,  # TSC
    0x1B,  # APIC base
    0x3A,  # feature control
    0x48,  # SPEC_CTRL
    0x8B,  # microcode revision
    0xFE,  # MTRR capabilities
    0x174,  # SYSENTER_CS
    0x175,
    0x176,
    0x179,
    0x1A0,  # misc enable
    0x1D9,  # debug control
    0x277,  # PAT
    0x2FF,  # MTRR default type
    0x6E0,  # TSC deadline
    0x802,  # x2APIC ID
    0x830,  # x2APIC ICR
    0x838,
    0x4B564D00,  # KVM paravirtual clock (KVM_FEATURE_CLOCKSOURCE2)
    0x4B564D01,
    0x4B564D02,  # KVM async page fault
    0x4B564D03,  # KVM steal time
    0x4B564D04,
    0xC0000080,  # EFER
    0xC0000081,  # STAR
    0xC0000082,  # LSTAR
    0xC0000083,  # CSTAR
    0xC0000084,  # FMASK
    0xC0000100,  # FS base
    0xC0000101,  # GS base
    0xC0000102,  # kernel GS base
    0xC0000103,  # TSC_AUX
    0xC0010000,  # AMD perf counters, absent on Intel
    0x40000000,  # Hyper-V guest OS ID
    0x0,
    0xFFFF_FFFF,
)
SELECTORS = (0x0, 0x8, 0x10, 0x18, 0x1B, 0x20, 0x23, 0x28, 0x30, 0x3, 0xB, 0x13, 0xFFFF)
CR0_BITS = (1 << 1, 1 << 2, 1 << 3, 1 << 5, 1 << 16, 1 << 18, 1 << 29, 1 << 30)
CR0_MODE_BITS = (1 << 0, 1 << 31)  # PE, PG: mode changes
CR4_BITS = tuple(1 << bit for bit in (0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 18, 20, 21, 22, 23))
CR4_MODE_BITS = (1 << 4, 1 << 5, 1 << 12)  # PSE, PAE, LA57
EFER_BITS = (1 << 0, 1 << 11, 1 << 8, 1 << 12, 1 << 14, 1 << 15)  # SCE NXE LME SVME LMSLE FFXSR
RFLAGS_ARITHMETIC = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 11)
RFLAGS_TF, RFLAGS_IF, RFLAGS_DF = 1 << 8, 1 << 9, 1 << 10
RFLAGS_RARE = (3 << 12, 1 << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 19, 1 << 20, 1 << 21)
# pyvmm's 32-bit MMIO hole: RAM resumes above it, at 4 GiB.
MMIO_HOLE_GPA = layout.MMIO_GAP_START
MMIO_HOLE_SIZE = layout.MMIO_GAP_END - layout.MMIO_GAP_START
# The xAPIC's page and its interrupt command register, low and high (SDM 11.4.1, 11.6.1).
LAPIC_GPA = 0xFEE0_0000
ICR_LOW, ICR_HIGH = LAPIC_GPA + 0x300, LAPIC_GPA + 0x310


@dataclass(frozen=True)
class Context:
    """What the generator knows about the machine the code will run in."""

    mode: CpuMode
    load_gpa: int
    ram_size: int

    @property
    def bits(self) -> int:
        return CODE_BITS[self.mode]


def pick_gpa(rng: random.Random, ctx: Context) -> int:
    """An address worth touching: RAM edges, VMM tables, MMIO holes, past RAM, nonsense."""
    low_ram = min(ctx.ram_size, MMIO_HOLE_GPA)  # RAM below the hole; the rest is above 4 GiB
    ram_end = ctx.ram_size if ctx.ram_size <= MMIO_HOLE_GPA else ctx.ram_size + MMIO_HOLE_SIZE
    choices: list[Callable[[], int]] = [
        lambda: ctx.load_gpa + rng.randrange(0x1000),  # the code itself
        lambda: rng.randrange(0x1_0000),  # IVT, BDA, the VMM's GDT and page tables
        lambda: 0x500 + rng.randrange(0x40),
        lambda: 0x1000 + rng.randrange(0x6000),
        lambda: 0x7000 + rng.randrange(0x2100),  # the user-mode TSS and I/O bitmap
        lambda: 0x8_0000 - rng.randrange(0x1_0000),  # the boot stack
        lambda: low_ram - rng.randrange(1, 16),  # straddling the end of (low) RAM
        lambda: ram_end - rng.randrange(1, 16),
        lambda: ram_end + rng.randrange(0x1_0000),  # past RAM: MMIO exits
        lambda: rng.randrange(low_ram, MMIO_HOLE_GPA + 1),
        lambda: MMIO_HOLE_GPA + rng.randrange(-8, 16),  # the start of the MMIO hole
        lambda: LAPIC_GPA + rng.randrange(0x400) * 4,
        lambda: 0xFEC0_0000 + rng.choice((0, 0x10)),  # IOAPIC
        lambda: 0xFED0_0000 + rng.randrange(0x400),  # HPET
        lambda: layout.KVM_IDENTITY_MAP_GPA + rng.randrange(0x4000),  # KVM's own pages
        lambda: 0x1_0000_0000 - rng.randrange(1, 16),  # straddling 4 GiB
        lambda: 0x1_0000_0000 + rng.randrange(0x1000),
        lambda: rng.getrandbits(32),
        lambda: rng.getrandbits(48),
        lambda: rng.getrandbits(64),  # often non-canonical
    ]
    return rng.choice(choices)() & ((1 << 64) - 1)


def pick_value(rng: random.Random) -> int:
    return rng.choice(
        (
            0,
            1,
            0xFFFF_FFFF,
            (1 << 64) - 1,
            rng.getrandbits(8),
            rng.getrandbits(16),
            rng.getrandbits(32),
            rng.getrandbits(64),
            1 << rng.randrange(64),
        )
    )


def pick_port(rng: random.Random) -> int:
    return rng.choice(PORTS) if rng.random() < 0.8 else rng.getrandbits(16)


# --- snippets: each returns machine code for one idea -------------------------

Snippet = Callable[[random.Random, Asm, Context], bytes]


def snippet_out(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    size = rng.choice((1, 2, 4))
    value = asm.mov(EAX, pick_value(rng) & 0xFFFF_FFFF)
    port = pick_port(rng)
    if port < 0x100 and rng.random() < 0.4:  # out imm8, al/ax/eax
        opcode = b"\xe6" if size == 1 else asm.operand_size(size) + b"\xe7"
        return value + opcode + bytes([port])
    opcode = b"\xee" if size == 1 else asm.operand_size(size) + b"\xef"
    return value + asm.mov_dx(port) + opcode


def snippet_in(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    size = rng.choice((1, 2, 4))
    opcode = b"\xec" if size == 1 else asm.operand_size(size) + b"\xed"
    return asm.mov_dx(pick_port(rng)) + opcode


def snippet_string_io(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """rep ins/outs with a random count, from or to an interesting address."""
    size = rng.choice((1, 2, 4))
    count = rng.choice((0, 1, 2, 7, 255, 4096, 65535, rng.getrandbits(16), rng.getrandbits(32)))
    outs = rng.random() < 0.5
    if asm.bits == 16:
        count &= 0xFFFF
        setup = asm.point_at(pick_gpa(rng, ctx))[0]  # ES:DI
        if outs:  # DS:SI, from the same place
            setup += b"\x8c\xc0\x8e\xd8" + asm.mov(ESI, 0)  # mov ax, es; mov ds, ax
    else:
        setup = asm.mov(ESI if outs else EDI, pick_gpa(rng, ctx))
    opcode = (0x6E if outs else 0x6C) + (size > 1)
    rep = b"\xf3" if rng.random() < 0.9 else b""
    return (
        setup
        + asm.mov(ECX, count)
        + asm.mov_dx(pick_port(rng))
        + rep
        + asm.operand_size(size if size > 1 else 4)
        + bytes([opcode])
    )


def snippet_serial_text(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """Print a few bytes to COM1, now and then with the line control set oddly first."""
    code = b""
    if rng.random() < 0.3:
        code += asm.mov_dx(0x3FB) + asm.mov(EAX, rng.getrandbits(8)) + b"\xee"
    code += asm.mov_dx(0x3F8)
    for _ in range(rng.randrange(1, 6)):
        code += b"\xb0" + bytes([rng.getrandbits(8)]) + b"\xee"  # mov al, imm8; out dx, al
    return code


def snippet_fw_cfg(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    key = rng.choice((0x0, 0x1, 0x3, 0x5, 0xF, 0x19, 0x20, 0x4019, 0x8000, rng.getrandbits(16)))
    select = asm.mov_dx(0x510) + asm.mov(EAX, key) + asm.operand_size(2) + b"\xef"
    data = asm.mov_dx(rng.choice((0x510, 0x511)))
    if rng.random() < 0.5:
        return select + data + asm.operand_size(rng.choice((2, 4))) + b"\xed"
    target = point_string_destination(rng, asm, ctx)
    count = rng.choice((1, 4, 64, 4096, rng.getrandbits(12)))
    return select + data + target + asm.mov(ECX, count) + b"\xf3\x6c"  # rep insb


def point_string_destination(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    if asm.bits == 16:
        return asm.point_at(pick_gpa(rng, ctx))[0]
    return asm.mov(EDI, pick_gpa(rng, ctx))


def snippet_pci(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    address = rng.choice((0x8000_0000, 0x8000_0000 | rng.getrandbits(24), rng.getrandbits(32)))
    size = rng.choice((1, 2, 4))
    code = asm.mov_dx(0xCF8) + asm.mov(EAX, address) + asm.operand_size(4) + b"\xef"
    code += asm.mov_dx(0xCFC + rng.randrange(4))
    return code + (b"\xec" if size == 1 else asm.operand_size(size) + b"\xed")


def snippet_debug_exit(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    return b"\xb0" + bytes([rng.getrandbits(8)]) + b"\xe6" + bytes([rng.choice((0xF4, 0xF5))])


def snippet_memory(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """A load, store or read-modify-write of 1 to 512 bytes at an interesting address."""
    setup, prefix, rm = asm.point_at(pick_gpa(rng, ctx))
    size = rng.choice((1, 2, 4, 8))
    reg = rng.choice((ECX, EDX, EBX))
    fill = asm.mov(reg, pick_value(rng) & 0xFFFF_FFFF)
    wide = b"" if size == 1 else asm.operand_size(size)
    form = rng.randrange(8)
    if form == 0:
        body = wide + bytes([0x88 + (size > 1), modrm(0, reg, rm)])  # mov [m], r
    elif form == 1:
        body = wide + bytes([0x8A + (size > 1), modrm(0, reg, rm)])  # mov r, [m]
    elif form == 2:
        body = wide + bytes([0x86 + (size > 1), modrm(0, reg, rm)])  # xchg [m], r
    elif form == 3:
        body = b"\xf0" + wide + bytes([0x01, modrm(0, reg, rm)])  # lock add [m], r
    elif form == 4:
        body = b"\x0f\x11" + bytes([modrm(0, 0, rm)])  # movups [m], xmm0
    elif form == 5:
        body = b"\x0f\xc7" + bytes([modrm(0, 1, rm)])  # cmpxchg8b [m]
    elif form == 6:
        body = b"\x0f\xae" + bytes([modrm(0, rng.choice((0, 1)), rm)])  # fxsave/fxrstor
    else:
        body = bytes([0x0F, 0x18, modrm(0, rng.randrange(4), rm)])  # prefetch
    return setup + fill + prefix + body


def snippet_string_memory(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """rep stos or rep movs over an interesting range (into MMIO, across RAM's end)."""
    code = point_string_destination(rng, asm, ctx)
    count = rng.choice((1, 3, 16, 512, rng.getrandbits(12)))
    movs = rng.random() < 0.4
    if movs:  # from DS:SI in real mode, so only from the low 64 KiB there
        source = pick_gpa(rng, ctx)
        code += asm.mov(ESI, source & 0xFFFF if asm.bits == 16 else source)
    size = rng.choice((1, 2, 4, 8))
    opcode = (0xA4 if movs else 0xAA) + (size > 1)
    if rng.random() < 0.2:
        code += b"\xfd"  # std: backwards
    return code + asm.mov(ECX, count) + b"\xf3" + asm.operand_size(size) + bytes([opcode])


def snippet_self_modify(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """Overwrite code a little ahead (or behind) with random bytes."""
    ahead = rng.randrange(-32, 64)
    if asm.bits == 64:  # mov byte [rip + disp32], imm8
        return b"\xc6\x05" + _le(ahead, 4) + bytes([rng.getrandbits(8)])
    target = ctx.load_gpa + rng.randrange(0x200)
    setup, prefix, rm = asm.point_at(target)
    return setup + prefix + bytes([0xC6, modrm(0, 0, rm), rng.getrandbits(8)])


def snippet_control_register(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """Toggle CR0/CR4 bits (sometimes the mode bits), or load a random CR."""
    cr = rng.choice((0, 0, 4, 4, 3, 2, 8, 1, 5))
    if rng.random() < 0.7 and cr in (0, 4):
        bits = CR0_BITS if cr == 0 else CR4_BITS
        modes = CR0_MODE_BITS if cr == 0 else CR4_MODE_BITS
        toggle = rng.choice(modes) if rng.random() < 0.25 else rng.choice(bits)
        read = b"\x0f\x20" + bytes([modrm(3, cr, EAX)])
        xor = asm.operand_size(4) + b"\x35" + _le(toggle, 4)
        return read + xor + b"\x0f\x22" + bytes([modrm(3, cr, EAX)])
    value = pick_gpa(rng, ctx) & ~0xFFF if cr == 3 else pick_value(rng)
    rex = b"\x44" if cr == 8 and asm.bits == 64 else b""
    return asm.mov(EAX, value) + rex + b"\x0f\x22" + bytes([modrm(3, cr & 7, EAX)])


def snippet_msr(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    msr = rng.choice(MSRS) if rng.random() < 0.85 else rng.getrandbits(32)
    code = asm.mov(ECX, msr) + b"\x0f\x32"  # rdmsr
    if rng.random() < 0.6:  # wrmsr: flip a bit of what was read, or write a random value
        if rng.random() < 0.5:
            code += asm.operand_size(4) + b"\x35" + _le(1 << rng.randrange(32), 4)
        else:
            code += asm.mov(EAX, rng.getrandbits(32)) + asm.mov(EDX, rng.getrandbits(32))
        code += b"\x0f\x30"
    return code


def snippet_efer(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    toggle = rng.choice(EFER_BITS)
    return (
        asm.mov(ECX, 0xC000_0080)
        + b"\x0f\x32"
        + asm.operand_size(4)
        + b"\x35"
        + _le(toggle, 4)
        + b"\x0f\x30"
    )


def snippet_descriptor_table(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """lgdt/lidt/sgdt/sidt/lldt/ltr with random operands."""
    which = rng.randrange(6)
    if which >= 4:  # lldt ax / ltr ax
        return asm.mov(EAX, rng.choice(SELECTORS)) + b"\x0f\x00" + bytes([modrm(3, which - 2, 0)])
    setup, prefix, rm = asm.point_at(pick_gpa(rng, ctx), reg=EBX)
    reg = (2, 3, 0, 1)[which]  # lgdt, lidt, sgdt, sidt
    return setup + prefix + b"\x0f\x01" + bytes([modrm(0, reg, rm)])


def snippet_segment(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """mov sreg, ax with a random selector (SS and even CS included)."""
    sreg = rng.choice((0, 2, 3, 4, 5, 3, 1))  # es, ss, ds, fs, gs, ds, cs (#UD)
    return asm.mov(EAX, rng.choice(SELECTORS)) + b"\x8e" + bytes([modrm(3, sreg, EAX)])


def snippet_interrupt(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return b"\xcd" + bytes([rng.choice((3, 6, 8, 13, 14, 0x20, 0x80, rng.getrandbits(8)))])
    return (b"\xcc", b"\xf1", b"\xce", b"\xfa", b"\xfb")[choice - 1]  # int3 int1 into cli sti


def snippet_iret(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """iret/retf/sysret/sysexit over a stack of plausible and random values."""

    def push(value: int) -> bytes:
        if asm.bits == 16:
            return b"\x68" + _le(value, 2)
        return b"\x68" + _le(value, 4)

    target = ctx.load_gpa + rng.randrange(0x100) if rng.random() < 0.7 else pick_gpa(rng, ctx)
    flags = 2 | (rng.getrandbits(22) & RFLAGS_ARITHMETIC) | rng.choice((0, RFLAGS_IF, RFLAGS_TF))
    frame = [target, rng.choice(SELECTORS), flags]
    if asm.bits == 64 or rng.random() < 0.3:
        frame += [0x7_0000 + rng.randrange(0x1000), rng.choice(SELECTORS)]  # rsp, ss
    code = b"".join(push(value) for value in reversed(frame))
    rex = b"\x48" if asm.bits == 64 else b""
    ending = rng.choice((rex + b"\xcf", rex + b"\xcb", b"\xc3", b"\x0f\x07", b"\x0f\x35"))
    return code + ending


def snippet_far_transfer(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """Far jmp/call, direct (invalid in 64-bit code) or through memory."""
    selector = rng.choice(SELECTORS)
    offset = ctx.load_gpa + rng.randrange(0x100) if rng.random() < 0.6 else rng.getrandbits(32)
    if rng.random() < 0.5:
        opcode = rng.choice((b"\xea", b"\x9a"))
        width = 2 if asm.bits == 16 else 4
        return opcode + _le(offset, width) + _le(selector, 2)
    setup, prefix, rm = asm.point_at(pick_gpa(rng, ctx), reg=EBX)
    return setup + prefix + b"\xff" + bytes([modrm(0, rng.choice((3, 5)), rm)])


def snippet_jump(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """A near jump: to itself, a little way off, or to any address through a register."""
    choice = rng.randrange(4)
    if choice == 0:
        return b"\xeb\xfe"  # jmp $
    if choice == 1:
        return asm.jump_rel(rng.randrange(-64, 64))
    target = ctx.load_gpa + rng.randrange(-16, 0x400) if choice == 2 else pick_gpa(rng, ctx)
    return asm.mov(EAX, target) + b"\xff" + bytes([rng.choice((0xE0, 0xD0))])  # jmp/call eax


def snippet_privileged(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """One of the instructions a hypervisor intercepts or that fault outside ring 0."""
    return rng.choice(
        (
            b"\xf4",  # hlt
            b"\x0f\x0b",  # ud2
            b"\x0f\x05",  # syscall
            b"\x0f\x34",  # sysenter
            b"\x0f\xa2",  # cpuid
            b"\x0f\x31",  # rdtsc
            b"\x0f\x01\xf9",  # rdtscp
            b"\x0f\x33",  # rdpmc
            b"\x0f\x09",  # wbinvd
            b"\x0f\x08",  # invd
            b"\x0f\x06",  # clts
            b"\x0f\x01\xc1",  # vmcall
            b"\x0f\x01\xd9",  # vmmcall
            b"\x0f\x01\xc8",  # monitor
            b"\x0f\x01\xc9",  # mwait
            b"\x0f\x01\xd0",  # xgetbv
            b"\x0f\x01\xd1",  # xsetbv
            b"\x0f\x01\xf8",  # swapgs
            b"\x0f\x01\xca",  # clac
            b"\x0f\x01\xcb",  # stac
            b"\x0f\x01\x38",  # invlpg [eax]
            b"\x0f\x01\xf0",  # lmsw ax
            b"\x0f\xaa",  # rsm
            b"\x0f\xff",  # ud0
            b"\x0f\x23\xf8",  # mov dr7, eax
            b"\x0f\x21\xf0",  # mov eax, dr6
            b"\x0f\xc7\xf0",  # rdrand eax
            b"\xf3\x90",  # pause
            b"\x31\xc0\xf7\xf0",  # xor eax, eax; div eax
            b"\x9c\x9d",  # pushf; popf
            b"\x0f\x00\xc0",  # sldt ax
            b"\x0f\xae\xe8",  # lfence
        )
    )


def snippet_flags(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """popf a random RFLAGS: TF (single step into a guest #DB), AC, DF, IF, IOPL, NT."""
    flags = 2 | rng.getrandbits(22)
    if asm.bits == 16:
        return b"\x66\x68" + _le(flags, 4) + b"\x66\x9d"
    return b"\x68" + _le(flags, 4) + b"\x9d"


def snippet_stack(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """Point the stack somewhere interesting and push or call through it."""
    code = asm.mov(ESP, pick_gpa(rng, ctx) if rng.random() < 0.7 else rng.getrandbits(16))
    call_next = b"\xe8" + bytes(2 if asm.bits == 16 else 4)
    return code + rng.choice((b"\x50", b"\x58", call_next))  # push, pop, call


def snippet_start_cpu(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """INIT then SIPI to the other vCPUs through the LAPIC's ICR (a real MP start-up)."""
    vector = rng.choice((0x07, 0x08, 0x10, 0x9F, rng.getrandbits(8)))
    code = b""
    for icr, value in ((ICR_HIGH, 0), (ICR_LOW, 0xC4500), (ICR_LOW, 0xC4600 | vector)):
        setup, prefix, rm = asm.point_at(icr)
        code += setup + asm.mov(ECX, value) + prefix + b"\x89" + bytes([modrm(0, ECX, rm)])
    return code


def snippet_timer(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    """Program the PIT for a fast periodic tick and enable interrupts (a fault without an IDT)."""
    code = b"\xb0\x34\xe6\x43"  # mode 2, lo/hi
    code += b"\xb0" + bytes([rng.getrandbits(8)]) + b"\xe6\x40"
    code += b"\xb0" + bytes([rng.choice((0, 1, rng.getrandbits(8)))]) + b"\xe6\x40"
    return code + b"\xfb" + rng.choice((b"\xf4", b"\xeb\xfe", b"\x90"))


def snippet_random(rng: random.Random, asm: Asm, ctx: Context) -> bytes:
    return rng.randbytes(rng.randrange(1, 16))


SNIPPETS: tuple[tuple[Snippet, int], ...] = (
    (snippet_out, 10),
    (snippet_in, 6),
    (snippet_string_io, 6),
    (snippet_serial_text, 4),
    (snippet_fw_cfg, 3),
    (snippet_pci, 3),
    (snippet_memory, 10),
    (snippet_string_memory, 4),
    (snippet_self_modify, 3),
    (snippet_control_register, 5),
    (snippet_msr, 5),
    (snippet_efer, 2),
    (snippet_descriptor_table, 4),
    (snippet_segment, 3),
    (snippet_interrupt, 4),
    (snippet_iret, 3),
    (snippet_far_transfer, 3),
    (snippet_jump, 3),
    (snippet_privileged, 6),
    (snippet_flags, 2),
    (snippet_stack, 2),
    (snippet_start_cpu, 1),
    (snippet_timer, 1),
    (snippet_random, 4),
)


def generate_code(rng: random.Random, ctx: Context) -> bytes:
    """Pure random bytes, or a chain of snippets with a random ending."""
    if rng.random() < 0.2:
        return rng.randbytes(rng.choice((1, 2, 16, 64, 512, 4096)))
    asm = Asm(ctx.bits)
    code = generate_snippets(rng, asm, ctx, rng.randrange(1, 20))
    ending = rng.randrange(6)
    if ending == 0:
        code += asm.jump_rel(-len(code))  # loop: exits pile up to the limit
    elif ending == 1:
        code += snippet_debug_exit(rng, asm, ctx)
    elif ending == 2:
        code += b"\xf4"
    elif ending == 3:
        code += b"\xeb\xfe"
    tail = rng.choice((0, 0, 16, 256))
    return code + (rng.randbytes(tail) if rng.random() < 0.5 else bytes(tail))


def generate_snippets(rng: random.Random, asm: Asm, ctx: Context, count: int) -> bytes:
    functions, weights = zip(*SNIPPETS, strict=True)
    return b"".join(snippet(rng, asm, ctx) for snippet in rng.choices(functions, weights, k=count))


# Interrupt gates (SDM 6.11 and 6.14.1): present, DPL 0 or 3, 32/64-bit interrupt gate.
GATE_KERNEL, GATE_USER = 0x8E, 0xEE


def add_interrupt_table(
    rng: random.Random, ctx: Context, code: bytes
) -> tuple[bytes, tuple[Tweak, ...]]:
    """Append a handler and an IDT (or real-mode IVT) whose gates all lead to it.

    Without one, the first exception is a triple fault and the run ends there;
    with one, faults, `int n` and timer interrupts are delivered and the code
    goes on (the handler does a few random things, then returns or starts over).
    """
    asm = Asm(ctx.bits)
    handler_gpa = ctx.load_gpa + len(code)
    handler = generate_snippets(rng, asm, ctx, rng.randrange(0, 4))
    iret = b"\x48\xcf" if ctx.bits == 64 else b"\xcf"
    handler += rng.choice((iret, asm.jump_rel(-len(code) - len(handler)), b"\xf4"))
    image = code + handler
    image += bytes(-len(image) % 16)
    table_gpa = ctx.load_gpa + len(image)
    gates = rng.choice((256, 32, rng.randrange(1, 256)))
    entry = interrupt_gate(ctx, handler_gpa, GATE_USER if rng.random() < 0.5 else GATE_KERNEL)
    table = bytearray(entry * gates)
    for _ in range(rng.choice((0, 0, 1, 8))):  # a few broken gates
        index = rng.randrange(len(table))
        table[index] = rng.getrandbits(8)
    tweaks = (("idt.base", "set", table_gpa), ("idt.limit", "set", len(table) - 1))
    return image + bytes(table), tweaks


# Page-table entry bits (SDM 4.3 and 4.5): present, writable, user, page size.
PTE_P, PTE_W, PTE_U, PTE_PS = 1 << 0, 1 << 1, 1 << 2, 1 << 7
CR0_PG, CR4_PSE, CR4_PAE = 1 << 31, 1 << 4, 1 << 5
PAGE = 0x1000


def add_page_tables(rng: random.Random, ctx: Context, code: bytes) -> bytes:
    """Let the guest switch to identity page tables of its own, a few entries broken.

    Protected mode turns paging on (32-bit with 4 MiB pages, or PAE with 2 MiB
    pages); long mode loads a new CR3 (2 MiB or 1 GiB pages). The tables sit in
    the image, after the code; what the VMM reports about the guest (register
    dumps, emulation failures) then walks them.
    """
    asm = Asm(ctx.bits)
    prologue_size = 64  # room for the code below, which is shorter
    tables_offset = -(len(code) + prologue_size) % PAGE + len(code) + prologue_size
    root_gpa = ctx.load_gpa + tables_offset
    if ctx.mode is CpuMode.PROTECTED and rng.random() < 0.5:
        tables = b"".join(
            _le(index << 22 | PTE_P | PTE_W | PTE_U | PTE_PS, 4) for index in range(1024)
        )
        cr4_bits = CR4_PSE
    else:
        tables = large_page_tables(rng, ctx, root_gpa)
        cr4_bits = CR4_PAE
    prologue = asm.mov(EAX, root_gpa) + b"\x0f\x22\xd8"  # mov cr3, eax
    if ctx.mode is CpuMode.PROTECTED:
        prologue += b"\x0f\x20\xe0\x0d" + _le(cr4_bits, 4) + b"\x0f\x22\xe0"  # cr4 |= bits
        prologue += b"\x0f\x20\xc0\x0d" + _le(CR0_PG, 4) + b"\x0f\x22\xc0"  # cr0 |= PG
    broken = bytearray(tables)
    for _ in range(rng.choice((0, 1, 4, 32))):
        index = rng.randrange(len(broken))
        broken[index] ^= 1 << rng.randrange(8)
    image = prologue + code
    return image + bytes(tables_offset - len(image)) + bytes(broken)


def large_page_tables(rng: random.Random, ctx: Context, root_gpa: int) -> bytes:
    """PAE (PDPT + 4 PDs of 2 MiB pages) or 4-level (PML4, PDPT, then PDs or 1 GiB pages)."""
    flags = PTE_P | PTE_W | PTE_U
    directories = b"".join(
        _le((index << 21) | flags | PTE_PS, 8) for index in range(4 * 512)
    )  # 2 MiB pages over the low 4 GiB
    if ctx.mode is CpuMode.PROTECTED:
        pdpt_gpa = root_gpa
        pdpt = b"".join(_le(pdpt_gpa + PAGE * (1 + index) | PTE_P, 8) for index in range(4))
        return pdpt + bytes(PAGE - len(pdpt)) + directories
    pml4 = _le(root_gpa + PAGE | flags, 8) + bytes(PAGE - 8)
    if rng.random() < 0.3:  # 1 GiB pages, where the CPU has them
        pdpt = b"".join(_le(index << 30 | flags | PTE_PS, 8) for index in range(512))
        return pml4 + pdpt
    pdpt = b"".join(_le(root_gpa + PAGE * (2 + index) | flags, 8) for index in range(4))
    return pml4 + pdpt + bytes(PAGE - len(pdpt)) + directories


def interrupt_gate(ctx: Context, handler_gpa: int, attributes: int) -> bytes:
    if ctx.bits == 16:  # IVT entry: offset, then segment 0
        return _le(handler_gpa, 2) + bytes(2)
    low = _le(handler_gpa, 2) + _le(CODE_SELECTOR, 2) + bytes([0, attributes])
    gate = low + _le(handler_gpa >> 16, 2)
    return gate + _le(handler_gpa >> 32, 4) + bytes(4) if ctx.bits == 64 else gate


# --- registers --------------------------------------------------------------

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", *(f"r{n}" for n in range(8, 16)))
SEGMENTS = ("ds", "es", "fs", "gs", "ss")

# One register change: (field, op, value), op "set" or "xor"; fields of sregs
# may be dotted ("idt.base", "ds.limit").
Tweak = tuple[str, str, int]


def generate_regs(rng: random.Random, ctx: Context, code_size: int) -> tuple[Tweak, ...]:
    """Random GPRs, an entry point in or near the code (or anywhere), RFLAGS, maybe RSP."""
    tweaks: list[Tweak] = []
    for name in GPRS:
        if rng.random() < 0.4:
            value = pick_value(rng) if rng.random() < 0.6 else pick_gpa(rng, ctx)
            tweaks.append((name, "set", value))
    entry = ctx.load_gpa
    roll = rng.random()
    if roll < 0.5:
        tweaks.append(("rip", "set", entry + rng.randrange(max(code_size, 1))))
    elif roll < 0.6:
        tweaks.append(("rip", "set", entry + rng.randrange(-16, code_size + 16)))
    elif roll < 0.65:
        tweaks.append(("rip", "set", pick_gpa(rng, ctx)))
    flags = 2 | (rng.getrandbits(16) & RFLAGS_ARITHMETIC)
    for bit, chance in ((RFLAGS_TF, 0.1), (RFLAGS_IF, 0.3), (RFLAGS_DF, 0.15)):
        if rng.random() < chance:
            flags |= bit
    if rng.random() < 0.15:
        flags |= rng.choice(RFLAGS_RARE)
    if rng.random() < 0.02:
        flags = rng.getrandbits(64)  # reserved bits too: KVM may refuse them
    if ctx.mode is CpuMode.USER:
        flags |= 3 << 12  # keep IOPL=3, as pyvmm enters user mode
    tweaks.append(("rflags", "set", flags))
    if rng.random() < 0.3:
        tweaks.append(("rsp", "set", pick_gpa(rng, ctx)))
    return tuple(tweaks)


def generate_sregs(rng: random.Random, ctx: Context) -> tuple[Tweak, ...]:
    """A few valid-ish changes to the entry state (and now and then a wild one)."""
    if rng.random() > 0.3:
        return ()
    tweaks: list[Tweak] = []
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(11)
        if kind == 0:
            tweaks.append(("cr0", "xor", rng.choice(CR0_BITS)))
        elif kind == 1:
            tweaks.append(("cr4", "xor", rng.choice(CR4_BITS)))
        elif kind == 2:
            tweaks.append(("efer", "xor", rng.choice(EFER_BITS[:2])))
        elif kind == 3:
            tweaks.append(("cr8", "set", rng.randrange(16)))
        elif kind == 4:  # an IDT: exceptions go through random gates instead of a triple fault
            tweaks.append(("idt.base", "set", pick_gpa(rng, ctx)))
            tweaks.append(("idt.limit", "set", rng.choice((0xFFF, 0xFF, 0x7, rng.getrandbits(16)))))
        elif kind == 5:
            tweaks.append(("gdt.limit", "set", rng.choice((0, 7, 0x17, 0xFFFF))))
        elif kind == 6:
            segment = rng.choice(SEGMENTS)
            tweaks.append((f"{segment}.base", "set", pick_gpa(rng, ctx) & 0xFFFF_FFFF))
        elif kind == 7:
            segment = rng.choice(SEGMENTS)
            tweaks.append((f"{segment}.limit", "set", rng.choice((0xFFFF, 0xFFFF_FFFF, 0))))
        elif kind == 8:
            segment = rng.choice(SEGMENTS)
            tweaks.append((f"{segment}.selector", "set", rng.choice(SELECTORS)))
        elif kind == 9:
            tweaks.append(("cr2", "set", pick_gpa(rng, ctx)))
        elif rng.random() < 0.5:
            tweaks.append(("apic_base", "xor", rng.choice((1 << 11, 1 << 10))))
        else:
            wild = rng.choice(("cs.base", "cs.dpl", "ss.dpl", "cs.l", "cs.db", "tr.present"))
            width = 32 if wild.endswith(".base") else 1
            tweaks.append((wild, "set", rng.getrandbits(width)))
    return tuple(tweaks)


def apply_tweaks(struct: Any, tweaks: Iterable[Tweak]) -> None:
    """Change the fields of a cffi kvm_regs or kvm_sregs in place."""
    for name, op, value in tweaks:
        *path, last = name.split(".")
        target = struct
        for part in path:
            target = getattr(target, part)
        old = getattr(target, last)
        setattr(target, last, value if op == "set" else old ^ value)


# --- cases ------------------------------------------------------------------


@dataclass(frozen=True)
class GuestCase:
    index: int
    mode: CpuMode
    image: bytes
    regs: tuple[Tweak, ...] = ()
    sregs: tuple[Tweak, ...] = ()
    cpus: int = 1
    irqchip: bool | None = None
    ram_size: int = RAM_SIZE
    # Bytes waiting on COM1's receive side (None: no host input, as without a stdin).
    console_input: bytes | None = None
    # Who watches the exits: "" none, or "text"/"json" (--trace), "stats", "both".
    observer: str = ""
    # Run as `pyvmm boot` in a child process whose stdin is a pseudo-terminal (the
    # registers are then pyvmm's own: the command line cannot set them).
    via_cli: bool = False


OBSERVERS = ("", "", "", "", "text", "json", "stats", "both")


def case_random(seed: int, index: int) -> random.Random:
    """The case's own generator: any case re-runs alone."""
    return random.Random(f"pyvmm-guest-fuzz:{seed}:{index}")


def generate_case(seed: int, index: int, modes: tuple[CpuMode, ...]) -> GuestCase:
    """Case `index` of campaign `seed`: the same on every run (for the same `modes`)."""
    rng = case_random(seed, index)
    mode = rng.choice(modes)
    sizes, weights = zip(*RAM_SIZES, strict=True)
    ram_size = rng.choices(sizes, weights)[0]
    ctx = Context(mode, default_load_gpa(mode), ram_size)
    cpus = 2 if rng.random() < 0.04 else 1
    irqchip = True if cpus == 1 and rng.random() < 0.05 else None
    image = generate_code(rng, ctx)
    if cpus > 1 and rng.random() < 0.5:  # wake the other vCPU first, then go on
        image = snippet_start_cpu(rng, Asm(ctx.bits), ctx) + image
    regs = generate_regs(rng, ctx, len(image))
    sregs = generate_sregs(rng, ctx)
    console_input = rng.randbytes(rng.choice((0, 1, 16, 100))) if rng.random() < 0.2 else None
    observer = rng.choice(OBSERVERS)
    if rng.random() < CLI_SHARE:
        return GuestCase(
            index, mode, image, (), (), cpus, irqchip, ram_size, console_input, observer, True
        )
    if ctx.mode in (CpuMode.PROTECTED, CpuMode.LONG) and rng.random() < 0.15:
        image = add_page_tables(rng, ctx, image)
    if rng.random() < 0.3:
        image, idt = add_interrupt_table(rng, ctx, image)
        sregs = idt + sregs
    return GuestCase(
        index, mode, image, regs, sregs, cpus, irqchip, ram_size, console_input, observer
    )


@dataclass
class CaseResult:
    case: GuestCase
    outcome: RunOutcome | None = None
    rejected: str | None = None  # KVM refused the registers (a PyvmmError): fine
    failure: str | None = None  # pyvmm misbehaved
    detail: str = ""  # a traceback or register dump, for -v
    seconds: float = 0.0
    exits: int = 0  # VM exits served, every vCPU together: how far the guest got
    cli_end: str | None = None  # how `pyvmm boot` ended, for CLI cases

    @property
    def kind(self) -> str:
        """How the case ended, in one word or so."""
        if self.outcome is not None:
            return self.outcome.kind.value
        if self.cli_end is not None:
            return f"pyvmm boot: {self.cli_end}"
        return "rejected" if self.rejected is not None else "failed"


def run_case(case: GuestCase, limits: Limits) -> CaseResult:
    """Build, set the registers, run, close; never raises."""
    if case.via_cli:
        return run_cli_case(case, limits)
    result = CaseResult(case)
    host_input = None
    if case.console_input is not None:
        host_input = InputBuffer(max(len(case.console_input), 1))
        host_input.put(case.console_input)
    config = MachineConfig(
        image=case.image,
        ram_size=case.ram_size,
        console=ConsoleWriter(-1),
        mode=case.mode,
        max_exits=limits.max_exits,
        cpus=case.cpus,
        irqchip=case.irqchip,
        console_input=host_input,
    )
    started = time.perf_counter()
    faulthandler.dump_traceback_later(limits.watchdog, exit=True)
    try:
        with build_machine(config) as machine:
            try:
                set_registers(machine.vcpu, case)
            except PyvmmError as error:
                result.rejected = str(error)
                return result
            observer, statistics = make_observer(case.observer, machine)
            run_started = time.perf_counter()
            result.outcome = machine.run(timeout=limits.timeout, observer=observer)
            ran = time.perf_counter() - run_started
            result.exits = sum(loop.exit_count for loop in machine.group.loops)
            if statistics is not None:
                statistics.summary()  # what --stats prints: must format any run
        check_outcome(result, ran, limits)
    except Exception as error:  # pyvmm must never let one escape: that is the finding
        result.failure = f"raised {type(error).__name__}: {error}"
        result.detail = traceback.format_exc()
    finally:
        faulthandler.cancel_dump_traceback_later()
        result.seconds = time.perf_counter() - started
    return result


CLI_SHARE = 0.03  # of the cases: each costs a Python start-up
# `pyvmm boot` statuses a guest may cause (see its --help): halted, guest fault,
# timeout, exit limit, or a debug-exit status (odd). Not 2 (usage: the command
# line is valid), nor 70 (pyvmm failed), nor a signal.
CLI_STATUSES = {
    EXIT_HALTED: "halted",
    EXIT_GUEST_FAULT: "guest fault",
    EXIT_TIMEOUT: "timeout",
    EXIT_LIMIT: "exit-limit",
}


def run_cli_case(case: GuestCase, limits: Limits) -> CaseResult:
    """`pyvmm boot` on the case's image with a pseudo-terminal for stdin.

    pyvmm puts a terminal stdin in raw mode and reads it from a thread: the run
    must end with a documented status, no traceback, and the terminal's mode
    as it was.
    """
    from tests.integration.helpers import REPO

    result = CaseResult(case)
    started = time.perf_counter()
    master, slave = os.openpty()
    try:
        with tempfile.TemporaryDirectory() as directory:
            image = os.path.join(directory, "guest.bin")
            with open(image, "wb") as file:
                file.write(case.image)
            if case.console_input:
                os.write(master, case.console_input)  # typed ahead
            before = termios.tcgetattr(slave)
            process = subprocess.run(
                cli_command(case, limits, image),
                stdin=slave,
                capture_output=True,
                timeout=limits.timeout + limits.hang_slack + 10,  # a Python start-up, too
                cwd=REPO,
                check=False,
            )
            after = termios.tcgetattr(slave)
        stderr = process.stderr.decode(errors="replace")
        result.detail = stderr
        result.cli_end, result.failure = classify_cli_end(process.returncode, stderr)
        if result.failure is None and before != after:
            result.failure = f"pyvmm boot left the terminal mode changed: {before} -> {after}"
    except subprocess.TimeoutExpired:
        result.failure = "pyvmm boot did not end (killed)"
    finally:
        os.close(master)
        os.close(slave)
        result.seconds = time.perf_counter() - started
    return result


def classify_cli_end(status: int, stderr: str) -> tuple[str, str | None]:
    """How `pyvmm boot` ended, from its status and stderr; and what is wrong with that.

    An abnormal end says why on the first line of stderr; a debug-exit says
    nothing. Status 1 is both a guest fault and a debug-exit write of 0
    (QEMU's (0 << 1) | 1), told apart by that line.
    """
    says_why = stderr.startswith("pyvmm: ")
    if "Traceback" in stderr:
        return str(status), "pyvmm boot printed a traceback"
    if status == EXIT_GUEST_FAULT:
        return ("guest fault" if says_why else "debug-exit"), None
    if status in (EXIT_TIMEOUT, EXIT_LIMIT) and not says_why:
        return CLI_STATUSES[status], f"pyvmm boot ended with status {status} but did not say why"
    if status in CLI_STATUSES:
        return CLI_STATUSES[status], None
    if status > 1 and status % 2 == 1:
        return "debug-exit", None
    return str(status), f"pyvmm boot exited with status {status}: {stderr[:200]!r}"


def cli_command(case: GuestCase, limits: Limits, image: str) -> list[str]:
    command = [sys.executable, "-m", "pyvmm", "boot", "--mode", case.mode.value]
    command += ["-m", f"{case.ram_size >> 10}K", "--timeout", str(limits.timeout)]
    command += ["--max-exits", str(limits.max_exits), "-smp", str(case.cpus)]
    if case.irqchip:
        command += ["--kernel-irqchip", "on"]
    if case.observer in ("text", "json", "both"):
        style = "json" if case.observer == "json" else "text"
        command += ["--trace=all", "--trace-format", style, "--trace-file", os.devnull]
    if case.observer in ("stats", "both"):
        command.append("--stats")
    return [*command, image]


def make_observer(kind: str, machine: Machine) -> tuple[Any, ExitStatistics | None]:
    """The observer `pyvmm boot --trace/--stats` would attach (tracing into memory)."""
    if not kind:
        return None, None
    tracer = ExitTracer(
        machine.vcpu,
        machine.memory,
        io.StringIO(),
        json_lines=kind == "json",
        max_phys_bits=machine.max_phys_bits,
    )
    statistics = ExitStatistics()
    if kind == "both":
        return FanOut(tracer, statistics), statistics
    return (statistics, statistics) if kind == "stats" else (tracer, None)


def set_registers(vcpu: Any, case: GuestCase) -> None:
    if case.sregs:
        sregs = vcpu.get_sregs()
        apply_tweaks(sregs, case.sregs)
        vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    apply_tweaks(regs, case.regs)
    vcpu.set_regs(regs)


def check_outcome(result: CaseResult, ran: float, limits: Limits) -> None:
    outcome = result.outcome
    assert outcome is not None
    result.detail = outcome.registers or ""
    message = outcome.message
    if outcome.kind is OutcomeKind.INTERRUPTED:
        return  # Ctrl-C or SIGTERM for the fuzzer itself: the campaign stops (not a finding)
    if outcome.kind not in ALLOWED_KINDS:
        result.failure = f"outcome {outcome.kind.value}: {message}"
    elif not message.strip() or "\n" in message:
        result.failure = f"{outcome.kind.value} outcome with a bad message: {message!r}"
    elif not STATUS_OF_KIND[outcome.kind](outcome.exit_status):
        result.failure = f"{outcome.kind.value} outcome with exit status {outcome.exit_status}"
    elif ran > limits.timeout + limits.hang_slack:
        result.failure = f"run took {ran:.1f} s with a {limits.timeout} s timeout ({message})"


# --- the host process must look the same after every run ---------------------

WATCHED_SIGNALS = (signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


@dataclass(frozen=True)
class HostState:
    fds: frozenset[int]
    threads: int
    tasks: int  # kernel threads of the process, native ones included
    handlers: tuple[object, ...]
    timer: tuple[float, float]
    terminal: tuple[object, ...]

    @classmethod
    def now(cls) -> HostState:
        return cls(
            frozenset(int(name) for name in os.listdir("/proc/self/fd")),
            threading.active_count(),
            len(os.listdir("/proc/self/task")),
            tuple(signal.getsignal(signum) for signum in WATCHED_SIGNALS),
            signal.getitimer(signal.ITIMER_REAL),
            tuple(_terminal_mode(fd) for fd in (0, 1, 2)),
        )

    def differences(self, later: HostState) -> list[str]:
        found = []
        if later.fds - self.fds:
            found.append(f"leaked fds {sorted(later.fds - self.fds)}")
        if self.fds - later.fds:
            found.append(f"closed fds it did not own {sorted(self.fds - later.fds)}")
        if later.threads != self.threads or later.tasks != self.tasks:
            found.append(f"threads {self.threads}/{self.tasks} -> {later.threads}/{later.tasks}")
        handlers = zip(WATCHED_SIGNALS, self.handlers, later.handlers, strict=True)
        for signum, before, after in handlers:
            if before != after:
                found.append(f"{signal.Signals(signum).name} handler left changed")
        if later.timer != (0.0, 0.0) and later.timer != self.timer:
            found.append(f"interval timer left running: {later.timer}")
        if later.terminal != self.terminal:
            found.append("terminal mode changed")
        return found


def host_differences(baseline: HostState, settle: float = 0.2) -> list[str]:
    """What the last run left changed. A thread that is just exiting (the watchdog's, a
    vCPU's) may linger in /proc for a moment after its join: give it that moment."""
    deadline = time.monotonic() + settle
    while True:
        found = baseline.differences(HostState.now())
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.005)


def _terminal_mode(fd: int) -> object:
    try:
        return repr(termios.tcgetattr(fd)) if os.isatty(fd) else None
    except (OSError, termios.error):
        return None


def address_space_size() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


# --- campaigns --------------------------------------------------------------


# Findings in pyvmm code that is not this harness's to fix, until they are fixed: a
# failure whose text contains a key here is counted under "known bug" instead of
# failing the campaign. Each has a strict xfail test in
# tests/integration/test_guest_fuzz_regressions.py; when that test starts to pass,
# delete its entry here.
KNOWN_BUGS: dict[str, str] = {}


@dataclass
class Failure:
    seed: int
    index: int
    mode: str
    what: str
    detail: str = ""
    mode_options: str = ""  # the --mode options the campaign ran with, if any

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
    smp: int = 0
    exits: int = 0
    rejected: int = 0
    failures: list[Failure] = field(default_factory=list)
    known: Counter[str] = field(default_factory=Counter)  # KNOWN_BUGS seen, by pattern
    stopped: str | None = None  # why the campaign ended early (Ctrl-C, SIGTERM)
    cli: Counter[str] = field(default_factory=Counter)  # `pyvmm boot` runs, by how they ended
    skipped_modes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    slowest: float = 0.0
    address_space_growth: int = 0

    @property
    def guests(self) -> int:
        return sum(self.per_mode.values())

    def add(self, result: CaseResult) -> None:
        mode = result.case.mode.value
        if result.cli_end is not None:
            self.cli[result.cli_end] += 1
        self.per_mode[mode] += 1
        self.smp += result.case.cpus > 1
        self.slowest = max(self.slowest, result.seconds)
        self.exits += result.exits
        kind = "pyvmm boot" if result.cli_end is not None else result.kind  # CLI: see self.cli
        self.rejected += result.rejected is not None
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
            f"guest fuzz, seed {self.seed}: {self.guests} guests in {self.seconds:.1f} s "
            f"({rate:.0f}/s, slowest {self.slowest:.2f} s), {self.smp} with 2 vCPUs, "
            f"{len(self.failures)} failures",
            f"{self.exits} VM exits served ({self.exits / max(self.guests, 1):.0f} per guest); "
            f"address space growth: {self.address_space_growth >> 20} MiB",
        ]
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
        for pattern, seen in self.known.items():
            lines.append(f"known bug, {seen} times: {pattern} ({KNOWN_BUGS[pattern]})")
        for failure in self.failures[:20]:
            lines.append(f"FAIL case {failure.index} ({failure.mode}): {failure.what}")
            lines.append(f"     {failure.reproducer}")
        if len(self.failures) > 20:
            lines.append(f"... and {len(self.failures) - 20} more failures")
        return "\n".join(lines)


def available_modes() -> tuple[tuple[CpuMode, ...], dict[str, str]]:
    """Every entry mode this host's KVM can enter, and why any other is skipped."""
    from tests.integration.helpers import host_keeps_32bit_paging

    if host_keeps_32bit_paging():
        return ALL_MODES, {}
    modes = tuple(mode for mode in ALL_MODES if mode is not CpuMode.PAGED)
    return modes, {"paged": "this host's KVM cannot enter 32-bit paging"}


def warm_up(modes: Iterable[CpuMode], limits: Limits) -> None:
    """Run one trivial guest per mode, so lazy imports and caches are not counted as leaks."""
    for mode in modes:
        run_case(GuestCase(-1, mode, b"\xf4"), limits)


def run_campaign(
    count: int,
    seed: int,
    limits: Limits | None = None,
    start: int = 0,
    modes: tuple[CpuMode, ...] | None = None,
    progress: Callable[[int, Report], None] | None = None,
) -> Report:
    """Run cases start..start+count-1 of `seed`; check the outcome and the host after each."""
    limits = limits or Limits()
    usable, skipped = available_modes()
    options = "".join(f" --mode {mode.value}" for mode in modes or ())
    modes = tuple(mode for mode in (modes or usable) if mode in usable)
    report = Report(seed, options, skipped_modes=skipped)
    warm_up(modes, limits)
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
    baseline = HostState.now()
    for index in indices:
        result = run_case(generate_case(report.seed, index, modes), limits)
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
    lines.append(f"{result.exits} exits, {result.seconds:.3f} s")
    return "\n".join(lines)


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
    warm_up((case.mode,), limits)
    baseline = HostState.now()
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
        return replay_case(generate_case(args.seed, args.case, case_modes), limits, args.verbose)

    def show_progress(index: int, report: Report) -> None:
        done = index - args.start + 1
        if args.verbose or done % 500 == 0:
            print(f"... {done} guests, {len(report.failures)} failures", file=sys.stderr)

    report = run_campaign(args.count, args.seed, limits, args.start, modes, show_progress)
    print(report.summary())
    return 1 if report.failures or report.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
