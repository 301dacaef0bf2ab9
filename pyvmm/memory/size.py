"""Parse memory sizes the way QEMU's `-m` does."""

from __future__ import annotations

import re

from pyvmm.errors import UsageError

MIB = 1 << 20
_SUFFIXES = {"": MIB, "K": 1 << 10, "M": MIB, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_memory_size(text: str) -> int:
    """`64M`, `1G`, `512` (MiB, as in QEMU), `1.5G` -> bytes. Raises UsageError."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(
            f"invalid memory size '{text}': use a number of MiB or a suffix K, M, G, T"
        )
    number, suffix = match.groups()
    size = int(float(number) * _SUFFIXES[suffix.upper()])
    if size <= 0:
        raise UsageError(f"invalid memory size '{text}': must be more than zero")
    return size


RAM_GRANULE = 0x1000  # KVM memory slots are whole pages


def parse_ram_size(text: str) -> int:
    """A guest RAM size (-m): as `parse_memory_size`, rounded up to whole pages as QEMU does."""
    size = parse_memory_size(text)
    return -(-size // RAM_GRANULE) * RAM_GRANULE
