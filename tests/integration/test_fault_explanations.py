"""A guest fault pyvmm can explain from the registers and memory is explained: no IDT,
an SSE instruction with SSE off."""

from __future__ import annotations

from pyvmm.machine.outcome import EXIT_INTERNAL_ERROR, EXIT_TRIPLE_FAULT
from tests.integration.helpers import guest, run_pyvmm

NO_IDT = "with no IDT (IDTR limit 0), so any exception ends in a triple fault"


def test_a_long_mode_fault_without_an_idt_is_explained() -> None:
    # Before: only "guest triple-faulted (KVM_EXIT_SHUTDOWN)".
    result = run_pyvmm("boot", "--mode", "long", guest("tests/no_idt_ud2.bin"))
    assert result.stdout == "no_idt_ud2: ud2 with no IDT\n"
    assert result.returncode == EXIT_TRIPLE_FAULT
    assert result.stderr.splitlines()[0] == (
        f"pyvmm: guest triple-faulted (KVM_EXIT_SHUTDOWN) {NO_IDT}; at RIP: 'ud2'"
    )


def test_an_sse_instruction_at_entry_says_sse_is_off_and_what_to_do() -> None:
    # Before: "KVM could not emulate 'movsd xmm0, ...' ..." and nothing about SSE.
    result = run_pyvmm("boot", "--mode", "long", guest("tests/sse_at_entry.bin"))
    assert result.stdout == "sse_at_entry: movsd with CR4.OSFXSR=0\n"
    first = result.stderr.splitlines()[0]
    # A KVM that emulates CPL0 code (kvm_pvm) gives up on it; VT-x/AMD-V raise #UD,
    # which with no IDT is a triple fault. Either way the instruction and the cause.
    assert result.returncode in (EXIT_INTERNAL_ERROR, EXIT_TRIPLE_FAULT), result.stderr
    assert "'movsd xmm0, qword ptr [rax]'" in first
    assert "it uses SSE registers, and SSE is off (CR4.OSFXSR=0;" in first
    assert "-mgeneral-regs-only" in first
