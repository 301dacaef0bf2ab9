"""Where the guest's serial output goes on the host."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

TAIL_SIZE = 8192  # bytes of output kept for the report of an abnormal end


class ConsoleWriter:
    """Writes guest bytes straight to a file descriptor, unbuffered.

    Unbuffered so that output interleaves correctly with the VMM's own
    messages and survives a crash of the guest. If the host side goes away
    (a closed pipe), output is dropped and counted: the guest keeps running.

    `rate_limit` (bytes per second, with a burst of one second's worth) caps
    what a flooding guest can push at the terminal or a log; bytes over it
    are dropped and counted, never queued, so memory stays bounded. The last
    `TAIL_SIZE` bytes are kept for the report of an abnormal end.
    """

    def __init__(
        self,
        fd: int,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fd = fd
        self.bytes_written = 0
        self.bytes_dropped = 0  # the host side went away
        self.bytes_over_rate = 0  # dropped by the rate limit
        self.rate_limit = rate_limit
        self._clock = clock
        self._tokens = float(rate_limit or 0)
        self._refilled = clock()
        self._tail = bytearray()

    def __call__(self, data: bytes) -> None:
        if self.rate_limit is not None:
            data = self._within_rate(data)
        self._keep_tail(data)
        if self.fd < 0:
            self.bytes_dropped += len(data)
            return
        try:
            while data:
                written = os.write(self.fd, data)
                self.bytes_written += written
                data = data[written:]
        except OSError:
            self.bytes_dropped += len(data)
            self.fd = -1

    @property
    def ends_mid_line(self) -> bool:
        """The guest's last output did not end its line (a terminal's cursor is still on it)."""
        return bool(self._tail) and self._tail[-1:] not in (b"\n", b"\r")

    def tail_lines(self, count: int) -> list[str]:
        """The last `count` lines the guest printed (decoded leniently, control bytes shown)."""
        text = self._tail.decode("utf-8", "replace").replace("\r\n", "\n")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return [_printable(line) for line in lines[-count:]] if count > 0 else []

    def _within_rate(self, data: bytes) -> bytes:
        assert self.rate_limit is not None
        now = self._clock()
        self._tokens = min(
            float(self.rate_limit), self._tokens + (now - self._refilled) * self.rate_limit
        )
        self._refilled = now
        allowed = min(len(data), int(self._tokens))
        self._tokens -= allowed
        self.bytes_over_rate += len(data) - allowed
        return data[:allowed]

    def _keep_tail(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > 2 * TAIL_SIZE:  # trim now and then, not on every byte
            del self._tail[:-TAIL_SIZE]


def _printable(line: str) -> str:
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch):02x}" for ch in line)
