"""The Linux x86 setup header and the zero page (struct boot_params), as bytes (pure).

Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header" and "Details
of Header Fields" (the setup header at file offset 0x1f1), and
Documentation/arch/x86/zero-page.rst (the rest of struct boot_params, whose
layout arch/x86/include/uapi/asm/bootparam.h defines). The zero page keeps
the setup header at the same offset 0x1f1 as the kernel file does, so one
table of (offset, width) serves both.

Nothing here reads guest memory: `build_zero_page` returns the 4 KiB the
loader (loaders/linux.py) writes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# boot.rst, "The Real-Mode Kernel Header": the setup header starts at 0x1f1; the
# two-byte jump at 0x200 says where it ends (0x202 + the jump's byte at 0x201).
SETUP_HEADER_OFFSET = 0x1F1
JUMP_OFFSET = 0x200
HEADER_END_BASE = 0x202
HDRS_MAGIC = b"HdrS"  # the `header` field at 0x202, boot protocol 2.00+
BOOT_FLAG = 0xAA55  # the `boot_flag` field at 0x1fe
SECTOR_SIZE = 512
ENTRY_64_OFFSET = 0x200  # boot.rst, "64-bit Boot Protocol": startup_64, 0x200 into the kernel
DEFAULT_SETUP_SECTS = 4  # boot.rst, setup_sects: "If this field is 0, the real value is 4"

# (offset, width) of the setup header's fields (boot.rst, "Details of Header Fields"),
# the same in the kernel file and in struct boot_params.
SETUP_FIELDS = {
    "setup_sects": (0x1F1, 1),
    "root_flags": (0x1F2, 2),
    "syssize": (0x1F4, 4),
    "vid_mode": (0x1FA, 2),
    "boot_flag": (0x1FE, 2),
    "jump": (0x200, 2),
    "header": (0x202, 4),
    "version": (0x206, 2),
    "type_of_loader": (0x210, 1),
    "loadflags": (0x211, 1),
    "code32_start": (0x214, 4),
    "ramdisk_image": (0x218, 4),
    "ramdisk_size": (0x21C, 4),
    "heap_end_ptr": (0x224, 2),
    "cmd_line_ptr": (0x228, 4),
    "initrd_addr_max": (0x22C, 4),
    "kernel_alignment": (0x230, 4),
    "relocatable_kernel": (0x234, 1),
    "min_alignment": (0x235, 1),
    "xloadflags": (0x236, 2),
    "cmdline_size": (0x238, 4),
    "hardware_subarch": (0x23C, 4),
    "setup_data": (0x250, 8),
    "pref_address": (0x258, 8),
    "init_size": (0x260, 4),
    "handover_offset": (0x264, 4),
}
# The last field boot protocol 2.12 has (handover_offset, 2.11) ends here: a 2.12
# header that ends earlier is truncated.
HEADER_END_2_12 = 0x268

# loadflags (boot.rst, "Details of Header Fields", loadflags).
LOADED_HIGH = 1 << 0  # the protected-mode code is loaded at 0x100000 (a bzImage)
# xloadflags (protocol 2.12+). pyvmm keeps everything below 4 GiB, where its identity
# map reaches, so XLF_CAN_BE_LOADED_ABOVE_4G (bit 1) changes nothing here.
XLF_KERNEL_64 = 1 << 0  # has the legacy 64-bit entry point at 0x200

# boot.rst, "Details of Header Fields", type_of_loader: "If your boot loader does not
# have an assigned ID ..., enter 0xFF here." Linux ignores an initrd when it is 0
# (arch/x86/kernel/setup.c, early_reserve_initrd).
TYPE_OF_LOADER_UNDEFINED = 0xFF

# The oldest protocol with xloadflags and so XLF_KERNEL_64 (boot.rst, "2.12").
MIN_PROTOCOL = 0x020C
PROTOCOL_NAMES = "2.12"

# What an uncompressed vmlinux has no header to say: the values a bzImage of the
# same kernel carries (arch/x86/boot/header.S), which a loader writes itself.
VMLINUX_PROTOCOL = 0x020F  # boot protocol 2.15, the newest boot.rst describes
VMLINUX_KERNEL_ALIGNMENT = 0x20_0000  # CONFIG_PHYSICAL_ALIGN's default on x86-64
VMLINUX_INITRD_ADDR_MAX = 0x7FFF_FFFF  # header.S: 64-bit kernels take 2 GiB
VMLINUX_CMDLINE_SIZE = 2047  # COMMAND_LINE_SIZE (2048) less its NUL, as header.S says

# zero-page.rst: the fields of struct boot_params outside the setup header.
EXT_RAMDISK_IMAGE = 0x0C0
EXT_RAMDISK_SIZE = 0x0C4
EXT_CMD_LINE_PTR = 0x0C8
E820_ENTRIES = 0x1E8
SENTINEL = 0x1EF
# bootparam.h: hdr and its padding end where edd_mbr_sig_buffer starts.
SETUP_HEADER_AREA_END = 0x290
E820_TABLE = 0x2D0
E820_ENTRY = struct.Struct("<QQI")  # struct boot_e820_entry: addr, size, type
E820_MAX_ENTRIES_ZEROPAGE = 128
ZERO_PAGE_SIZE = 0x1000


def read_field(data: bytes | bytearray, name: str) -> int:
    """A setup-header field of a kernel file or zero page (the caller checked the length)."""
    offset, width = SETUP_FIELDS[name]
    return int.from_bytes(data[offset : offset + width], "little")


def write_field(page: bytearray, name: str, value: int) -> None:
    offset, width = SETUP_FIELDS[name]
    page[offset : offset + width] = value.to_bytes(width, "little")


def header_end(image: bytes) -> int:
    """Where the setup header ends: 0x202 plus the jump's byte at 0x201 (boot.rst)."""
    return HEADER_END_BASE + image[JUMP_OFFSET + 1]


def vmlinux_header() -> bytes:
    """A setup header for a kernel that has none (vmlinux): bytes 0x1f1..0x268.

    The magic fields a bzImage carries (boot_flag, HdrS), its protocol, and
    the limits a loader would read from it; Firecracker does the same for the
    vmlinux it boots (arch/x86_64/mod.rs, configure_system).
    """
    page = bytearray(HEADER_END_2_12)
    write_field(page, "boot_flag", BOOT_FLAG)
    page[0x202:0x206] = HDRS_MAGIC
    write_field(page, "version", VMLINUX_PROTOCOL)
    write_field(page, "loadflags", LOADED_HIGH)
    write_field(page, "xloadflags", XLF_KERNEL_64)
    write_field(page, "kernel_alignment", VMLINUX_KERNEL_ALIGNMENT)
    write_field(page, "initrd_addr_max", VMLINUX_INITRD_ADDR_MAX)
    write_field(page, "cmdline_size", VMLINUX_CMDLINE_SIZE)
    write_field(page, "vid_mode", 0xFFFF)  # "normal" video mode
    return bytes(page[SETUP_HEADER_OFFSET:])


def build_zero_page(
    setup_header: bytes,
    *,
    cmdline_gpa: int,
    initrd: tuple[int, int] | None,
    e820: Sequence[tuple[int, int, int]],
    code32_start: int | None = None,
) -> bytes:
    """struct boot_params for the 64-bit entry (boot.rst, "64-bit Boot Protocol").

    `setup_header` is the header as the kernel file has it (from 0x1f1 to its
    end, at most the area struct boot_params keeps for it, up to 0x290),
    copied to the same offset; then the fields a boot loader writes
    ("Details of Header Fields", the "write" ones): type_of_loader, the
    command line's address (cmd_line_ptr and ext_cmd_line_ptr), the
    initrd's (ramdisk_image/size and their ext_ halves; `initrd` is (gpa,
    size) or None), code32_start when the kernel was not loaded at its
    code32_start, and the e820 table of (gpa, size, type) (zero-page.rst).
    Everything else is zero, the sentinel at 0x1ef included.
    """
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        raise ValueError(f"{len(e820)} e820 entries: the zero page holds 128")
    page = bytearray(ZERO_PAGE_SIZE)
    copied = setup_header[: SETUP_HEADER_AREA_END - SETUP_HEADER_OFFSET]
    page[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + len(copied)] = copied
    write_field(page, "type_of_loader", TYPE_OF_LOADER_UNDEFINED)
    write_field(page, "cmd_line_ptr", cmdline_gpa & 0xFFFF_FFFF)
    struct.pack_into("<I", page, EXT_CMD_LINE_PTR, cmdline_gpa >> 32)
    if initrd is not None:
        gpa, size = initrd
        write_field(page, "ramdisk_image", gpa & 0xFFFF_FFFF)
        write_field(page, "ramdisk_size", size & 0xFFFF_FFFF)
        struct.pack_into("<II", page, EXT_RAMDISK_IMAGE, gpa >> 32, size >> 32)
    if code32_start is not None:
        write_field(page, "code32_start", code32_start)
    page[E820_ENTRIES] = len(e820)
    for index, (gpa, size, kind) in enumerate(e820):
        E820_ENTRY.pack_into(page, E820_TABLE + index * E820_ENTRY.size, gpa, size, kind)
    return bytes(page)
