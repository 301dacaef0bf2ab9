"""virtio-blk over a host backend object (Virtio 1.2 §5.2).

One request queue. A request is a 16-byte header the device reads (le32
type, le32 reserved, le64 sector), data, and a status byte the device writes
in the last writable byte (§5.2.6). The device assumes nothing else about how
the driver splits these into descriptors (§2.7.4), and reads and writes the
data in bounded pieces, never all at once.

Supported: VIRTIO_BLK_T_IN, OUT, FLUSH, GET_ID and (with VIRTIO_BLK_F_DISCARD)
DISCARD; anything else is VIRTIO_BLK_S_UNSUPP. A request outside the disk, a
data length that is not whole sectors, a write to a read-only disk
(VIRTIO_BLK_F_RO, §5.2.6.2) or a failing backend is VIRTIO_BLK_S_IOERR and is
counted in `failed_requests`; a chain with no room for the header or the
status byte cannot be answered at all and is refused (MalformedRequest).

The backend is any object with `pread`, `pwrite`, `fsync`, `size` and
`discard` (`BlockBackend`); `FileBackend` wraps a file descriptor.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from typing import Protocol

from pyvmm.devices.virtio.device import VIRTIO_ID_BLOCK, VirtioDeviceBase, feature
from pyvmm.devices.virtio.queue import (
    Buffer,
    BufferReader,
    BufferWriter,
    DescriptorChain,
    MalformedRequest,
    Virtqueue,
)
from pyvmm.memory.addr import GuestPhysAddr

# §5.2.3 feature bits.
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_GEOMETRY = 4
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_DISCARD = 13

# §5.2.6 request types and status values.
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

SECTOR_SIZE = 512  # the unit of sector, capacity and the discard fields, whatever blk_size says
VIRTIO_BLK_ID_BYTES = 20  # GET_ID: a NUL-padded ASCII string (§5.2.6)
REQUEST_HEADER = struct.Struct("<IIQ")  # struct virtio_blk_req: type, reserved, sector
DISCARD_SEGMENT = struct.Struct("<QII")  # struct virtio_blk_discard_write_zeroes
# §5.2.4 struct virtio_blk_config up to discard_sector_alignment: capacity,
# size_max, seg_max, geometry (cylinders, heads, sectors), blk_size, topology
# (physical_block_exp, alignment_offset, min_io_size, opt_io_size), writeback,
# unused0, num_queues, max_discard_sectors, max_discard_seg, discard_sector_alignment.
BLK_CONFIG = struct.Struct("<QIIHBBIBBHIBBHIII")

QUEUE_SIZE = 256
# Two descriptors of each chain are the header and the status (QEMU's seg_max is the same).
SEG_MAX = QUEUE_SIZE - 2
MAX_DISCARD_SECTORS = 1 << 22  # 2 GiB per discard segment
MAX_DISCARD_SEG = 1
IO_CHUNK = 1 << 20  # bytes moved between guest memory and the backend at a time


class BlockBackend(Protocol):
    """Where the disk's bytes live. Offsets and sizes in bytes; errors raise OSError."""

    def pread(self, size: int, offset: int) -> bytes: ...

    def pwrite(self, data: bytes, offset: int) -> None: ...

    def fsync(self) -> None: ...

    def size(self) -> int: ...

    def discard(self, offset: int, size: int) -> None: ...


class FileBackend:
    """A BlockBackend on an open file descriptor (a disk image or a block device)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:  # pwrite may write less than asked
            done = os.pwrite(self.fd, view, offset)
            view, offset = view[done:], offset + done

    def fsync(self) -> None:
        os.fsync(self.fd)

    def size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)  # st_size is 0 for a block device

    def discard(self, offset: int, size: int) -> None:
        # A discard is a hint the device may ignore (§5.2.6.2); punching a hole
        # needs fallocate(2), which the os module does not offer.
        return None


class VirtioBlk(VirtioDeviceBase):
    """A virtio disk of `backend.size() // 512` sectors (the size is read once, here).

    `read_only` offers VIRTIO_BLK_F_RO and fails writes; `block_size` (bytes,
    a power of 2 from 512) is offered as VIRTIO_BLK_F_BLK_SIZE; `serial` is
    the GET_ID string (at most 20 bytes); `discard` offers
    VIRTIO_BLK_F_DISCARD on a writable disk. ValueError for a bad
    `block_size` or `serial`.
    """

    device_id = VIRTIO_ID_BLOCK
    queue_max_sizes = (QUEUE_SIZE,)

    def __init__(
        self,
        backend: BlockBackend,
        *,
        read_only: bool = False,
        block_size: int | None = None,
        serial: bytes = b"",
        discard: bool = True,
    ) -> None:
        super().__init__()
        if block_size is not None and (block_size < SECTOR_SIZE or block_size & (block_size - 1)):
            raise ValueError(f"block size {block_size} is not a power of 2 from {SECTOR_SIZE}")
        if len(serial) > VIRTIO_BLK_ID_BYTES:
            raise ValueError(f"serial {serial!r} is longer than {VIRTIO_BLK_ID_BYTES} bytes")
        self._backend = backend
        self.capacity = backend.size() // SECTOR_SIZE  # in 512-byte sectors
        self.read_only = read_only
        self.block_size = block_size
        self.serial = serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")
        self.features = feature(VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_FLUSH)
        if read_only:
            self.features |= feature(VIRTIO_BLK_F_RO)
        if block_size is not None:
            self.features |= feature(VIRTIO_BLK_F_BLK_SIZE)
        if discard and not read_only:
            self.features |= feature(VIRTIO_BLK_F_DISCARD)
        self.failed_requests: Counter[str] = Counter()  # why -> requests answered IOERR/UNSUPP

    def config(self) -> bytes:
        block_size = self.block_size or SECTOR_SIZE
        return BLK_CONFIG.pack(
            self.capacity,
            0,  # size_max: not offered
            SEG_MAX,
            0,  # geometry: not offered
            0,
            0,
            block_size,
            0,  # topology: not offered
            0,
            0,
            0,
            0,  # writeback: VIRTIO_BLK_F_CONFIG_WCE is not offered
            0,
            1,  # num_queues: VIRTIO_BLK_F_MQ is not offered
            MAX_DISCARD_SECTORS,
            MAX_DISCARD_SEG,
            block_size // SECTOR_SIZE,  # discard_sector_alignment
        )

    def process(self, queue_index: int, queue: Virtqueue) -> bool:
        used = False
        while (chain := queue.pop(readable_first=True)) is not None:
            queue.push(chain.head, self._handle(queue, chain))
            used = True
        return used

    def _handle(self, queue: Virtqueue, chain: DescriptorChain) -> int:
        """Carry out one request; returns the bytes written into its writable buffers."""
        if chain.readable_size < REQUEST_HEADER.size or not chain.writable:
            raise queue.refuse(
                MalformedRequest(f"request {chain.head}: no room for a header or a status byte")
            )
        reader = BufferReader(queue.memory, chain.readable)
        request_type, _, sector = REQUEST_HEADER.unpack(reader.read(REQUEST_HEADER.size))
        data, status_gpa = _split_status(chain.writable)
        writer = BufferWriter(queue.memory, data)
        try:
            status, problem = self._execute(request_type, sector, reader, writer)
        except OSError as error:
            status, problem = VIRTIO_BLK_S_IOERR, f"backend: {error.strerror or error}"
        if status != VIRTIO_BLK_S_OK:
            self.failed_requests[problem] += 1
        queue.memory.write(status_gpa, bytes([status]))
        return writer.written + 1

    def _execute(
        self, request_type: int, sector: int, reader: BufferReader, writer: BufferWriter
    ) -> tuple[int, str]:
        """(status, why it failed) for one request."""
        if request_type == VIRTIO_BLK_T_IN:
            return self._read(sector, writer)
        if request_type == VIRTIO_BLK_T_OUT:
            if self.read_only:
                return VIRTIO_BLK_S_IOERR, "write to a read-only disk"
            return self._write(sector, reader)
        if request_type == VIRTIO_BLK_T_FLUSH:
            self._backend.fsync()
            return VIRTIO_BLK_S_OK, ""
        if request_type == VIRTIO_BLK_T_GET_ID:
            writer.write(self.serial)
            return VIRTIO_BLK_S_OK, ""
        if request_type == VIRTIO_BLK_T_DISCARD and self.acked_features & feature(
            VIRTIO_BLK_F_DISCARD
        ):
            return self._discard(reader)
        return VIRTIO_BLK_S_UNSUPP, f"request type {request_type}"

    def _check_range(self, sector: int, size: int) -> str:
        """Why [sector, sector + size bytes) is not a run of sectors on the disk, or ''."""
        if size % SECTOR_SIZE:
            return "data not a multiple of 512 bytes"
        if sector + size // SECTOR_SIZE > self.capacity:
            return "sectors past the end of the disk"
        return ""

    def _read(self, sector: int, writer: BufferWriter) -> tuple[int, str]:
        problem = self._check_range(sector, writer.remaining)
        if problem:
            return VIRTIO_BLK_S_IOERR, problem
        offset = sector * SECTOR_SIZE
        while writer.remaining:
            if self.transport.stopping:
                return VIRTIO_BLK_S_IOERR, "the run ended during the request"
            data = self._backend.pread(min(IO_CHUNK, writer.remaining), offset)
            if not data:
                return VIRTIO_BLK_S_IOERR, "backend shorter than the disk"
            offset += writer.write(data)
        return VIRTIO_BLK_S_OK, ""

    def _write(self, sector: int, reader: BufferReader) -> tuple[int, str]:
        problem = self._check_range(sector, reader.remaining)
        if problem:
            return VIRTIO_BLK_S_IOERR, problem
        offset = sector * SECTOR_SIZE
        while reader.remaining:
            if self.transport.stopping:
                return VIRTIO_BLK_S_IOERR, "the run ended during the request"
            data = reader.read(IO_CHUNK)
            self._backend.pwrite(data, offset)
            offset += len(data)
        return VIRTIO_BLK_S_OK, ""

    def _discard(self, reader: BufferReader) -> tuple[int, str]:
        count, rest = divmod(reader.remaining, DISCARD_SEGMENT.size)
        if rest or not 0 < count <= MAX_DISCARD_SEG:
            return VIRTIO_BLK_S_IOERR, "discard segments: bad count or length"
        segments = [DISCARD_SEGMENT.unpack(reader.read(DISCARD_SEGMENT.size)) for _ in range(count)]
        # §5.2.6.2: any flag (unmap included) on a discard is VIRTIO_BLK_S_UNSUPP.
        if any(flags for _, _, flags in segments):
            return VIRTIO_BLK_S_UNSUPP, "discard with flags"
        for sector, sectors, _ in segments:
            if sectors > MAX_DISCARD_SECTORS or self._check_range(sector, sectors * SECTOR_SIZE):
                return VIRTIO_BLK_S_IOERR, "discard outside the disk or too long"
        for sector, sectors, _ in segments:
            self._backend.discard(sector * SECTOR_SIZE, sectors * SECTOR_SIZE)
        return VIRTIO_BLK_S_OK, ""


def _split_status(writable: list[Buffer]) -> tuple[list[Buffer], int]:
    """(the data buffers, the gpa of the status byte): the status is the last writable byte."""
    gpa, length = writable[-1]
    data = writable[:-1] + ([(gpa, length - 1)] if length > 1 else [])
    return data, GuestPhysAddr(gpa + length - 1)
