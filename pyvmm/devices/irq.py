"""How a device drives an interrupt line without knowing about KVM.

A device is handed an `IrqLine` when it is built and sets the line's level
from its own interrupt state (level-triggered, as ISA devices behind a PIC or
IOAPIC are). The VMM's implementation turns a level into `KVM_IRQ_LINE`;
tests pass a recorder. Devices call `set_level` only when the level changes,
so an implementation need not filter repeats.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object  # the protocol is for type checkers; at run time, a plain base class


class IrqLine(Protocol):
    """One interrupt line, driven by exactly one device."""

    def set_level(self, high: bool) -> None: ...


class NoIrq:
    """A line connected to nothing: for polling guests or a VM without an irqchip."""

    def set_level(self, high: bool) -> None:
        return None
