from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyvmm.arch.x86_64 import layout
from pyvmm.errors import GuestMemoryError
from pyvmm.memory.addr import GuestPhysAddr, checked_add
from pyvmm.memory.guest_memory import GuestMemory

MIB = 1 << 20


@pytest.fixture
def split_memory() -> Iterator[GuestMemory]:
    """1 MiB below 1 MiB... and 1 MiB at 4 GiB, like RAM around the PCI hole."""
    memory = GuestMemory.from_ranges([(0, MIB), (4 << 30, MIB)])
    yield memory
    memory.close()


def test_read_write_round_trip_in_both_slots(split_memory: GuestMemory) -> None:
    split_memory.write(0x1234, b"hello")
    split_memory.write_u64((4 << 30) + 8, 0x1122334455667788)
    assert split_memory.read(0x1234, 5) == b"hello"
    assert split_memory.read_u32((4 << 30) + 8) == 0x55667788
    assert split_memory.read_u16(0x1234) == 0x6568


def test_host_addresses_follow_the_backing_mapping(split_memory: GuestMemory) -> None:
    base = split_memory.mapping.hva
    assert split_memory.host_address(0) == base
    assert split_memory.host_address(0x10) == base + 0x10
    assert split_memory.host_address(4 << 30) == base + MIB


@pytest.mark.parametrize(
    ("gpa", "size"),
    [(MIB, 1), (MIB - 2, 4), ((4 << 30) - 1, 2), ((4 << 30) + MIB, 1), (-1, 1), (3 << 30, 8)],
)
def test_out_of_bounds_accesses_name_the_address(
    split_memory: GuestMemory, gpa: int, size: int
) -> None:
    with pytest.raises(GuestMemoryError) as raised:
        split_memory.read(gpa, size)
    assert raised.value.gpa == gpa
    assert f"0x{gpa:x}" in str(raised.value)
    with pytest.raises(GuestMemoryError):
        split_memory.write(gpa, b"\0" * size)


def test_closed_memory_refuses_access() -> None:
    memory = GuestMemory.from_ranges([(0, MIB)])
    memory.close()
    with pytest.raises(GuestMemoryError, match="closed"):
        memory.read(0, 1)


def test_regions_are_slots_in_address_order(split_memory: GuestMemory) -> None:
    assert [(region.slot, region.gpa, region.size) for region in split_memory] == [
        (0, 0, MIB),
        (1, 4 << 30, MIB),
    ]
    assert split_memory.size == 2 * MIB


def test_pc_layout_leaves_the_hole_unmapped() -> None:
    assert layout.ram_ranges(64 * MIB) == [(0, 64 * MIB)]
    below = layout.MMIO_GAP_START
    assert layout.ram_ranges(4 << 30) == [(0, below), (4 << 30, (4 << 30) - below)]


def test_checked_add_refuses_to_wrap() -> None:
    assert checked_add(GuestPhysAddr(0x1000), 0x10) == 0x1010
    with pytest.raises(OverflowError):
        checked_add(GuestPhysAddr((1 << 64) - 1), 2)
