from __future__ import annotations

import pytest

from pyvmm.devices.bus import Bus
from pyvmm.errors import BusError, BusOverlap


class Recorder:
    def __init__(self) -> None:
        self.accesses: list[tuple[str, int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.accesses.append(("read", offset, size, 0))
        return 0x40 + offset

    def write(self, offset: int, size: int, value: int) -> None:
        self.accesses.append(("write", offset, size, value))


def test_device_sees_offsets_from_its_base() -> None:
    bus = Bus("pio")
    device = Recorder()
    bus.insert(device, 0x3F8, 8)
    assert bus.read(0x3FD, 1) == 0x45
    bus.write(0x3F8, 1, ord("A"))
    assert device.accesses == [("read", 5, 1, 0), ("write", 0, 1, 0x41)]


def test_edges_of_a_range() -> None:
    bus = Bus("pio")
    device = Recorder()
    bus.insert(device, 0x100, 0x10)
    assert bus.find(0xFF) is None
    assert bus.find(0x100) is not None and bus.find(0x10F) is not None
    assert bus.find(0x110) is None


def test_unmapped_reads_all_ones_and_is_counted() -> None:
    bus = Bus("pio")
    assert bus.read(0x2F0, 1) == 0xFF
    assert bus.read(0x2F0, 2) == 0xFFFF
    assert bus.read(0x2F0, 4) == 0xFFFFFFFF
    bus.write(0x2F0, 1, 0x12)
    assert (bus.unmapped_reads, bus.unmapped_writes) == (3, 1)


@pytest.mark.parametrize(("base", "length"), [(0x0F8, 9), (0x100, 1), (0x107, 1), (0x0, 0x1000)])
def test_overlap_is_rejected(base: int, length: int) -> None:
    bus = Bus("pio")
    bus.insert(Recorder(), 0x100, 8, "first")
    with pytest.raises(BusOverlap, match="overlaps first"):
        bus.insert(Recorder(), base, length, "second")


def test_adjacent_ranges_are_fine_and_dispatch_correctly() -> None:
    bus = Bus("mmio")
    low, high = Recorder(), Recorder()
    bus.insert(high, 0x2000, 0x1000)
    bus.insert(low, 0x1000, 0x1000)
    bus.write(0x1FFF, 4, 1)
    bus.write(0x2000, 4, 2)
    assert low.accesses == [("write", 0xFFF, 4, 1)]
    assert high.accesses == [("write", 0, 4, 2)]


@pytest.mark.parametrize(("base", "length"), [(0, 0), (0x10, -1), ((1 << 64) - 4, 8), (-1, 2)])
def test_empty_or_overflowing_ranges_are_rejected(base: int, length: int) -> None:
    with pytest.raises(BusError):
        Bus("mmio").insert(Recorder(), base, length)


def test_a_route_calls_the_device_as_read_and_write_do() -> None:
    bus = Bus("pio")
    device = Recorder()
    bus.insert(device, 0x3F8, 8)
    read, write, base = bus.route(0x3FD)
    assert base == 0x3F8 and bus.routes[0x3FD] == (read, write, base)
    assert read(0x3FD - base, 1) == 0x45
    write(0x3F8 - base, 1, 0x41)
    assert device.accesses == [("read", 5, 1, 0), ("write", 0, 1, 0x41)]


def test_an_unclaimed_route_is_the_floating_bus_and_is_counted() -> None:
    bus = Bus("pio")
    read, write, base = bus.route(0x2F0)
    assert (read(0x2F0 - base, 2), base) == (0xFFFF, 0)
    write(0x2F0 - base, 1, 7)
    assert (bus.unmapped_reads, bus.unmapped_writes) == (1, 1)


def test_inserting_a_device_forgets_the_routes_it_could_change() -> None:
    bus = Bus("pio")
    bus.route(0x2F0)
    device = Recorder()
    bus.insert(device, 0x2F0, 8)
    assert bus.routes == {}
    assert bus.route(0x2F1)[2] == 0x2F0


def test_the_route_cache_is_bounded() -> None:
    from pyvmm.devices.bus import ROUTE_CACHE_LIMIT

    bus = Bus("mmio")
    for address in range(ROUTE_CACHE_LIMIT + 10):
        bus.route(0xD000_0000 + address)
    assert len(bus.routes) <= ROUTE_CACHE_LIMIT


def test_a_read_answer_too_wide_for_its_size_names_the_device() -> None:
    bus = Bus("pio")
    bus.insert(Recorder(), 0x2F0, 8, "wide device")
    error = bus.read_too_wide(0x2F0, 1, 0x1FF)
    assert (
        str(error) == "pio: wide device answered 0x1ff to a 1-byte read at 0x2f0: more than 8 bits"
    )
