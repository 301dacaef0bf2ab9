"""The software page walker against page tables written by hand.

Every table below is written entry by entry with explicit constants, and every
expected guest-physical address is a literal worked out in the comment next to
it (Intel SDM vol. 3A: 4.3 32-bit paging, 4.4 PAE paging, 4.5 4-level paging).
Only the identity-map tests at the end use the pyvmm builders, as a cross-check.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyvmm.arch.x86_64.page_walk import (
    Mapping,
    PageFlags,
    PagingMode,
    PagingRegisters,
    WalkStep,
    canonical,
    iter_leaf_walks,
    list_mappings,
    walk,
)
from pyvmm.arch.x86_64.paging import build_identity_map_32, build_identity_map_64
from pyvmm.memory.guest_memory import GuestMemory

# Entry bits (SDM 4.3, 4.4, 4.5), spelled out rather than imported from the walker.
P = 1 << 0
RW = 1 << 1
US = 1 << 2
PS = 1 << 7
PAT_LARGE = 1 << 12  # PAT bit of a large-page entry: not an address bit
NX = 1 << 63

CR0_PE = 1 << 0
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

BITS32 = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1000, cr4=0, efer=0)
BITS32_PSE = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1000, cr4=CR4_PSE, efer=0)
# The PDPT is 32-byte aligned, not page-aligned: CR3 bits 31:5 locate it (SDM 4.4.1).
PAE = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1020, cr4=CR4_PAE, efer=0)
PAE_NX = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1020, cr4=CR4_PAE, efer=EFER_NXE)
LONG = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1000, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA)
LONG_NX = PagingRegisters(
    cr0=CR0_PG | CR0_PE, cr3=0x1000, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA | EFER_NXE
)


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    memory = GuestMemory.from_ranges([(0, 4 << 20)])
    yield memory
    memory.close()


@pytest.fixture
def holey_memory() -> Iterator[GuestMemory]:
    """RAM at [0, 1 MiB) and [2 MiB, 3 MiB): nothing at [1 MiB, 2 MiB)."""
    memory = GuestMemory.from_ranges([(0, 1 << 20), (2 << 20, 1 << 20)])
    yield memory
    memory.close()


# --- paging modes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regs", "mode"),
    [
        (PagingRegisters(cr0=CR0_PE, cr3=0, cr4=CR4_PAE, efer=EFER_LME), PagingMode.OFF),
        (BITS32, PagingMode.BITS32),
        (BITS32_PSE, PagingMode.BITS32),
        (PAE, PagingMode.PAE),
        (PAE_NX, PagingMode.PAE),
        (LONG, PagingMode.LEVEL4),
        (
            PagingRegisters(
                cr0=CR0_PG | CR0_PE, cr3=0, cr4=CR4_PAE | CR4_LA57, efer=EFER_LME | EFER_LMA
            ),
            PagingMode.LEVEL5,
        ),
    ],
)
def test_paging_mode_follows_cr0_cr4_efer(regs: PagingRegisters, mode: PagingMode) -> None:
    assert regs.mode is mode


def test_paging_off_is_identity(memory: GuestMemory) -> None:
    regs = PagingRegisters(cr0=CR0_PE, cr3=0x1000, cr4=CR4_PAE, efer=0)
    found = walk(memory, regs, 0x12345678)
    assert found.mapped and found.fault is None
    assert found.gpa == 0x12345678
    assert found.steps == ()


def test_la57_is_refused_not_walked(memory: GuestMemory) -> None:
    # Even with a perfectly good 4-level tree in place, LA57 must not be walked as 4-level.
    memory.write_u64(0x1000, 0x2000 | P | RW)
    memory.write_u64(0x2000, 0x3000 | P | RW)
    memory.write_u64(0x3000, 0x0 | P | RW | PS)
    regs = PagingRegisters(
        cr0=CR0_PG | CR0_PE, cr3=0x1000, cr4=CR4_PAE | CR4_LA57, efer=EFER_LME | EFER_LMA
    )
    found = walk(memory, regs, 0x1234)
    assert not found.mapped
    assert found.gpa is None
    assert found.fault is not None and "not supported" in found.fault
    assert found.steps == ()
    assert list_mappings(memory, regs) == []


# --- 32-bit paging (SDM 4.3) ------------------------------------------------------------


def test_32bit_4kib_page(memory: GuestMemory) -> None:
    # gva 0xC0345010: PDE index = bits 31:22 = 0x300, PTE index = bits 21:12 = 0x345.
    memory.write_u32(0x1000 + 4 * 0x300, 0x5000 | P | RW | US)  # PDE at 0x1C00
    memory.write_u32(0x5000 + 4 * 0x345, 0x300000 | P | RW | US)  # PTE at 0x5D14
    found = walk(memory, BITS32, 0xC0345010)
    # PD[0x300] -> PT at 0x5000, PT[0x345] -> frame 0x300000 => 0x300000 + 0x010
    assert found.gpa == 0x300010
    assert found.page_size == 0x1000
    assert found.flags == PageFlags(writable=True, user=True, nx=False)
    assert found.steps == (
        WalkStep("PDE", 0x1000, 0x300, 0x1C00, 0x5007),
        WalkStep("PTE", 0x5000, 0x345, 0x5D14, 0x300007),
    )


def test_32bit_cr3_low_bits_are_not_part_of_the_directory_address(memory: GuestMemory) -> None:
    memory.write_u32(0x1000 + 4 * 0x300, 0x5000 | P | RW)
    memory.write_u32(0x5000 + 4 * 0x345, 0x300000 | P | RW)
    # CR3 bits 3 (PWT) and 4 (PCD) set, directory still at 0x1000.
    regs = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1018, cr4=0, efer=0)
    assert walk(memory, regs, 0xC0345010).gpa == 0x300010


def test_32bit_4mib_page_with_pse(memory: GuestMemory) -> None:
    memory.write_u32(0x1000 + 4 * 0x300, 0x00C00000 | P | RW | PS)
    found = walk(memory, BITS32_PSE, 0xC0345010)
    # PD[0x300] -> 4 MiB frame 0xC00000, offset = bits 21:0 = 0x345010 => 0xF45010
    assert found.gpa == 0xF45010
    assert found.page_size == 4 * MIB
    assert found.flags == PageFlags(writable=True, user=False, nx=False)
    assert [step.level for step in found.steps] == ["PDE"]


def test_32bit_ps_pde_is_a_page_table_pointer_without_cr4_pse(memory: GuestMemory) -> None:
    # One PDE, two readings. Directory at 0x2000; PDE = 0x00001083 (P, RW, PS, bit 12).
    regs_pse = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x2000, cr4=CR4_PSE, efer=0)
    regs_no_pse = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x2000, cr4=0, efer=0)
    memory.write_u32(0x2000 + 4 * 0x300, 0x00001000 | P | RW | PS)
    memory.write_u32(0x1000 + 4 * 0x345, 0x300000 | P | RW)  # PTE at 0x1D14
    with_pse = walk(memory, regs_pse, 0xC0345010)
    # CR4.PSE=1: 4 MiB page, bits 31:22 = 0 (bit 12 is PAT) => 0x0 + 0x345010
    assert (with_pse.gpa, with_pse.page_size) == (0x345010, 4 * MIB)
    without_pse = walk(memory, regs_no_pse, 0xC0345010)
    # CR4.PSE=0: PS ignored, PT at 0x1000, PT[0x345] -> 0x300000 => 0x300010
    assert (without_pse.gpa, without_pse.page_size) == (0x300010, 4 * KIB)
    assert [step.level for step in without_pse.steps] == ["PDE", "PTE"]


def test_32bit_pse36_high_address_bits(memory: GuestMemory) -> None:
    # PDE bits 20:13 = 0xAB (0xAB << 13 = 0x156000) give physical bits 39:32.
    memory.write_u32(0x1000 + 4 * 0, 0xC0000000 | 0x156000 | P | RW | PS)  # 0xC0156083
    found = walk(memory, BITS32_PSE, 0x00345010)
    # 0xAB << 32 | 0xC0000000 | 0x345010 => 0xAB_C034_5010
    assert found.gpa == 0xAB_C034_5010
    assert found.page_size == 4 * MIB


def test_32bit_4mib_pde_with_reserved_bit_21_faults(memory: GuestMemory) -> None:
    memory.write_u32(0x1000 + 4 * 0x300, 0x00C00000 | (1 << 21) | P | RW | PS)
    found = walk(memory, BITS32_PSE, 0xC0345010)
    assert not found.mapped
    assert found.gpa is None and found.flags is None
    assert found.fault is not None and "reserved" in found.fault and "PDE" in found.fault
    assert len(found.steps) == 1


def test_32bit_pse36_bits_above_maxphyaddr_are_reserved(memory: GuestMemory) -> None:
    # PDE bit 17 would be physical bit 36: reserved when MAXPHYADDR is 36.
    memory.write_u32(0x1000, 0xC0000000 | (1 << 17) | P | RW | PS)
    found = walk(memory, BITS32_PSE, 0x00345010, max_phys_bits=36)
    assert not found.mapped
    assert found.fault is not None and "reserved" in found.fault


def test_32bit_non_present_pde_faults_at_pde(memory: GuestMemory) -> None:
    memory.write_u32(0x1000 + 4 * 0x300, 0x5000 | RW | US)  # P clear
    found = walk(memory, BITS32, 0xC0345010)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "PDE" in found.fault and "not present" in found.fault
    assert found.steps == (WalkStep("PDE", 0x1000, 0x300, 0x1C00, 0x5006),)


def test_32bit_non_present_pte_faults_at_pte(memory: GuestMemory) -> None:
    memory.write_u32(0x1000 + 4 * 0x300, 0x5000 | P | RW | US)
    memory.write_u32(0x5000 + 4 * 0x345, 0x300000 | RW | US)  # P clear
    found = walk(memory, BITS32, 0xC0345010)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "PTE" in found.fault and "not present" in found.fault
    assert [step.level for step in found.steps] == ["PDE", "PTE"]


@pytest.mark.parametrize(
    ("pde_bits", "pte_bits", "writable", "user"),
    [
        (RW | US, RW | US, True, True),
        (RW | US, US, False, True),  # PTE read-only
        (US, RW | US, False, True),  # PDE read-only
        (RW, RW | US, True, False),  # PDE supervisor
        (RW | US, RW, True, False),  # PTE supervisor
        (US, RW, False, False),  # each level forbids one
        (0, 0, False, False),
    ],
)
def test_32bit_permissions_need_both_levels(
    memory: GuestMemory, pde_bits: int, pte_bits: int, writable: bool, user: bool
) -> None:
    memory.write_u32(0x1000 + 4 * 0x300, 0x5000 | P | pde_bits)
    memory.write_u32(0x5000 + 4 * 0x345, 0x300000 | P | pte_bits)
    found = walk(memory, BITS32, 0xC0345010)
    assert found.gpa == 0x300010
    assert found.flags == PageFlags(writable=writable, user=user, nx=False)


@pytest.mark.parametrize(("pde_bits", "writable", "user"), [(RW, True, False), (US, False, True)])
def test_32bit_4mib_permissions_come_from_the_pde(
    memory: GuestMemory, pde_bits: int, writable: bool, user: bool
) -> None:
    memory.write_u32(0x1000 + 4 * 0x300, 0x00C00000 | P | PS | pde_bits)
    found = walk(memory, BITS32_PSE, 0xC0345010)
    assert found.gpa == 0xF45010
    assert found.flags == PageFlags(writable=writable, user=user, nx=False)


def test_32bit_never_reports_nx_even_with_efer_nxe(memory: GuestMemory) -> None:
    # 32-bit entries have no XD bit: EFER.NXE has no effect without PAE.
    regs = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1000, cr4=0, efer=EFER_NXE)
    memory.write_u32(0x1000 + 4 * 0x300, 0x5000 | P | RW)
    memory.write_u32(0x5000 + 4 * 0x345, 0x80300000 | P | RW)  # bit 31 is an address bit
    found = walk(memory, regs, 0xC0345010)
    # PT[0x345] -> frame 0x80300000 => 0x80300010
    assert found.gpa == 0x80300010
    assert found.flags is not None and found.flags.nx is False


@pytest.mark.parametrize("regs", [BITS32, PAE], ids=["32-bit", "PAE"])
def test_gva_above_4gib_faults_without_long_mode(
    memory: GuestMemory, regs: PagingRegisters
) -> None:
    found = walk(memory, regs, 0x1_0000_0000)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "0x100000000" in found.fault
    assert found.steps == ()


# --- PAE paging (SDM 4.4) ---------------------------------------------------------------


def _pae_4kib(memory: GuestMemory, pte: int) -> None:
    # gva 0xC0345010: PDPTE index = bits 31:30 = 3, PDE index = bits 29:21 = 1,
    # PTE index = bits 20:12 = 0x145.
    memory.write_u64(0x1020 + 8 * 3, 0x4000 | P)  # PDPTE at 0x1038 (no R/W, U/S in PAE)
    memory.write_u64(0x4000 + 8 * 1, 0x5000 | P | RW | US)  # PDE at 0x4008
    memory.write_u64(0x5000 + 8 * 0x145, pte)  # PTE at 0x5A28


def test_pae_4kib_page_with_32_byte_aligned_pdpt(memory: GuestMemory) -> None:
    # Decoys where a page-aligned CR3 would look (0x1000 + 8 * 3 = 0x1018).
    memory.write_u64(0x1018, 0x6000 | P)
    memory.write_u64(0x6000 + 8 * 1, 0x7000 | P | RW | US)
    memory.write_u64(0x7000 + 8 * 0x145, 0x111000 | P | RW | US)
    _pae_4kib(memory, 0x300000 | P | RW | US)
    found = walk(memory, PAE, 0xC0345010)
    # PDPT[3] -> PD 0x4000, PD[1] -> PT 0x5000, PT[0x145] -> 0x300000 => 0x300010
    assert found.gpa == 0x300010
    assert found.page_size == 0x1000
    # The PDPTE has no R/W or U/S bit: it must not make the page read-only or supervisor.
    assert found.flags == PageFlags(writable=True, user=True, nx=False)
    assert found.steps == (
        WalkStep("PDPTE", 0x1020, 3, 0x1038, 0x4001),
        WalkStep("PDE", 0x4000, 1, 0x4008, 0x5007),
        WalkStep("PTE", 0x5000, 0x145, 0x5A28, 0x300007),
    )


def test_pae_2mib_page_above_4gib_physical(memory: GuestMemory) -> None:
    # gva 0x40345010: PDPTE index 1, PDE index (0x40345010 >> 21) & 0x1FF = 1,
    # offset = bits 20:0 = 0x145010.
    memory.write_u64(0x1020 + 8 * 1, 0x6000 | P)  # PDPTE at 0x1028
    memory.write_u64(0x6000 + 8 * 1, 0x12_3440_0000 | P | RW | PS | PAT_LARGE)
    found = walk(memory, PAE, 0x40345010)
    # 2 MiB frame 0x12_3440_0000 (bit 12 is PAT) + 0x145010 => 0x12_3454_5010
    assert found.gpa == 0x12_3454_5010
    assert found.page_size == 2 * MIB
    assert found.flags == PageFlags(writable=True, user=False, nx=False)
    assert [step.level for step in found.steps] == ["PDPTE", "PDE"]


@pytest.mark.parametrize("bit", [1, 2, 5, 6, 7, 8, 63], ids=lambda bit: f"bit{bit}")
def test_pae_pdpte_reserved_bits_fault(memory: GuestMemory, bit: int) -> None:
    # PAE PDPTE: bits 2:1 and 8:5 reserved, and bit 63 (no XD in a PDPTE) (SDM Table 4-8).
    _pae_4kib(memory, 0x300000 | P | RW | US)
    memory.write_u64(0x1038, 0x4000 | P | (1 << bit))
    found = walk(memory, PAE_NX, 0xC0345010)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "PDPTE" in found.fault and "reserved" in found.fault
    assert len(found.steps) == 1


def test_pae_2mib_pde_reserved_bit_13_faults(memory: GuestMemory) -> None:
    memory.write_u64(0x1020 + 8 * 1, 0x6000 | P)
    memory.write_u64(0x6000 + 8 * 1, 0x00E00000 | (1 << 13) | P | RW | PS)
    found = walk(memory, PAE, 0x40345010)
    assert not found.mapped
    assert found.fault is not None and "PDE" in found.fault and "reserved" in found.fault


def test_pae_nx_with_efer_nxe(memory: GuestMemory) -> None:
    _pae_4kib(memory, NX | 0x300000 | P | RW | US)
    found = walk(memory, PAE_NX, 0xC0345010)
    assert found.gpa == 0x300010
    assert found.flags == PageFlags(writable=True, user=True, nx=True)


def test_pae_nx_without_efer_nxe_is_a_reserved_bit(memory: GuestMemory) -> None:
    _pae_4kib(memory, NX | 0x300000 | P | RW | US)
    found = walk(memory, PAE, 0xC0345010)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "PTE" in found.fault and "reserved" in found.fault
    assert len(found.steps) == 3


def test_pae_non_present_pdpte_faults(memory: GuestMemory) -> None:
    _pae_4kib(memory, 0x300000 | P | RW | US)
    found = walk(memory, PAE, 0x80345010)  # PDPTE index 2: never written
    assert not found.mapped
    assert found.fault is not None and "PDPTE" in found.fault and "not present" in found.fault
    assert found.steps == (WalkStep("PDPTE", 0x1020, 2, 0x1030, 0),)


@pytest.mark.parametrize("bit", [52, 62], ids=lambda bit: f"bit{bit}")
def test_pae_pte_bits_62_to_52_are_reserved(memory: GuestMemory, bit: int) -> None:
    _pae_4kib(memory, (1 << bit) | 0x300000 | P | RW | US)
    found = walk(memory, PAE_NX, 0xC0345010)
    assert not found.mapped
    assert found.fault is not None and "reserved" in found.fault


def test_pae_pdpte_bit_60_is_reserved(memory: GuestMemory) -> None:
    _pae_4kib(memory, 0x300000 | P | RW | US)
    memory.write_u64(0x1038, (1 << 60) | 0x4000 | P)
    found = walk(memory, PAE_NX, 0xC0345010)
    assert not found.mapped
    assert found.fault is not None and "reserved" in found.fault


# --- 4-level paging (SDM 4.5) -----------------------------------------------------------

# gva 0x0000_0080_8060_4010: PML4 index 1, PDPT index 2, PD index 3, PT index 4, offset 0x010
# ((1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x10).
GVA_1234 = 0x0000_0080_8060_4010


def _long_4kib(memory: GuestMemory, pml4e: int, pdpte: int, pde: int, pte: int) -> None:
    """PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000, entries for GVA_1234."""
    memory.write_u64(0x1000 + 8 * 1, 0x2000 | pml4e)  # 0x1008
    memory.write_u64(0x2000 + 8 * 2, 0x3000 | pdpte)  # 0x2010
    memory.write_u64(0x3000 + 8 * 3, 0x4000 | pde)  # 0x3018
    memory.write_u64(0x4000 + 8 * 4, pte)  # 0x4020


def test_long_4kib_page_and_its_steps(memory: GuestMemory) -> None:
    _long_4kib(memory, P | RW | US, P | RW | US, P | RW | US, 0x300000 | P | RW | US)
    found = walk(memory, LONG, GVA_1234)
    # PT[4] -> frame 0x300000 => 0x300000 + 0x010
    assert found.gpa == 0x300010
    assert found.page_size == 0x1000
    assert found.flags == PageFlags(writable=True, user=True, nx=False)
    assert found.steps == (
        WalkStep("PML4E", 0x1000, 1, 0x1008, 0x2007),
        WalkStep("PDPTE", 0x2000, 2, 0x2010, 0x3007),
        WalkStep("PDE", 0x3000, 3, 0x3018, 0x4007),
        WalkStep("PTE", 0x4000, 4, 0x4020, 0x300007),
    )


def test_long_cr3_low_bits_are_not_part_of_the_pml4_address(memory: GuestMemory) -> None:
    _long_4kib(memory, P | RW, P | RW, P | RW, 0x300000 | P | RW)
    regs = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x1018, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA)
    assert walk(memory, regs, GVA_1234).gpa == 0x300010


def test_long_2mib_page(memory: GuestMemory) -> None:
    # gva 0x40612345: PML4 0, PDPT 1, PD 3, offset 0x12345.
    memory.write_u64(0x1000, 0x2000 | P | RW)
    memory.write_u64(0x2000 + 8 * 1, 0x3000 | P | RW)
    memory.write_u64(0x3000 + 8 * 3, 0x1_2340_0000 | P | RW | PS | PAT_LARGE)
    found = walk(memory, LONG, 0x40612345)
    # 2 MiB frame 0x1_2340_0000 (bit 12 is PAT) + 0x12345 => 0x1_2341_2345
    assert found.gpa == 0x1_2341_2345
    assert found.page_size == 2 * MIB
    assert [step.level for step in found.steps] == ["PML4E", "PDPTE", "PDE"]
    assert found.steps[-1].entry_gpa == 0x3018


def test_long_1gib_page(memory: GuestMemory) -> None:
    # gva 0x81234567: PML4 0, PDPT 2, offset = bits 29:0 = 0x1234567.
    memory.write_u64(0x1000, 0x2000 | P | RW)
    memory.write_u64(0x2000 + 8 * 2, 0x80_4000_0000 | P | RW | PS | PAT_LARGE)
    found = walk(memory, LONG, 0x81234567)
    # 1 GiB frame 0x80_4000_0000 + 0x1234567 => 0x80_4123_4567
    assert found.gpa == 0x80_4123_4567
    assert found.page_size == GIB
    assert [step.level for step in found.steps] == ["PML4E", "PDPTE"]
    assert found.steps[-1] == WalkStep("PDPTE", 0x2000, 2, 0x2010, 0x80_4000_1083)


def test_long_high_canonical_address(memory: GuestMemory) -> None:
    # 0xffff800012345010: PML4 index = bits 47:39 = 256, PDPT 0,
    # PD (0x12345010 >> 21) & 511 = 0x91, PT (0x12345010 >> 12) & 511 = 0x145, offset 0x10.
    memory.write_u64(0x1000 + 8 * 256, 0x5000 | P | RW)  # 0x1800
    memory.write_u64(0x5000, 0x6000 | P | RW)
    memory.write_u64(0x6000 + 8 * 0x91, 0x7000 | P | RW)  # 0x6488
    memory.write_u64(0x7000 + 8 * 0x145, 0x2AB000 | P | RW)  # 0x7A28
    found = walk(memory, LONG, 0xFFFF800012345010)
    # PT[0x145] -> frame 0x2AB000 => 0x2AB010
    assert found.gpa == 0x2AB010
    assert [(s.level, s.index, s.entry_gpa) for s in found.steps] == [
        ("PML4E", 256, 0x1800),
        ("PDPTE", 0, 0x5000),
        ("PDE", 0x91, 0x6488),
        ("PTE", 0x145, 0x7A28),
    ]


@pytest.mark.parametrize(
    ("gva", "is_canonical"),
    [
        (0x0000_7FFF_FFFF_FFFF, True),
        (0x0000_8000_0000_0000, False),
        (0xFFFF_7FFF_FFFF_FFFF, False),
        (0xFFFF_8000_0000_0000, True),
        (0x0001_0000_0000_0000, False),
    ],
)
def test_canonical(gva: int, is_canonical: bool) -> None:
    assert canonical(gva) is is_canonical


def test_long_non_canonical_address_faults(memory: GuestMemory) -> None:
    # Identity-ish tree for PML4 index 0, which a truncated address would hit.
    memory.write_u64(0x1000, 0x2000 | P | RW)
    memory.write_u64(0x2000, 0x0 | P | RW | PS)
    found = walk(memory, LONG, 0x0000_8000_0000_1000)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "canonical" in found.fault
    assert found.steps == ()


def test_long_ps_in_pml4e_is_reserved(memory: GuestMemory) -> None:
    memory.write_u64(0x1000, 0x2000 | P | RW | PS)
    memory.write_u64(0x2000, 0x0 | P | RW | PS)
    found = walk(memory, LONG, 0x1234)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "PML4E" in found.fault and "reserved" in found.fault
    assert len(found.steps) == 1


def test_long_2mib_pde_reserved_bit_13_faults(memory: GuestMemory) -> None:
    memory.write_u64(0x1000, 0x2000 | P | RW)
    memory.write_u64(0x2000 + 8 * 1, 0x3000 | P | RW)
    memory.write_u64(0x3000 + 8 * 3, 0x1_2340_0000 | (1 << 13) | P | RW | PS)
    found = walk(memory, LONG, 0x40612345)
    assert not found.mapped
    assert found.fault is not None and "PDE" in found.fault and "reserved" in found.fault
    assert len(found.steps) == 3


def test_long_1gib_pdpte_reserved_bit_20_faults(memory: GuestMemory) -> None:
    memory.write_u64(0x1000, 0x2000 | P | RW)
    memory.write_u64(0x2000 + 8 * 2, 0x80_4000_0000 | (1 << 20) | P | RW | PS)
    found = walk(memory, LONG, 0x81234567)
    assert not found.mapped
    assert found.fault is not None and "PDPTE" in found.fault and "reserved" in found.fault
    assert len(found.steps) == 2


def test_long_address_bits_above_max_phys_bits_are_reserved(memory: GuestMemory) -> None:
    _long_4kib(memory, P | RW, P | RW, P | RW, (1 << 45) | 0x300000 | P | RW)
    narrow = walk(memory, LONG, GVA_1234, max_phys_bits=40)
    assert not narrow.mapped and narrow.gpa is None
    assert narrow.fault is not None and "PTE" in narrow.fault and "reserved" in narrow.fault
    wide = walk(memory, LONG, GVA_1234, max_phys_bits=52)
    # With 52 physical bits, bit 45 is an address bit: 1 << 45 | 0x300010 => 0x2000_0030_0010
    assert wide.gpa == 0x2000_0030_0010


def test_long_table_pointer_above_max_phys_bits_is_reserved(memory: GuestMemory) -> None:
    _long_4kib(memory, P | RW, P | RW, P | RW, 0x300000 | P | RW)
    memory.write_u64(0x2010, (1 << 45) | 0x3000 | P | RW)  # the PDPTE
    found = walk(memory, LONG, GVA_1234, max_phys_bits=40)
    assert not found.mapped
    assert found.fault is not None and "PDPTE" in found.fault and "reserved" in found.fault
    assert len(found.steps) == 2


def test_long_bits_62_to_52_are_ignored_not_address_bits(memory: GuestMemory) -> None:
    # 4-level: bits 58:52 ignored, 62:59 protection key / ignored (SDM Table 4-19).
    _long_4kib(memory, P | RW, P | RW, P | RW, (0x7FF << 52) | 0x300000 | P | RW)
    found = walk(memory, LONG, GVA_1234)
    assert found.gpa == 0x300010


def test_long_nx_at_pml4e_propagates_to_the_leaf(memory: GuestMemory) -> None:
    _long_4kib(memory, NX | P | RW | US, P | RW | US, P | RW | US, 0x300000 | P | RW | US)
    found = walk(memory, LONG_NX, GVA_1234)
    assert found.gpa == 0x300010
    assert found.flags == PageFlags(writable=True, user=True, nx=True)


def test_long_nx_without_efer_nxe_is_reserved(memory: GuestMemory) -> None:
    _long_4kib(memory, NX | P | RW | US, P | RW | US, P | RW | US, 0x300000 | P | RW | US)
    found = walk(memory, LONG, GVA_1234)
    assert not found.mapped
    assert found.fault is not None and "PML4E" in found.fault and "reserved" in found.fault


@pytest.mark.parametrize("level", range(4), ids=["PML4E", "PDPTE", "PDE", "PTE"])
def test_long_user_needs_us_at_every_level(memory: GuestMemory, level: int) -> None:
    bits = [P | RW | US] * 4
    bits[level] = P | RW
    _long_4kib(memory, bits[0], bits[1], bits[2], 0x300000 | bits[3])
    found = walk(memory, LONG_NX, GVA_1234)
    assert found.gpa == 0x300010
    assert found.flags == PageFlags(writable=True, user=False, nx=False)


@pytest.mark.parametrize("level", range(4), ids=["PML4E", "PDPTE", "PDE", "PTE"])
def test_long_writable_needs_rw_at_every_level(memory: GuestMemory, level: int) -> None:
    bits = [P | RW | US] * 4
    bits[level] = P | US
    _long_4kib(memory, bits[0], bits[1], bits[2], 0x300000 | bits[3])
    found = walk(memory, LONG_NX, GVA_1234)
    assert found.gpa == 0x300010
    assert found.flags == PageFlags(writable=False, user=True, nx=False)


@pytest.mark.parametrize("level", range(4), ids=["PML4E", "PDPTE", "PDE", "PTE"])
def test_long_non_present_entry_faults_naming_its_level(memory: GuestMemory, level: int) -> None:
    bits = [P | RW] * 4
    bits[level] = RW
    _long_4kib(memory, bits[0], bits[1], bits[2], 0x300000 | bits[3])
    found = walk(memory, LONG, GVA_1234)
    name = ["PML4E", "PDPTE", "PDE", "PTE"][level]
    assert not found.mapped and found.gpa is None and found.flags is None
    assert found.fault is not None and name in found.fault and "not present" in found.fault
    assert len(found.steps) == level + 1
    assert found.steps[-1].level == name


def test_long_two_virtual_pages_alias_one_frame(memory: GuestMemory) -> None:
    _long_4kib(memory, P | RW, P | RW, P | RW, 0x300000 | P | RW)
    memory.write_u64(0x4000 + 8 * 5, 0x300000 | P)  # PT[5]: same frame, read-only
    first = walk(memory, LONG, GVA_1234)
    second = walk(memory, LONG, GVA_1234 + 0x1000)  # PT index 5
    # PT[4] and PT[5] -> frame 0x300000 => both 0x300010
    assert first.gpa == second.gpa == 0x300010
    assert first.flags is not None and first.flags.writable
    assert second.flags is not None and not second.flags.writable


# --- tables outside guest RAM -----------------------------------------------------------


def test_long_table_in_a_ram_hole_faults(holey_memory: GuestMemory) -> None:
    holey_memory.write_u64(0x1000, 0x2000 | P | RW)
    holey_memory.write_u64(0x2000, 0x180000 | P | RW)  # PD in the hole at 1.5 MiB
    found = walk(holey_memory, LONG, 0x3000)
    assert not found.mapped and found.gpa is None
    assert found.fault is not None and "outside guest RAM" in found.fault
    assert "0x180000" in found.fault
    assert [step.level for step in found.steps] == ["PML4E", "PDPTE"]


def test_long_cr3_in_a_ram_hole_faults(holey_memory: GuestMemory) -> None:
    regs = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x150000, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA)
    found = walk(holey_memory, LONG, 0x3000)  # sanity: the real PML4 at 0x1000 is empty
    assert found.fault is not None and "not present" in found.fault
    found = walk(holey_memory, regs, 0x3000)
    assert found.fault is not None and "outside guest RAM" in found.fault
    assert found.steps == ()
    assert list_mappings(holey_memory, regs) == []


def test_32bit_page_table_in_a_ram_hole_faults(holey_memory: GuestMemory) -> None:
    holey_memory.write_u32(0x1000 + 4 * 0x300, 0x180000 | P | RW)
    found = walk(holey_memory, BITS32, 0xC0345010)
    # PTE address = 0x180000 + 4 * 0x345 = 0x180D14
    assert found.fault is not None and "outside guest RAM" in found.fault
    assert "0x180d14" in found.fault
    assert [step.level for step in found.steps] == ["PDE"]


def test_pae_page_directory_in_a_ram_hole_faults(holey_memory: GuestMemory) -> None:
    holey_memory.write_u64(0x1020 + 8 * 3, 0x180000 | P)
    found = walk(holey_memory, PAE, 0xC0345010)
    # PDE address = 0x180000 + 8 * 1 = 0x180008
    assert found.fault is not None and "outside guest RAM" in found.fault
    assert "0x180008" in found.fault


# --- list_mappings and iter_leaf_walks --------------------------------------------------


def test_list_mappings_of_a_hand_built_long_mode_tree(memory: GuestMemory) -> None:
    memory.write_u64(0x1000 + 8 * 0, 0x2000 | P | RW)
    memory.write_u64(0x2000 + 8 * 0, 0x3000 | P | RW)
    memory.write_u64(0x3000 + 8 * 0, 0x000000 | P | RW | PS)  # gva 0 -> 2 MiB identity
    memory.write_u64(0x3000 + 8 * 1, 0x4000 | P | RW)  # gva 0x200000.. -> PT 0x4000
    memory.write_u64(0x3000 + 8 * 2, 0x400000 | (1 << 13) | P | RW | PS)  # reserved: not listed
    memory.write_u64(0x4000 + 8 * 0, 0x300000 | P | RW)  # gva 0x200000
    memory.write_u64(0x4000 + 8 * 1, 0x301000 | P | RW)  # gva 0x201000
    memory.write_u64(0x4000 + 8 * 2, 0x302000 | P | RW)  # gva 0x202000
    memory.write_u64(0x4000 + 8 * 3, NX | 0x303000 | P | RW)  # contiguous but NX
    memory.write_u64(0x4000 + 8 * 4, 0x350000 | P | RW)  # gva-contiguous, gpa jumps
    memory.write_u64(0x4000 + 8 * 5, 0x300000 | P | RW)  # alias of gva 0x200000
    memory.write_u64(0x4000 + 8 * 6, 0x360000 | RW)  # not present
    # High half: PML4[511] -> PDPT 0x5000, PDPT[511] -> PD 0x6000, PD[511] -> 2 MiB at 0x200000.
    # gva = 0xFFFF_FF80_0000_0000 + 511 * 1 GiB + 511 * 2 MiB = 0xFFFF_FFFF_FFE0_0000
    memory.write_u64(0x1000 + 8 * 511, 0x5000 | P | RW)
    memory.write_u64(0x5000 + 8 * 511, 0x6000 | P | RW)
    memory.write_u64(0x6000 + 8 * 511, 0x200000 | P | RW | PS)

    rw = PageFlags(writable=True, user=False, nx=False)
    rw_nx = PageFlags(writable=True, user=False, nx=True)
    assert list_mappings(memory, LONG_NX) == [
        Mapping(gva=0x0, gpa=0x0, size=0x200000, page_size=0x200000, flags=rw),
        Mapping(gva=0x200000, gpa=0x300000, size=0x3000, page_size=0x1000, flags=rw),
        Mapping(gva=0x203000, gpa=0x303000, size=0x1000, page_size=0x1000, flags=rw_nx),
        Mapping(gva=0x204000, gpa=0x350000, size=0x1000, page_size=0x1000, flags=rw),
        Mapping(gva=0x205000, gpa=0x300000, size=0x1000, page_size=0x1000, flags=rw),
        Mapping(
            gva=0xFFFF_FFFF_FFE0_0000, gpa=0x200000, size=0x200000, page_size=0x200000, flags=rw
        ),
    ]


def test_iter_leaf_walks_agrees_with_walk(memory: GuestMemory) -> None:
    _long_4kib(memory, P | RW | US, P | RW | US, P | RW | US, 0x300000 | P | RW | US)
    memory.write_u64(0x4000 + 8 * 5, 0x300000 | P | RW | US)
    found = list(iter_leaf_walks(memory, LONG))
    # PT[4] and PT[5] under PML4 1 / PDPT 2 / PD 3.
    assert [w.gva for w in found] == [0x0000_0080_8060_4000, 0x0000_0080_8060_5000]
    assert [w.gpa for w in found] == [0x300000, 0x300000]
    assert found[0] == walk(memory, LONG, 0x0000_0080_8060_4000)


def test_list_mappings_32bit_honours_cr4_pse(memory: GuestMemory) -> None:
    # The same directory as the two-readings test: PDE[0x300] = 0x1083, PT 0x1000.
    memory.write_u32(0x2000 + 4 * 0x300, 0x00001000 | P | RW | PS)
    memory.write_u32(0x1000 + 4 * 0x345, 0x300000 | P | RW)
    rw = PageFlags(writable=True, user=False, nx=False)
    with_pse = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x2000, cr4=CR4_PSE, efer=0)
    without_pse = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=0x2000, cr4=0, efer=0)
    assert list_mappings(memory, with_pse) == [
        Mapping(gva=0xC0000000, gpa=0x0, size=4 * MIB, page_size=4 * MIB, flags=rw)
    ]
    assert list_mappings(memory, without_pse) == [
        Mapping(gva=0xC0345000, gpa=0x300000, size=0x1000, page_size=0x1000, flags=rw)
    ]


def test_list_mappings_pae(memory: GuestMemory) -> None:
    _pae_4kib(memory, 0x300000 | P | RW | US)
    memory.write_u64(0x5000 + 8 * 0x146, 0x301000 | P | RW | US)  # next page, next frame
    rw_user = PageFlags(writable=True, user=True, nx=False)
    assert list_mappings(memory, PAE) == [
        Mapping(gva=0xC0345000, gpa=0x300000, size=0x2000, page_size=0x1000, flags=rw_user)
    ]


def test_list_mappings_is_empty_without_paging(memory: GuestMemory) -> None:
    memory.write_u64(0x1000, 0x2000 | P | RW)
    regs = PagingRegisters(cr0=CR0_PE, cr3=0x1000, cr4=CR4_PAE, efer=0)
    assert list_mappings(memory, regs) == []


# --- cross-check against the pyvmm identity-map builders --------------------------------


def test_builder_64bit_identity_map_is_one_4gib_mapping(memory: GuestMemory) -> None:
    cr3 = build_identity_map_64(memory, 0x10000)
    regs = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=cr3, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA)
    rw = PageFlags(writable=True, user=False, nx=False)
    assert list_mappings(memory, regs) == [
        Mapping(gva=0, gpa=0, size=4 * GIB, page_size=2 * MIB, flags=rw)
    ]
    assert walk(memory, regs, 0xFEE00010).gpa == 0xFEE00010
    assert walk(memory, regs, 0x1_0000_0000).fault is not None  # PDPT[4] is empty


def test_builder_32bit_identity_map_is_one_4gib_mapping(memory: GuestMemory) -> None:
    cr3 = build_identity_map_32(memory, 0x1000)
    regs = PagingRegisters(cr0=CR0_PG | CR0_PE, cr3=cr3, cr4=CR4_PSE, efer=0)
    rw = PageFlags(writable=True, user=False, nx=False)
    assert list_mappings(memory, regs) == [
        Mapping(gva=0, gpa=0, size=4 * GIB, page_size=4 * MIB, flags=rw)
    ]
    assert walk(memory, regs, 0xFEE00010).gpa == 0xFEE00010


# --- PageFlags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (PageFlags(writable=True, user=True, nx=True), "rw- user"),
        (PageFlags(writable=False, user=False, nx=False), "r-x kernel"),
        (PageFlags(writable=True, user=False, nx=False), "rwx kernel"),
        (PageFlags(writable=False, user=True, nx=True), "r-- user"),
    ],
)
def test_page_flags_str(flags: PageFlags, text: str) -> None:
    assert str(flags) == text
