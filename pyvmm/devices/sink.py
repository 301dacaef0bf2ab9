"""A port that is known and deliberately ignored (the POST code port 0x80)."""

from __future__ import annotations

POST_PORT = 0x80


class IgnoredPort:
    """Swallows writes and reads all ones, without counting them as unmapped.

    BIOSes and Linux write progress codes to port 0x80 and use it as an I/O
    delay; nothing listens on a VM, and that is not worth a warning.
    """

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        return None
