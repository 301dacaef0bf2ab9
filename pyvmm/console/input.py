"""Host input for the guest's serial port: stdin, a bounded buffer, the terminal mode.

A reader thread moves bytes from stdin into an `InputBuffer` whose size the
user sets (`--input-buffer`). When the buffer is full the thread stops
reading, so a guest that never reads cannot make pyvmm hold more than that:
the rest waits in the pipe or the terminal, and nothing is lost.

The serial port takes bytes from the buffer (`SerialWithInput`), or with
`--console virtio` the virtio-console does (`DeviceWithInput` around its
transport), which keeps the device itself a pure state machine: whenever
the guest touches it and it has room, and as soon as input arrives, so that a
guest waiting in `hlt` for its receive interrupt gets it. The reader thread never touches the UART
itself: it asks a vCPU thread to (VcpuGroup.post), because devices are only
ever used from vCPU threads (under the device lock when there are several).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable, Iterator

from pyvmm.closing import ClosesOnExit
from pyvmm.devices.serial import Serial16550

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from pyvmm.devices.bus import BusDevice

DEFAULT_INPUT_BUFFER = 64 * 1024
READ_CHUNK = 4096


class InputBuffer:
    """Bytes from the host waiting for the guest; never more than `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data = bytearray()
        self._changed = threading.Condition()
        self.eof = False
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the thread that puts) after each `put` that stored bytes."""
        self._listeners.append(callback)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def space(self) -> int:
        return self.capacity - len(self._data)

    def put(self, data: bytes) -> int:
        """Store what fits; returns how many bytes were taken."""
        with self._changed:
            taken = min(len(data), self.space)
            self._data += data[:taken]
        if taken:
            for callback in self._listeners:
                callback()
        return taken

    def take(self, limit: int) -> bytes:
        with self._changed:
            data = bytes(self._data[:limit])
            del self._data[:limit]
            if data:
                self._changed.notify_all()
            return data

    def wait_for_space(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.space > 0, timeout)

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


class StdinReader(ClosesOnExit):
    """A thread that copies `fd` into `buffer` while there is room, until EOF or close."""

    def __init__(self, fd: int, buffer: InputBuffer) -> None:
        self.fd = fd
        self.buffer = buffer
        self._closing = False
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._copy, name="stdin", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while not self._closing:
            if not self.buffer.wait_for_space(timeout=0.5):
                continue  # full: leave the rest in the pipe until the guest reads
            events = dict(poller.poll())
            if self._wake_read in events or self._closing:
                return
            if self.fd not in events:
                continue
            try:
                data = os.read(self.fd, min(READ_CHUNK, self.buffer.space))
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.buffer.eof = True
                return
            self.buffer.put(data)

    def close(self) -> None:
        if self._wake_write < 0:
            return
        self._closing = True
        os.write(self._wake_write, b"x")
        self.buffer.wake()
        self._thread.join()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._wake_write = -1


class DeviceWithInput:
    """A bus device topped up from the host's input buffer (the guest's console input).

    `space()` says how many bytes the device takes now and `enqueue(data)`
    hands them over. On every guest access; and, given `post`
    (VcpuGroup.post: run a callable in a vCPU thread between two KVM_RUNs),
    as soon as the buffer gets bytes, so that the device raises its interrupt
    without the guest polling.
    """

    def __init__(
        self,
        device: BusDevice,
        space: Callable[[], int],
        enqueue: Callable[[bytes], object],
        buffer: InputBuffer,
        post: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.device = device
        self._space = space
        self._enqueue = enqueue
        self.buffer = buffer
        self._post = post
        self._posted = False  # a refill is already on its way: one is enough
        if post is not None:
            buffer.listen(self._on_input)

    def _on_input(self) -> None:
        if not self._posted and self._post is not None:
            self._posted = True
            self._post(self.refill)

    def refill(self) -> None:
        """Move what fits from the buffer into the device (a vCPU thread only)."""
        self._posted = False
        self._refill()

    def read(self, offset: int, size: int) -> int:
        self._refill()
        return self.device.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.device.write(offset, size, value)
        self._refill()

    def _refill(self) -> None:
        space = self._space()
        if space and len(self.buffer):
            self._enqueue(self.buffer.take(space))


class SerialWithInput(DeviceWithInput):
    """The 16550 on the bus, topped up from the host's input buffer into its receive FIFO."""

    def __init__(
        self,
        serial: Serial16550,
        buffer: InputBuffer,
        post: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.serial = serial
        super().__init__(serial, lambda: serial.input_space, serial.enqueue_input, buffer, post)


def readable_input(fd: int) -> bool:
    """Whether pyvmm may read `fd`: not a terminal, or one whose foreground is ours.

    A background job that reads or reconfigures its terminal gets stopped
    by SIGTTIN/SIGTTOU, so in the background the guest just gets no input.
    """
    try:
        os.fstat(fd)
    except OSError:
        return False  # closed
    if not os.isatty(fd):
        return True
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return True  # not our controlling terminal: job control cannot stop us


@contextlib.contextmanager
def guest_terminal(fd: int) -> Iterator[None]:
    """Keystrokes go to the guest one by one, unechoed; the old mode comes back after.

    ISIG stays on, so Ctrl-C still reaches pyvmm as SIGINT and ends the run.
    Not a terminal (a pipe, /dev/null): nothing to change.
    """
    if not os.isatty(fd):  # what tcgetattr would say (ENOTTY), without importing termios
        yield
        return
    import termios

    try:
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError):
        yield
        return
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflag
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
