"""How a device drives an interrupt line without knowing about KVM.

A device is handed an `IrqLine` when it is built and sets the line's level
from its own interrupt state (level-triggered, as ISA devices behind a PIC or
IOAPIC are). The VMM's implementation turns a level into `KVM_IRQ_LINE`;
tests pass a recorder. Devices call `set_level` only when the level changes,
so an implementation need not filter repeats.
"""

from __future__ import annotations

from typing import Protocol


class IrqLine(Protocol):
    """One interrupt line, driven by exactly one device."""

    def set_level(self, high: bool) -> None: ...


class NoIrq:
    """A line connected to nothing: for polling guests or a VM without an irqchip."""

    def set_level(self, high: bool) -> None:
        return None
