"""ELF32/ELF64 x86 executables: PT_LOAD segments copied to their physical addresses.

Like rust-vmm's linux-loader, a segment goes to p_paddr. The entry is e_entry,
taken as GRUB 2 and QEMU take it: a virtual address inside a segment's
p_vaddr range is entered at the same offset in its p_paddr range (see
`entry_address`). The whole file is validated before a byte is written to guest
memory, so a bad image leaves RAM untouched. Field names follow the System V
ABI (elf(5)).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.errors import BadElf, BadEntryPoint, ImageTooLarge, UnsupportedElf
from pyvmm.loaders.entry import CpuMode, EntryPoint, ImageSegment
from pyvmm.loaders.flat import check_clear, check_reachable, describe_ram_at, format_size
from pyvmm.loaders.magic import EI_CLASS, ELFCLASS32, ELFCLASS64, is_elf
from pyvmm.loaders.magic import ELF_MAGIC as ELF_MAGIC
from pyvmm.memory.addr import ADDRESS_LIMIT, GuestPhysAddr

if TYPE_CHECKING:  # only for hints: importing the loaders needs no compiled _kvm module
    from pyvmm.memory.guest_memory import GuestMemory

EI_NIDENT = 16
EI_DATA, EI_VERSION = 5, 6  # EI_CLASS (4), the magic and the classes: loaders/magic.py
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1
ET_EXEC = 2
ET_NAMES = {
    0: "ET_NONE (no file type)",
    1: "ET_REL (relocatable object)",
    3: "ET_DYN (shared object or position-independent executable)",
    4: "ET_CORE (core dump)",
}
EM_386, EM_X86_64 = 3, 62
PT_LOAD = 1

# How to move an ELF segment: pyvmm loads it where its program header says.
ELF_FIX = "link that segment at another physical address (its p_paddr)"

# Zero bss in bounded chunks: a large p_memsz must not become one large allocation.
_ZERO_CHUNK = bytes(1 << 20)


@dataclass(frozen=True)
class _ElfClass:
    """What differs between ELF32 and ELF64 (the fields after e_ident share an order)."""

    name: str
    machine: int
    machine_name: str
    header: struct.Struct  # e_type .. e_shstrndx, read at offset EI_NIDENT
    phdr: struct.Struct
    default_mode: CpuMode
    protocol: str


_ELF32 = _ElfClass(
    name="ELF32",
    machine=EM_386,
    machine_name="EM_386",
    header=struct.Struct("<HHIIIIIHHHHHH"),
    phdr=struct.Struct("<IIIIIIII"),
    default_mode=CpuMode.PROTECTED,
    protocol="elf32",
)
_ELF64 = _ElfClass(
    name="ELF64",
    machine=EM_X86_64,
    machine_name="EM_X86_64",
    header=struct.Struct("<HHIQQQIHHHHHH"),
    phdr=struct.Struct("<IIQQQQQQ"),
    default_mode=CpuMode.LONG,
    protocol="elf64",
)


@dataclass(frozen=True)
class _Segment:
    index: int  # position in the program header table, as `readelf -l` counts
    offset: int
    paddr: int
    filesz: int
    memsz: int
    vaddr: int | None = None  # p_vaddr; None for a multiboot a.out-kludge kernel

    @property
    def end(self) -> int:
        return self.paddr + self.memsz

    def described(self, name: str = "segment") -> ImageSegment:
        return ImageSegment(self.paddr, self.end, f"{name} {self.index}")


def _parse_class(image: bytes) -> _ElfClass:
    """Check e_ident and return the class; the file is at least as long as its header."""
    if not is_elf(image):
        raise BadElf("not an ELF image: it does not start with \\x7fELF")
    if len(image) < EI_NIDENT:
        raise BadElf(f"truncated ELF header: the file has {len(image)} bytes, e_ident needs 16")
    classes = {ELFCLASS32: _ELF32, ELFCLASS64: _ELF64}
    elf_class = classes.get(image[EI_CLASS])
    if elf_class is None:
        raise BadElf(f"unknown ELF class {image[EI_CLASS]} (expected 1 or 2)")
    if image[EI_DATA] == ELFDATA2MSB:
        raise UnsupportedElf("big-endian ELF is not supported: x86 images are little-endian")
    if image[EI_DATA] != ELFDATA2LSB:
        raise BadElf(f"unknown ELF data encoding {image[EI_DATA]} (expected 1, little-endian)")
    if image[EI_VERSION] != EV_CURRENT:
        raise BadElf(f"unknown ELF version {image[EI_VERSION]} (expected 1)")
    header_size = EI_NIDENT + elf_class.header.size
    if len(image) < header_size:
        raise BadElf(
            f"truncated ELF header: the file has {len(image)} bytes, "
            f"an {elf_class.name} header needs {header_size}"
        )
    return elf_class


def _choose_mode(elf_class: _ElfClass, mode: CpuMode | None) -> CpuMode:
    if mode is None:
        return elf_class.default_mode
    if mode is CpuMode.REAL:
        raise UnsupportedElf("an ELF image cannot be entered in real mode; use a flat binary")
    if elf_class is _ELF64 and not mode.is_64bit:
        raise UnsupportedElf(f"an ELF64 image needs long mode and cannot run in {mode.value} mode")
    if elf_class is _ELF32 and mode.is_64bit:
        # EM_386 code is 32-bit: decoded as 64-bit code it runs, wrongly, until it faults.
        raise UnsupportedElf(
            f"an ELF32 image (EM_386) holds 32-bit code: it runs in protected or paged mode, "
            f"not in {mode.value} mode"
        )
    return mode


def _parse_segments(
    image: bytes, elf_class: _ElfClass, phoff: int, phentsize: int, phnum: int
) -> list[_Segment]:
    """The non-empty PT_LOAD segments, each checked against the file."""
    if phnum and phentsize < elf_class.phdr.size:
        raise BadElf(
            f"program header entries of {phentsize} bytes are smaller than "
            f"the {elf_class.phdr.size}-byte {elf_class.name} program header"
        )
    if phnum and phoff + phnum * phentsize > len(image):
        raise BadElf(
            f"program headers at 0x{phoff:x} run past the end of the {len(image)}-byte file"
        )
    segments = []
    for index in range(phnum):
        fields = elf_class.phdr.unpack_from(image, phoff + index * phentsize)
        if elf_class is _ELF64:
            p_type, _flags, offset, vaddr, paddr, filesz, memsz, _align = fields
        else:
            p_type, offset, vaddr, paddr, filesz, memsz, _flags, _align = fields
        if p_type != PT_LOAD:
            continue
        if filesz > memsz:
            raise BadElf(
                f"segment {index} has p_filesz 0x{filesz:x} larger than p_memsz 0x{memsz:x}"
            )
        if memsz == 0:
            continue
        if offset + filesz > len(image):
            raise BadElf(
                f"segment {index} data at 0x{offset:x}..0x{offset + filesz:x} "
                f"runs past the end of the {len(image)}-byte file"
            )
        if paddr + memsz > ADDRESS_LIMIT:
            raise BadElf(
                f"segment {index} at 0x{paddr:x} with size 0x{memsz:x} "
                "runs past the 64-bit address space"
            )
        segments.append(_Segment(index, offset, paddr, filesz, memsz, vaddr))
    if not segments:
        raise BadElf("no PT_LOAD segment: the ELF image has nothing to load")
    return segments


def entry_address(segments: list[_Segment], e_entry: int) -> int:
    """The guest-physical address pyvmm enters an image at, from e_entry.

    e_entry is an address the image was linked for. When it lies in a
    segment's virtual range [p_vaddr, p_vaddr + p_memsz), the first such
    segment in program-header order decides: e_entry - p_vaddr + p_paddr, the
    same instruction where the segment is loaded. That is GRUB 2's rule for
    multiboot ELF kernels (grub-core/loader/multiboot_elfxx.c, the loop after
    the segments are loaded), and QEMU's (include/hw/elf_ops.h, load_elf:
    an executable segment whose p_vaddr differs from its p_paddr), and it is
    how a higher-half kernel (p_vaddr 0xc0100000, p_paddr 0x100000) is
    entered at all with paging off. Otherwise e_entry must lie in a
    segment's physical range and is entered as it is; else BadEntryPoint.
    """
    for segment in segments:
        if segment.vaddr is not None and segment.vaddr <= e_entry < segment.vaddr + segment.memsz:
            return e_entry - segment.vaddr + segment.paddr
    if any(segment.paddr <= e_entry < segment.end for segment in segments):
        return e_entry
    ordered = sorted(segments, key=lambda segment: segment.paddr)
    ranges = ", ".join(f"0x{s.paddr:x}..0x{s.end:x}" for s in ordered[:4])
    ranges += ", ..." if len(ordered) > 4 else ""
    virtual = [s for s in segments if s.vaddr is not None and s.vaddr != s.paddr]
    if virtual:  # a linked-elsewhere image: its virtual ranges are what e_entry missed
        ranges += "; at p_vaddr " + ", ".join(
            f"0x{s.vaddr:x}..0x{s.vaddr + s.memsz:x}" for s in virtual[:4]
        )
        ranges += ", ..." if len(virtual) > 4 else ""
    raise BadEntryPoint(f"entry point 0x{e_entry:x} is not inside any loaded segment ({ranges})")


def _check_placement(segments: list[_Segment], memory: GuestMemory) -> None:
    """Every segment in RAM, and no two overlapping."""
    for segment in segments:
        # contains() is a bisect, so an absurd p_memsz costs nothing here.
        if not memory.contains(segment.paddr, segment.memsz):
            raise ImageTooLarge(
                f"segment {segment.index} at 0x{segment.paddr:x}..0x{segment.end:x} "
                f"({format_size(segment.memsz)}) does not fit in guest RAM "
                f"({describe_ram_at(memory, segment.paddr)})"
            )
    ordered = sorted(segments, key=lambda segment: segment.paddr)
    for previous, current in itertools.pairwise(ordered):
        if current.paddr < previous.end:
            raise BadElf(
                f"segments {previous.index} (0x{previous.paddr:x}..0x{previous.end:x}) and "
                f"{current.index} (0x{current.paddr:x}..0x{current.end:x}) overlap "
                "in physical memory"
            )


def _write_segment(image: bytes, memory: GuestMemory, segment: _Segment) -> None:
    memory.write(segment.paddr, memoryview(image)[segment.offset : segment.offset + segment.filesz])
    gpa = segment.paddr + segment.filesz
    while gpa < segment.end:
        chunk = min(segment.end - gpa, len(_ZERO_CHUNK))
        memory.write(gpa, memoryview(_ZERO_CHUNK)[:chunk])
        gpa += chunk


def parse_executable(image: bytes, memory: GuestMemory) -> tuple[_ElfClass, list[_Segment], int]:
    """Validate an x86 ET_EXEC file and its PT_LOAD segments; return class, segments, entry.

    The entry is guest-physical (`entry_address`). Shared by the ELF and
    multiboot loaders; nothing is written to memory.
    """
    elf_class = _parse_class(image)
    fields = elf_class.header.unpack_from(image, EI_NIDENT)
    e_type, e_machine, _version, e_entry, e_phoff = fields[:5]
    e_phentsize, e_phnum = fields[8:10]  # after e_shoff, e_flags, e_ehsize
    if e_type != ET_EXEC:
        name = ET_NAMES.get(e_type, f"0x{e_type:x}")
        raise UnsupportedElf(f"unsupported ELF type {name}: pyvmm boots ET_EXEC executables only")
    if e_machine != elf_class.machine:
        raise UnsupportedElf(
            f"the {elf_class.name} image is for machine {e_machine}, "
            f"not {elf_class.machine_name} ({elf_class.machine})"
        )
    segments = _parse_segments(image, elf_class, e_phoff, e_phentsize, e_phnum)
    _check_placement(segments, memory)
    return elf_class, segments, entry_address(segments, e_entry)


def plan_elf(
    image: bytes, memory: GuestMemory, mode: CpuMode | None = None
) -> tuple[CpuMode, list[_Segment], int]:
    """Validate an x86 ELF executable for `mode` (None: its class's): mode, segments, entry.

    Nothing is written; `load_elf` writes what this accepts.
    """
    elf_class, segments, entry = parse_executable(image, memory)
    cpu_mode = _choose_mode(elf_class, mode)
    image_start = min(segment.paddr for segment in segments)
    image_end = max(segment.end for segment in segments)
    check_reachable(cpu_mode, image_start, image_end, f"{elf_class.name} image")
    return cpu_mode, segments, entry


def load_elf(
    image: bytes,
    memory: GuestMemory,
    mode: CpuMode | None = None,
    reserved: Sequence[tuple[int, int, str]] = (),
) -> EntryPoint:
    """Validate an x86 ELF executable, copy its PT_LOAD segments and describe its entry.

    `reserved`: (start, end, what) no segment may overlap (ReservedOverlap).
    """
    elf_class = _parse_class(image)
    cpu_mode, segments, entry = plan_elf(image, memory, mode)
    described = tuple(segment.described() for segment in segments)
    check_clear(described, reserved, ELF_FIX)
    for segment in segments:
        _write_segment(image, memory, segment)
    return EntryPoint(
        entry=GuestPhysAddr(entry),
        mode=cpu_mode,
        protocol=elf_class.protocol,
        image_start=GuestPhysAddr(min(segment.paddr for segment in segments)),
        image_end=GuestPhysAddr(max(segment.end for segment in segments)),
        segments=described,
    )
