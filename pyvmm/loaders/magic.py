"""How the formats' files start: enough to tell an image's format without its loader.

`pyvmm.loaders` looks at these first and imports the ELF and multiboot
loaders only for an image that may be one: a flat binary (a boot sector)
needs neither.
"""

from __future__ import annotations

# ELF (System V ABI, elf(5)): e_ident's magic and its class byte.
ELF_MAGIC = b"\x7fELF"
EI_CLASS = 4
ELFCLASS32, ELFCLASS64 = 1, 2

# Multiboot (Specification 0.6.96, 3.1.1, 3.1.2): the header's magic, 4-byte aligned.
MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH = 8192  # the header lies completely within the first 8 KiB


def is_elf(image: bytes) -> bool:
    return image[:4] == ELF_MAGIC


def may_be_multiboot(image: bytes) -> bool:
    """Whether the multiboot magic occurs in `image`'s first 8 KiB.

    False means there is no multiboot header; True, that
    `pyvmm.loaders.multiboot.find_header` must look (the magic must also be
    aligned, with a checksum, and leave room for the header).
    """
    magic = MULTIBOOT_HEADER_MAGIC.to_bytes(4, "little")
    return image.find(magic, 0, MULTIBOOT_SEARCH) >= 0
