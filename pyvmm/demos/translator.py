"""Run one benchmark kernel under dynamic binary translation: unicorn, QEMU's TCG as a library.

The same bytes as pyvmm.demos.kernels runs natively and in guests
(`benchmarks/kernels/kernels.bin`) are mapped into a unicorn x86-64 machine
at the guest's load address, with the buffer at the guest's BUFFER_GPA and a
stack below the image. A kernel `uint64_t k(uint64_t n, uint64_t base)` is
entered with n in rdi, base in rsi (System V AMD64, as natively) and a
return address that points at an unmapped-free sentinel where the run stops.

Unicorn translates each basic block of guest code into host code the first
time it is reached and keeps the translation in a cache, so a loop is
translated once and then runs as host code, with the translator's checks
(its software MMU for every memory access) around it. That is binary
translation as VMware's first VMM and QEMU do it, minus the privileged
instructions (these kernels have none).

unicorn is an optional dependency (`pip install unicorn`, or pyvmm's
`demos` extra); `TranslatorUnavailable` says so when it is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType

from pyvmm.arch.x86_64 import layout
from pyvmm.demos import kernels
from pyvmm.errors import PyvmmError

INSTALL_HINT = "pip install unicorn (or pyvmm's extra: pip install '.[demos]' in a checkout)"

PAGE = 0x1000
# The stack: 64 KiB ending at the image's load address, as the guest's sits below its code.
STACK_SIZE = 0x1_0000
# Where `ret` from the kernel lands: the run stops there before executing anything.
RETURN_SENTINEL = 0x1000


class TranslatorUnavailable(PyvmmError):
    """The unicorn package is not installed (or not importable) in this Python."""


class TranslatedRunError(PyvmmError):
    """Unicorn stopped a kernel before it returned (an unmapped access, an invalid instruction)."""


@dataclass(frozen=True)
class TranslatedRun:
    """One kernel call under unicorn: its result and the seconds `emu_start` took."""

    result: int
    seconds: float


def load_unicorn() -> ModuleType:
    """The unicorn module; raises TranslatorUnavailable with the install hint."""
    try:
        import unicorn
    except ImportError as error:
        raise TranslatorUnavailable(
            f"the unicorn package is not installed ({error}); install it with: {INSTALL_HINT}"
        ) from None
    return unicorn


def _round_up(size: int) -> int:
    return -(-size // PAGE) * PAGE


def run_translated(kernel: str, n: int) -> TranslatedRun:
    """Call `kernel(n, BUFFER_GPA)` under unicorn in a fresh machine; time the emulation alone.

    Raises TranslatorUnavailable without unicorn, KernelRunError for an unknown
    kernel, TranslatedRunError when the emulation stops early.
    """
    unicorn = load_unicorn()
    from unicorn import x86_const

    image = kernels.load_kernel_image()
    offset = image.offsets.get(kernel)
    if offset is None:
        image.index(kernel)  # raises, naming the kernels there are
        raise AssertionError("unreachable")
    load = layout.HIGH_LOAD_GPA
    emulator = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    emulator.mem_map(RETURN_SENTINEL, PAGE, unicorn.UC_PROT_READ)
    emulator.mem_map(load - STACK_SIZE, STACK_SIZE, unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE)
    emulator.mem_map(load, _round_up(len(image.data)), unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)
    emulator.mem_write(load, image.data)
    buffer = kernels.buffer_size(kernel, n)
    if buffer:
        emulator.mem_map(
            kernels.BUFFER_GPA, _round_up(buffer), unicorn.UC_PROT_READ | unicorn.UC_PROT_WRITE
        )
    stack_top = load - 16  # 16-byte aligned before the call pushed its return address
    emulator.mem_write(stack_top - 8, RETURN_SENTINEL.to_bytes(8, "little"))
    emulator.reg_write(x86_const.UC_X86_REG_RSP, stack_top - 8)
    emulator.reg_write(x86_const.UC_X86_REG_RDI, n)
    emulator.reg_write(x86_const.UC_X86_REG_RSI, kernels.BUFFER_GPA)
    started = time.perf_counter()
    try:
        emulator.emu_start(load + offset, RETURN_SENTINEL)
    except unicorn.UcError as error:
        rip = emulator.reg_read(x86_const.UC_X86_REG_RIP)
        raise TranslatedRunError(
            f"{kernel}({n}) under unicorn stopped at 0x{rip:x}: {error}"
        ) from None
    seconds = time.perf_counter() - started
    rip = emulator.reg_read(x86_const.UC_X86_REG_RIP)
    if rip != RETURN_SENTINEL:
        raise TranslatedRunError(f"{kernel}({n}) under unicorn ended at 0x{rip:x}, not its return")
    return TranslatedRun(emulator.reg_read(x86_const.UC_X86_REG_RAX), seconds)
