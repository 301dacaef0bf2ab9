"""Guest-physical memory: regions (KVM slots) over one host mapping.

A region maps a guest-physical range onto an offset in the host mapping.
Every access names guest-physical addresses and is bounds-checked against the
regions; an access that straddles two regions or touches a hole raises
GuestMemoryError naming the address.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Iterator, Sequence

from pyvmm.closing import ClosesOnExit
from pyvmm.errors import GuestMemoryError
from pyvmm.memory.addr import GuestPhysAddr
from pyvmm.memory.host_mapping import HostMapping


class GuestRegion:
    """One contiguous guest-physical range, backed at `host_offset` in the mapping (read-only)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("gpa", "host_offset", "size", "slot")

    def __init__(self, slot: int, gpa: GuestPhysAddr, size: int, host_offset: int) -> None:
        self.slot = slot
        self.gpa = gpa
        self.size = size
        self.host_offset = host_offset

    @property
    def end(self) -> GuestPhysAddr:
        return GuestPhysAddr(self.gpa + self.size)

    def contains(self, gpa: int, size: int = 1) -> bool:
        return self.gpa <= gpa and gpa + size <= self.gpa + self.size


class GuestMemory(ClosesOnExit):
    """Guest RAM: a list of non-overlapping regions over one HostMapping."""

    def __init__(self, mapping: HostMapping, regions: Sequence[GuestRegion]) -> None:
        ordered = sorted(regions, key=lambda region: region.gpa)
        for previous, current in itertools.pairwise(ordered):
            if current.gpa < previous.end:
                raise ValueError(f"regions at 0x{previous.gpa:x} and 0x{current.gpa:x} overlap")
        for region in ordered:
            if region.host_offset < 0 or region.host_offset + region.size > mapping.size:
                raise ValueError(f"region at 0x{region.gpa:x} lies outside the host mapping")
        self.mapping = mapping
        self.regions: tuple[GuestRegion, ...] = tuple(ordered)
        self._starts = [region.gpa for region in ordered]

    @classmethod
    def from_ranges(cls, ranges: Sequence[tuple[int, int]]) -> GuestMemory:
        """Back the (gpa, size) ranges with one fresh mapping, slots numbered in order."""
        total = sum(size for _, size in ranges)
        mapping = HostMapping(total)
        regions = []
        offset = 0
        for slot, (gpa, size) in enumerate(ranges):
            regions.append(GuestRegion(slot, GuestPhysAddr(gpa), size, offset))
            offset += size
        try:
            return cls(mapping, regions)
        except BaseException:
            mapping.close()
            raise

    @property
    def size(self) -> int:
        """Bytes of guest RAM (holes excluded)."""
        return sum(region.size for region in self.regions)

    def __iter__(self) -> Iterator[GuestRegion]:
        return iter(self.regions)

    def find_region(self, gpa: int, size: int = 1) -> GuestRegion | None:
        """The region holding all of [gpa, gpa + size), or None."""
        index = bisect.bisect_right(self._starts, gpa) - 1
        if index < 0:
            return None
        region = self.regions[index]
        return region if region.contains(gpa, size) else None

    def contains(self, gpa: int, size: int = 1) -> bool:
        return size >= 0 and self.find_region(gpa, max(size, 1)) is not None

    def _host_offset(self, gpa: int, size: int) -> int:
        if self.mapping.closed:
            raise GuestMemoryError(gpa, size, "is not accessible: guest memory is closed")
        if gpa < 0 or size < 0:
            raise GuestMemoryError(gpa, size)
        region = self.find_region(gpa, max(size, 1))
        if region is None:
            raise GuestMemoryError(gpa, size)
        return region.host_offset + (gpa - region.gpa)

    def host_address(self, gpa: int) -> int:
        """The host virtual address (HVA) where guest-physical `gpa` lives."""
        return self.mapping.hva + self._host_offset(gpa, 1)

    def read(self, gpa: int, size: int) -> bytes:
        offset = self._host_offset(gpa, size)
        return bytes(self.mapping.view[offset : offset + size])

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        offset = self._host_offset(gpa, size)
        self.mapping.view[offset : offset + size] = data

    def discard(self, gpa: int, size: int) -> None:
        """Give the guest RAM [gpa, gpa + size) back to the host: it reads zeros afterwards.

        Whole 4 KiB pages inside one RAM region (a balloon's pages); raises
        GuestMemoryError for anything else, so that a guest's request never
        reaches host memory outside guest RAM.
        """
        if (gpa | size) % 4096:
            raise GuestMemoryError(gpa, size, "is not whole 4 KiB pages")
        offset = self._host_offset(gpa, size)
        self.mapping.discard(offset, size)

    def fill(self, gpa: int, size: int, byte: int = 0) -> None:
        self.write(gpa, bytes([byte]) * size)

    def read_u8(self, gpa: int) -> int:
        return self.read(gpa, 1)[0]

    def read_u16(self, gpa: int) -> int:
        return int(struct.unpack("<H", self.read(gpa, 2))[0])

    def read_u32(self, gpa: int) -> int:
        return int(struct.unpack("<I", self.read(gpa, 4))[0])

    def read_u64(self, gpa: int) -> int:
        return int(struct.unpack("<Q", self.read(gpa, 8))[0])

    def write_u8(self, gpa: int, value: int) -> None:
        self.write(gpa, struct.pack("<B", value))

    def write_u16(self, gpa: int, value: int) -> None:
        self.write(gpa, struct.pack("<H", value))

    def write_u32(self, gpa: int, value: int) -> None:
        self.write(gpa, struct.pack("<I", value))

    def write_u64(self, gpa: int, value: int) -> None:
        self.write(gpa, struct.pack("<Q", value))

    def close(self) -> None:
        self.mapping.close()
