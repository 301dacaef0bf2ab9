"""The machine's guest-physical memory map: slots, holes, and what the VMM put where."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.arch.x86_64 import layout

if TYPE_CHECKING:
    from pyvmm.machine.builder import Machine


@dataclass(frozen=True)
class MapEntry:
    start: int
    end: int
    kind: str  # "ram", "hole", "vmm", "image", "device"
    description: str
    hva: int | None = None


def machine_memory_map(machine: Machine) -> list[MapEntry]:
    """RAM slots and holes, then the VMM's structures and the image inside RAM."""
    memory = machine.memory
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
    entries.append(
        MapEntry(
            layout.KVM_IDENTITY_MAP_GPA,
            layout.KVM_TSS_GPA + 3 * 0x1000,
            "vmm",
            "KVM's identity-map page and TSS (for VT-x real mode)",
        )
    )
    for start, end, what in layout.vmm_placements(machine.entry.mode.value):
        entries.append(MapEntry(start, end, "vmm", what, _hva(machine, start)))
    entry = machine.entry
    entries.append(
        MapEntry(
            entry.image_start,
            entry.image_end,
            "image",
            f"{entry.protocol} image, entry 0x{entry.entry:x} ({entry.mode.value} mode)",
            _hva(machine, entry.image_start),
        )
    )
    for bus_range in machine.mmio_bus.ranges:
        entries.append(MapEntry(bus_range.base, bus_range.end, "device", bus_range.name))
    return sorted(entries, key=lambda item: (item.start, item.kind != "ram"))


def _hva(machine: Machine, gpa: int) -> int | None:
    return machine.memory.host_address(gpa) if machine.memory.contains(gpa) else None


def _holes(start: int, end: int) -> list[MapEntry]:
    """Describe [start, end) with no RAM: beyond -m below the hole, or the MMIO hole."""
    holes = []
    gap_start, gap_end = layout.MMIO_GAP_START, layout.MMIO_GAP_END
    if start < min(end, gap_start):
        holes.append(MapEntry(start, min(end, gap_start), "hole", "unmapped: no RAM here"))
    if max(start, gap_start) < min(end, gap_end):
        holes.append(
            MapEntry(max(start, gap_start), min(end, gap_end), "hole", "MMIO hole (PCI, devices)")
        )
    return holes
