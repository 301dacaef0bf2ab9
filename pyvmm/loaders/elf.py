"""ELF32/ELF64 x86 executables: PT_LOAD segments copied to their physical addresses.

Like rust-vmm's linux-loader, a segment goes to p_paddr and the entry is e_entry.
The whole file is validated before a byte is written to guest memory, so a bad
image leaves RAM untouched. Field names follow the System V ABI (elf(5)).
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.errors import BadElf, BadEntryPoint, ImageTooLarge, UnsupportedElf
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.loaders.flat import check_reachable, describe_ram_at, format_size
from pyvmm.memory.addr import ADDRESS_LIMIT, GuestPhysAddr

if TYPE_CHECKING:  # only for hints: importing the loaders needs no compiled _kvm module
    from pyvmm.memory.guest_memory import GuestMemory

ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
EI_CLASS, EI_DATA, EI_VERSION = 4, 5, 6
ELFCLASS32, ELFCLASS64 = 1, 2
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

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


def is_elf(image: bytes) -> bool:
    return image[:4] == ELF_MAGIC


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
            p_type, _flags, offset, _vaddr, paddr, filesz, memsz, _align = fields
        else:
            p_type, offset, _vaddr, paddr, filesz, memsz, _flags, _align = fields
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
        segments.append(_Segment(index, offset, paddr, filesz, memsz))
    if not segments:
        raise BadElf("no PT_LOAD segment: the ELF image has nothing to load")
    return segments


def _check_placement(segments: list[_Segment], memory: GuestMemory, entry: int) -> None:
    """Every segment in RAM, no two overlapping, and the entry inside one of them."""
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
    if not any(segment.paddr <= entry < segment.end for segment in segments):
        ranges = ", ".join(f"0x{s.paddr:x}..0x{s.end:x}" for s in ordered[:4])
        more = ", ..." if len(ordered) > 4 else ""
        raise BadEntryPoint(
            f"entry point 0x{entry:x} is not inside any loaded segment ({ranges}{more})"
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

    Shared by the ELF and multiboot loaders; nothing is written to memory.
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
    _check_placement(segments, memory, e_entry)
    return elf_class, segments, e_entry


def load_elf(image: bytes, memory: GuestMemory, mode: CpuMode | None = None) -> EntryPoint:
    """Validate an x86 ELF executable, copy its PT_LOAD segments and describe its entry."""
    elf_class, segments, e_entry = parse_executable(image, memory)
    cpu_mode = _choose_mode(elf_class, mode)
    image_start = min(segment.paddr for segment in segments)
    image_end = max(segment.end for segment in segments)
    check_reachable(cpu_mode, image_start, image_end, f"{elf_class.name} image")
    for segment in segments:
        _write_segment(image, memory, segment)
    return EntryPoint(
        entry=GuestPhysAddr(e_entry),
        mode=cpu_mode,
        protocol=elf_class.protocol,
        image_start=GuestPhysAddr(image_start),
        image_end=GuestPhysAddr(image_end),
    )
