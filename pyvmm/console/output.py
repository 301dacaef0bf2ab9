"""Where the guest's serial output goes on the host."""

from __future__ import annotations

import errno
import os
import select
import time
from collections.abc import Callable

TAIL_SIZE = 8192  # bytes of output kept for the report of an abnormal end
TAIL_LINE_WIDTH = 160  # characters of one tail line a report shows (the rest is counted)
_TAIL_LINE_END = 40  # of those, the line's last characters (the latest output)


class ConsoleWriter:
    """Writes guest bytes straight to a file descriptor, unbuffered.

    Unbuffered so that output interleaves correctly with the VMM's own
    messages and survives a crash of the guest. When a write fails, output
    from then on is dropped and counted, and the guest keeps running, except
    when the reader went away (EPIPE: a closed pipe or socket) and
    `on_reader_gone` is set: it is called once, from the thread that wrote
    (a vCPU's, inside its exit dispatch), so that the owner can end the run
    as a program writing to a closed pipe ends (the CLI: by SIGPIPE).
    `write_error` keeps the first error (an OSError) for the end-of-run report.

    `rate_limit` (bytes per second, with a burst of one second's worth) caps
    what a flooding guest can push at the terminal or a log; bytes over it
    are dropped and counted, never queued, so memory stays bounded. The last
    `TAIL_SIZE` bytes are kept for the report of an abnormal end. `name`
    names the destination in messages ("stdout").
    """

    def __init__(
        self,
        fd: int,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        on_reader_gone: Callable[[], None] | None = None,
    ) -> None:
        self.fd = fd  # -1 once a write failed: what follows is dropped
        self._destination_fd = fd
        self.name = name or f"fd {fd}"
        self.bytes_written = 0
        self.bytes_dropped = 0  # a write failed: the host side went away or refused
        self.bytes_over_rate = 0  # dropped by the rate limit
        self.rate_limit = rate_limit
        self.on_reader_gone = on_reader_gone
        self.write_error: OSError | None = None
        self._clock = clock
        self._tokens = float(rate_limit or 0)
        self._refilled = clock()
        self._tail = bytearray()
        # Where the host ended the guest's unfinished line: the byte count then
        # (every byte kept in the tail is counted as written or dropped).
        self._line_ended_at = -1

    def __call__(self, data: bytes) -> None:
        if self.rate_limit is not None:
            data = self._within_rate(data)
        self._keep_tail(data)
        if self.fd < 0:
            self.bytes_dropped += len(data)
            return
        try:
            while data:
                try:
                    written = os.write(self.fd, data)
                except BlockingIOError:  # a non-blocking fd someone else set: wait, as a
                    select.select([], [self.fd], [])  # blocking write would
                    continue
                self.bytes_written += written
                data = data[written:]
        except OSError as error:
            self.bytes_dropped += len(data)
            self.write_error = error
            self.fd = -1
            if error.errno == errno.EPIPE and self.on_reader_gone is not None:
                self.on_reader_gone()

    @property
    def reader_gone(self) -> bool:
        """A write failed with EPIPE: nobody reads the destination any more."""
        return self.write_error is not None and self.write_error.errno == errno.EPIPE

    def describe_write_error(self) -> str | None:
        """`cannot write to stdout: ENOSPC (No space left on device)`, or None."""
        error = self.write_error
        if error is None:
            return None
        code = errno.errorcode.get(error.errno or 0, str(error.errno))
        return f"cannot write to {self.name}: {code} ({os.strerror(error.errno or 0)})"

    @property
    def ends_mid_line(self) -> bool:
        """The guest's last output did not end its line (a terminal's cursor is still on it)."""
        if self._line_ended_at == self.bytes_written + self.bytes_dropped:
            return False
        return bool(self._tail) and self._tail[-1:] not in (b"\n", b"\r")

    def note_line_ended(self) -> None:
        """The host ended the guest's unfinished line (wrote a newline after it)."""
        self._line_ended_at = self.bytes_written + self.bytes_dropped

    def shares_destination(self, fd: int) -> bool:
        """Whether `fd` writes where this console does (the same terminal, file or pipe)."""
        if self._destination_fd < 0:
            return False
        try:
            mine, theirs = os.fstat(self._destination_fd), os.fstat(fd)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)

    def tail_lines(self, count: int, width: int = TAIL_LINE_WIDTH) -> list[str]:
        """The last `count` lines the guest printed (decoded leniently, control bytes shown).

        A line longer than `width` characters keeps its start and its last
        characters, with the count of those cut in between.
        """
        text = self._tail[-TAIL_SIZE:].decode("utf-8", "replace").replace("\r\n", "\n")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if count <= 0:
            return []
        return [_shortened(_printable(line), width) for line in lines[-count:]]

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


def _shortened(line: str, width: int) -> str:
    if len(line) <= width:
        return line
    end = min(_TAIL_LINE_END, width // 4)
    start = width - end
    return f"{line[:start]}...[{len(line) - width} characters cut]...{line[-end:]}"


def _printable(line: str) -> str:
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch):02x}" for ch in line)
