"""The host side of the console: output rate limit and tail, bounded input, terminal mode."""

from __future__ import annotations

import os
import threading
import time

from pyvmm.console.input import (
    InputBuffer,
    SerialWithInput,
    StdinReader,
    guest_terminal,
    readable_input,
)
from pyvmm.console.output import TAIL_SIZE, ConsoleWriter
from pyvmm.devices.serial import Serial16550

LSR = 5
LSR_DR = 0x01


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pipe_writer() -> tuple[ConsoleWriter, int]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    return ConsoleWriter(write_end), read_end


def drain(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_output_goes_straight_to_the_fd() -> None:
    writer, read_end = pipe_writer()
    writer(b"hello\n")
    assert drain(read_end) == b"hello\n"
    assert writer.bytes_written == 6
    os.close(read_end)
    os.close(writer.fd)


def test_a_closed_reader_drops_output_and_the_guest_goes_on() -> None:
    writer, read_end = pipe_writer()
    os.close(read_end)
    write_end = writer.fd
    writer(b"lost")
    writer(b"also lost")
    assert (writer.bytes_written, writer.bytes_dropped) == (0, 13)
    os.close(write_end)


def test_rate_limit_drops_the_excess_and_refills_with_time() -> None:
    clock = FakeClock()
    writer = ConsoleWriter(-1, rate_limit=100, clock=clock)
    for _ in range(250):
        writer(b"x")
    assert writer.bytes_over_rate == 150  # a burst of one second's worth got through
    clock.now += 0.5
    for _ in range(100):
        writer(b"y")
    assert writer.bytes_over_rate == 200  # half a second refilled 50 bytes
    clock.now += 1000  # the bucket never holds more than one second's worth
    writer(b"z" * 500)
    assert writer.bytes_over_rate == 600


def test_without_a_rate_limit_nothing_is_dropped_for_rate() -> None:
    writer = ConsoleWriter(-1)
    writer(b"a" * 100_000)
    assert writer.bytes_over_rate == 0


def test_tail_keeps_the_last_lines_and_stays_bounded() -> None:
    writer = ConsoleWriter(-1)
    for number in range(10_000):
        writer(f"line {number}\r\n".encode())
    assert writer.tail_lines(3) == ["line 9997", "line 9998", "line 9999"]
    assert len(writer._tail) <= 2 * TAIL_SIZE
    assert writer.tail_lines(0) == []


def test_tail_shows_control_bytes_and_a_partial_last_line() -> None:
    writer = ConsoleWriter(-1)
    writer(b"ok\n\x1b[2Jbell\x07 and \xff")
    assert writer.tail_lines(5) == ["ok", "\\x1b[2Jbell\\x07 and \ufffd"]


def test_ends_mid_line_tells_whether_the_cursor_is_after_guest_text() -> None:
    writer = ConsoleWriter(-1)
    assert not writer.ends_mid_line
    writer(b"abc")
    assert writer.ends_mid_line
    writer(b"\r\n")
    assert not writer.ends_mid_line


def test_input_buffer_never_holds_more_than_its_capacity() -> None:
    buffer = InputBuffer(10)
    assert buffer.put(b"0123456789abc") == 10
    assert buffer.put(b"more") == 0
    assert buffer.take(4) == b"0123"
    assert buffer.space == 4
    assert buffer.put(b"abcdef") == 4
    assert buffer.take(100) == b"456789abcd"


def test_serial_is_topped_up_from_the_buffer_when_the_guest_looks() -> None:
    buffer = InputBuffer(1000)
    buffer.put(bytes(range(200)))
    serial = Serial16550(lambda data: None)
    device = SerialWithInput(serial, buffer)
    received = bytearray()
    while device.read(LSR, 1) & LSR_DR:
        received.append(device.read(0, 1))
    assert bytes(received) == bytes(range(200))  # nothing lost, in order
    assert len(buffer) == 0


def test_reader_stops_at_capacity_then_resumes_as_the_guest_reads() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    buffer = InputBuffer(1000)
    threads = threading.active_count()
    with StdinReader(read_end, buffer):
        sent = os.write(write_end, b"a" * 5000)
        assert wait_until(lambda: len(buffer) == 1000)
        time.sleep(0.1)
        assert len(buffer) == 1000  # full: the rest stays in the pipe
        assert buffer.take(600) == b"a" * 600
        assert wait_until(lambda: len(buffer) == 1000)  # resumed reading
        assert threading.active_count() == threads + 1
    assert threading.active_count() == threads  # the reader is gone
    assert sent == 5000
    os.close(read_end)
    os.close(write_end)


def test_reader_sees_end_of_file_and_close_releases_everything() -> None:
    read_end, write_end = os.pipe()
    fds_before = set(os.listdir("/proc/self/fd"))
    buffer = InputBuffer(64)
    reader = StdinReader(read_end, buffer)
    os.write(write_end, b"bye")
    os.close(write_end)
    assert wait_until(lambda: buffer.eof)
    reader.close()
    reader.close()  # twice is harmless
    os.close(read_end)
    assert buffer.take(10) == b"bye"
    assert set(os.listdir("/proc/self/fd")) <= fds_before


def test_terminal_mode_is_changed_for_the_run_and_restored() -> None:
    import pty
    import termios

    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    with guest_terminal(terminal):
        during = termios.tcgetattr(terminal)
        assert not during[3] & (termios.ICANON | termios.ECHO)
        assert during[3] & termios.ISIG  # Ctrl-C still ends the run
    assert termios.tcgetattr(terminal) == before
    os.close(controller)
    os.close(terminal)


def test_a_pipe_is_left_alone_by_the_terminal_mode_and_is_readable() -> None:
    read_end, write_end = os.pipe()
    with guest_terminal(read_end):
        pass
    assert readable_input(read_end)
    os.close(read_end)
    os.close(write_end)
    assert not readable_input(read_end)  # closed


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False
