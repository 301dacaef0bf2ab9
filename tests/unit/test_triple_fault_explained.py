"""A triple fault caused by the host's missing 32-bit paging is named (no KVM needed)."""

from __future__ import annotations

from typing import Any

import pytest

from pyvmm._kvm import ffi
from pyvmm.arch.x86_64.triple_fault import explain_triple_fault
from pyvmm.memory.guest_memory import GuestMemory

RIP = 0x10_0070
MOV_CR0_EAX = b"\x0f\x22\xc0"
BACKEND = "kvm_pvm (software, no VT-x/AMD-V)"


@pytest.fixture
def memory() -> Any:
    with GuestMemory.from_ranges([(0, 2 << 20)]) as guest_memory:
        yield guest_memory


def state(eax: int, cr0: int = 0x60000011, efer: int = 0) -> tuple[Any, Any]:
    regs = ffi.new("struct kvm_regs *")
    regs.rip, regs.rax = RIP, eax
    sregs = ffi.new("struct kvm_sregs *")
    sregs.cr0, sregs.efer = cr0, efer
    sregs.cs.db, sregs.cs.limit = 1, 0xFFFF_FFFF
    return regs, sregs


def explain(memory: GuestMemory, code: bytes, eax: int, keeps: bool, **kwargs: int) -> str | None:
    memory.write(RIP, code)
    regs, sregs = state(eax, **kwargs)
    return explain_triple_fault(regs, sregs, memory, lambda: keeps, BACKEND)


def test_turning_on_32_bit_paging_where_the_host_cannot_is_named(memory: GuestMemory) -> None:
    why = explain(memory, MOV_CR0_EAX, 0xE000_0011, keeps=False)
    assert why is not None
    assert why.startswith("at 'mov cr0, eax' (CR0 0xe0000011), which turns on 32-bit paging")
    assert BACKEND in why


@pytest.mark.parametrize(
    ("code", "eax", "keeps", "kwargs"),
    [
        (MOV_CR0_EAX, 0xE000_0011, True, {}),  # the host runs 32-bit paging: not the cause
        (MOV_CR0_EAX, 0x6000_0011, False, {}),  # CR0.PG stays clear
        (b"\x0f\x0b", 0xE000_0011, False, {}),  # ud2: some other fault
        (MOV_CR0_EAX, 0xE000_0011, False, {"efer": 0x100}),  # LME: long mode's paging
        (MOV_CR0_EAX, 0xE000_0011, False, {"cr0": 0x10}),  # real mode
    ],
)
def test_no_explanation_is_guessed(
    memory: GuestMemory, code: bytes, eax: int, keeps: bool, kwargs: dict[str, int]
) -> None:
    assert explain(memory, code, eax, keeps, **kwargs) is None
