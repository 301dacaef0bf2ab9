"""Where pyvmm puts its GDT, page tables, TSS and boot stack, and what an image must avoid.

No /dev/kvm: placement is pure, and `setup_vcpu` is played against a vCPU
made of plain kvm_regs/kvm_sregs/kvm_fpu structs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvmm._kvm import ffi
from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import setup_vcpu
from pyvmm.arch.x86_64.gdt import TSS_RSP0_OFFSET, TSS_WITH_BITMAP_SIZE, decode_descriptor
from pyvmm.arch.x86_64.placement import (
    NoRoomForVmm,
    check_entry_placement,
    fix_for,
    place_vmm_structures,
    plan_placement,
    reserved_ranges,
)
from pyvmm.errors import LoaderError
from pyvmm.loaders import load_image
from pyvmm.loaders.elf import ELF_FIX
from pyvmm.loaders.entry import CpuMode, EntryPoint, ImageSegment
from pyvmm.loaders.flat import ReservedOverlap
from pyvmm.memory.guest_memory import GuestMemory

MIB = 1 << 20
GUESTS = Path(__file__).resolve().parents[2] / "guests"
FIRMWARE = [(0xE_0000, 0xE_2000, "the firmware's ACPI tables")]


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory.from_ranges(layout.ram_ranges(16 * MIB)) as guest_memory:
        yield guest_memory


def segment(start: int, end: int, index: int = 0) -> ImageSegment:
    return ImageSegment(start, end, f"segment {index}")


# --- the list of what the machine writes ------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "ranges"),
    [
        (CpuMode.REAL, []),
        (CpuMode.PROTECTED, [(0x500, 0x518, "pyvmm's GDT"),
                             (0x7_0000, 0x8_0000, "pyvmm's boot stack")]),
        (CpuMode.PAGED, [(0x1000, 0x2000, "pyvmm's page tables"), (0x500, 0x518, "pyvmm's GDT"),
                         (0x7_0000, 0x8_0000, "pyvmm's boot stack")]),
        (CpuMode.LONG, [(0x1000, 0x7000, "pyvmm's page tables"), (0x500, 0x518, "pyvmm's GDT"),
                        (0x7_0000, 0x8_0000, "pyvmm's boot stack")]),
        (CpuMode.USER, [(0x1000, 0x7000, "pyvmm's page tables"),
                        (0x7000, 0x9069, "pyvmm's TSS and I/O bitmap"),
                        (0x500, 0x538, "pyvmm's GDT"), (0x7_0000, 0x8_0000, "pyvmm's boot stack")]),
    ],
)  # fmt: skip
def test_reserved_ranges_are_exactly_what_each_entry_state_writes(
    mode: CpuMode, ranges: list[tuple[int, int, str]]
) -> None:
    """A protected-mode entry writes a 24-byte GDT and hands over a stack, nothing else."""
    assert reserved_ranges(mode) == ranges
    assert reserved_ranges(mode, machine_ranges=FIRMWARE) == ranges + FIRMWARE


def test_the_tss_range_is_the_tss_pyvmm_writes() -> None:
    assert layout.TSS_SIZE == TSS_WITH_BITMAP_SIZE


# --- placing pyvmm's structures -----------------------------------------------------------


@pytest.mark.parametrize("mode", [CpuMode.PROTECTED, CpuMode.PAGED, CpuMode.LONG, CpuMode.USER])
def test_structures_stay_at_their_defaults_beside_a_segmented_image(
    memory: GuestMemory, mode: CpuMode
) -> None:
    """ELF headers at 0, the kernel at 1 MiB: their span covers every default, no segment does."""
    segments = [segment(0, 0xB0), segment(0x10_0000, 0x10_2000, 1)]
    assert place_vmm_structures(mode, segments, memory, FIRMWARE) == layout.DEFAULT_PLACES


def test_a_trampoline_at_0x8000_leaves_a_protected_mode_entry_alone(memory: GuestMemory) -> None:
    segments = [segment(0x8000, 0x8100), segment(0x10_0000, 0x10_2000, 1)]
    assert place_vmm_structures(CpuMode.PROTECTED, segments, memory) == layout.DEFAULT_PLACES


def test_a_trampoline_at_0x8000_moves_only_the_user_mode_tss(memory: GuestMemory) -> None:
    segments = [segment(0x8000, 0x8100)]
    places = place_vmm_structures(CpuMode.USER, segments, memory)
    # The next free page clear of the PML4..PDs (0x1000-0x6fff) and the trampoline.
    assert places == layout.VmmPlaces(tss=0x9000)


def test_an_image_over_the_tables_and_the_stack_moves_them(memory: GuestMemory) -> None:
    """The first free page-aligned place for the tables, the highest free one for the stack."""
    places = place_vmm_structures(CpuMode.LONG, [segment(0x1000, 0x8_0000)], memory, FIRMWARE)
    assert places == layout.VmmPlaces(page_tables=0x8_0000, stack_top=0x9_FC00)


def test_a_moved_gdt_avoids_the_image_and_the_other_structures(memory: GuestMemory) -> None:
    places = place_vmm_structures(CpuMode.PAGED, [segment(0x400, 0x800)], memory)
    # The page directory keeps 0x1000-0x1fff, so the GDT goes right after the image.
    assert places == layout.VmmPlaces(gdt=0x800)


def test_page_tables_go_above_1_mib_when_conventional_memory_is_full(memory: GuestMemory) -> None:
    full = [(0x8_0000, 0x9_FC00, "something of the machine's")]
    places = place_vmm_structures(CpuMode.LONG, [segment(0x1000, 0x7_0000)], memory, full)
    assert places == layout.VmmPlaces(page_tables=0x10_0000)


def test_a_moved_structure_stays_clear_of_the_machine_ranges(memory: GuestMemory) -> None:
    image = [segment(0x6_0000, 0x8_0000)]
    places = place_vmm_structures(CpuMode.PROTECTED, image, memory)
    assert places == layout.VmmPlaces(stack_top=0x9_FC00)  # the highest free place
    tables = [(0x9_0000, 0x9_FC00, "the firmware's tables")]
    places = place_vmm_structures(CpuMode.PROTECTED, image, memory, tables)
    assert places == layout.VmmPlaces(stack_top=0x9_0000)  # below them, above the image


def test_no_free_conventional_memory_is_refused_naming_segment_structure_and_fix(
    memory: GuestMemory,
) -> None:
    with pytest.raises(NoRoomForVmm) as error:
        place_vmm_structures(CpuMode.PROTECTED, [segment(0, 0x9_FC00, 2)], memory, fix=ELF_FIX)
    assert str(error.value) == (
        "segment 2 at 0x0..0x9fc00 overlaps pyvmm's GDT at 0x500..0x518, and no other free "
        "RAM below 1 MiB can hold its 24 bytes; "
        "link that segment at another physical address (its p_paddr)"
    )
    assert isinstance(error.value, LoaderError) and error.value.exit_status == 2


def test_real_mode_places_nothing(memory: GuestMemory) -> None:
    """The IVT and the no-BIOS stubs fill only what the image left empty."""
    assert place_vmm_structures(CpuMode.REAL, [segment(0, 0x9_FC00)], memory) == (
        layout.DEFAULT_PLACES
    )
    assert reserved_ranges(CpuMode.REAL) == []


# --- the builder's sequence: plan, place, load, check -------------------------------------------


@pytest.mark.parametrize(
    ("name", "places"),
    [
        ("tests/mb_headers_at_0.elf", layout.DEFAULT_PLACES),
        ("tests/mb_trampoline_8000.elf", layout.DEFAULT_PLACES),
        ("tests/mb_trampoline_10000.elf", layout.DEFAULT_PLACES),
        ("tests/mb_higher_half.elf", layout.DEFAULT_PLACES),
        ("tests/mb_low_kernel.elf", layout.DEFAULT_PLACES),
        ("tests/low_elf64.elf", layout.VmmPlaces(page_tables=0x8_0000, stack_top=0x9_FC00)),
    ],
)
def test_each_layout_guest_is_placed_and_loaded(
    memory: GuestMemory, name: str, places: layout.VmmPlaces
) -> None:
    image = (GUESTS / name).read_bytes()
    placement = plan_placement(image, memory, mode=None, load_gpa=None, machine_ranges=FIRMWARE)
    assert placement.places == places
    entry = load_image(
        image, memory, mode=None, load_gpa=None, default_flat_gpa=lambda mode: 0x10_0000,
        cmdline=name, reserved=placement.reserved,
    )  # fmt: skip
    check_entry_placement(entry, placement.reserved, placement.image.fix)
    assert entry.entry == placement.image.entry
    assert [tuple(piece) for piece in entry.segments] == list(placement.image.segments)


def test_placement_says_what_it_moved(memory: GuestMemory) -> None:
    image = (GUESTS / "tests/low_elf64.elf").read_bytes()
    placement = plan_placement(image, memory, mode=None, load_gpa=None)
    assert placement.moved() == [
        ("pyvmm's page tables", 0x1000, 0x8_0000),
        ("pyvmm's boot stack", 0x7_0000, 0x8_FC00),
    ]


def test_a_flat_image_on_the_gdt_moves_it(memory: GuestMemory) -> None:
    placement = plan_placement(b"\xf4" * 0x100, memory, mode=CpuMode.PROTECTED, load_gpa=0x480)
    assert placement.places == layout.VmmPlaces(gdt=0x580)


@pytest.mark.parametrize(
    ("protocol", "hint"),
    [("flat", "--load-addr"), ("elf32", "p_paddr"), ("elf64", "p_paddr"),
     ("multiboot", "p_paddr")],
)  # fmt: skip
def test_check_entry_placement_names_the_segment_and_a_fix_of_its_format(
    protocol: str, hint: str
) -> None:
    entry = EntryPoint(
        0x10_0000, CpuMode.PROTECTED, protocol, 0, 0x10_1000,
        segments=(ImageSegment(0, 0x100, "segment 0"), ImageSegment(0x10_0000, 0x10_1000, "x")),
    )  # fmt: skip
    check_entry_placement(entry, reserved_ranges(CpuMode.PROTECTED))  # the span is no segment
    with pytest.raises(ReservedOverlap) as error:
        check_entry_placement(entry, [*FIRMWARE, (0x80, 0x90, "pyvmm's GDT")])
    message = str(error.value)
    assert message.startswith("segment 0 at 0x0..0x100 overlaps pyvmm's GDT at 0x80..0x90; ")
    assert hint in message and (protocol == "flat") == ("--load-addr" in message)
    assert fix_for(protocol) in message


def test_an_entry_above_4_gib_hint_fits_the_format() -> None:
    for protocol, hint in (("flat", "--load-addr"), ("elf64", "p_paddr")):
        entry = EntryPoint(1 << 32, CpuMode.LONG, protocol, 1 << 32, (1 << 32) + 16)
        with pytest.raises(LoaderError, match=hint) as error:
            check_entry_placement(entry)
        assert (protocol == "flat") == ("--load-addr" in str(error.value))


# --- the vCPU is set up where the structures went --------------------------------------------


class FakeVcpu:
    """KVM_GET/SET_REGS, SREGS and FPU over plain structs: what setup_vcpu calls."""

    def __init__(self) -> None:
        self.regs = ffi.new("struct kvm_regs *")
        self.sregs = ffi.new("struct kvm_sregs *")
        self.fpu = ffi.new("struct kvm_fpu *")

    def get_regs(self) -> Any:
        return self.regs

    def set_regs(self, regs: Any) -> None:
        self.regs = regs

    def get_sregs(self) -> Any:
        return self.sregs

    def set_sregs(self, sregs: Any) -> None:
        self.sregs = sregs

    def get_fpu(self) -> Any:
        return self.fpu

    def set_fpu(self, fpu: Any) -> None:
        self.fpu = fpu


def test_setup_vcpu_points_every_register_at_the_moved_structures(memory: GuestMemory) -> None:
    places = layout.VmmPlaces(gdt=0x9_0000, page_tables=0x20_0000, tss=0x9_1000, stack_top=0x5_0000)
    entry = EntryPoint(0x10_0000, CpuMode.USER, "elf64", 0x500, 0x8_0000)
    memory.fill(0, 0x10_0000, 0xAA)  # as an image over every default place would leave it
    vcpu = FakeVcpu()
    setup_vcpu(vcpu, entry, memory, places)  # type: ignore[arg-type]
    sregs, regs = vcpu.sregs, vcpu.regs
    assert (sregs.gdt.base, sregs.gdt.limit) == (0x9_0000, 7 * 8 - 1)
    assert sregs.cr3 == 0x20_0000 and regs.rsp == 0x5_0000
    assert sregs.tr.base == 0x9_1000
    assert memory.read_u64(0x9_1000 + TSS_RSP0_OFFSET) == 0x5_0000 - layout.BOOT_STACK_SIZE // 2
    tss = decode_descriptor(memory.read_u64(0x9_0000 + 0x28), 0x28)
    assert tss.base == 0x9_1000
    assert memory.read_u64(0x20_0000) & ~0xFFF == 0x20_1000  # PML4[0] -> the PDPT after it
    # Nothing was written at the default places.
    for start, end, _ in layout.vmm_placements("user"):
        assert memory.read(start, end - start) == b"\xaa" * (end - start)
