"""Memory sizes: parse them the way QEMU's `-m` does, and say them the way people read them."""

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


_UNITS = (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10))


def format_size(size: int) -> str:
    """`5 MiB`, `1.5 KiB`, `100 TiB` or `300 bytes`: a byte count for a message people read.

    Whole units print without decimals; anything else keeps one decimal, cut
    rather than rounded, so that a size just under a unit never reads as that
    unit (1048575 bytes is `1023.9 KiB`, not `1024.0 KiB`).
    """
    for unit, shift in _UNITS:
        if size >= 1 << shift:
            if size % (1 << shift) == 0:
                return f"{size >> shift} {unit}"
            tenths = (size * 10) >> shift
            return f"{tenths // 10}.{tenths % 10} {unit}"
    return f"{size} byte" if size == 1 else f"{size} bytes"


RAM_GRANULE = 0x1000  # KVM memory slots are whole pages


def parse_ram_size(text: str) -> int:
    """A guest RAM size (-m): as `parse_memory_size`, rounded up to whole pages as QEMU does.

    QEMU's `size=` spelling is taken too; its hotplug properties (`slots=`,
    `maxmem=`) are a UsageError: pyvmm's RAM is fixed for the whole run.
    """
    text = text.strip().removeprefix("size=")
    if "," in text:
        raise UsageError(
            f"invalid memory size '{text}': -m takes a size only "
            "(pyvmm has no memory hotplug: no slots=, no maxmem=)"
        )
    size = parse_memory_size(text)
    return -(-size // RAM_GRANULE) * RAM_GRANULE
