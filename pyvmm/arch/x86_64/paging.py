"""Page tables the VMM builds for its guests (pure, over GuestMemory).

Both maps are identities over the low 4 GiB, so that whatever the guest was
loaded at, and the MMIO hole below 4 GiB, is reachable at the same address
once paging is on. Formats per the Intel SDM vol. 3A, chapter 4.
"""

from __future__ import annotations

from pyvmm.memory.addr import GuestPhysAddr, is_aligned
from pyvmm.memory.guest_memory import GuestMemory

PAGE_SIZE = 0x1000
ENTRY_PRESENT = 1 << 0
ENTRY_WRITABLE = 1 << 1
ENTRY_USER = 1 << 2
ENTRY_PAGE_SIZE = 1 << 7  # PS: this entry maps a large page
ENTRY_NX = 1 << 63

LARGE_PAGE_32 = 4 << 20  # 4 MiB pages with CR4.PSE
LARGE_PAGE_64 = 2 << 20  # 2 MiB pages in a long-mode page directory
IDENTITY_MAP_LIMIT = 4 << 30


def build_identity_map_32(memory: GuestMemory, directory_gpa: GuestPhysAddr) -> int:
    """One page directory of 1024 4-MiB pages (needs CR4.PSE). Returns CR3."""
    if not is_aligned(directory_gpa, PAGE_SIZE):
        raise ValueError(f"page directory at 0x{directory_gpa:x} is not page-aligned")
    flags = ENTRY_PRESENT | ENTRY_WRITABLE | ENTRY_PAGE_SIZE
    directory = b"".join(
        ((index * LARGE_PAGE_32) | flags).to_bytes(4, "little") for index in range(1024)
    )
    memory.write(directory_gpa, directory)
    return directory_gpa


def long_mode_tables_size() -> int:
    """PML4, PDPT and four page directories."""
    return 6 * PAGE_SIZE


def build_identity_map_64(memory: GuestMemory, pml4_gpa: GuestPhysAddr, user: bool = False) -> int:
    """PML4 -> PDPT -> 4 PDs of 2-MiB pages covering 4 GiB. Returns CR3.

    Tables are consecutive pages from `pml4_gpa`. 2 MiB pages need no CPU
    feature beyond long mode (1 GiB pages would need pdpe1gb).
    """
    if not is_aligned(pml4_gpa, PAGE_SIZE):
        raise ValueError(f"PML4 at 0x{pml4_gpa:x} is not page-aligned")
    # `user`: every level allows CPL3, for guests entered in user mode.
    table_flags = ENTRY_PRESENT | ENTRY_WRITABLE | (ENTRY_USER if user else 0)
    pdpt_gpa = pml4_gpa + PAGE_SIZE
    first_pd_gpa = pdpt_gpa + PAGE_SIZE
    directories = IDENTITY_MAP_LIMIT // (512 * LARGE_PAGE_64)

    memory.fill(pml4_gpa, PAGE_SIZE)
    memory.write_u64(pml4_gpa, pdpt_gpa | table_flags)
    memory.fill(pdpt_gpa, PAGE_SIZE)
    for index in range(directories):
        pd_gpa = first_pd_gpa + index * PAGE_SIZE
        memory.write_u64(pdpt_gpa + 8 * index, pd_gpa | table_flags)
        base = index * 512 * LARGE_PAGE_64
        memory.write(
            pd_gpa,
            b"".join(
                (base + entry * LARGE_PAGE_64 | table_flags | ENTRY_PAGE_SIZE).to_bytes(8, "little")
                for entry in range(512)
            ),
        )
    return pml4_gpa
