"""QEMU's isa-debug-exit: the guest ends the run by writing a value.

QEMU exits with status `(value << 1) | 1`, so a guest can never fake a clean
exit 0; test suites (kvm-unit-tests, many hobby kernels) rely on that.
"""

from __future__ import annotations

from collections.abc import Callable

DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_SIZE = 4


def debug_exit_status(value: int) -> int:
    """The process exit status QEMU would give for a write of `value`: (value << 1) | 1.

    Always odd, 0..255: only the low 7 bits of `value` survive the 8-bit
    status, and a write of 0 gives 1 (QEMU's hw/misc/debugexit.c).
    """
    return ((value << 1) | 1) & 0xFF


class DebugExit:
    """Calls `on_exit(value)` on any write; reads return all ones, as QEMU's does."""

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self._on_exit = on_exit

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        self._on_exit(value)
