"""virtio-console with one port and no control queues (Virtio 1.2 §5.3).

Queue 0 is port 0's receiveq (host to guest), queue 1 its transmitq (guest
to host); VIRTIO_CONSOLE_F_MULTIPORT is not offered, so those are the only
queues (§5.3.2). Linux's drivers/char/virtio_console.c then makes port 0 an
hvc console (/dev/hvc0; `console=hvc0`).

What the guest transmits goes to the `output` callable as it arrives. Host
input is kept in a bounded buffer by `push_input` and copied into the receive
buffers the driver makes available, as many bytes as fit. The window size
(cols, rows) is offered with VIRTIO_CONSOLE_F_SIZE when given, and
VIRTIO_CONSOLE_F_EMERG_WRITE lets a driver print a byte through the
configuration space before any queue works (§5.3.5).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pyvmm.devices.virtio.device import VIRTIO_ID_CONSOLE, VirtioDeviceBase, feature
from pyvmm.devices.virtio.queue import BufferReader, BufferWriter, Virtqueue

# §5.3.3 feature bits.
VIRTIO_CONSOLE_F_SIZE = 0
VIRTIO_CONSOLE_F_MULTIPORT = 1
VIRTIO_CONSOLE_F_EMERG_WRITE = 2

# §5.3.4 struct virtio_console_config: le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr.
CONSOLE_CONFIG = struct.Struct("<HHII")
EMERG_WR_OFFSET = 8

RECEIVEQ = 0  # port 0, host to guest
TRANSMITQ = 1  # port 0, guest to host
QUEUE_SIZE = 256
# Host input kept while the guest has no receive buffers; bounded so that a
# guest that never reads cannot make the VMM hold unbounded memory.
INPUT_CAPACITY = 64 * 1024
OUTPUT_CHUNK = 64 * 1024  # bytes handed to `output` at a time


class VirtioConsole(VirtioDeviceBase):
    """A one-port virtio console.

    `output(data)` receives what the guest writes; `size` is (cols, rows) of
    the host's terminal, or None to leave the size to the guest.
    """

    device_id = VIRTIO_ID_CONSOLE
    queue_max_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(
        self, output: Callable[[bytes], None], size: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self._output = output
        self._size = size
        self.features = feature(VIRTIO_CONSOLE_F_EMERG_WRITE)
        if size is not None:
            self.features |= feature(VIRTIO_CONSOLE_F_SIZE)
        self._input = bytearray()

    @property
    def input_space(self) -> int:
        """Bytes `push_input` can take now."""
        return INPUT_CAPACITY - len(self._input)

    def push_input(self, data: bytes) -> int:
        """Queue host input for the guest; returns how many bytes were taken (see `input_space`).

        The input goes into receive buffers at once if the driver made some
        available, else as soon as it does. Input kept across a device reset
        reaches the next driver.
        """
        taken = min(len(data), self.input_space)
        self._input += data[:taken]
        if self._input:
            self.transport.notify(RECEIVEQ)
        return taken

    def resize(self, cols: int, rows: int) -> None:
        """The host terminal's new size, told to the driver by a configuration change."""
        self._size = (cols, rows)
        self.transport.signal_config_change()

    def config(self) -> bytes:
        cols, rows = self._size if self._size is not None else (0, 0)
        return CONSOLE_CONFIG.pack(cols, rows, 0, 0)

    def write_config(self, offset: int, data: bytes) -> None:
        # §5.3.5.1: a write to emerg_wr prints its low byte, even on an unconfigured device.
        if offset == EMERG_WR_OFFSET and data:
            self._output(data[:1])

    def process(self, queue_index: int, queue: Virtqueue) -> bool:
        if queue_index == RECEIVEQ:
            return self._receive(queue)
        if queue_index == TRANSMITQ:
            return self._transmit(queue)
        return False

    def _receive(self, queue: Virtqueue) -> bool:
        used = False
        while self._input and (chain := queue.pop()) is not None:
            taken = BufferWriter(queue.memory, chain.writable).write(self._input)
            del self._input[:taken]
            queue.push(chain.head, taken)
            used = True
        return used

    def _transmit(self, queue: Virtqueue) -> bool:
        used = False
        while (chain := queue.pop()) is not None:
            reader = BufferReader(queue.memory, chain.readable)
            while reader.remaining:
                if self.transport.stopping:  # the run ended: the rest goes nowhere
                    return used
                self._output(reader.read(OUTPUT_CHUNK))
            queue.push(chain.head, 0)
            used = True
        return used
