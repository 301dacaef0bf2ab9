"""Memory sizes: parse them the way QEMU's `-m` does, and say them the way people read them."""

from __future__ import annotations

import re

from pyvmm.errors import UsageError

MIB = 1 << 20
_SUFFIXES = {"": MIB, "K": 1 << 10, "M": MIB, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def parse_memory_size(text: str) -> int:
    """`64M`, `1G`, `512` (MiB, as in QEMU), `1.5G`, `4096B` -> bytes. Raises UsageError.

    A B alone is bytes, as in QEMU (`512B` is 512 bytes, not 512 MiB).
    """
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(
            f"invalid memory size '{text}': use a number of MiB or a suffix K, M, G, T"
        )
    number, suffix, byte_unit = match.groups()
    scale = 1 if byte_unit and not suffix else _SUFFIXES[suffix.upper()]
    size = int(float(number) * scale)
    if size <= 0:
        raise UsageError(f"invalid memory size '{text}': must be more than zero")
    return size


def parse_byte_count(text: str) -> int:
    """`1000`, `100B`, `64K`, `1.5M` -> bytes: unlike `-m`, a plain number is bytes.

    For byte counts that are no memory size (--console-rate, --input-buffer):
    `1B` is one byte here, where `parse_memory_size` reads a plain number as
    MiB. Raises UsageError saying what is wrong (not a number, negative, not
    whole bytes).
    """
    match = _SIZE.match(text)
    if match is None:
        if _SIZE.match(text.strip().removeprefix("-")):
            raise UsageError(f"'{text}' is negative")
        raise UsageError(f"'{text}' is not a number of bytes (K, M, G, T suffixes allowed)")
    number, suffix, _ = match.groups()
    scale = _SUFFIXES[suffix.upper()] if suffix else 1
    if scale == 1 and "." in number:
        raise UsageError(f"'{text}' is not a whole number of bytes")
    return int(float(number) * scale) if "." in number else int(number) * scale


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
