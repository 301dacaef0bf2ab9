from __future__ import annotations

import os

from pyvmm.console.output import ConsoleWriter
from pyvmm.devices.debug_exit import DebugExit, debug_exit_status
from pyvmm.devices.sink import IgnoredPort


def test_debug_exit_follows_qemu() -> None:
    values: list[int] = []
    device = DebugExit(values.append)
    device.write(0, 1, 0x2A)
    assert values == [0x2A]
    assert debug_exit_status(0x2A) == 85
    assert debug_exit_status(0) == 1
    assert debug_exit_status(0x7F) == 0xFF
    assert device.read(0, 4) == 0xFFFFFFFF


def test_ignored_port() -> None:
    port = IgnoredPort()
    port.write(0, 1, 0x55)
    assert port.read(0, 1) == 0xFF


def test_console_writes_and_survives_a_closed_pipe() -> None:
    read_end, write_end = os.pipe()
    console = ConsoleWriter(write_end)
    console(b"hi")
    assert os.read(read_end, 10) == b"hi"
    os.close(read_end)  # the reader goes away: writes now fail with EPIPE
    console(b"lost")
    console(b"more")
    os.close(write_end)
    assert (console.bytes_written, console.bytes_dropped) == (2, 8)
