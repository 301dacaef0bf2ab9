"""The SYSCALL repair (pyvmm/arch/x86_64/syscall_repair.py), without KVM.

The state is what a kvm_pvm host leaves at the first instruction of the
guest's #PF handler after a CPL3 `syscall`: RIP/RCX/R11 set by KVM, CS/SS
the handler's, RSP at the #PF frame, CR2 = LSTAR. The rewrite must give what
SYSCALL gives on a CPU (Intel SDM vol. 2B, SYSCALL), Linux's selectors.
Then the glue on a fake vCPU over guest memory: where the breakpoint goes,
the step over the handler's first instruction, the breakpoint put back.
"""

from __future__ import annotations

import struct

import pytest

from pyvmm._kvm import ffi, lib
from pyvmm.arch.x86_64.paging import build_identity_map_64
from pyvmm.arch.x86_64.registers import CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME
from pyvmm.arch.x86_64.syscall_repair import (
    FRAME_SIZE,
    MSR_LSTAR,
    MSR_SFMASK,
    MSR_STAR,
    PF_FETCH,
    PF_PRESENT,
    PF_USER,
    PF_WRITE,
    STEP_OVER,
    ExceptionFrame,
    SyscallMsrs,
    SyscallRepair,
    complete_syscall,
    gate_target,
)
from pyvmm.kvm.exits import Debug
from pyvmm.memory.addr import GuestPhysAddr
from pyvmm.memory.guest_memory import GuestMemory

LSTAR = 0xFFFF_FFFF_8180_0040  # entry_SYSCALL_64's kind of address
MSRS = SyscallMsrs(star=0x0023_0010_0000_0000, lstar=LSTAR, sfmask=0x47700)  # Linux's
USER_RSP = 0x7FFC_1234_5670
USER_RFLAGS = 0x246  # IF ZF PF
RETURN_RIP = 0x40_1007  # after the syscall at 0x401005
KSTACK = 0xFFFF_C900_0000_8000
SYSCALL = bytes.fromhex("0f05")  # the two bytes before RCX


def frame_bytes(
    rip: int = LSTAR,
    cs: int = 0x33,
    error: int = PF_PRESENT | PF_USER | PF_FETCH,
    rflags: int = USER_RFLAGS & ~0x47700 | 2,
) -> bytes:
    return struct.pack("<6Q", error, rip, cs, rflags, USER_RSP, 0x2B)


def state(cr2: int = LSTAR) -> tuple[object, object]:
    """The registers at the handler's first instruction, as KVM_GET_REGS/SREGS give them."""
    regs = ffi.new("struct kvm_regs *")
    regs.rip, regs.rsp = 0xFFFF_FFFF_8180_0B20, KSTACK - FRAME_SIZE
    regs.rcx, regs.r11, regs.rax, regs.rdi = RETURN_RIP, USER_RFLAGS, 1, 1
    regs.rflags = 0x2  # the #PF gate cleared IF
    sregs = ffi.new("struct kvm_sregs *")
    sregs.cs.selector, sregs.cs.l, sregs.cs.type, sregs.cs.present = 0x10, 1, 11, 1
    sregs.ss.selector, sregs.ss.type, sregs.ss.present = 0x18, 3, 1
    sregs.cr2, sregs.efer = cr2, 0xD01
    return regs, sregs


def test_a_half_done_syscall_becomes_the_entry_syscall_makes():
    regs, sregs = state()
    repaired = complete_syscall(regs, sregs, MSRS, frame_bytes(), SYSCALL)
    assert repaired is not None
    new_regs, new_sregs = repaired
    assert new_regs.rip == LSTAR
    assert new_regs.rsp == USER_RSP  # SYSCALL leaves RSP alone: the #PF frame is dropped
    assert new_regs.rcx == RETURN_RIP and new_regs.r11 == USER_RFLAGS
    assert new_regs.rflags == 0x46  # R11 less SFMASK (IF) with bit 1
    assert (new_regs.rax, new_regs.rdi) == (1, 1)
    cs, ss = new_sregs.cs, new_sregs.ss
    assert (cs.selector, cs.base, cs.limit, cs.type) == (0x10, 0, 0xFFFF_FFFF, 11)
    assert (cs.dpl, cs.s, cs.present, cs.l, cs.db, cs.g) == (0, 1, 1, 1, 0, 1)
    assert (ss.selector, ss.base, ss.limit, ss.type) == (0x18, 0, 0xFFFF_FFFF, 3)
    assert (ss.dpl, ss.s, ss.present, ss.l, ss.db, ss.g) == (0, 1, 1, 0, 1, 1)
    # Inputs stay as they were: a pure function.
    assert regs.rsp == KSTACK - FRAME_SIZE and sregs.cs.selector == 0x10 and regs.rip != LSTAR


def test_cs_and_ss_come_from_star():
    regs, sregs = state()
    msrs = SyscallMsrs(star=0x001B_0008_0000_0000 | 3 << 32, lstar=LSTAR, sfmask=0)
    new_regs, new_sregs = complete_syscall(regs, sregs, msrs, frame_bytes(), SYSCALL)
    assert new_sregs.cs.selector == 0x08  # STAR[47:32] with the RPL bits cleared
    assert new_sregs.ss.selector == 0x13  # STAR[47:32] + 8, as the CPU takes it
    assert new_regs.rflags == USER_RFLAGS  # nothing masked


def test_rf_never_survives():
    regs, sregs = state()
    regs.r11 = USER_RFLAGS | 1 << 16
    new_regs, _ = complete_syscall(regs, sregs, MSRS, frame_bytes(), SYSCALL)
    assert not new_regs.rflags & 1 << 16


@pytest.mark.parametrize(
    ("why", "frame", "cr2"),
    [
        ("a kernel fault", frame_bytes(cs=0x10), LSTAR),
        ("a user fault elsewhere", frame_bytes(rip=0x401000), LSTAR),
        ("CR2 not LSTAR", frame_bytes(), 0x1000),
        ("a write", frame_bytes(error=PF_PRESENT | PF_USER | PF_WRITE), LSTAR),
        ("a kernel-mode access", frame_bytes(error=PF_PRESENT | PF_FETCH), LSTAR),
    ],
)
def test_other_page_faults_are_left_to_the_guest(why, frame, cr2):
    regs, sregs = state(cr2)
    assert complete_syscall(regs, sregs, MSRS, frame, SYSCALL) is None, why


def test_a_jump_to_lstar_is_no_system_call():
    # RCX does not follow a `syscall` (or cannot be read): the guest gets its #PF, as on a CPU.
    regs, sregs = state()
    assert complete_syscall(regs, sregs, MSRS, frame_bytes(), bytes.fromhex("ffe0")) is None
    assert complete_syscall(regs, sregs, MSRS, frame_bytes(), None) is None


def test_no_lstar_no_repair():
    regs, sregs = state(cr2=0)
    msrs = SyscallMsrs(star=MSRS.star, lstar=0, sfmask=0)
    assert complete_syscall(regs, sregs, msrs, frame_bytes(rip=0), SYSCALL) is None


def test_frame_fields_in_push_order():
    frame = ExceptionFrame.from_bytes(frame_bytes() + b"\xff" * 8)
    assert frame == ExceptionFrame(
        PF_PRESENT | PF_USER | PF_FETCH, LSTAR, 0x33, USER_RFLAGS & ~0x47700 | 2, USER_RSP, 0x2B
    )
    with pytest.raises(ValueError, match="48 bytes"):
        ExceptionFrame.from_bytes(bytes(40))


def gate(target: int, type_attributes: int = 0x8E) -> bytes:
    return struct.pack(
        "<HHBBHII", target & 0xFFFF, 0x10, 0, type_attributes, target >> 16 & 0xFFFF,
        target >> 32, 0,
    )  # fmt: skip


def test_gate_target():
    assert gate_target(gate(0xFFFF_FFFF_8180_0B20)) == 0xFFFF_FFFF_8180_0B20
    assert gate_target(gate(0x1234_5678, 0x8F)) == 0x1234_5678  # a trap gate
    assert gate_target(gate(0x1234_5678, 0x0E)) is None  # not present
    assert gate_target(gate(0x1234_5678, 0x85)) is None  # a task gate


def test_step_over_table_is_what_capstone_says():
    capstone = pytest.importorskip("capstone")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for code in STEP_OVER:
        insns = list(md.disasm(code + b"\xcc", 0))
        assert insns[0].size == len(code), code.hex()
        assert insns[0].mnemonic in ("endbr64", "nop", "cld", "clac"), code.hex()


# --- the glue on a vCPU: a fake one over guest memory, the guest's page tables -------------

PML4_GPA = 0x1000
IDT_GPA = 0x8000
HANDLER = 0x20_0000  # the #PF handler
OTHER_HANDLER = 0x20_1000
ENTRY = 0x30_0000  # LSTAR
USER_CODE = 0x10_0000  # where the user's `syscall` is
FRAME_GPA = 0x7_0000 - FRAME_SIZE


class FakeVcpu:
    """The ioctls the repair calls, on registers kept here."""

    def __init__(self, msrs: dict[int, int]) -> None:
        self.regs = ffi.new("struct kvm_regs *")
        self.sregs = ffi.new("struct kvm_sregs *")
        self.msrs = msrs
        self.debug: list[tuple[int, tuple[int, ...]]] = []

    def get_regs(self):
        copy = ffi.new("struct kvm_regs *")
        copy[0] = self.regs[0]
        return copy

    def set_regs(self, regs) -> None:
        self.regs[0] = regs[0]

    def get_sregs(self):
        copy = ffi.new("struct kvm_sregs *")
        copy[0] = self.sregs[0]
        return copy

    def set_sregs(self, sregs) -> None:
        self.sregs[0] = sregs[0]

    def get_msrs(self, msrs) -> int:
        for index in range(msrs.nmsrs):
            msrs.entries[index].data = self.msrs.get(msrs.entries[index].index, 0)
        return msrs.nmsrs

    def set_guest_debug(self, control: int, debugregs: tuple[int, ...] = ()) -> None:
        self.debug.append((control, tuple(debugregs)))


@pytest.fixture
def machine():
    memory = GuestMemory.from_ranges([(0, 4 << 20)])
    build_identity_map_64(memory, GuestPhysAddr(PML4_GPA))
    memory.write(IDT_GPA + 14 * 16, gate(HANDLER))
    memory.write(HANDLER, bytes.fromhex("f30f1efa"))  # endbr64
    memory.write(OTHER_HANDLER, bytes.fromhex("50"))  # push rax: stepped
    memory.write(USER_CODE, bytes.fromhex("0f05"))
    vcpu = FakeVcpu({MSR_STAR: MSRS.star, MSR_LSTAR: ENTRY, MSR_SFMASK: MSRS.sfmask})
    sregs = vcpu.sregs
    sregs.cr0, sregs.cr3, sregs.cr4 = CR0_PE | CR0_PG, PML4_GPA, CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA | 1  # SCE
    sregs.idt.base, sregs.idt.limit = IDT_GPA, 256 * 16 - 1
    sregs.cs.selector, sregs.cs.l = 0x10, 1
    yield SyscallRepair(vcpu, memory), vcpu, memory
    memory.close()


def hit(vcpu: FakeVcpu, memory, frame: bytes, cr2: int, handler: int = HANDLER):
    """The vCPU at the #PF handler's first instruction with `frame` on its stack."""
    memory.write(FRAME_GPA, frame)
    vcpu.regs.rip, vcpu.regs.rsp = handler, FRAME_GPA
    vcpu.regs.rcx, vcpu.regs.r11 = USER_CODE + 2, USER_RFLAGS
    vcpu.sregs.cr2 = cr2
    return Debug(exception=1, pc=handler, dr6=1, dr7=1)


def test_the_breakpoint_goes_on_the_pf_handler_once_syscall_is_set_up(machine):
    repair, vcpu, _ = machine
    vcpu.sregs.efer &= ~1  # no SCE yet
    repair.look()
    assert vcpu.debug == [] and not repair.armed
    vcpu.sregs.efer |= 1
    repair.look()
    control = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
    assert vcpu.debug == [(control, (HANDLER, 0, 0, 0, 0, 0, 0, 1))]
    repair.look()  # nothing moved: nothing set again
    assert len(vcpu.debug) == 1


def test_a_half_done_syscall_is_completed_on_the_vcpu(machine):
    repair, vcpu, memory = machine
    repair.look()
    frame = struct.pack("<6Q", PF_PRESENT | PF_USER | PF_FETCH, ENTRY, 0x33, 0x46, USER_RSP, 0x2B)
    assert repair.on_debug(hit(vcpu, memory, frame, cr2=ENTRY))
    assert (vcpu.regs.rip, vcpu.regs.rsp, vcpu.regs.rflags) == (ENTRY, USER_RSP, 0x46)
    assert (vcpu.sregs.cs.selector, vcpu.sregs.ss.selector) == (0x10, 0x18)
    assert repair.count == 1


def test_another_pf_goes_on_past_the_handlers_first_instruction(machine):
    repair, vcpu, memory = machine
    repair.look()
    frame = struct.pack("<6Q", PF_PRESENT | PF_WRITE, 0x1234, 0x10, 2, KSTACK, 0x18)
    # endbr64: performed, one exit.
    assert repair.on_debug(hit(vcpu, memory, frame, cr2=0x5000))
    assert vcpu.regs.rip == HANDLER + 4 and not repair.stepping and repair.count == 0
    # The guest moves its handler to one that starts with `push rax`: one single step.
    memory.write(IDT_GPA + 14 * 16, gate(OTHER_HANDLER))
    repair.look()
    assert vcpu.debug[-1][1][0] == OTHER_HANDLER
    assert repair.on_debug(hit(vcpu, memory, frame, cr2=0x5000, handler=OTHER_HANDLER))
    assert repair.stepping and vcpu.regs.rip == OTHER_HANDLER
    assert vcpu.debug[-1] == (lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP, ())
    repair.look()  # no look while stepping: the step must not be lost
    assert vcpu.debug[-1][0] & lib.KVM_GUESTDBG_SINGLESTEP
    assert repair.on_debug(Debug(exception=1, pc=OTHER_HANDLER + 1, dr6=1 << 14, dr7=0))
    assert not repair.stepping and vcpu.debug[-1][1][0] == OTHER_HANDLER  # armed again


def test_a_breakpoint_elsewhere_is_not_the_repairs(machine):
    repair, _, _ = machine
    repair.look()
    assert not repair.on_debug(Debug(exception=1, pc=0x4000, dr6=1, dr7=1))
    repair.stop()
    repair.handler = None
    repair.look()
    assert not repair.armed  # a debugger owns the debug registers


@pytest.mark.parametrize("rcx", [0, 1, (1 << 64) - 1])
def test_a_user_fault_whose_rcx_leaves_no_room_for_a_syscall_is_left_alone(machine, rcx):
    """A user #PF at LSTAR with RCX 0 or 1: the 2 bytes before RCX wrap past 2^64 (or past 0).
    No syscall instruction can be there: the fault stays the guest's, nothing raises."""
    repair, vcpu, memory = machine
    repair.look()
    frame = struct.pack("<6Q", PF_PRESENT | PF_USER | PF_FETCH, ENTRY, 0x33, 0x46, USER_RSP, 0x2B)
    debug = hit(vcpu, memory, frame, cr2=ENTRY)
    vcpu.regs.rcx = rcx
    assert repair.on_debug(debug)
    assert repair.count == 0 and vcpu.regs.rip == HANDLER + 4  # stepped over, not repaired
