"""Render what `pyvmm memmap` found: the machine's map, the guest's mappings,
and whole translation chains, as text for people or JSON for tools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyvmm.arch.x86_64.page_walk import Mapping, PagingRegisters
from pyvmm.memory.guest_memory import GuestMemory
from pyvmm.observe.machine_map import MapEntry, locate, ram_and_holes
from pyvmm.observe.translation import Translation


@dataclass(frozen=True)
class MappingRow:
    """A mapping cut where its physical side enters or leaves guest RAM."""

    gva: int
    gpa: int
    size: int
    page_size: int
    flags: str
    hva: int | None  # None: the physical range is not RAM
    where: str | None = None  # then: which range of the machine map it lies in, in short


@dataclass(frozen=True)
class MemoryReport:
    outcome: str
    memory_map: list[MapEntry]
    paging: PagingRegisters
    mappings: list[MappingRow]
    translations: list[Translation]


def mapping_rows(mappings: list[Mapping], memory: GuestMemory) -> list[MappingRow]:
    """Each mapping cut where its physical side crosses a range of the machine map."""
    rows: list[MappingRow] = []
    for mapping in mappings:
        for gpa, size, entry in _split_by_map(mapping.gpa, mapping.size, memory):
            ram = entry.kind == "ram"
            rows.append(
                MappingRow(
                    mapping.gva + (gpa - mapping.gpa),
                    gpa,
                    size,
                    mapping.page_size,
                    str(mapping.flags),
                    memory.host_address(gpa) if ram else None,
                    None if ram else entry.label,
                )
            )
    return rows


def _split_by_map(gpa: int, size: int, memory: GuestMemory) -> list[tuple[int, int, MapEntry]]:
    """Pieces of [gpa, gpa + size), each within one RAM slot or one range with no RAM."""
    pieces: list[tuple[int, int, MapEntry]] = []
    entries = ram_and_holes(memory)
    cursor, end = gpa, gpa + size
    while cursor < end:
        entry = locate(memory, cursor, entries)
        piece_end = min(end, entry.end)
        pieces.append((cursor, piece_end - cursor, entry))
        cursor = piece_end
    return pieces


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _range(start: int, size: int, width: int) -> str:
    return f"0x{start:0{width}x}-0x{start + size - 1:0{width}x}"


def render_text(report: MemoryReport) -> str:
    lines = [f"guest: {report.outcome}", "", "Machine memory map (guest-physical):"]
    for entry in report.memory_map:
        host = f"  host 0x{entry.hva:x}" if entry.hva is not None else ""
        lines.append(
            f"  {_range(entry.start, entry.end - entry.start, 9)}  {entry.kind:<6} "
            f"{entry.description}{host}"
        )
    paging = report.paging
    lines += [
        "",
        f"Guest paging: {paging.mode.value}  CR0=0x{paging.cr0:x} CR3=0x{paging.cr3:x} "
        f"CR4=0x{paging.cr4:x} EFER=0x{paging.efer:x}",
    ]
    if report.mappings:
        lines.append(
            f"  {'guest virtual':<37}  {'guest physical':<23}  {'host virtual':<29}  "
            f"{'size':>8}  {'page':>7}  flags"
        )
        for row in report.mappings:
            host = _range(row.hva, row.size, 12) if row.hva is not None else f"({row.where})"
            lines.append(
                f"  {_range(row.gva, row.size, 16)}  {_range(row.gpa, row.size, 9)}  "
                f"{host:<29}  {format_size(row.size):>8}  {format_size(row.page_size):>7}  "
                f"{row.flags}"
            )
    elif paging.mode.value == "off":
        lines.append("  paging is off: guest virtual = guest physical")
    for translation in report.translations:
        lines += ["", *render_translation(translation)]
    return "\n".join(lines) + "\n"


def render_translation(translation: Translation) -> list[str]:
    walk = translation.walk
    lines = [f"Translation of guest virtual 0x{translation.gva:x}:"]
    for step in walk.steps:
        lines.append(
            f"  {step.level:<5} [{step.index:3d}] at GPA 0x{step.entry_gpa:x} = 0x{step.entry:016x}"
        )
    if walk.gpa is None:
        lines.append(f"  GVA -> GPA: {walk.fault}")
    else:
        lines.append(
            f"  GVA 0x{translation.gva:x} -> GPA 0x{walk.gpa:x}  "
            f"({format_size(walk.page_size)} page, {walk.flags})"
        )
    kvm = translation.kvm
    agreement = "agrees" if translation.agrees_with_kvm else "DISAGREES"
    kvm_text = f"0x{kvm.gpa:x}" if kvm.valid else "not mapped"
    lines.append(f"  KVM_TRANSLATE: {kvm_text} ({agreement})")
    if translation.hva is not None:
        lines.append(f"  GPA -> HVA 0x{translation.hva:x}  (KVM slot {translation.slot})")
    if translation.hpa is not None:
        lines.append(
            f"  HVA -> HPA 0x{translation.hpa:x}  (host frame 0x{translation.hpa >> 12:x})"
        )
    problem = translation.problem
    if problem and walk.gpa is not None:
        lines.append(f"  stops: {problem}")
    return lines


def report_to_json(report: MemoryReport) -> dict[str, Any]:
    paging = report.paging
    return {
        "outcome": report.outcome,
        "memory_map": [
            {
                "start": entry.start,
                "end": entry.end,
                "kind": entry.kind,
                "description": entry.description,
                "hva": entry.hva,
            }
            for entry in report.memory_map
        ],
        "paging": {
            "mode": paging.mode.value,
            "cr0": paging.cr0,
            "cr3": paging.cr3,
            "cr4": paging.cr4,
            "efer": paging.efer,
        },
        "mappings": [
            {
                "gva": row.gva,
                "gpa": row.gpa,
                "size": row.size,
                "page_size": row.page_size,
                "flags": row.flags,
                "hva": row.hva,
                "where": row.where,
            }
            for row in report.mappings
        ],
        "translations": [translation_to_json(item) for item in report.translations],
    }


def translation_to_json(translation: Translation) -> dict[str, Any]:
    walk = translation.walk
    return {
        "gva": translation.gva,
        "gpa": walk.gpa,
        "page_size": walk.page_size or None,
        "flags": str(walk.flags) if walk.flags else None,
        "walk": [
            {
                "level": step.level,
                "index": step.index,
                "entry_gpa": step.entry_gpa,
                "entry": step.entry,
            }
            for step in walk.steps
        ],
        "kvm_translate": {
            "valid": translation.kvm.valid,
            "gpa": translation.kvm.gpa,
            "agrees": translation.agrees_with_kvm,
        },
        "slot": translation.slot,
        "hva": translation.hva,
        "hpa": translation.hpa,
        "problem": translation.problem,
        "not_ram": translation.not_ram,
    }
