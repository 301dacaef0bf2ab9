"""HVA -> HPA through pagemap, and the report's split of mappings at RAM edges."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.page_walk import Mapping, PageFlags
from pyvmm.memory.guest_memory import GuestMemory
from pyvmm.memory.host_pagemap import HOST_PAGE_SIZE, host_frame
from pyvmm.observe.machine_map import describe_not_ram
from pyvmm.observe.memory_report import format_size, mapping_rows

MIB = 1 << 20


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    memory = GuestMemory.from_ranges([(0, 2 * MIB), (4 << 30, MIB)])
    yield memory
    memory.close()


def test_untouched_guest_page_is_not_resident(memory: GuestMemory) -> None:
    frame = host_frame(memory.host_address(0x10_0000))
    assert frame.hpa is None and frame.note is not None and "not resident" in frame.note


def test_touched_page_has_a_frame_or_a_clear_reason(memory: GuestMemory) -> None:
    memory.write(0x1234, b"x")
    frame = host_frame(memory.host_address(0x1234))
    if os.geteuid() == 0:
        assert frame.hpa is not None and frame.pfn
        assert frame.hpa % HOST_PAGE_SIZE == 0x234
        assert host_frame(memory.host_address(0x1234)) == frame  # stable
    else:
        assert frame.hpa is None and "CAP_SYS_ADMIN" in (frame.note or "")


def test_unreadable_pagemap_is_reported(tmp_path: Path) -> None:
    frame = host_frame(0x1000, str(tmp_path / "missing"))
    assert frame.hpa is None and "cannot read" in (frame.note or "")


def test_mapping_rows_split_at_the_edges_of_ram(memory: GuestMemory) -> None:
    flags = PageFlags(writable=True, user=False, nx=False)
    # 1 MiB .. 4 GiB + 2 MiB: RAM, then no RAM, then RAM again, then beyond RAM.
    mapping = Mapping(0x1_0010_0000, MIB, (4 << 30) + MIB, 2 * MIB, flags)
    rows = mapping_rows([mapping], memory)
    # Outside RAM, cut again where the machine map's ranges meet, each one named.
    assert [(row.gpa, row.size, row.hva is not None, row.where) for row in rows] == [
        (MIB, MIB, True, None),
        (2 * MIB, 0xD000_0000 - 2 * MIB, False, "not RAM: unmapped"),
        (0xD000_0000, (4 << 30) - 0xD000_0000, False, "not RAM: MMIO hole"),
        (4 << 30, MIB, True, None),
        ((4 << 30) + MIB, MIB, False, "not RAM: past its end"),
    ]
    assert rows[0].gva == 0x1_0010_0000
    assert rows[3].gva == 0x1_0010_0000 + (4 << 30) - MIB
    assert rows[3].hva == memory.host_address(4 << 30)
    assert rows[0].flags == "rwx kernel"


@pytest.mark.parametrize(
    ("gpa", "says"),
    [
        # 128 MiB of RAM: 0x40000000 is in no MMIO hole, it is past RAM below the hole.
        (0x4000_0000, "GPA 0x40000000 is not RAM: it lies in 0x8000000-0xcfffffff, where "
                      "there is no RAM (from the end of guest RAM to the MMIO hole)"),
        (0xFEE0_0000, "GPA 0xfee00000 is not RAM: it lies in the MMIO hole "
                      "0xd0000000-0xffffffff (PCI, devices)"),
        (0x2_0000_0000, "GPA 0x200000000 is not RAM: it lies in 0x100000000 and above, where "
                        "there is no RAM (guest RAM ends at 0x8000000)"),
    ],
)  # fmt: skip
def test_an_address_outside_ram_is_named_by_the_machine_map(gpa: int, says: str) -> None:
    with GuestMemory.from_ranges(layout.ram_ranges(128 * MIB)) as memory:
        assert describe_not_ram(memory, gpa) == says


@pytest.mark.parametrize(
    ("size", "text"), [(4096, "4 KiB"), (2 * MIB, "2 MiB"), (1 << 30, "1 GiB"), (1000, "1000 B")]
)
def test_sizes_read_at_a_glance(size: int, text: str) -> None:
    assert format_size(size) == text
