"""Multiboot (v1) kernels: the header, the kernel, its modules and the boot information.

Multiboot Specification 0.6.96. A kernel carries a header (magic 0x1BADB002,
flags, checksum) 4-byte aligned within its first 8 KiB. With flag bit 16 the
header's address fields say where the file goes (the "a.out kludge");
otherwise the file is an ELF executable whose PT_LOAD segments go to p_paddr.

Like QEMU's -kernel with -initrd, modules are copied page-aligned after the
kernel's end, one after another, and the information area (built by
loaders/multiboot_info.py) follows on the next page. The kernel is entered
in 32-bit protected mode with EAX = 0x2BADB002 and EBX = the information's
address. Everything is planned and checked before a byte is written.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.errors import BadEntryPoint, ImageTooLarge, LoaderError
from pyvmm.loaders.elf import (
    _ELF64,
    ELF_FIX,
    _Segment,
    _write_segment,
    is_elf,
    parse_executable,
)
from pyvmm.loaders.entry import CpuMode, EntryPoint, ImageSegment
from pyvmm.loaders.flat import check_clear, check_reachable, describe_ram_at, format_size
from pyvmm.loaders.magic import MULTIBOOT_HEADER_MAGIC, MULTIBOOT_SEARCH
from pyvmm.loaders.multiboot_info import (
    ADDRESS_LIMIT_32,
    MULTIBOOT_BOOTLOADER_MAGIC,
    ModuleInfo,
    MultibootInfo,
    build_info,
    info_area_size,
    usable_ranges,
    write_info,
)
from pyvmm.memory.addr import PAGE_SIZE, GuestPhysAddr, align_up

if TYPE_CHECKING:  # only for hints: importing the loaders needs no compiled _kvm module
    from pyvmm.memory.guest_memory import GuestMemory

# The header (3.1.1, 3.1.2); its magic and where it lies: loaders/magic.py.
MULTIBOOT_HEADER_ALIGN = 4
MAGIC_FIELDS = struct.Struct("<III")  # magic, flags, checksum
ADDRESS_FIELDS = struct.Struct("<IIIII")  # header_addr .. entry_addr, at offset 12
# Header flag bits 0-15 are requirements: a loader that does not know one must refuse.
MULTIBOOT_PAGE_ALIGN = 1 << 0  # modules page-aligned: always done here
MULTIBOOT_MEMORY_INFO = 1 << 1  # mem_* and the memory map: always provided
MULTIBOOT_VIDEO_MODE = 1 << 2  # a preferred video mode: accepted, ignored (no video)
MULTIBOOT_AOUT_KLUDGE = 1 << 16  # the address fields are valid
REQUIRED_FLAGS_MASK = 0xFFFF
KNOWN_REQUIRED_FLAGS = MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_VIDEO_MODE
# How to move an a.out-kludge kernel: its header's address fields say where it goes.
AOUT_FIX = "move the kernel (the multiboot header's load_addr)"


class BadMultiboot(LoaderError):
    """A malformed multiboot header or kernel, or one that cannot be placed."""


class UnsupportedMultiboot(LoaderError):
    """A well-formed multiboot kernel that requires something pyvmm does not provide."""


@dataclass(frozen=True)
class AddressFields:
    """The header's a.out-kludge fields (flag bit 16), all guest-physical (3.1.3)."""

    header_addr: int
    load_addr: int
    load_end_addr: int  # 0: load to the end of the file
    bss_end_addr: int  # 0: no bss
    entry_addr: int


@dataclass(frozen=True)
class MultibootHeader:
    offset: int  # of the magic, in the file
    flags: int
    checksum: int
    addresses: AddressFields | None  # None unless flag bit 16


@dataclass(frozen=True)
class MultibootPlan:
    """Where everything goes, fully validated; `load_multiboot` only writes it."""

    header: MultibootHeader
    entry: int
    segments: tuple[_Segment, ...]  # the kernel: file data plus zeroed bss each
    modules: tuple[ModuleInfo, ...]
    module_data: tuple[bytes, ...]
    info: MultibootInfo

    @property
    def kernel_start(self) -> int:
        return min(segment.paddr for segment in self.segments)

    @property
    def kernel_end(self) -> int:
        return max(segment.end for segment in self.segments)

    @property
    def described(self) -> tuple[ImageSegment, ...]:
        return tuple(segment.described("kernel segment") for segment in self.segments)


def _bit_list(bits: int) -> str:
    numbers = [str(bit) for bit in range(32) if bits >> bit & 1]
    return ("bit " if len(numbers) == 1 else "bits ") + ", ".join(numbers)


def find_header(image: bytes) -> MultibootHeader | None:
    """The multiboot header, None if there is none; LoaderError if it is unusable."""
    magic = struct.pack("<I", MULTIBOOT_HEADER_MAGIC)
    limit = min(len(image), MULTIBOOT_SEARCH) - MAGIC_FIELDS.size
    offset = image.find(magic, 0, limit + len(magic))
    while 0 <= offset <= limit:
        if offset % MULTIBOOT_HEADER_ALIGN == 0:
            _magic, flags, checksum = MAGIC_FIELDS.unpack_from(image, offset)
            if (MULTIBOOT_HEADER_MAGIC + flags + checksum) % (1 << 32) == 0:
                return _parse_header(image, offset, flags, checksum)
        offset = image.find(magic, offset + 1, limit + len(magic))
    return None


def _parse_header(image: bytes, offset: int, flags: int, checksum: int) -> MultibootHeader:
    unknown = flags & REQUIRED_FLAGS_MASK & ~KNOWN_REQUIRED_FLAGS
    if unknown:
        raise UnsupportedMultiboot(
            f"the multiboot header at 0x{offset:x} requires flag {_bit_list(unknown)} "
            f"(flags 0x{flags:08x}), which pyvmm does not support"
        )
    addresses = None
    if flags & MULTIBOOT_AOUT_KLUDGE:
        end = offset + MAGIC_FIELDS.size + ADDRESS_FIELDS.size
        if end > len(image):
            raise BadMultiboot(
                f"truncated multiboot header: its address fields at 0x{offset:x}..0x{end:x} "
                f"run past the end of the {len(image)}-byte file"
            )
        if end > MULTIBOOT_SEARCH:
            raise BadMultiboot(
                f"the multiboot header at 0x{offset:x}..0x{end:x} runs past the first 8 KiB"
            )
        addresses = AddressFields(*ADDRESS_FIELDS.unpack_from(image, offset + MAGIC_FIELDS.size))
    return MultibootHeader(offset, flags, checksum, addresses)


def _aout_kernel(
    image: bytes, header: MultibootHeader, fields: AddressFields
) -> tuple[list[_Segment], int]:
    """The one segment the address fields describe, and the entry point."""
    where = f"multiboot header at 0x{header.offset:x}"
    if fields.load_addr > fields.header_addr:
        raise BadMultiboot(
            f"{where}: load_addr 0x{fields.load_addr:x} is above "
            f"header_addr 0x{fields.header_addr:x}"
        )
    header_to_load = fields.header_addr - fields.load_addr
    file_start = header.offset - header_to_load
    if file_start < 0:
        raise BadMultiboot(
            f"{where}: load_addr 0x{fields.load_addr:x} is 0x{header_to_load:x} bytes before "
            f"header_addr 0x{fields.header_addr:x}, but the header is only "
            f"0x{header.offset:x} bytes into the file"
        )
    if fields.load_end_addr == 0:
        load_end = fields.load_addr + len(image) - file_start
    else:
        load_end = fields.load_end_addr
        if load_end <= fields.load_addr:
            raise BadMultiboot(
                f"{where}: load_end_addr 0x{load_end:x} is not above "
                f"load_addr 0x{fields.load_addr:x}"
            )
        if file_start + load_end - fields.load_addr > len(image):
            raise BadMultiboot(
                f"{where}: load_addr..load_end_addr (0x{fields.load_addr:x}..0x{load_end:x}) "
                f"needs file bytes 0x{file_start:x}..0x{file_start + load_end - fields.load_addr:x}"
                f", past the end of the {len(image)}-byte file"
            )
    if fields.header_addr + MAGIC_FIELDS.size > load_end:
        raise BadMultiboot(
            f"{where}: header_addr 0x{fields.header_addr:x} lies outside the loaded range "
            f"0x{fields.load_addr:x}..0x{load_end:x}"
        )
    memory_end = load_end
    if fields.bss_end_addr:
        if fields.bss_end_addr < load_end:
            raise BadMultiboot(
                f"{where}: bss_end_addr 0x{fields.bss_end_addr:x} is below "
                f"load_end_addr 0x{load_end:x}"
            )
        memory_end = fields.bss_end_addr
    if not fields.load_addr <= fields.entry_addr < load_end:
        raise BadEntryPoint(
            f"{where}: entry_addr 0x{fields.entry_addr:x} is not inside the loaded range "
            f"0x{fields.load_addr:x}..0x{load_end:x}"
        )
    segment = _Segment(
        index=0,
        offset=file_start,
        paddr=fields.load_addr,
        filesz=load_end - fields.load_addr,
        memsz=memory_end - fields.load_addr,
    )
    return [segment], fields.entry_addr


def _elf_kernel(image: bytes, memory: GuestMemory) -> tuple[list[_Segment], int]:
    """The PT_LOAD segments of an ELF32 or ELF64 kernel, and e_entry."""
    if not is_elf(image):
        raise BadMultiboot(
            "the multiboot header has no address fields (flag bit 16) and the image is not "
            "ELF: pyvmm cannot tell where to load it"
        )
    elf_class, segments, entry = parse_executable(image, memory)
    if elf_class is _ELF64 and entry >= ADDRESS_LIMIT_32:
        raise BadEntryPoint(
            f"entry point 0x{entry:x} is above 4 GiB: a multiboot kernel starts "
            "in 32-bit protected mode"
        )
    return segments, entry


def kernel_segments(image: bytes, memory: GuestMemory) -> tuple[list[_Segment], int, str]:
    """The kernel's segments, its guest-physical entry and how to move a segment.

    Everything about the kernel itself is checked (LoaderError); nothing is
    written, and the command line and modules are not looked at.
    """
    _header, segments, entry, fix = _kernel(image, memory)
    return segments, entry, fix


def _kernel(image: bytes, memory: GuestMemory) -> tuple[MultibootHeader, list[_Segment], int, str]:
    header = find_header(image)
    if header is None:
        raise BadMultiboot(
            "no multiboot header: magic 0x1BADB002 with a valid checksum is not in "
            "the first 8 KiB of the image"
        )
    if header.addresses is not None:
        segments, entry = _aout_kernel(image, header, header.addresses)
        fix = AOUT_FIX
    else:
        segments, entry = _elf_kernel(image, memory)
        fix = ELF_FIX
    for segment in segments:
        what = f"kernel segment {segment.index} at 0x{segment.paddr:x}..0x{segment.end:x}"
        if not memory.contains(segment.paddr, segment.memsz):
            raise ImageTooLarge(
                f"{what} ({format_size(segment.memsz)}) does not fit in guest RAM "
                f"({describe_ram_at(memory, segment.paddr)})"
            )
        check_reachable(CpuMode.PROTECTED, segment.paddr, segment.end, "multiboot kernel")
    return header, segments, entry, fix


def _find_space(
    start: int, size: int, usable: Sequence[tuple[int, int]], taken: Sequence[tuple[int, int]]
) -> int | None:
    """The first page-aligned gpa >= start where `size` bytes fit in usable RAM, clear of taken."""
    need = max(size, 1)
    gpa = align_up(start, PAGE_SIZE)
    for low, high in usable:
        gpa = max(gpa, align_up(low, PAGE_SIZE))
        while gpa + need <= high:
            blocker = max((end for s, end in taken if s < gpa + need and gpa < end), default=None)
            if blocker is None:
                return gpa
            gpa = align_up(blocker, PAGE_SIZE)
    return None


def _check_info_hint(
    gpa: int, size: int, usable: Sequence[tuple[int, int]], taken: Sequence[tuple[int, int, str]]
) -> None:
    what = f"multiboot information at 0x{gpa:x}..0x{gpa + size:x}"
    if not any(low <= gpa and gpa + size <= high for low, high in usable):
        raise ImageTooLarge(f"{what} is not inside available RAM below 4 GiB")
    for start, end, name in taken:
        if gpa < end and start < gpa + size:
            raise BadMultiboot(f"{what} overlaps {name} at 0x{start:x}..0x{end:x}")


def plan_multiboot(
    image: bytes,
    memory: GuestMemory,
    cmdline: str,
    modules: Sequence[tuple[str, bytes]] = (),
    info_gpa_hint: int | None = None,
    reserved: Sequence[tuple[int, int, str]] = (),
) -> MultibootPlan:
    """Validate the kernel and decide where the kernel, modules and information go.

    `reserved` lists (start, end, what) of RAM the machine writes itself
    (pyvmm's GDT and stack for the 32-bit entry, firmware tables): no kernel
    segment may overlap one (ReservedOverlap, naming both), and the modules
    and the information are placed clear of them.
    """
    header, segments, entry, fix = _kernel(image, memory)
    for name, text in [("command line", cmdline)] + [
        (f"module {index} string", string) for index, (string, _data) in enumerate(modules)
    ]:
        if "\0" in text:
            raise BadMultiboot(f"the multiboot {name} {text!r} contains a NUL character")
        # Python decodes a non-UTF-8 path or argument with lone surrogates, which the
        # information's UTF-8 strings cannot hold: refuse them here, not in the encoder.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadMultiboot(
                f"the multiboot {name} {text!r} is not valid UTF-8 "
                "(a file name or argument in another encoding?)"
            ) from None
    check_clear([segment.described("kernel segment") for segment in segments], reserved, fix)

    ram = [(region.gpa, region.size) for region in memory.regions]
    usable = [
        (low, min(high, ADDRESS_LIMIT_32))
        for low, high in usable_ranges(ram)
        if low < ADDRESS_LIMIT_32
    ]
    taken: list[tuple[int, int, str]] = list(reserved)
    taken += [(s.paddr, s.end, f"kernel segment {s.index}") for s in segments]
    cursor = max(segment.end for segment in segments)
    placed: list[ModuleInfo] = []
    for index, (string, data) in enumerate(modules):
        gpa = _find_space(cursor, len(data), usable, [(s, e) for s, e, _ in taken])
        if gpa is None:
            raise ImageTooLarge(
                f"module {index} ({string!r}, {format_size(len(data))}) does not fit in "
                f"available RAM below 4 GiB after 0x{cursor:x}"
            )
        placed.append(ModuleInfo(gpa, gpa + len(data), string))
        taken.append((gpa, gpa + len(data), f"module {index}"))
        cursor = gpa + len(data)

    size = info_area_size(ram, cmdline, [module.string for module in placed])
    if info_gpa_hint is None:
        info_gpa = _find_space(cursor, size, usable, [(s, e) for s, e, _ in taken])
        if info_gpa is None:
            raise ImageTooLarge(
                f"the multiboot information ({format_size(size)}) does not fit in "
                f"available RAM below 4 GiB after 0x{cursor:x}"
            )
    else:
        _check_info_hint(info_gpa_hint, size, usable, taken)
        info_gpa = info_gpa_hint
    info = build_info(info_gpa, ram, cmdline, placed)
    return MultibootPlan(
        header=header,
        entry=entry,
        segments=tuple(segments),
        modules=tuple(placed),
        module_data=tuple(data for _string, data in modules),
        info=info,
    )


def load_multiboot(
    image: bytes,
    memory: GuestMemory,
    cmdline: str,
    modules: Sequence[tuple[str, bytes]] = (),
    info_gpa_hint: int | None = None,
    reserved: Sequence[tuple[int, int, str]] = (),
) -> EntryPoint:
    """Copy the kernel, its modules and the information; describe the 32-bit entry.

    `cmdline` is the whole string the kernel sees (QEMU: "<kernel path> <append>");
    `modules` are (string, contents) pairs in order. The EntryPoint's image range
    is the kernel's (bss included); the information's address is in EBX.
    """
    plan = plan_multiboot(image, memory, cmdline, modules, info_gpa_hint, reserved)
    for segment in plan.segments:
        _write_segment(image, memory, segment)
    for module, data in zip(plan.modules, plan.module_data, strict=True):
        memory.write(module.start, data)
    write_info(memory, plan.info)
    return EntryPoint(
        entry=GuestPhysAddr(plan.entry),
        mode=CpuMode.PROTECTED,
        protocol="multiboot",
        image_start=GuestPhysAddr(plan.kernel_start),
        image_end=GuestPhysAddr(plan.kernel_end),
        registers=(("rax", MULTIBOOT_BOOTLOADER_MAGIC), ("rbx", plan.info.gpa)),
        segments=plan.described,
    )


__all__ = [
    "AddressFields",
    "BadMultiboot",
    "MultibootHeader",
    "MultibootPlan",
    "UnsupportedMultiboot",
    "find_header",
    "kernel_segments",
    "load_multiboot",
    "plan_multiboot",
]
