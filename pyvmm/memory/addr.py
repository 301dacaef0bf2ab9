"""Typed guest addresses and checked arithmetic on them.

Like rust-vmm's vm-memory, addresses of different spaces are distinct types
(NewType over int: free at run time, checked by a type checker) and arithmetic
goes through helpers that refuse to wrap around.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import NewType

    GuestPhysAddr = NewType("GuestPhysAddr", int)
    GuestVirtAddr = NewType("GuestVirtAddr", int)
else:
    # What a NewType is at run time, without importing typing: the int itself.
    def GuestPhysAddr(address: int) -> int:
        return address

    def GuestVirtAddr(address: int) -> int:
        return address


ADDRESS_LIMIT = 1 << 64
PAGE_SIZE = 0x1000


def checked_add(gpa: GuestPhysAddr, size: int) -> GuestPhysAddr:
    """`gpa + size`, raising OverflowError past the 64-bit address space."""
    end = gpa + size
    if gpa < 0 or size < 0 or end > ADDRESS_LIMIT:
        raise OverflowError(f"0x{gpa:x} + 0x{size:x} leaves the 64-bit address space")
    return GuestPhysAddr(end)


def align_down(value: int, alignment: int) -> int:
    return value & ~(alignment - 1)


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def is_aligned(value: int, alignment: int) -> bool:
    return value & (alignment - 1) == 0
