"""The traditional balloon: inflate/deflate PFNs, statistics, free page reporting."""

from __future__ import annotations

import struct

import pytest

from pyvmm.devices.virtio.balloon import (
    DEFLATEQ,
    INFLATEQ,
    REPORTINGQ,
    STATSQ,
    VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    VIRTIO_BALLOON_F_MUST_TELL_HOST,
    VIRTIO_BALLOON_F_PAGE_REPORTING,
    VIRTIO_BALLOON_F_STATS_VQ,
    VirtioBalloon,
)
from pyvmm.devices.virtio.device import DEVICE_NEEDS_RESET, VIRTIO_ID_BALLOON, feature
from pyvmm.devices.virtio.mmio import (
    VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_CONFIG_GENERATION,
    VIRTIO_MMIO_INT_CONFIG,
    VIRTIO_MMIO_INT_VRING,
    VIRTIO_MMIO_STATUS,
    VirtioMmio,
)
from pyvmm.devices.virtio.queue import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from tests.unit.virtio_rings import HIGH_RAM, DriverRing, FakeMemory, MmioDriver

ALL = (1 << 64) - 1
INFLATE, DEFLATE, STATS, REPORTING = range(4)


def pfns(*numbers: int) -> bytes:
    return struct.pack(f"<{len(numbers)}I", *numbers)


def stats(*entries: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<HQ", tag, value) for tag, value in entries)


class Balloon:
    def __init__(self, *, deflate_on_oom: bool = False, max_pages: int | None = None) -> None:
        self.released: list[tuple[int, int]] = []
        self.memory = FakeMemory()
        self.device = VirtioBalloon(
            self.release, deflate_on_oom=deflate_on_oom, max_pages=max_pages
        )
        self.transport = VirtioMmio(self.device, self.memory)
        self.driver = MmioDriver(self.transport, self.memory)

    def release(self, gpa: int, size: int) -> None:
        self.released.append((gpa, size))

    def start(self, accept: int = ALL, queues: int | None = None) -> list[DriverRing]:
        return self.driver.start(accept, queues)


def test_queues_and_features_follow_linux_numbering() -> None:
    balloon = Balloon(deflate_on_oom=True)
    assert balloon.driver.read(0x008) == VIRTIO_ID_BALLOON == 5
    rings = balloon.start()
    assert len(rings) == 4
    wanted = feature(
        VIRTIO_BALLOON_F_STATS_VQ,
        VIRTIO_BALLOON_F_PAGE_REPORTING,
        VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    )
    assert balloon.driver.features & wanted == wanted
    assert not balloon.driver.features & feature(VIRTIO_BALLOON_F_MUST_TELL_HOST)
    assert balloon.device.roles == (INFLATEQ, DEFLATEQ, STATSQ, REPORTINGQ)


def test_set_target_is_a_config_change_and_actual_is_the_drivers() -> None:
    balloon = Balloon()
    balloon.start()
    balloon.device.set_target(256)
    assert balloon.driver.take_interrupt() == VIRTIO_MMIO_INT_CONFIG
    assert balloon.driver.read(VIRTIO_MMIO_CONFIG_GENERATION) == 1
    assert balloon.transport.read(VIRTIO_MMIO_CONFIG, 4) == 256
    balloon.transport.write(VIRTIO_MMIO_CONFIG + 4, 4, 200)  # virtio_cwrite_le(actual)
    balloon.transport.write(VIRTIO_MMIO_CONFIG, 4, 7)  # num_pages is the device's
    assert (balloon.device.num_pages, balloon.device.actual) == (256, 200)
    assert balloon.transport.read(VIRTIO_MMIO_CONFIG + 4, 4) == 200


@pytest.mark.parametrize("pages", [-1, 1 << 32])
def test_a_target_num_pages_cannot_hold_is_refused_and_changes_nothing(pages: int) -> None:
    balloon = Balloon()
    balloon.start()
    with pytest.raises(ValueError, match="num_pages holds 0 to 4294967295"):
        balloon.device.set_target(pages)
    assert balloon.device.num_pages == 0
    assert balloon.driver.read(VIRTIO_MMIO_CONFIG_GENERATION) == 0


def test_inflated_pages_are_released_and_bad_pfns_skipped() -> None:
    balloon = Balloon()
    rings = balloon.start()
    in_hole = 0x8000_0000 >> 12
    request = rings[INFLATE].add([pfns(2, HIGH_RAM >> 12, in_hole, 1)])
    balloon.driver.kick(INFLATE)
    # Pages 1 and 2 are one run: one release for both.
    assert balloon.released == [(0x1000, 0x2000), (HIGH_RAM, 0x1000)]
    assert rings[INFLATE].get_used() == [(request.head, 0)]
    assert balloon.driver.take_interrupt() == VIRTIO_MMIO_INT_VRING
    device = balloon.device
    assert (device.inflated_pages, device.released_pages, device.bad_pfns) == (3, 3, 1)


def test_a_page_named_twice_is_released_once() -> None:
    balloon = Balloon()
    rings = balloon.start()
    rings[INFLATE].add([pfns(5, 5, 5, 6)])
    balloon.driver.kick(INFLATE)
    assert balloon.released == [(0x5000, 0x2000)]
    assert (balloon.device.inflated_pages, balloon.device.bad_pfns) == (2, 0)


def test_more_page_numbers_than_pages_of_ram_in_one_kick_are_refused() -> None:
    """A hostile driver's megabytes of page numbers: refused at once, nothing released,
    instead of one release per number (seconds to minutes of host time)."""
    balloon = Balloon(max_pages=16)
    rings = balloon.start()
    rings[INFLATE].add([pfns(*range(1, 9))])  # 8 pages: within the 16
    rings[INFLATE].add([pfns(*range(9, 18))])  # 9 more in the same kick: 17 > 16
    balloon.driver.kick(INFLATE)
    assert balloon.released == [(0x1000, 0x8000)]  # the first request only
    assert balloon.driver.read(VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET
    assert "more page numbers than the guest's 16 pages of RAM" in str(
        balloon.transport.last_failure
    )


def test_deflated_pages_are_counted_and_need_nothing_from_the_host() -> None:
    balloon = Balloon()
    rings = balloon.start()
    request = rings[DEFLATE].add([pfns(1, 2)])
    balloon.driver.kick(DEFLATE)
    assert rings[DEFLATE].get_used() == [(request.head, 0)]
    assert balloon.released == [] and balloon.device.deflated_pages == 2


def test_statistics_are_kept_and_refreshed_on_request() -> None:
    balloon = Balloon()
    rings = balloon.start()
    assert not balloon.device.request_stats()  # no buffer from the driver yet
    # init_vqs primes the statsq with the current statistics.
    first = rings[STATS].add([stats((4, 1000), (5, 4000), (99, 1))])
    balloon.driver.kick(STATS)
    assert balloon.device.stats == {"free-memory": 1000, "total-memory": 4000}
    assert rings[STATS].get_used() == []  # the device holds the buffer
    assert balloon.device.request_stats()
    assert rings[STATS].get_used() == [(first.head, 0)]
    assert balloon.driver.take_interrupt() == VIRTIO_MMIO_INT_VRING
    # stats_handle_request: fresh statistics in a new buffer.
    rings[STATS].add([stats((4, 1500), (5, 4000))])
    balloon.driver.kick(STATS)
    assert balloon.device.stats["free-memory"] == 1500


def test_reported_free_pages_are_released() -> None:
    balloon = Balloon()
    rings = balloon.start()
    ring = rings[REPORTING]
    # Linux's virtballoon_free_page_report: one device-writable buffer per free range.
    ring.write_desc(0, 0x10_0000, 0x4000, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
    ring.write_desc(1, 0x18_0800, 0x2000, VIRTQ_DESC_F_WRITE)  # not page-aligned
    ring.publish(0)
    balloon.driver.kick(REPORTING)
    assert balloon.released == [(0x10_0000, 0x4000), (0x18_1000, 0x1000)]
    assert balloon.device.reported_pages == 5
    assert ring.used_idx == 1


def test_without_statsq_the_reporting_queue_is_queue_2() -> None:
    balloon = Balloon()
    rings = balloon.start(ALL & ~feature(VIRTIO_BALLOON_F_STATS_VQ), queues=3)
    assert balloon.device.roles == (INFLATEQ, DEFLATEQ, REPORTINGQ)
    rings[2].write_desc(0, 0x10_0000, 0x1000, VIRTQ_DESC_F_WRITE)
    rings[2].publish(0)
    balloon.driver.kick(2)
    assert balloon.released == [(0x10_0000, 0x1000)]
    assert not balloon.device.request_stats()


def test_an_inflate_buffer_outside_ram_needs_a_reset() -> None:
    balloon = Balloon()
    rings = balloon.start()
    rings[INFLATE].write_desc(0, 0x8000_0000, 16)
    rings[INFLATE].publish(0)
    balloon.driver.kick(INFLATE)
    assert balloon.driver.read(VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET
    assert balloon.released == []
    assert balloon.transport.queues[INFLATE].refusals == {"BadDescriptor": 1}


def test_a_queue_the_accepted_features_leave_out_reads_queue_num_max_0() -> None:
    """Without the statistics queue, the reporting queue is queue 2 (as Linux numbers
    them) and queue 3 is not there: QueueNumMax 0, so a driver does not wait on it."""
    from pyvmm.devices.virtio.balloon import VIRTIO_BALLOON_F_STATS_VQ, VirtioBalloon
    from pyvmm.devices.virtio.mmio import (
        VIRTIO_MMIO_QUEUE_NUM_MAX,
        VIRTIO_MMIO_QUEUE_SEL,
        VirtioMmio,
    )
    from tests.unit.virtio_rings import FakeMemory, MmioDriver

    memory = FakeMemory()
    balloon = VirtioBalloon(lambda gpa, size: None)
    transport = VirtioMmio(balloon, memory)
    driver = MmioDriver(transport, memory)
    assert driver.probe(accept=~(1 << VIRTIO_BALLOON_F_STATS_VQ) & ((1 << 64) - 1))
    sizes = []
    for index in range(4):
        transport.write(VIRTIO_MMIO_QUEUE_SEL, 4, index)
        sizes.append(transport.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4))
    assert sizes[:3] != [0, 0, 0] and sizes[3] == 0
    assert balloon.roles == ("inflateq", "deflateq", "reporting_vq")
