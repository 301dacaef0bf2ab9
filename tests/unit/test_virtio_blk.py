"""virtio-blk: requests as Linux's virtio_blk.c lays them out, against a backend in memory."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pyvmm.devices.virtio.blk import (
    SECTOR_SIZE,
    SEG_MAX,
    VIRTIO_BLK_F_BLK_SIZE,
    VIRTIO_BLK_F_DISCARD,
    VIRTIO_BLK_F_FLUSH,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    FileBackend,
    VirtioBlk,
)
from pyvmm.devices.virtio.device import DEVICE_NEEDS_RESET, VIRTIO_ID_BLOCK, feature
from pyvmm.devices.virtio.mmio import VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_STATUS, VirtioMmio
from pyvmm.devices.virtio.queue import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from tests.unit.virtio_rings import DriverRing, FakeMemory, MmioDriver, Request

DISK_SECTORS = 64


class MemoryBackend:
    """A BlockBackend over a bytearray, recording flushes and discards; can be made to fail."""

    def __init__(self, size: int = DISK_SECTORS * SECTOR_SIZE) -> None:
        self.data = bytearray(os.urandom(size))
        self.flushes = 0
        self.discards: list[tuple[int, int]] = []
        self.broken = False

    def pread(self, size: int, offset: int) -> bytes:
        if self.broken:
            raise OSError(5, "Input/output error")
        return bytes(self.data[offset : offset + size])

    def pwrite(self, data: bytes, offset: int) -> None:
        self.data[offset : offset + len(data)] = data

    def fsync(self) -> None:
        self.flushes += 1

    def size(self) -> int:
        return len(self.data)

    def discard(self, offset: int, size: int) -> None:
        self.discards.append((offset, size))


def header(request_type: int, sector: int = 0) -> bytes:
    return struct.pack("<IIQ", request_type, 0, sector)


class Disk:
    def __init__(
        self, *, read_only: bool = False, block_size: int | None = None, serial: bytes = b""
    ) -> None:
        self.backend = MemoryBackend()
        self.memory = FakeMemory()
        self.device = VirtioBlk(
            self.backend, read_only=read_only, block_size=block_size, serial=serial
        )
        self.transport = VirtioMmio(self.device, self.memory)
        self.driver = MmioDriver(self.transport, self.memory)
        self.ring: DriverRing = self.driver.start()[0]

    def submit(
        self, readable: list[bytes], data_in: int = 0, *, indirect: bool = True
    ) -> tuple[Request, int, int]:
        """virtblk_add_req: header (+ data out), then data in (+ status); (request, status, len)."""
        request = self.ring.add(readable, [data_in + 1] if data_in else [1], indirect=indirect)
        self.driver.kick(0)
        [(head, length)] = self.ring.get_used()
        assert head == request.head
        gpa, size = request.writable[-1]
        return request, self.memory.read(gpa + size - 1, 1)[0], length


def test_config_gives_capacity_in_sectors_and_the_offered_fields() -> None:
    disk = Disk(block_size=4096)
    assert disk.transport.read(0x008, 4) == VIRTIO_ID_BLOCK == 2
    assert disk.transport.read(VIRTIO_MMIO_CONFIG, 8) == DISK_SECTORS
    assert disk.transport.read(VIRTIO_MMIO_CONFIG + 12, 4) == SEG_MAX
    assert disk.transport.read(VIRTIO_MMIO_CONFIG + 20, 4) == 4096
    wanted = feature(VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_BLK_SIZE)
    assert disk.driver.features & wanted == wanted
    assert disk.driver.features & feature(VIRTIO_BLK_F_DISCARD)
    assert not disk.driver.features & feature(VIRTIO_BLK_F_RO)


@pytest.mark.parametrize("indirect", [True, False])
def test_read_sectors(indirect: bool) -> None:
    disk = Disk()
    request, status, length = disk.submit(
        [header(VIRTIO_BLK_T_IN, 3)], 2 * SECTOR_SIZE, indirect=indirect
    )
    assert status == VIRTIO_BLK_S_OK and length == 2 * SECTOR_SIZE + 1
    expected = disk.backend.data[3 * SECTOR_SIZE : 5 * SECTOR_SIZE]
    assert disk.ring.written(request, 2 * SECTOR_SIZE) == expected


def test_a_read_split_over_many_buffers_is_one_stream() -> None:
    disk = Disk()
    # Data in three pieces and the status byte on its own, as a scatter list may come.
    request = disk.ring.add([header(VIRTIO_BLK_T_IN, 1)], [100, 400, 12, 1])
    disk.driver.kick(0)
    assert disk.ring.get_used() == [(request.head, SECTOR_SIZE + 1)]
    assert disk.ring.written(request, SECTOR_SIZE) == disk.backend.data[512:1024]


def test_write_sectors_and_flush() -> None:
    disk = Disk()
    data = bytes(range(256)) * 4
    _, status, length = disk.submit([header(VIRTIO_BLK_T_OUT, 10), data[:300], data[300:]])
    assert (status, length) == (VIRTIO_BLK_S_OK, 1)
    assert disk.backend.data[10 * SECTOR_SIZE : 12 * SECTOR_SIZE] == data
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_FLUSH)])
    assert status == VIRTIO_BLK_S_OK and disk.backend.flushes == 1


def test_get_id_returns_the_nul_padded_serial() -> None:
    disk = Disk(serial=b"pyvmm-disk")
    request, status, length = disk.submit([header(VIRTIO_BLK_T_GET_ID)], 20)
    assert (status, length) == (VIRTIO_BLK_S_OK, 21)
    assert disk.ring.written(request, 20) == b"pyvmm-disk".ljust(20, b"\0")


def test_discard_passes_the_ranges_to_the_backend() -> None:
    disk = Disk()
    segment = struct.pack("<QII", 8, 4, 0)
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_DISCARD), segment])
    assert status == VIRTIO_BLK_S_OK
    assert disk.backend.discards == [(8 * SECTOR_SIZE, 4 * SECTOR_SIZE)]


@pytest.mark.parametrize(
    ("segments", "status"),
    [
        (struct.pack("<QII", 8, 4, 1), VIRTIO_BLK_S_UNSUPP),  # unmap on a discard (§5.2.6.2)
        (struct.pack("<QII", DISK_SECTORS - 1, 4, 0), VIRTIO_BLK_S_IOERR),  # past the end
        (struct.pack("<QII", 0, 1, 0) * 2, VIRTIO_BLK_S_IOERR),  # more than max_discard_seg
        (b"\0" * 10, VIRTIO_BLK_S_IOERR),  # not whole segments
    ],
)
def test_bad_discards_fail(segments: bytes, status: int) -> None:
    disk = Disk()
    _, got, _ = disk.submit([header(VIRTIO_BLK_T_DISCARD), segments])
    assert got == status and disk.backend.discards == []


@pytest.mark.parametrize(
    ("readable", "data_in", "why"),
    [
        ([header(VIRTIO_BLK_T_IN, DISK_SECTORS - 1)], 2 * SECTOR_SIZE, "past the end"),
        ([header(VIRTIO_BLK_T_IN, 2**63)], SECTOR_SIZE, "past the end"),
        ([header(VIRTIO_BLK_T_IN, 0)], 100, "multiple of 512"),
        ([header(VIRTIO_BLK_T_OUT, DISK_SECTORS), b"x" * SECTOR_SIZE], 0, "past the end"),
    ],
)
def test_requests_outside_the_disk_fail_with_ioerr(
    readable: list[bytes], data_in: int, why: str
) -> None:
    disk = Disk()
    before = bytes(disk.backend.data)
    _, status, _ = disk.submit(readable, data_in)
    assert status == VIRTIO_BLK_S_IOERR
    assert bytes(disk.backend.data) == before
    assert any(why in reason for reason in disk.device.failed_requests)


def test_a_read_only_disk_fails_writes_and_offers_no_discard() -> None:
    disk = Disk(read_only=True)
    assert disk.driver.features & feature(VIRTIO_BLK_F_RO)
    assert not disk.driver.features & feature(VIRTIO_BLK_F_DISCARD)
    before = bytes(disk.backend.data)
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_OUT, 0), b"w" * SECTOR_SIZE])
    assert status == VIRTIO_BLK_S_IOERR and bytes(disk.backend.data) == before
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_IN, 0)], SECTOR_SIZE)
    assert status == VIRTIO_BLK_S_OK


def test_an_unknown_request_is_unsupported() -> None:
    disk = Disk()
    _, status, _ = disk.submit([header(99)])
    assert status == VIRTIO_BLK_S_UNSUPP


def test_a_failing_backend_is_an_ioerr() -> None:
    disk = Disk()
    disk.backend.broken = True
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_IN, 0)], SECTOR_SIZE)
    assert status == VIRTIO_BLK_S_IOERR
    assert disk.device.failed_requests == {"backend: Input/output error": 1}


def needs_reset(disk: Disk, error: str) -> None:
    disk.driver.kick(0)
    assert disk.driver.read(VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET
    assert disk.transport.queues[0].refusals == {error: 1}


def test_a_request_without_a_whole_header_needs_a_reset() -> None:
    disk = Disk()
    disk.ring.add([b"\0" * 8], [1])
    needs_reset(disk, "MalformedRequest")


def test_a_request_without_a_status_byte_needs_a_reset() -> None:
    disk = Disk()
    disk.ring.add([header(VIRTIO_BLK_T_FLUSH)])
    needs_reset(disk, "MalformedRequest")


def test_a_status_buffer_before_the_header_needs_a_reset() -> None:
    disk = Disk()
    status, request = disk.ring.buffer(b"\0"), disk.ring.buffer(header(VIRTIO_BLK_T_FLUSH))
    disk.ring.write_desc(0, status, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
    disk.ring.write_desc(1, request, 16)
    disk.ring.publish(0)
    needs_reset(disk, "WritableBeforeReadable")


def test_file_backend_on_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 4 * SECTOR_SIZE)
    fd = os.open(path, os.O_RDWR)
    try:
        backend = FileBackend(fd)
        assert backend.size() == 4 * SECTOR_SIZE
        backend.pwrite(b"boot", 510)
        backend.fsync()
        assert backend.pread(4, 510) == b"boot"
        assert VirtioBlk(backend).capacity == 4
    finally:
        os.close(fd)


def test_discard_offered_but_not_accepted_is_unsupported() -> None:
    disk = Disk.__new__(Disk)
    disk.backend = MemoryBackend()
    disk.memory = FakeMemory()
    disk.device = VirtioBlk(disk.backend)
    disk.transport = VirtioMmio(disk.device, disk.memory)
    disk.driver = MmioDriver(disk.transport, disk.memory)
    disk.ring = disk.driver.start(accept=~feature(VIRTIO_BLK_F_DISCARD) & ((1 << 64) - 1))[0]
    segment = struct.pack("<QII", 8, 4, 0)
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_DISCARD), segment])
    assert status == VIRTIO_BLK_S_UNSUPP and disk.backend.discards == []


def test_a_request_the_run_ends_during_fails_instead_of_going_on() -> None:
    """Once the run is over (`stopping`), a read or write stops at its next piece and
    fails with IOERR: gigabytes of requests do not keep the VMM past the run's end."""
    disk = Disk()
    disk.transport.stopping = True
    before = bytes(disk.backend.data)
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_IN, 0)], SECTOR_SIZE)
    assert status == VIRTIO_BLK_S_IOERR
    _, status, _ = disk.submit([header(VIRTIO_BLK_T_OUT, 0), bytes(SECTOR_SIZE)])
    assert status == VIRTIO_BLK_S_IOERR
    assert disk.backend.data == before
