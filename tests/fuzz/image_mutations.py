"""The image fuzzer's mutations: truncation, bit flips, boundary values, inflation.

Each changes an image in place and says what it did; many aim at the header
fields found in the image as it is at that moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tests.fuzz.image_formats import (
    ELF_FIELDS,
    ELF_HEADER,
    MB_ADDRESS_FIELDS,
    PHDR_FIELDS,
    elf_bits,
    find_multiboot_magic,
    fix_multiboot_checksum,
    read_field,
)
from tests.fuzz.image_linux import BZ_FIELDS, is_bzimage

# --- where the fields are -----------------------------------------------------------


@dataclass(frozen=True)
class Field:
    offset: int
    width: int
    name: str


def fields_of(image: bytes | bytearray) -> list[Field]:
    """The header fields found in `image` as it is now (it may be half-mutated already)."""
    fields = []
    bits = elf_bits(image)
    if bits is not None:
        fields += [Field(4, 1, "EI_CLASS"), Field(5, 1, "EI_DATA"), Field(6, 1, "EI_VERSION")]
        fields += [Field(off, width, name) for name, (off, width) in ELF_FIELDS[bits].items()]
        if len(image) >= ELF_HEADER[bits].size:
            phoff, phentsize, phnum = (
                read_field(image, *ELF_FIELDS[bits][name])
                for name in ("e_phoff", "e_phentsize", "e_phnum")
            )
            for index in range(min(phnum, 8)):
                base = phoff + index * phentsize
                fields += [
                    Field(base + off, width, f"phdr[{index}].{name}")
                    for name, (off, width) in PHDR_FIELDS[bits].items()
                ]
    if is_bzimage(image):  # boot.rst's setup header, at the same offsets in every bzImage
        fields += [Field(off, width, f"hdr.{name}") for name, (off, width) in BZ_FIELDS.items()]
    magic = find_multiboot_magic(image, need_checksum=False)
    if magic is not None:
        names = ("magic", "flags", "checksum", *MB_ADDRESS_FIELDS)
        fields += [Field(magic + 4 * index, 4, f"mb.{name}") for index, name in enumerate(names)]
    return [f for f in fields if f.offset + f.width <= len(image)]


# --- mutations ----------------------------------------------------------------------

# A mutation changes the image in place and says what it did (for the reproducer).
Mutation = Callable[[random.Random, bytearray, int], str]


def boundary_values(width: int, ram_size: int) -> list[int]:
    top = (1 << 8 * width) - 1
    values = [0, 1, 2, 4, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7C00, 0x1000, 0x10_0000, 0x9_FC00,
              0xD000_0000, 0xFFFF_F000, 0xFFFF_FFFF, 1 << 32, 1 << 40, 1 << 63, top, top - 1,
              top >> 1, ram_size, ram_size - 1, ram_size + 1, ram_size - 0x10_0000]  # fmt: skip
    return [value & top for value in values]


def _pick_field(rng: random.Random, image: bytearray) -> Field | None:
    fields = fields_of(image)
    return rng.choice(fields) if fields else None


def truncate(rng: random.Random, image: bytearray, ram_size: int) -> str:
    if not image:
        return "truncate (already empty)"
    field_ = _pick_field(rng, image) if rng.random() < 0.5 else None
    if field_ is None:
        cut = rng.randrange(len(image))
    else:  # cut just inside or after a header field
        cut = max(0, min(len(image) - 1, field_.offset + rng.randint(-1, field_.width)))
    del image[cut:]
    return f"truncate to {cut} bytes"


def flip_bits(rng: random.Random, image: bytearray, ram_size: int) -> str:
    if not image:
        return "flip (empty)"
    positions = []
    for _ in range(rng.randint(1, 8)):
        field_ = _pick_field(rng, image) if rng.random() < 0.5 else None
        if field_ is None:
            position = rng.randrange(min(len(image), rng.choice([64, 256, len(image)])))
        else:
            position = field_.offset + rng.randrange(field_.width)
        bit = rng.randrange(8)
        image[position] ^= 1 << bit
        positions.append(f"{position}.{bit}")
    return "flip bits " + ",".join(positions)


def overwrite_field(rng: random.Random, image: bytearray, ram_size: int) -> str:
    field_ = _pick_field(rng, image)
    if field_ is None:
        return overwrite_bytes(rng, image, ram_size)
    value = rng.choice(
        [*boundary_values(field_.width, ram_size), rng.getrandbits(8 * field_.width)]
    )
    image[field_.offset : field_.offset + field_.width] = value.to_bytes(field_.width, "little")
    # Keep a patched multiboot header valid most of the time, or the checksum gate stops it.
    fixed = field_.name.startswith("mb.") and field_.name != "mb.checksum" and rng.random() < 0.8
    if fixed:
        fix_multiboot_checksum(image)
    return f"{field_.name}=0x{value:x}" + (" (checksum fixed)" if fixed else "")


def set_size_huge(rng: random.Random, image: bytearray, ram_size: int) -> str:
    """A p_memsz (sometimes p_filesz too) or bss_end/load_end set to a huge or RAM-edge size."""
    candidates = [f for f in fields_of(image) if f.name.endswith(("p_memsz", "end_addr"))]
    if not candidates:
        return inflate(rng, image, ram_size)
    field_ = rng.choice(candidates)
    top = (1 << 8 * field_.width) - 1
    sizes = [1 << 40, 1 << 63, top, 0xFFFF_FFFF, 0x8000_0000, 1 << 30, ram_size, ram_size + 1,
             ram_size - 0x10_0000, ram_size + 0x10_0000]  # fmt: skip
    value = rng.choice(sizes) & top
    image[field_.offset : field_.offset + field_.width] = value.to_bytes(field_.width, "little")
    text = f"{field_.name}=0x{value:x}"
    if field_.name.endswith("p_memsz") and rng.random() < 0.3:
        filesz = field_.offset - field_.width  # p_filesz precedes p_memsz in both classes
        image[filesz : filesz + field_.width] = value.to_bytes(field_.width, "little")
        text += " and p_filesz too"
    if field_.name.startswith("mb."):
        fix_multiboot_checksum(image)
    return text


def inflate(rng: random.Random, image: bytearray, ram_size: int) -> str:
    """Append bytes: a little, a lot, or just enough to reach the end of RAM from a load address."""
    edge = ram_size - rng.choice([0x7C00, 0x10_0000]) - len(image) + rng.randint(-2, 2)
    size = rng.choice([1, 3, 4096, 1 << 16, 1 << 20, 3 << 20, edge])
    size = max(1, min(size, 4 << 20))
    kind = rng.choice(["zeros", "0xff", "random"])
    if kind == "random":
        block = rng.randbytes(4096)
        data = (block * (size // 4096 + 1))[:size]
    else:
        data = bytes([0 if kind == "zeros" else 0xFF]) * size
    image += data
    return f"append {size} bytes of {kind}"


def overwrite_bytes(rng: random.Random, image: bytearray, ram_size: int) -> str:
    if not image:
        return "overwrite (empty)"
    position = rng.randrange(len(image))
    size = min(rng.randint(1, 16), len(image) - position)
    data = rng.choice([bytes(size), b"\xff" * size, rng.randbytes(size)])
    image[position : position + size] = data
    return f"overwrite {size} bytes at {position}"


def insert_bytes(rng: random.Random, image: bytearray, ram_size: int) -> str:
    position = rng.randint(0, len(image))
    size = rng.choice([1, 4, 8, 64, 4096])
    image[position:position] = rng.randbytes(size)
    return f"insert {size} bytes at {position}"


def duplicate_chunk(rng: random.Random, image: bytearray, ram_size: int) -> str:
    if len(image) < 2:
        return "duplicate (too short)"
    source = rng.randrange(len(image))
    size = rng.randint(1, min(256, len(image) - source))
    target = rng.randrange(len(image))
    image[target : target + size] = image[source : source + size]
    return f"copy {size} bytes from {source} to {target}"


MUTATIONS: list[tuple[Mutation, float]] = [
    (truncate, 2),
    (flip_bits, 3),
    (overwrite_field, 4),
    (set_size_huge, 1.5),
    (inflate, 1.5),
    (overwrite_bytes, 1),
    (insert_bytes, 0.5),
    (duplicate_chunk, 0.5),
]
