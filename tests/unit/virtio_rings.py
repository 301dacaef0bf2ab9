"""The driver's side of virtio for the unit tests: fake RAM, split rings and the MMIO probe.

`DriverRing` lays out and fills one split virtqueue the way Linux's
drivers/virtio/virtio_ring.c does (`virtqueue_add_split`: readable buffers
first, descriptors taken from a free list that starts 0, 1, 2..., one
indirect table for the whole chain when asked; `virtqueue_get_buf`).
`MmioDriver` makes the register accesses of drivers/virtio/virtio_mmio.c and
virtio.c (`virtio_mmio_probe`, `virtio_dev_probe`, `vm_setup_vq`,
`vm_interrupt`). Hostile tests write descriptors and indexes by hand with
`write_desc`, `publish` and `set_avail_idx`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyvmm.devices.virtio.device import (
    ACKNOWLEDGE,
    DRIVER,
    DRIVER_OK,
    FEATURES_OK,
    VIRTIO_F_EVENT_IDX,
    feature,
)
from pyvmm.devices.virtio.mmio import (
    MAGIC_VALUE,
    VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DEVICE_ID,
    VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL,
    VIRTIO_MMIO_INTERRUPT_ACK,
    VIRTIO_MMIO_INTERRUPT_STATUS,
    VIRTIO_MMIO_MAGIC_VALUE,
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_DESC_HIGH,
    VIRTIO_MMIO_QUEUE_DESC_LOW,
    VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_QUEUE_USED_HIGH,
    VIRTIO_MMIO_QUEUE_USED_LOW,
    VIRTIO_MMIO_STATUS,
    VIRTIO_MMIO_VENDOR_ID,
    VIRTIO_MMIO_VERSION,
    VirtioMmio,
)
from pyvmm.devices.virtio.queue import (
    DESCRIPTOR,
    USED_ELEM,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
)
from pyvmm.errors import GuestMemoryError
from pyvmm.memory.addr import align_up

PAGE = 0x1000
LOW_RAM_END = 0x20_0000
HIGH_RAM = 0x1_0000_0000
# 2 MiB at 0, a hole, 8 GiB at 4 GiB (sparse: only pages written take room).
RAM_RANGES = ((0, LOW_RAM_END), (HIGH_RAM, 0x2_0000_0000))
U16 = struct.Struct("<H")


class FakeMemory:
    """Guest RAM over sparse pages, with holes between `ranges` (the GuestRam interface)."""

    def __init__(self, ranges: Sequence[tuple[int, int]] = RAM_RANGES) -> None:
        self.ranges = tuple(ranges)
        self._pages: dict[int, bytearray] = {}

    def contains(self, gpa: int, size: int = 1) -> bool:
        size = max(size, 1)
        return any(start <= gpa and gpa + size <= start + length for start, length in self.ranges)

    def _pieces(self, gpa: int, size: int) -> list[tuple[bytearray, int, int]]:
        if gpa < 0 or size < 0 or not self.contains(gpa, size):
            raise GuestMemoryError(gpa, size)
        pieces = []
        while size:
            page, offset = divmod(gpa, PAGE)
            take = min(size, PAGE - offset)
            pieces.append((self._pages.setdefault(page, bytearray(PAGE)), offset, take))
            gpa, size = gpa + take, size - take
        return pieces

    def read(self, gpa: int, size: int) -> bytes:
        return b"".join(bytes(page[at : at + n]) for page, at, n in self._pieces(gpa, size))

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        done = 0
        for page, at, n in self._pieces(gpa, len(data)):
            page[at : at + n] = data[done : done + n]
            done += n


class Allocator:
    """Hands out guest memory, never freed (plenty for a test)."""

    def __init__(self, start: int = PAGE, end: int = LOW_RAM_END) -> None:
        self.next = start
        self.end = end

    def __call__(self, size: int, alignment: int = 16) -> int:
        gpa = align_up(self.next, alignment)
        assert gpa + size <= self.end, "test RAM exhausted"
        self.next = gpa + size
        return gpa


@dataclass
class Request:
    """A chain the driver made available: its head and where the device may write."""

    head: int
    writable: list[tuple[int, int]] = field(default_factory=list)


class DriverRing:
    """One split virtqueue, laid out in `memory` and filled as Linux's virtio_ring.c does."""

    def __init__(
        self, memory: FakeMemory, alloc: Allocator, size: int, *, event_idx: bool = False
    ) -> None:
        self.memory = memory
        self.alloc = alloc
        self.size = size
        event = 2 if event_idx else 0
        self.desc = alloc(16 * size, 16)
        self.avail = alloc(4 + 2 * size + event, 2)
        self.used = alloc(4 + 8 * size + event, PAGE)  # vring_init puts it on its own page
        for gpa, length in (
            (self.desc, 16 * size),
            (self.avail, 4 + 2 * size + event),
            (self.used, 4 + 8 * size + event),
        ):
            memory.write(gpa, bytes(length))  # the rings start zeroed
        self.free = list(range(size))
        self.avail_idx = 0
        self.last_used = 0
        self._descriptors: dict[int, list[int]] = {}

    def buffer(self, data: bytes) -> int:
        gpa = self.alloc(max(len(data), 1))
        self.memory.write(gpa, data)
        return gpa

    def add(
        self,
        readable: Sequence[bytes] = (),
        writable: Sequence[int] = (),
        *,
        indirect: bool = False,
    ) -> Request:
        """Make `readable` buffers then `writable` sizes available as one chain (add_split)."""
        buffers = [(self.buffer(data), len(data), 0) for data in readable]
        request = Request(0)
        for size in writable:
            gpa = self.buffer(b"\xaa" * size)  # a pattern, to see what the device wrote
            buffers.append((gpa, size, VIRTQ_DESC_F_WRITE))
            request.writable.append((gpa, size))
        if indirect:
            table = self.alloc(16 * len(buffers), 16)
            self._chain(table, list(range(len(buffers))), buffers)
            request.head = self.free.pop(0)
            self.write_desc(request.head, table, 16 * len(buffers), VIRTQ_DESC_F_INDIRECT)
            self._descriptors[request.head] = [request.head]
        else:
            indexes = [self.free.pop(0) for _ in buffers]
            self._chain(self.desc, indexes, buffers)
            request.head = indexes[0]
            self._descriptors[request.head] = indexes
        self.publish(request.head)
        return request

    def _chain(self, table: int, indexes: list[int], buffers: list[tuple[int, int, int]]) -> None:
        for position, (index, (gpa, size, flags)) in enumerate(zip(indexes, buffers, strict=True)):
            last = position == len(indexes) - 1
            next_index = 0 if last else indexes[position + 1]
            flags |= 0 if last else VIRTQ_DESC_F_NEXT
            self.write_desc(index, gpa, size, flags, next_index, table=table)

    def write_desc(
        self,
        index: int,
        gpa: int,
        length: int,
        flags: int = 0,
        next_index: int = 0,
        *,
        table: int = -1,
    ) -> None:
        base = self.desc if table < 0 else table
        self.memory.write(base + 16 * index, DESCRIPTOR.pack(gpa, length, flags, next_index))

    def publish(self, head: int) -> None:
        """avail->ring[idx % size] = head, then idx + 1, as virtqueue_add_split does."""
        self.memory.write(self.avail + 4 + 2 * (self.avail_idx % self.size), U16.pack(head))
        self.set_avail_idx(self.avail_idx + 1)

    def set_avail_idx(self, value: int) -> None:
        self.avail_idx = value & 0xFFFF
        self.memory.write(self.avail + 2, U16.pack(self.avail_idx))

    def set_avail_flags(self, flags: int) -> None:
        self.memory.write(self.avail, U16.pack(flags))

    def set_used_event(self, value: int) -> None:
        self.memory.write(self.avail + 4 + 2 * self.size, U16.pack(value))

    @property
    def avail_event(self) -> int:
        return int(U16.unpack(self.memory.read(self.used + 4 + 8 * self.size, 2))[0])

    @property
    def used_idx(self) -> int:
        return int(U16.unpack(self.memory.read(self.used + 2, 2))[0])

    def get_used(self) -> list[tuple[int, int]]:
        """(head, len) of each chain used since the last call; frees their descriptors."""
        found = []
        while self.last_used != self.used_idx:
            slot = self.used + 4 + 8 * (self.last_used % self.size)
            head, length = USED_ELEM.unpack(self.memory.read(slot, 8))
            self.free.extend(self._descriptors.pop(head, []))
            found.append((head, length))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return found

    def written(self, request: Request, length: int) -> bytes:
        """The first `length` bytes the device wrote into the request's writable buffers."""
        data = b"".join(self.memory.read(gpa, size) for gpa, size in request.writable)
        return data[:length]


class RecordingIrq:
    """An IrqLine that remembers every level it was driven to."""

    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, high: bool) -> None:
        self.levels.append(high)

    @property
    def high(self) -> bool:
        return bool(self.levels) and self.levels[-1]


class MmioDriver:
    """Linux's virtio_mmio driver, as register accesses on a VirtioMmio."""

    def __init__(self, transport: VirtioMmio, memory: FakeMemory) -> None:
        self.transport = transport
        self.memory = memory
        self.alloc = Allocator()
        self.features = 0
        self.rings: dict[int, DriverRing] = {}

    def read(self, offset: int) -> int:
        return self.transport.read(offset, 4)

    def write(self, offset: int, value: int) -> None:
        self.transport.write(offset, 4, value)

    def add_status(self, bit: int) -> None:
        """virtio_add_status: read the status, write it back with `bit`."""
        self.write(VIRTIO_MMIO_STATUS, self.read(VIRTIO_MMIO_STATUS) | bit)

    def probe(self, accept: int = (1 << 64) - 1) -> bool:
        """virtio_mmio_probe and virtio_dev_probe up to FEATURES_OK; True if the device kept it."""
        assert self.read(VIRTIO_MMIO_MAGIC_VALUE) == MAGIC_VALUE
        assert self.read(VIRTIO_MMIO_VERSION) == 2
        assert self.read(VIRTIO_MMIO_DEVICE_ID) != 0
        self.read(VIRTIO_MMIO_VENDOR_ID)
        self.write(VIRTIO_MMIO_STATUS, 0)  # vm_reset
        self.add_status(ACKNOWLEDGE)
        self.add_status(DRIVER)
        # vm_get_features: the high word first.
        self.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1)
        offered = self.read(VIRTIO_MMIO_DEVICE_FEATURES) << 32
        self.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0)
        offered |= self.read(VIRTIO_MMIO_DEVICE_FEATURES)
        self.features = offered & accept
        # vm_finalize_features: the high word first again.
        self.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1)
        self.write(VIRTIO_MMIO_DRIVER_FEATURES, self.features >> 32)
        self.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0)
        self.write(VIRTIO_MMIO_DRIVER_FEATURES, self.features & 0xFFFFFFFF)
        self.add_status(FEATURES_OK)
        return bool(self.read(VIRTIO_MMIO_STATUS) & FEATURES_OK)

    def setup_queue(self, index: int) -> DriverRing:
        """vm_setup_vq: a ring of QueueNumMax entries, its three addresses, QueueReady."""
        self.write(VIRTIO_MMIO_QUEUE_SEL, index)
        assert self.read(VIRTIO_MMIO_QUEUE_READY) == 0
        size = self.read(VIRTIO_MMIO_QUEUE_NUM_MAX)
        assert size != 0
        event_idx = bool(self.features & feature(VIRTIO_F_EVENT_IDX))
        ring = DriverRing(self.memory, self.alloc, size, event_idx=event_idx)
        self.write(VIRTIO_MMIO_QUEUE_NUM, size)
        for low, high, gpa in (
            (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, ring.desc),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, ring.avail),
            (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, ring.used),
        ):
            self.write(low, gpa & 0xFFFFFFFF)
            self.write(high, gpa >> 32)
        self.write(VIRTIO_MMIO_QUEUE_READY, 1)
        assert self.read(VIRTIO_MMIO_QUEUE_READY) == 1
        self.rings[index] = ring
        return ring

    def start(self, accept: int = (1 << 64) - 1, queues: int | None = None) -> list[DriverRing]:
        """Probe, set up `queues` queues (every queue by default) and set DRIVER_OK."""
        assert self.probe(accept)
        count = len(self.transport.queues) if queues is None else queues
        rings = [self.setup_queue(index) for index in range(count)]
        self.add_status(DRIVER_OK)
        return rings

    def kick(self, index: int) -> None:
        self.write(VIRTIO_MMIO_QUEUE_NOTIFY, index)

    def take_interrupt(self) -> int:
        """vm_interrupt: read InterruptStatus and acknowledge it all."""
        status = self.read(VIRTIO_MMIO_INTERRUPT_STATUS)
        self.write(VIRTIO_MMIO_INTERRUPT_ACK, status)
        return status
