"""Emulation-failure reports: the instruction KVM could not run, and where, without KVM."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pyvmm._kvm import ffi, lib
from pyvmm.arch.x86_64.emulation_failure import describe_internal_error, suberror_name
from pyvmm.arch.x86_64.paging import ENTRY_PRESENT, build_identity_map_64
from pyvmm.arch.x86_64.registers import CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME
from pyvmm.kvm.exits import InternalError, decode
from pyvmm.memory.addr import GuestPhysAddr
from pyvmm.memory.guest_memory import GuestMemory

EMULATION = lib.KVM_INTERNAL_ERROR_EMULATION
PML4_GPA = 0x1000
FXSAVE_RAX = b"\x0f\xae\x00"
FLDS_RAX = b"\xd9\x00"


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    """RAM at [0, 2 MiB) and [3 MiB, 4 MiB): nothing at [2 MiB, 3 MiB)."""
    memory = GuestMemory.from_ranges([(0, 2 << 20), (3 << 20, 1 << 20)])
    yield memory
    memory.close()


def regs_at(rip: int) -> Any:
    regs = ffi.new("struct kvm_regs *")
    regs.rip = rip
    return regs


def real_mode(cs_selector: int = 0) -> Any:
    sregs = ffi.new("struct kvm_sregs *")
    sregs.cs.selector = cs_selector
    sregs.cs.base = cs_selector << 4
    return sregs


def protected_mode(cs_base: int = 0) -> Any:
    sregs = ffi.new("struct kvm_sregs *")
    sregs.cr0 = CR0_PE
    sregs.cs.selector, sregs.cs.base, sregs.cs.db = 0x08, cs_base, 1
    return sregs


def long_mode(cr3: int = PML4_GPA) -> Any:
    sregs = ffi.new("struct kvm_sregs *")
    sregs.cr0, sregs.cr3, sregs.cr4 = CR0_PE | CR0_PG, cr3, CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    sregs.cs.selector, sregs.cs.l = 0x08, 1
    return sregs


def emulation_failure(insn_bytes: bytes = b"") -> InternalError:
    return InternalError(EMULATION, (), insn_bytes)


# --- bytes given by KVM -----------------------------------------------------------------


def test_bytes_given_in_64bit_code() -> None:
    text = describe_internal_error(
        emulation_failure(FXSAVE_RAX), regs_at(0x100010), long_mode(), None
    )
    assert text == (
        "KVM could not emulate 'fxsave [rax]' (0f ae 00) at 0008:00100010 "
        "(linear 0x100010) in 64-bit code (KVM_INTERNAL_ERROR_EMULATION)"
    )


def test_bytes_given_in_32bit_code_use_the_cs_base() -> None:
    text = describe_internal_error(
        emulation_failure(FLDS_RAX), regs_at(0x20), protected_mode(cs_base=0x100000), None
    )
    assert text == (
        "KVM could not emulate 'fld dword ptr [eax]' (d9 00) at 0008:00000020 "
        "(linear 0x100020) in 32-bit code (KVM_INTERNAL_ERROR_EMULATION)"
    )


def test_bytes_given_in_16bit_code_show_cs_ip() -> None:
    text = describe_internal_error(
        emulation_failure(b"\xd9\x07"), regs_at(0x000B), real_mode(0x07C0), None
    )
    assert text == (
        "KVM could not emulate 'fld dword ptr [bx]' (d9 07) at 07c0:000b "
        "(linear 0x7c0b) in 16-bit code (KVM_INTERNAL_ERROR_EMULATION)"
    )


def test_the_same_bytes_decode_as_the_guest_mode_says() -> None:
    # b8 imm: a 5-byte mov in 32-bit code, a 3-byte one in 16-bit code.
    code = b"\xb8\x01\x00\x00\x00"
    in32 = describe_internal_error(emulation_failure(code), regs_at(0), protected_mode(), None)
    in16 = describe_internal_error(emulation_failure(code), regs_at(0), real_mode(), None)
    assert "'mov eax, 1' (b8 01 00 00 00)" in in32
    assert "'mov ax, 1' (b8 01 00)" in in16


def test_only_the_first_instruction_of_kvms_fetch_window_is_shown() -> None:
    window = FLDS_RAX + b"\xf4" + bytes(12)  # KVM passes up to 15 bytes
    text = describe_internal_error(emulation_failure(window), regs_at(0x1000), long_mode(), None)
    assert "'fld dword ptr [rax]' (d9 00) at" in text


def test_undecodable_bytes_are_shown_raw() -> None:
    text = describe_internal_error(
        emulation_failure(b"\x06\x90"), regs_at(0x100000), long_mode(), None
    )
    assert text.startswith("KVM could not emulate undecodable bytes (06 90) at 0008:00100000")


def test_bytes_come_from_the_kvm_run_struct() -> None:
    storage = ffi.new("char[]", 4096)
    run = ffi.cast("struct kvm_run *", storage)
    run.exit_reason = lib.KVM_EXIT_INTERNAL_ERROR
    failure = run.emulation_failure
    failure.suberror = EMULATION
    failure.ndata = 3
    failure.flags = lib.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
    failure.insn_size = 15
    failure.insn_bytes[0 : len(FXSAVE_RAX)] = list(FXSAVE_RAX)
    exit = decode(run)
    assert isinstance(exit, InternalError)
    text = describe_internal_error(exit, regs_at(0x100010), long_mode(), None)
    assert "'fxsave [rax]' (0f ae 00)" in text


# --- no bytes from KVM: read them through the guest's page tables -----------------------


def test_missing_bytes_are_read_through_the_guest_page_tables(memory: GuestMemory) -> None:
    build_identity_map_64(memory, GuestPhysAddr(PML4_GPA))
    memory.write(0x100010, FXSAVE_RAX + b"\xf4")
    text = describe_internal_error(emulation_failure(), regs_at(0x100010), long_mode(), memory)
    assert text == (
        "KVM could not emulate 'fxsave [rax]' (0f ae 00, read from guest memory: "
        "KVM gave no bytes) at 0008:00100010 (linear 0x100010) in 64-bit code "
        "(KVM_INTERNAL_ERROR_EMULATION)"
    )


def test_missing_bytes_without_paging_use_the_linear_address(memory: GuestMemory) -> None:
    memory.write(0x7C0B, b"\xd9\x07")
    text = describe_internal_error(emulation_failure(), regs_at(0x000B), real_mode(0x07C0), memory)
    assert "'fld dword ptr [bx]' (d9 07, read from guest memory" in text


def test_an_instruction_cut_off_by_the_end_of_ram_says_so(memory: GuestMemory) -> None:
    end = 2 << 20  # RAM stops here
    memory.write(end - 2, b"\x0f\xae")  # fxsave's third byte would be in the hole
    text = describe_internal_error(emulation_failure(), regs_at(end - 2), protected_mode(), memory)
    assert "undecodable bytes (0f ae, read from guest memory: KVM gave no bytes; " in text
    assert "guest RAM ends after 2 of them)" in text


# --- code that is not in guest RAM ------------------------------------------------------


def test_code_in_a_hole_without_paging_names_the_guest_physical_address(
    memory: GuestMemory,
) -> None:
    text = describe_internal_error(emulation_failure(), regs_at(0x200000), protected_mode(), memory)
    assert text == (
        "KVM could not emulate the instruction at 0008:00200000 (linear 0x200000) in "
        "32-bit code: the code is not in guest RAM, guest-physical 0x200000 has no memory "
        "slot (KVM_INTERNAL_ERROR_EMULATION)"
    )


def test_code_mapped_onto_mmio_names_the_translated_address(memory: GuestMemory) -> None:
    build_identity_map_64(memory, GuestPhysAddr(PML4_GPA))
    text = describe_internal_error(emulation_failure(), regs_at(0xFEE01000), long_mode(), memory)
    assert "0008:fee01000 (linear 0xfee01000) in 64-bit code" in text
    assert "the code is not in guest RAM, guest-physical 0xfee01000 has no memory slot" in text


def test_code_at_an_unmapped_linear_address(memory: GuestMemory) -> None:
    assert not memory.read_u64(PML4_GPA) & ENTRY_PRESENT  # fresh RAM: an empty PML4
    text = describe_internal_error(emulation_failure(), regs_at(0x100000), long_mode(), memory)
    assert "KVM gave no instruction bytes and the code's address does not translate" in text
    assert "(not mapped: PML4E 0 is not present)" in text


def test_without_guest_memory_it_still_says_where() -> None:
    text = describe_internal_error(emulation_failure(), regs_at(0x7C00), real_mode(), None)
    assert text == (
        "KVM could not emulate the instruction at 0000:7c00 (linear 0x7c00) in 16-bit code: "
        "KVM gave no instruction bytes (KVM_INTERNAL_ERROR_EMULATION)"
    )


# --- other suberrors --------------------------------------------------------------------


def test_delivery_event_error_is_named_with_its_data() -> None:
    exit = InternalError(lib.KVM_INTERNAL_ERROR_DELIVERY_EV, (0x80000B0E, 0x31, 0, 0xFEE00000), b"")
    text = describe_internal_error(exit, regs_at(0x100000), long_mode(), None)
    assert text == (
        "KVM internal error KVM_INTERNAL_ERROR_DELIVERY_EV (unexpected VM exit while "
        "delivering an event) at 0008:00100000 (linear 0x100000) in 64-bit code, "
        "data 0x80000b0e 0x31 0x0 0xfee00000"
    )


@pytest.mark.parametrize(
    ("suberror", "name"),
    [
        (lib.KVM_INTERNAL_ERROR_SIMUL_EX, "KVM_INTERNAL_ERROR_SIMUL_EX"),
        (
            lib.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
            "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON",
        ),
        (99, "suberror 99"),
    ],
)
def test_other_suberrors_are_named(suberror: int, name: str) -> None:
    assert suberror_name(suberror) == name
    text = describe_internal_error(InternalError(suberror, (), b""), regs_at(0), real_mode(), None)
    assert text.startswith(f"KVM internal error {name}")
    assert "at 0000:0000 (linear 0x0) in 16-bit code" in text
    assert "data" not in text


# --- what to do instead, where the instruction is one kernels can replace ---------------

IRETD = b"\xcf"
IRETQ = b"\x48\xcf"
INT_0X30 = b"\xcd\x30"


def test_a_kernel_iret_gets_the_32bit_replacement() -> None:
    text = describe_internal_error(emulation_failure(IRETD), regs_at(0x100), protected_mode(), None)
    assert text.endswith(
        "(KVM_INTERNAL_ERROR_EMULATION): this host's KVM emulates kernel (CPL 0) code and "
        "cannot run iret there; return to the same privilege level without it: "
        "`push 8(%esp); popf; ret $8` (EFLAGS from the frame, then EIP, dropping CS and EFLAGS)"
    )


def test_a_64bit_kernel_iretq_gets_the_64bit_replacement() -> None:
    text = describe_internal_error(emulation_failure(IRETQ), regs_at(0x100), long_mode(), None)
    assert "'iretq' (48 cf)" in text
    assert text.endswith(
        "restore RFLAGS with popfq and RSP from the frame, then jump to the saved RIP"
    )


def test_a_kernel_int_n_gets_the_call_replacement() -> None:
    text = describe_internal_error(emulation_failure(INT_0X30), regs_at(0), protected_mode(), None)
    assert "'int 0x30' (cd 30)" in text
    assert "call the handler instead (`pushf; push %cs; call handler`" in text


def test_no_replacement_in_real_mode_or_at_cpl3() -> None:
    assert describe_internal_error(
        emulation_failure(IRETD), regs_at(0), real_mode(), None
    ).endswith("(KVM_INTERNAL_ERROR_EMULATION)")
    user = protected_mode()
    user.cs.selector = 0x1B
    text = describe_internal_error(emulation_failure(IRETD), regs_at(0), user, None)
    assert text.endswith("(KVM_INTERNAL_ERROR_EMULATION)")
