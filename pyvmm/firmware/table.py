"""The one checksum both specifications use, and fixed-width text fields.

An MP structure (MP Specification 1.4, 4.1 and 4.2) and an ACPI table (ACPI
6.3, 5.2.5.3 and 5.2.6) are valid when all their bytes add up to 0 modulo
256: one byte of each is set to make it so.
"""

from __future__ import annotations


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes `data` (with that byte counted as 0) sum to 0 mod 256."""
    return -sum(data) & 0xFF


def set_checksum(data: bytearray, offset: int, start: int = 0, end: int | None = None) -> None:
    """Fill `data[offset]` so that `data[start:end]` sums to 0 mod 256."""
    data[offset] = 0
    data[offset] = checksum(data[start:end])


def is_checksummed(data: bytes | bytearray) -> bool:
    """Whether `data` sums to 0 mod 256."""
    return sum(data) & 0xFF == 0


def text_field(text: str, size: int) -> bytes:
    """`text` in ASCII, padded with spaces to `size` bytes (OEM IDs, bus types...).

    Raises ValueError when it does not fit or is not ASCII.
    """
    data = text.encode("ascii")
    if len(data) > size:
        raise ValueError(f"{text!r} is longer than {size} bytes")
    return data.ljust(size, b" ")
