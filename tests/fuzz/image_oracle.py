"""The image fuzzer's oracle: what a load must have done, from its own parse of the image.

It reads the ELF program headers, the multiboot header or a Linux kernel's
setup header independently of the loaders and checks the loaded pieces,
entry, mode, multiboot information and Linux zero page against guest
memory, and where pyvmm put its own GDT, page tables, TSS and boot stack (the
rules of arch/x86_64/placement.py, restated here); a rejection must be one
line, status 2.
"""

from __future__ import annotations

import itertools
import struct

from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.arch.x86_64.placement import Placement
from pyvmm.errors import LoaderError
from pyvmm.firmware.tables import firmware_ranges
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
from tests.fuzz.image_linux import (
    BZ_FIELDS,
    E820_ENTRY,
    ZP_E820_ENTRIES,
    ZP_E820_TABLE,
    ZP_EXT_CMD_LINE_PTR,
    bzimage_piece,
    get,
    is_bzimage,
)

SAMPLE = 4096  # bytes of each segment's data and bss compared after a load

# (file offset, gpa, filesz, memsz) of one piece the loader must have copied.
Piece = tuple[int, int, int, int]

MIB = 1 << 20
# pyvmm's own structures: (VmmPlaces field, size, alignment, default start, limit of
# the RAM it may be moved to), per entry mode; the stack's field is its top.
GDT = ("gdt", 3 * 8, 8, 0x500, MIB)
LINUX_GDT = ("gdt", 4 * 8, 8, 0x500, MIB)  # __BOOT_CS 0x10 and __BOOT_DS 0x18 (boot.rst)
USER_GDT = ("gdt", 7 * 8, 8, 0x500, MIB)
TABLES_32 = ("page_tables", 0x1000, 0x1000, 0x1000, 1 << 32)
TABLES_64 = ("page_tables", 0x6000, 0x1000, 0x1000, 1 << 32)
TSS = ("tss", 104 + 8192 + 1, 0x1000, 0x7000, MIB)
STACK = ("stack_top", 0x1_0000, 16, 0x7_0000, MIB)
STRUCTURES = {
    CpuMode.REAL: [],
    CpuMode.PROTECTED: [GDT, STACK],
    CpuMode.PAGED: [GDT, TABLES_32, STACK],
    CpuMode.LONG: [GDT, TABLES_64, STACK],
    CpuMode.USER: [USER_GDT, TABLES_64, TSS, STACK],
}
EBDA = 0x9_FC00  # nothing of pyvmm's is moved into 0x9fc00-0xfffff
# What `pyvmm boot` writes besides its entry state, by default (the firmware's MP and
# ACPI tables): the fuzzer passes the same list, and nothing may overlap it.
MACHINE_RANGES = firmware_ranges(interrupt_controllers=True, acpi=True)


def elf_pieces(image: bytes) -> tuple[int, list[Piece]]:
    """The entry and the non-empty PT_LOAD segments, read independently of the loader.

    The entry is e_entry moved by the first segment whose virtual range holds
    it, from p_vaddr to p_paddr (GRUB 2's and QEMU's rule), else e_entry.
    """
    bits = elf_bits(image)
    if bits is None:
        raise struct.error("not an ELF32/ELF64 image")
    header = {
        name: read_field(image, off, width) for name, (off, width) in ELF_FIELDS[bits].items()
    }
    pieces = []
    entry = None
    for index in range(header["e_phnum"]):
        base = header["e_phoff"] + index * header["e_phentsize"]
        phdr = {
            name: read_field(image, base + off, w) for name, (off, w) in PHDR_FIELDS[bits].items()
        }
        if phdr["p_type"] == PT_LOAD and phdr["p_memsz"]:
            pieces.append((phdr["p_offset"], phdr["p_paddr"], phdr["p_filesz"], phdr["p_memsz"]))
            virtual = phdr["p_vaddr"]
            if entry is None and virtual <= header["e_entry"] < virtual + phdr["p_memsz"]:
                entry = header["e_entry"] - virtual + phdr["p_paddr"]
    return header["e_entry"] if entry is None else entry, pieces


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


def check_multiboot(
    case: Case, memory: GuestMemory, entry: EntryPoint, reserved: list[tuple[int, int]]
) -> list[str]:
    registers = dict(entry.registers)
    if entry.mode is not CpuMode.PROTECTED or registers.get("rax") != MB_BOOTLOADER_MAGIC:
        return ["a multiboot kernel must start in protected mode with EAX=0x2BADB002"]
    info = registers.get("rbx", -1)
    if not (memory.contains(info, MB_INFO_SIZE) and info + MB_INFO_SIZE <= 1 << 32):
        return [f"multiboot information at 0x{info:x} is not in RAM below 4 GiB"]
    expected_entry, pieces = multiboot_pieces(case.image)
    problems = check_pieces(case.image, memory, pieces, entry, expected_entry)
    taken = [(gpa, gpa + memsz) for _, gpa, _, memsz in pieces] + reserved
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


def structures_of(entry: EntryPoint) -> list[tuple[str, int, int, int, int]]:
    """pyvmm's structures for `entry`: its mode's, with the Linux boot protocol's GDT."""
    if entry.protocol == "linux":
        return [LINUX_GDT if item is GDT else item for item in STRUCTURES[entry.mode]]
    return STRUCTURES[entry.mode]


def placed_structures(entry: EntryPoint, placement: Placement) -> list[tuple[int, int, int, int]]:
    """(start, end, alignment, default start) of each of pyvmm's structures for `entry`."""
    placed = []
    for field, size, align, default, _limit in structures_of(entry):
        value = getattr(placement.places, field)
        start = value - size if field == "stack_top" else value
        placed.append((start, start + size, align, default))
    return placed


def check_placement(
    case: Case, memory: GuestMemory, entry: EntryPoint, placement: Placement
) -> list[str]:
    """pyvmm's structures: in free RAM, aligned, apart, and moved only when they had to be.

    Free means clear of every loaded piece (read from the image, or the flat
    image's range), the multiboot information and modules, and what the
    machine writes (the firmware ranges the fuzzer passed).
    """
    if entry.protocol == "flat":
        gpa = entry.entry
        taken = [(gpa, gpa + len(case.image))]
    elif entry.protocol == "linux":  # the kernel, zero page, command line and initrd
        taken = [(start, end) for start, end, _ in linux_ranges(case, memory, entry)]
    else:
        reader = multiboot_pieces if entry.protocol == "multiboot" else elf_pieces
        taken = [(gpa, gpa + memsz) for _, gpa, _, memsz in reader(case.image)[1]]
    blockers = taken + [(start, end) for start, end, _ in MACHINE_RANGES]
    taken = list(blockers)
    registers = dict(entry.registers)
    if entry.protocol == "multiboot":
        info = registers["rbx"]
        taken.append((info, info + MB_INFO_SIZE))
        mods_addr = memory.read_u32(info + 24)
        for index in range(len(case.modules)):
            start, end = (memory.read_u32(mods_addr + 16 * index + k) for k in (0, 4))
            taken.append((start, end))
    problems = []
    limits = [limit for *_, limit in structures_of(entry)]
    placed = placed_structures(entry, placement)
    for (start, end, align, default), limit in zip(placed, limits, strict=True):
        what = f"pyvmm's structure at 0x{start:x}..0x{end:x}"
        if start % align or not memory.contains(start, end - start) or end > limit:
            problems.append(f"{what} is misaligned, not RAM or above 0x{limit:x}")
        elif limit == MIB and end > EBDA:
            problems.append(f"{what} lies in the EBDA or the BIOS area")
        if any(start < e and s < end for s, e in taken):
            problems.append(f"{what} overlaps the image, the multiboot data or a machine range")
        if start != default and not any(
            default < e and s < default + (end - start) for s, e in blockers
        ):
            problems.append(f"{what} was moved from its free default place 0x{default:x}")
        taken.append((start, end))
    return problems


def check_loaded(
    case: Case, memory: GuestMemory, entry: EntryPoint, placement: Placement
) -> list[str]:
    """What is wrong with a successful load (nothing, for a correct loader)."""
    problems = check_mode(case, entry)
    if not memory.contains(entry.entry):
        problems.append(f"entry 0x{entry.entry:x} is not in RAM")
    problems += check_placement(case, memory, entry, placement)
    if entry.protocol == "flat":
        return problems + check_flat(case, memory, entry)
    if entry.protocol == "multiboot":
        reserved = [(start, end) for start, end, _ in placement.reserved]
        return problems + check_multiboot(case, memory, entry, reserved)
    if entry.protocol == "linux":
        reserved = [(start, end) for start, end, _ in placement.reserved]
        return problems + check_linux(case, memory, entry, reserved)
    bits = elf_bits(case.image)
    if entry.protocol != f"elf{bits}":
        return [*problems, f"protocol {entry.protocol!r} for an image of ELF class {bits}"]
    if bits == 64 and not entry.mode.is_64bit:
        problems.append(f"ELF64 image entered in {entry.mode.value} mode")
    if bits == 32 and entry.mode.is_64bit:
        problems.append(f"ELF32 (32-bit code) image entered in {entry.mode.value} mode")
    expected_entry, pieces = elf_pieces(case.image)
    return problems + check_pieces(case.image, memory, pieces, entry, expected_entry)


def linux_kernel(case: Case, entry: EntryPoint) -> tuple[int, list[Piece]]:
    """The expected entry and the kernel's pieces, read from the image as the oracle reads it.

    A bzImage: everything after its setup sectors, at one of the load
    addresses boot.rst allows (pref_address, or a relocatable kernel's
    lowest kernel_alignment boundary above 1 MiB), init_size bytes long,
    entered 0x200 in. A vmlinux: its PT_LOAD segments and e_entry.
    """
    if is_bzimage(case.image):  # the loader reads a setup header first, as this does
        offset, filesz, memsz, loads = bzimage_piece(case.image)
        load = entry.entry - 0x200 if entry.entry - 0x200 in loads else loads[0]
        return load + 0x200, [(offset, load, filesz, memsz)]
    return elf_pieces(case.image)


def linux_ranges(case: Case, memory: GuestMemory, entry: EntryPoint) -> list[tuple[int, int, str]]:
    """(start, end, what) of the kernel, the zero page, the command line and the initrd."""
    _entry, pieces = linux_kernel(case, entry)
    ranges = [(gpa, gpa + memsz, "the kernel") for _, gpa, _, memsz in pieces]
    page = dict(entry.registers).get("rsi", -1)
    ranges.append((page, page + 4096, "the zero page"))
    if memory.contains(page, 4096):
        zero_page = memory.read(page, 4096)
        high = read_field(zero_page, ZP_EXT_CMD_LINE_PTR, 4) << 32
        cmdline = get(zero_page, "cmd_line_ptr") | high
        size = len((case.append or "").encode("utf-8", "surrogatepass")) + 1
        ranges.append((cmdline, cmdline + size, "the command line"))
        if case.modules:
            initrd = get(zero_page, "ramdisk_image") | read_field(zero_page, 0xC0, 4) << 32
            ranges.append((initrd, initrd + len(case.modules[0][1]), "the initrd"))
    return ranges


def check_linux(
    case: Case, memory: GuestMemory, entry: EntryPoint, reserved: list[tuple[int, int]]
) -> list[str]:
    """The 64-bit boot protocol: RSI, the zero page's fields, the command line, the initrd."""
    registers = dict(entry.registers)
    page = registers.get("rsi", -1)
    if entry.mode is not CpuMode.LONG or set(registers) != {"rsi"}:
        return ["a Linux kernel must start in long mode with RSI alone set"]
    if not memory.contains(page, 4096) or page % 4096:
        return [f"zero page at 0x{page:x} is not a page of RAM"]
    expected_entry, pieces = linux_kernel(case, entry)
    problems = check_pieces(case.image, memory, pieces, entry, expected_entry)
    zero_page = memory.read(page, 4096)
    if zero_page[0x202:0x206] != b"HdrS":  # a bzImage's own, or the one pyvmm wrote
        problems.append("the zero page has no setup header (HdrS)")
    if not is_bzimage(case.image) and get(zero_page, "boot_flag") != 0xAA55:
        problems.append("a vmlinux's zero page has no boot_flag 0xAA55")
    if get(zero_page, "type_of_loader") != 0xFF or not get(zero_page, "xloadflags") & 1:
        problems.append("type_of_loader is not 0xff or XLF_KERNEL_64 is clear")
    if get(zero_page, "version") < 0x020C:
        problems.append(f"boot protocol 0x{get(zero_page, 'version'):x} in the zero page")
    if is_bzimage(case.image):
        end = min(0x202 + case.image[0x201], 0x290)
        written = {"type_of_loader", "code32_start", "ramdisk_image", "ramdisk_size",
                   "cmd_line_ptr"}  # fmt: skip
        skip = {o for n in written for o in range(BZ_FIELDS[n][0], sum(BZ_FIELDS[n]))}
        if any(zero_page[o] != case.image[o] for o in range(0x1F1, end) if o not in skip):
            problems.append("the setup header was not copied into the zero page")
    append = (case.append or "").encode("utf-8")
    if len(append) > get(zero_page, "cmdline_size"):
        problems.append(f"a {len(append)}-byte command line over cmdline_size was accepted")
    # By name: a real vmlinux has several kernel pieces before it (the synthetic ones, one).
    ranges = linux_ranges(case, memory, entry)
    cmdline = next((start for start, _, what in ranges if what == "the command line"), -1)
    if (
        not memory.contains(cmdline, len(append) + 1)
        or memory.read(cmdline, len(append) + 1) != append + b"\0"
    ):
        problems.append(f"the command line at 0x{cmdline:x} is not --append")
    entries = zero_page[ZP_E820_ENTRIES]
    usable = [
        E820_ENTRY.unpack_from(zero_page, ZP_E820_TABLE + 20 * index) for index in range(entries)
    ]
    if not entries or any(
        kind == 1 and not memory.contains(base, size) for base, size, kind in usable
    ):
        problems.append("the e820 table is empty or calls what is no RAM usable")
    if case.modules:
        initrd, size = ranges[-1][0], get(zero_page, "ramdisk_size")
        data = case.modules[0][1]
        limit = get(zero_page, "initrd_addr_max")
        if size != len(data) or not memory.contains(initrd, max(size, 1)):
            problems.append(f"initrd at 0x{initrd:x} ({size} bytes) is misplaced")
        elif initrd + size > limit + 1 or memory.read(initrd, min(size, SAMPLE)) != data[:SAMPLE]:
            problems.append(f"initrd at 0x{initrd:x} is above initrd_addr_max or not copied")
    others = [(s, e) for s, e, _ in ranges] + reserved
    for index, (start, end, what) in enumerate(ranges):
        if what != "the kernel" and any(
            start < e and s < end for j, (s, e) in enumerate(others) if j != index
        ):
            problems.append(f"{what} at 0x{start:x}..0x{end:x} overlaps another piece")
    return problems


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
