"""The image fuzzer's oracle: what a load must have done, from its own parse of the image.

It reads the ELF program headers or the multiboot header independently of
the loaders and checks the loaded pieces, entry, mode and multiboot
information against guest memory; a rejection must be one line, status 2.
"""

from __future__ import annotations

import itertools
import struct

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.errors import LoaderError
from pyvmm.loaders import EntryPoint
from pyvmm.loaders.entry import CpuMode
from pyvmm.memory.guest_memory import GuestMemory
from tests.fuzz.image_cases import Case
from tests.fuzz.image_formats import (
    ELF_FIELDS,
    MB_AOUT_KLUDGE,
    MB_BOOTLOADER_MAGIC,
    MB_INFO_SIZE,
    PHDR_FIELDS,
    PT_LOAD,
    elf_bits,
    find_multiboot_magic,
    read_field,
)

SAMPLE = 4096  # bytes of each segment's data and bss compared after a load

# (file offset, gpa, filesz, memsz) of one piece the loader must have copied.
Piece = tuple[int, int, int, int]


def elf_pieces(image: bytes) -> tuple[int, list[Piece]]:
    """e_entry and the non-empty PT_LOAD segments, read independently of the loader."""
    bits = elf_bits(image)
    if bits is None:
        raise struct.error("not an ELF32/ELF64 image")
    header = {
        name: read_field(image, off, width) for name, (off, width) in ELF_FIELDS[bits].items()
    }
    pieces = []
    for index in range(header["e_phnum"]):
        base = header["e_phoff"] + index * header["e_phentsize"]
        phdr = {
            name: read_field(image, base + off, w) for name, (off, w) in PHDR_FIELDS[bits].items()
        }
        if phdr["p_type"] == PT_LOAD and phdr["p_memsz"]:
            pieces.append((phdr["p_offset"], phdr["p_paddr"], phdr["p_filesz"], phdr["p_memsz"]))
    return header["e_entry"], pieces


def multiboot_pieces(image: bytes) -> tuple[int, list[Piece]]:
    offset = find_multiboot_magic(image, need_checksum=True)
    if offset is None:
        raise struct.error("no multiboot header")
    if not read_field(image, offset + 4, 4) & MB_AOUT_KLUDGE:
        return elf_pieces(image)
    header_addr, load_addr, load_end, bss_end, entry = (
        read_field(image, offset + 12 + 4 * index, 4) for index in range(5)
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
    if bits == 32 and entry.mode.is_64bit:
        problems.append(f"ELF32 (32-bit code) image entered in {entry.mode.value} mode")
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
