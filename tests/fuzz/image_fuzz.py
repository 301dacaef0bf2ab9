"""Image fuzzing of the loaders: malformed flat, ELF and multiboot images never crash pyvmm.

Each case takes a seed image (a committed guest, or a synthetic image built
here with a structural defect), applies a few random mutations (truncation,
bit flips, boundary values written into header fields, size inflation) and
loads it through `load_image` into a fresh small GuestMemory, as `pyvmm boot`
does. The loader must either load it, with every segment in RAM and the entry
inside what it loaded (checked here by an independent parse of the image), or
raise a LoaderError (exit status 2) whose message is one non-empty line.
Anything else, or a case that takes seconds or hundreds of MiB, is a VMM bug,
reported with the seed and case number that reproduce it:

    python -m tests.fuzz.image_fuzz --count 20000 --seed 1
    python -m tests.fuzz.image_fuzz --seed 1 --case 1234   # replay one, traceback included

Case N of seed S depends on (S, N) only, so a failure replays alone.
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import resource
import struct
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.arch.x86_64.placement import check_entry_placement
from pyvmm.errors import LoaderError
from pyvmm.loaders import EntryPoint, load_image, read_image
from pyvmm.loaders.entry import CpuMode
from pyvmm.memory.guest_memory import GuestMemory

GUESTS = Path(__file__).resolve().parents[2] / "guests"
COMMITTED_GUESTS = {
    "elf32.elf": "elf32",
    "elf64.elf": "elf64",
    "multiboot.elf": "multiboot",
    "hello.bin": "flat",
}
FAMILIES = ("flat", "elf32", "elf64", "multiboot")

MIB = 1 << 20
GIB = 1 << 30
# Guest RAM per case: layout.ram_ranges of a few small sizes, plus a split one
# (2 MiB low, 2 MiB at 4 GiB) that stands for "-m 4G and more" at no host cost.
RAM_CONFIGS: dict[str, list[tuple[int, int]]] = {
    "2M": layout.ram_ranges(2 * MIB),
    "3M": layout.ram_ranges(3 * MIB),
    "8M": layout.ram_ranges(8 * MIB),
    "64M": layout.ram_ranges(64 * MIB),
    "2M+2M@4G": [(0, 2 * MIB), (4 * GIB, 2 * MIB)],
}
# Beyond these a case is a failure: a loader must refuse a huge image before allocating.
SLOW_CASE_SECONDS = 5.0
RSS_GROWTH_LIMIT = 512 * MIB
# Reading an image file may cost the image and a copy, not the 4 GiB cap.
READ_ALLOCATION_LIMIT = 2 * MIB
# Rejected images must leave RAM untouched; checked where RAM is small enough to scan.
UNTOUCHED_CHECK_LIMIT = 8 * MIB
SAMPLE = 4096  # bytes of each segment's data and bss compared after a load

# --- image builders -----------------------------------------------------------------

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
    32: {"p_type": (0, 4), "p_offset": (4, 4), "p_paddr": (12, 4), "p_filesz": (16, 4),
         "p_memsz": (20, 4)},
    64: {"p_type": (0, 4), "p_offset": (8, 8), "p_paddr": (24, 8), "p_filesz": (32, 8),
         "p_memsz": (40, 8)},
}  # fmt: skip

MB_MAGIC = 0x1BADB002
MB_SEARCH = 8192
MB_PAGE_ALIGN, MB_MEMORY_INFO, MB_AOUT_KLUDGE = 1 << 0, 1 << 1, 1 << 16
MB_ADDRESS_FIELDS = ("header_addr", "load_addr", "load_end_addr", "bss_end_addr", "entry_addr")
MB_BOOTLOADER_MAGIC = 0x2BADB002
MB_INFO_SIZE = 116

KERNEL_GPA = 0x10_0000
DATA_GPA = 0x10_1000
CODE = bytes.fromhex("b041e6e9f4ebfd").ljust(64, b"\x90")  # out 0xe9, 'A'; hlt; jmp $-1
DATA = bytes(range(256)) * 2


@dataclass(frozen=True)
class Seg:
    """One program header; None fields follow the data (offset: where it lands in the file)."""

    paddr: int
    data: bytes = b""
    memsz: int | None = None
    p_type: int = PT_LOAD
    offset: int | None = None
    filesz: int | None = None


def build_elf(
    bits: int,
    segments: Sequence[Seg],
    entry: int,
    *,
    e_type: int = ET_EXEC,
    machine: int | None = None,
    phoff: int | None = None,
    phentsize: int | None = None,
    phnum: int | None = None,
) -> bytes:
    """Header, program headers, then each segment's data; overrides patch the header only."""
    header, phdr = ELF_HEADER[bits], ELF_PHDR[bits]
    data_offset = header.size + phdr.size * len(segments)
    body = bytearray()
    entries = []
    for seg in segments:
        offset = data_offset + len(body) if seg.offset is None else seg.offset
        body += seg.data
        filesz = len(seg.data) if seg.filesz is None else seg.filesz
        memsz = filesz if seg.memsz is None else seg.memsz
        if bits == 64:
            fields = (seg.p_type, 5, offset, seg.paddr, seg.paddr, filesz, memsz, 0x1000)
        else:
            fields = (seg.p_type, offset, seg.paddr, seg.paddr, filesz, memsz, 5, 0x1000)
        entries.append(phdr.pack(*fields))
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    head = header.pack(
        ident,
        e_type,
        (EM_386 if bits == 32 else EM_X86_64) if machine is None else machine,
        1,
        entry,
        header.size if phoff is None else phoff,
        0,
        0,
        header.size,
        phdr.size if phentsize is None else phentsize,
        len(segments) if phnum is None else phnum,
        0,
        0,
        0,
    )
    return head + b"".join(entries) + bytes(body)


def multiboot_header(
    flags: int, addresses: Sequence[int] | None = None, checksum: int | None = None
) -> bytes:
    """Magic, flags, checksum (right unless given), then the address fields if any."""
    if checksum is None:
        checksum = -(MB_MAGIC + flags) & 0xFFFF_FFFF
    head = struct.pack("<III", MB_MAGIC, flags, checksum)
    if addresses is None:
        return head
    return head + struct.pack("<5I", *(value & 0xFFFF_FFFF for value in addresses))


def build_aout(
    *,
    load_addr: int = KERNEL_GPA,
    body: bytes = CODE + DATA,
    header_offset: int = 0,
    flags: int = MB_AOUT_KLUDGE | MB_MEMORY_INFO | MB_PAGE_ALIGN,
    header_addr: int | None = None,
    load_end_addr: int = 0,
    bss_end_addr: int = 0,
    entry_addr: int | None = None,
    checksum: int | None = None,
) -> bytes:
    """A multiboot kernel with address fields (the a.out kludge): padding, header, body."""
    header_addr = load_addr + header_offset if header_addr is None else header_addr
    entry_addr = load_addr + header_offset + 32 if entry_addr is None else entry_addr
    fields = (header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr)
    return b"\x90" * header_offset + multiboot_header(flags, fields, checksum) + body


def build_multiboot_elf(bits: int, extra: Sequence[Seg] = (), **elf: int) -> bytes:
    """An ELF kernel whose first segment starts with a multiboot header (no address fields)."""
    head = multiboot_header(MB_MEMORY_INFO | MB_PAGE_ALIGN)
    segments = [Seg(KERNEL_GPA, head + CODE), Seg(DATA_GPA, DATA, memsz=0x2000), *extra]
    return build_elf(bits, segments, elf.pop("entry", KERNEL_GPA + len(head)), **elf)


# --- seed corpus --------------------------------------------------------------------


@dataclass(frozen=True)
class SeedImage:
    name: str
    family: str  # one of FAMILIES: what the image claims to be
    data: bytes

    @property
    def sound(self) -> bool:
        """A well-formed image (it loads as it is, given the RAM), not a defect."""
        return self.name.startswith(("guests/", "flat/")) or self.name in SOUND_SEEDS


SOUND_SEEDS = {
    *(f"elf{bits}/{name}" for bits in (32, 64) for name in
      ("good", "good-note-and-empty-load", "entry-in-bss", "many-segments", "outside-small-ram")),
    *(f"multiboot/{name}" for name in
      ("aout", "aout-bss", "aout-header-offset", "elf32", "elf64", "elf-with-address-fields")),
}  # fmt: skip


def _elf_seeds(bits: int) -> dict[str, bytes]:
    good = [Seg(KERNEL_GPA, CODE), Seg(DATA_GPA, DATA, memsz=0x2000)]
    huge = 1 << 40 if bits == 64 else 0xFFFF_FFFF
    top = (1 << bits) - 1
    seeds = {
        "good": build_elf(bits, good, KERNEL_GPA),
        "good-note-and-empty-load": build_elf(
            bits, [Seg(0, b"NOTE", p_type=PT_NOTE), *good, Seg(0x18_0000)], KERNEL_GPA
        ),
        "entry-in-bss": build_elf(bits, good, DATA_GPA + 0x1800),
        "many-segments": build_elf(
            bits, [Seg(KERNEL_GPA + index * 0x100, CODE[:16]) for index in range(200)], KERNEL_GPA
        ),
        "low-segment-on-vmm-area": build_elf(bits, [Seg(0x1000, CODE)], 0x1000),
        "overlap": build_elf(bits, [Seg(KERNEL_GPA, CODE, memsz=0x2000), good[1]], KERNEL_GPA),
        "overlap-same-start": build_elf(bits, [good[0], Seg(KERNEL_GPA, DATA)], KERNEL_GPA),
        "outside-small-ram": build_elf(bits, [Seg(0x300_0000, CODE)], 0x300_0000),
        "outside-ram": build_elf(bits, [Seg(0xC000_0000, CODE)], 0xC000_0000),
        "in-mmio-hole": build_elf(bits, [Seg(0xE000_0000, CODE)], 0xE000_0000),
        "straddles-ram-end": build_elf(bits, [Seg(0x1F_FFF0, CODE)], 0x1F_FFF0),
        "huge-memsz": build_elf(bits, [good[0], Seg(DATA_GPA, DATA, memsz=huge)], KERNEL_GPA),
        "filesz-over-memsz": build_elf(bits, [Seg(KERNEL_GPA, CODE, memsz=16)], KERNEL_GPA),
        "offset-past-eof": build_elf(bits, [Seg(KERNEL_GPA, CODE, offset=0x10000)], KERNEL_GPA),
        "offset-max": build_elf(bits, [Seg(KERNEL_GPA, CODE, offset=top)], KERNEL_GPA),
        "entry-outside": build_elf(bits, good, 0x20_0000),
        "entry-at-segment-end": build_elf(bits, good, KERNEL_GPA + len(CODE)),
        "entry-in-gap": build_elf(bits, good, KERNEL_GPA + 0x800),
        "phnum-huge": build_elf(bits, good, KERNEL_GPA, phnum=0xFFFF),
        "phentsize-zero": build_elf(bits, good, KERNEL_GPA, phentsize=0),
        "phentsize-small": build_elf(bits, good, KERNEL_GPA, phentsize=16),
        "phentsize-plus-one": build_elf(bits, good, KERNEL_GPA, phentsize=ELF_PHDR[bits].size + 1),
        "phentsize-huge": build_elf(bits, good, KERNEL_GPA, phentsize=0xFFFF),
        "phoff-past-eof": build_elf(bits, good, KERNEL_GPA, phoff=0x10000),
        "phoff-max": build_elf(bits, good, KERNEL_GPA, phoff=top),
        "no-pt-load": build_elf(bits, [Seg(KERNEL_GPA, CODE, p_type=PT_NOTE)], KERNEL_GPA),
        "et-dyn": build_elf(bits, good, KERNEL_GPA, e_type=ET_DYN),
        "wrong-machine": build_elf(
            bits, good, KERNEL_GPA, machine=EM_X86_64 if bits == 32 else EM_386
        ),
        "ident-only": b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]),
    }
    if bits == 64:
        seeds["above-4g"] = build_elf(bits, [Seg(4 * GIB, CODE)], 4 * GIB)
        seeds["address-wrap"] = build_elf(bits, [Seg(top - 0xFFF, CODE, memsz=0x2000)], top - 0xFFF)
        seeds["memsz-2**63"] = build_elf(bits, [Seg(KERNEL_GPA, CODE, memsz=1 << 63)], KERNEL_GPA)
    return seeds


def _elf_with_address_fields() -> bytes:
    """An ELF32 file whose multiboot header has address fields: they win over the ELF headers."""
    header_offset = ELF_HEADER[32].size + ELF_PHDR[32].size  # the segment data starts here
    gpa = 0x18_0000  # not where the program header says
    fields = (gpa, gpa, 0, gpa + 0x1000, gpa + 32)
    data = multiboot_header(MB_AOUT_KLUDGE | MB_MEMORY_INFO, fields) + CODE
    image = build_elf(32, [Seg(KERNEL_GPA, data)], KERNEL_GPA)
    assert image[header_offset : header_offset + 4] == data[:4]
    return image


def _multiboot_seeds() -> dict[str, bytes]:
    aout = MB_AOUT_KLUDGE | MB_MEMORY_INFO | MB_PAGE_ALIGN
    end = KERNEL_GPA + 32 + len(CODE + DATA)
    padded = b"\x90" * (MB_SEARCH + 64) + multiboot_header(aout, (KERNEL_GPA,) * 5) + CODE
    return {
        "aout": build_aout(),
        "aout-bss": build_aout(bss_end_addr=KERNEL_GPA + 0x10000),
        "aout-header-offset": build_aout(header_offset=0x100, load_end_addr=end + 0x100),
        "aout-bad-checksum": build_aout(checksum=0x1234_5678),
        "aout-load-above-header": build_aout(header_addr=KERNEL_GPA - 0x10),
        "aout-header-before-file": build_aout(header_addr=KERNEL_GPA + 0x800),
        "aout-load-end-below-load": build_aout(load_end_addr=KERNEL_GPA - 0x1000),
        "aout-load-end-past-eof": build_aout(load_end_addr=KERNEL_GPA + MIB),
        "aout-bss-below-load-end": build_aout(bss_end_addr=KERNEL_GPA + 0x10),
        "aout-bss-huge": build_aout(bss_end_addr=0xFFFF_FFFF),
        "aout-bss-fills-2m": build_aout(bss_end_addr=2 * MIB),
        "aout-entry-outside": build_aout(entry_addr=0x20_0000),
        "aout-header-runs-past-8k": build_aout(header_offset=MB_SEARCH - 16),
        "aout-header-beyond-8k": padded,
        "aout-fields-truncated": build_aout(body=b"")[:-8],
        "aout-unknown-required-flag": build_aout(flags=aout | 1 << 5),
        "aout-on-vmm-area": build_aout(load_addr=0x1000),
        "aout-on-boot-stack": build_aout(load_addr=0x7_0000),
        "aout-crosses-4g": build_aout(load_addr=0xFFFF_FF00),
        "no-address-fields-not-elf": multiboot_header(MB_MEMORY_INFO) + CODE,
        "elf32": build_multiboot_elf(32),
        "elf64": build_multiboot_elf(64),
        "elf64-above-4g": build_multiboot_elf(64, [Seg(4 * GIB, CODE)], entry=4 * GIB),
        "elf32-overlap": build_multiboot_elf(32, [Seg(DATA_GPA + 0x100, CODE)]),
        "elf32-huge-memsz": build_multiboot_elf(32, [Seg(0x20_0000, CODE, memsz=0xFFFF_F000)]),
        "elf32-entry-outside": build_multiboot_elf(32, entry=0x30_0000),
        "elf32-on-vmm-area": build_multiboot_elf(32, [Seg(0x6000, CODE)]),
        "elf-with-address-fields": _elf_with_address_fields(),
    }  # fmt: skip


def _flat_seeds() -> dict[str, bytes]:
    sector = bytearray(CODE.ljust(512, b"\0"))
    sector[510:512] = b"\x55\xaa"
    return {
        "one-byte": b"\xf4",
        "boot-sector": bytes(sector),
        "1m": bytes(MIB),
        "multiboot-magic-bad-checksum": CODE + struct.pack("<III", MB_MAGIC, 0, 0) + CODE,
        "elf-magic-not-at-start": b"\x90" + b"\x7fELF" + CODE,
    }


@cache
def seed_corpus() -> tuple[SeedImage, ...]:
    """The committed guests first, then the synthetic images (names say the defect)."""
    seeds = [
        SeedImage(f"guests/{name}", family, (GUESTS / name).read_bytes())
        for name, family in COMMITTED_GUESTS.items()
    ]
    for bits in (32, 64):
        seeds += [SeedImage(f"elf{bits}/{n}", f"elf{bits}", d) for n, d in _elf_seeds(bits).items()]
    seeds += [SeedImage(f"multiboot/{n}", "multiboot", d) for n, d in _multiboot_seeds().items()]
    seeds += [SeedImage(f"flat/{n}", "flat", d) for n, d in _flat_seeds().items()]
    return tuple(seeds)


# --- where the fields are -----------------------------------------------------------


@dataclass(frozen=True)
class Field:
    offset: int
    width: int
    name: str


def _read(image: bytes | bytearray, offset: int, width: int) -> int:
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


def fields_of(image: bytes | bytearray) -> list[Field]:
    """The header fields found in `image` as it is now (it may be half-mutated already)."""
    fields = []
    bits = elf_bits(image)
    if bits is not None:
        fields += [Field(4, 1, "EI_CLASS"), Field(5, 1, "EI_DATA"), Field(6, 1, "EI_VERSION")]
        fields += [Field(off, width, name) for name, (off, width) in ELF_FIELDS[bits].items()]
        if len(image) >= ELF_HEADER[bits].size:
            phoff, phentsize, phnum = (
                _read(image, *ELF_FIELDS[bits][name])
                for name in ("e_phoff", "e_phentsize", "e_phnum")
            )
            for index in range(min(phnum, 8)):
                base = phoff + index * phentsize
                fields += [
                    Field(base + off, width, f"phdr[{index}].{name}")
                    for name, (off, width) in PHDR_FIELDS[bits].items()
                ]
    magic = find_multiboot_magic(image, need_checksum=False)
    if magic is not None:
        names = ("magic", "flags", "checksum", *MB_ADDRESS_FIELDS)
        fields += [Field(magic + 4 * index, 4, f"mb.{name}") for index, name in enumerate(names)]
    return [f for f in fields if f.offset + f.width <= len(image)]


def fix_multiboot_checksum(image: bytearray) -> bool:
    """Make the first aligned magic's checksum right again; False if there is no magic."""
    offset = find_multiboot_magic(image, need_checksum=False)
    if offset is None:
        return False
    flags = _read(image, offset + 4, 4)
    image[offset + 8 : offset + 12] = (-(MB_MAGIC + flags) & 0xFFFF_FFFF).to_bytes(4, "little")
    return True


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


# --- cases --------------------------------------------------------------------------

CMDLINES = ["kernel", "", "kernel console=ttyS0", "k" * 5000, "k\udcffpath", "nul\0inside",
            "new\nline", "kernel \u00e9\u4e2d"]  # fmt: skip
MODULE_SIZES = [0, 10, 4096, 300_000, 3 * MIB]


@dataclass(frozen=True)
class Case:
    """Everything one load needs; built from (seed, index) alone."""

    seed: int
    index: int
    source: SeedImage
    image: bytes
    mutations: tuple[str, ...]
    ram: str
    mode: CpuMode | None
    force_multiboot: bool
    load_gpa: int | None
    cmdline: str
    modules: tuple[tuple[str, bytes], ...]
    via_file: bool  # read back with read_image from a file, as `pyvmm boot` does

    def describe(self) -> str:
        mode = self.mode.value if self.mode else "auto"
        gpa = "default" if self.load_gpa is None else f"0x{self.load_gpa:x}"
        modules = ", ".join(f"{s!r}:{len(d)}B" for s, d in self.modules) or "none"
        return (
            f"image {self.source.name} -> {len(self.image)} bytes after "
            f"[{'; '.join(self.mutations) or 'no mutation'}]; ram {self.ram}, mode {mode}, "
            f"multiboot {'forced' if self.force_multiboot else 'auto'}, load address {gpa}, "
            f"cmdline {self.cmdline[:40]!r}, modules {modules}"
            + (", read from a file" if self.via_file else "")
        )


def make_case(seed: int, index: int) -> Case:
    rng = random.Random(f"image-fuzz:{seed}:{index}")
    family = rng.choice(FAMILIES)
    # Now and then only well-formed seeds: mutated, they reach deeper than a defect does.
    only_sound = rng.random() < 0.4
    seeds = [s for s in seed_corpus() if s.family == family and (s.sound or not only_sound)]
    source = rng.choice(seeds)
    ram = rng.choice(list(RAM_CONFIGS))
    ram_size = sum(size for _, size in RAM_CONFIGS[ram])
    image = bytearray(source.data)
    count = rng.choices([0, 1, 2, 3, 4], weights=[2, 4, 2, 1, 1])[0]
    functions, weights = zip(*MUTATIONS, strict=True)
    mutations = [fn(rng, image, ram_size) for fn in rng.choices(functions, weights, k=count)]
    if (
        source.family == "multiboot"
        and count
        and rng.random() < 0.5
        and fix_multiboot_checksum(image)
    ):
        mutations.append("multiboot checksum fixed")
    is_flat = source.family == "flat"
    modules: tuple[tuple[str, bytes], ...] = ()
    if rng.random() < (0.25 if source.family == "multiboot" else 0.02):
        modules = tuple(
            (rng.choice(["mod", "", "m\udcff", "m\0"]), bytes(rng.choice(MODULE_SIZES)))
            for _ in range(rng.randint(1, 2))
        )
    return Case(
        seed=seed,
        index=index,
        source=source,
        image=bytes(image),
        mutations=tuple(mutations),
        ram=ram,
        mode=_choose_mode(rng, source.family),
        force_multiboot=rng.random() < (0.4 if source.family == "multiboot" else 0.1),
        load_gpa=_choose_load_gpa(rng, ram_size, len(image)) if is_flat or rng.random() < 0.05
        else None,
        cmdline=CMDLINES[0] if rng.random() < 0.85 else rng.choice(CMDLINES),
        modules=modules,
        via_file=rng.random() < 0.15,
    )  # fmt: skip


# The modes each family can start in; others are tried now and then, and must be refused.
NATURAL_MODES = {
    "flat": list(CpuMode),
    "elf32": [CpuMode.PROTECTED, CpuMode.PAGED, CpuMode.LONG, CpuMode.USER],
    "elf64": [CpuMode.LONG, CpuMode.USER],
    "multiboot": [CpuMode.PROTECTED],
}


def _choose_mode(rng: random.Random, family: str) -> CpuMode | None:
    roll = rng.random()
    if roll < 0.5:
        return None
    return rng.choice(NATURAL_MODES[family] if roll < 0.9 else list(CpuMode))


def _choose_load_gpa(rng: random.Random, ram_size: int, size: int) -> int | None:
    if rng.random() < 0.6:
        return None
    return rng.choice([0, 0x500, 0x7C00, 0xFFFF, 0x1_0000, 0x10_0000, 0x9_FC00, ram_size - size,
                       ram_size - size + 1, ram_size - 1, 0xD000_0000 - 16, 4 * GIB, (1 << 64) - 1,
                       rng.randrange(1 << 32)])  # fmt: skip


class OracleProblem(Exception):
    """Something the loaders did wrong without raising: a failure of the case."""


@cache
def _scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="pyvmm-image-fuzz-")


def read_back(image: bytes) -> bytes:
    """`image` written to a file and read with read_image, its allocations watched."""
    path = Path(_scratch().name) / "image"
    path.write_bytes(image)
    tracemalloc.start()
    try:
        data = read_image(str(path))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if peak > 2 * len(image) + READ_ALLOCATION_LIMIT:
        raise OracleProblem(f"read_image allocated {peak >> 20} MiB for {len(image)} bytes")
    if data != image:
        raise OracleProblem("read_image returned other bytes than the file holds")
    return data


def load_case(case: Case, memory: GuestMemory) -> EntryPoint:
    entry = load_image(
        read_back(case.image) if case.via_file else case.image,
        memory,
        mode=case.mode,
        load_gpa=case.load_gpa,
        default_flat_gpa=default_load_gpa,
        force_multiboot=case.force_multiboot,
        cmdline=case.cmdline,
        modules=case.modules,
    )
    return entry


# --- the oracle ---------------------------------------------------------------------

# (file offset, gpa, filesz, memsz) of one piece the loader must have copied.
Piece = tuple[int, int, int, int]


def elf_pieces(image: bytes) -> tuple[int, list[Piece]]:
    """e_entry and the non-empty PT_LOAD segments, read independently of the loader."""
    bits = elf_bits(image)
    if bits is None:
        raise struct.error("not an ELF32/ELF64 image")
    header = {name: _read(image, off, width) for name, (off, width) in ELF_FIELDS[bits].items()}
    pieces = []
    for index in range(header["e_phnum"]):
        base = header["e_phoff"] + index * header["e_phentsize"]
        phdr = {name: _read(image, base + off, w) for name, (off, w) in PHDR_FIELDS[bits].items()}
        if phdr["p_type"] == PT_LOAD and phdr["p_memsz"]:
            pieces.append((phdr["p_offset"], phdr["p_paddr"], phdr["p_filesz"], phdr["p_memsz"]))
    return header["e_entry"], pieces


def multiboot_pieces(image: bytes) -> tuple[int, list[Piece]]:
    offset = find_multiboot_magic(image, need_checksum=True)
    if offset is None:
        raise struct.error("no multiboot header")
    if not _read(image, offset + 4, 4) & MB_AOUT_KLUDGE:
        return elf_pieces(image)
    header_addr, load_addr, load_end, bss_end, entry = (
        _read(image, offset + 12 + 4 * index, 4) for index in range(5)
    )
    file_start = offset - (header_addr - load_addr)
    end = load_end or load_addr + len(image) - file_start
    return entry, [(file_start, load_addr, end - load_addr, (bss_end or end) - load_addr)]


def check_pieces(
    image: bytes, memory: GuestMemory, pieces: list[Piece], entry: EntryPoint, expected_entry: int
) -> list[str]:
    problems = []
    if not pieces:
        return ["loaded, but the image has no piece to load"]
    for offset, gpa, filesz, memsz in pieces:
        if not memory.contains(gpa, memsz):
            problems.append(f"piece 0x{gpa:x}..0x{gpa + memsz:x} is not inside RAM")
        if filesz > memsz or offset < 0 or offset + filesz > len(image):
            problems.append(f"piece at 0x{gpa:x} takes file bytes the image does not have")
    ordered = sorted(pieces, key=lambda piece: piece[1])
    for (_, gpa, _, memsz), (_, next_gpa, _, _) in itertools.pairwise(ordered):
        if next_gpa < gpa + memsz:
            problems.append(f"pieces at 0x{gpa:x} and 0x{next_gpa:x} overlap")
    if problems:
        return problems
    if entry.entry != expected_entry:
        problems.append(f"entry 0x{entry.entry:x}, the image says 0x{expected_entry:x}")
    if not any(gpa <= entry.entry < gpa + memsz for _, gpa, _, memsz in pieces):
        problems.append(f"entry 0x{entry.entry:x} is outside every loaded piece")
    start = min(gpa for _, gpa, _, _ in pieces)
    end = max(gpa + memsz for _, gpa, _, memsz in pieces)
    if (entry.image_start, entry.image_end) != (start, end):
        problems.append(
            f"image range 0x{entry.image_start:x}..0x{entry.image_end:x}, "
            f"the pieces span 0x{start:x}..0x{end:x}"
        )
    for offset, gpa, filesz, memsz in pieces[:64]:
        for piece_offset in {0, max(0, filesz - SAMPLE)}:
            size = min(SAMPLE, filesz - piece_offset)
            wanted = image[offset + piece_offset : offset + piece_offset + size]
            if memory.read(gpa + piece_offset, size) != wanted:
                problems.append(f"file data at 0x{gpa + piece_offset:x} was not copied")
        for bss_offset in {filesz, max(filesz, memsz - SAMPLE)}:
            size = min(SAMPLE, memsz - bss_offset)
            if memory.read(gpa + bss_offset, size) != bytes(size):
                problems.append(f"bss at 0x{gpa + bss_offset:x} was not zeroed")
    return problems


def check_mode(case: Case, entry: EntryPoint) -> list[str]:
    problems = []
    if case.mode is not None and entry.mode is not case.mode:
        problems.append(f"asked for {case.mode.value} mode, got {entry.mode.value}")
    if entry.mode is CpuMode.REAL and (entry.image_end > 0x10_0000 or entry.entry > 0xFFFF):
        problems.append("real-mode image beyond 1 MiB or entry beyond 0xffff")
    if entry.mode in (CpuMode.PROTECTED, CpuMode.PAGED) and entry.image_end > 1 << 32:
        problems.append(f"32-bit {entry.mode.value} image ends above 4 GiB")
    return problems


def check_flat(case: Case, memory: GuestMemory, entry: EntryPoint) -> list[str]:
    mode = case.mode or CpuMode.REAL
    gpa = default_load_gpa(mode) if case.load_gpa is None else case.load_gpa
    size = len(case.image)
    if (entry.entry, entry.image_start, entry.image_end) != (gpa, gpa, gpa + size):
        return [f"flat image at 0x{entry.image_start:x}, entry 0x{entry.entry:x}; wanted 0x{gpa:x}"]
    if not memory.contains(gpa, size):
        return ["flat image outside RAM"]
    tail = max(0, size - SAMPLE)
    if (
        memory.read(gpa, min(size, SAMPLE)) != case.image[:SAMPLE]
        or memory.read(gpa + tail, size - tail) != case.image[tail:]
    ):
        return ["flat image was not copied"]
    return []


def check_multiboot(case: Case, memory: GuestMemory, entry: EntryPoint) -> list[str]:
    registers = dict(entry.registers)
    if entry.mode is not CpuMode.PROTECTED or registers.get("rax") != MB_BOOTLOADER_MAGIC:
        return ["a multiboot kernel must start in protected mode with EAX=0x2BADB002"]
    info = registers.get("rbx", -1)
    if not (memory.contains(info, MB_INFO_SIZE) and info + MB_INFO_SIZE <= 1 << 32):
        return [f"multiboot information at 0x{info:x} is not in RAM below 4 GiB"]
    expected_entry, pieces = multiboot_pieces(case.image)
    problems = check_pieces(case.image, memory, pieces, entry, expected_entry)
    taken = [(gpa, gpa + memsz) for _, gpa, _, memsz in pieces]
    taken += [(start, end) for start, end, _ in layout.reserved_ranges(True)]
    if any(info < end and start < info + MB_INFO_SIZE for start, end in taken):
        problems.append(f"multiboot information at 0x{info:x} overlaps the kernel or the VMM")
    if memory.read_u32(info + 20) != len(case.modules):
        problems.append("mods_count differs from the modules given")
    mods_addr = memory.read_u32(info + 24)
    for index, (_string, data) in enumerate(case.modules):
        start, end = (memory.read_u32(mods_addr + 16 * index + k) for k in (0, 4))
        if end - start != len(data) or not memory.contains(start, max(len(data), 1)):
            problems.append(f"module {index} at 0x{start:x}..0x{end:x} is misplaced")
        elif (
            any(start < e and s < end for s, e in taken)
            or memory.read(start, min(len(data), SAMPLE)) != data[:SAMPLE]
        ):
            problems.append(f"module {index} overlaps the kernel or was not copied")
        taken.append((start, end))
    return problems


def check_loaded(case: Case, memory: GuestMemory, entry: EntryPoint) -> list[str]:
    """What is wrong with a successful load (nothing, for a correct loader)."""
    problems = check_mode(case, entry)
    if not memory.contains(entry.entry):
        problems.append(f"entry 0x{entry.entry:x} is not in RAM")
    if entry.protocol == "flat":
        return problems + check_flat(case, memory, entry)
    if entry.protocol == "multiboot":
        return problems + check_multiboot(case, memory, entry)
    bits = elf_bits(case.image)
    if entry.protocol != f"elf{bits}":
        return [*problems, f"protocol {entry.protocol!r} for an image of ELF class {bits}"]
    if bits == 64 and not entry.mode.is_64bit:
        problems.append(f"ELF64 image entered in {entry.mode.value} mode")
    expected_entry, pieces = elf_pieces(case.image)
    return problems + check_pieces(case.image, memory, pieces, entry, expected_entry)


def note_on(entry: EntryPoint) -> str:
    """A load the oracle accepts but a run would not survive (reported, not failed)."""
    if entry.mode.is_64bit and entry.entry >= 1 << 32:
        return "long-mode entry above the VMM's 4 GiB identity map"
    return ""


def check_rejected(error: LoaderError) -> list[str]:
    message = str(error)
    problems = []
    if error.exit_status != 2:
        problems.append(f"exit status {error.exit_status}, not 2")
    if not message.strip() or len(message.splitlines()) != 1:
        problems.append(f"message is not one non-empty line: {message!r}")
    return problems


def blank_numbers(text: str) -> str:
    """`text` with addresses, sizes and quoted strings blanked out: one kind of message."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'...'", text)
    text = re.sub(r"0x[0-9a-f]+", "X", text)
    return re.sub(r"\b\d+(?:\.\d+)?\b", "N", text)


def message_kind(error: BaseException) -> str:
    return f"{type(error).__name__}: {blank_numbers(str(error))}"


# --- running ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    case: Case
    kind: str  # "loaded", "rejected" or "failed"
    detail: str  # the message kind, or what went wrong
    seconds: float
    note: str = ""  # loaded, but worth a look (see note_on)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_case(case: Case) -> Outcome:
    """Load one case into fresh RAM and judge the result."""
    peak = _peak_rss()
    started = time.perf_counter()
    problems: list[str] = []
    kind, detail, note = "failed", "", ""
    with GuestMemory.from_ranges(RAM_CONFIGS[case.ram]) as memory:
        try:
            entry = load_case(case, memory)
        except LoaderError as error:
            kind, detail = "rejected", message_kind(error)
            problems = check_rejected(error)
            low = memory.regions[0]
            if low.size <= UNTOUCHED_CHECK_LIMIT and memory.read(low.gpa, low.size) != bytes(
                low.size
            ):
                problems.append("a rejected image wrote to guest RAM")
        except OracleProblem as problem:
            problems = [str(problem)]
        except Exception as error:  # anything but a LoaderError is a VMM bug
            problems = [f"{type(error).__name__}: {error}"]
        else:
            kind, detail, note = "loaded", entry.protocol, note_on(entry)
            try:
                # As `pyvmm boot` does next: can pyvmm's own CPU set-up start it?
                check_entry_placement(entry)
            except LoaderError as error:  # rejected after loading: the VM is discarded
                kind, detail, note = "rejected", message_kind(error), ""
                problems = check_rejected(error)
        if kind == "loaded":
            try:
                # pyvmm's placement checks refuse these now; one that loads is a regression.
                problems = [note] if note else check_loaded(case, memory, entry)
            except Exception as error:  # the oracle could not read what was loaded
                problems = [f"oracle failed on a loaded image: {type(error).__name__}: {error}"]
    seconds = time.perf_counter() - started
    if seconds > SLOW_CASE_SECONDS:
        problems.append(f"took {seconds:.1f} s")
    grown = _peak_rss() - peak
    if grown > RSS_GROWTH_LIMIT:
        problems.append(f"peak memory grew by {grown >> 20} MiB")
    if problems:
        return Outcome(case, "failed", "; ".join(problems)[:500], seconds)
    return Outcome(case, kind, detail, seconds, note)


@dataclass
class Report:
    seed: int
    count: int = 0
    by_family: dict[str, Counter[str]] = field(default_factory=dict)
    by_image: dict[str, Counter[str]] = field(default_factory=dict)
    rejected_by_class: Counter[str] = field(default_factory=Counter)
    rejected_by_kind: Counter[str] = field(default_factory=Counter)
    loaded_by_protocol: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    failures: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    slowest: tuple[float, int] = (0.0, -1)

    def add(self, outcome: Outcome) -> None:
        case = outcome.case
        self.count += 1
        self.by_family.setdefault(case.source.family, Counter())[outcome.kind] += 1
        self.by_image.setdefault(case.source.name, Counter())[outcome.kind] += 1
        if outcome.kind == "rejected":
            self.rejected_by_class[outcome.detail.split(":", 1)[0]] += 1
            self.rejected_by_kind[outcome.detail] += 1
        elif outcome.kind == "loaded":
            self.loaded_by_protocol[outcome.detail] += 1
            if outcome.note:
                self.notes[outcome.note] += 1
        else:
            self.failures.append(outcome)
        self.slowest = max(self.slowest, (outcome.seconds, case.index))

    def total(self, kind: str) -> int:
        return sum(counter[kind] for counter in self.by_family.values())

    def summary(self, kinds: int = 25, per_image: bool = False) -> str:
        committed = sum(1 for name in self.by_image if name.startswith("guests/"))
        lines = [
            f"image fuzz, seed {self.seed}: {self.count} images from {len(self.by_image)} seed "
            f"images ({committed} committed guests) in {self.seconds:.1f} s "
            f"({1000 * self.seconds / max(self.count, 1):.1f} ms each, slowest "
            f"{self.slowest[0]:.2f} s: case {self.slowest[1]})",
            f"  loaded {self.total('loaded')}, rejected {self.total('rejected')}, "
            f"failed {self.total('failed')}",
            f"  {'family':<12}{'tried':>8}{'loaded':>8}{'rejected':>10}{'failed':>8}",
        ]
        rows = sorted(self.by_image.items()) if per_image else sorted(self.by_family.items())
        for name, counter in rows:
            lines.append(
                f"  {name:<12}{sum(counter.values()):>8}{counter['loaded']:>8}"
                f"{counter['rejected']:>10}{counter['failed']:>8}"
            )
        lines.append("  loaded by protocol: " + ", ".join(
            f"{name} {number}" for name, number in self.loaded_by_protocol.most_common()
        ))  # fmt: skip
        lines.append("  rejected by error class: " + ", ".join(
            f"{name} {number}" for name, number in self.rejected_by_class.most_common()
        ))  # fmt: skip
        lines.append(
            f"  rejected by message kind ({min(kinds, len(self.rejected_by_kind))} most common "
            f"of {len(self.rejected_by_kind)}):"
        )
        lines += [f"    {n:>6}  {kind}" for kind, n in self.rejected_by_kind.most_common(kinds)]
        for note, number in self.notes.most_common():
            lines.append(f"  note: {number} loaded with a {note}")
        lines.append(f"  failures: {len(self.failures)}")
        # One example of each kind of failure, the first found, with its count.
        examples: dict[str, tuple[int, Outcome]] = {}
        for outcome in self.failures:
            number, first = examples.get(blank_numbers(outcome.detail), (0, outcome))
            examples[blank_numbers(outcome.detail)] = (number + 1, first)
        for number, outcome in examples.values():
            lines.append(f"    {number} x, e.g. case {outcome.case.index}: {outcome.detail}")
            lines.append(f"      {outcome.case.describe()}")
            lines.append(
                f"      replay: python -m tests.fuzz.image_fuzz --seed {self.seed} "
                f"--case {outcome.case.index}"
            )
        return "\n".join(lines)


def run_campaign(count: int, seed: int, start: int = 0) -> Report:
    """Cases start .. start+count-1 of `seed`."""
    report = Report(seed)
    started = time.perf_counter()
    for index in range(start, start + count):
        report.add(run_case(make_case(seed, index)))
    report.seconds = time.perf_counter() - started
    return report


def replay(seed: int, index: int) -> int:
    """Run one case without catching anything, so that a VMM bug shows its traceback."""
    case = make_case(seed, index)
    print(case.describe())
    with GuestMemory.from_ranges(RAM_CONFIGS[case.ram]) as memory:
        try:
            entry = load_case(case, memory)
        except LoaderError as error:
            print(f"rejected: {type(error).__name__}: {error}")
        else:
            print(f"loaded: {entry}")
    outcome = run_case(case)
    print(f"verdict: {outcome.kind}: {outcome.detail}")
    return 1 if outcome.kind == "failed" else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz.image_fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=20000, help="images to try (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (default 1)")
    parser.add_argument("--start", type=int, default=0, help="first case number (default 0)")
    parser.add_argument("--case", type=int, help="replay this one case, with its traceback")
    parser.add_argument("--dump", type=Path, help="write each failing image into this directory")
    parser.add_argument("--kinds", type=int, default=25, help="message kinds to list")
    parser.add_argument("--per-image", action="store_true", help="outcomes per seed image")
    args = parser.parse_args(argv)
    if args.case is not None:
        return replay(args.seed, args.case)
    report = run_campaign(args.count, args.seed, args.start)
    print(report.summary(args.kinds, args.per_image))
    if args.dump and report.failures:
        args.dump.mkdir(parents=True, exist_ok=True)
        for outcome in report.failures:
            (args.dump / f"seed{args.seed}-case{outcome.case.index}.img").write_bytes(
                outcome.case.image
            )
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
