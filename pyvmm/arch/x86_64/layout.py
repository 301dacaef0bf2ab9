"""Every guest-physical address the VMM itself chooses, one constant each.

The low megabyte follows the PC convention (IVT, BDA, boot sector at 0x7c00);
what the VMM builds for the non-real entry states sits by default between
0x500 and 0x9069 (the boot stack below 0x80000), and moves elsewhere in
conventional memory when an image occupies it (placement.py). RAM stops
below the 32-bit PCI hole, as on a real PC, and resumes at 4 GiB.
"""

from __future__ import annotations

# Defined with the firmware, below this layer: the multiboot memory map lists them too.
from pyvmm.firmware.area import ACPI_NVS_GPA as ACPI_NVS_GPA
from pyvmm.firmware.area import ACPI_TABLES_END as ACPI_TABLES_END
from pyvmm.firmware.area import BIOS_TABLES_END as BIOS_TABLES_END
from pyvmm.firmware.area import BIOS_TABLES_GPA as BIOS_TABLES_GPA
from pyvmm.memory.addr import GuestPhysAddr

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# Where a BIOS jumps to a boot sector; the default load address in real mode.
BOOT_SECTOR_GPA = GuestPhysAddr(0x7C00)
# Where flat protected/long-mode images and kernels are loaded by default.
HIGH_LOAD_GPA = GuestPhysAddr(0x10_0000)

# The default places of what the VMM builds for the non-real entry states; an image
# that occupies one gets the structure moved (arch/x86_64/placement.py, VmmPlaces).
# Global descriptor table: 3 descriptors, 7 in user mode (gdt.py).
GDT_GPA = GuestPhysAddr(0x500)
GDT_SIZE = 3 * 8
USER_GDT_SIZE = 7 * 8
# A Linux kernel's: null, unused, __BOOT_CS 0x10, __BOOT_DS 0x18 (boot.rst; gdt.py).
LINUX_GDT_SIZE = 4 * 8
# Page tables: the 32-bit page directory, or PML4, PDPT and four PDs for long mode.
PAGE_TABLES_GPA = GuestPhysAddr(0x1000)
PAGE_DIRECTORY_32_SIZE = 0x1000
LONG_MODE_TABLES_SIZE = 0x6000
PAGE_TABLES_END = GuestPhysAddr(PAGE_TABLES_GPA + LONG_MODE_TABLES_SIZE)
# Those tables map the low 4 GiB one to one: a paged entry point must be below.
IDENTITY_MAP_END = 1 << 32
# The 64-bit TSS of the user-mode entry state: 104 bytes, then an I/O bitmap of one
# bit per port and its 0xff terminator (Intel SDM vol. 3A, 8.7 and 19.5.2; gdt.py).
TSS_GPA = GuestPhysAddr(0x7000)
TSS_SIZE = 104 + 65536 // 8 + 1
TSS_END = GuestPhysAddr(TSS_GPA + TSS_SIZE)
# Stack pointer handed to non-real-mode guests (grows down towards 0x70000).
BOOT_STACK_TOP = GuestPhysAddr(0x8_0000)
BOOT_STACK_SIZE = 0x1_0000
# In user mode the upper half of that area is the CPL3 stack, the lower the ring-0 one.
KERNEL_STACK_TOP = GuestPhysAddr(BOOT_STACK_TOP - BOOT_STACK_SIZE // 2)
# Where a structure an image displaces may go instead: conventional memory above the
# IVT and the BIOS data area (0x400-0x4ff) and below the EBDA, as a BIOS reports it;
# the page tables may also go to RAM above 1 MiB, below 4 GiB.
LOW_RAM_START = GuestPhysAddr(0x500)
LOW_RAM_END = GuestPhysAddr(0x9_FC00)
HIGH_RAM_START = GuestPhysAddr(0x10_0000)
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
# The firmware's tables, imported above: ACPI NVS (the FACS) and ACPI tables in
# ACPI_NVS_GPA..ACPI_TABLES_END (0xe0000-0xe1fff); the MP floating pointer, the RSDP
# and the MP configuration table in BIOS_TABLES_GPA..BIOS_TABLES_END (0xf1000-0xf2fff),
# in the BIOS area above the no-BIOS stubs.

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


class VmmPlaces:
    """Where the VMM puts its own entry-state structures for one run (guest-physical).

    The defaults are the constants above; `placement.place_vmm_structures`
    moves a structure the image occupies. `stack_top` is the initial
    stack pointer; the stack is the BOOT_STACK_SIZE bytes below it.
    Read-only once made; equal when every place is.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("gdt", "page_tables", "stack_top", "tss")

    def __init__(
        self,
        gdt: int = GDT_GPA,
        page_tables: int = PAGE_TABLES_GPA,
        tss: int = TSS_GPA,
        stack_top: int = BOOT_STACK_TOP,
    ) -> None:
        self.gdt = gdt
        self.page_tables = page_tables
        self.tss = tss
        self.stack_top = stack_top

    def _values(self) -> tuple[int, int, int, int]:
        return (self.gdt, self.page_tables, self.tss, self.stack_top)

    def __eq__(self, other: object) -> bool:
        if type(other) is not VmmPlaces:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        return "VmmPlaces(gdt={}, page_tables={}, tss={}, stack_top={})".format(*self._values())

    @property
    def kernel_stack_top(self) -> int:
        """User mode: the ring-0 stack (the TSS's RSP0), the lower half of the stack area."""
        return self.stack_top - BOOT_STACK_SIZE // 2


DEFAULT_PLACES = VmmPlaces()


def vmm_placements(
    mode_value: str, places: VmmPlaces = DEFAULT_PLACES, protocol: str = ""
) -> list[tuple[int, int, str]]:
    """(start, end, what) of each structure the VMM writes for an entry mode, at `places`.

    Real mode: the IVT and the no-BIOS stubs, which fill only what the image
    left empty (no_bios.py). The other modes: the GDT, the page tables
    (paged, long, user), the TSS (user) and the boot stack.
    """
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
    gdt = places.gdt
    placements = [(gdt, gdt + GDT_SIZE, "GDT: null, code 0x08, data 0x10")]
    if protocol == "linux":  # the boot protocol's selectors (gdt.linux_boot_gdt)
        placements = [(gdt, gdt + LINUX_GDT_SIZE, "GDT: __BOOT_CS 0x10, __BOOT_DS 0x18")]
    tables = places.page_tables
    if mode_value == "paged":
        placements.append(
            (tables, tables + PAGE_DIRECTORY_32_SIZE, "page directory: 4 MiB identity pages")
        )
    elif mode_value == "long":
        placements.append(
            (tables, tables + LONG_MODE_TABLES_SIZE, "PML4, PDPT, 4 PDs: 2 MiB identity pages")
        )
    elif mode_value == "user":
        placements[0] = (gdt, gdt + USER_GDT_SIZE, "GDT: kernel 0x08/0x10, user 0x1b/0x23, TSS")
        placements.append(
            (places.tss, places.tss + TSS_SIZE, "64-bit TSS: RSP0, I/O bitmap allowing every port")
        )
        placements.append(
            (
                tables,
                tables + LONG_MODE_TABLES_SIZE,
                "PML4, PDPT, 4 PDs: 2 MiB identity pages, user",
            )
        )
    stack = places.stack_top
    placements.append((stack - BOOT_STACK_SIZE, stack, "boot stack"))
    return placements


# virtio-mmio transports (Virtio 1.2 §4.2): windows of 0x200 bytes from
# 0xfeb00000, QEMU microvm's base and stride, in the PC's MMIO hole below the
# IOAPIC. Each kind of device has its slot and its ISA IRQ, so that a guest
# finds the same device at the same place whatever else is there:
# console 0 (IRQ 5), block 1 (IRQ 6), entropy 2 (IRQ 7), balloon 3 (IRQ 10).
VIRTIO_MMIO_BASE = GuestPhysAddr(0xFEB00000)
VIRTIO_MMIO_STRIDE = 0x200
VIRTIO_SLOTS = {"console": (0, 5), "block": (1, 6), "entropy": (2, 7), "balloon": (3, 10)}
