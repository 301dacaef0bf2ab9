"""Where the guest's serial output goes on the host."""

from __future__ import annotations

import os


class ConsoleWriter:
    """Writes guest bytes straight to a file descriptor, unbuffered.

    Unbuffered so that output interleaves correctly with the VMM's own
    messages and survives a crash of the guest. If the host side goes away
    (a closed pipe), output is dropped and counted: the guest keeps running.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.bytes_written = 0
        self.bytes_dropped = 0

    def __call__(self, data: bytes) -> None:
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
