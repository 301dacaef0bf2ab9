"""An instruction that needs SSE while the guest has SSE off is named with what to do (no KVM)."""

from __future__ import annotations

from typing import Any

import pytest

from pyvmm._kvm import ffi, lib
from pyvmm.arch.x86_64.emulation_failure import describe_internal_error
from pyvmm.arch.x86_64.registers import CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME
from pyvmm.arch.x86_64.sse_state import CR0_EM, CR4_OSFXSR, sse_off_hint, uses_sse_registers
from pyvmm.kvm.exits import InternalError

MOVSD_XMM0 = b"\xf2\x0f\x10\x00"  # movsd xmm0, qword ptr [rax]: gcc's load of a double
FLDS_RAX = b"\xd9\x00"
CR0_MP = 1 << 1


def long_mode(cr0_extra: int = 0, cr4_extra: int = 0) -> Any:
    sregs = ffi.new("struct kvm_sregs *")
    sregs.cr0 = CR0_PE | CR0_PG | cr0_extra
    sregs.cr4 = CR4_PAE | cr4_extra
    sregs.efer = EFER_LME | EFER_LMA
    sregs.cs.selector, sregs.cs.l = 0x08, 1
    return sregs


def describe(code: bytes, sregs: Any) -> str:
    regs = ffi.new("struct kvm_regs *")
    regs.rip = 0x100013
    failure = InternalError(lib.KVM_INTERNAL_ERROR_EMULATION, (), code)
    return describe_internal_error(failure, regs, sregs, None)


def test_an_sse_instruction_with_sse_off_says_why_and_what_to_do() -> None:
    text = describe(MOVSD_XMM0, long_mode())
    assert text.startswith(
        "KVM could not emulate 'movsd xmm0, qword ptr [rax]' (f2 0f 10 00) at 0008:00100013 "
        "(linear 0x100013) in 64-bit code (KVM_INTERNAL_ERROR_EMULATION): it uses SSE "
        "registers, and SSE is off (CR4.OSFXSR=0;"
    )
    assert "-mgeneral-regs-only" in text
    assert "set CR0.MP, CR4.OSFXSR and CR4.OSXMMEXCPT" in text
    assert "'No SSE at entry'" in text


def test_with_sse_on_the_message_stays_as_it_was() -> None:
    text = describe(MOVSD_XMM0, long_mode(cr0_extra=CR0_MP, cr4_extra=CR4_OSFXSR))
    assert text == (
        "KVM could not emulate 'movsd xmm0, qword ptr [rax]' (f2 0f 10 00) at 0008:00100013 "
        "(linear 0x100013) in 64-bit code (KVM_INTERNAL_ERROR_EMULATION)"
    )


def test_cr0_em_is_named_too() -> None:
    text = describe(MOVSD_XMM0, long_mode(cr0_extra=CR0_EM, cr4_extra=CR4_OSFXSR))
    assert "SSE is off (CR0.EM=1;" in text


def test_an_instruction_without_sse_registers_gets_no_hint() -> None:
    assert "SSE" not in describe(FLDS_RAX, long_mode())


@pytest.mark.parametrize(
    ("text", "uses"),
    [
        ("movsd xmm0, qword ptr [rax]", True),
        ("xorps xmm1, xmm0", True),
        ("cvtsi2sd xmm0, eax", True),
        ("movq rax, xmm15", True),
        ("movsd dword ptr es:[rdi], dword ptr [rsi]", False),  # the string move, not SSE
        ("vmovsd xmm0, qword ptr [rax]", False),  # VEX (AVX): XSAVE state, not CR4.OSFXSR
        ("fld dword ptr [rax]", False),
        ("movq mm0, qword ptr [rax]", False),  # MMX
    ],
)
def test_sse_registers_are_recognised_in_the_operands(text: str, uses: bool) -> None:
    assert uses_sse_registers(text) is uses
    assert (sse_off_hint(text, long_mode()) is not None) is uses
