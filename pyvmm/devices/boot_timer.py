"""Firecracker's boot timer: the guest writes a magic byte to a port once it has booted.

Firecracker (src/vmm/src/devices/pseudo/boot_timer.rs) measures a guest's
boot from the VM's creation to the guest's write of 123
(MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE) to its boot-timer device, port
0x3f0 on x86; a guest's /init writes it when the system is up (pyvmm's test
initramfs does, tests/linux/initramfs.py). This device keeps the time of the
first such write and counts every one; other values are ignored, and reads
give all ones, as from a port nothing answers.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable

BOOT_TIMER_PORT = 0x3F0
BOOT_TIMER_SIZE = 1
# Firecracker's MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE.
BOOT_TIMER_MAGIC = 123


class BootTimer:
    """Records when the guest first wrote BOOT_TIMER_MAGIC, in seconds after `started`.

    `started` is a time of `clock` (time.monotonic by default): the VM's
    creation. `boot_seconds` is None until the first magic write; `writes`
    counts the magic writes.
    """

    __slots__ = ("_clock", "boot_seconds", "started", "writes")

    def __init__(self, started: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = started
        self.boot_seconds: float | None = None
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if offset != 0 or value & 0xFF != BOOT_TIMER_MAGIC:
            return
        self.writes += 1
        if self.boot_seconds is None:
            self.boot_seconds = self._clock() - self.started


def describe_boot_time(timer: BootTimer) -> str | None:
    """--stats' line for the guest's boot-timer write; None when it never wrote."""
    if timer.boot_seconds is None:
        return None
    line = (
        f"boot time: {timer.boot_seconds:.3f} s from VM creation to the guest's boot-timer "
        f"write (port 0x{BOOT_TIMER_PORT:x})"
    )
    later = timer.writes - 1
    if later:
        line += f"; {later} later write{'s' if later > 1 else ''} of {BOOT_TIMER_MAGIC}"
    return line
