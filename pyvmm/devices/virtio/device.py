"""What a virtio device and its transport say to each other, and the numbers they share.

A device (console, block, entropy, balloon) knows its requests and its
configuration space; the transport (mmio.py) knows the registers, the status
handshake, the rings' addresses and the interrupt. The device is handed each
ready `Virtqueue` when the driver notifies it, and calls back into the
transport (`Transport`) when the host has something for the driver: input for
a receive queue, a new balloon target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyvmm.devices.virtio.queue import Virtqueue

# §2.1 Device Status Field.
ACKNOWLEDGE = 1
DRIVER = 2
DRIVER_OK = 4
FEATURES_OK = 8
DEVICE_NEEDS_RESET = 64
FAILED = 128

# §6 Reserved Feature Bits (bit numbers, as the spec and Linux give them).
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32

# §5 Device Types: the device IDs.
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_CONSOLE = 3
VIRTIO_ID_ENTROPY = 4
VIRTIO_ID_BALLOON = 5


def feature(*bits: int) -> int:
    """The feature mask with `bits` set: feature(VIRTIO_F_VERSION_1) == 1 << 32."""
    mask = 0
    for bit in bits:
        mask |= 1 << bit
    return mask


class Transport(Protocol):
    """What a device may ask of its transport, outside a `process` call.

    `stopping` turns True when the run is ending: a device in the middle of
    long work (a huge chain to a slow terminal, gigabytes of disk reads)
    stops at its next piece instead of keeping the VMM past the run's end.
    """

    stopping: bool

    def notify(self, queue_index: int) -> None:
        """Run the device's `process` on that queue now, as a driver notification would."""

    def signal_config_change(self) -> None:
        """The configuration space changed: new generation, config-change interrupt (§2.5)."""


class VirtioDevice(Protocol):
    """A device as the transport sees it.

    `features` is the mask of device-specific feature bits it offers (the
    transport adds the ring and version bits); `queue_max_sizes` gives one
    maximum size (a power of 2) per virtqueue. `config()` is the whole
    configuration space now, little-endian (§2.5); `write_config` gets the
    driver's bytes at an offset into it. `process` consumes what the driver
    made available on one queue and returns whether it used any buffer; it
    raises a VirtqueueError when the driver broke a rule. `reset` is §2.4's
    device reset.
    """

    device_id: int
    features: int
    queue_max_sizes: tuple[int, ...]

    @property
    def queue_count(self) -> int:
        """How many of the queues exist with the features the driver accepted."""
        ...

    def attach(self, transport: Transport) -> None: ...

    def ack_features(self, features: int) -> None: ...

    def config(self) -> bytes: ...

    def write_config(self, offset: int, data: bytes) -> None: ...

    def process(self, queue_index: int, queue: Virtqueue) -> bool: ...

    def reset(self) -> None: ...


class Unattached:
    """The transport of a device not yet on a bus: nothing to notify."""

    stopping = False

    def notify(self, queue_index: int) -> None:
        return None

    def signal_config_change(self) -> None:
        return None


class VirtioDeviceBase:
    """The parts the devices here share: no config space, and the features the driver accepted."""

    device_id = 0
    features = 0
    queue_max_sizes: tuple[int, ...] = ()

    def __init__(self) -> None:
        self.transport: Transport = Unattached()
        self.acked_features = 0

    @property
    def queue_count(self) -> int:
        return len(self.queue_max_sizes)

    def attach(self, transport: Transport) -> None:
        self.transport = transport

    def ack_features(self, features: int) -> None:
        self.acked_features = features

    def config(self) -> bytes:
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        return None  # a read-only configuration space ignores writes

    def reset(self) -> None:
        self.acked_features = 0
