"""Synthetic Linux kernels: a bzImage's setup header and a vmlinux's ELF notes, built with struct.

Documentation/arch/x86/boot.rst ("The Real-Mode Kernel Header", "Details of
Header Fields") for the bzImage; the System V ABI's note layout and
include/linux/build-salt.h (a note named "Linux", type 0x100) for the
vmlinux. The offsets are written out here, not imported from pyvmm, so that
the unit tests and the image fuzzer's oracle read the formats independently
of the loader.
"""

from __future__ import annotations

import struct

from tests.fuzz.image_formats import PT_LOAD, PT_NOTE
from tests.fuzz.image_seeds import Seg, build_elf

MIB = 1 << 20

# boot.rst: (offset, width) of the setup header fields the builders and the oracle use.
BZ_FIELDS = {
    "setup_sects": (0x1F1, 1),
    "boot_flag": (0x1FE, 2),
    "jump": (0x200, 2),
    "header": (0x202, 4),
    "version": (0x206, 2),
    "type_of_loader": (0x210, 1),
    "loadflags": (0x211, 1),
    "code32_start": (0x214, 4),
    "ramdisk_image": (0x218, 4),
    "ramdisk_size": (0x21C, 4),
    "cmd_line_ptr": (0x228, 4),
    "initrd_addr_max": (0x22C, 4),
    "kernel_alignment": (0x230, 4),
    "relocatable_kernel": (0x234, 1),
    "xloadflags": (0x236, 2),
    "cmdline_size": (0x238, 4),
    "pref_address": (0x258, 8),
    "init_size": (0x260, 4),
}
# zero-page.rst: fields of struct boot_params outside the setup header.
ZP_EXT_RAMDISK_IMAGE, ZP_EXT_RAMDISK_SIZE, ZP_EXT_CMD_LINE_PTR = 0x0C0, 0x0C4, 0x0C8
ZP_E820_ENTRIES, ZP_E820_TABLE = 0x1E8, 0x2D0
E820_ENTRY = struct.Struct("<QQI")

LOADED_HIGH = 1
XLF_KERNEL_64 = 1
# The 64-bit entry: out 0xe9, 'L'; hlt; jmp back (startup_64 would be here).
ENTRY_CODE = bytes.fromhex("b04ce6e9f4ebfd")
VMLINUX_PADDR = 16 * MIB
VMLINUX_VADDR = 0xFFFF_FFFF_8100_0000


def put(image: bytearray, name: str, value: int) -> None:
    offset, width = BZ_FIELDS[name]
    image[offset : offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def get(data: bytes | bytearray, name: str, base: int = 0) -> int:
    offset, width = BZ_FIELDS[name]
    return int.from_bytes(data[base + offset : base + offset + width], "little")


def build_bzimage(
    *,
    version: int = 0x020F,
    xloadflags: int = XLF_KERNEL_64,
    loadflags: int = LOADED_HIGH,
    setup_sects: int = 1,
    header_end: int = 0x26C,
    pref_address: int = VMLINUX_PADDR,
    init_size: int = 2 * MIB,
    kernel_alignment: int = 2 * MIB,
    relocatable: bool = True,
    cmdline_size: int = 2047,
    initrd_addr_max: int = 0x7FFF_FFFF,
    kernel: bytes | None = None,
) -> bytes:
    """Setup sectors with a setup header, then the protected-mode kernel (entry at +0x200)."""
    setup = bytearray((setup_sects or 4) * 512 + 512)
    put(setup, "setup_sects", setup_sects)
    put(setup, "boot_flag", 0xAA55)
    setup[0x200] = 0xEB  # jmp short: its byte says where the header ends
    setup[0x201] = header_end - 0x202
    setup[0x202:0x206] = b"HdrS"
    put(setup, "version", version)
    put(setup, "loadflags", loadflags)
    put(setup, "code32_start", 0x10_0000)
    put(setup, "initrd_addr_max", initrd_addr_max)
    put(setup, "kernel_alignment", kernel_alignment)
    put(setup, "relocatable_kernel", int(relocatable))
    put(setup, "xloadflags", xloadflags)
    put(setup, "cmdline_size", cmdline_size)
    put(setup, "pref_address", pref_address)
    put(setup, "init_size", init_size)
    if kernel is None:
        kernel = bytes(0x200) + ENTRY_CODE.ljust(0x200, b"\x90")
    return bytes(setup) + kernel


def elf_note(name: bytes, note_type: int, desc: bytes) -> bytes:
    """One ELF note: namesz, descsz, type, then name and desc, each padded to 4 bytes."""
    named = name + b"\0"
    return (
        struct.pack("<III", len(named), len(desc), note_type)
        + named.ljust(-(-len(named) // 4) * 4, b"\0")
        + desc.ljust(-(-len(desc) // 4) * 4, b"\0")
    )


LINUX_NOTE = elf_note(b"Linux", 0x100, b"6.1.0-test\0")  # LINUX_ELFNOTE_BUILD_SALT
XEN_NOTE = elf_note(b"Xen", 18, struct.pack("<I", VMLINUX_PADDR))  # XEN_ELFNOTE_PHYS32_ENTRY


def build_vmlinux(
    *,
    notes: bytes = LINUX_NOTE,
    paddr: int = VMLINUX_PADDR,
    vaddr: int = VMLINUX_VADDR,
    bss: int = 0x1000,
    bits: int = 64,
) -> bytes:
    """An x86-64 ELF executable laid out as Linux's: text linked high, loaded at `paddr`,
    e_entry physical (phys_startup_64), and a PT_NOTE segment carrying `notes`."""
    if bits == 32:
        vaddr &= 0xFFFF_FFFF
    text = ENTRY_CODE.ljust(0x1000, b"\x90")
    segments = [Seg(paddr, text, memsz=len(text) + bss, vaddr=vaddr)]
    if notes:
        segments.append(Seg(0, notes, p_type=PT_NOTE))
    assert segments[0].p_type == PT_LOAD
    return build_elf(bits, segments, paddr)
