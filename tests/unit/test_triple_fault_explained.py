"""A triple fault caused by the host's missing 32-bit paging, or by a missing IDT, is named
(no KVM needed)."""

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


# An IDT of 256 8-byte gates: the guest has one (the no-IDT explanation does not apply).
IDT_LIMIT = 0x7FF


def state(
    eax: int, cr0: int = 0x60000011, efer: int = 0, idt_limit: int = IDT_LIMIT
) -> tuple[Any, Any]:
    regs = ffi.new("struct kvm_regs *")
    regs.rip, regs.rax = RIP, eax
    sregs = ffi.new("struct kvm_sregs *")
    sregs.cr0, sregs.efer = cr0, efer
    sregs.cs.db, sregs.cs.limit = 1, 0xFFFF_FFFF
    sregs.idt.limit = idt_limit
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


# --- no IDT: pyvmm's entry state, in which any exception ends in a triple fault ---

UD2 = b"\x0f\x0b"
MOVSD_XMM0 = b"\xf2\x0f\x10\x00"  # movsd xmm0, qword ptr [eax]: what gcc emits for a double
NO_IDT = "with no IDT (IDTR limit 0), so any exception ends in a triple fault"


def test_no_idt_is_said_with_the_instruction_at_rip(memory: GuestMemory) -> None:
    why = explain(memory, UD2, 0, keeps=True, idt_limit=0)
    assert why == f"{NO_IDT}; at RIP: 'ud2'"


def test_no_idt_in_long_mode_reads_the_code_through_the_guests_page_tables(
    memory: GuestMemory,
) -> None:
    from pyvmm.arch.x86_64.paging import build_identity_map_64
    from pyvmm.memory.addr import GuestPhysAddr

    build_identity_map_64(memory, GuestPhysAddr(0x1000))
    memory.write(RIP, UD2)
    regs, sregs = state(0, cr0=0xE0000011, efer=0x500, idt_limit=0)
    sregs.cr3, sregs.cr4 = 0x1000, 0x20
    sregs.cs.l, sregs.cs.db = 1, 0
    why = explain_triple_fault(regs, sregs, memory, lambda: True, BACKEND)
    assert why == f"{NO_IDT}; at RIP: 'ud2'"


def test_no_idt_with_an_sse_instruction_says_that_sse_is_off(memory: GuestMemory) -> None:
    why = explain(memory, MOVSD_XMM0, 0, keeps=True, idt_limit=0)
    assert why is not None
    assert why.startswith(f"{NO_IDT}; at RIP: 'movsd xmm0, qword ptr [eax]': it uses SSE")
    assert "SSE is off (CR4.OSFXSR=0" in why
    assert "-mgeneral-regs-only" in why


def test_no_idt_without_a_decodable_instruction_says_only_that(memory: GuestMemory) -> None:
    # Code past the end of RAM: nothing to decode, no instruction named.
    regs, sregs = state(0, idt_limit=0)
    regs.rip = (2 << 20) + 0x100
    assert explain_triple_fault(regs, sregs, memory, lambda: True, BACKEND) == NO_IDT


def test_the_host_cause_comes_before_the_missing_idt(memory: GuestMemory) -> None:
    why = explain(memory, MOV_CR0_EAX, 0xE000_0011, keeps=False, idt_limit=0)
    assert why is not None and why.startswith("at 'mov cr0, eax'")


def test_a_real_mode_triple_fault_gets_no_idt_explanation(memory: GuestMemory) -> None:
    # In real mode IDTR points at the IVT; some backends do not check its limit.
    assert explain(memory, UD2, 0, keeps=True, cr0=0x60000010, idt_limit=0) is None
