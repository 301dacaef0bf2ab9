"""Guest memory by guest-virtual address: the VMM reads and writes through the guest's paging.

Pure over GuestMemory and the paging registers: each page of an access is
translated by the software walk in `page_walk` (Intel SDM vol. 3A, 4.3 to
4.5), then read or written guest-physically. The address is a linear address
(SDM vol. 3A, 3.4 "Logical and Linear Addresses"): what the page tables
translate, after segmentation; with the flat segments of every entry state
pyvmm builds, it is the address the guest's code uses. With paging off
(CR0.PG=0) linear equals physical.

The whole access is translated before any byte moves, so a fault leaves
memory untouched. Writes ignore the pages' permissions, as a debugger's do:
the VMM writes guest RAM, not the guest.
"""

from __future__ import annotations

from pyvmm.arch.x86_64.page_walk import PagingRegisters, walk
from pyvmm.errors import GuestMemoryError, GuestPageFault
from pyvmm.memory.guest_memory import GuestMemory

PAGE_SIZE = 0x1000
ADDRESS_LIMIT = 1 << 64


def physical_pieces(
    memory: GuestMemory, paging: PagingRegisters, gva: int, size: int, max_phys_bits: int = 52
) -> list[tuple[int, int]]:
    """The (gpa, size) pieces, in order, that [gva, gva + size) occupies; one per page at most.

    Raises GuestPageFault at the first address the walk cannot translate,
    ValueError for a negative size or an address outside 0..2**64.
    """
    if size < 0:
        raise ValueError(f"size {size} is negative")
    if not 0 <= gva <= gva + size <= ADDRESS_LIMIT:
        raise ValueError(f"0x{gva:x}+{size} is outside the 64-bit address space")
    pieces: list[tuple[int, int]] = []
    done = 0
    while done < size:
        address = gva + done
        found = walk(memory, paging, address, max_phys_bits)
        if found.gpa is None:
            raise GuestPageFault(gva, size, address, found.fault or "not mapped")
        # 4 KiB steps even inside a large page: correct, and an access is rarely long.
        chunk = min(size - done, PAGE_SIZE - address % PAGE_SIZE)
        pieces.append((found.gpa, chunk))
        done += chunk
    return pieces


def read_virtual(
    memory: GuestMemory, paging: PagingRegisters, gva: int, size: int, max_phys_bits: int = 52
) -> bytes:
    """`size` bytes from guest-virtual `gva`.

    Raises GuestPageFault (not mapped) or GuestMemoryError (mapped onto
    something that is not RAM, e.g. MMIO).
    """
    pieces = physical_pieces(memory, paging, gva, size, max_phys_bits)
    return b"".join(memory.read(gpa, length) for gpa, length in pieces)


def write_virtual(
    memory: GuestMemory,
    paging: PagingRegisters,
    gva: int,
    data: bytes | bytearray | memoryview,
    max_phys_bits: int = 52,
) -> None:
    """Write `data` at guest-virtual `gva`; the errors of `read_virtual`, and nothing written.

    Every piece is checked against RAM before the first byte is written.
    """
    view = memoryview(data).cast("B")  # bytes, whatever the buffer's item size
    pieces = physical_pieces(memory, paging, gva, len(view), max_phys_bits)
    for gpa, length in pieces:
        if not memory.contains(gpa, length):
            raise GuestMemoryError(gpa, length)
    offset = 0
    for gpa, length in pieces:
        memory.write(gpa, view[offset : offset + length])
        offset += length
