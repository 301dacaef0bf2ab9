"""The virtio-mmio transport against the register sequence of Linux's virtio_mmio.c."""

from __future__ import annotations

import pytest

from pyvmm.devices.virtio.device import (
    ACKNOWLEDGE,
    DEVICE_NEEDS_RESET,
    DRIVER,
    DRIVER_OK,
    FAILED,
    FEATURES_OK,
    VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    VirtioDeviceBase,
    feature,
)
from pyvmm.devices.virtio.mmio import (
    MAGIC_VALUE,
    VENDOR_ID,
    VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_CONFIG_GENERATION,
    VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DEVICE_ID,
    VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL,
    VIRTIO_MMIO_INT_CONFIG,
    VIRTIO_MMIO_INT_VRING,
    VIRTIO_MMIO_INTERRUPT_STATUS,
    VIRTIO_MMIO_MAGIC_VALUE,
    VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_SHM_BASE_HIGH,
    VIRTIO_MMIO_SHM_BASE_LOW,
    VIRTIO_MMIO_SHM_LEN_HIGH,
    VIRTIO_MMIO_SHM_LEN_LOW,
    VIRTIO_MMIO_SHM_SEL,
    VIRTIO_MMIO_STATUS,
    VIRTIO_MMIO_VENDOR_ID,
    VIRTIO_MMIO_VERSION,
    VirtioMmio,
)
from pyvmm.devices.virtio.queue import (
    VIRTQ_DESC_F_NEXT,
    BufferReader,
    BufferWriter,
    DescriptorLoop,
    Virtqueue,
)
from tests.unit.virtio_rings import FakeMemory, MmioDriver, RecordingIrq

ECHO_ID = 42
ECHO_FEATURES = feature(0, 3)
ALL = (1 << 64) - 1


class EchoDevice(VirtioDeviceBase):
    """Copies each chain's readable bytes into its writable buffers; 8 bytes of config."""

    device_id = ECHO_ID
    features = ECHO_FEATURES
    queue_max_sizes = (16, 8)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.resets = 0
        self.space = bytearray(range(1, 9))

    def config(self) -> bytes:
        return bytes(self.space)

    def write_config(self, offset: int, data: bytes) -> None:
        self.space[offset : offset + len(data)] = data

    def reset(self) -> None:
        super().reset()
        self.resets += 1

    def process(self, queue_index: int, queue: Virtqueue) -> bool:
        self.calls.append(queue_index)
        used = False
        while (chain := queue.pop()) is not None:
            data = BufferReader(queue.memory, chain.readable).read(chain.readable_size)
            queue.push(chain.head, BufferWriter(queue.memory, chain.writable).write(data))
            used = True
        return used


class Machine:
    def __init__(self) -> None:
        self.memory = FakeMemory()
        self.irq = RecordingIrq()
        self.device = EchoDevice()
        self.transport = VirtioMmio(self.device, self.memory, self.irq)
        self.driver = MmioDriver(self.transport, self.memory)


@pytest.fixture
def machine() -> Machine:
    return Machine()


def test_linux_probe_sequence(machine: Machine) -> None:
    driver, transport = machine.driver, machine.transport
    # virtio_mmio_probe: magic, version, device and vendor IDs.
    assert driver.read(VIRTIO_MMIO_MAGIC_VALUE) == MAGIC_VALUE == 0x74726976
    assert driver.read(VIRTIO_MMIO_VERSION) == 2
    assert driver.read(VIRTIO_MMIO_DEVICE_ID) == ECHO_ID
    assert driver.read(VIRTIO_MMIO_VENDOR_ID) == VENDOR_ID
    # Both feature words; a third does not exist.
    for select, expected in (
        (0, ECHO_FEATURES | feature(VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX)),
        (1, feature(VIRTIO_F_VERSION_1) >> 32),
        (2, 0),
    ):
        driver.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, select)
        assert driver.read(VIRTIO_MMIO_DEVICE_FEATURES) == expected
    assert driver.probe()
    assert driver.read(VIRTIO_MMIO_STATUS) == ACKNOWLEDGE | DRIVER | FEATURES_OK
    assert machine.device.acked_features == driver.features == transport.device_features
    rings = [driver.setup_queue(0), driver.setup_queue(1)]
    assert [ring.size for ring in rings] == [16, 8]
    for queue, ring in zip(transport.queues, rings, strict=True):
        assert (queue.desc_table, queue.avail_ring, queue.used_ring) == (
            ring.desc,
            ring.avail,
            ring.used,
        )
        assert queue.ready and queue.event_idx and queue.indirect
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 2)
    assert driver.read(VIRTIO_MMIO_QUEUE_NUM_MAX) == 0  # no third queue
    driver.add_status(DRIVER_OK)
    assert driver.read(VIRTIO_MMIO_STATUS) == ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    assert transport.ignored_writes == transport.bad_accesses == 0


def test_features_ok_is_not_latched_without_version_1(machine: Machine) -> None:
    driver = machine.driver
    assert not driver.probe(accept=ALL & ~feature(VIRTIO_F_VERSION_1))
    assert driver.read(VIRTIO_MMIO_STATUS) == ACKNOWLEDGE | DRIVER
    assert machine.device.acked_features == 0
    # Linux gives up with FAILED; the queues stay closed.
    driver.add_status(FAILED)
    assert driver.read(VIRTIO_MMIO_STATUS) == ACKNOWLEDGE | DRIVER | FAILED
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 0)
    driver.write(VIRTIO_MMIO_QUEUE_READY, 1)
    assert driver.read(VIRTIO_MMIO_QUEUE_READY) == 0


def test_features_ok_is_not_latched_for_a_feature_not_offered(machine: Machine) -> None:
    driver = machine.driver
    driver.write(VIRTIO_MMIO_STATUS, 0)
    driver.add_status(ACKNOWLEDGE)
    driver.add_status(DRIVER)
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1)
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES, 1 | 1 << 8)  # VERSION_1 and bit 40
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0)
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES, 0)
    driver.add_status(FEATURES_OK)
    assert not driver.read(VIRTIO_MMIO_STATUS) & FEATURES_OK


def test_ring_features_the_driver_declines_are_off_in_the_queues(machine: Machine) -> None:
    accept = ALL & ~feature(VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC)
    machine.driver.start(accept)
    assert not any(queue.event_idx or queue.indirect for queue in machine.transport.queues)


def test_status_bits_out_of_order_or_cleared_are_ignored(machine: Machine) -> None:
    driver, transport = machine.driver, machine.transport
    driver.write(VIRTIO_MMIO_STATUS, DRIVER_OK)
    assert driver.read(VIRTIO_MMIO_STATUS) == 0
    driver.add_status(ACKNOWLEDGE)
    driver.write(VIRTIO_MMIO_STATUS, DRIVER)  # clears ACKNOWLEDGE
    driver.write(VIRTIO_MMIO_STATUS, ACKNOWLEDGE | 0x10)  # an unknown bit
    assert driver.read(VIRTIO_MMIO_STATUS) == ACKNOWLEDGE
    assert transport.ignored_writes == 3


def test_writing_0_resets_the_device(machine: Machine) -> None:
    driver, transport = machine.driver, machine.transport
    ring = driver.start()[0]
    ring.add([b"x"], [1])
    driver.kick(0)
    assert machine.irq.high
    resets = machine.device.resets
    driver.write(VIRTIO_MMIO_STATUS, 0)
    assert driver.read(VIRTIO_MMIO_STATUS) == 0
    assert driver.read(VIRTIO_MMIO_INTERRUPT_STATUS) == 0 and not machine.irq.high
    assert not any(queue.ready for queue in transport.queues)
    assert machine.device.resets == resets + 1 and machine.device.acked_features == 0
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 0)
    assert driver.read(VIRTIO_MMIO_QUEUE_READY) == 0


def test_used_buffers_raise_the_line_until_acknowledged(machine: Machine) -> None:
    driver = machine.driver
    ring = driver.start()[0]
    request = ring.add([b"ping"], [4])
    driver.kick(0)
    assert machine.device.calls == [0, 1, 0]  # the DRIVER_OK sweep, then the kick
    assert machine.irq.high
    assert driver.take_interrupt() == VIRTIO_MMIO_INT_VRING
    assert not machine.irq.high
    assert ring.get_used() == [(request.head, 4)]
    assert ring.written(request, 4) == b"ping"


def test_the_notify_method_is_a_queue_notify_write(machine: Machine) -> None:
    rings = machine.driver.start()
    request = rings[1].add([b"io"], [2])
    machine.transport.notify(1)  # what an ioeventfd handler calls
    assert rings[1].get_used() == [(request.head, 2)]
    assert machine.driver.take_interrupt() == VIRTIO_MMIO_INT_VRING


def test_event_idx_suppresses_the_interrupt_the_driver_does_not_want(machine: Machine) -> None:
    ring = machine.driver.start()[0]
    ring.set_used_event(5)
    ring.add([b"a"], [1])
    machine.driver.kick(0)
    assert ring.get_used() and not machine.irq.high


def test_buffers_made_available_before_driver_ok_wait_for_it(machine: Machine) -> None:
    driver = machine.driver
    assert driver.probe()
    ring = driver.setup_queue(0)
    driver.setup_queue(1)
    request = ring.add([b"early"], [5])
    driver.kick(0)
    assert ring.get_used() == [] and machine.device.calls == []  # §2.1.2
    driver.add_status(DRIVER_OK)
    assert ring.get_used() == [(request.head, 5)]


def test_a_hostile_chain_makes_the_device_need_a_reset(machine: Machine) -> None:
    driver, transport = machine.driver, machine.transport
    ring = driver.start()[0]
    data = ring.buffer(b"x")
    ring.write_desc(0, data, 1, VIRTQ_DESC_F_NEXT, 1)
    ring.write_desc(1, data, 1, VIRTQ_DESC_F_NEXT, 0)
    ring.publish(0)
    driver.kick(0)
    assert driver.read(VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET
    assert driver.take_interrupt() == VIRTIO_MMIO_INT_CONFIG  # §2.1.2
    assert isinstance(transport.last_failure, DescriptorLoop) and transport.failures == 1
    assert transport.queues[0].refusals == {"DescriptorLoop": 1}
    # The queues are left alone until a reset, whatever the driver writes back.
    calls = len(machine.device.calls)
    driver.kick(0)
    driver.add_status(FAILED)
    assert len(machine.device.calls) == calls
    assert driver.read(VIRTIO_MMIO_STATUS) & (DEVICE_NEEDS_RESET | FAILED) == (
        DEVICE_NEEDS_RESET | FAILED
    )
    # A reset and a fresh start bring it back.
    machine.driver = MmioDriver(transport, machine.memory)
    ring = machine.driver.start()[0]
    request = ring.add([b"ok"], [2])
    machine.driver.kick(0)
    assert ring.get_used() == [(request.head, 2)]


def test_a_bad_queue_layout_at_queue_ready_needs_a_reset(machine: Machine) -> None:
    driver, transport = machine.driver, machine.transport
    assert driver.probe()
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 0)
    driver.write(VIRTIO_MMIO_QUEUE_NUM, 3)  # not a power of 2
    driver.write(VIRTIO_MMIO_QUEUE_READY, 1)
    assert driver.read(VIRTIO_MMIO_QUEUE_READY) == 0
    assert driver.read(VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET
    assert driver.read(VIRTIO_MMIO_INTERRUPT_STATUS) == 0  # no interrupt before DRIVER_OK
    assert transport.queues[0].refusals == {"BadQueueLayout": 1}


def test_queue_registers_are_left_alone_while_the_queue_is_ready(machine: Machine) -> None:
    driver, transport = machine.driver, machine.transport
    driver.start()
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 0)
    driver.write(VIRTIO_MMIO_QUEUE_NUM, 4)
    assert transport.queues[0].size == 16 and transport.ignored_writes == 1
    driver.write(VIRTIO_MMIO_QUEUE_READY, 0)  # vm_del_vq
    assert driver.read(VIRTIO_MMIO_QUEUE_READY) == 0


def test_driver_features_are_fixed_once_features_ok_is_set(machine: Machine) -> None:
    driver, transport = machine.driver, machine.transport
    driver.start()
    accepted = transport.driver_features
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0)
    driver.write(VIRTIO_MMIO_DRIVER_FEATURES, 0)
    assert transport.driver_features == accepted


def test_control_registers_take_only_aligned_32_bit_accesses(machine: Machine) -> None:
    transport = machine.transport
    assert transport.read(VIRTIO_MMIO_MAGIC_VALUE, 2) == 0
    assert transport.read(VIRTIO_MMIO_MAGIC_VALUE + 2, 4) == 0
    transport.write(VIRTIO_MMIO_STATUS, 1, ACKNOWLEDGE)
    assert transport.status == 0
    assert transport.bad_accesses == 3
    transport.write(VIRTIO_MMIO_MAGIC_VALUE, 4, 0)  # read-only
    assert transport.ignored_writes == 1


def test_the_config_space_takes_any_width(machine: Machine) -> None:
    transport = machine.transport
    assert transport.read(VIRTIO_MMIO_CONFIG, 1) == 0x01
    assert transport.read(VIRTIO_MMIO_CONFIG + 1, 2) == 0x0302
    assert transport.read(VIRTIO_MMIO_CONFIG + 4, 4) == 0x08070605
    assert transport.read(VIRTIO_MMIO_CONFIG, 8) == 0x0807060504030201
    assert transport.read(VIRTIO_MMIO_CONFIG + 6, 4) == 0x0807  # past the end reads 0
    transport.write(VIRTIO_MMIO_CONFIG + 2, 2, 0xBEEF)
    assert machine.device.space[2:4] == b"\xef\xbe"


def test_a_config_change_bumps_the_generation_and_interrupts_after_driver_ok(
    machine: Machine,
) -> None:
    driver, transport = machine.driver, machine.transport
    transport.signal_config_change()
    assert driver.read(VIRTIO_MMIO_CONFIG_GENERATION) == 1 and not machine.irq.high
    driver.start()
    transport.signal_config_change()
    assert driver.read(VIRTIO_MMIO_CONFIG_GENERATION) == 2
    assert driver.take_interrupt() == VIRTIO_MMIO_INT_CONFIG


def test_shared_memory_regions_read_as_absent(machine: Machine) -> None:
    driver = machine.driver
    driver.write(VIRTIO_MMIO_SHM_SEL, 0)
    for register in (
        VIRTIO_MMIO_SHM_LEN_LOW,
        VIRTIO_MMIO_SHM_LEN_HIGH,
        VIRTIO_MMIO_SHM_BASE_LOW,
        VIRTIO_MMIO_SHM_BASE_HIGH,
    ):
        assert driver.read(register) == 0xFFFFFFFF  # a length of -1: no such region


def test_a_notify_for_a_queue_that_does_not_exist_is_ignored(machine: Machine) -> None:
    machine.driver.start()
    calls = len(machine.device.calls)
    machine.driver.kick(7)
    assert len(machine.device.calls) == calls and machine.transport.ignored_writes == 1


def test_driver_ok_written_with_refused_features_does_not_start_the_device() -> None:
    """One status write of ACK|DRIVER|FEATURES_OK|DRIVER_OK with features the device
    refuses (no VERSION_1) used to leave DRIVER_OK set without FEATURES_OK."""
    from pyvmm.devices.virtio.rng import VirtioRng

    transport = VirtioMmio(VirtioRng(lambda size: bytes(size)), FakeMemory())
    transport.write(VIRTIO_MMIO_STATUS, 4, ACKNOWLEDGE)
    transport.write(VIRTIO_MMIO_STATUS, 4, ACKNOWLEDGE | DRIVER)
    transport.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0)
    transport.write(VIRTIO_MMIO_STATUS, 4, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    assert transport.read(VIRTIO_MMIO_STATUS, 4) == ACKNOWLEDGE | DRIVER
