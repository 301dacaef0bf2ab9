"""The Linux x86 boot protocol: bzImage and vmlinux, zero page, placement, entry state (no KVM).

Kernels are built in Python (tests/fuzz/image_linux.py): a setup header in
front of a few bytes of 64-bit code, or an ELF64 executable with Linux's
notes. Each check reads the zero page field by field at the offsets of
Documentation/arch/x86/boot.rst and zero-page.rst.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import setup_vcpu
from pyvmm.arch.x86_64.gdt import decode_descriptor
from pyvmm.arch.x86_64.placement import Placement, check_entry_placement, plan_placement
from pyvmm.arch.x86_64.registers import CR0_PG, CR4_PAE, EFER_LMA, EFER_LME
from pyvmm.errors import BadElf, ImageTooLarge, LoaderError
from pyvmm.loaders import copied_whole, describe_format, load_image
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.loaders.linux import (
    BadBzImage,
    BadInitrd,
    BzImageTooOld,
    CommandLineTooLong,
    NoKernel64,
    is_bzimage,
    is_vmlinux,
)
from pyvmm.loaders.multiboot_info import memory_map
from pyvmm.memory.guest_memory import GuestMemory
from tests.fuzz.image_linux import (
    E820_ENTRY,
    ENTRY_CODE,
    VMLINUX_PADDR,
    XEN_NOTE,
    ZP_E820_ENTRIES,
    ZP_E820_TABLE,
    ZP_EXT_CMD_LINE_PTR,
    ZP_EXT_RAMDISK_IMAGE,
    ZP_EXT_RAMDISK_SIZE,
    build_bzimage,
    build_vmlinux,
    elf_note,
    get,
)
from tests.unit.test_placement import FIRMWARE, FakeVcpu

MIB = 1 << 20
GUESTS = Path(__file__).resolve().parents[2] / "guests"
INITRD = b"070701" + bytes(range(256)) * 40  # what a cpio archive starts with, and more
ZERO_PAGE = 0x7000
CMDLINE = 0x2_0000


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory.from_ranges(layout.ram_ranges(128 * MIB)) as guest_memory:
        yield guest_memory


def boot(
    image: bytes,
    memory: GuestMemory,
    append: str = "",
    initrd: bytes | None = None,
    **kwargs: object,
) -> tuple[EntryPoint, Placement]:
    """Plan and load as the builder does: (EntryPoint, Placement)."""
    modules = () if initrd is None else (("initrd.cpio", initrd),)
    placement = plan_placement(
        image, memory, mode=None, load_gpa=None, modules=modules, append=append,
        machine_ranges=FIRMWARE, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    entry = load_image(
        image, memory, mode=None, load_gpa=None, default_flat_gpa=lambda mode: 0x10_0000,
        modules=modules, append=append, reserved=placement.reserved,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    check_entry_placement(entry, placement.reserved, placement.image.fix)
    return entry, placement


def e820_of(page: bytes) -> list[tuple[int, int, int]]:
    return [
        E820_ENTRY.unpack_from(page, ZP_E820_TABLE + index * E820_ENTRY.size)
        for index in range(page[ZP_E820_ENTRIES])
    ]


# --- telling the formats -----------------------------------------------------------------


def test_a_bzimage_is_told_by_its_hdrs_magic() -> None:
    image = build_bzimage()
    assert is_bzimage(image) and not is_vmlinux(image)
    assert describe_format(image) == "Linux bzImage, boot protocol 2.15"
    assert copied_whole(image[:8192]) == ("a Linux bzImage", 0)
    assert not is_bzimage(b"\xf4" * 0x300)


@pytest.mark.parametrize("notes", [elf_note(b"Linux", 0x100, b"salt\0"), XEN_NOTE])
def test_a_vmlinux_is_told_by_linux_s_elf_notes(notes: bytes) -> None:
    image = build_vmlinux(notes=notes)
    assert is_vmlinux(image) and not is_bzimage(image)
    assert describe_format(image) == "Linux vmlinux (ELF64)"


@pytest.mark.parametrize(
    "image",
    [
        build_vmlinux(notes=b""),  # no PT_NOTE
        build_vmlinux(notes=elf_note(b"GNU", 3, bytes(20))),  # a build ID alone
        build_vmlinux(bits=32),  # an ELF32 file with the note
        (GUESTS / "elf64.elf").read_bytes(),
        (GUESTS / "multiboot.elf").read_bytes(),
    ],
    ids=["no-notes", "gnu-note", "elf32", "elf64.elf", "multiboot.elf"],
)
def test_other_elf_files_are_no_vmlinux(image: bytes) -> None:
    assert not is_vmlinux(image)


def test_notes_that_run_past_the_file_are_no_vmlinux() -> None:
    image = bytearray(build_vmlinux())
    note = image.index(b"Linux") - 12
    image[note : note + 4] = struct.pack("<I", 0xFFFF_FFF0)  # namesz far past the end
    assert not is_vmlinux(bytes(image))


# --- a bzImage's zero page, placement and entry --------------------------------------------


def test_a_bzimage_boots_through_its_64_bit_entry(memory: GuestMemory) -> None:
    image = build_bzimage()
    entry, placement = boot(image, memory, "console=ttyS0 quiet", INITRD)
    assert entry.protocol == "linux" and entry.mode is CpuMode.LONG
    # The protected-mode kernel (after 1 + setup_sects sectors) at pref_address, entered 0x200 in.
    assert entry.entry == VMLINUX_PADDR + 0x200
    assert memory.read(VMLINUX_PADDR, len(image) - 1024) == image[1024:]
    assert memory.read(VMLINUX_PADDR + 0x200, len(ENTRY_CODE)) == ENTRY_CODE
    assert entry.registers == (("rsi", ZERO_PAGE),)

    page = memory.read(ZERO_PAGE, 4096)
    # The setup header is the image's, from 0x1f1 to its end (0x202 + the byte at 0x201)...
    changed = {0x210, 0x214, 0x215, 0x216, 0x217, 0x218, 0x219, 0x21A, 0x21B}
    changed |= {0x21C, 0x21D, 0x21E, 0x21F, 0x228, 0x229, 0x22A, 0x22B}
    for offset in range(0x1F1, 0x26C):
        if offset not in changed:
            assert page[offset] == image[offset], hex(offset)
    assert page[0x26C:0x290] == bytes(0x24)  # past the header's end: nothing copied
    assert page[:0x1E8] == bytes(0x1E8)  # screen_info .. the EDD fields: zero
    # ...with the loader's fields written in.
    assert get(page, "type_of_loader") == 0xFF
    assert get(page, "code32_start") == VMLINUX_PADDR
    assert get(page, "cmd_line_ptr") == CMDLINE
    assert struct.unpack_from("<I", page, ZP_EXT_CMD_LINE_PTR)[0] == 0
    assert memory.read(CMDLINE, 20) == b"console=ttyS0 quiet\0"
    initrd_gpa = get(page, "ramdisk_image")
    assert get(page, "ramdisk_size") == len(INITRD)
    assert struct.unpack_from("<II", page, ZP_EXT_RAMDISK_IMAGE) == (0, 0)
    assert struct.unpack_from("<I", page, ZP_EXT_RAMDISK_SIZE)[0] == 0
    assert memory.read(initrd_gpa, len(INITRD)) == INITRD
    # The initrd as high as RAM allows (QEMU's rule), page-aligned, clear of the kernel.
    assert initrd_gpa % 4096 == 0
    assert 128 * MIB - 4096 < initrd_gpa + len(INITRD) <= 128 * MIB
    assert initrd_gpa >= VMLINUX_PADDR + 2 * MIB
    # e820: the memory map multiboot kernels get, with the sentinel clear.
    ram = [(region.gpa, region.size) for region in memory.regions]
    assert e820_of(page) == [(e.base, e.length, e.type) for e in memory_map(ram)]
    assert (0x10_0000, 127 * MIB, 1) in e820_of(page)
    assert page[0x1EF] == 0
    # The pieces the loader wrote are named, and pyvmm's own structures stay at home.
    names = [segment.name for segment in entry.segments]
    assert names == ["kernel", "zero page", "command line", "initrd"]
    assert placement.places == layout.DEFAULT_PLACES
    assert (0x500, 0x520, "pyvmm's GDT") in placement.reserved


def test_the_entry_state_is_the_64_bit_boot_protocol_s(memory: GuestMemory) -> None:
    entry, placement = boot(build_bzimage(), memory)
    vcpu = FakeVcpu()
    setup_vcpu(vcpu, entry, memory, placement.places)  # type: ignore[arg-type]
    regs, sregs = vcpu.regs, vcpu.sregs
    assert regs.rip == VMLINUX_PADDR + 0x200 and regs.rsi == ZERO_PAGE
    assert regs.rflags & (1 << 9) == 0  # interrupts off
    assert sregs.cr0 & CR0_PG and sregs.cr4 & CR4_PAE
    assert sregs.efer & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA
    # __BOOT_CS = 0x10 (64-bit code, execute/read), __BOOT_DS = 0x18 (flat read/write).
    assert (sregs.gdt.base, sregs.gdt.limit) == (0x500, 4 * 8 - 1)
    assert (sregs.cs.selector, sregs.cs.l, sregs.cs.type) == (0x10, 1, 0xA)
    for segment in (sregs.ds, sregs.es, sregs.ss):
        assert (segment.selector, segment.type, segment.base) == (0x18, 0x2, 0)
        assert segment.limit == 0xFFFF_FFFF
    code = decode_descriptor(memory.read_u64(0x500 + 0x10), 0x10)
    data = decode_descriptor(memory.read_u64(0x500 + 0x18), 0x18)
    assert (code.long, code.present, code.limit) == (1, 1, 0xFFFF_FFFF)
    assert (data.type, data.present, data.limit) == (0x2, 1, 0xFFFF_FFFF)
    # The identity map reaches the kernel, the zero page and the command line.
    pml4 = sregs.cr3
    assert pml4 == layout.PAGE_TABLES_GPA
    pd = memory.read_u64(memory.read_u64(pml4) & ~0xFFF) & ~0xFFF
    assert memory.read_u64(pd + 8 * (VMLINUX_PADDR >> 21)) & ~0xFFF == VMLINUX_PADDR
    assert memory.read_u64(pd) & ~0xFFF == 0


def test_a_relocatable_bzimage_goes_low_when_pref_address_is_past_ram() -> None:
    with GuestMemory.from_ranges(layout.ram_ranges(8 * MIB)) as memory:
        entry, _ = boot(build_bzimage(pref_address=64 * MIB), memory)
    assert entry.entry == 2 * MIB + 0x200


def test_a_kernel_larger_than_ram_is_one_line() -> None:
    with (
        GuestMemory.from_ranges(layout.ram_ranges(8 * MIB)) as memory,
        pytest.raises(ImageTooLarge, match="the kernel needs 64 MiB") as error,
    ):
        boot(build_bzimage(init_size=64 * MIB), memory)
    assert "give the guest more RAM (-m)" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("image", "error", "words"),
    [
        (build_bzimage()[:0x240], BadBzImage, "runs to 0x26c"),
        (build_bzimage(version=0x020B), BzImageTooOld, "boot protocol 2.11"),
        (build_bzimage(version=0x0200, header_end=0x230), BzImageTooOld, "2.00"),
        (build_bzimage(header_end=0x250), BadBzImage, "before the fields of boot protocol"),
        (build_bzimage(xloadflags=0), NoKernel64, "XLF_KERNEL_64"),
        (build_bzimage(loadflags=0), BadBzImage, "zImage"),
        (build_bzimage()[:0x500], BadBzImage, "ends before its 64-bit entry point"),
        (build_bzimage(init_size=1 << 31), ImageTooLarge, "the kernel needs 2 GiB"),
    ],
    ids=["truncated", "2.11", "2.00", "short-header", "no-64", "zimage", "no-kernel", "huge"],
)
def test_malformed_bzimages_are_refused_in_one_line(
    memory: GuestMemory, image: bytes, error: type[LoaderError], words: str
) -> None:
    with pytest.raises(error, match=words) as raised:
        boot(image, memory)
    assert "\n" not in str(raised.value) and raised.value.exit_status == 2
    assert memory.read(VMLINUX_PADDR, 4096) == bytes(4096)  # nothing written


def test_a_command_line_longer_than_cmdline_size_is_refused(memory: GuestMemory) -> None:
    image = build_bzimage(cmdline_size=16)
    boot(image, memory, "x" * 16)
    with pytest.raises(CommandLineTooLong, match="17 bytes, more than the 16"):
        boot(image, memory, "x" * 17)


def test_an_initrd_that_does_not_fit_is_refused() -> None:
    with (
        GuestMemory.from_ranges(layout.ram_ranges(24 * MIB)) as memory,
        pytest.raises(ImageTooLarge, match=r"the initrd \(16 MiB\) does not fit"),
    ):
        # The kernel takes 16..18 MiB: 15 MiB are free below it, 6 above.
        boot(build_bzimage(), memory, initrd=bytes(16 * MIB))


def test_the_initrd_stays_below_initrd_addr_max(memory: GuestMemory) -> None:
    boot(build_bzimage(initrd_addr_max=0x3FF_FFFF), memory, initrd=INITRD)
    page = memory.read(ZERO_PAGE, 4096)
    assert get(page, "ramdisk_image") + len(INITRD) <= 0x400_0000
    assert get(page, "ramdisk_image") > 0x400_0000 - 2 * 4096 - len(INITRD)


@pytest.mark.parametrize(
    ("modules", "words"),
    [
        ((("a.cpio", b"x"), ("b.cpio", b"y")), "takes one initrd"),
        ((("a.cpio arg", b"x"),), "takes no arguments"),
    ],
)
def test_one_initrd_without_arguments(
    memory: GuestMemory, modules: tuple[tuple[str, bytes], ...], words: str
) -> None:
    with pytest.raises(BadInitrd, match=words):
        load_image(
            build_bzimage(), memory, mode=None, load_gpa=None,
            default_flat_gpa=lambda mode: 0, modules=modules,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"load_gpa": 0x10_0000}, "--load-addr"), ({"mode": CpuMode.PROTECTED}, "long mode")],
)
def test_options_that_do_not_apply_to_linux(
    memory: GuestMemory, kwargs: dict[str, object], words: str
) -> None:
    arguments: dict[str, object] = {"mode": None, "load_gpa": None, **kwargs}
    with pytest.raises(LoaderError, match=words):
        load_image(build_bzimage(), memory, default_flat_gpa=lambda mode: 0, **arguments)  # type: ignore[arg-type]


# --- a vmlinux ---------------------------------------------------------------------------


def test_a_vmlinux_gets_the_header_a_bzimage_would_carry(memory: GuestMemory) -> None:
    image = build_vmlinux()
    entry, _ = boot(image, memory, "console=ttyS0", INITRD)
    assert entry.protocol == "linux" and entry.entry == VMLINUX_PADDR
    assert memory.read(VMLINUX_PADDR, len(ENTRY_CODE)) == ENTRY_CODE
    assert memory.read(VMLINUX_PADDR + 0x1000, 0x1000) == bytes(0x1000)  # its bss
    page = memory.read(ZERO_PAGE, 4096)
    assert get(page, "boot_flag") == 0xAA55 and page[0x202:0x206] == b"HdrS"
    assert get(page, "version") >= 0x020C
    assert get(page, "xloadflags") & 1 and get(page, "loadflags") & 1
    assert get(page, "type_of_loader") == 0xFF
    assert get(page, "initrd_addr_max") == 0x7FFF_FFFF
    assert get(page, "cmdline_size") == 2047
    assert get(page, "code32_start") == 0  # no protected-mode kernel to point at
    assert get(page, "cmd_line_ptr") == CMDLINE
    assert memory.read(get(page, "ramdisk_image"), len(INITRD)) == INITRD
    assert e820_of(page)[0] == (0, 0x9_FC00, 1)
    names = [segment.name for segment in entry.segments]
    assert names == ["kernel segment 0", "zero page", "command line", "initrd"]


def test_format_linux_boots_a_vmlinux_without_notes_and_elf_boots_it_plain(
    memory: GuestMemory,
) -> None:
    image = build_vmlinux(notes=b"")
    entry, _ = boot(image, memory)
    assert entry.protocol == "elf64"
    entry, _ = boot(image, memory, image_format="linux")
    assert entry.protocol == "linux"
    entry, _ = boot(build_vmlinux(), memory, image_format="elf")
    assert entry.protocol == "elf64" and entry.registers == ()


def test_format_linux_refuses_what_is_no_kernel(memory: GuestMemory) -> None:
    with pytest.raises(BadElf, match="not an ELF image"):
        boot(b"\xf4" * 4096, memory, image_format="linux")
    with pytest.raises(BadElf, match="ELF64, not ELF32"):
        boot(build_vmlinux(bits=32), memory, image_format="linux")


def test_a_vmlinux_segment_over_the_zero_page_moves_the_zero_page(memory: GuestMemory) -> None:
    image = build_vmlinux(paddr=0x6000, vaddr=0x6000)
    entry, _ = boot(image, memory)
    zero_page = dict(entry.registers)["rsi"]
    assert zero_page not in range(0x6000, 0x8000) and zero_page % 4096 == 0
    assert memory.read(zero_page + 0x202, 4) == b"HdrS"


def test_an_empty_initrd_gets_an_address_inside_ram() -> None:
    """The image fuzzer's finding: it was placed at the end of RAM and written there."""
    with GuestMemory.from_ranges(layout.ram_ranges(3 * MIB)) as memory:
        boot(build_bzimage(pref_address=MIB, relocatable=False, init_size=0x1000), memory, "", b"")
        page = memory.read(ZERO_PAGE, 4096)
    assert get(page, "ramdisk_size") == 0
    assert 2 * MIB <= get(page, "ramdisk_image") < 3 * MIB
