"""Guest machine code for the guest fuzzer: random, or chains of snippets that stress a VMM.

An x86 encoder just big enough for the snippets, the values worth using
(ports, MSRs, selectors, control-register bits, addresses), the snippets
themselves, and the interrupt tables and page tables a case may bring along so
that it gets past its first fault.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.gdt import CODE_SELECTOR
from pyvmm.loaders.entry import CpuMode

CODE_BITS = {
    CpuMode.REAL: 16,
    CpuMode.PROTECTED: 32,
    CpuMode.PAGED: 32,
    CpuMode.LONG: 64,
    CpuMode.USER: 64,
}

# One register change: (field, op, value), op "set" or "xor"; fields of sregs
# may be dotted ("idt.base", "ds.limit"). Defined here because an interrupt table
# comes with the IDTR change that points at it.
Tweak = tuple[str, str, int]


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


# --- tables the code may bring along ------------------------------------------

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
