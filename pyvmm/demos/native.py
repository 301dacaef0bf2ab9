"""Run a few bytes of x86-64 machine code directly on the host CPU, and the same in a guest.

The demos compare a guest with "the real machine", so they need the real
machine to execute the very instructions the guest executes. Natively that
is an executable anonymous mapping called through ctypes (System V AMD64:
arguments in rdi and rsi, result in rax). In a guest it is a flat image at
0x100000 that ends through the debug-exit port.

The machine code is written out byte by byte with its assembly beside it;
tests/unit/test_demo_text.py assembles that text with GNU as (when
installed) to keep the two in step.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyvmm.errors import PyvmmError

PAGE_SIZE = mmap.PAGESIZE

# ----------------------------------------------------------------------------
# CPUID: the instruction whose answer is the one thing a VMM must change.

# Shared by host and guest: with the leaf in eax and a 16-byte buffer at rsi,
# run CPUID (subleaf 0) and store eax, ebx, ecx, edx there.
CPUID_STORE = bytes.fromhex(
    "31c9"  # xor    ecx, ecx          subleaf 0
    "0fa2"  # cpuid
    "8906"  # mov    [rsi], eax
    "895e04"  # mov    [rsi+4], ebx
    "894e08"  # mov    [rsi+8], ecx
    "89560c"  # mov    [rsi+12], edx
)

# Host: uint64_t cpuid(uint64_t leaf, uint32_t out[4]). rbx is callee-saved.
NATIVE_CPUID = (
    bytes.fromhex(
        "53"  # push   rbx
        "89f8"  # mov    eax, edi          the leaf
    )
    + CPUID_STORE
    + bytes.fromhex(
        "5b"  # pop    rbx
        "c3"  # ret
    )
)

# Guest: mov eax, imm32 (the leaf); mov esi, imm32 (the buffer's GPA); then CPUID_STORE.
GUEST_MOV_EAX = b"\xb8"
GUEST_MOV_ESI = b"\xbe"
# mov al, 0x2a; out 0xf4, al: the debug-exit port, exit status (0x2a << 1) | 1 = 85.
GUEST_DEBUG_EXIT = bytes.fromhex("b02a" + "e6f4")
GUEST_DEBUG_EXIT_STATUS = 85

# Where the guest stores its CPUID results: 1 MiB above its code, in RAM.
CPUID_RESULTS_GPA = 0x20_0000

# ----------------------------------------------------------------------------
# The loop of guests/user.s: rax = n + (n - 1) + ... + 1.

# add rax, rcx; loop back to the add: two instructions per iteration.
SUM_LOOP_BODY = bytes.fromhex(
    "4801c8"  # 1: add    rax, rcx
    "e2fb"  # loop   1b
)
# Host: uint64_t sum(uint64_t n), the same two instructions between a prologue and ret.
NATIVE_SUM_LOOP = (
    bytes.fromhex(
        "31c0"  # xor    eax, eax
        "4889f9"  # mov    rcx, rdi
    )
    + SUM_LOOP_BODY
    + bytes.fromhex("c3")  # ret
)


class NativeCodeError(PyvmmError):
    """The host would not map machine code executable (W^X policy, seccomp, ...)."""


@dataclass(frozen=True)
class Cpuid:
    eax: int
    ebx: int
    ecx: int
    edx: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Cpuid:
        return cls(*struct.unpack("<4I", data))

    @property
    def vendor_signature(self) -> str:
        """EBX, ECX, EDX as text: a hypervisor's name in leaf 0x40000000."""
        raw = struct.pack("<3I", self.ebx, self.ecx, self.edx).rstrip(b"\0")
        text = raw.decode("ascii", "replace")
        return text if text.isprintable() else raw.hex()

    @property
    def hypervisor_bit(self) -> int:
        """CPUID.1:ECX bit 31, "hypervisor present" (always 0 on bare metal)."""
        return (self.ecx >> 31) & 1

    @property
    def initial_apic_id(self) -> int:
        """CPUID.1:EBX bits 31:24: which (virtual) CPU answered."""
        return self.ebx >> 24


class NativeCode:
    """Machine code in a mapping of this process, made read+exec after the copy."""

    def __init__(self, code: bytes) -> None:
        size = max(PAGE_SIZE, -(-len(code) // PAGE_SIZE) * PAGE_SIZE)
        self._map = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._map.write(code)
        # A ctypes view pins the mapping while it exists; we keep only its address.
        view = ctypes.c_char.from_buffer(self._map)
        self.address = ctypes.addressof(view)
        del view
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(self.address, size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            self._map.close()
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    def function(self, restype: Any, *argtypes: Any) -> Callable[..., Any]:
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.address)

    def close(self) -> None:
        self._map.close()

    def __enter__(self) -> NativeCode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_native_code(code: bytes) -> NativeCode:
    try:
        return NativeCode(code)
    except (OSError, ValueError) as error:
        raise NativeCodeError(f"cannot map machine code executable on this host: {error}") from None


def native_cpuid(leaves: list[int]) -> list[Cpuid]:
    """CPUID of each leaf, executed by this process on the host CPU."""
    with open_native_code(NATIVE_CPUID) as code:
        cpuid = code.function(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p)
        results = []
        for leaf in leaves:
            out = (ctypes.c_uint32 * 4)()
            cpuid(leaf, ctypes.addressof(out))
            results.append(Cpuid(*out))
        return results


def guest_cpuid_image(leaves: list[int]) -> bytes:
    """A flat guest image: CPUID of each leaf into CPUID_RESULTS_GPA + 16 * i, then exit."""
    blocks = [
        GUEST_MOV_EAX
        + struct.pack("<I", leaf)
        + GUEST_MOV_ESI
        + struct.pack("<I", CPUID_RESULTS_GPA + 16 * index)
        + CPUID_STORE
        for index, leaf in enumerate(leaves)
    ]
    return b"".join(blocks) + GUEST_DEBUG_EXIT


def time_native_sum(n: int, repeat: int = 5) -> tuple[int, float]:
    """Run the user.s loop natively: (sum, best time in seconds of `repeat` runs)."""
    with open_native_code(NATIVE_SUM_LOOP) as code:
        loop = code.function(ctypes.c_uint64, ctypes.c_uint64)
        best = float("inf")
        result = 0
        for _ in range(repeat):
            start = time.perf_counter()
            result = loop(n)
            best = min(best, time.perf_counter() - start)
        return result, best
