"""Every guest-physical address the VMM itself chooses, one constant each.

The low megabyte follows the PC convention (IVT, BDA, boot sector at 0x7c00);
what the VMM builds for the non-real entry states sits between 0x500 and
0x7000, clear of a boot sector. RAM stops below the 32-bit PCI hole, as on a
real PC, and resumes at 4 GiB.
"""

from __future__ import annotations

from pyvmm.memory.addr import GuestPhysAddr

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# Where a BIOS jumps to a boot sector; the default load address in real mode.
BOOT_SECTOR_GPA = GuestPhysAddr(0x7C00)
# Where flat protected/long-mode images and kernels are loaded by default.
HIGH_LOAD_GPA = GuestPhysAddr(0x10_0000)

# Global descriptor table, built by the VMM for the non-real entry states.
GDT_GPA = GuestPhysAddr(0x500)
# Page tables: the 32-bit page directory, or PML4, PDPT and four PDs for long mode.
PAGE_TABLES_GPA = GuestPhysAddr(0x1000)
PAGE_TABLES_END = GuestPhysAddr(0x7000)
# Those tables map the low 4 GiB one to one: a paged entry point must be below.
IDENTITY_MAP_END = 1 << 32
# The 64-bit TSS of the user-mode entry state, with its 8 KiB I/O bitmap.
TSS_GPA = GuestPhysAddr(0x7000)
TSS_END = GuestPhysAddr(0x9100)
# Everything the VMM may write for a non-real entry state lies in [GDT_GPA, VMM_AREA_END).
VMM_AREA_END = TSS_END
# Stack pointer handed to non-real-mode guests (grows down towards 0x70000).
BOOT_STACK_TOP = GuestPhysAddr(0x8_0000)
BOOT_STACK_SIZE = 0x1_0000
# In user mode the upper half of that area is the CPL3 stack, the lower the ring-0 one.
KERNEL_STACK_TOP = GuestPhysAddr(BOOT_STACK_TOP - BOOT_STACK_SIZE // 2)
# Real mode: SS:SP just below the boot sector, as most BIOSes leave it.
REAL_MODE_STACK_TOP = 0x7C00

# The real-mode interrupt vector table: 256 far pointers (offset, segment) at 0
# (Intel SDM vol. 3, "8086 Emulation"). pyvmm has no BIOS: a real-mode entry points every
# empty vector at a stub in the BIOS area that traps to pyvmm (see no_bios.py).
IVT_GPA = GuestPhysAddr(0x0)
IVT_SIZE = 256 * 4
# Segment 0xf000 is the PC's system BIOS ROM; the stubs use its first KiB, where
# a vector's offset keeps bit 15 clear (read as an IDT gate, it is not present).
NO_BIOS_STUBS_SEGMENT = 0xF000
NO_BIOS_STUBS_GPA = GuestPhysAddr(NO_BIOS_STUBS_SEGMENT << 4)
# The VGA text buffer: 80x25 cells of (CP437 character, attribute) in colour
# text mode (IBM VGA Technical Reference, "Memory Maps"). pyvmm keeps it RAM and
# watches the one page that holds the screen with KVM's dirty-page log.
VGA_TEXT_GPA = GuestPhysAddr(0xB8000)
VGA_TEXT_WATCHED_SIZE = 0x1000

# The 32-bit hole for MMIO devices: RAM never lives in [start, 4 GiB).
MMIO_GAP_START = GuestPhysAddr(0xD000_0000)
MMIO_GAP_END = GuestPhysAddr(4 * GIB)

# Three pages Intel VT-x needs for real-mode emulation (KVM_SET_TSS_ADDR) and
# one for its identity map; in the hole, where QEMU and kvmtool put them too.
KVM_TSS_GPA = GuestPhysAddr(0xFFFB_D000)
KVM_IDENTITY_MAP_GPA = GuestPhysAddr(0xFFFB_C000)

MIN_RAM_SIZE = 2 * MIB


def ram_ranges(ram_size: int) -> list[tuple[int, int]]:
    """Guest-physical (gpa, size) RAM ranges for `ram_size` bytes, split around the hole."""
    below = min(ram_size, MMIO_GAP_START)
    ranges = [(0, below)]
    if ram_size > below:
        ranges.append((MMIO_GAP_END, ram_size - below))
    return ranges


def reserved_ranges(needs_tables: bool) -> list[tuple[int, int, str]]:
    """(start, end, what) of RAM the VMM writes before the guest starts."""
    if not needs_tables:
        return []
    return [
        (GDT_GPA, VMM_AREA_END, "the VMM's GDT, TSS and page tables"),
        (BOOT_STACK_TOP - BOOT_STACK_SIZE, BOOT_STACK_TOP, "the boot stack"),
    ]


def vmm_placements(mode_value: str) -> list[tuple[int, int, str]]:
    """(start, end, what) of each structure the VMM writes for an entry mode."""
    if mode_value == "real":
        return [
            (
                IVT_GPA,
                IVT_GPA + IVT_SIZE,
                "real-mode IVT: vector n -> f000:4n, pyvmm's no-BIOS stub (no BIOS here)",
            ),
            (
                NO_BIOS_STUBS_GPA,
                NO_BIOS_STUBS_GPA + IVT_SIZE,
                "no-BIOS stubs: out 0xe5 (tells pyvmm the vector), iret",
            ),
        ]
    placements = [(GDT_GPA, GDT_GPA + 3 * 8, "GDT: null, code 0x08, data 0x10")]
    if mode_value == "paged":
        placements.append(
            (PAGE_TABLES_GPA, PAGE_TABLES_GPA + 0x1000, "page directory: 4 MiB identity pages")
        )
    elif mode_value == "long":
        placements.append(
            (PAGE_TABLES_GPA, PAGE_TABLES_END, "PML4, PDPT, 4 PDs: 2 MiB identity pages")
        )
    elif mode_value == "user":
        placements[0] = (GDT_GPA, GDT_GPA + 7 * 8, "GDT: kernel 0x08/0x10, user 0x1b/0x23, TSS")
        placements.append((TSS_GPA, TSS_END, "64-bit TSS: RSP0, I/O bitmap allowing every port"))
        placements.append(
            (PAGE_TABLES_GPA, PAGE_TABLES_END, "PML4, PDPT, 4 PDs: 2 MiB identity pages, user")
        )
    placements.append((BOOT_STACK_TOP - BOOT_STACK_SIZE, BOOT_STACK_TOP, "boot stack"))
    return placements
