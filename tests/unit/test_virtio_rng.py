"""virtio-rng: entropy into device-writable buffers, with a token-bucket rate limit."""

from __future__ import annotations

import pytest

from pyvmm.devices.virtio.device import DEVICE_NEEDS_RESET, VIRTIO_ID_ENTROPY
from pyvmm.devices.virtio.mmio import (
    RING_FEATURES,
    VIRTIO_MMIO_INT_VRING,
    VIRTIO_MMIO_STATUS,
    VirtioMmio,
)
from pyvmm.devices.virtio.rng import MAX_REQUEST, REQUESTQ, VirtioRng
from tests.unit.virtio_rings import DriverRing, FakeMemory, MmioDriver


class Counting:
    """Entropy that is easy to check: 0, 1, 2, ... across calls."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, size: int) -> bytes:
        data = bytes((self.next + index) & 0xFF for index in range(size))
        self.next += size
        return data


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rng:
    def __init__(self, rate: int | None = None) -> None:
        self.clock = FakeClock()
        self.device = VirtioRng(Counting(), rate=rate, clock=self.clock)
        self.memory = FakeMemory()
        self.transport = VirtioMmio(self.device, self.memory)
        self.driver = MmioDriver(self.transport, self.memory)
        self.ring: DriverRing = self.driver.start()[0]

    def request(self, size: int) -> list[tuple[int, int]]:
        self.ring.add(writable=[size])
        self.driver.kick(REQUESTQ)
        return self.ring.get_used()


def test_an_entropy_device_with_no_features_of_its_own() -> None:
    rng = Rng()
    assert rng.driver.read(0x008) == VIRTIO_ID_ENTROPY == 4
    assert rng.driver.features == RING_FEATURES


def test_a_buffer_is_filled_with_entropy() -> None:
    rng = Rng()
    request = rng.ring.add(writable=[32])
    rng.driver.kick(REQUESTQ)
    assert rng.ring.get_used() == [(request.head, 32)]
    assert rng.ring.written(request, 32) == bytes(range(32))
    assert rng.driver.take_interrupt() == VIRTIO_MMIO_INT_VRING
    assert rng.device.bytes_supplied == 32


def test_a_huge_buffer_gets_at_most_max_request_bytes() -> None:
    rng = Rng()
    [(_, length)] = rng.request(MAX_REQUEST + 1000)
    assert length == MAX_REQUEST


def test_the_rate_limit_makes_requests_wait_for_the_budget() -> None:
    rng = Rng(rate=10)
    assert [length for _, length in rng.request(32)] == [10]  # a full second's worth
    assert rng.request(32) == []  # empty bucket: the buffer waits in the ring
    assert rng.device.waiting
    assert rng.device.retry_time() == pytest.approx(0.1)
    rng.clock.now = 0.5
    rng.device.resume()
    assert [length for _, length in rng.ring.get_used()] == [5]
    rng.clock.now = 100.0  # the bucket holds at most one second
    assert [length for _, length in rng.request(32)] == [10]
    assert not rng.device.waiting and rng.device.retry_time() is None


def test_a_readable_buffer_needs_a_reset() -> None:
    rng = Rng()
    rng.ring.add([b"not for the device"])
    rng.driver.kick(REQUESTQ)
    assert rng.driver.read(VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET
    assert rng.transport.queues[REQUESTQ].refusals == {"MalformedRequest": 1}


@pytest.mark.parametrize(("rate", "clock"), [(10, None), (0, FakeClock())])
def test_a_rate_limit_needs_a_positive_rate_and_a_clock(rate: int, clock: FakeClock | None) -> None:
    with pytest.raises(ValueError):
        VirtioRng(Counting(), rate=rate, clock=clock)
