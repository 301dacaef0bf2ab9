"""Port I/O exits: split string I/O (`rep ins/outs`) into unit accesses."""

from __future__ import annotations

from pyvmm.devices.bus import Bus
from pyvmm.kvm.exits import IoIn, IoOut


def handle_io_out(exit: IoOut, bus: Bus) -> None:
    size = exit.size
    data = exit.data
    if exit.count == 1:
        bus.write(exit.port, size, int.from_bytes(data, "little"))
        return
    for start in range(0, len(data), size):
        bus.write(exit.port, size, int.from_bytes(data[start : start + size], "little"))


def handle_io_in(exit: IoIn, bus: Bus) -> None:
    """Fill the exit's buffer from the bus; DeviceError for an answer wider than `size`."""
    size = exit.size
    buffer = exit.buffer
    for start in range(0, exit.count * size, size):
        value = bus.read(exit.port, size)
        if value >> (8 * size) or value < 0:
            raise bus.read_too_wide(exit.port, size, value)
        buffer[start : start + size] = value.to_bytes(size, "little")
