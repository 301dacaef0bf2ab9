"""Guest fuzz cases: what runs (image, registers, machine options), drawn from (seed, index).

A case is its image from guest_code.py plus random changes to the entry
registers and sregs, the RAM size, the vCPU count (1 up to pyvmm's ceiling),
host input and observer; each case draws from its own generator, so any case
re-runs alone. A case of the virtio kind is a user-mode guest that drives the
virtio devices with hostile virtqueues, planned by guest_virtio.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MAX_CPUS
from tests.fuzz.guest_code import (
    CR0_BITS,
    CR4_BITS,
    EFER_BITS,
    RFLAGS_ARITHMETIC,
    RFLAGS_DF,
    RFLAGS_IF,
    RFLAGS_RARE,
    RFLAGS_TF,
    SELECTORS,
    Asm,
    Context,
    Tweak,
    add_interrupt_table,
    add_page_tables,
    generate_code,
    pick_gpa,
    pick_value,
    snippet_start_cpu,
)
from tests.fuzz.guest_virtio import VirtioSetup, plan_case

MIB = 1 << 20
RAM_SIZE = 16 * MIB
# Now and then the smallest RAM pyvmm takes, or enough to reach past the 32-bit
# MMIO hole into a second slot above 4 GiB (mapped lazily: it costs nothing).
RAM_SIZES = (  # (size, weight)
    (RAM_SIZE, 8),
    (layout.MIN_RAM_SIZE, 1),
    (layout.MMIO_GAP_START + RAM_SIZE, 1),
)
ALL_MODES = (CpuMode.REAL, CpuMode.PROTECTED, CpuMode.PAGED, CpuMode.LONG, CpuMode.USER)
# The vCPU count: one most of the time; of the others, mostly a few, now and then
# many, up to the most pyvmm runs (each a thread: a case at the ceiling costs
# about 0.2 s here to build and stop, whatever the guest does).
SMP_SHARE = 0.06
SMP_COUNTS = ((2, 45), (3, 15), (4, 10), (8, 15), (0, 15))  # (count, weight); 0: many


def pick_cpus(rng: random.Random) -> int:
    """1, or 2 to MAX_CPUS vCPUs: small counts often, large ones rarely, the ceiling itself too."""
    if rng.random() >= SMP_SHARE:
        return 1
    counts, weights = zip(*SMP_COUNTS, strict=True)
    count = rng.choices(counts, weights)[0]
    if count == 0:
        count = MAX_CPUS if rng.random() < 0.5 else rng.randrange(9, MAX_CPUS + 1)
    return count


# --- registers --------------------------------------------------------------

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", *(f"r{n}" for n in range(8, 16)))
SEGMENTS = ("ds", "es", "fs", "gs", "ss")


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
    irqchip: bool | str | None = None  # MachineConfig's: None split, "on" KVM's, False none
    ram_size: int = RAM_SIZE
    # Bytes waiting on COM1's receive side (None: no host input, as without a stdin).
    console_input: bytes | None = None
    # Who watches the exits: "" none, or "text"/"json" (--trace), "stats", "both".
    observer: str = ""
    # Run as `pyvmm boot` in a child process whose stdin is a pseudo-terminal (the
    # registers are then pyvmm's own: the command line cannot set them).
    via_cli: bool = False
    # A case of the virtio kind: the machine's virtio devices, its disk and the
    # script the guest runs against them (guest_virtio.py); None for the code kind.
    virtio: VirtioSetup | None = None


# Of the cases, those run as `pyvmm boot`: each costs a Python start-up.
CLI_SHARE = 0.03
OBSERVERS = ("", "", "", "", "text", "json", "stats", "both")


def case_random(seed: int, index: int) -> random.Random:
    """The case's own generator: any case re-runs alone."""
    return random.Random(f"pyvmm-guest-fuzz:{seed}:{index}")


# What a case is about: "code" (random code and registers, in every mode) or
# "virtio" (a user-mode guest that drives the virtio devices with hostile rings).
KINDS = ("code", "virtio")


def generate_case(
    seed: int, index: int, modes: tuple[CpuMode, ...], kind: str = "code"
) -> GuestCase:
    """Case `index` of campaign `seed`: the same on every run (for the same `modes` and
    `kind`; a virtio case is always in user mode, whatever `modes` says)."""
    if kind == "virtio":
        return generate_virtio_case(seed, index)
    rng = case_random(seed, index)
    mode = rng.choice(modes)
    sizes, weights = zip(*RAM_SIZES, strict=True)
    ram_size = rng.choices(sizes, weights)[0]
    ctx = Context(mode, default_load_gpa(mode), ram_size)
    cpus = pick_cpus(rng)
    # The split irqchip is the default; KVM's whole one now and then; one vCPU may go
    # without (hlt then exits).
    draw = rng.random()
    irqchip: bool | str | None = None
    if cpus == 1 and draw < 0.05:
        irqchip = False
    elif draw > 0.8:
        irqchip = "on"
    image = generate_code(rng, ctx)
    if cpus > 1 and rng.random() < 0.5:  # wake the other vCPUs first, then go on
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


def generate_virtio_case(seed: int, index: int) -> GuestCase:
    """Case `index` of campaign `seed` of the virtio kind (guest_virtio.py)."""
    plan = plan_case(seed, index)
    return GuestCase(
        index,
        CpuMode.USER,
        plan.image,
        ram_size=plan.ram_size,
        console_input=plan.console_input,
        via_cli=plan.via_cli,
        virtio=plan.setup,
    )
