"""GDT descriptors and the segment registers they load, and 64-bit IDT gates (pure).

Encoding per the Intel SDM vol. 3A, 3.4.5 "Segment Descriptors" and 6.14.1
"64-Bit Mode IDT".
"""

from __future__ import annotations

from dataclasses import dataclass

# Access byte bits.
ACCESS_PRESENT = 1 << 7
ACCESS_S = 1 << 4  # code or data, not a system descriptor
TYPE_CODE_EXEC_READ = 0xA  # execute/read, accessed bit clear
TYPE_DATA_READ_WRITE = 0x2  # read/write
# Flag nibble bits.
FLAG_G = 1 << 3  # limit counts 4 KiB pages
FLAG_DB = 1 << 2  # 32-bit default operand size
FLAG_L = 1 << 1  # 64-bit code segment

ACCESS_DPL3 = 3 << 5
TYPE_TSS_64_BUSY = 0xB  # system descriptor: 64-bit TSS, busy (SDM 3.5, table 3-2)

# Selectors of the VMM's GDT (index << 3 | RPL). The user-mode GDT adds user
# data before user code (the order SYSRET expects) and a 16-byte TSS descriptor.
NULL_SELECTOR = 0x00
CODE_SELECTOR = 0x08
DATA_SELECTOR = 0x10
USER_DATA_SELECTOR = 0x18 | 3
USER_CODE_SELECTOR = 0x20 | 3
TSS_SELECTOR = 0x28

# A 64-bit TSS is 104 bytes (SDM 8.7, figure 8-11), here followed by an I/O
# permission bitmap of one bit per port (SDM 19.5.2) and its 0xff terminator.
TSS_SIZE = 104
IO_BITMAP_SIZE = 65536 // 8
TSS_WITH_BITMAP_SIZE = TSS_SIZE + IO_BITMAP_SIZE + 1
TSS_RSP0_OFFSET = 4
TSS_IOMAP_BASE_OFFSET = 102


@dataclass(frozen=True)
class Segment:
    """A decoded descriptor, in the shape of `struct kvm_segment`."""

    selector: int
    base: int
    limit: int  # in bytes - 1 (already scaled by G)
    type: int
    present: int
    dpl: int
    db: int
    s: int
    long: int
    g: int


GATE_INTERRUPT_64 = 0x8E  # present, DPL 0, type 0xE: 64-bit interrupt gate


def interrupt_gate(handler: int, selector: int = CODE_SELECTOR) -> bytes:
    """A 16-byte 64-bit interrupt gate to `handler` (a linear address) through `selector`."""
    low = (
        (handler & 0xFFFF)
        | selector << 16
        | GATE_INTERRUPT_64 << 40
        | (handler >> 16 & 0xFFFF) << 48
    )
    return low.to_bytes(8, "little") + (handler >> 32 & 0xFFFF_FFFF).to_bytes(8, "little")


def encode_descriptor(base: int, limit: int, access: int, flags: int) -> int:
    """Pack a 64-bit segment descriptor. `limit` is the raw 20-bit field."""
    return (
        (limit & 0xFFFF)
        | (base & 0xFFFFFF) << 16
        | (access & 0xFF) << 40
        | ((limit >> 16) & 0xF) << 48
        | (flags & 0xF) << 52
        | ((base >> 24) & 0xFF) << 56
    )


def decode_descriptor(descriptor: int, selector: int) -> Segment:
    """The segment register contents loading `selector` would produce."""
    raw_limit = (descriptor & 0xFFFF) | ((descriptor >> 48) & 0xF) << 16
    base = ((descriptor >> 16) & 0xFFFFFF) | ((descriptor >> 56) & 0xFF) << 24
    access = (descriptor >> 40) & 0xFF
    flags = (descriptor >> 52) & 0xF
    granular = bool(flags & FLAG_G)
    limit = (raw_limit << 12) | 0xFFF if granular else raw_limit
    return Segment(
        selector=selector,
        base=base,
        limit=limit,
        type=access & 0xF,
        present=(access >> 7) & 1,
        dpl=(access >> 5) & 3,
        db=int(bool(flags & FLAG_DB)),
        s=(access >> 4) & 1,
        long=int(bool(flags & FLAG_L)),
        g=int(granular),
    )


def flat_gdt(long_mode: bool) -> list[int]:
    """Null, flat code and flat data descriptors, 4 GiB each.

    In long mode the code descriptor has L=1 and D=0 (SDM 5.2.1).
    """
    code_flags = FLAG_G | FLAG_L if long_mode else FLAG_G | FLAG_DB
    code = encode_descriptor(
        0, 0xFFFFF, ACCESS_PRESENT | ACCESS_S | TYPE_CODE_EXEC_READ, code_flags
    )
    data = encode_descriptor(
        0, 0xFFFFF, ACCESS_PRESENT | ACCESS_S | TYPE_DATA_READ_WRITE, FLAG_G | FLAG_DB
    )
    return [0, code, data]


# Documentation/arch/x86/boot.rst, "64-bit Boot Protocol": the GDT must have 4 GiB
# flat descriptors for __BOOT_CS (execute/read) and __BOOT_DS (read/write), and
# CS = __BOOT_CS, DS = ES = SS = __BOOT_DS at the kernel's 64-bit entry.
LINUX_BOOT_CS = 0x10
LINUX_BOOT_DS = 0x18


def linux_boot_gdt() -> list[int]:
    """Null, an unused slot, then 64-bit code at __BOOT_CS and flat data at __BOOT_DS."""
    _null, code, data = flat_gdt(long_mode=True)
    return [0, 0, code, data]


def gdt_bytes(entries: list[int]) -> bytes:
    return b"".join(entry.to_bytes(8, "little") for entry in entries)


def user_mode_gdt(tss_gpa: int) -> list[int]:
    """Kernel code/data, user data/code (DPL 3, 64-bit), then the TSS (two slots)."""
    present_s = ACCESS_PRESENT | ACCESS_S
    kernel = flat_gdt(long_mode=True)
    user_data = encode_descriptor(
        0, 0xFFFFF, present_s | ACCESS_DPL3 | TYPE_DATA_READ_WRITE, FLAG_G | FLAG_DB
    )
    user_code = encode_descriptor(
        0, 0xFFFFF, present_s | ACCESS_DPL3 | TYPE_CODE_EXEC_READ, FLAG_G | FLAG_L
    )
    tss_low = encode_descriptor(
        tss_gpa, TSS_WITH_BITMAP_SIZE - 1, ACCESS_PRESENT | TYPE_TSS_64_BUSY, 0
    )
    tss_high = tss_gpa >> 32  # a 64-bit system descriptor's upper half: base 63:32
    return [*kernel, user_data, user_code, tss_low, tss_high]


def tss_bytes(rsp0: int) -> bytes:
    """A TSS whose I/O bitmap allows every port to CPL3.

    IOPL=3 alone allows them on VT-x/AMD-V; some KVM backends (kvm_pvm)
    ignore IOPL at CPL3 but honour the bitmap, so the guest gets both.
    """
    tss = bytearray(TSS_WITH_BITMAP_SIZE)
    tss[TSS_RSP0_OFFSET : TSS_RSP0_OFFSET + 8] = rsp0.to_bytes(8, "little")
    tss[TSS_IOMAP_BASE_OFFSET : TSS_IOMAP_BASE_OFFSET + 2] = TSS_SIZE.to_bytes(2, "little")
    tss[-1] = 0xFF  # the bitmap's terminating byte (SDM 19.5.2)
    return bytes(tss)
