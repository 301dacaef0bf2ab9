"""Where pyvmm's own entry-state structures go, and the list of RAM an image must leave alone.

Loaders know formats, not the VMM. For the non-real entry states pyvmm
writes a GDT, page tables (paged, long, user) and a TSS (user), and hands the
guest a boot stack; other parts of the machine write their own tables
(`machine_ranges`, e.g. firmware tables). Before anything is written:

1. `plan_image` says where each segment of the image goes;
2. `place_vmm_structures` keeps each structure at its default place
   (layout.py) unless a segment occupies it, and then moves it to free RAM:
   conventional memory below the EBDA (0x500-0x9fc00), or for the page
   tables also RAM from 1 MiB to 4 GiB. Only when none is free is the image
   refused, naming the segment, the structure and how to move the segment;
3. `reserved_ranges` is the one list of (start, end, what) the machine
   writes, which the loader gets (no segment may overlap one; a multiboot
   kernel's modules and information go elsewhere) and which
   `check_entry_placement` checks again, segment by segment.

`plan_placement` does 1 to 3 for the builder and the image fuzzer.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.errors import BadEntryPoint, LoaderError
from pyvmm.loaders import ImagePlan, plan_image
from pyvmm.loaders.entry import CpuMode, EntryPoint, ImageSegment
from pyvmm.loaders.flat import FLAT_FIX, check_clear
from pyvmm.memory.size import format_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from pyvmm.memory.guest_memory import GuestMemory

Range = tuple[int, int, str]

PAGE_SIZE = 0x1000
STACK_ALIGN = 16  # the x86-64 psABI's stack alignment; harmless for 32-bit code


class NoRoomForVmm(LoaderError):
    """The image occupies a structure's default place and no other free RAM can hold it."""


class _Structure:
    """One thing pyvmm writes (or hands over, the stack) for an entry state (read-only)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("align", "attribute", "below_1mib", "default_start", "size", "top_down", "what")

    def __init__(
        self,
        attribute: str,
        what: str,
        size: int,
        align: int,
        default_start: int,
        below_1mib: bool,
        top_down: bool,
    ) -> None:
        self.attribute = attribute  # the VmmPlaces field
        self.what = what  # its name in messages
        self.size = size
        self.align = align
        self.default_start = default_start
        self.below_1mib = below_1mib  # only conventional memory; else also RAM up to 4 GiB
        self.top_down = top_down  # a stack is sought from the top, like the default one

    def start_of(self, places: layout.VmmPlaces) -> int:
        value: int = getattr(places, self.attribute)
        return value - self.size if self.attribute == "stack_top" else value

    def place_value(self, start: int) -> int:
        return start + self.size if self.attribute == "stack_top" else start


def _structures(mode: CpuMode, protocol: str = "") -> list[_Structure]:
    """What `mode` needs, in the order they are placed: page-aligned ones first.

    A Linux kernel's GDT has a fourth descriptor (gdt.linux_boot_gdt).
    """
    if mode is CpuMode.REAL:
        return []  # the IVT and no-BIOS stubs fill only what the image left empty
    structures = []
    if mode is not CpuMode.PROTECTED:
        paged = mode is CpuMode.PAGED
        size = layout.PAGE_DIRECTORY_32_SIZE if paged else layout.LONG_MODE_TABLES_SIZE
        structures.append(
            _Structure(
                "page_tables", "pyvmm's page tables", size, PAGE_SIZE,
                layout.PAGE_TABLES_GPA, below_1mib=False, top_down=False,
            )
        )  # fmt: skip
    if mode is CpuMode.USER:
        structures.append(
            _Structure(
                "tss", "pyvmm's TSS and I/O bitmap", layout.TSS_SIZE, PAGE_SIZE,
                layout.TSS_GPA, below_1mib=True, top_down=False,
            )
        )  # fmt: skip
    gdt_size = layout.USER_GDT_SIZE if mode is CpuMode.USER else layout.GDT_SIZE
    if protocol == "linux":
        gdt_size = layout.LINUX_GDT_SIZE
    structures.append(
        _Structure(
            "gdt", "pyvmm's GDT", gdt_size, 8, layout.GDT_GPA, below_1mib=True, top_down=False
        )
    )
    structures.append(
        _Structure(
            "stack_top", "pyvmm's boot stack", layout.BOOT_STACK_SIZE, STACK_ALIGN,
            layout.BOOT_STACK_TOP - layout.BOOT_STACK_SIZE, below_1mib=True, top_down=True,
        )
    )  # fmt: skip
    return structures


def reserved_ranges(
    mode: CpuMode,
    places: layout.VmmPlaces = layout.DEFAULT_PLACES,
    machine_ranges: Sequence[Range] = (),
    protocol: str = "",
) -> list[Range]:
    """The one list of (start, end, what) the machine writes for an entry in `mode`.

    pyvmm's structures at `places`, then `machine_ranges` (what other parts
    of the machine write, e.g. firmware tables). Real mode adds none of
    pyvmm's: the IVT entries and the no-BIOS stubs it writes fill only what
    the image left empty (no_bios.py), so they never overwrite the image.
    """
    ranges = [
        (structure.start_of(places), structure.start_of(places) + structure.size, structure.what)
        for structure in _structures(mode, protocol)
    ]
    return ranges + list(machine_ranges)


def _overlapping(start: int, end: int, taken: Sequence[Range]) -> Range | None:
    return next((item for item in taken if start < item[1] and item[0] < end), None)


def _areas(memory: GuestMemory, below_1mib: bool) -> list[tuple[int, int]]:
    """(start, end) of RAM a displaced structure may go to, in the order they are tried."""
    limits = [(layout.LOW_RAM_START, layout.LOW_RAM_END)]
    if not below_1mib:
        limits.append((layout.HIGH_RAM_START, layout.IDENTITY_MAP_END))
    areas = []
    for low, high in limits:
        for region in memory.regions:
            start, end = max(low, region.gpa), min(high, region.end)
            if start < end:
                areas.append((start, end))
    return areas


def _find_free(structure: _Structure, memory: GuestMemory, taken: Sequence[Range]) -> int | None:
    """The start of the first free, aligned place for `structure`, or None."""
    size, align = structure.size, structure.align
    for low, high in _areas(memory, structure.below_1mib):
        if structure.top_down:
            start = (high - size) // align * align
            while start >= low:
                blocker = _overlapping(start, start + size, taken)
                if blocker is None:
                    return start
                start = (blocker[0] - size) // align * align
        else:
            start = -(-low // align) * align
            while start + size <= high:
                blocker = _overlapping(start, start + size, taken)
                if blocker is None:
                    return start
                start = -(-blocker[1] // align) * align
    return None


def place_vmm_structures(
    mode: CpuMode,
    segments: Sequence[ImageSegment],
    memory: GuestMemory,
    machine_ranges: Sequence[Range] = (),
    fix: str = "",
    protocol: str = "",
) -> layout.VmmPlaces:
    """Where pyvmm's GDT, page tables, TSS and boot stack go for an image in `segments`.

    Each structure `mode` needs stays at its default place when that is RAM
    clear of the segments and `machine_ranges`; otherwise it goes to the
    first free aligned place in conventional memory (0x500-0x9fc00; the
    stack the highest one), and the page tables, failing that, to RAM from
    1 MiB up to 4 GiB. NoRoomForVmm (a LoaderError) when nothing is free:
    the message names the segment on the default place, the structure and
    `fix`, how to move the segment in the image's format.
    """
    structures = _structures(mode, protocol)
    taken: list[Range] = [*segments, *machine_ranges]
    kept: dict[str, int] = {}
    displaced: list[tuple[_Structure, Range]] = []
    for structure in structures:
        start = structure.default_start
        blocker = _overlapping(start, start + structure.size, taken)
        if blocker is None and memory.contains(start, structure.size):
            kept[structure.attribute] = structure.place_value(start)
            taken.append((start, start + structure.size, structure.what))
        else:
            displaced.append((structure, blocker or (start, start + structure.size, "no RAM")))
    for structure, blocker in displaced:
        start = _find_free(structure, memory, taken)
        if start is None:
            where = "below 1 MiB" if structure.below_1mib else "below 4 GiB"
            default = structure.default_start
            raise NoRoomForVmm(
                f"{blocker[2]} at 0x{blocker[0]:x}..0x{blocker[1]:x} overlaps {structure.what} "
                f"at 0x{default:x}..0x{default + structure.size:x}, and no other free RAM "
                f"{where} can hold its {format_size(structure.size)}" + (f"; {fix}" if fix else "")
            )
        kept[structure.attribute] = structure.place_value(start)
        taken.append((start, start + structure.size, structure.what))
    return layout.VmmPlaces(**kept)


class Placement:
    """What `plan_placement` decided: the image's plan, pyvmm's places, the one list.

    Read-only once made.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("image", "places", "reserved")

    def __init__(
        self, image: ImagePlan, places: layout.VmmPlaces, reserved: tuple[Range, ...]
    ) -> None:
        self.image = image
        self.places = places
        self.reserved = reserved

    def moved(self) -> list[tuple[str, int, int]]:
        """(what, default start, start) of each structure not at its default place."""
        return [
            (structure.what, structure.default_start, structure.start_of(self.places))
            for structure in _structures(self.image.mode, self.image.protocol)
            if structure.start_of(self.places) != structure.default_start
        ]


def plan_placement(
    image: bytes,
    memory: GuestMemory,
    *,
    mode: CpuMode | None,
    load_gpa: int | None,
    force_multiboot: bool = False,
    modules: Sequence[tuple[str, bytes]] = (),
    append: str | None = None,
    machine_ranges: Sequence[Range] = (),
    image_format: str | None = None,
) -> Placement:
    """Plan the image (`plan_image`), place pyvmm's structures, compose the reserved list.

    Pass `Placement.reserved` to `load_image` and `check_entry_placement`,
    and `Placement.places` to `setup_vcpu`. Nothing is written. Raises the
    LoaderError the image's plan raises, or NoRoomForVmm.
    """
    plan = plan_image(
        image,
        memory,
        mode=mode,
        load_gpa=load_gpa,
        default_flat_gpa=default_load_gpa,
        force_multiboot=force_multiboot,
        modules=modules,
        append=append,
        image_format=image_format,
    )
    places = place_vmm_structures(
        plan.mode, plan.segments, memory, machine_ranges, plan.fix, plan.protocol
    )
    reserved = reserved_ranges(plan.mode, places, machine_ranges, plan.protocol)
    return Placement(plan, places, tuple(reserved))


def fix_for(protocol: str) -> str:
    """How to move a segment of an image loaded by `protocol`, in its format's terms."""
    if protocol == "flat":
        return FLAT_FIX
    if protocol == "linux":
        from pyvmm.loaders.linux import LINUX_FIX

        return LINUX_FIX
    from pyvmm.loaders.elf import ELF_FIX

    if protocol == "multiboot":
        from pyvmm.loaders.multiboot import AOUT_FIX

        return f"{ELF_FIX}, or for an a.out-kludge kernel {AOUT_FIX}"
    return ELF_FIX


def check_entry_placement(
    entry: EntryPoint, reserved: Sequence[Range] = (), fix: str | None = None
) -> None:
    """Raise a LoaderError (exit status 2) when pyvmm could not start `entry`.

    Each segment of the image must be clear of every range of `reserved`
    (`Placement.reserved`); the refusal names the segment, the range and
    `fix` (`Placement.image.fix`; by default the hint for the entry's
    protocol). A paged entry point must lie where pyvmm's identity map
    reaches.
    """
    check_clear(entry.segments, reserved, fix_for(entry.protocol) if fix is None else fix)
    check_entry_mapped(entry)


def check_entry_mapped(entry: EntryPoint) -> None:
    """Refuse an entry point the VMM's identity-mapped page tables do not reach.

    The image may go on above 4 GiB (the guest can map that itself), but its
    first instruction has to be fetched through pyvmm's tables.
    """
    if entry.mode in (CpuMode.LONG, CpuMode.USER) and entry.entry >= layout.IDENTITY_MAP_END:
        how = (
            "load it below 4 GiB (--load-addr)"
            if entry.protocol == "flat"
            else "link the segment holding its entry point below 4 GiB (its p_paddr)"
        )
        raise BadEntryPoint(
            f"entry point 0x{entry.entry:x} is above 4 GiB: pyvmm's {entry.mode.value}-mode "
            f"page tables map only the low 4 GiB; {how}"
        )
