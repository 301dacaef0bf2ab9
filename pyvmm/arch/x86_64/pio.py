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
    size = exit.size
    buffer = exit.buffer
    for start in range(0, exit.count * size, size):
        buffer[start : start + size] = bus.read(exit.port, size).to_bytes(size, "little")
