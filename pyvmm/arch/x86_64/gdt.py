"""GDT descriptors and the segment registers they load (pure).

Encoding per the Intel SDM vol. 3A, 3.4.5 "Segment Descriptors".
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

# Selectors of the VMM's GDT (index << 3, RPL 0).
NULL_SELECTOR = 0x00
CODE_SELECTOR = 0x08
DATA_SELECTOR = 0x10


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


def gdt_bytes(entries: list[int]) -> bytes:
    return b"".join(entry.to_bytes(8, "little") for entry in entries)
