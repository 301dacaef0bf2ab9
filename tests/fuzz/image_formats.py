"""The ELF and multiboot layouts the image fuzzer builds, mutates and checks.

Constants from the System V ABI (elf(5)) and the Multiboot 0.6.96
specification, and readers for fields at an offset; shared by the seed
builders, the mutations and the oracle, so that each reads the formats alike.
"""

from __future__ import annotations

import struct

PT_LOAD, PT_NOTE = 1, 4
ET_EXEC, ET_DYN = 2, 3
EM_386, EM_X86_64 = 3, 62
ELF_HEADER = {32: struct.Struct("<16sHHIIIIIHHHHHH"), 64: struct.Struct("<16sHHIQQQIHHHHHH")}
ELF_PHDR = {32: struct.Struct("<IIIIIIII"), 64: struct.Struct("<IIQQQQQQ")}
# (offset, width) of the ELF fields the fuzzer and the oracle read (System V ABI, elf(5)).
ELF_FIELDS = {
    32: {"e_type": (16, 2), "e_machine": (18, 2), "e_entry": (24, 4), "e_phoff": (28, 4),
         "e_phentsize": (42, 2), "e_phnum": (44, 2)},
    64: {"e_type": (16, 2), "e_machine": (18, 2), "e_entry": (24, 8), "e_phoff": (32, 8),
         "e_phentsize": (54, 2), "e_phnum": (56, 2)},
}  # fmt: skip
PHDR_FIELDS = {
    32: {"p_type": (0, 4), "p_offset": (4, 4), "p_vaddr": (8, 4), "p_paddr": (12, 4),
         "p_filesz": (16, 4), "p_memsz": (20, 4)},
    64: {"p_type": (0, 4), "p_offset": (8, 8), "p_vaddr": (16, 8), "p_paddr": (24, 8),
         "p_filesz": (32, 8), "p_memsz": (40, 8)},
}  # fmt: skip

MB_MAGIC = 0x1BADB002
MB_SEARCH = 8192
MB_PAGE_ALIGN, MB_MEMORY_INFO, MB_AOUT_KLUDGE = 1 << 0, 1 << 1, 1 << 16
MB_ADDRESS_FIELDS = ("header_addr", "load_addr", "load_end_addr", "bss_end_addr", "entry_addr")
MB_BOOTLOADER_MAGIC = 0x2BADB002
MB_INFO_SIZE = 116


def read_field(image: bytes | bytearray, offset: int, width: int) -> int:
    """A little-endian field; struct.error (a bug of the oracle's caller) if out of the file."""
    if offset < 0 or offset + width > len(image):
        raise struct.error(f"field at {offset}+{width} is outside the {len(image)}-byte image")
    return int.from_bytes(image[offset : offset + width], "little")


def elf_bits(image: bytes | bytearray) -> int | None:
    if image[:4] != b"\x7fELF" or len(image) < 5:
        return None
    return {1: 32, 2: 64}.get(image[4])


def find_multiboot_magic(image: bytes | bytearray, need_checksum: bool) -> int | None:
    """Offset of the first 4-aligned magic in the first 8 KiB (with a valid checksum if asked)."""
    magic = struct.pack("<I", MB_MAGIC)
    limit = min(len(image), MB_SEARCH) - 12
    for offset in range(0, limit + 1, 4):
        if image[offset : offset + 4] != magic:
            continue
        flags, checksum = struct.unpack_from("<II", image, offset + 4)
        if not need_checksum or (MB_MAGIC + flags + checksum) & 0xFFFF_FFFF == 0:
            return offset
    return None


def fix_multiboot_checksum(image: bytearray) -> bool:
    """Make the first aligned magic's checksum right again; False if there is no magic."""
    offset = find_multiboot_magic(image, need_checksum=False)
    if offset is None:
        return False
    flags = read_field(image, offset + 4, 4)
    image[offset + 8 : offset + 12] = (-(MB_MAGIC + flags) & 0xFFFF_FFFF).to_bytes(4, "little")
    return True
