"""The sensitive-instructions demo without KVM: the virtual CPU, the rewriter, the table."""

from __future__ import annotations

import struct

import pytest

from pyvmm.arch.x86_64.gdt import gdt_bytes, user_mode_gdt
from pyvmm.demos import sensitive
from pyvmm.demos.rewriter import HLT, NOP, decoder, rewrite
from pyvmm.demos.virtual_cpu import Memory, NotSensitive, UserState, VirtualCpu, is_sensitive
from pyvmm.shipped import shipped_file

GDT_BASE = 0x500
TSS_GPA = 0x7000


class FlatMemory:
    """A bytearray as guest memory from address 0."""

    def __init__(self, size: int = 0x10000) -> None:
        self.data = bytearray(size)

    def read(self, address: int, size: int) -> bytes:
        return bytes(self.data[address : address + size])

    def write(self, address: int, data: bytes) -> None:
        self.data[address : address + len(data)] = data

    def memory(self) -> Memory:
        return Memory(self.read, self.write)


def machine() -> tuple[VirtualCpu, FlatMemory]:
    ram = FlatMemory()
    table = gdt_bytes(user_mode_gdt(TSS_GPA))
    ram.write(GDT_BASE, table)
    return VirtualCpu(gdt_base=GDT_BASE, gdt_limit=len(table) - 1, cr0=0xE000_0011), ram


def one(assembly: bytes, address: int = 0x1000) -> object:
    return next(decoder().disasm(assembly, address))


def state(**registers: int) -> UserState:
    values = dict.fromkeys(("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp"), 0)
    values.update({f"r{n}": 0 for n in range(8, 16)})
    values["rsp"] = 0x8000
    values.update(registers)
    return UserState(values, 0x1000, 0x202)


def test_selector_checks_follow_the_sdm() -> None:
    cpu, ram = machine()
    memory = ram.memory()
    # Kernel code 0x08: G=1 L=1 limit 19:16=0xf, P=1 DPL=0 S=1 type 0xa.
    assert cpu.check_selector("lar", 0x08, memory) == 0x00AF_9A00
    assert cpu.check_selector("lsl", 0x10, memory) == 0xFFFF_FFFF
    assert cpu.check_selector("verr", 0x08, memory) == 0  # execute/read code: readable
    assert cpu.check_selector("verw", 0x10, memory) == 0  # read/write data
    assert cpu.check_selector("verw", 0x08, memory) is None  # code is never writable
    assert cpu.check_selector("lsl", 0x28, memory) == 0x2000 + 104  # the TSS and its I/O bitmap
    assert cpu.check_selector("verr", 0x28, memory) is None  # a system segment
    for refused in (0x00, 0x04 | 0x08, 0x38, 0x100):  # null, LDT, past the limit
        assert cpu.check_selector("lar", refused, memory) is None
    # At CPL3 (or with RPL 3) the ring-0 segments are refused, the ring-3 ones not.
    assert cpu.check_selector("lar", 0x08 | 3, memory) is None
    cpu.cpl = 3
    assert cpu.check_selector("verr", 0x08, memory) is None
    assert cpu.check_selector("lar", 0x23, memory) == 0x00AF_FA00


def test_lar_and_flags_through_execute() -> None:
    cpu, ram = machine()
    registers = state(rcx=0x08, rax=0x5A5A_5A5A_5A5A_5A5A)
    cpu.execute(one(bytes.fromhex("0f02c1")), registers, ram.memory())  # lar eax, ecx
    assert registers.registers["rax"] == 0x00AF_9A00  # a 32-bit destination zero-extends
    assert registers.rflags & 0x40
    registers.registers["rcx"] = 0x38
    cpu.execute(one(bytes.fromhex("0f03c1")), registers, ram.memory())  # lsl eax, ecx
    assert not registers.rflags & 0x40 and registers.registers["rax"] == 0x00AF_9A00


def test_descriptor_table_registers_and_segments() -> None:
    cpu, ram = machine()
    registers = state(rbx=0x2000, rax=0x5A5A_5A5A_5A5A_5A5A)
    cpu.execute(one(bytes.fromhex("0f014b10")), registers, ram.memory())  # sidt [rbx+0x10]
    cpu.execute(one(bytes.fromhex("0f0103")), registers, ram.memory())  # sgdt [rbx]
    assert struct.unpack_from("<HQ", ram.data, 0x2000) == (0x37, GDT_BASE)
    assert struct.unpack_from("<HQ", ram.data, 0x2010) == (0, 0)
    cpu.execute(one(bytes.fromhex("8cc8")), registers, ram.memory())  # mov eax, cs
    assert registers.registers["rax"] == 0x08
    registers.registers["rax"] = 0x1111_2222_3333_4444
    cpu.execute(one(bytes.fromhex("668cd0")), registers, ram.memory())  # mov ax, ss: merges
    assert registers.registers["rax"] == 0x1111_2222_3333_0010
    cpu.execute(one(bytes.fromhex("480f01e0")), registers, ram.memory())  # smsw rax
    assert registers.registers["rax"] == 0xE000_0011
    assert cpu.performed == {"sidt": 1, "sgdt": 1, "mov": 2, "smsw": 1}


def test_pushf_and_popf_keep_the_virtual_interrupt_flag() -> None:
    cpu, ram = machine()
    registers = state()
    registers.rflags = 0x3202 | 0x1  # real: IF=1 IOPL=3 CF=1
    cpu.execute(one(b"\x9c"), registers, ram.memory())  # pushfq
    assert registers.registers["rsp"] == 0x8000 - 8
    assert int.from_bytes(ram.read(0x8000 - 8, 8), "little") == 0x3  # virtual IF=0 IOPL=0
    ram.write(0x8000 - 8, (0x200 | 0x40).to_bytes(8, "little"))
    cpu.execute(one(b"\x9d"), registers, ram.memory())  # popfq: IF=1, ZF=1, CF=0
    assert cpu.interrupt_flag and cpu.iopl == 0
    assert registers.rflags == 0x3202 | 0x40  # the real IF and IOPL stay the monitor's
    assert registers.registers["rsp"] == 0x8000


def test_other_instructions_are_not_performed() -> None:
    cpu, ram = machine()
    with pytest.raises(NotSensitive, match="nop"):
        cpu.execute(one(b"\x90"), state(), ram.memory())
    assert not is_sensitive(one(bytes.fromhex("8ec0")))  # mov es, eax: a load, it traps if bad


def test_rewrite_of_the_guest() -> None:
    image = shipped_file("guests/sensitive.bin").read_bytes()
    result = rewrite(image, 0x100000)
    mnemonics = [instruction.mnemonic for _, instruction in sorted(result.side_table.items())]
    assert mnemonics.count("pushfq") == 7 and mnemonics.count("popfq") == 1
    assert {"sgdt", "sidt", "sldt", "smsw", "str", "lar", "lsl", "verr", "verw", "mov"} <= set(
        mnemonics
    )
    assert len(result.code) == len(image)
    changed = bytearray(image)
    for address, instruction in result.side_table.items():
        offset = address - 0x100000
        patch = result.code[offset : offset + instruction.size]
        assert patch == HLT + NOP * (instruction.size - 1)
        changed[offset : offset + instruction.size] = patch
    assert bytes(changed) == result.code  # nothing else changed
    assert "0x100019  sgdt [rbx]  ->  hlt + nop + nop" in result.describe()


def test_answers_table_formats_each_slot() -> None:
    data = bytearray(struct.pack("<QQ", 0, 0) * len(sensitive.ROWS))
    struct.pack_into("<HQ", data, 0, 0x37, 0xC000)
    struct.pack_into("<QQ", data, 16 * 3, 0xE000_0019, 0)
    struct.pack_into("<QQ", data, 16 * 6, 0x202, 0x202)
    struct.pack_into("<QQ", data, 16 * 7, 0x33, 0)
    struct.pack_into("<QQ", data, 16 * 9, sensitive.SENTINEL, 0x202)
    struct.pack_into("<QQ", data, 16 * 10, 0xFFFF_FFFF, 0x246)
    shown = sensitive.answers(bytes(data))
    assert shown["sgdt [mem]"] == "base 0xc000 limit 0x37"
    assert shown["smsw rax"] == "0x0019 (TS=1)"
    assert shown["popf (flip IF)"] == "IF 1->1 (ignored)"
    assert shown["mov eax, cs"] == "0x33 (CPL3)"
    assert shown["lar eax, 0x08"] == "ZF=0 refused"
    assert shown["lsl eax, 0x10"] == "ZF=1 limit 0xffffffff"
    virtual = sensitive.virtual_answers(0x500, 0x37, 0xE000_0011)
    assert virtual["sgdt [mem]"] == "base 0x500 limit 0x37" and virtual["smsw rax"] == "0x0011"
