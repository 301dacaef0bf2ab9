"""The assist layer's glue to a vCPU (pyvmm.arch.x86_64.assist.vcpu), on a fake vCPU: no KVM.

What goes back to KVM: the registers (KVM_SET_REGS) and, for an instruction
that raises an exception, KVM_SET_VCPU_EVENTS with it injected; a memory
operand is read through the guest's page tables; an instruction outside the
table, or a case the table leaves alone, changes nothing.
"""

from __future__ import annotations

from typing import Any

from pyvmm._kvm import ffi
from pyvmm.arch.x86_64.assist.vcpu import assist
from pyvmm.cli.parser import build_parser
from pyvmm.memory.guest_memory import GuestMemory

CODE_GPA = 0x1000


class FakeVcpu:
    """The vCPU ioctls the glue calls, on cffi structs; 64-bit code, paging off."""

    def __init__(self, rip: int = CODE_GPA, bits: int = 64) -> None:
        self.regs = ffi.new("struct kvm_regs *")
        self.regs.rip = rip
        self.regs.rflags = 0x2
        self.sregs = ffi.new("struct kvm_sregs *")
        self.sregs.cr0 = 0x11  # PE, ET: paging off, linear = physical
        if bits == 64:
            self.sregs.efer = 0x500
            self.sregs.cs.l = 1
        else:
            self.sregs.cs.db = 1
        self.sregs.cs.selector = 0x8
        self.xsave = ffi.new("struct kvm_xsave *")
        self.region = ffi.buffer(self.xsave.region)
        self.region[0:2] = (0x37F).to_bytes(2, "little")  # FCW
        self.region[24:28] = (0x1F80).to_bytes(4, "little")  # MXCSR
        self.events = ffi.new("struct kvm_vcpu_events *")
        self.calls: list[str] = []

    def get_regs(self) -> Any:
        copy = ffi.new("struct kvm_regs *")
        copy[0] = self.regs[0]
        return copy

    def set_regs(self, regs: Any) -> None:
        self.calls.append("set_regs")
        self.regs[0] = regs[0]

    def get_sregs(self) -> Any:
        return self.sregs

    def get_xsave(self) -> Any:
        self.calls.append("get_xsave")
        copy = ffi.new("struct kvm_xsave *")
        copy[0] = self.xsave[0]
        return copy

    def set_xsave(self, xsave: Any) -> None:
        self.calls.append("set_xsave")
        self.xsave[0] = xsave[0]

    def get_vcpu_events(self) -> Any:
        copy = ffi.new("struct kvm_vcpu_events *")
        copy[0] = self.events[0]
        return copy

    def set_vcpu_events(self, events: Any) -> None:
        self.calls.append("set_vcpu_events")
        self.events[0] = events[0]


def test_int3_moves_rip_and_injects_bp() -> None:
    vcpu = FakeVcpu(rip=0x4000)
    result = assist(vcpu, b"\xcc\x90\x90", None)
    assert result.performed and result.mnemonic == "int3"
    assert vcpu.regs.rip == 0x4001
    assert vcpu.calls == ["set_regs", "set_vcpu_events"]
    exception = vcpu.events.exception
    assert (exception.injected, exception.nr, exception.has_error_code) == (1, 3, 0)


def test_popcnt_reads_its_operand_through_guest_memory() -> None:
    memory = _memory()
    code = bytes.fromhex("f3480fb80425") + (0x2000).to_bytes(4, "little")  # popcnt rax, [0x2000]
    memory.write(CODE_GPA, code)
    memory.write(0x2000, (0xFF00FF).to_bytes(8, "little"))
    vcpu = FakeVcpu()
    vcpu.regs.rflags = 0x8D7
    # No bytes from KVM: the glue fetches them at RIP too.
    result = assist(vcpu, b"", memory)
    assert result.performed and result.mnemonic == "popcnt"
    assert vcpu.regs.rax == 16 and vcpu.regs.rflags == 0x2
    assert vcpu.regs.rip == CODE_GPA + len(code)
    assert vcpu.calls == ["set_regs"]


def test_popcnt_on_memory_outside_ram_is_left_alone() -> None:
    memory = _memory()
    vcpu = FakeVcpu()
    vcpu.regs.rbx = 0xD000_0000  # the MMIO hole: no RAM there
    result = assist(vcpu, bytes.fromhex("f3480fb803"), memory)  # popcnt rax, [rbx]
    assert not result.performed and result.mnemonic == "popcnt"
    assert "is not guest RAM" in result.reason
    assert vcpu.calls == []


def test_wait_reads_the_x87_state_and_injects_mf() -> None:
    vcpu = FakeVcpu(bits=32)
    vcpu.sregs.cr0 = 0x31  # PE, ET, NE
    vcpu.region[0:4] = bytes.fromhex("7e038100")  # FCW 0x37e: IE unmasked; FSW 0x81: pending
    result = assist(vcpu, b"\x9b", None)
    assert result.performed
    assert vcpu.regs.rip == CODE_GPA  # a fault: at the instruction
    assert vcpu.events.exception.nr == 16
    assert vcpu.calls == ["get_xsave", "set_regs", "set_vcpu_events"]


def test_sse_state_goes_through_xsave() -> None:
    """MXCSR and the XMM registers are read from and written to the XSAVE image's legacy
    region (KVM_GET_FPU has no MXCSR), with XSTATE_BV's x87 and SSE bits set."""
    memory = _memory()
    memory.write(0x2000, (0x7F80).to_bytes(4, "little"))
    vcpu = FakeVcpu()
    vcpu.sregs.cr0 = 0x13  # PE, MP, ET
    vcpu.sregs.cr4 = 0x600  # OSFXSR, OSXMMEXCPT
    vcpu.regs.rbx = 0x2000
    result = assist(vcpu, bytes.fromhex("0fae13"), memory)  # ldmxcsr [rbx]
    assert result.performed
    assert int.from_bytes(vcpu.region[24:28], "little") == 0x7F80
    assert int.from_bytes(vcpu.region[512:520], "little") & 3 == 3
    assert vcpu.calls == ["get_xsave", "set_xsave", "set_regs"]
    vcpu.regs.rax = 0x1122334455667788
    vcpu.calls.clear()
    assert assist(vcpu, bytes.fromhex("66480f6ed8"), memory).performed  # movq xmm3, rax
    assert vcpu.region[160 + 48 : 160 + 64] == bytes.fromhex("8877665544332211") + bytes(8)
    vcpu.regs.rbx = 0x3000
    assert assist(vcpu, bytes.fromhex("0fae5b04"), memory).performed  # stmxcsr [rbx + 4]
    assert memory.read(0x3004, 4) == (0x7F80).to_bytes(4, "little")


def test_a_store_to_a_read_only_page_is_left_alone() -> None:
    """With paging on and CR0.WP set the CPU would raise #PF: pyvmm stores nothing."""
    from pyvmm.arch.x86_64.paging import ENTRY_PRESENT

    memory = _memory()
    # One 4-level table set: linear 0..2 MiB -> physical 0..2 MiB, read-only, 2 MiB page.
    memory.write(0x8000, (0x9000 | ENTRY_PRESENT | 2).to_bytes(8, "little"))  # PML4E: rw
    memory.write(0x9000, (0xA000 | ENTRY_PRESENT | 2).to_bytes(8, "little"))  # PDPTE: rw
    memory.write(0xA000, (0 | ENTRY_PRESENT | 0x80).to_bytes(8, "little"))  # PDE: ro, 2 MiB
    vcpu = FakeVcpu()
    vcpu.sregs.cr0 = 0x8001_0013  # PG, WP, PE, MP, ET
    vcpu.sregs.cr3 = 0x8000
    vcpu.sregs.cr4 = 0x620  # PAE, OSFXSR, OSXMMEXCPT
    vcpu.sregs.efer = 0x500  # LME, LMA
    vcpu.regs.rbx = 0x3000
    result = assist(vcpu, bytes.fromhex("0fae1b"), memory)  # stmxcsr [rbx]
    assert not result.performed and "read-only" in result.reason
    assert memory.read(0x3000, 4) == bytes(4)
    assert "set_regs" not in vcpu.calls


def test_cmpxchg16b_stores_atomically_into_guest_ram() -> None:
    """The store goes through the host's own LOCK CMPXCHG16B on guest RAM: equal, RCX:RBX
    is stored and ZF set; unequal, RDX:RAX gets memory and memory stays."""
    memory = _memory()
    memory.write(0x2000, bytes(range(16)))
    vcpu = FakeVcpu()
    vcpu.regs.rbx, vcpu.regs.rcx = 0x1111, 0x2222
    vcpu.regs.rax = int.from_bytes(bytes(range(8)), "little")
    vcpu.regs.rdx = int.from_bytes(bytes(range(8, 16)), "little")
    vcpu.regs.rdi = 0x2000
    code = bytes.fromhex("f0480fc70f")  # lock cmpxchg16b [rdi]
    assert assist(vcpu, code, memory).performed
    assert memory.read(0x2000, 16) == (0x1111).to_bytes(8, "little") + (0x2222).to_bytes(
        8, "little"
    )
    assert vcpu.regs.rflags & 0x40
    assert assist(vcpu, code, memory).performed  # RDX:RAX no longer matches
    assert not vcpu.regs.rflags & 0x40
    assert (vcpu.regs.rax, vcpu.regs.rdx) == (0x1111, 0x2222)
    assert memory.read(0x2000, 16) == (0x1111).to_bytes(8, "little") + (0x2222).to_bytes(
        8, "little"
    )


def test_an_instruction_outside_the_table_changes_nothing() -> None:
    vcpu = FakeVcpu()
    result = assist(vcpu, bytes.fromhex("d900"), None)  # fld dword ptr [rax]
    assert not result.performed and result.mnemonic is None and result.reason is None
    assert vcpu.calls == []


def test_emulate_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["boot", "guests/hello.bin"]).emulate == "assist"
    assert parser.parse_args(["boot", "--emulate", "none", "guests/hello.bin"]).emulate == "none"


def _memory() -> GuestMemory:
    return GuestMemory.from_ranges([(0, 0x10000)])
