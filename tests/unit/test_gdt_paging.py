from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyvmm.arch.x86_64.gdt import (
    CODE_SELECTOR,
    DATA_SELECTOR,
    decode_descriptor,
    encode_descriptor,
    flat_gdt,
    gdt_bytes,
)
from pyvmm.arch.x86_64.paging import (
    ENTRY_PAGE_SIZE,
    ENTRY_PRESENT,
    ENTRY_WRITABLE,
    PAGE_SIZE,
    build_identity_map_32,
    build_identity_map_64,
)
from pyvmm.memory.guest_memory import GuestMemory


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    memory = GuestMemory.from_ranges([(0, 2 << 20)])
    yield memory
    memory.close()


def test_flat_32bit_descriptors_match_the_well_known_values() -> None:
    # The values every boot loader tutorial writes: 0x00cf9a000000ffff, 0x00cf92000000ffff.
    null, code, data = flat_gdt(long_mode=False)
    assert (null, code, data) == (0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)


def test_long_mode_code_descriptor_sets_l_and_clears_d() -> None:
    code = flat_gdt(long_mode=True)[CODE_SELECTOR >> 3]
    assert code == 0x00AF9A000000FFFF
    segment = decode_descriptor(code, CODE_SELECTOR)
    assert (segment.long, segment.db, segment.g) == (1, 0, 1)


def test_decoded_segments_are_flat_4gib() -> None:
    entries = flat_gdt(long_mode=False)
    code = decode_descriptor(entries[1], CODE_SELECTOR)
    data = decode_descriptor(entries[2], DATA_SELECTOR)
    for segment in (code, data):
        assert (segment.base, segment.limit, segment.present, segment.s) == (0, 0xFFFFFFFF, 1, 1)
    assert code.type == 0xA and data.type == 0x2
    assert code.selector == 0x08 and data.selector == 0x10


def test_descriptor_round_trip_with_base_and_byte_limit() -> None:
    raw = encode_descriptor(0x12345678, 0xABCDE, 0x92, 0x4)
    segment = decode_descriptor(raw, 0x18)
    assert (segment.base, segment.limit, segment.g, segment.db) == (0x12345678, 0xABCDE, 0, 1)


def test_gdt_bytes_are_little_endian_quadwords() -> None:
    assert gdt_bytes([0x0102030405060708]) == bytes([8, 7, 6, 5, 4, 3, 2, 1])


def test_32bit_identity_map_uses_4mib_pages(memory: GuestMemory) -> None:
    cr3 = build_identity_map_32(memory, 0x1000)
    assert cr3 == 0x1000
    flags = ENTRY_PRESENT | ENTRY_WRITABLE | ENTRY_PAGE_SIZE
    assert memory.read_u32(0x1000) == flags
    assert memory.read_u32(0x1000 + 4 * 1) == (4 << 20) | flags
    # 0xD0000000 (MMIO hole) is directory entry 0x340, mapped to itself.
    assert memory.read_u32(0x1000 + 4 * 0x340) == 0xD0000000 | flags
    assert memory.read_u32(0x1000 + 4 * 1023) == 0xFFC00000 | flags


def _walk_64(memory: GuestMemory, cr3: int, gva: int) -> int:
    """A minimal 4-level walk to check the builder (the full walker is tested elsewhere)."""
    pml4e = memory.read_u64(cr3 + 8 * ((gva >> 39) & 511))
    pdpte = memory.read_u64((pml4e & ~0xFFF) + 8 * ((gva >> 30) & 511))
    pde = memory.read_u64((pdpte & ~0xFFF) + 8 * ((gva >> 21) & 511))
    assert pml4e & pdpte & pde & ENTRY_PRESENT
    assert pde & ENTRY_PAGE_SIZE
    return (pde & ~0x1FFFFF & ((1 << 52) - 1)) | (gva & 0x1FFFFF)


@pytest.mark.parametrize(
    "gva", [0, 0x7C00, 0x100000, 0x3FFFFFFF, 0x40000000, 0xD0000010, 0xFFFFFFFF]
)
def test_64bit_identity_map_covers_4gib(memory: GuestMemory, gva: int) -> None:
    cr3 = build_identity_map_64(memory, 0x1000)
    assert _walk_64(memory, cr3, gva) == gva


def test_64bit_tables_are_consecutive_pages(memory: GuestMemory) -> None:
    build_identity_map_64(memory, 0x1000)
    assert memory.read_u64(0x1000) & ~0xFFF == 0x1000 + PAGE_SIZE
    assert memory.read_u64(0x1000 + 8) == 0  # only the first PML4 entry is used
    assert memory.read_u64(0x2000 + 8 * 4) == 0  # four PDPT entries = 4 GiB


def test_unaligned_tables_are_refused(memory: GuestMemory) -> None:
    with pytest.raises(ValueError):
        build_identity_map_64(memory, 0x1008)
    with pytest.raises(ValueError):
        build_identity_map_32(memory, 0x1800)


def test_user_mode_gdt_has_dpl3_segments_and_a_tss() -> None:
    from pyvmm.arch.x86_64.gdt import (
        TSS_SELECTOR,
        TSS_WITH_BITMAP_SIZE,
        USER_CODE_SELECTOR,
        USER_DATA_SELECTOR,
        user_mode_gdt,
    )

    entries = user_mode_gdt(0x1_2345_7000)
    assert len(entries) == 7  # null, kernel code/data, user data/code, 16-byte TSS
    code = decode_descriptor(entries[USER_CODE_SELECTOR >> 3], USER_CODE_SELECTOR)
    data = decode_descriptor(entries[USER_DATA_SELECTOR >> 3], USER_DATA_SELECTOR)
    assert (code.dpl, code.long, code.db, code.type) == (3, 1, 0, 0xA)
    assert (data.dpl, data.type) == (3, 0x2)
    tss = decode_descriptor(entries[TSS_SELECTOR >> 3], TSS_SELECTOR)
    assert (tss.s, tss.type, tss.present, tss.dpl) == (0, 0xB, 1, 0)
    assert tss.limit == TSS_WITH_BITMAP_SIZE - 1
    # The upper half of a 64-bit system descriptor holds base bits 63:32.
    assert tss.base | entries[(TSS_SELECTOR >> 3) + 1] << 32 == 0x1_2345_7000


def test_tss_allows_every_port() -> None:
    from pyvmm.arch.x86_64.gdt import TSS_SIZE, tss_bytes

    tss = tss_bytes(rsp0=0x78000)
    assert int.from_bytes(tss[4:12], "little") == 0x78000  # RSP0
    assert int.from_bytes(tss[102:104], "little") == TSS_SIZE  # bitmap right after the TSS
    assert tss[TSS_SIZE:-1] == bytes(8192) and tss[-1] == 0xFF  # 0 = allowed; terminator


def test_user_identity_map_sets_us_at_every_level(memory: GuestMemory) -> None:
    build_identity_map_64(memory, 0x1000, user=True)
    for gpa in (0x1000, 0x2000, 0x3000):
        assert memory.read_u64(gpa) & 0b100


def test_tables_built_elsewhere_fill_exactly_the_reserved_sizes(memory: GuestMemory) -> None:
    """pyvmm may move its tables (placement.py): they fill what layout reserves, no more."""
    from pyvmm.arch.x86_64 import layout
    from pyvmm.arch.x86_64.gdt import user_mode_gdt

    memory.fill(0, 2 << 20, 0xAA)
    base = 0x12_3000
    assert build_identity_map_64(memory, base) == base
    size = layout.LONG_MODE_TABLES_SIZE
    assert memory.read(base + size, 16) == b"\xaa" * 16
    assert memory.read(base + size - 8, 8) != b"\xaa" * 8  # the last PD's last entry
    build_identity_map_32(memory, 0x18_0000)
    end = 0x18_0000 + layout.PAGE_DIRECTORY_32_SIZE
    assert memory.read(end, 16) == b"\xaa" * 16 and memory.read(end - 4, 4) != b"\xaa" * 4
    assert 8 * len(flat_gdt(long_mode=True)) == layout.GDT_SIZE
    assert 8 * len(user_mode_gdt(0x9_1000)) == layout.USER_GDT_SIZE
