"""Multiboot (v1): header detection, the boot information, and the loader (no /dev/kvm).

Kernels are built here with struct: a multiboot header inside a small ELF32 or
ELF64 executable, or inside a flat image with the a.out-kludge address fields.
Every malformed case is one field patched into a good kernel.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.placement import reserved_ranges
from pyvmm.errors import BadEntryPoint, ImageTooLarge, LoaderError, UnsupportedElf
from pyvmm.loaders import load_image
from pyvmm.loaders.entry import CpuMode
from pyvmm.loaders.flat import ReservedOverlap, UnreachableImage
from pyvmm.loaders.multiboot import (
    AddressFields,
    BadMultiboot,
    UnsupportedMultiboot,
    find_header,
)
from pyvmm.loaders.multiboot import load_multiboot as load_multiboot_anywhere
from pyvmm.loaders.multiboot import plan_multiboot as plan_multiboot_anywhere
from pyvmm.loaders.multiboot_info import (
    BOOT_LOADER_NAME,
    MULTIBOOT_BOOTLOADER_MAGIC,
    ModuleInfo,
    build_info,
    info_area_size,
    mem_upper_kib,
    memory_map,
    write_info,
)
from pyvmm.memory.guest_memory import GuestMemory

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# What pyvmm writes itself for a 32-bit entry, at the default places (the builder
# passes these, or where it moved them, and the firmware's ranges).
VMM_RESERVED = reserved_ranges(CpuMode.PROTECTED)


def load_multiboot(*args: Any, **kwargs: Any) -> Any:
    return load_multiboot_anywhere(*args, reserved=VMM_RESERVED, **kwargs)


def plan_multiboot(*args: Any, **kwargs: Any) -> Any:
    return plan_multiboot_anywhere(*args, reserved=VMM_RESERVED, **kwargs)


PAGE = 0x1000
RAM_SIZE = 4 * MIB
FILL = 0xAA  # pre-fills RAM so that written and zeroed bytes are visible
MAGIC = 0x1BADB002
GUESTS = Path(__file__).resolve().parents[2] / "guests"

# --- kernel builders ----------------------------------------------------------------


def header(flags: int = 0x3, checksum: int | None = None, fields: tuple[int, ...] = ()) -> bytes:
    if checksum is None:
        checksum = -(MAGIC + flags) & 0xFFFFFFFF
    return struct.pack("<III", MAGIC, flags, checksum) + struct.pack(f"<{len(fields)}I", *fields)


def with_header_at(offset: int, size: int = 8300, **kwargs: int) -> bytes:
    image = bytearray(size)
    mb = header(**kwargs)
    image[offset : offset + len(mb)] = mb
    return bytes(image)


KERNEL_GPA = 0x10_0000
CODE = header() + bytes(range(1, 53))  # 64 bytes: the header, then non-zero "code"
ENTRY = KERNEL_GPA + 12
BSS = 0x1800  # the kernel ends at 0x101840: modules start on the next page


def elf_kernel(
    bits: int = 32,
    entry: int = ENTRY,
    e_type: int = 2,
    paddr: int = KERNEL_GPA,
    vaddr: int | None = None,
) -> bytes:
    """An ET_EXEC with one PT_LOAD (CODE, then BSS bytes of bss) at `paddr` (p_vaddr `vaddr`)."""
    vaddr = paddr if vaddr is None else vaddr
    if bits == 32:
        ehdr = struct.Struct("<16sHHIIIIIHHHHHH")
        phdr = struct.Struct("<IIIIIIII")
    else:
        ehdr = struct.Struct("<16sHHIQQQIHHHHHH")
        phdr = struct.Struct("<IIQQQQQQ")
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    machine = 3 if bits == 32 else 62
    offset = ehdr.size + phdr.size
    head = ehdr.pack(ident, e_type, machine, 1, entry, ehdr.size, 0, 0, ehdr.size,
                     phdr.size, 1, 0, 0, 0)  # fmt: skip
    if bits == 32:
        ph = phdr.pack(1, offset, vaddr, paddr, len(CODE), len(CODE) + BSS, 5, 4)
    else:
        ph = phdr.pack(1, 5, offset, vaddr, paddr, len(CODE), len(CODE) + BSS, 4)
    return head + ph + CODE


AOUT_HEADER_OFFSET = 0x40
AOUT_GPA = 0x20_0000


def aout_kernel(
    load_addr: int = AOUT_GPA,
    header_addr: int = AOUT_GPA + AOUT_HEADER_OFFSET,
    load_end_addr: int = 0,
    bss_end_addr: int = AOUT_GPA + 0x3000,
    entry_addr: int = AOUT_GPA + 0x60,
    size: int = 0x100,
    flags: int = 0x10003,
) -> bytes:
    """A flat image of `size` bytes, its header (with address fields) at 0x40."""
    image = bytearray(b"\xcc" * size)
    mb = header(flags, fields=(header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr))
    image[AOUT_HEADER_OFFSET : AOUT_HEADER_OFFSET + len(mb)] = mb
    return bytes(image)


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory.from_ranges([(0, RAM_SIZE)]) as guest_memory:
        guest_memory.fill(0, RAM_SIZE, FILL)
        yield guest_memory


def untouched(memory: GuestMemory) -> bool:
    return memory.read(0, RAM_SIZE) == bytes([FILL]) * RAM_SIZE


def u32(memory: GuestMemory, gpa: int) -> int:
    return memory.read_u32(gpa)


def c_string_at(memory: GuestMemory, gpa: int) -> str:
    data = memory.read(gpa, 256)
    return data[: data.index(b"\0")].decode()


def default_flat_gpa(mode: CpuMode) -> int:
    return 0x7C00 if mode is CpuMode.REAL else 0x10_0000


# --- header detection ---------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 4, 0x40, 4096, 8180])
def test_header_found_at_aligned_offsets_in_the_first_8_kib(offset: int) -> None:
    found = find_header(with_header_at(offset))
    assert found is not None
    assert (found.offset, found.flags, found.addresses) == (offset, 0x3, None)
    assert (MAGIC + found.flags + found.checksum) % (1 << 32) == 0


@pytest.mark.parametrize("offset", [8184, 8188, 8192, 8200])
def test_header_not_completely_in_the_first_8_kib_is_not_found(offset: int) -> None:
    assert find_header(with_header_at(offset)) is None


@pytest.mark.parametrize("offset", [1, 2, 3, 0x41])
def test_unaligned_header_is_not_found(offset: int) -> None:
    assert find_header(with_header_at(offset)) is None


def test_bad_checksum_is_not_a_header() -> None:
    assert find_header(with_header_at(0x10, checksum=0)) is None
    assert find_header(with_header_at(0x10, checksum=-(MAGIC + 3) & 0xFFFFFFFF)) is not None


def test_a_stray_magic_before_the_header_is_skipped() -> None:
    image = bytearray(with_header_at(0x100))
    image[0x20:0x24] = struct.pack("<I", MAGIC)  # a magic with a wrong checksum after it
    found = find_header(bytes(image))
    assert found is not None and found.offset == 0x100


@pytest.mark.parametrize("image", [b"", b"\x02\xb0\xad\x1b", header()[:11], b"\x7fELF" + bytes(60)])
def test_short_or_plain_images_have_no_header(image: bytes) -> None:
    assert find_header(image) is None


def test_a_header_ending_the_file_is_found() -> None:
    assert find_header(header()) is not None


@pytest.mark.parametrize(
    ("flags", "bits"), [(1 << 3, "bit 3"), (1 << 15 | 1 << 4 | 1, "bits 4, 15")]
)
def test_unknown_required_flags_are_refused(flags: int, bits: str) -> None:
    with pytest.raises(UnsupportedMultiboot) as error:
        find_header(with_header_at(8, flags=flags))
    assert str(error.value) == (
        f"the multiboot header at 0x8 requires flag {bits} (flags 0x{flags:08x}), "
        "which pyvmm does not support"
    )


def test_video_mode_and_unknown_optional_flags_are_accepted() -> None:
    found = find_header(with_header_at(0, flags=0x7 | 1 << 17 | 1 << 31))
    assert found is not None and found.addresses is None


def test_address_fields_are_read_with_flag_16() -> None:
    found = find_header(aout_kernel(load_end_addr=0x200080))
    assert found is not None
    assert found.addresses == AddressFields(
        header_addr=AOUT_GPA + 0x40,
        load_addr=AOUT_GPA,
        load_end_addr=0x200080,
        bss_end_addr=AOUT_GPA + 0x3000,
        entry_addr=AOUT_GPA + 0x60,
    )


def test_truncated_address_fields() -> None:
    image = header(0x10003, fields=(1, 2, 3))
    with pytest.raises(BadMultiboot, match=r"^truncated multiboot header: its address fields at "
                       r"0x0\.\.0x20 run past the end of the 24-byte file$"):  # fmt: skip
        find_header(image)


def test_address_fields_past_the_first_8_kib() -> None:
    image = with_header_at(8176, flags=0x10003)
    with pytest.raises(BadMultiboot, match=r"^the multiboot header at 0x1ff0\.\.0x2010 runs past"):
        find_header(image)


# --- the information structure ------------------------------------------------------

RAM_128M = layout.ram_ranges(128 * MIB)
RAM_5G = layout.ram_ranges(5 * GIB)


def test_memory_map_of_128_mib() -> None:
    assert [(e.base, e.length, e.type) for e in memory_map(RAM_128M)] == [
        (0, 0x9FC00, 1),
        (0x9FC00, 0x400, 2),
        (0xE0000, 0x1000, 4),  # the firmware's FACS: ACPI NVS
        (0xE1000, 0x1000, 3),  # its ACPI tables: ACPI reclaimable
        (0xF0000, 0x10000, 2),
        (0x100000, 128 * MIB - 0x100000, 1),
    ]
    assert mem_upper_kib(RAM_128M) == 127 * 1024


def test_memory_map_of_5_gib_lists_ram_above_4_gib() -> None:
    below = layout.MMIO_GAP_START
    assert [(e.base, e.length, e.type) for e in memory_map(RAM_5G)] == [
        (0, 0x9FC00, 1),
        (0x9FC00, 0x400, 2),
        (0xE0000, 0x1000, 4),  # the firmware's FACS: ACPI NVS
        (0xE1000, 0x1000, 3),  # its ACPI tables: ACPI reclaimable
        (0xF0000, 0x10000, 2),
        (0x100000, below - 0x100000, 1),
        (4 * GIB, 5 * GIB - below, 1),
    ]
    # mem_upper stops at the first hole, the 32-bit MMIO gap.
    assert mem_upper_kib(RAM_5G) == (below - MIB) // KIB


def test_touching_ram_ranges_count_as_one() -> None:
    assert mem_upper_kib([(0, 2 * MIB), (2 * MIB, 2 * MIB)]) == 3 * 1024
    assert mem_upper_kib([(0, 640 * KIB)]) == 0


def test_info_layout_byte_by_byte() -> None:
    gpa = 0x20_0000
    modules = [ModuleInfo(0x10_2000, 0x10_2010, "mod0 arg"), ModuleInfo(0x10_3000, 0x10_3000, "")]
    info = build_info(gpa, RAM_5G, "kernel a b", modules)
    data = info.data
    assert info.gpa == gpa and info.end == gpa + len(data)
    assert len(data) == info_area_size(RAM_5G, "kernel a b", ["mod0 arg", ""])

    def field(offset: int) -> int:
        return int(struct.unpack_from("<I", data, offset)[0])

    def string(address: int) -> bytes:
        start = address - gpa
        return data[start : data.index(b"\0", start)]

    assert field(0) == info.flags == 1 << 0 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9
    assert (field(4), field(8)) == (639, mem_upper_kib(RAM_5G))  # mem_lower: 0x9fc00 / 1024
    assert field(12) == 0  # boot_device: not given
    assert string(field(16)) == b"kernel a b"
    assert field(20) == 2
    mods = field(24)
    assert struct.unpack_from("<8I", data, mods - gpa) == (
        0x10_2000, 0x10_2010, mods + 32 + 11 + 6, 0,  # after "kernel a b" and "pyvmm"
        0x10_3000, 0x10_3000, mods + 32 + 11 + 6 + 9, 0,  # after "mod0 arg"
    )  # fmt: skip
    assert string(struct.unpack_from("<I", data, mods - gpa + 8)[0]) == b"mod0 arg"
    assert string(struct.unpack_from("<I", data, mods - gpa + 24)[0]) == b""
    assert data[28:44] == bytes(16)  # no symbols
    mmap_length, mmap_addr = field(44), field(48)
    assert mmap_addr == gpa + 120 and mmap_length == 7 * 24
    entries = [
        struct.unpack_from("<IQQI", data, mmap_addr - gpa + offset)
        for offset in range(0, mmap_length, 24)
    ]
    assert entries == [(20, e.base, e.length, e.type) for e in memory_map(RAM_5G)]
    assert data[52:64] == bytes(12)  # drives, config table
    assert string(field(64)) == BOOT_LOADER_NAME.encode() == b"pyvmm"
    assert data[68:116] == bytes(48)  # APM, VBE, framebuffer: none
    names = [what for _start, _end, what in info.regions]
    assert names == [
        "multiboot information", "memory map", "module list", "command line",
        "boot loader name", "module 0 string", "module 1 string",
    ]  # fmt: skip
    ordered = sorted(info.regions)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))
    assert ordered[0][0] == gpa and ordered[-1][1] == info.end


def test_info_without_modules_clears_the_mods_flag() -> None:
    info = build_info(0x1000, RAM_128M, "", [])
    flags, mods_count, mods_addr = struct.unpack_from("<I16xII", info.data)
    assert not flags & 1 << 3 and (mods_count, mods_addr) == (0, 0)
    cmdline = struct.unpack_from("<I", info.data, 16)[0]
    assert info.data[cmdline - 0x1000] == 0  # an empty, NUL-terminated command line


def test_info_rejects_what_32_bits_cannot_address() -> None:
    with pytest.raises(ValueError, match="below 4 GiB"):
        build_info(4 * GIB - 16, RAM_128M, "", [])
    with pytest.raises(ValueError, match="NUL"):
        build_info(0x1000, RAM_128M, "a\0b", [])


def test_write_info(memory: GuestMemory) -> None:
    info = build_info(0x30_0000, RAM_128M, "x", [])
    write_info(memory, info)
    assert memory.read(info.gpa, len(info.data)) == info.data
    assert memory.read_u8(info.end) == FILL


# --- loading ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [32, 64])
def test_elf_kernel_with_modules(memory: GuestMemory, bits: int) -> None:
    modules = [("mod0 x=1", b"first module"), ("mod1", bytes(range(256)) * 20)]
    entry = load_multiboot(elf_kernel(bits), memory, "kernel.elf a b", modules)
    assert (entry.entry, entry.mode, entry.protocol) == (ENTRY, CpuMode.PROTECTED, "multiboot")
    assert (entry.image_start, entry.image_end) == (KERNEL_GPA, KERNEL_GPA + len(CODE) + BSS)
    assert memory.read(KERNEL_GPA, len(CODE)) == CODE
    assert memory.read(KERNEL_GPA + len(CODE), BSS) == bytes(BSS)
    registers = dict(entry.registers)
    assert registers["rax"] == MULTIBOOT_BOOTLOADER_MAGIC == 0x2BADB002
    info = registers["rbx"]
    # Kernel end 0x101840 -> module 0 at 0x102000 (12 bytes), module 1 on the next page
    # (5120 bytes, to 0x104400), the information on the page after that.
    assert info == 0x10_5000
    assert u32(memory, info + 20) == 2
    mods = u32(memory, info + 24)
    assert [u32(memory, mods + i * 4) for i in (0, 1, 4, 5)] == [
        0x10_2000, 0x10_2000 + 12, 0x10_3000, 0x10_3000 + 5120,
    ]  # fmt: skip
    assert memory.read(0x10_2000, 12) == b"first module"
    assert memory.read(0x10_3000, 5120) == bytes(range(256)) * 20
    assert c_string_at(memory, u32(memory, mods + 8)) == "mod0 x=1"
    assert c_string_at(memory, u32(memory, mods + 24)) == "mod1"
    assert c_string_at(memory, u32(memory, info + 16)) == "kernel.elf a b"
    assert c_string_at(memory, u32(memory, info + 64)) == "pyvmm"
    assert (u32(memory, info + 4), u32(memory, info + 8)) == (639, 3 * 1024)


def test_plan_describes_without_writing(memory: GuestMemory) -> None:
    plan = plan_multiboot(elf_kernel(), memory, "k", [("m", b"abc")])
    assert (plan.kernel_start, plan.kernel_end, plan.entry) == (
        KERNEL_GPA, KERNEL_GPA + len(CODE) + BSS, ENTRY,
    )  # fmt: skip
    assert plan.modules == (ModuleInfo(0x10_2000, 0x10_2003, "m"),)
    assert plan.info.gpa == 0x10_3000
    assert untouched(memory)


def test_without_modules_the_info_follows_the_kernel(memory: GuestMemory) -> None:
    entry = load_multiboot(elf_kernel(), memory, "")
    info = dict(entry.registers)["rbx"]
    assert info == 0x10_2000
    assert not u32(memory, info) & 1 << 3 and u32(memory, info + 20) == 0


def test_info_gpa_hint(memory: GuestMemory) -> None:
    entry = load_multiboot(elf_kernel(), memory, "k", [], info_gpa_hint=0x30_0000)
    assert dict(entry.registers)["rbx"] == 0x30_0000
    assert c_string_at(memory, u32(memory, 0x30_0000 + 16)) == "k"


def test_aout_kludge_loads_the_whole_file_and_zeroes_bss(memory: GuestMemory) -> None:
    image = aout_kernel()
    entry = load_multiboot(image, memory, "")
    assert (entry.entry, entry.image_start, entry.image_end) == (
        AOUT_GPA + 0x60, AOUT_GPA, AOUT_GPA + 0x3000,
    )  # fmt: skip
    assert memory.read(AOUT_GPA, len(image)) == image
    assert memory.read(AOUT_GPA + len(image), 0x3000 - len(image)) == bytes(0x3000 - len(image))
    assert dict(entry.registers)["rbx"] == AOUT_GPA + 0x3000


def test_aout_kludge_load_end_and_header_offset(memory: GuestMemory) -> None:
    # The file's first 0x20 bytes are not loaded: load_addr is 0x20 before the header.
    image = aout_kernel(load_addr=AOUT_GPA + 0x20, load_end_addr=AOUT_GPA + 0x80, bss_end_addr=0)
    entry = load_multiboot(image, memory, "")
    assert memory.read(AOUT_GPA + 0x20, 0x60) == image[0x20:0x80]
    assert memory.read_u8(AOUT_GPA + 0x1F) == FILL
    assert memory.read_u8(AOUT_GPA + 0x80) == FILL
    assert (entry.image_start, entry.image_end) == (AOUT_GPA + 0x20, AOUT_GPA + 0x80)


def test_aout_kludge_wins_over_elf_headers(memory: GuestMemory) -> None:
    image = bytearray(elf_kernel())
    offset = image.index(header())
    fields = header(0x10003, fields=(0x30_0000 + offset, 0x30_0000, 0, 0, 0x30_0000 + offset))
    image[offset : offset + 32] = fields
    entry = load_multiboot(bytes(image) + bytes(32), memory, "")
    assert entry.image_start == 0x30_0000 and entry.entry == 0x30_0000 + offset


def test_modules_skip_the_vmm_stack_and_the_bios_area(memory: GuestMemory) -> None:
    # A kernel at 0x10000..0x11000: a 0x60000-byte module cannot end below the boot
    # stack at 0x70000, nor fit in 0x80000..0x9fc00, so it goes to 1 MiB.
    image = aout_kernel(
        load_addr=0x1_0000, header_addr=0x1_0040, bss_end_addr=0x1_1000, entry_addr=0x1_0060
    )
    small, large = ("small", b"s" * 0x100), ("large", b"L" * 0x60000)
    plan = plan_multiboot(image, memory, "", [small, large, small])
    assert [(m.start, m.end) for m in plan.modules] == [
        (0x1_1000, 0x1_1100), (0x10_0000, 0x16_0000), (0x16_0000, 0x16_0100),
    ]  # fmt: skip
    assert plan.info.gpa == 0x16_1000


def test_modules_skip_the_ebda(memory: GuestMemory) -> None:
    image = aout_kernel(
        load_addr=0x8_0000, header_addr=0x8_0040, bss_end_addr=0x9_F000, entry_addr=0x8_0060
    )
    plan = plan_multiboot(image, memory, "", [("m", bytes(0x1000))])
    assert plan.modules[0].start == 0x10_0000


def test_empty_module(memory: GuestMemory) -> None:
    plan = plan_multiboot(elf_kernel(), memory, "", [("empty", b"")])
    assert plan.modules == (ModuleInfo(0x10_2000, 0x10_2000, "empty"),)


# --- malformed kernels --------------------------------------------------------------

BAD_AOUT: dict[str, tuple[Callable[[], bytes], type[LoaderError], str]] = {
    "load_addr above header_addr": (
        lambda: aout_kernel(load_addr=AOUT_GPA + 0x44),
        BadMultiboot,
        "multiboot header at 0x40: load_addr 0x200044 is above header_addr 0x200040",
    ),
    "load_addr before the file": (
        lambda: aout_kernel(load_addr=AOUT_GPA - 0x10),
        BadMultiboot,
        "multiboot header at 0x40: load_addr 0x1ffff0 is 0x50 bytes before header_addr "
        "0x200040, but the header is only 0x40 bytes into the file",
    ),
    "load_end_addr not above load_addr": (
        lambda: aout_kernel(load_end_addr=AOUT_GPA),
        BadMultiboot,
        "multiboot header at 0x40: load_end_addr 0x200000 is not above load_addr 0x200000",
    ),
    "load_end_addr past the file": (
        lambda: aout_kernel(load_end_addr=AOUT_GPA + 0x101),
        BadMultiboot,
        "multiboot header at 0x40: load_addr..load_end_addr (0x200000..0x200101) needs file "
        "bytes 0x0..0x101, past the end of the 256-byte file",
    ),
    "header outside the loaded range": (
        lambda: aout_kernel(load_end_addr=AOUT_GPA + 0x48),
        BadMultiboot,
        "multiboot header at 0x40: header_addr 0x200040 lies outside the loaded range "
        "0x200000..0x200048",
    ),
    "bss_end_addr below load_end": (
        lambda: aout_kernel(bss_end_addr=AOUT_GPA + 0x80),
        BadMultiboot,
        "multiboot header at 0x40: bss_end_addr 0x200080 is below load_end_addr 0x200100",
    ),
    "entry outside": (
        lambda: aout_kernel(entry_addr=AOUT_GPA + 0x100),
        BadEntryPoint,
        "multiboot header at 0x40: entry_addr 0x200100 is not inside the loaded range "
        "0x200000..0x200100",
    ),
    "kernel over the boot stack": (
        lambda: aout_kernel(
            load_addr=0x6_FF80, header_addr=0x6_FFC0, bss_end_addr=0, entry_addr=0x6_FFE0
        ),
        ReservedOverlap,
        "kernel segment 0 at 0x6ff80..0x70080 overlaps pyvmm's boot stack at 0x70000..0x80000; "
        "move the kernel (the multiboot header's load_addr)",
    ),
    "kernel over the GDT": (
        lambda: aout_kernel(load_addr=0x480, header_addr=0x4C0, bss_end_addr=0, entry_addr=0x4E0),
        ReservedOverlap,
        "kernel segment 0 at 0x480..0x580 overlaps pyvmm's GDT at 0x500..0x518; "
        "move the kernel (the multiboot header's load_addr)",
    ),
    "kernel past RAM": (
        lambda: aout_kernel(bss_end_addr=RAM_SIZE + 1),
        ImageTooLarge,
        "kernel segment 0 at 0x200000..0x400001 (2.0 MiB) does not fit in guest RAM "
        "(RAM ends at 0x400000)",
    ),
    "not ELF without address fields": (
        lambda: with_header_at(0x40, size=0x100),
        BadMultiboot,
        "the multiboot header has no address fields (flag bit 16) and the image is not ELF: "
        "pyvmm cannot tell where to load it",
    ),
    "no header": (
        lambda: b"\x7fELF" + bytes(100),
        BadMultiboot,
        "no multiboot header: magic 0x1BADB002 with a valid checksum is not in the first "
        "8 KiB of the image",
    ),
    "ELF shared object": (
        lambda: elf_kernel(e_type=3),
        UnsupportedElf,
        "unsupported ELF type ET_DYN (shared object or position-independent executable): "
        "pyvmm boots ET_EXEC executables only",
    ),
    "ELF entry outside": (
        lambda: elf_kernel(entry=0x20_0000),
        BadEntryPoint,
        "entry point 0x200000 is not inside any loaded segment (0x100000..0x101840)",
    ),
    "ELF over the boot stack": (
        lambda: elf_kernel(paddr=0x7_F000, entry=0x7_F000),
        ReservedOverlap,
        "kernel segment 0 at 0x7f000..0x80840 overlaps pyvmm's boot stack at 0x70000..0x80000; "
        "link that segment at another physical address (its p_paddr)",
    ),
}


@pytest.mark.parametrize("case", BAD_AOUT, ids=list(BAD_AOUT))
def test_malformed_kernel(memory: GuestMemory, case: str) -> None:
    build, error_class, message = BAD_AOUT[case]
    with pytest.raises(error_class) as error:
        load_multiboot(build(), memory, "cmd", [("m", b"module")])
    assert isinstance(error.value, LoaderError)
    assert str(error.value) == message
    assert "\n" not in str(error.value)
    assert untouched(memory)


def test_elf64_kernel_must_start_below_4_gib() -> None:
    with GuestMemory.from_ranges([(0, 2 * MIB), (4 * GIB, 2 * MIB)]) as memory:
        image = elf_kernel(64, entry=4 * GIB + 12, paddr=4 * GIB)
        with pytest.raises(BadEntryPoint) as error:
            load_multiboot(image, memory, "")
        assert str(error.value) == (
            "entry point 0x10000000c is above 4 GiB: a multiboot kernel starts in 32-bit "
            "protected mode"
        )


def test_kernel_crossing_4_gib_is_unreachable() -> None:
    with GuestMemory.from_ranges([(0, 2 * MIB), (4 * GIB - MIB, 2 * MIB)]) as memory:
        image = elf_kernel(64, entry=4 * GIB - 0x800 + 12, paddr=4 * GIB - 0x800)
        with pytest.raises(UnreachableImage) as error:
            load_multiboot(image, memory, "")
        assert str(error.value) == (
            "multiboot kernel at 0xfffff800..0x100001040 runs past 4 GiB, "
            "beyond what 32-bit protected mode can address"
        )


@pytest.mark.parametrize(
    ("cmdline", "modules", "name"),
    [("a\0b", [], "command line"), ("", [("x", b""), ("m\0", b"")], "module 1 string")],
)
def test_nul_in_strings(
    memory: GuestMemory, cmdline: str, modules: list[tuple[str, bytes]], name: str
) -> None:
    with pytest.raises(BadMultiboot, match=f"^the multiboot {name} '.*' contains a NUL character$"):
        load_multiboot(elf_kernel(), memory, cmdline, modules)
    assert untouched(memory)


def test_module_too_large(memory: GuestMemory) -> None:
    with pytest.raises(ImageTooLarge) as error:
        load_multiboot(elf_kernel(), memory, "", [("a", b"a"), ("big", bytes(3 * MIB))])
    assert str(error.value) == (
        "module 1 ('big', 3 MiB) does not fit in available RAM below 4 GiB after 0x102001"
    )
    assert untouched(memory)


def test_no_room_for_the_info(memory: GuestMemory) -> None:
    image = aout_kernel(bss_end_addr=RAM_SIZE - 0x100)
    with pytest.raises(ImageTooLarge) as error:
        load_multiboot(image, memory, "")
    assert str(error.value) == (
        "the multiboot information (271 bytes) does not fit in available RAM below 4 GiB "
        "after 0x3fff00"
    )
    assert untouched(memory)


@pytest.mark.parametrize(
    ("hint", "message"),
    [
        (0x10_1000, "multiboot information at 0x101000..0x10110f overlaps kernel segment 0 "
                    "at 0x100000..0x101840"),
        (0x7_0000, "multiboot information at 0x70000..0x7010f overlaps pyvmm's boot stack "
                   "at 0x70000..0x80000"),
        (0xA_0000, "multiboot information at 0xa0000..0xa010f is not inside available RAM "
                   "below 4 GiB"),
    ],
)  # fmt: skip
def test_bad_info_hint(memory: GuestMemory, hint: int, message: str) -> None:
    with pytest.raises(LoaderError) as error:
        load_multiboot(elf_kernel(), memory, "", info_gpa_hint=hint)
    assert str(error.value) == message
    assert untouched(memory)


def test_truncated_kernels_are_refused(memory: GuestMemory) -> None:
    for good in (elf_kernel(32), elf_kernel(64), aout_kernel(load_end_addr=AOUT_GPA + 0x100)):
        for size in range(len(good)):
            with pytest.raises(LoaderError):
                load_multiboot(good[:size], memory, "")
    assert untouched(memory)


def test_random_bit_flips_load_or_raise_loader_error(memory: GuestMemory) -> None:
    rng = random.Random(0x3B007)
    outcomes = {"loaded": 0, "rejected": 0}
    for good in (elf_kernel(32), aout_kernel()):
        for _ in range(1500):
            image = bytearray(good)
            for _ in range(rng.randint(1, 3)):
                image[rng.randrange(len(image))] ^= 1 << rng.randrange(8)
            try:
                load_multiboot(bytes(image), memory, "c", [("m", b"x")])
                outcomes["loaded"] += 1
            except LoaderError:
                outcomes["rejected"] += 1
    assert outcomes["loaded"] and outcomes["rejected"]


# --- detection through load_image ---------------------------------------------------


def test_load_image_detects_multiboot_before_elf(memory: GuestMemory) -> None:
    entry = load_image(
        elf_kernel(), memory, mode=None, load_gpa=None, default_flat_gpa=default_flat_gpa,
        cmdline="k x", modules=[("m", b"abc")],
    )  # fmt: skip
    assert entry.protocol == "multiboot" and entry.mode is CpuMode.PROTECTED
    info = dict(entry.registers)["rbx"]
    assert c_string_at(memory, u32(memory, info + 16)) == "k x"
    assert u32(memory, info + 20) == 1


def test_load_image_accepts_protected_mode(memory: GuestMemory) -> None:
    entry = load_image(
        aout_kernel(), memory, mode=CpuMode.PROTECTED, load_gpa=None,
        default_flat_gpa=default_flat_gpa,
    )  # fmt: skip
    assert entry.protocol == "multiboot"


@pytest.mark.parametrize(
    ("mode", "load_gpa", "message"),
    [
        (CpuMode.LONG, None,
         "a multiboot kernel starts in 32-bit protected mode, not in long mode"),
        (None, 0x100000,
         "--load-addr applies to flat binaries only; a multiboot kernel is loaded where its "
         "header or ELF program headers say"),
    ],
)  # fmt: skip
def test_load_image_multiboot_refuses_other_modes_and_addresses(
    memory: GuestMemory, mode: CpuMode | None, load_gpa: int | None, message: str
) -> None:
    with pytest.raises(LoaderError) as error:
        load_image(
            aout_kernel(), memory, mode=mode, load_gpa=load_gpa, default_flat_gpa=default_flat_gpa
        )
    assert str(error.value) == message
    assert untouched(memory)


def test_force_multiboot_needs_a_header(memory: GuestMemory) -> None:
    plain = elf_kernel()
    plain = plain.replace(header(), bytes(12))
    entry = load_image(plain, memory, mode=None, load_gpa=None, default_flat_gpa=default_flat_gpa)
    assert entry.protocol == "elf32"
    with pytest.raises(BadMultiboot, match=r"^no multiboot header"):
        load_image(
            plain, memory, mode=None, load_gpa=None, default_flat_gpa=default_flat_gpa,
            force_multiboot=True,
        )  # fmt: skip


def test_modules_need_a_multiboot_kernel(memory: GuestMemory) -> None:
    with pytest.raises(LoaderError) as error:
        load_image(
            b"\xf4", memory, mode=None, load_gpa=None, default_flat_gpa=default_flat_gpa,
            modules=[("m", b"x")],
        )  # fmt: skip
    assert str(error.value) == (
        "modules (--initrd) need a multiboot or Linux kernel: the image has no "
        "multiboot header in its first 8 KiB and is no bzImage or vmlinux"
    )
    assert untouched(memory)


# --- the guest ----------------------------------------------------------------------


def test_guest_header_asks_for_modules_and_memory_without_address_fields() -> None:
    image = (GUESTS / "multiboot.elf").read_bytes()
    found = find_header(image)
    assert found is not None
    assert found.flags == 0x3 and found.addresses is None and found.offset < 8192
    with GuestMemory.from_ranges(layout.ram_ranges(128 * MIB)) as memory:
        plan = plan_multiboot(image, memory, "guests/multiboot.elf a b", [("m", b"x")])
    assert plan.kernel_start == 0x10_0000
    assert plan.modules[0].start == plan.kernel_end + (-plan.kernel_end % PAGE)


# --- kernels laid out as real ones are ------------------------------------------------


@pytest.mark.parametrize(("bits", "vma"), [(32, 0xC000_0000), (64, 0xFFFF_FFFF_8000_0000)])
def test_a_higher_half_kernel_is_entered_at_the_physical_address(
    memory: GuestMemory, bits: int, vma: int
) -> None:
    """p_vaddr 0xc0100000, p_paddr 0x100000, e_entry 0xc010000c: entered at 0x10000c.

    GRUB 2 (grub-core/loader/multiboot_elfxx.c) and QEMU (include/hw/elf_ops.h,
    used by hw/i386/multiboot.c) both move e_entry from p_vaddr to p_paddr.
    """
    image = elf_kernel(bits, entry=vma + ENTRY, vaddr=vma + KERNEL_GPA)
    entry = load_multiboot(image, memory, "kernel")
    assert entry.entry == ENTRY == 0x10_000C
    assert memory.read(KERNEL_GPA, len(CODE)) == CODE


def test_a_higher_half_entry_outside_every_segment_is_refused(memory: GuestMemory) -> None:
    image = elf_kernel(entry=0xC020_0000, vaddr=0xC010_0000)
    with pytest.raises(BadEntryPoint) as error:
        load_multiboot(image, memory, "kernel")
    assert str(error.value) == (
        "entry point 0xc0200000 is not inside any loaded segment (0x100000..0x101840; "
        "at p_vaddr 0xc0100000..0xc0101840)"
    )
    assert untouched(memory)


LAYOUT_GUESTS = {
    # guest: (where each segment starts, the entry, a word the image put somewhere, where)
    "mb_headers_at_0": ([0, 0x2_0000], 0x2_000C, 0x464C_457F, 0),
    "mb_trampoline_8000": ([0x8000, 0x2_0000], 0x2_000C, 0xEBF4_FCFA, 0x8000),
    "mb_trampoline_10000": ([0x1_0000, 0x8_0000], 0x8_000C, 0xEBF4_FCFA, 0x1_0000),
    "mb_higher_half": ([0x10_0000], 0x10_000C, MAGIC, 0x10_0000),
    "mb_low_kernel": ([0x8000], 0x800C, MAGIC, 0x8000),
}


@pytest.mark.parametrize("name", sorted(LAYOUT_GUESTS))
def test_layout_guests_load_segment_by_segment_clear_of_pyvmm(name: str) -> None:
    """Each committed guest loads with pyvmm's default structures where they are.

    Before, the span of all segments was compared with them (headers at 0 and
    code at 0x20000 "overlapped" the GDT), 0x500-0x9100 was reserved whole,
    and a higher-half e_entry was refused.
    """
    segments, entry_gpa, word, where = LAYOUT_GUESTS[name]
    image = (GUESTS / "tests" / f"{name}.elf").read_bytes()
    with GuestMemory.from_ranges(layout.ram_ranges(128 * MIB)) as memory:
        entry = load_multiboot(image, memory, name)
        assert [start for start, _, _ in entry.segments] == segments
        assert [what for *_, what in entry.segments] == [
            f"kernel segment {index}" for index in range(len(segments))
        ]
        assert entry.entry == entry_gpa
        assert memory.read_u32(where) == word
