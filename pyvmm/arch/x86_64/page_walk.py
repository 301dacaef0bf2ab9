"""Software page walk: guest-virtual -> guest-physical, from the guest's own CR3.

Pure over GuestMemory: it reads the guest's tables exactly as the MMU would
(Intel SDM vol. 3A, 4.3 32-bit paging, 4.4 PAE paging, 4.5 4-level paging)
and reports each level's entry, the effective permissions and the page size.
A non-present entry, a set reserved bit or a table outside RAM gives a walk
with `fault` set: never an exception from deep inside.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from pyvmm.arch.x86_64.paging import (
    ENTRY_NX,
    ENTRY_PAGE_SIZE,
    ENTRY_PRESENT,
    ENTRY_USER,
    ENTRY_WRITABLE,
)
from pyvmm.arch.x86_64.registers import CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE
from pyvmm.errors import GuestMemoryError
from pyvmm.memory.guest_memory import GuestMemory

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


class PagingMode(enum.Enum):
    OFF = "off"  # CR0.PG clear: linear == physical
    BITS32 = "32-bit"  # two levels, 4 KiB and (with CR4.PSE) 4 MiB pages
    PAE = "PAE"  # three levels, 4 KiB and 2 MiB pages
    LEVEL4 = "4-level"  # long mode: 4 KiB, 2 MiB and 1 GiB pages
    LEVEL5 = "5-level"  # LA57: recognised, not walked


@dataclass(frozen=True)
class PagingRegisters:
    """The registers that decide how the MMU translates."""

    cr0: int
    cr3: int
    cr4: int
    efer: int

    @property
    def mode(self) -> PagingMode:
        if not self.cr0 & CR0_PG:
            return PagingMode.OFF
        if not self.cr4 & CR4_PAE:
            return PagingMode.BITS32
        if not self.efer & EFER_LMA:
            return PagingMode.PAE
        return PagingMode.LEVEL5 if self.cr4 & CR4_LA57 else PagingMode.LEVEL4

    @property
    def nx_enabled(self) -> bool:
        return bool(self.efer & EFER_NXE)


@dataclass(frozen=True)
class WalkStep:
    """One table entry the walk read."""

    level: str  # "PML4E", "PDPTE", "PDE" or "PTE"
    table_gpa: int
    index: int
    entry_gpa: int
    entry: int


@dataclass(frozen=True)
class PageFlags:
    """Effective permissions: writable/user only if every level allows it."""

    writable: bool
    user: bool
    nx: bool

    def __str__(self) -> str:
        access = "r" + ("w" if self.writable else "-") + ("-" if self.nx else "x")
        return f"{access} {'user' if self.user else 'kernel'}"


@dataclass(frozen=True)
class Walk:
    gva: int
    gpa: int | None
    page_size: int
    flags: PageFlags | None
    steps: tuple[WalkStep, ...]
    fault: str | None = None

    @property
    def mapped(self) -> bool:
        return self.fault is None


@dataclass(frozen=True)
class Mapping:
    """A run of virtual pages mapped contiguously onto physical memory."""

    gva: int
    gpa: int
    size: int
    page_size: int
    flags: PageFlags


@dataclass(frozen=True)
class _Level:
    name: str
    shift: int  # bit position of this level's index in the address
    index_bits: int
    # Page size when PS=1 at this level (0: PS is reserved/meaningless here).
    large_page: int


_LEVELS_4 = (
    _Level("PML4E", 39, 9, 0),
    _Level("PDPTE", 30, 9, GIB),
    _Level("PDE", 21, 9, 2 * MIB),
    _Level("PTE", 12, 9, 0),
)
_LEVELS_PAE = (
    _Level("PDPTE", 30, 2, 0),
    _Level("PDE", 21, 9, 2 * MIB),
    _Level("PTE", 12, 9, 0),
)
_LEVELS_32 = (
    _Level("PDE", 22, 10, 4 * MIB),
    _Level("PTE", 12, 10, 0),
)


def canonical(gva: int) -> bool:
    """48-bit canonical: bits 63:47 all equal."""
    top = gva >> 47
    return top in (0, (1 << 17) - 1)


def walk(memory: GuestMemory, regs: PagingRegisters, gva: int, max_phys_bits: int = 52) -> Walk:
    """Translate `gva` the way the guest's MMU would."""
    mode = regs.mode
    if mode is PagingMode.OFF:
        gpa = gva & 0xFFFF_FFFF
        return Walk(gva, gpa, 4 * KIB, PageFlags(True, True, False), ())
    if mode is PagingMode.LEVEL5:
        return Walk(gva, None, 0, None, (), "5-level paging (CR4.LA57) is not supported")
    if mode is PagingMode.LEVEL4:
        if not canonical(gva):
            return Walk(gva, None, 0, None, (), f"0x{gva:x} is not a canonical address")
        return _walk_64bit_entries(memory, regs, gva, _LEVELS_4, regs.cr3 & ~0xFFF, max_phys_bits)
    if gva >> 32:
        return Walk(gva, None, 0, None, (), f"0x{gva:x} is beyond 32-bit linear addresses")
    if mode is PagingMode.PAE:
        return _walk_64bit_entries(
            memory, regs, gva, _LEVELS_PAE, regs.cr3 & 0xFFFF_FFE0, max_phys_bits
        )
    return _walk_32bit(memory, regs, gva, max_phys_bits)


def _reserved_mask(max_phys_bits: int, nx_enabled: bool, pae: bool) -> int:
    """Bits of a 64-bit-format entry that must be zero at every level.

    4-level paging ignores bits 62:52 (SDM tables 4-15..4-19); PAE reserves
    them (4.4.2, tables 4-9..4-11).
    """
    top = 63 if pae else 52
    mask = ((1 << top) - 1) & ~((1 << max_phys_bits) - 1)
    if not nx_enabled:
        mask |= ENTRY_NX
    return mask


def _walk_64bit_entries(
    memory: GuestMemory,
    regs: PagingRegisters,
    gva: int,
    levels: tuple[_Level, ...],
    table_gpa: int,
    max_phys_bits: int,
) -> Walk:
    address_mask = ((1 << max_phys_bits) - 1) & ~0xFFF
    pae = len(levels) == 3
    reserved = _reserved_mask(max_phys_bits, regs.nx_enabled, pae)
    steps: list[WalkStep] = []
    writable = user = True
    nx = False
    for depth, level in enumerate(levels):
        index = (gva >> level.shift) & ((1 << level.index_bits) - 1)
        entry_gpa = table_gpa + 8 * index
        try:
            entry = memory.read_u64(entry_gpa)
        except GuestMemoryError:
            return _fault(gva, steps, f"{level.name} at 0x{entry_gpa:x} is outside guest RAM")
        steps.append(WalkStep(level.name, table_gpa, index, entry_gpa, entry))
        if not entry & ENTRY_PRESENT:
            return _fault(gva, steps, f"not mapped: {level.name} {index} is not present")
        level_reserved = reserved
        if pae and depth == 0:
            # PAE PDPTEs have no R/W, U/S, A, D, PS or NX bits (SDM 4.4.1).
            level_reserved |= 0b1_1110_0110 | ENTRY_NX
        is_leaf = depth == len(levels) - 1
        large = bool(level.large_page) and bool(entry & ENTRY_PAGE_SIZE)
        if not level.large_page and not is_leaf and entry & ENTRY_PAGE_SIZE and not pae:
            level_reserved |= ENTRY_PAGE_SIZE  # PS must be 0 in a PML4E
        if large:
            # Bits between the PAT bit (12) and the page's own alignment are reserved.
            level_reserved |= (level.large_page - 1) & ~0x1FFF
        if entry & level_reserved:
            return _fault(
                gva,
                steps,
                f"not mapped: {level.name} {index} has reserved bits set "
                f"(0x{entry & level_reserved:x})",
            )
        if not (pae and depth == 0):
            writable = writable and bool(entry & ENTRY_WRITABLE)
            user = user and bool(entry & ENTRY_USER)
            nx = nx or (regs.nx_enabled and bool(entry & ENTRY_NX))
        if large or is_leaf:
            page_size = level.large_page if large else 4 * KIB
            frame_mask = address_mask & ~(page_size - 1)
            gpa = (entry & frame_mask) | (gva & (page_size - 1))
            return Walk(gva, gpa, page_size, PageFlags(writable, user, nx), tuple(steps))
        table_gpa = entry & address_mask
    raise AssertionError("unreachable: the last level is always a leaf")


def _walk_32bit(memory: GuestMemory, regs: PagingRegisters, gva: int, max_phys_bits: int) -> Walk:
    steps: list[WalkStep] = []
    directory_gpa = regs.cr3 & 0xFFFF_F000
    pde_index = gva >> 22
    pde_gpa = directory_gpa + 4 * pde_index
    try:
        pde = memory.read_u32(pde_gpa)
    except GuestMemoryError:
        return _fault(gva, steps, f"PDE at 0x{pde_gpa:x} is outside guest RAM")
    steps.append(WalkStep("PDE", directory_gpa, pde_index, pde_gpa, pde))
    if not pde & ENTRY_PRESENT:
        return _fault(gva, steps, f"not mapped: PDE {pde_index} is not present")
    if pde & ENTRY_PAGE_SIZE and regs.cr4 & CR4_PSE:
        # PSE-36: PDE bits (M-20):13 hold physical bits (M-1):32; bits
        # 21:(M-19) are reserved (SDM 4.3, table 4-4), M = min(MAXPHYADDR, 40).
        high_bits = max(min(max_phys_bits, 40) - 32, 0)
        reserved = (1 << 22) - (1 << (13 + high_bits))
        if pde & reserved:
            return _fault(
                gva,
                steps,
                f"not mapped: PDE {pde_index} has reserved bits set (0x{pde & reserved:x})",
            )
        frame = (pde & 0xFFC0_0000) | ((pde >> 13) & ((1 << high_bits) - 1)) << 32
        flags = PageFlags(bool(pde & ENTRY_WRITABLE), bool(pde & ENTRY_USER), False)
        return Walk(gva, frame | (gva & 0x3F_FFFF), 4 * MIB, flags, tuple(steps))
    table_gpa = pde & 0xFFFF_F000
    pte_index = (gva >> 12) & 0x3FF
    pte_gpa = table_gpa + 4 * pte_index
    try:
        pte = memory.read_u32(pte_gpa)
    except GuestMemoryError:
        return _fault(gva, steps, f"PTE at 0x{pte_gpa:x} is outside guest RAM")
    steps.append(WalkStep("PTE", table_gpa, pte_index, pte_gpa, pte))
    if not pte & ENTRY_PRESENT:
        return _fault(gva, steps, f"not mapped: PTE {pte_index} is not present")
    flags = PageFlags(bool(pde & pte & ENTRY_WRITABLE), bool(pde & pte & ENTRY_USER), False)
    return Walk(gva, (pte & 0xFFFF_F000) | (gva & 0xFFF), 4 * KIB, flags, tuple(steps))


def _fault(gva: int, steps: list[WalkStep], reason: str) -> Walk:
    return Walk(gva, None, 0, None, tuple(steps), reason)


def iter_leaf_walks(
    memory: GuestMemory, regs: PagingRegisters, max_phys_bits: int = 52
) -> Iterator[Walk]:
    """Every page the guest's tables map (present at every level), lowest GVA first.

    The tables are scanned for present entries; each leaf found is then
    translated by `walk`, so what this lists is exactly what `walk` answers.
    """
    mode = regs.mode
    if mode is PagingMode.LEVEL4:
        levels, root, entry_size = _LEVELS_4, regs.cr3 & ~0xFFF, 8
    elif mode is PagingMode.PAE:
        levels, root, entry_size = _LEVELS_PAE, regs.cr3 & 0xFFFF_FFE0, 8
    elif mode is PagingMode.BITS32:
        levels, root, entry_size = _LEVELS_32, regs.cr3 & 0xFFFF_F000, 4
    else:
        return
    address_mask = ((1 << max_phys_bits) - 1) & ~0xFFF
    pse_enabled = mode is not PagingMode.BITS32 or bool(regs.cr4 & CR4_PSE)

    def visit(depth: int, table_gpa: int, base_gva: int) -> Iterator[Walk]:
        level = levels[depth]
        count = 1 << level.index_bits
        try:
            table = memory.read(table_gpa, count * entry_size)
        except GuestMemoryError:
            return
        for index in range(count):
            entry = int.from_bytes(table[index * entry_size : (index + 1) * entry_size], "little")
            if not entry & ENTRY_PRESENT:
                continue
            gva = base_gva | index << level.shift
            is_leaf = depth == len(levels) - 1
            large = bool(level.large_page) and bool(entry & ENTRY_PAGE_SIZE) and pse_enabled
            if is_leaf or large:
                found = walk(memory, regs, _sign_extend_48(gva, mode), max_phys_bits)
                if found.mapped:
                    yield found
            else:
                next_mask = 0xFFFF_F000 if entry_size == 4 else address_mask
                yield from visit(depth + 1, entry & next_mask, gva)

    yield from visit(0, root, 0)


def list_mappings(
    memory: GuestMemory, regs: PagingRegisters, max_phys_bits: int = 52
) -> list[Mapping]:
    """The guest's mappings, with runs contiguous in both spaces merged."""
    mappings: list[Mapping] = []
    for found in iter_leaf_walks(memory, regs, max_phys_bits):
        assert found.gpa is not None and found.flags is not None
        if mappings:
            last = mappings[-1]
            if (
                last.gva + last.size == found.gva
                and last.gpa + last.size == found.gpa
                and last.page_size == found.page_size
                and last.flags == found.flags
            ):
                mappings[-1] = Mapping(
                    last.gva, last.gpa, last.size + found.page_size, last.page_size, last.flags
                )
                continue
        mappings.append(
            Mapping(found.gva, found.gpa, found.page_size, found.page_size, found.flags)
        )
    return mappings


def _sign_extend_48(gva: int, mode: PagingMode) -> int:
    if mode is PagingMode.LEVEL4 and gva & (1 << 47):
        return gva | ~((1 << 48) - 1) & ((1 << 64) - 1)
    return gva
