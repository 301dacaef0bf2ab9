"""The guest RAM sizes pyvmm accepts (checked before anything is built)."""

from __future__ import annotations

import os

from pyvmm.arch.x86_64 import layout
from pyvmm.errors import UsageError
from pyvmm.memory.size import RAM_GRANULE, format_size


def check_ram_size(ram_size: int, requested: str | None = None, *, option: str = "-m") -> None:
    """Refuse a guest RAM size pyvmm cannot use, with a UsageError that says why.

    `requested` is the size as the user gave it, before rounding to pages,
    and `option` what they gave it with: the message quotes both when given
    (`-m 1K is too small...`; `create_machine` passes `option="ram_size"`
    and the value's repr: `ram_size '1K' is too small...`), and names the
    size otherwise. A number of plain digits (MiB for -m, bytes for
    `ram_size`) is followed by the size it means.
    """
    what = f"memory size {format_size(ram_size)}" if requested is None else f"{option} {requested}"
    if requested is not None and requested.strip().isdigit():
        what += f" ({format_size(ram_size)})"
    if ram_size % RAM_GRANULE:
        raise UsageError(
            f"memory size {ram_size} bytes is not a whole number of 4 KiB pages "
            "(KVM maps guest RAM in pages)"
        )
    if ram_size < layout.MIN_RAM_SIZE:
        raise UsageError(
            f"{what} is too small: pyvmm needs at least "
            f"{format_size(layout.MIN_RAM_SIZE)} of guest RAM"
        )
    host = host_memory_size()
    if host is not None and ram_size > host:
        raise UsageError(f"{what} is more than this host's RAM ({format_size(host)})")


def host_memory_size() -> int | None:
    """The host's RAM in bytes (/proc/meminfo's MemTotal, as sysconf(3) gives it), or None."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None
