"""The virtio-mmio transport, version 2 (Virtio 1.2 §4.2), as a bus device.

A 0x200-byte register window (§4.2.2): 32-bit control registers at
0x000-0x0ff, the device's configuration space from 0x100. Register names are
Linux's include/uapi/linux/virtio_mmio.h, which guest drivers are written
against; the model follows kvmtool's virtio/mmio.c and Firecracker's
devices/virtio/transport/mmio.rs, and is checked against the sequence Linux's
drivers/virtio/virtio_mmio.c uses (`virtio_mmio_probe`, `vm_get_features`,
`vm_finalize_features`, `vm_setup_vq`, `vm_interrupt`).

The status handshake (§2.1, §3.1.1) moves one bit at a time: ACKNOWLEDGE,
DRIVER, FEATURES_OK (latched only if the driver accepted a subset of the
offered features that includes VIRTIO_F_VERSION_1, §2.2.2), DRIVER_OK; FAILED
may come at any point and writing 0 resets the device (§2.4). Queues are set
up between FEATURES_OK and DRIVER_OK, and the device consumes buffers only
after DRIVER_OK (§2.1.2). When the driver breaks a rule of a queue the device
sets DEVICE_NEEDS_RESET, tells the driver with a configuration-change
interrupt and ignores the queues until a reset (§2.1.2).

The interrupt is one level-triggered line, high while InterruptStatus is not
zero (§4.2.3.4): bit 0 for used buffers, bit 1 for a configuration change.
"""

from __future__ import annotations

import threading

from pyvmm.devices.irq import IrqLine, NoIrq
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
    VirtioDevice,
    feature,
)
from pyvmm.devices.virtio.queue import GuestRam, Virtqueue, VirtqueueError
from pyvmm.errors import GuestMemoryError, Log, PyvmmError
from pyvmm.memory.addr import GuestPhysAddr

log = Log(__name__)

# §4.2.2 register offsets (Linux's VIRTIO_MMIO_* names).
VIRTIO_MMIO_MAGIC_VALUE = 0x000
VIRTIO_MMIO_VERSION = 0x004
VIRTIO_MMIO_DEVICE_ID = 0x008
VIRTIO_MMIO_VENDOR_ID = 0x00C
VIRTIO_MMIO_DEVICE_FEATURES = 0x010
VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014
VIRTIO_MMIO_DRIVER_FEATURES = 0x020
VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024
VIRTIO_MMIO_QUEUE_SEL = 0x030
VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034
VIRTIO_MMIO_QUEUE_NUM = 0x038
VIRTIO_MMIO_QUEUE_READY = 0x044
VIRTIO_MMIO_QUEUE_NOTIFY = 0x050
VIRTIO_MMIO_INTERRUPT_STATUS = 0x060
VIRTIO_MMIO_INTERRUPT_ACK = 0x064
VIRTIO_MMIO_STATUS = 0x070
VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080
VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084
VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090  # the spec's QueueDriverLow
VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094
VIRTIO_MMIO_QUEUE_USED_LOW = 0x0A0  # the spec's QueueDeviceLow
VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0A4
VIRTIO_MMIO_SHM_SEL = 0x0AC
VIRTIO_MMIO_SHM_LEN_LOW = 0x0B0
VIRTIO_MMIO_SHM_LEN_HIGH = 0x0B4
VIRTIO_MMIO_SHM_BASE_LOW = 0x0B8
VIRTIO_MMIO_SHM_BASE_HIGH = 0x0BC
VIRTIO_MMIO_QUEUE_RESET = 0x0C0  # only with VIRTIO_F_RING_RESET, not offered: reads 0
VIRTIO_MMIO_CONFIG_GENERATION = 0x0FC
VIRTIO_MMIO_CONFIG = 0x100

MMIO_WINDOW_SIZE = 0x200  # QEMU's and the spec's device-tree example: reg = <base 0x200>
MAGIC_VALUE = 0x74726976  # "virt", little-endian
VERSION = 2  # the non-legacy register layout
# The vendor QEMU reports ("QEMU" read little-endian). Linux binds drivers on
# the device ID alone (VIRTIO_DEV_ANY_ID vendor), so the choice is cosmetic.
VENDOR_ID = 0x554D4551

# InterruptStatus / InterruptACK bits (§4.2.2).
VIRTIO_MMIO_INT_VRING = 1  # used buffer notification
VIRTIO_MMIO_INT_CONFIG = 2  # configuration change notification

REGISTER_SIZE = 4
LOW_32 = 0xFFFFFFFF
# SHMLen and SHMBase of a region that does not exist read as -1 (§4.2.2): there are none.
NO_SHARED_MEMORY = LOW_32
# Offered for every device: the version 1 interface and the ring features queue.py has.
RING_FEATURES = feature(VIRTIO_F_VERSION_1, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX)
# Each status bit the driver sets needs the one before it (§3.1.1); FAILED needs nothing.
STATUS_PREREQUISITE = {
    ACKNOWLEDGE: 0,
    DRIVER: ACKNOWLEDGE,
    FEATURES_OK: DRIVER,
    DRIVER_OK: FEATURES_OK,
    FAILED: 0,
}
DRIVER_STATUS_BITS = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED
# The queue's layout registers: attribute of the Virtqueue and which half.
QUEUE_ADDRESS_REGISTERS = {
    VIRTIO_MMIO_QUEUE_DESC_LOW: ("desc_table", 0),
    VIRTIO_MMIO_QUEUE_DESC_HIGH: ("desc_table", 32),
    VIRTIO_MMIO_QUEUE_AVAIL_LOW: ("avail_ring", 0),
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH: ("avail_ring", 32),
    VIRTIO_MMIO_QUEUE_USED_LOW: ("used_ring", 0),
    VIRTIO_MMIO_QUEUE_USED_HIGH: ("used_ring", 32),
}


class VirtioMmio:
    """One virtio device behind a virtio-mmio register window; a BusDevice.

    `device` is the VirtioDevice, `memory` the guest RAM its queues live in,
    `irq` the line the window's interrupt is wired to. Every entry point
    (`read`, `write`, `notify`, `signal_config_change`) holds `lock`, a
    re-entrant lock: a vCPU thread serves the registers while an I/O thread
    may serve a notification that came through an ioeventfd. Counters for a report:
    `bad_accesses` (control registers not read or written as aligned 32-bit
    words, §4.2.2.2), `ignored_writes` (writes that break the handshake or
    arrive in the wrong state), `failures` (times the device went to
    DEVICE_NEEDS_RESET; `last_failure` says why).
    """

    def __init__(self, device: VirtioDevice, memory: GuestRam, irq: IrqLine | None = None) -> None:
        self.device = device
        self.lock = threading.RLock()
        # Set (from any thread) when the run ends: the device cuts long work short.
        self.stopping = False
        self._irq: IrqLine = irq if irq is not None else NoIrq()
        self._irq_level = False
        self.queues = [Virtqueue(memory, size) for size in device.queue_max_sizes]
        self.config_generation = 0
        self.bad_accesses = 0
        self.ignored_writes = 0
        self.failures = 0
        self.last_failure: PyvmmError | None = None
        device.attach(self)
        self.reset()

    def reset(self) -> None:
        """§2.4: status, features, queues and interrupts back to 0, and the device reset."""
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        for queue in self.queues:
            queue.reset()
        self.device.reset()
        self._update_irq()

    @property
    def device_features(self) -> int:
        """Every feature bit offered: the device's and the transport's."""
        return self.device.features | RING_FEATURES

    # -- the bus interface -------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        with self.lock:
            return self._read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        with self.lock:
            self._write(offset, size, value)

    def _read(self, offset: int, size: int) -> int:
        if offset >= VIRTIO_MMIO_CONFIG:
            start = offset - VIRTIO_MMIO_CONFIG
            data = self.device.config()[start : start + size]
            return int.from_bytes(data.ljust(size, b"\0"), "little")
        if size != REGISTER_SIZE or offset % REGISTER_SIZE:
            self.bad_accesses += 1
            return 0
        return self._read_register(offset)

    def _write(self, offset: int, size: int, value: int) -> None:
        if offset >= VIRTIO_MMIO_CONFIG:
            self.device.write_config(offset - VIRTIO_MMIO_CONFIG, value.to_bytes(size, "little"))
        elif size != REGISTER_SIZE or offset % REGISTER_SIZE:
            self.bad_accesses += 1
        else:
            self._write_register(offset, value)

    def _read_register(self, offset: int) -> int:
        queue = self._selected_queue()
        if offset == VIRTIO_MMIO_MAGIC_VALUE:
            return MAGIC_VALUE
        if offset == VIRTIO_MMIO_VERSION:
            return VERSION
        if offset == VIRTIO_MMIO_DEVICE_ID:
            return self.device.device_id
        if offset == VIRTIO_MMIO_VENDOR_ID:
            return VENDOR_ID
        if offset == VIRTIO_MMIO_DEVICE_FEATURES:
            # DeviceFeaturesSel picks bits 0-31 (0) or 32-63 (1); no device has more.
            if self.device_features_sel > 1:
                return 0
            return (self.device_features >> (32 * self.device_features_sel)) & LOW_32
        if offset == VIRTIO_MMIO_QUEUE_NUM_MAX:
            return queue.max_size if queue is not None else 0  # 0: no such queue
        if offset == VIRTIO_MMIO_QUEUE_READY:
            return int(queue is not None and queue.ready)
        if offset == VIRTIO_MMIO_INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == VIRTIO_MMIO_STATUS:
            return self.status
        if VIRTIO_MMIO_SHM_LEN_LOW <= offset <= VIRTIO_MMIO_SHM_BASE_HIGH:
            return NO_SHARED_MEMORY
        if offset == VIRTIO_MMIO_CONFIG_GENERATION:
            return self.config_generation & LOW_32
        return 0  # write-only and reserved registers

    def _write_register(self, offset: int, value: int) -> None:
        if offset == VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES:
            self._write_driver_features(value)
        elif offset == VIRTIO_MMIO_QUEUE_SEL:
            self.queue_sel = value
        elif offset == VIRTIO_MMIO_QUEUE_NOTIFY:
            self._notify(value)
        elif offset == VIRTIO_MMIO_INTERRUPT_ACK:
            self.interrupt_status &= ~value
            self._update_irq()
        elif offset == VIRTIO_MMIO_STATUS:
            self._write_status(value)
        elif offset in (VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_READY) or (
            offset in QUEUE_ADDRESS_REGISTERS
        ):
            self._write_queue(offset, value)
        else:
            self.ignored_writes += 1  # read-only, reserved, SHMSel (no regions), QueueReset

    # -- feature negotiation and status (§2.1, §2.2, §3.1.1) ----------------

    def _write_driver_features(self, value: int) -> None:
        if self.status & FEATURES_OK or self.driver_features_sel > 1:
            self.ignored_writes += 1  # fixed after FEATURES_OK (§3.1.1 step 5), or no such bits
            return
        shift = 32 * self.driver_features_sel
        self.driver_features = (self.driver_features & ~(LOW_32 << shift)) | (value << shift)

    def _write_status(self, value: int) -> None:
        if value == 0:
            self.reset()
            return
        # DEVICE_NEEDS_RESET is the device's bit: a driver writing back what it read keeps it.
        new = (value & DRIVER_STATUS_BITS) | (self.status & DEVICE_NEEDS_RESET)
        added = new & ~self.status
        out_of_order = any(
            added & bit and prerequisite & ~new for bit, prerequisite in STATUS_PREREQUISITE.items()
        )
        unknown = value & ~(DRIVER_STATUS_BITS | DEVICE_NEEDS_RESET)
        if self.status & ~new or unknown or out_of_order:
            self.ignored_writes += 1  # §2.1.1: a driver never clears a bit, and sets them in order
            return
        if added & FEATURES_OK and not self._accept_features():
            # §3.1.1 step 6: the driver reads FEATURES_OK back and gives up; a write
            # that also set DRIVER_OK does not get the device going without features.
            new &= ~(FEATURES_OK | DRIVER_OK)
            added &= ~DRIVER_OK
        self.status = new
        if added & DRIVER_OK:
            for index in range(len(self.queues)):
                self._notify(index)  # buffers made available before DRIVER_OK

    def _accept_features(self) -> bool:
        accepted = self.driver_features
        if accepted & ~self.device_features or not accepted & feature(VIRTIO_F_VERSION_1):
            return False
        for queue in self.queues:
            queue.event_idx = bool(accepted & feature(VIRTIO_F_EVENT_IDX))
            queue.indirect = bool(accepted & feature(VIRTIO_F_INDIRECT_DESC))
        self.device.ack_features(accepted)
        return True

    # -- queues --------------------------------------------------------------

    def _selected_queue(self) -> Virtqueue | None:
        count = min(len(self.queues), self.device.queue_count)
        return self.queues[self.queue_sel] if self.queue_sel < count else None

    def _write_queue(self, offset: int, value: int) -> None:
        queue = self._selected_queue()
        # §4.2.2.2 and §3.1.1: queues are set up after FEATURES_OK, and left alone while ready.
        if queue is None or not self.status & FEATURES_OK:
            self.ignored_writes += 1
        elif offset == VIRTIO_MMIO_QUEUE_READY:
            if value and not queue.ready:
                self._activate(queue)
            elif not value:
                queue.ready = False
        elif queue.ready:
            self.ignored_writes += 1
        elif offset == VIRTIO_MMIO_QUEUE_NUM:
            queue.size = value
        else:
            name, shift = QUEUE_ADDRESS_REGISTERS[offset]
            old = getattr(queue, name)
            setattr(queue, name, GuestPhysAddr((old & ~(LOW_32 << shift)) | (value << shift)))

    def _activate(self, queue: Virtqueue) -> None:
        try:
            queue.activate()
        except VirtqueueError as error:
            self._fail(error)

    def notify(self, queue_index: int) -> None:
        """Let the device process queue `queue_index`: a QueueNotify write, or an ioeventfd.

        Ignored (and counted) for a queue that does not exist; does nothing
        before DRIVER_OK, while the device needs a reset, or for a queue that
        is not ready. Raises the used-buffer interrupt if the device used
        buffers and the driver wants to hear of it (§2.7.7).
        """
        with self.lock:
            self._notify(queue_index)

    def _notify(self, queue_index: int) -> None:
        if queue_index >= len(self.queues):
            self.ignored_writes += 1
            return
        queue = self.queues[queue_index]
        if self.status & (DRIVER_OK | DEVICE_NEEDS_RESET) != DRIVER_OK or not queue.ready:
            return
        try:
            used = self.device.process(queue_index, queue)
        except (VirtqueueError, GuestMemoryError) as error:
            self._fail(error)
            return
        if used and queue.needs_notification():
            self._interrupt(VIRTIO_MMIO_INT_VRING)

    # -- interrupts ------------------------------------------------------------

    def signal_config_change(self) -> None:
        """The device's configuration space changed (§2.5, §4.2.2 ConfigGeneration)."""
        with self.lock:
            self.config_generation += 1
            if self.status & DRIVER_OK:
                self._interrupt(VIRTIO_MMIO_INT_CONFIG)

    def _fail(self, error: PyvmmError) -> None:
        """§2.1.2: DEVICE_NEEDS_RESET, and a configuration-change interrupt once DRIVER_OK."""
        self.failures += 1
        self.last_failure = error
        log.warning(
            "virtio-mmio %s: %s; the device needs a reset", type(self.device).__name__, error
        )
        self.status |= DEVICE_NEEDS_RESET
        if self.status & DRIVER_OK:
            self._interrupt(VIRTIO_MMIO_INT_CONFIG)

    def _interrupt(self, bits: int) -> None:
        self.interrupt_status |= bits
        self._update_irq()

    def _update_irq(self) -> None:
        level = self.interrupt_status != 0
        if level != self._irq_level:
            self._irq_level = level
            self._irq.set_level(level)
