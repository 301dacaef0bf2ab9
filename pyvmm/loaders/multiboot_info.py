"""The Multiboot (v1) information structure that EBX points to at entry (pure).

Multiboot Specification 0.6.96, section 3.3 "Boot information format". Given
the guest's RAM ranges, the command line and the modules already placed, this
module lays out, in one area starting at a given guest-physical address:

    +0     the information structure (116 bytes: every field of 0.6.96)
    +120   the memory map: entries of {size=20, base_addr u64, length u64, type u32}
    ...    the module list: {mod_start, mod_end, string, reserved} per module
    ...    NUL-terminated strings: command line, boot loader name, module strings

and returns the bytes plus a (start, end, what) list of the pieces. Nothing
here writes guest memory except `write_info`.

The memory map is what a PC BIOS reports through e820: conventional memory up
to the EBDA at 0x9fc00, the EBDA and the BIOS area 0xf0000..0x100000 reserved,
then RAM from 1 MiB, and RAM above 4 GiB. The VGA/option-ROM window
0xa0000..0xf0000 is not listed, as on real firmware, except the two pages
where pyvmm's firmware keeps the ACPI tables (pyvmm.firmware.area): the FACS
as ACPI NVS, the description tables as ACPI reclaimable memory, the types a
BIOS gives them (ACPI 6.3, 15 "System Address Map Interfaces"). They are listed
whether or not the machine has ACPI (--acpi off leaves them empty): the
window is no RAM the guest could use either way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.firmware import area as firmware_area
from pyvmm.memory.addr import GuestPhysAddr, align_up

if TYPE_CHECKING:  # only for hints: building the information needs no compiled _kvm module
    from pyvmm.memory.guest_memory import GuestMemory

# What EAX holds when a Multiboot loader enters the kernel (3.2 "Machine state").
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002

# Bits of the information structure's `flags` (3.3).
MULTIBOOT_INFO_MEMORY = 1 << 0  # mem_lower, mem_upper
MULTIBOOT_INFO_CMDLINE = 1 << 2  # cmdline
MULTIBOOT_INFO_MODS = 1 << 3  # mods_count, mods_addr
MULTIBOOT_INFO_MEM_MAP = 1 << 6  # mmap_length, mmap_addr
MULTIBOOT_INFO_BOOT_LOADER_NAME = 1 << 9  # boot_loader_name

# Memory map entry types (3.3): 1 is available RAM, any other value is reserved;
# 3 and 4 are ACPI's (the e820 types AddressRangeACPI and AddressRangeNVS, ACPI 6.3
# 15 "System Address Map Interfaces"), which multiboot.h names too.
MULTIBOOT_MEMORY_AVAILABLE = 1
MULTIBOOT_MEMORY_RESERVED = 2
MULTIBOOT_MEMORY_ACPI_RECLAIMABLE = 3
MULTIBOOT_MEMORY_NVS = 4

# Field offsets in the information structure (3.3).
INFO_FLAGS = 0
INFO_MEM_LOWER = 4
INFO_MEM_UPPER = 8
INFO_CMDLINE = 16
INFO_MODS_COUNT = 20
INFO_MODS_ADDR = 24
INFO_MMAP_LENGTH = 44
INFO_MMAP_ADDR = 48
INFO_BOOT_LOADER_NAME = 64
# Through the framebuffer fields, the last ones 0.6.96 defines; unused ones stay zero.
INFO_SIZE = 116

# One memory map entry as the kernel walks it: `size` counts the bytes after itself.
MMAP_ENTRY = struct.Struct("<IQQI")
MMAP_ENTRY_SIZE = MMAP_ENTRY.size - 4
# One module list entry: mod_start, mod_end (exclusive), string, reserved.
MODULE_ENTRY = struct.Struct("<IIII")

BOOT_LOADER_NAME = "pyvmm"

# The PC's legacy low megabyte as a BIOS reports it.
EBDA_GPA = 0x9_FC00  # conventional memory ends where the extended BIOS data area starts
EBDA_END = 0xA_0000
BIOS_AREA_GPA = 0xF_0000  # the system BIOS image below 1 MiB
HIGH_MEMORY_GPA = 0x10_0000  # "upper memory" starts at 1 MiB
# mem_lower as QEMU reports it: conventional memory below the EBDA, 639 KiB. QEMU's
# multiboot option ROM (pc-bios/optionrom/multiboot.S) stores what `int 0x12` returns,
# and SeaBIOS's EBDA takes the last KiB of the 640. The memory map ends there too.
MEM_LOWER_KIB = EBDA_GPA // 1024

# Everything the information holds is addressed with 32 bits.
ADDRESS_LIMIT_32 = 1 << 32


@dataclass(frozen=True)
class MemoryMapEntry:
    base: int
    length: int
    type: int

    @property
    def end(self) -> int:
        return self.base + self.length


@dataclass(frozen=True)
class ModuleInfo:
    """A module already copied to [start, end) and the string the kernel sees for it."""

    start: int
    end: int
    string: str


@dataclass(frozen=True)
class MultibootInfo:
    """The information area: `data` goes at `gpa`; `regions` names its pieces."""

    gpa: GuestPhysAddr
    data: bytes
    flags: int
    regions: tuple[tuple[int, int, str], ...]

    @property
    def end(self) -> GuestPhysAddr:
        return GuestPhysAddr(self.gpa + len(self.data))


def _merged(ram_ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) of RAM, sorted, with touching ranges joined."""
    merged: list[tuple[int, int]] = []
    for gpa, size in sorted(ram_ranges):
        if size <= 0:
            continue
        if merged and gpa <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], gpa + size))
        else:
            merged.append((gpa, gpa + size))
    return merged


# The firmware's ACPI pages, with the e820 type a BIOS gives each.
FIRMWARE_RANGES = (
    (firmware_area.ACPI_NVS_GPA, firmware_area.ACPI_NVS_END, MULTIBOOT_MEMORY_NVS),
    (
        firmware_area.ACPI_TABLES_GPA,
        firmware_area.ACPI_TABLES_END,
        MULTIBOOT_MEMORY_ACPI_RECLAIMABLE,
    ),
)


def memory_map(ram_ranges: Sequence[tuple[int, int]]) -> list[MemoryMapEntry]:
    """The e820-style map: RAM minus the EBDA and BIOS area, which are listed as reserved.

    The firmware's ACPI pages below the BIOS area are listed with their ACPI types.
    """
    entries = [
        MemoryMapEntry(EBDA_GPA, EBDA_END - EBDA_GPA, MULTIBOOT_MEMORY_RESERVED),
        MemoryMapEntry(BIOS_AREA_GPA, HIGH_MEMORY_GPA - BIOS_AREA_GPA, MULTIBOOT_MEMORY_RESERVED),
    ]
    entries += [MemoryMapEntry(start, end - start, kind) for start, end, kind in FIRMWARE_RANGES]
    for start, end in _merged(ram_ranges):
        # Conventional memory ends at the EBDA; nothing below 1 MiB above it is RAM.
        pieces = [(start, min(end, EBDA_GPA)), (max(start, HIGH_MEMORY_GPA), end)]
        for piece_start, piece_end in pieces:
            if piece_start < piece_end:
                entries.append(
                    MemoryMapEntry(piece_start, piece_end - piece_start, MULTIBOOT_MEMORY_AVAILABLE)
                )
    return sorted(entries, key=lambda entry: entry.base)


def usable_ranges(ram_ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) of every range the memory map calls available RAM."""
    return [
        (entry.base, entry.end)
        for entry in memory_map(ram_ranges)
        if entry.type == MULTIBOOT_MEMORY_AVAILABLE
    ]


def mem_upper_kib(ram_ranges: Sequence[tuple[int, int]]) -> int:
    """KiB of RAM from 1 MiB up to the first hole (0 when there is none at 1 MiB).

    QEMU's option ROM computes it the same way, from its memory map; there
    SeaBIOS reserves the top 128 KiB of RAM below 4 GiB for its own tables,
    so QEMU's figure is 128 less than pyvmm's for the same -m.
    """
    for start, end in _merged(ram_ranges):
        if start <= HIGH_MEMORY_GPA < end:
            return (end - HIGH_MEMORY_GPA) // 1024
    return 0


def c_string(text: str) -> bytes:
    """`text` as UTF-8 with its terminating NUL; a NUL inside is a caller's bug."""
    data = text.encode("utf-8")
    if b"\0" in data:
        raise ValueError(f"{text!r} contains a NUL byte")
    return data + b"\0"


@dataclass(frozen=True)
class _Layout:
    """Offsets of each piece inside the area."""

    mmap: int
    modules: int
    cmdline: int
    loader_name: int
    module_strings: tuple[int, ...]
    size: int


def _layout(mmap_count: int, cmdline: bytes, module_strings: Sequence[bytes]) -> _Layout:
    mmap = align_up(INFO_SIZE, 8)
    modules = mmap + mmap_count * MMAP_ENTRY.size
    cmdline_offset = modules + len(module_strings) * MODULE_ENTRY.size
    loader_name = cmdline_offset + len(cmdline)
    offset = loader_name + len(c_string(BOOT_LOADER_NAME))
    strings = []
    for string in module_strings:
        strings.append(offset)
        offset += len(string)
    return _Layout(mmap, modules, cmdline_offset, loader_name, tuple(strings), offset)


def info_area_size(
    ram_ranges: Sequence[tuple[int, int]], cmdline: str, module_strings: Sequence[str]
) -> int:
    """Bytes `build_info` will produce for these inputs (module addresses do not matter)."""
    strings = [c_string(string) for string in module_strings]
    return _layout(len(memory_map(ram_ranges)), c_string(cmdline), strings).size


def build_info(
    gpa: int,
    ram_ranges: Sequence[tuple[int, int]],
    cmdline: str,
    modules: Sequence[ModuleInfo],
) -> MultibootInfo:
    """The whole information area for a kernel that will find it at `gpa`."""
    entries = memory_map(ram_ranges)
    cmdline_bytes = c_string(cmdline)
    strings = [c_string(module.string) for module in modules]
    layout = _layout(len(entries), cmdline_bytes, strings)
    if gpa < 0 or gpa + layout.size > ADDRESS_LIMIT_32:
        raise ValueError(f"information area at 0x{gpa:x} is not below 4 GiB")
    for module in modules:
        if not 0 <= module.start <= module.end <= ADDRESS_LIMIT_32:
            raise ValueError(f"module at 0x{module.start:x}..0x{module.end:x} is not below 4 GiB")

    data = bytearray(layout.size)
    flags = (
        MULTIBOOT_INFO_MEMORY
        | MULTIBOOT_INFO_CMDLINE
        | MULTIBOOT_INFO_MEM_MAP
        | MULTIBOOT_INFO_BOOT_LOADER_NAME
    )
    if modules:
        flags |= MULTIBOOT_INFO_MODS
    fields = {
        INFO_FLAGS: flags,
        INFO_MEM_LOWER: MEM_LOWER_KIB,
        INFO_MEM_UPPER: mem_upper_kib(ram_ranges),
        INFO_CMDLINE: gpa + layout.cmdline,
        INFO_MODS_COUNT: len(modules),
        INFO_MODS_ADDR: gpa + layout.modules if modules else 0,
        INFO_MMAP_LENGTH: len(entries) * MMAP_ENTRY.size,
        INFO_MMAP_ADDR: gpa + layout.mmap,
        INFO_BOOT_LOADER_NAME: gpa + layout.loader_name,
    }
    for offset, value in fields.items():
        struct.pack_into("<I", data, offset, value)
    for index, entry in enumerate(entries):
        offset = layout.mmap + index * MMAP_ENTRY.size
        MMAP_ENTRY.pack_into(data, offset, MMAP_ENTRY_SIZE, entry.base, entry.length, entry.type)
    for index, (module, string_offset) in enumerate(
        zip(modules, layout.module_strings, strict=True)
    ):
        offset = layout.modules + index * MODULE_ENTRY.size
        MODULE_ENTRY.pack_into(data, offset, module.start, module.end, gpa + string_offset, 0)
    data[layout.cmdline : layout.loader_name] = cmdline_bytes
    name = c_string(BOOT_LOADER_NAME)
    data[layout.loader_name : layout.loader_name + len(name)] = name
    for string_offset, string in zip(layout.module_strings, strings, strict=True):
        data[string_offset : string_offset + len(string)] = string

    regions = [
        (gpa, gpa + INFO_SIZE, "multiboot information"),
        (gpa + layout.mmap, gpa + layout.modules, "memory map"),
    ]
    if modules:
        regions.append((gpa + layout.modules, gpa + layout.cmdline, "module list"))
    regions.append((gpa + layout.cmdline, gpa + layout.loader_name, "command line"))
    regions.append(
        (gpa + layout.loader_name, gpa + layout.loader_name + len(name), "boot loader name")
    )
    for index, (string_offset, string) in enumerate(
        zip(layout.module_strings, strings, strict=True)
    ):
        regions.append(
            (gpa + string_offset, gpa + string_offset + len(string), f"module {index} string")
        )
    return MultibootInfo(GuestPhysAddr(gpa), bytes(data), flags, tuple(regions))


def write_info(memory: GuestMemory, info: MultibootInfo) -> None:
    """Copy the information area into guest RAM."""
    memory.write(info.gpa, info.data)
