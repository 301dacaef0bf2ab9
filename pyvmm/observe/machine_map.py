"""The machine's guest-physical memory map: slots, holes, and what the VMM put where.

`ram_and_holes` cuts the guest-physical space into RAM slots and ranges with
no RAM; the map shows them, and every message that says an address is not
RAM names its range from them (`describe_not_ram`), so that both agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.arch.x86_64 import layout

if TYPE_CHECKING:
    from pyvmm.machine.builder import Machine
    from pyvmm.memory.guest_memory import GuestMemory

ADDRESS_SPACE_END = 1 << 64

# The ranges with no RAM, as the map describes them and as a table cell names them.
UNMAPPED = "unmapped: no RAM here"
MMIO_HOLE = "MMIO hole (PCI, devices)"
PAST_RAM = "past the end of guest RAM"
_LABELS = {
    UNMAPPED: "not RAM: unmapped",
    MMIO_HOLE: "not RAM: MMIO hole",
    PAST_RAM: "not RAM: past its end",
}


@dataclass(frozen=True)
class MapEntry:
    start: int
    end: int
    kind: str  # "ram", "hole", "vmm", "image", "device"
    description: str
    hva: int | None = None

    @property
    def label(self) -> str:
        """A few words for a table cell: `no RAM: unmapped`, `not RAM: MMIO hole`..."""
        return _LABELS.get(self.description, self.description)


def machine_memory_map(machine: Machine) -> list[MapEntry]:
    """RAM slots and holes, then the VMM's structures, the firmware tables and the image."""
    entries = ram_and_holes(machine.memory)
    entries.append(
        MapEntry(
            layout.KVM_IDENTITY_MAP_GPA,
            layout.KVM_TSS_GPA + 3 * 0x1000,
            "vmm",
            "KVM's identity-map page and TSS (for VT-x real mode)",
        )
    )
    # Where this run put them: an image that occupies a default place moves a structure.
    mode, protocol = machine.entry.mode.value, machine.entry.protocol
    placed = layout.vmm_placements(mode, machine.vmm_places, protocol)
    usual_places = layout.vmm_placements(mode, protocol=protocol)
    for (start, end, what), (usual, _, _) in zip(placed, usual_places, strict=True):
        what += " (moved: the image occupies its usual place)" if start != usual else ""
        entries.append(MapEntry(start, end, "vmm", what, _hva(machine, start)))
    # The firmware's MP and ACPI structures, as a BIOS would have left them.
    for item in machine.firmware.placed if machine.firmware is not None else ():
        entries.append(MapEntry(item.gpa, item.end, "vmm", item.what, _hva(machine, item.gpa)))
    entry = machine.entry
    described = f"{entry.protocol} image, entry 0x{entry.entry:x} ({entry.mode.value} mode)"
    # An image in pieces (ELF headers at 0, a trampoline, the kernel at 1 MiB) gets a
    # row per piece: what lies between them is not the image's.
    pieces = entry.segments if len(entry.segments) > 1 else ()
    if not pieces:
        entries.append(
            MapEntry(
                entry.image_start,
                entry.image_end,
                "image",
                described,
                _hva(machine, entry.image_start),
            )
        )
    for start, end, name in pieces:
        entries.append(MapEntry(start, end, "image", f"{described}: {name}", _hva(machine, start)))
    for bus_range in machine.mmio_bus.ranges:
        entries.append(MapEntry(bus_range.base, bus_range.end, "device", bus_range.name))
    return sorted(entries, key=lambda item: (item.start, item.kind != "ram"))


def ram_and_holes(memory: GuestMemory) -> list[MapEntry]:
    """Guest-physical space from 0 in order: each RAM slot and each range with no RAM.

    They end where RAM or the MMIO hole ends, whichever is higher; beyond
    that lies only `PAST_RAM` (see `locate`).
    """
    entries: list[MapEntry] = []
    previous_end = 0
    for region in memory:
        entries += _holes(previous_end, region.gpa)
        entries.append(
            MapEntry(
                region.gpa,
                region.end,
                "ram",
                f"RAM, KVM slot {region.slot}",
                memory.mapping.hva + region.host_offset,
            )
        )
        previous_end = region.end
    entries += _holes(previous_end, max(previous_end, layout.MMIO_GAP_END))
    return entries


def locate(memory: GuestMemory, gpa: int, entries: Sequence[MapEntry] | None = None) -> MapEntry:
    """The RAM slot or range with no RAM of `ram_and_holes` that holds `gpa`.

    An address past them all lies in a `PAST_RAM` entry that runs to the end
    of the 64-bit space. `entries`: `ram_and_holes(memory)`, when the caller
    has it already.
    """
    entries = ram_and_holes(memory) if entries is None else entries
    for entry in entries:
        if entry.start <= gpa < entry.end:
            return entry
    end = max((entry.end for entry in entries), default=0)
    return MapEntry(end, ADDRESS_SPACE_END, "hole", PAST_RAM)


def describe_not_ram(memory: GuestMemory, gpa: int) -> str:
    """`GPA 0x40000000 is not RAM: it lies in 0x8000000-0xcfffffff, ...`: the range, named.

    Names the range of the machine map that holds `gpa` (an address in RAM
    is described as such).
    """
    entry = locate(memory, gpa)
    span = f"0x{entry.start:x}-0x{entry.end - 1:x}"
    if entry.kind == "ram":
        return f"GPA 0x{gpa:x} is RAM ({entry.description})"
    if entry.description == MMIO_HOLE:
        where = f"the MMIO hole {span} (PCI, devices)"
    elif entry.description == PAST_RAM:
        ram_end = max((region.end for region in memory), default=0)
        where = f"0x{entry.start:x} and above, where there is no RAM (guest RAM ends at "
        where += f"0x{ram_end:x})"
    else:
        where = f"{span}, where there is no RAM"
        if entry.end == layout.MMIO_GAP_START:
            where += " (from the end of guest RAM to the MMIO hole)"
    return f"GPA 0x{gpa:x} is not RAM: it lies in {where}"


def _hva(machine: Machine, gpa: int) -> int | None:
    return machine.memory.host_address(gpa) if machine.memory.contains(gpa) else None


def _holes(start: int, end: int) -> list[MapEntry]:
    """Describe [start, end) with no RAM: beyond -m below the hole, or the MMIO hole."""
    holes = []
    gap_start, gap_end = layout.MMIO_GAP_START, layout.MMIO_GAP_END
    if start < min(end, gap_start):
        holes.append(MapEntry(start, min(end, gap_start), "hole", UNMAPPED))
    if max(start, gap_start) < min(end, gap_end):
        holes.append(MapEntry(max(start, gap_start), min(end, gap_end), "hole", MMIO_HOLE))
    if max(start, gap_end) < end:  # between two RAM slots above 4 GiB (never on a PC)
        holes.append(MapEntry(max(start, gap_end), end, "hole", UNMAPPED))
    return holes
