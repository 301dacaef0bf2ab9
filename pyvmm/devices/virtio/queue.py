"""The split virtqueue, device side, as pure code over guest memory (Virtio 1.2 §2.7).

The driver owns three areas in guest RAM (§2.7, the alignment and size table):

- the descriptor table (§2.7.5): `size` entries of le64 addr, le32 len,
  le16 flags, le16 next;
- the available ring (§2.7.6): le16 flags, le16 idx, le16 ring[size], then
  le16 used_event when VIRTIO_F_EVENT_IDX is negotiated;
- the used ring (§2.7.8): le16 flags, le16 idx, {le32 id, le32 len}[size],
  then le16 avail_event with VIRTIO_F_EVENT_IDX.

`Virtqueue.pop` takes the next available chain, follows NEXT and INDIRECT
descriptors (§2.7.5.3) and returns its device-readable and device-writable
buffers as (gpa, length) lists; `push` hands a chain back through the used
ring; `needs_notification` says whether the driver asked for a used-buffer
interrupt (§2.7.7). The guest writes these rings, so nothing in them is
trusted: every index, length and address is checked before use, as rust-vmm's
virtio-queue crate and QEMU's hw/virtio/virtio.c do, and a chain that breaks a
rule raises a `VirtqueueError`, counted in `Virtqueue.refusals`. The transport
then stops the device until the driver resets it (§2.1.2 DEVICE_NEEDS_RESET).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pyvmm.errors import PyvmmError
from pyvmm.memory.addr import ADDRESS_LIMIT, GuestPhysAddr

# §2.7.5 struct virtq_desc and its flags.
DESCRIPTOR = struct.Struct("<QIHH")
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
# §2.7.8 struct virtq_used_elem.
USED_ELEM = struct.Struct("<II")
U16 = struct.Struct("<H")
# §2.7.7: without VIRTIO_F_EVENT_IDX, the driver's "no used-buffer notification, please".
VIRTQ_AVAIL_F_NO_INTERRUPT = 1

# §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
MAX_QUEUE_SIZE = 32768
DESC_TABLE_ALIGN = 16
AVAIL_RING_ALIGN = 2
USED_RING_ALIGN = 4
# §2.7.5.2 forbids chains longer than 2^32 bytes; one byte less, so that the
# total always fits the used element's le32 len.
MAX_CHAIN_BYTES = (1 << 32) - 1
RING_INDEX_MASK = 0xFFFF  # idx fields are free-running le16 counters

Buffer = tuple[GuestPhysAddr, int]  # (gpa, length in bytes)


class GuestRam(Protocol):
    """What a virtqueue needs of guest memory (pyvmm.memory.guest_memory.GuestMemory is one).

    `read` and `write` raise pyvmm.errors.GuestMemoryError outside RAM;
    `contains(gpa, size)` says whether all of [gpa, gpa + size) is RAM.
    """

    def read(self, gpa: int, size: int) -> bytes: ...

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None: ...

    def contains(self, gpa: int, size: int = 1) -> bool: ...


class VirtqueueError(PyvmmError):
    """The driver broke a rule of the virtqueue or of the device's request format."""


class BadQueueLayout(VirtqueueError):
    """Queue size not a power of 2 up to the maximum, or a ring misaligned or outside RAM (§2.7)."""


class AvailIndexJump(VirtqueueError):
    """The available idx moved past more entries than the ring holds (§2.7.6)."""


class BadDescriptor(VirtqueueError):
    """A descriptor index past the table, or a buffer that is empty, wraps or is not RAM."""


class DescriptorLoop(VirtqueueError):
    """A chain longer than its table: a loop (§2.7.5.3.1: no chain longer than the queue size)."""


class ChainTooLong(VirtqueueError):
    """The chain's buffers add up to more than 2^32 - 1 bytes (§2.7.5.2)."""


class BadIndirect(VirtqueueError):
    """An indirect descriptor the driver must not make (§2.7.5.3.1)."""


class WritableBeforeReadable(VirtqueueError):
    """A device-readable buffer after a device-writable one (§2.7.4.2), for a device that cares."""


class MalformedRequest(VirtqueueError):
    """A chain whose buffers cannot hold the device's request (e.g. no room for a status byte)."""


@dataclass
class DescriptorChain:
    """One available buffer: the head index to give back, and its buffers in chain order.

    `misordered` is set when a device-readable buffer follows a device-writable one.
    """

    head: int
    readable: list[Buffer] = field(default_factory=list)
    writable: list[Buffer] = field(default_factory=list)
    misordered: bool = False

    @property
    def readable_size(self) -> int:
        return sum(length for _, length in self.readable)

    @property
    def writable_size(self) -> int:
        return sum(length for _, length in self.writable)


class Virtqueue:
    """One split virtqueue as the device sees it: where the driver's rings are, and how far it got.

    The transport sets `size`, `desc_table`, `avail_ring`, `used_ring` and the
    negotiated ring features (`event_idx`, `indirect`) while the queue is not
    ready, then calls `activate`. `max_size` (a power of 2 up to 32768) is the
    largest size the device accepts (MMIO's QueueNumMax); ValueError otherwise.
    """

    def __init__(self, memory: GuestRam, max_size: int) -> None:
        if not 0 < max_size <= MAX_QUEUE_SIZE or max_size & (max_size - 1):
            raise ValueError(f"queue size {max_size} is not a power of 2 up to {MAX_QUEUE_SIZE}")
        self.memory = memory
        self.max_size = max_size
        self.refusals: Counter[str] = Counter()  # VirtqueueError class name -> times raised
        self.reset()

    def reset(self) -> None:
        """The state after a device reset: not ready, no rings, indexes at 0."""
        self.size = self.max_size
        self.desc_table = GuestPhysAddr(0)
        self.avail_ring = GuestPhysAddr(0)
        self.used_ring = GuestPhysAddr(0)
        self.event_idx = False  # VIRTIO_F_EVENT_IDX negotiated
        self.indirect = False  # VIRTIO_F_INDIRECT_DESC negotiated
        self.ready = False
        self.next_avail = 0  # the device's copy of how far it consumed the available ring
        self.next_used = 0  # the used ring's idx as the device last wrote it
        self._signalled_used = 0  # next_used at the last needs_notification

    def refuse(self, error: VirtqueueError) -> VirtqueueError:
        """Count `error` in `refusals` and return it, to be raised (devices use it too)."""
        self.refusals[type(error).__name__] += 1
        return error

    def activate(self) -> None:
        """Check the layout against §2.7's table and start at index 0; raises BadQueueLayout."""
        size = self.size
        if not 0 < size <= self.max_size or size & (size - 1):
            raise self.refuse(
                BadQueueLayout(f"queue size {size} is not a power of 2 up to {self.max_size}")
            )
        event = U16.size if self.event_idx else 0
        areas = (
            ("descriptor table", self.desc_table, 16 * size, DESC_TABLE_ALIGN),
            ("available ring", self.avail_ring, 4 + 2 * size + event, AVAIL_RING_ALIGN),
            ("used ring", self.used_ring, 4 + 8 * size + event, USED_RING_ALIGN),
        )
        for name, gpa, length, alignment in areas:
            if gpa % alignment or not self.memory.contains(gpa, length):
                raise self.refuse(
                    BadQueueLayout(
                        f"{name} at 0x{gpa:x} ({length} bytes) is not {alignment}-byte "
                        "aligned guest RAM"
                    )
                )
        self.next_avail = self.next_used = self._signalled_used = 0
        self.ready = True
        if self.event_idx:
            self._write_u16(self._avail_event_gpa, self.next_avail)

    # -- taking requests ---------------------------------------------------

    def pop(self, *, readable_first: bool = False) -> DescriptorChain | None:
        """The next chain the driver made available (§2.7.6), or None if there is none.

        With `readable_first`, a chain with a readable buffer after a writable
        one is refused (WritableBeforeReadable); devices whose requests start
        with a header they read ask for it. Raises a VirtqueueError for a
        chain that breaks §2.7 (the transport then stops the device until
        the driver resets it).
        """
        if not self.ready:
            return None
        avail_idx = self._read_u16(self.avail_ring + 2)
        pending = (avail_idx - self.next_avail) & RING_INDEX_MASK
        if pending == 0:
            return None
        if pending > self.size:
            raise self.refuse(
                AvailIndexJump(
                    f"available idx {avail_idx} is {pending} entries ahead of {self.next_avail} "
                    f"in a queue of {self.size}"
                )
            )
        head = self._read_u16(self.avail_ring + 4 + 2 * (self.next_avail % self.size))
        chain = self._walk(head)
        if readable_first and chain.misordered:
            raise self.refuse(
                WritableBeforeReadable(f"chain {head}: a readable buffer after a writable one")
            )
        self.next_avail = (self.next_avail + 1) & RING_INDEX_MASK
        self._publish_avail_event()
        return chain

    def undo_pop(self) -> None:
        """Put back the chain `pop` just returned, for a device that must wait before using it."""
        self.next_avail = (self.next_avail - 1) & RING_INDEX_MASK
        self._publish_avail_event()

    def _walk(self, head: int) -> DescriptorChain:
        """Follow the chain from `head`, through at most one indirect table at its end."""
        chain = DescriptorChain(head)
        table, entries, index = self.desc_table, self.size, head
        budget = self.size  # no chain longer than its table, so a loop runs out
        in_indirect = False
        total = 0
        while True:
            if index >= entries:
                raise self.refuse(
                    BadDescriptor(f"chain {head}: descriptor {index} is past a table of {entries}")
                )
            if budget == 0:
                raise self.refuse(
                    DescriptorLoop(f"chain {head} is longer than its table of {entries}")
                )
            budget -= 1
            gpa, length, flags, next_index = DESCRIPTOR.unpack(
                self.memory.read(table + DESCRIPTOR.size * index, DESCRIPTOR.size)
            )
            if flags & VIRTQ_DESC_F_INDIRECT:
                table, entries = self._indirect_table(head, gpa, length, flags, in_indirect)
                index, budget, in_indirect = 0, entries, True
                continue
            total += length
            if total > MAX_CHAIN_BYTES:
                raise self.refuse(ChainTooLong(f"chain {head} holds more than 2^32 - 1 bytes"))
            self._check_buffer(head, gpa, length)
            if flags & VIRTQ_DESC_F_WRITE:
                chain.writable.append((GuestPhysAddr(gpa), length))
            else:
                chain.misordered = chain.misordered or bool(chain.writable)
                chain.readable.append((GuestPhysAddr(gpa), length))
            if not flags & VIRTQ_DESC_F_NEXT:
                return chain
            index = next_index

    def _indirect_table(
        self, head: int, gpa: int, length: int, flags: int, in_indirect: bool
    ) -> tuple[GuestPhysAddr, int]:
        """(gpa, entries) of the table an indirect descriptor points to (§2.7.5.3)."""
        if not self.indirect:
            problem = "VIRTIO_F_INDIRECT_DESC was not negotiated"
        elif in_indirect:
            problem = "an indirect descriptor inside an indirect table"
        elif flags & VIRTQ_DESC_F_NEXT:
            problem = "an indirect descriptor with NEXT"
        elif length == 0 or length % DESCRIPTOR.size or length // DESCRIPTOR.size > self.size:
            problem = f"an indirect table of {length} bytes for a queue of {self.size}"
        else:
            self._check_buffer(head, gpa, length)
            return GuestPhysAddr(gpa), length // DESCRIPTOR.size
        raise self.refuse(BadIndirect(f"chain {head}: {problem}"))

    def _check_buffer(self, head: int, gpa: int, length: int) -> None:
        if length == 0:
            problem = "an empty buffer"  # QEMU refuses these too
        elif gpa + length > ADDRESS_LIMIT:
            problem = "wraps past the 64-bit address space"
        elif not self.memory.contains(gpa, length):
            problem = "is not guest RAM"
        else:
            return
        raise self.refuse(BadDescriptor(f"chain {head}: buffer 0x{gpa:x}+0x{length:x} {problem}"))

    # -- giving them back --------------------------------------------------

    def push(self, head: int, length: int) -> None:
        """Return chain `head`, `length` bytes written into its writable buffers (§2.7.8)."""
        slot = self.used_ring + 4 + USED_ELEM.size * (self.next_used % self.size)
        self.memory.write(slot, USED_ELEM.pack(head, length))
        # §2.7.8.1: the element is written before idx moves past it.
        self.next_used = (self.next_used + 1) & RING_INDEX_MASK
        self._write_u16(self.used_ring + 2, self.next_used)

    def needs_notification(self) -> bool:
        """Whether the driver wants an interrupt for what `push` added since the last call (§2.7.7).

        Without VIRTIO_F_EVENT_IDX: unless the available ring's flags say
        VIRTQ_AVAIL_F_NO_INTERRUPT. With it: when the used idx went past the
        driver's used_event (Linux's vring_need_event).
        """
        new, old = self.next_used, self._signalled_used
        self._signalled_used = new
        if new == old:
            return False
        if not self.event_idx:
            return not self._read_u16(self.avail_ring) & VIRTQ_AVAIL_F_NO_INTERRUPT
        used_event = self._read_u16(self.avail_ring + 4 + 2 * self.size)
        return (new - used_event - 1) & RING_INDEX_MASK < (new - old) & RING_INDEX_MASK

    # -- helpers -----------------------------------------------------------

    @property
    def _avail_event_gpa(self) -> int:
        return self.used_ring + 4 + USED_ELEM.size * self.size

    def _publish_avail_event(self) -> None:
        # §2.7.10: ask to be notified as soon as the driver makes the next chain available.
        if self.event_idx:
            self._write_u16(self._avail_event_gpa, self.next_avail)

    def _read_u16(self, gpa: int) -> int:
        return int(U16.unpack(self.memory.read(gpa, U16.size))[0])

    def _write_u16(self, gpa: int, value: int) -> None:
        self.memory.write(gpa, U16.pack(value))


class _Cursor:
    """A position in a list of buffers, seen as one byte stream (§2.7.4: no framing assumed)."""

    def __init__(self, memory: GuestRam, buffers: Iterable[Buffer]) -> None:
        self.memory = memory
        self._buffers = list(buffers)
        self._index = 0  # the buffer the next byte is in
        self._offset = 0  # ... and where in it
        self.remaining = sum(length for _, length in self._buffers)

    def _spans(self, size: int) -> Iterator[tuple[int, int]]:
        """(gpa, length) pieces covering the next `size` bytes (fewer at the end), consumed."""
        while size > 0 and self._index < len(self._buffers):
            gpa, length = self._buffers[self._index]
            take = min(size, length - self._offset)
            yield gpa + self._offset, take
            size -= take
            self.remaining -= take
            self._offset += take
            if self._offset == length:
                self._index, self._offset = self._index + 1, 0


class BufferReader(_Cursor):
    """Reads a chain's device-readable buffers in order, as one stream."""

    def read(self, size: int) -> bytes:
        """The next `size` bytes, or all that remain if fewer."""
        return b"".join(self.memory.read(gpa, length) for gpa, length in self._spans(size))


class BufferWriter(_Cursor):
    """Writes into a chain's device-writable buffers in order, as one stream."""

    def __init__(self, memory: GuestRam, buffers: Iterable[Buffer]) -> None:
        super().__init__(memory, buffers)
        self.written = 0

    def write(self, data: bytes | bytearray) -> int:
        """Write as much of `data` as fits; returns how many bytes that was."""
        done = 0
        for gpa, length in self._spans(len(data)):
            self.memory.write(gpa, data[done : done + length])
            done += length
        self.written += done
        return done
