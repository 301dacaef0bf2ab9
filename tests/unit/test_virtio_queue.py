"""The split virtqueue against hand-built rings: Linux's chains, EVENT_IDX, and hostile rings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyvmm.devices.virtio.queue import (
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    AvailIndexJump,
    BadDescriptor,
    BadIndirect,
    BadQueueLayout,
    BufferReader,
    BufferWriter,
    ChainTooLong,
    DescriptorLoop,
    Virtqueue,
    VirtqueueError,
    WritableBeforeReadable,
)
from pyvmm.errors import PyvmmError
from tests.unit.virtio_rings import HIGH_RAM, LOW_RAM_END, Allocator, DriverRing, FakeMemory

SIZE = 8


def make_queue(
    size: int = SIZE, *, event_idx: bool = False, indirect: bool = True
) -> tuple[Virtqueue, DriverRing]:
    """A ready queue and the driver's view of the same rings."""
    memory = FakeMemory()
    ring = DriverRing(memory, Allocator(), size, event_idx=event_idx)
    queue = Virtqueue(memory, size)
    queue.desc_table, queue.avail_ring, queue.used_ring = ring.desc, ring.avail, ring.used
    queue.event_idx, queue.indirect = event_idx, indirect
    queue.activate()
    return queue, ring


def test_an_empty_ring_has_nothing_to_pop() -> None:
    queue, _ = make_queue()
    assert queue.pop() is None
    assert queue.needs_notification() is False


def test_a_queue_that_is_not_ready_is_not_read() -> None:
    queue, ring = make_queue()
    ring.add([b"x"])
    queue.ready = False
    assert queue.pop() is None


def test_a_linux_chain_gives_readable_then_writable_buffers_and_comes_back_used() -> None:
    queue, ring = make_queue()
    request = ring.add([b"head", b"er"], [3, 5])
    chain = queue.pop()
    assert chain is not None and chain.head == request.head == 0
    assert [length for _, length in chain.readable] == [4, 2]
    assert chain.writable == request.writable
    assert (chain.readable_size, chain.writable_size, chain.misordered) == (6, 8, False)
    assert BufferReader(queue.memory, chain.readable).read(100) == b"header"
    BufferWriter(queue.memory, chain.writable).write(b"answer")
    queue.push(chain.head, 6)
    assert ring.get_used() == [(0, 6)]
    assert ring.written(request, 6) == b"answer"
    assert queue.pop() is None


def test_an_indirect_chain_reads_like_a_direct_one() -> None:
    queue, ring = make_queue()
    request = ring.add([b"abc", b"def"], [4], indirect=True)
    chain = queue.pop()
    assert chain is not None and chain.head == request.head
    assert BufferReader(queue.memory, chain.readable).read(6) == b"abcdef"
    assert chain.writable == request.writable


def test_direct_descriptors_may_end_in_one_indirect_table() -> None:
    # §2.7.5.3.2: "zero or more normal chained descriptors followed by a single INDIRECT".
    queue, ring = make_queue()
    first, second, answer = ring.buffer(b"12"), ring.buffer(b"34"), ring.buffer(b"\0" * 4)
    table = ring.alloc(32)
    ring.write_desc(0, second, 2, VIRTQ_DESC_F_NEXT, 1, table=table)
    ring.write_desc(1, answer, 4, VIRTQ_DESC_F_WRITE, table=table)
    ring.write_desc(3, first, 2, VIRTQ_DESC_F_NEXT, 5)
    ring.write_desc(5, table, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)  # WRITE ignored
    ring.publish(3)
    chain = queue.pop()
    assert chain is not None
    assert BufferReader(queue.memory, chain.readable).read(4) == b"1234"
    assert chain.writable == [(answer, 4)]


def test_reader_and_writer_cross_buffer_boundaries() -> None:
    memory = FakeMemory()
    buffers = [(0x1000, 3), (0x2000, 1), (0x3000, 4)]
    writer = BufferWriter(memory, buffers)
    assert writer.write(b"abcdefghij") == 8
    assert (writer.written, writer.remaining) == (8, 0)
    reader = BufferReader(memory, buffers)
    assert reader.read(2) == b"ab"
    assert reader.read(3) == b"cde"
    assert reader.remaining == 3
    assert reader.read(10) == b"fgh"
    assert reader.read(1) == b""


def test_ring_indexes_wrap_at_16_bits() -> None:
    queue, ring = make_queue()
    start = 0xFFFE
    ring.set_avail_idx(start)
    queue.next_avail = queue.next_used = start
    ring.memory.write(ring.used + 2, start.to_bytes(2, "little"))
    ring.last_used = start
    heads = [ring.add([b"%d" % n]).head for n in range(4)]
    for _ in heads:
        chain = queue.pop()
        assert chain is not None
        queue.push(chain.head, 0)
    assert [head for head, _ in ring.get_used()] == heads
    assert queue.next_avail == queue.next_used == ring.used_idx == 2


def test_undo_pop_gives_the_same_chain_again() -> None:
    queue, ring = make_queue()
    ring.add([b"a"])
    first = queue.pop()
    queue.undo_pop()
    again = queue.pop()
    assert first is not None and again is not None and first.head == again.head


def test_without_event_idx_the_driver_flag_suppresses_interrupts() -> None:
    queue, ring = make_queue()
    for flags, wanted in ((VIRTQ_AVAIL_F_NO_INTERRUPT, False), (0, True)):
        ring.set_avail_flags(flags)
        ring.add([b"a"])
        chain = queue.pop()
        assert chain is not None
        queue.push(chain.head, 0)
        assert queue.needs_notification() is wanted


def test_event_idx_interrupts_only_when_used_idx_passes_used_event() -> None:
    queue, ring = make_queue(event_idx=True)
    ring.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)  # ignored with EVENT_IDX (§2.7.7)
    ring.set_used_event(1)  # "interrupt me when the second buffer is used"
    for _ in range(3):
        ring.add([b"a"])
    results = []
    for _ in range(3):
        chain = queue.pop()
        assert chain is not None
        queue.push(chain.head, 0)
        results.append(queue.needs_notification())
    assert results == [False, True, False]
    # Two at once that cross used_event still notify once.
    ring.set_used_event(3)
    for _ in range(2):
        ring.add([b"b"])
        chain = queue.pop()
        assert chain is not None
        queue.push(chain.head, 0)
    assert queue.needs_notification() is True


def test_event_idx_asks_the_driver_to_notify_for_the_next_chain() -> None:
    queue, ring = make_queue(event_idx=True)
    assert ring.avail_event == 0
    ring.add([b"a"])
    ring.add([b"b"])
    queue.pop()
    assert ring.avail_event == 1
    queue.pop()
    assert ring.avail_event == 2
    queue.undo_pop()
    assert ring.avail_event == 1


def test_a_writable_buffer_before_a_readable_one_is_refused_when_the_device_asks() -> None:
    queue, ring = make_queue()
    out, answer = ring.buffer(b"hdr"), ring.buffer(b"\0")
    ring.write_desc(0, answer, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
    ring.write_desc(1, out, 3)
    ring.publish(0)
    ring.publish(0)
    chain = queue.pop()
    assert chain is not None and chain.misordered
    with pytest.raises(WritableBeforeReadable):
        queue.pop(readable_first=True)
    assert queue.refusals == {"WritableBeforeReadable": 1}


# -- hostile rings: each is refused with its own error, and counted ---------------


def loop_of_two(ring: DriverRing) -> None:
    data = ring.buffer(b"x")
    ring.write_desc(0, data, 1, VIRTQ_DESC_F_NEXT, 1)
    ring.write_desc(1, data, 1, VIRTQ_DESC_F_NEXT, 0)
    ring.publish(0)


def self_loop(ring: DriverRing) -> None:
    ring.write_desc(2, ring.buffer(b"x"), 1, VIRTQ_DESC_F_NEXT, 2)
    ring.publish(2)


def loop_in_indirect_table(ring: DriverRing) -> None:
    data, table = ring.buffer(b"x"), ring.alloc(48)
    for index in range(3):
        ring.write_desc(index, data, 1, VIRTQ_DESC_F_NEXT, (index + 1) % 3, table=table)
    ring.write_desc(0, table, 48, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)


def next_past_the_table(ring: DriverRing) -> None:
    ring.write_desc(0, ring.buffer(b"x"), 1, VIRTQ_DESC_F_NEXT, SIZE)
    ring.publish(0)


def head_past_the_table(ring: DriverRing) -> None:
    ring.publish(SIZE + 3)


def next_past_the_indirect_table(ring: DriverRing) -> None:
    table = ring.alloc(16)
    ring.write_desc(0, ring.buffer(b"x"), 1, VIRTQ_DESC_F_NEXT, 1, table=table)
    ring.write_desc(0, table, 16, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)


def buffer_in_a_hole(ring: DriverRing) -> None:
    ring.write_desc(0, 0x8000_0000, 16)
    ring.publish(0)


def buffer_overlapping_the_end_of_ram(ring: DriverRing) -> None:
    ring.write_desc(0, LOW_RAM_END - 8, 16, VIRTQ_DESC_F_WRITE)
    ring.publish(0)


def buffer_wrapping_64_bits(ring: DriverRing) -> None:
    ring.write_desc(0, (1 << 64) - 16, 32)
    ring.publish(0)


def empty_buffer(ring: DriverRing) -> None:
    ring.write_desc(0, ring.buffer(b""), 0)
    ring.publish(0)


def lengths_past_32_bits(ring: DriverRing) -> None:
    # Two 2 GiB buffers of real (sparse) RAM: 2^32 bytes in all.
    ring.write_desc(0, HIGH_RAM, 0x8000_0000, VIRTQ_DESC_F_NEXT, 1)
    ring.write_desc(1, HIGH_RAM + 0x8000_0000, 0x8000_0000)
    ring.publish(0)


def avail_idx_jump(ring: DriverRing) -> None:
    ring.add([b"x"])
    ring.set_avail_idx(SIZE + 1)


def nested_indirect(ring: DriverRing) -> None:
    inner, outer = ring.alloc(16), ring.alloc(16)
    ring.write_desc(0, ring.buffer(b"x"), 1, table=inner)
    ring.write_desc(0, inner, 16, VIRTQ_DESC_F_INDIRECT, table=outer)
    ring.write_desc(0, outer, 16, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)


def indirect_with_next(ring: DriverRing) -> None:
    table = ring.alloc(16)
    ring.write_desc(0, ring.buffer(b"x"), 1, table=table)
    ring.write_desc(0, table, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1)
    ring.write_desc(1, ring.buffer(b"y"), 1)
    ring.publish(0)


def indirect_table_length(length: int) -> Callable[[DriverRing], None]:
    def build(ring: DriverRing) -> None:
        table = ring.alloc(max(length, 16))
        ring.write_desc(0, table, length, VIRTQ_DESC_F_INDIRECT)
        ring.publish(0)

    return build


def indirect_table_in_a_hole(ring: DriverRing) -> None:
    ring.write_desc(0, 0x8000_0000, 32, VIRTQ_DESC_F_INDIRECT)
    ring.publish(0)


HOSTILE_RINGS = {
    "loop of two": (loop_of_two, DescriptorLoop),
    "self loop": (self_loop, DescriptorLoop),
    "loop in an indirect table": (loop_in_indirect_table, DescriptorLoop),
    "next past the table": (next_past_the_table, BadDescriptor),
    "head past the table": (head_past_the_table, BadDescriptor),
    "next past the indirect table": (next_past_the_indirect_table, BadDescriptor),
    "buffer in a hole": (buffer_in_a_hole, BadDescriptor),
    "buffer over the end of RAM": (buffer_overlapping_the_end_of_ram, BadDescriptor),
    "gpa + len past 2^64": (buffer_wrapping_64_bits, BadDescriptor),
    "zero-length buffer": (empty_buffer, BadDescriptor),
    "lengths past 2^32 - 1": (lengths_past_32_bits, ChainTooLong),
    "avail idx jumps": (avail_idx_jump, AvailIndexJump),
    "nested indirect": (nested_indirect, BadIndirect),
    "indirect with NEXT": (indirect_with_next, BadIndirect),
    "empty indirect table": (indirect_table_length(0), BadIndirect),
    "indirect table of 20 bytes": (indirect_table_length(20), BadIndirect),
    "indirect table larger than the queue": (indirect_table_length(16 * (SIZE + 1)), BadIndirect),
    "indirect table in a hole": (indirect_table_in_a_hole, BadDescriptor),
}


@pytest.mark.parametrize("name", HOSTILE_RINGS)
def test_hostile_rings_are_refused_and_counted(name: str) -> None:
    build, error = HOSTILE_RINGS[name]
    queue, ring = make_queue()
    build(ring)
    with pytest.raises(error) as raised:
        queue.pop()
    assert isinstance(raised.value, VirtqueueError) and isinstance(raised.value, PyvmmError)
    assert queue.refusals == {error.__name__: 1}


def test_indirect_descriptors_are_refused_unless_negotiated() -> None:
    queue, ring = make_queue(indirect=False)
    ring.add([b"x"], indirect=True)
    with pytest.raises(BadIndirect, match="not negotiated"):
        queue.pop()
    assert queue.refusals["BadIndirect"] == 1


def misaligned_desc(queue: Virtqueue) -> None:
    queue.desc_table += 8


def used_ring_in_a_hole(queue: Virtqueue) -> None:
    queue.used_ring = 0x8000_0000


def avail_ring_over_the_end_of_ram(queue: Virtqueue) -> None:
    queue.avail_ring = LOW_RAM_END - 4


@pytest.mark.parametrize(
    "spoil",
    [
        lambda queue: setattr(queue, "size", 0),
        lambda queue: setattr(queue, "size", 6),
        lambda queue: setattr(queue, "size", 2 * SIZE),
        misaligned_desc,
        used_ring_in_a_hole,
        avail_ring_over_the_end_of_ram,
    ],
    ids=["size 0", "size 6", "size above max", "misaligned", "used in hole", "avail past RAM"],
)
def test_a_bad_layout_is_refused_at_activation(spoil: Callable[[Virtqueue], None]) -> None:
    queue, _ = make_queue()
    queue.ready = False
    spoil(queue)
    with pytest.raises(BadQueueLayout):
        queue.activate()
    assert not queue.ready
    assert queue.refusals == {"BadQueueLayout": 1}


@pytest.mark.parametrize("max_size", [0, 3, 65536])
def test_a_device_cannot_offer_an_impossible_queue_size(max_size: int) -> None:
    with pytest.raises(ValueError):
        Virtqueue(FakeMemory(), max_size)
