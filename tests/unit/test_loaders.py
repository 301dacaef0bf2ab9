"""Flat and ELF loaders on anonymous guest memory (no /dev/kvm).

ELF fixtures are built here with struct: a few hundred bytes each, and every
malformed case is one field patched into a good image.
"""

from __future__ import annotations

import io
import os
import random
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pyvmm.loaders as loaders
from pyvmm.errors import BadElf, BadEntryPoint, ImageTooLarge, LoaderError, UnsupportedElf
from pyvmm.loaders import describe_format, load_image, read_image
from pyvmm.loaders.elf import is_elf, load_elf
from pyvmm.loaders.entry import CpuMode
from pyvmm.loaders.flat import ReservedOverlap, UnreachableImage, format_size, load_flat
from pyvmm.memory.guest_memory import GuestMemory

MIB = 1 << 20
GIB = 1 << 30
RAM_SIZE = 2 * MIB
FILL = 0xAA  # pre-fills RAM so that written and zeroed bytes are visible

# --- ELF fixture builder ------------------------------------------------------------

PT_LOAD, PT_NOTE = 1, 4
ET_EXEC, ET_DYN = 2, 3
EM_386, EM_X86_64 = 3, 62


@dataclass(frozen=True)
class Layout:
    """Field offsets and formats of one ELF class (System V ABI, elf(5))."""

    bits: int
    header: dict[str, tuple[int, str]]
    phdr: dict[str, tuple[int, str]]
    ehsize: int
    phentsize: int


ELF32 = Layout(
    bits=32,
    header={"e_type": (16, "H"), "e_machine": (18, "H"), "e_entry": (24, "I"),
            "e_phoff": (28, "I"), "e_phentsize": (42, "H"), "e_phnum": (44, "H")},
    phdr={"p_type": (0, "I"), "p_offset": (4, "I"), "p_vaddr": (8, "I"), "p_paddr": (12, "I"),
          "p_filesz": (16, "I"), "p_memsz": (20, "I"), "p_flags": (24, "I")},
    ehsize=52,
    phentsize=32,
)  # fmt: skip
ELF64 = Layout(
    bits=64,
    header={"e_type": (16, "H"), "e_machine": (18, "H"), "e_entry": (24, "Q"),
            "e_phoff": (32, "Q"), "e_phentsize": (54, "H"), "e_phnum": (56, "H")},
    phdr={"p_type": (0, "I"), "p_flags": (4, "I"), "p_offset": (8, "Q"), "p_vaddr": (16, "Q"),
          "p_paddr": (24, "Q"), "p_filesz": (32, "Q"), "p_memsz": (40, "Q")},
    ehsize=64,
    phentsize=56,
)  # fmt: skip


@dataclass(frozen=True)
class Seg:
    paddr: int
    data: bytes
    memsz: int | None = None  # None: exactly the file data, no bss
    p_type: int = PT_LOAD


def build_elf(layout: Layout, segments: list[Seg], entry: int) -> bytearray:
    """A little-endian ET_EXEC image: header, program headers, then segment data."""
    phoff = layout.ehsize
    offset = phoff + len(segments) * layout.phentsize
    image = bytearray(offset)
    image[:7] = b"\x7fELF" + bytes([1 if layout.bits == 32 else 2, 1, 1])
    machine = EM_386 if layout.bits == 32 else EM_X86_64
    header = {"e_type": ET_EXEC, "e_machine": machine, "e_entry": entry, "e_phoff": phoff,
              "e_phentsize": layout.phentsize, "e_phnum": len(segments)}  # fmt: skip
    for name, value in header.items():
        patch_header(image, layout, name, value)
    struct.pack_into("<I", image, 20, 1)  # e_version
    struct.pack_into("<H", image, 40 if layout.bits == 32 else 52, layout.ehsize)
    for index, seg in enumerate(segments):
        fields = {"p_type": seg.p_type, "p_offset": offset if seg.data else 0,
                  "p_vaddr": seg.paddr, "p_paddr": seg.paddr, "p_filesz": len(seg.data),
                  "p_memsz": len(seg.data) if seg.memsz is None else seg.memsz,
                  "p_flags": 7}  # fmt: skip
        for name, value in fields.items():
            patch_phdr(image, layout, index, name, value)
        image += seg.data
        offset += len(seg.data)
    return image


def patch_header(image: bytearray, layout: Layout, name: str, value: int) -> None:
    position, fmt = layout.header[name]
    struct.pack_into("<" + fmt, image, position, value)


def patch_phdr(image: bytearray, layout: Layout, index: int, name: str, value: int) -> None:
    position, fmt = layout.phdr[name]
    phoff = layout.ehsize  # build_elf puts the table right after the header
    struct.pack_into("<" + fmt, image, phoff + index * layout.phentsize + position, value)


CODE = bytes(range(1, 65))  # 64 non-zero bytes: easy to tell from zeroed RAM
DATA = b"\x5a" * 32
CODE_GPA = 0x10_0000
DATA_GPA = 0x10_1000
BSS_SIZE = 0x800
ENTRY = CODE_GPA + 8


def good_elf(layout: Layout) -> bytearray:
    """Program headers: a note, code, an empty PT_LOAD, then data + bss (ending the file)."""
    return build_elf(
        layout,
        [
            Seg(0, b"", p_type=PT_NOTE),
            Seg(CODE_GPA, CODE),
            Seg(0x18_0000, b"", memsz=0),
            Seg(DATA_GPA, DATA, memsz=len(DATA) + BSS_SIZE),
        ],
        ENTRY,
    )


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory.from_ranges([(0, RAM_SIZE)]) as guest_memory:
        guest_memory.fill(0, RAM_SIZE, FILL)
        yield guest_memory


@pytest.fixture
def holey_memory() -> Iterator[GuestMemory]:
    """1 MiB at 0 and 1 MiB at 4 GiB, like RAM split around the 32-bit hole."""
    with GuestMemory.from_ranges([(0, MIB), (4 * GIB, MIB)]) as guest_memory:
        yield guest_memory


def default_flat_gpa(mode: CpuMode) -> int:
    """What the x86 layout passes: the boot sector address in real mode, 1 MiB otherwise."""
    return 0x7C00 if mode is CpuMode.REAL else 0x10_0000


def untouched(memory: GuestMemory) -> bool:
    return memory.read(0, RAM_SIZE) == bytes([FILL]) * RAM_SIZE


# --- flat ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(CpuMode))
def test_flat_loads_at_the_default_address_in_each_mode(memory: GuestMemory, mode: CpuMode) -> None:
    image = b"\xf4" * 100
    entry = load_image(image, memory, mode=mode, load_gpa=None, default_flat_gpa=default_flat_gpa)
    gpa = default_flat_gpa(mode)
    assert (entry.entry, entry.mode, entry.protocol) == (gpa, mode, "flat")
    assert (entry.image_start, entry.image_end) == (gpa, gpa + 100)
    assert memory.read(gpa, 100) == image
    assert memory.read_u8(gpa + 100) == FILL


@pytest.mark.parametrize(
    ("mode", "gpa"), [(CpuMode.REAL, 0x1000), (CpuMode.PROTECTED, 0x2000), (CpuMode.LONG, 0)]
)
def test_flat_loads_at_a_custom_address(memory: GuestMemory, mode: CpuMode, gpa: int) -> None:
    entry = load_image(b"abc", memory, mode=mode, load_gpa=gpa, default_flat_gpa=default_flat_gpa)
    assert (entry.entry, entry.image_start, entry.image_end) == (gpa, gpa, gpa + 3)
    assert memory.read(gpa, 3) == b"abc"


def test_flat_defaults_to_real_mode_at_the_boot_sector(memory: GuestMemory) -> None:
    entry = load_image(b"\xf4", memory, mode=None, load_gpa=None, default_flat_gpa=default_flat_gpa)
    assert (entry.mode, entry.entry) == (CpuMode.REAL, 0x7C00)


def test_flat_too_large_names_size_address_and_ram(memory: GuestMemory) -> None:
    with pytest.raises(ImageTooLarge) as error:
        load_flat(bytes(5 * MIB), memory, CpuMode.REAL, 0x7C00)
    assert str(error.value) == (
        "image of 5 MiB at 0x7c00 does not fit in guest RAM "
        "(needs 0x7c00..0x507c00, RAM ends at 0x200000)"
    )
    assert untouched(memory)


def test_flat_one_byte_past_ram_is_rejected(memory: GuestMemory) -> None:
    load_flat(b"x", memory, CpuMode.LONG, RAM_SIZE - 1)
    with pytest.raises(ImageTooLarge, match=r"needs 0x1fffff\.\.0x200001"):
        load_flat(b"xy", memory, CpuMode.LONG, RAM_SIZE - 1)
    with pytest.raises(ImageTooLarge, match=r"at 0x200000 .*RAM ends at 0x200000"):
        load_flat(b"x", memory, CpuMode.LONG, RAM_SIZE)


def test_flat_empty_image(memory: GuestMemory) -> None:
    with pytest.raises(LoaderError, match=r"^image is empty$"):
        load_flat(b"", memory, CpuMode.REAL, 0x7C00)


def test_flat_negative_address(memory: GuestMemory) -> None:
    with pytest.raises(LoaderError, match="negative"):
        load_flat(b"x", memory, CpuMode.LONG, -1)


def test_flat_real_mode_must_stay_below_1_mib(memory: GuestMemory) -> None:
    with pytest.raises(UnreachableImage, match=r"0x100000\.\.0x100200 runs past 1 MiB"):
        load_flat(bytes(0x200), memory, CpuMode.REAL, 0x10_0000)
    with pytest.raises(UnreachableImage, match=r"0x7c00\.\.0x107c00 runs past 1 MiB"):
        load_flat(bytes(MIB), memory, CpuMode.REAL, 0x7C00)
    assert untouched(memory)


def test_flat_real_mode_entry_must_be_reachable_with_cs_0(memory: GuestMemory) -> None:
    load_flat(b"\xf4", memory, CpuMode.REAL, 0xFFFF)
    with pytest.raises(UnreachableImage, match="0x10000 is not reachable with CS=0"):
        load_flat(b"\xf4", memory, CpuMode.REAL, 0x1_0000)


def test_flat_into_a_hole(holey_memory: GuestMemory) -> None:
    with pytest.raises(ImageTooLarge, match=r"needs 0xff000\.\.0x101000, RAM ends at 0x100000"):
        load_flat(bytes(0x2000), holey_memory, CpuMode.LONG, 0xFF000)
    with pytest.raises(ImageTooLarge, match=r"0x200000 lies in the hole 0x100000\.\.0x100000000"):
        load_flat(b"x", holey_memory, CpuMode.LONG, 0x20_0000)


def test_flat_above_4_gib_needs_long_mode(holey_memory: GuestMemory) -> None:
    entry = load_flat(b"\xf4", holey_memory, CpuMode.LONG, 4 * GIB)
    assert entry.entry == 4 * GIB and holey_memory.read_u8(4 * GIB) == 0xF4
    for mode in (CpuMode.PROTECTED, CpuMode.PAGED):
        with pytest.raises(UnreachableImage, match="runs past 4 GiB"):
            load_flat(b"\xf4", holey_memory, mode, 4 * GIB)


@pytest.mark.parametrize(
    ("size", "text"),
    [(1, "1 byte"), (300, "300 bytes"), (1024, "1 KiB"), (1536, "1.5 KiB"), (5 * MIB, "5 MiB")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


# --- ELF: good images ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "mode", "protocol"),
    [(ELF32, CpuMode.PROTECTED, "elf32"), (ELF64, CpuMode.LONG, "elf64")],
)
def test_elf_loads_segments_and_zeroes_bss(
    memory: GuestMemory, layout: Layout, mode: CpuMode, protocol: str
) -> None:
    image = bytes(good_elf(layout))
    assert is_elf(image)
    entry = load_elf(image, memory)
    assert (entry.entry, entry.mode, entry.protocol) == (ENTRY, mode, protocol)
    assert (entry.image_start, entry.image_end) == (CODE_GPA, DATA_GPA + len(DATA) + BSS_SIZE)
    assert memory.read(CODE_GPA, len(CODE)) == CODE
    assert memory.read(DATA_GPA, len(DATA)) == DATA
    assert memory.read(DATA_GPA + len(DATA), BSS_SIZE) == bytes(BSS_SIZE)
    # Nothing around the segments, and nothing for the note or the empty PT_LOAD.
    assert memory.read_u8(CODE_GPA + len(CODE)) == FILL
    assert memory.read_u8(entry.image_end) == FILL
    assert memory.read_u8(0) == FILL and memory.read_u8(0x18_0000) == FILL


def test_elf_loads_through_load_image(memory: GuestMemory) -> None:
    image = bytes(good_elf(ELF64))
    entry = load_image(image, memory, mode=None, load_gpa=None, default_flat_gpa=default_flat_gpa)
    assert (entry.protocol, entry.entry) == ("elf64", ENTRY)


def test_elf_rejects_a_load_address(memory: GuestMemory) -> None:
    with pytest.raises(LoaderError) as error:
        load_image(
            bytes(good_elf(ELF32)), memory, mode=None, load_gpa=0x7C00,
            default_flat_gpa=default_flat_gpa,
        )  # fmt: skip
    assert str(error.value) == (
        "--load-addr applies to flat binaries only; an ELF image is loaded at its own addresses"
    )
    assert untouched(memory)


def test_elf_segment_at_4_gib(holey_memory: GuestMemory) -> None:
    image = build_elf(ELF64, [Seg(4 * GIB, CODE)], 4 * GIB)
    entry = load_elf(bytes(image), holey_memory)
    assert holey_memory.read(4 * GIB, len(CODE)) == CODE
    assert entry.image_end == 4 * GIB + len(CODE)


@pytest.mark.parametrize(
    ("layout", "mode"),
    [(ELF32, CpuMode.PAGED), (ELF64, CpuMode.LONG), (ELF64, CpuMode.USER)],
)
def test_elf_mode_override(memory: GuestMemory, layout: Layout, mode: CpuMode) -> None:
    assert load_elf(bytes(good_elf(layout)), memory, mode).mode is mode


@pytest.mark.parametrize(
    ("layout", "mode", "message"),
    [
        (ELF64, CpuMode.PROTECTED, "ELF64 image needs long mode .* protected mode"),
        (ELF64, CpuMode.PAGED, "ELF64 image needs long mode .* paged mode"),
        (ELF64, CpuMode.REAL, "cannot be entered in real mode"),
        (ELF32, CpuMode.REAL, "cannot be entered in real mode"),
        (ELF32, CpuMode.LONG, "ELF32 image .* holds 32-bit code.* not in long mode"),
        (ELF32, CpuMode.USER, "ELF32 image .* holds 32-bit code.* not in user mode"),
    ],
)
def test_elf_impossible_mode(
    memory: GuestMemory, layout: Layout, mode: CpuMode, message: str
) -> None:
    with pytest.raises(UnsupportedElf, match=message):
        load_elf(bytes(good_elf(layout)), memory, mode)
    assert untouched(memory)


@pytest.mark.parametrize(
    ("image", "name"),
    [(b"\x7fELF\x02\x01\x01", "ELF64"), (b"\x7fELF\x01", "ELF32"), (b"\x7fELF\x07", "ELF"),
     (b"\x7fELF", "ELF"), (b"\xeb\xfe", "flat binary"), (b"", "flat binary")],
)  # fmt: skip
def test_describe_format(image: bytes, name: str) -> None:
    assert describe_format(image) == name


# --- ELF: malformed images ----------------------------------------------------------

Patch = Callable[[bytearray, Layout], object]


def header(name: str, value: int) -> Patch:
    return lambda image, layout: patch_header(image, layout, name, value)


def phdr(index: int, name: str, value: int) -> Patch:
    return lambda image, layout: patch_phdr(image, layout, index, name, value)


def byte(position: int, value: int) -> Patch:
    return lambda image, layout: image.__setitem__(position, value)


def both(*patches: Patch) -> Patch:
    return lambda image, layout: [patch(image, layout) for patch in patches]


def truncate(size: int) -> Patch:
    return lambda image, layout: image.__delitem__(slice(size, None))


# Segment 1 is the code (0x100000..0x100040), segment 3 the data (0x101000..0x101820).
MALFORMED: list[tuple[str, Patch, type[LoaderError], str]] = [
    ("no magic", byte(0, 0x7E), BadElf, "not an ELF image"),
    ("ident truncated", truncate(10), BadElf, "truncated ELF header: the file has 10 bytes"),
    ("header truncated", truncate(40), BadElf, "truncated ELF header: the file has 40 bytes"),
    ("bad class", byte(4, 3), BadElf, "unknown ELF class 3"),
    ("big-endian", byte(5, 2), UnsupportedElf, "big-endian"),
    ("bad encoding", byte(5, 0), BadElf, "unknown ELF data encoding 0"),
    ("bad version", byte(6, 2), BadElf, "unknown ELF version 2"),
    ("ET_REL", header("e_type", 1), UnsupportedElf, "ET_REL"),
    ("ET_DYN", header("e_type", 3), UnsupportedElf, "ET_DYN"),
    ("ET_CORE", header("e_type", 4), UnsupportedElf, "ET_CORE"),
    ("unknown type", header("e_type", 0xFE00), UnsupportedElf, "unsupported ELF type 0xfe00"),
    ("wrong machine", header("e_machine", 183), UnsupportedElf, "machine 183"),
    ("phoff past end", header("e_phoff", 0x1000), BadElf, "program headers at 0x1000 run past"),
    ("phnum past end", header("e_phnum", 200), BadElf, "program headers at 0x"),
    ("phentsize small", header("e_phentsize", 16), BadElf, "entries of 16 bytes are smaller"),
    ("no program headers", header("e_phnum", 0), BadElf, "no PT_LOAD segment"),
    ("no PT_LOAD", both(phdr(1, "p_type", PT_NOTE), phdr(3, "p_type", PT_NOTE)),
     BadElf, "no PT_LOAD segment"),
    ("offset past end", phdr(3, "p_offset", 0x4000), BadElf, "segment 3 data at 0x4000"),
    ("filesz past end", phdr(3, "p_filesz", 0x800), BadElf, "runs past the end of the"),
    ("filesz > memsz", phdr(1, "p_memsz", 4), BadElf, "segment 1 has p_filesz 0x40 larger"),
    ("outside RAM", phdr(3, "p_paddr", 0x1F_F800), ImageTooLarge,
     r"segment 3 at 0x1ff800\.\.0x200020 \(2\.0 KiB\) does not fit .*RAM ends at 0x200000"),
    ("memsz > RAM", phdr(3, "p_memsz", 4 * MIB), ImageTooLarge, r"segment 3 .*\(4 MiB\)"),
    ("memsz absurd", phdr(3, "p_memsz", 0xFFFF_FFFF), ImageTooLarge, "segment 3 at 0x101000"),
    ("overlap", phdr(3, "p_paddr", CODE_GPA + 0x20), BadElf,
     r"segments 1 \(0x100000\.\.0x100040\) and 3 .* overlap in physical memory"),
    ("entry outside", header("e_entry", 0x20_0000), BadEntryPoint,
     r"entry point 0x200000 is not inside any loaded segment \(0x100000\.\.0x100040, "),
    ("entry at end", header("e_entry", CODE_GPA + len(CODE)), BadEntryPoint, "0x100040"),
    ("entry in empty PT_LOAD", header("e_entry", 0x18_0000), BadEntryPoint, "0x180000"),
]  # fmt: skip
MALFORMED_64_ONLY: list[tuple[str, Patch, type[LoaderError], str]] = [
    ("memsz 1 TiB", phdr(3, "p_memsz", 1 << 40), ImageTooLarge, r"segment 3 .*\(1 TiB\)"),
    ("paddr overflow", both(phdr(3, "p_paddr", 2**64 - 0x100), phdr(3, "p_memsz", 0x1000)),
     BadElf, "segment 3 at 0xffffffffffffff00 with size 0x1000 runs past the 64-bit"),
    ("memsz near 2**64", phdr(3, "p_memsz", 2**64 - 0x10_2000), ImageTooLarge,
     "segment 3 .* does not fit in guest RAM"),
]  # fmt: skip
CASES = [(ELF32, *case) for case in MALFORMED] + [
    (ELF64, *case) for case in MALFORMED + MALFORMED_64_ONLY
]


@pytest.mark.parametrize(
    ("layout", "name", "patch", "error", "message"),
    CASES,
    ids=[f"elf{case[0].bits}-{case[1]}" for case in CASES],
)
def test_elf_malformed(
    memory: GuestMemory,
    layout: Layout,
    name: str,
    patch: Patch,
    error: type[LoaderError],
    message: str,
) -> None:
    image = good_elf(layout)
    patch(image, layout)
    with pytest.raises(error, match=message) as raised:
        load_elf(bytes(image), memory)
    assert "\n" not in str(raised.value)
    assert untouched(memory), "a rejected image must not write to guest memory"


def test_elf_exact_message_for_program_headers_past_the_end(memory: GuestMemory) -> None:
    image = good_elf(ELF64)
    patch_header(image, ELF64, "e_phoff", 0x40 + len(image))
    with pytest.raises(BadElf) as error:
        load_elf(bytes(image), memory)
    assert str(error.value) == (
        f"program headers at 0x{0x40 + len(image):x} run past the end of the {len(image)}-byte file"
    )


def test_elf_segment_spanning_into_a_hole(holey_memory: GuestMemory) -> None:
    image = build_elf(ELF64, [Seg(0xFF000, CODE, memsz=0x2000)], 0xFF000)
    with pytest.raises(ImageTooLarge, match=r"segment 0 at 0xff000\.\.0x101000 .*0x100000"):
        load_elf(bytes(image), holey_memory)
    image = build_elf(ELF64, [Seg(0x20_0000, CODE)], 0x20_0000)
    with pytest.raises(ImageTooLarge, match="lies in the hole"):
        load_elf(bytes(image), holey_memory)


def test_elf_a_larger_program_header_stride_is_accepted(memory: GuestMemory) -> None:
    """e_phentsize may exceed the struct size; entries are read at that stride."""
    layout = ELF64
    stride = layout.phentsize + 8
    image = build_elf(layout, [Seg(CODE_GPA, b"")], CODE_GPA)  # header + one (padded) phdr
    image += bytes(8)
    image += CODE
    patch_header(image, layout, "e_phentsize", stride)
    patch_phdr(image, layout, 0, "p_offset", layout.ehsize + stride)
    patch_phdr(image, layout, 0, "p_filesz", len(CODE))
    patch_phdr(image, layout, 0, "p_memsz", len(CODE))
    assert load_elf(bytes(image), memory).image_end == CODE_GPA + len(CODE)
    assert memory.read(CODE_GPA, len(CODE)) == CODE


@pytest.mark.parametrize("layout", [ELF32, ELF64], ids=["elf32", "elf64"])
def test_elf_truncated_at_every_length(memory: GuestMemory, layout: Layout) -> None:
    image = bytes(good_elf(layout))
    assert len(image) < 4096
    for size in range(len(image)):
        with pytest.raises(LoaderError):
            load_elf(image[:size], memory)
    assert untouched(memory)


@pytest.mark.parametrize("layout", [ELF32, ELF64], ids=["elf32", "elf64"])
def test_elf_random_bit_flips_load_or_raise_loader_error(
    memory: GuestMemory, layout: Layout
) -> None:
    good = bytes(good_elf(layout))
    rng = random.Random(0x5EED + layout.bits)
    outcomes = {"loaded": 0, "rejected": 0}
    for _ in range(3000):
        image = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            image[rng.randrange(len(image))] ^= 1 << rng.randrange(8)
        mode = rng.choice([None, *CpuMode])
        try:
            load_image(
                bytes(image), memory, mode=mode, load_gpa=None, default_flat_gpa=default_flat_gpa
            )
            outcomes["loaded"] += 1
        except LoaderError:
            outcomes["rejected"] += 1
    assert outcomes["loaded"] and outcomes["rejected"]


# --- read_image ---------------------------------------------------------------------


def test_read_image(tmp_path: Path) -> None:
    path = tmp_path / "guest.bin"
    path.write_bytes(b"\xeb\xfe")
    assert read_image(str(path)) == b"\xeb\xfe"


def test_read_image_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.bin")
    with pytest.raises(LoaderError) as error:
        read_image(path)
    assert str(error.value) == f"cannot read image '{path}': No such file or directory"


def test_read_image_directory(tmp_path: Path) -> None:
    with pytest.raises(LoaderError) as error:
        read_image(str(tmp_path))
    assert str(error.value) == f"image {str(tmp_path)!r} is a directory, not a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_read_image_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(LoaderError, match="Permission denied"):
        read_image(str(path))


def test_read_image_bad_path() -> None:
    with pytest.raises(LoaderError, match="cannot read image 'a\\\\x00b'"):
        read_image("a\0b")


def test_read_image_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.touch()
    with pytest.raises(LoaderError) as error:
        read_image(str(path))
    assert str(error.value) == f"image '{path}' is empty"


def test_read_image_over_4_gib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.bin"
    with path.open("wb") as sparse:
        sparse.truncate(4 * GIB + 1)  # sparse: costs no disk
    with pytest.raises(ImageTooLarge, match="more than the 4 GiB limit"):
        read_image(str(path))


def test_read_image_cap_holds_without_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A procfs file announces st_size 0: the read itself stops at the cap."""
    monkeypatch.setattr(loaders, "MAX_IMAGE_SIZE", 16)
    with pytest.raises(ImageTooLarge, match="larger than the 16 bytes limit"):
        read_image("/proc/self/maps")


# --- read_image judges a file before it reads it (a fresh user's trial) ----------------------
# `pyvmm boot /dev/zero` read 8.4 GB before it refused; a 2 GiB sparse flat file was read
# whole before "does not fit in guest RAM"; a FIFO with no writer hung; a missing
# -initrd module was called an image.


def no_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any open() for reading in read_image fail the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"read_image opened {args[0]!r}")

    monkeypatch.setattr(loaders, "open", refuse, raising=False)


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a character device"), ("/dev/null", "a character device")]
)
def test_read_image_refuses_a_device_unopened(
    path: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_reads(monkeypatch)
    with pytest.raises(LoaderError) as error:
        read_image(path, 128 * MIB)
    assert str(error.value) == f"image {path!r} is {kind}, not a file"
    assert error.value.exit_status == 2


def test_read_image_refuses_a_block_device() -> None:
    devices = [f"/dev/{name}" for name in sorted(os.listdir("/dev"))]
    block = next((path for path in devices if stat.S_ISBLK(os.stat(path).st_mode)), None)
    if block is None:
        pytest.skip("this host has no block device node in /dev")
    with pytest.raises(LoaderError, match=rf"^image '{block}' is a block device, not a file$"):
        read_image(block)


def test_read_image_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """open(2) of a FIFO blocks until a writer comes: it used to hang for ever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    found: list[BaseException] = []
    reader = threading.Thread(target=lambda: _catch(found, str(fifo)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # let the blocked open go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_image waited for a writer on a FIFO")
    assert len(found) == 1 and isinstance(found[0], LoaderError)
    assert str(found[0]).startswith(f"image {str(fifo)!r} is a pipe (FIFO), not a file: save")


def _catch(found: list[BaseException], path: str) -> None:
    try:
        read_image(path)
    except BaseException as error:  # handed to the test's thread
        found.append(error)


def test_read_image_refuses_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(LoaderError, match=r"is a socket, not a file$"):
            read_image(str(path))


def sparse_file(path: Path, size: int, start: bytes) -> Path:
    with path.open("wb") as sparse:
        sparse.write(start)
        sparse.truncate(size)  # sparse: costs no disk
    return path


def test_a_flat_image_larger_than_ram_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sparse_file(tmp_path / "big.bin", 2 * GIB, b"\xeb\xfe")
    sizes: list[int] = []

    class Spy(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            sizes.append(-1 if size is None else size)
            return super().read(size)

    monkeypatch.setattr(
        loaders, "open", lambda name, mode, **_: Spy(io.FileIO(name)), raising=False
    )
    with pytest.raises(ImageTooLarge) as error:
        read_image(str(path), 128 * MIB)
    assert str(error.value) == (
        f"image {str(path)!r} is 2 GiB, larger than the 128 MiB of guest RAM: "
        "a flat binary (a file that is not ELF) is copied whole into RAM"
    )
    assert sizes == []  # judged by its size and first bytes, never read


def test_an_elf_image_larger_than_ram_is_still_read(tmp_path: Path) -> None:
    """Debug sections can make an ELF file larger than RAM: only PT_LOAD segments are copied."""
    path = sparse_file(tmp_path / "big.elf", 4 * MIB, bytes(good_elf(ELF64)))
    assert len(read_image(str(path), 2 * MIB)) == 4 * MIB


def test_a_module_is_copied_whole_whatever_its_format(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "initrd.elf", 4 * MIB, bytes(good_elf(ELF64)))
    with pytest.raises(ImageTooLarge) as error:
        read_image(str(path), 2 * MIB, what="module")
    assert str(error.value) == (
        f"module {str(path)!r} is 4 MiB, larger than the 2 MiB of guest RAM: "
        "a module is copied whole into RAM"
    )


def aout_head(load_end_addr: int) -> bytes:
    """A flat file whose multiboot header (at 0) has a.out-kludge address fields."""
    magic, flags = 0x1BADB002, 0x1_0003
    fields = (0x10_0000, 0x10_0000, load_end_addr, 0, 0x10_0020)
    return struct.pack("<8I", magic, flags, -(magic + flags) & 0xFFFFFFFF, *fields)


def test_an_aout_kludge_kernel_is_copied_whole_unless_it_says_where_to_stop(
    tmp_path: Path,
) -> None:
    whole = sparse_file(tmp_path / "whole.bin", 4 * MIB, aout_head(load_end_addr=0))
    with pytest.raises(ImageTooLarge, match=r"a multiboot kernel loaded by its a\.out-kludge"):
        read_image(str(whole), 2 * MIB)
    part = sparse_file(tmp_path / "part.bin", 4 * MIB, aout_head(load_end_addr=0x10_1000))
    assert len(read_image(str(part), 2 * MIB)) == 4 * MIB


def test_a_file_without_a_size_is_held_to_guest_ram_as_it_is_read() -> None:
    """procfs announces st_size 0: the read itself stops past guest RAM."""
    with pytest.raises(ImageTooLarge) as error:
        read_image("/proc/self/maps", 16)
    assert str(error.value) == (
        "image '/proc/self/maps' is larger than the 16 bytes of guest RAM: "
        "a flat binary (a file that is not ELF) is copied whole into RAM"
    )


def test_a_missing_module_is_called_a_module(tmp_path: Path) -> None:
    path = str(tmp_path / "missing")
    with pytest.raises(LoaderError) as error:
        read_image(path, 128 * MIB, what="module")
    assert str(error.value) == f"cannot read module '{path}': No such file or directory"


def test_a_dangling_symbolic_link_is_named(tmp_path: Path) -> None:
    link = tmp_path / "kernel.elf"
    link.symlink_to("build/kernel.elf")
    with pytest.raises(LoaderError) as error:
        read_image(str(link))
    assert str(error.value) == (
        f"cannot read image {str(link)!r}: it is a symbolic link to 'build/kernel.elf', "
        "which does not exist"
    )


def test_a_missing_image_with_its_sources_beside_it_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pyvmm boot guests/template/boot.bin` in a fresh clone said only "No such file"."""
    project = tmp_path / "os"
    project.mkdir()
    (project / "Makefile").write_text("$(OUT)/kernel.bin: kernel.s\n\tas ...\n")
    (project / "kernel.s").write_text("hlt\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LoaderError) as error:
        read_image("os/kernel.bin")
    assert str(error.value) == (
        "image 'os/kernel.bin' is not built: run `make -C os` (its sources are in os)"
    )


# --- where segments go and where the entry is -----------------------------------------

HIGHER_HALF = {32: 0xC000_0000, 64: 0xFFFF_FFFF_8000_0000}


def higher_half_elf(layout: Layout, entry_offset: int = 8) -> bytearray:
    """Code linked at HIGHER_HALF + 1 MiB (p_vaddr), loaded at 1 MiB (p_paddr), e_entry virtual."""
    offset = HIGHER_HALF[layout.bits]
    image = build_elf(layout, [Seg(CODE_GPA, CODE), Seg(DATA_GPA, DATA)], offset + CODE_GPA)
    patch_phdr(image, layout, 0, "p_vaddr", offset + CODE_GPA)
    patch_phdr(image, layout, 1, "p_vaddr", offset + DATA_GPA)
    patch_header(image, layout, "e_entry", offset + CODE_GPA + entry_offset)
    return image


@pytest.mark.parametrize("layout", [ELF32, ELF64], ids=["elf32", "elf64"])
def test_a_higher_half_elf_is_entered_at_the_physical_address_of_e_entry(
    memory: GuestMemory, layout: Layout
) -> None:
    """e_entry - p_vaddr + p_paddr, as GRUB 2 and QEMU enter it (paging is off or identity)."""
    entry = load_elf(bytes(higher_half_elf(layout)), memory)
    assert entry.entry == CODE_GPA + 8
    assert memory.read(CODE_GPA, len(CODE)) == CODE  # loaded at p_paddr, not p_vaddr


@pytest.mark.parametrize("layout", [ELF32, ELF64], ids=["elf32", "elf64"])
def test_an_entry_inside_no_virtual_range_is_taken_as_physical(
    memory: GuestMemory, layout: Layout
) -> None:
    image = higher_half_elf(layout)
    patch_header(image, layout, "e_entry", DATA_GPA + 4)  # a physical address, in segment 1
    assert load_elf(bytes(image), memory).entry == DATA_GPA + 4


def test_an_entry_in_neither_range_names_both() -> None:
    image = higher_half_elf(ELF32)
    patch_header(image, ELF32, "e_entry", 0xC020_0000)
    with GuestMemory.from_ranges([(0, RAM_SIZE)]) as memory, pytest.raises(BadEntryPoint) as error:
        load_elf(bytes(image), memory)
    assert str(error.value) == (
        "entry point 0xc0200000 is not inside any loaded segment (0x100000..0x100040, "
        "0x101000..0x101020; at p_vaddr 0xc0100000..0xc0100040, 0xc0101000..0xc0101020)"
    )


def test_the_first_segment_whose_virtual_range_holds_e_entry_decides(memory: GuestMemory) -> None:
    """GRUB 2's loop: the first PT_LOAD in program-header order, not the physical match."""
    image = build_elf(ELF32, [Seg(CODE_GPA, CODE), Seg(DATA_GPA, DATA)], CODE_GPA + 8)
    patch_phdr(image, ELF32, 1, "p_vaddr", CODE_GPA)  # segment 1's virtual range holds it too
    assert load_elf(bytes(image), memory).entry == CODE_GPA + 8  # segment 1 comes second


RESERVED = [(0x500, 0x518, "pyvmm's GDT"), (0x7_0000, 0x8_0000, "pyvmm's boot stack")]


def test_each_elf_segment_is_checked_alone_not_their_span(memory: GuestMemory) -> None:
    """Headers at 0 and code at 1 MiB: the GDT and the stack lie between, untouched."""
    image = build_elf(ELF32, [Seg(0, b"\x7fELF" * 8), Seg(CODE_GPA, CODE)], CODE_GPA)
    entry = load_elf(bytes(image), memory, reserved=RESERVED)
    assert [tuple(segment) for segment in entry.segments] == [
        (0, 32, "segment 0"),
        (CODE_GPA, CODE_GPA + len(CODE), "segment 1"),
    ]
    assert (entry.image_start, entry.image_end) == (0, CODE_GPA + len(CODE))
    assert memory.read(0x500, 0x18) == bytes([FILL]) * 0x18


def test_an_elf_segment_on_a_reserved_range_names_both_and_p_paddr(memory: GuestMemory) -> None:
    image = build_elf(ELF64, [Seg(0x7_FF00, CODE * 8), Seg(CODE_GPA, CODE)], CODE_GPA)
    with pytest.raises(ReservedOverlap) as error:
        load_elf(bytes(image), memory, reserved=RESERVED)
    assert str(error.value) == (
        "segment 0 at 0x7ff00..0x80100 overlaps pyvmm's boot stack at 0x70000..0x80000; "
        "link that segment at another physical address (its p_paddr)"
    )
    assert error.value.exit_status == 2
    assert untouched(memory)


def test_a_flat_image_on_a_reserved_range_suggests_load_addr(memory: GuestMemory) -> None:
    with pytest.raises(ReservedOverlap) as error:
        load_flat(b"\x90" * 0x100, memory, CpuMode.PROTECTED, 0x480, reserved=RESERVED)
    assert str(error.value) == (
        "image at 0x480..0x580 overlaps pyvmm's GDT at 0x500..0x518; "
        "load it elsewhere with --load-addr"
    )
    assert untouched(memory)


@pytest.mark.parametrize(
    ("image", "mode", "load_gpa", "protocol", "segments", "fix"),
    [
        (b"\xf4" * 16, None, None, "flat", [(0x7C00, 0x7C10, "image")], "--load-addr"),
        (b"\xf4" * 16, CpuMode.LONG, 0x2000, "flat", [(0x2000, 0x2010, "image")], "--load-addr"),
        (bytes(good_elf(ELF64)), None, None, "elf64",
         [(CODE_GPA, CODE_GPA + 64, "segment 1"),
          (DATA_GPA, DATA_GPA + 32 + BSS_SIZE, "segment 3")],
         "p_paddr"),
    ],
)  # fmt: skip
def test_plan_image_says_where_each_segment_goes_and_writes_nothing(
    memory: GuestMemory,
    image: bytes,
    mode: CpuMode | None,
    load_gpa: int | None,
    protocol: str,
    segments: list[tuple[int, int, str]],
    fix: str,
) -> None:
    plan = loaders.plan_image(
        image, memory, mode=mode, load_gpa=load_gpa, default_flat_gpa=default_flat_gpa
    )
    assert plan.protocol == protocol
    assert [tuple(segment) for segment in plan.segments] == segments
    assert fix in plan.fix
    assert untouched(memory)


def test_no_elf_hint_names_load_addr() -> None:
    """--load-addr is refused for ELF and multiboot images: no hint may suggest it."""
    from pyvmm.loaders.elf import ELF_FIX
    from pyvmm.loaders.multiboot import AOUT_FIX

    assert "--load-addr" not in ELF_FIX and "--load-addr" not in AOUT_FIX
    assert "--" not in ELF_FIX + AOUT_FIX
