"""The no-BIOS stubs: the table, the IVT it fills, service names, and the trap on plain memory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest

from pyvmm._kvm import ffi
from pyvmm.arch.x86_64 import layout, no_bios
from pyvmm.arch.x86_64.no_bios import (
    NO_BIOS_PORT,
    STUB_SIZE,
    BiosCall,
    NoBiosTrap,
    exception_name,
    far_call_size,
    install,
    ivt_entry,
    service_name,
    software_entry_size,
    stub_offset,
    stub_table,
    vector_of_stub,
)
from pyvmm.devices.bus import Bus
from pyvmm.machine.legacy_pc import attach_no_bios
from pyvmm.machine.outcome import EXIT_UNHANDLED_EXCEPTION, OutcomeKind, RunOutcome
from pyvmm.memory.guest_memory import GuestMemory


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory.from_ranges([(0, 2 << 20)]) as guest_memory:
        yield guest_memory


# --- The table and the IVT.


def test_every_stub_traps_on_the_port_then_returns() -> None:
    table = stub_table()
    assert len(table) == 256 * STUB_SIZE
    for vector in range(256):
        stub = table[stub_offset(vector) : stub_offset(vector) + STUB_SIZE]
        # out %al, $port; iret; nop
        assert stub == bytes([0xE6, NO_BIOS_PORT, 0xCF, 0x90]), vector


def test_ivt_entries_are_offset_then_segment() -> None:
    assert ivt_entry(0x10) == struct.pack("<HH", 0x40, 0xF000)
    assert ivt_entry(0xFF) == struct.pack("<HH", 0x3FC, 0xF000)


def test_the_filled_ivt_read_as_idt_gates_has_none_present(memory: GuestMemory) -> None:
    # A guest that enters protected mode without an IDT of its own reads the IVT
    # as 8-byte gates: each must be not present (P, bit 47), as the empty IVT was.
    install(memory)
    ivt = memory.read(layout.IVT_GPA, layout.IVT_SIZE)
    for gate in range(layout.IVT_SIZE // 8):
        assert not ivt[gate * 8 + 5] & 0x80, gate


@pytest.mark.parametrize("vector", [0, 6, 0x10, 0x13, 0xFF])
def test_the_vector_is_found_from_cs_ip_at_or_after_the_out(vector: int) -> None:
    offset = stub_offset(vector)
    assert vector_of_stub(0xF000, offset) == vector
    assert vector_of_stub(0xF000, offset + 2) == vector  # RIP already past the out


def test_cs_ip_outside_the_stubs_is_no_vector() -> None:
    assert vector_of_stub(0x0000, 0x40) is None
    assert vector_of_stub(0xF000, 256 * STUB_SIZE) is None


def test_install_points_every_empty_vector_at_its_stub(memory: GuestMemory) -> None:
    assert install(memory) == 256
    assert memory.read(layout.NO_BIOS_STUBS_GPA, 256 * STUB_SIZE) == stub_table()
    for vector in range(256):
        offset, segment = struct.unpack("<HH", memory.read(vector * 4, 4))
        assert (segment, offset) == (0xF000, stub_offset(vector))


def test_install_keeps_the_vectors_an_image_set(memory: GuestMemory) -> None:
    memory.write(0x10 * 4, struct.pack("<HH", 0x7C50, 0))
    assert install(memory) == 255
    assert memory.read(0x10 * 4, 4) == struct.pack("<HH", 0x7C50, 0)
    assert memory.read(0x13 * 4, 4) == ivt_entry(0x13)


def test_install_leaves_an_image_that_covers_the_stubs_alone(memory: GuestMemory) -> None:
    memory.write(layout.NO_BIOS_STUBS_GPA + 100, b"\x12\x34")
    assert install(memory) == 0
    assert memory.read(layout.IVT_GPA, layout.IVT_SIZE) == bytes(layout.IVT_SIZE)
    assert memory.read(layout.NO_BIOS_STUBS_GPA + 100, 2) == b"\x12\x34"


def test_install_over_zero_padding_of_a_large_image(memory: GuestMemory) -> None:
    # A padded floppy image loaded at 0x7c00 reaches past 0xf0000 with zeros.
    assert install(memory) == 256


def test_the_memory_map_names_the_port_the_stubs_use() -> None:
    placements = {start: what for start, _, what in layout.vmm_placements("real")}
    assert f"out 0x{NO_BIOS_PORT:x}" in placements[layout.NO_BIOS_STUBS_GPA]
    assert "f000:4n" in placements[layout.IVT_GPA]


# --- Names.


@pytest.mark.parametrize(
    ("vector", "ax", "label"),
    [
        (0x10, 0x0E41, "int 0x10 AH=0x0e (video teletype output)"),
        (0x10, 0x0003, "int 0x10 AH=0x00 (set video mode)"),
        (0x10, 0x4F02, "int 0x10 AX=0x4f02 (VESA set video mode)"),
        (0x10, 0x9900, "int 0x10 AH=0x99 (video service)"),
        (0x13, 0x0201, "int 0x13 AH=0x02 (read disk sectors by CHS)"),
        (0x13, 0x4200, "int 0x13 AH=0x42 (extended read disk sectors by LBA)"),
        (0x15, 0xE820, "int 0x15 AX=0xe820 (query system address map)"),
        (0x15, 0x2401, "int 0x15 AX=0x2401 (enable A20 gate)"),
        (0x16, 0x0000, "int 0x16 AH=0x00 (read keystroke)"),
        (0x1A, 0x0200, "int 0x1a AH=0x02 (read RTC time)"),
        (0x21, 0x0900, "int 0x21 AH=0x09 (MS-DOS write string)"),
        (0x12, 0x1234, "int 0x12 (get conventional memory size)"),
        (0x11, 0x0000, "int 0x11 (get equipment list)"),
        (0x08, 0x0000, "int 0x08 (#DF double fault; IRQ 0, timer on a PC)"),
        (0x80, 0x0000, "int 0x80"),
    ],
)
def test_service_names(vector: int, ax: int, label: str) -> None:
    assert service_name(vector, ax)[0] == label


def test_calls_of_one_service_share_a_key_whatever_al_is() -> None:
    assert service_name(0x10, 0x0E41)[1] == service_name(0x10, 0x0E42)[1] == 0x0E
    assert service_name(0x12, 0x0000)[1] == service_name(0x12, 0xFFFF)[1] is None
    assert service_name(0x15, 0xE820)[1] != service_name(0x15, 0xE801)[1]


@pytest.mark.parametrize(
    ("vector", "name"),
    [
        (0, "#DE (divide error, vector 0)"),
        (6, "#UD (invalid opcode, vector 6)"),
        (13, "#GP (general protection, vector 13; IRQ 5 on a PC)"),
        (8, "#DF (double fault, vector 8; IRQ 0, timer on a PC)"),
        (0x74, "vector 0x74 (IRQ 12 on a PC)"),
        (0x40, "vector 0x40"),
    ],
)
def test_exception_names(vector: int, name: str) -> None:
    assert exception_name(vector) == name


def test_report_line_says_what_happened_and_what_to_do_instead() -> None:
    call = BiosCall("int 0x10 AH=0x0e (video teletype output)", 0x10, "0000:7c16", 21)
    line = call.report_line()
    assert line.startswith("int 0x10 AH=0x0e (video teletype output) at 0000:7c16, 21 times: ")
    assert "pyvmm has no BIOS" in line
    assert "COM1 at port 0x3f8" in line
    assert "'Writing your own guest'" in line
    assert "1 time:" in BiosCall("int 0x12", 0x12, "0000:7c00", 1).report_line()


# --- Telling an `int n` from an exception.


@pytest.mark.parametrize(
    ("before", "vector", "size"),
    [
        (b"\x90\xcd\x10", 0x10, 2),  # int 0x10
        (b"\xcd\x11", 0x10, 0),  # int 0x11 is not vector 0x10
        (b"\x90\xcc", 3, 1),  # int3
        (b"\x90\xce", 4, 1),  # into
        (b"\x90\xf1", 1, 1),  # int1
        (b"\x90\xcc", 6, 0),
        (b"\x0f\x0b", 6, 0),  # what a fault leaves: another instruction
        (b"", 6, 0),
    ],
)
def test_software_interrupts_are_told_by_the_instruction_before(
    before: bytes, vector: int, size: int
) -> None:
    assert software_entry_size(before, vector) == size


def fake_regs(**values: int) -> Any:
    regs = ffi.new("struct kvm_regs *")
    for name, value in values.items():
        setattr(regs, name, value)
    return regs


STUB_10 = (0xF000, stub_offset(0x10))
BASES = {"ds": 0x1000, "es": 0, "ss": 0x2000, "fs": 0, "gs": 0, "cs": 0x7C0 << 4}


def far_pointer_memory(linear: int, target: tuple[int, int]) -> Any:
    pointer = struct.pack("<HH", target[1], target[0])

    def read(address: int, size: int) -> bytes:
        return pointer[:size] if address == linear else bytes(size)

    return read


def test_a_direct_far_call_to_the_stub_is_a_call() -> None:
    before = b"\x90\x9a" + struct.pack("<HH", STUB_10[1], STUB_10[0])
    assert far_call_size(before, STUB_10, fake_regs(), BASES, lambda a, s: b"") == 5
    assert far_call_size(before, (0xF000, 0x44), fake_regs(), BASES, lambda a, s: b"") == 0


def test_an_indirect_far_call_through_a_saved_vector_is_a_call() -> None:
    # lcall *0x1234 (ff 1e 34 12): the pointer at DS:0x1234
    before = b"\x9c\xff\x1e\x34\x12"
    read = far_pointer_memory(0x1000 + 0x1234, STUB_10)
    assert far_call_size(before, STUB_10, fake_regs(), BASES, read) == 4
    # lcall *%cs:0x1234 (2e ff 1e 34 12): the caller's CS
    read = far_pointer_memory((0x7C0 << 4) + 0x1234, STUB_10)
    assert far_call_size(b"\x2e" + before[1:], STUB_10, fake_regs(), BASES, read) == 5
    # lcall *4(%bp) (ff 5e 04): SS-relative
    read = far_pointer_memory(0x2000 + 0x104, STUB_10)
    assert far_call_size(b"\xff\x5e\x04", STUB_10, fake_regs(rbp=0x100), BASES, read) == 3
    # lcall *(%bx) (ff 1f) with a pointer elsewhere: not a call to this stub
    read = far_pointer_memory(0x1000 + 0x50, (0xF000, 0x44))
    assert far_call_size(b"\xff\x1f", STUB_10, fake_regs(rbx=0x50), BASES, read) == 0


def test_a_near_call_is_not_a_far_call() -> None:
    # call *0x1234 (ff 16 34 12) is /2, not /3
    read = far_pointer_memory(0x1000 + 0x1234, STUB_10)
    assert far_call_size(b"\xff\x16\x34\x12", STUB_10, fake_regs(), BASES, read) == 0


# --- The trap, with a vCPU played from plain memory.


class FakeVcpu:
    """Registers as KVM_GET_REGS/KVM_GET_SREGS would give them at the stub's `out`."""

    def __init__(self) -> None:
        self.regs = ffi.new("struct kvm_regs *")
        self.sregs = ffi.new("struct kvm_sregs *")

    def get_regs(self) -> Any:
        return self.regs

    def get_sregs(self) -> Any:
        return self.sregs


def enter_stub(
    memory: GuestMemory, vcpu: FakeVcpu, vector: int, cs: int, return_ip: int, ax: int = 0
) -> None:
    """Put the vCPU at `vector`'s stub, with the frame an interrupt pushes at 0000:7000."""
    sp = 0x7000
    memory.write(sp, struct.pack("<HHH", return_ip, cs, 0x0002))
    vcpu.regs.rsp, vcpu.regs.rip, vcpu.regs.rax = sp, stub_offset(vector), ax
    vcpu.sregs.cs.selector, vcpu.sregs.cs.base = 0xF000, 0xF0000
    vcpu.sregs.ss.selector, vcpu.sregs.ss.base = 0, 0
    vcpu.sregs.cr0 = 0x60000010


def make_trap(memory: GuestMemory) -> tuple[Bus, FakeVcpu, list[RunOutcome]]:
    bus = Bus("pio")
    vcpu = FakeVcpu()
    ended: list[RunOutcome] = []
    assert attach_no_bios(bus, memory, ended.append, lambda: vcpu) is not None
    return bus, vcpu, ended


def test_int_calls_are_counted_by_service_and_return(memory: GuestMemory) -> None:
    bus, vcpu, ended = make_trap(memory)
    memory.write(0x7C10, b"\xcd\x10")  # int 0x10 at 0000:7c10
    memory.write(0x7C20, b"\xcd\x16")  # int 0x16 at 0000:7c20
    for character in b"Hi!":
        enter_stub(memory, vcpu, 0x10, 0, 0x7C12, ax=0x0E00 | character)
        bus.write(NO_BIOS_PORT, 1, 0)
    enter_stub(memory, vcpu, 0x16, 0, 0x7C22, ax=0)
    bus.write(NO_BIOS_PORT, 1, 0)
    assert ended == []
    trap = bus.find(NO_BIOS_PORT)
    assert trap is not None
    calls = {(c.label, c.where, c.count) for c in trap.device.calls.values()}
    assert calls == {
        ("int 0x10 AH=0x0e (video teletype output)", "0000:7c10", 3),
        ("int 0x16 AH=0x00 (read keystroke)", "0000:7c20", 1),
    }


def test_a_fault_on_a_stub_ends_the_run_with_its_name(memory: GuestMemory) -> None:
    bus, vcpu, ended = make_trap(memory)
    memory.write(0x7C0E, b"\x0f\x0b")  # ud2 at 0000:7c0e; the fault pushes its own address
    enter_stub(memory, vcpu, 6, 0, 0x7C0E)
    bus.write(NO_BIOS_PORT, 1, 0)
    [outcome] = ended
    assert outcome.kind is OutcomeKind.UNHANDLED_EXCEPTION
    assert outcome.exit_status == EXIT_UNHANDLED_EXCEPTION == 12
    assert outcome.message.startswith(
        "guest raised #UD (invalid opcode, vector 6) at 0000:7c0e ('ud2') with no handler"
    )
    assert "pyvmm has no BIOS" in outcome.message and "\n" not in outcome.message
    # The registers are the guest's at the fault, not the stub's.
    assert outcome.registers is not None
    assert "RIP=0000000000007c0e" in outcome.registers
    assert "RSP=0000000000007006" in outcome.registers


def test_a_fault_in_a_far_segment_is_located_by_its_cs(memory: GuestMemory) -> None:
    bus, vcpu, ended = make_trap(memory)
    memory.write((0x1234 << 4) + 0x10, b"\x31\xc0\xf7\xf0")  # xor ax, ax; div ax -> #DE
    enter_stub(memory, vcpu, 0, 0x1234, 0x12)
    bus.write(NO_BIOS_PORT, 1, 0)
    [outcome] = ended
    assert "#DE (divide error, vector 0) at 1234:0012 ('div ax')" in outcome.message


def test_a_write_to_the_port_from_elsewhere_is_ignored(memory: GuestMemory) -> None:
    bus, vcpu, ended = make_trap(memory)
    enter_stub(memory, vcpu, 0x10, 0, 0x7C12)
    vcpu.sregs.cs.selector = 0  # the guest's own `out %al, $0xe5` at 0000:0040
    bus.write(NO_BIOS_PORT, 1, 0)
    trap = bus.find(NO_BIOS_PORT)
    assert trap is not None and trap.device.calls == {} and ended == []


def test_kinds_past_the_limit_are_only_counted(memory: GuestMemory) -> None:
    bus, vcpu, _ = make_trap(memory)
    memory.write(0x7C10, b"\xcd\x10")
    for ah in range(no_bios.MAX_KINDS + 5):
        enter_stub(memory, vcpu, 0x10, 0, 0x7C12, ax=ah << 8)
        bus.write(NO_BIOS_PORT, 1, 0)
    trap = bus.find(NO_BIOS_PORT)
    assert trap is not None
    assert len(trap.device.calls) == no_bios.MAX_KINDS and trap.device.uncounted == 5


def test_no_trap_when_the_image_owns_the_stub_area(memory: GuestMemory) -> None:
    memory.write(layout.NO_BIOS_STUBS_GPA, b"\xea")
    bus = Bus("pio")
    assert attach_no_bios(bus, memory, lambda outcome: None, FakeVcpu) is None
    assert bus.find(NO_BIOS_PORT) is None


def test_the_trap_is_a_device_that_reads_as_an_open_bus(memory: GuestMemory) -> None:
    trap = NoBiosTrap(memory, lambda: None, lambda message, registers: None)
    assert trap.read(0, 1) == 0xFF and trap.read(0, 2) == 0xFFFF
    trap.write(0, 1, 0)  # outside a run: nothing to serve
    assert trap.calls == {}
