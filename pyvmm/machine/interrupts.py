"""The machine's interrupt lines: how a device's `IrqLine` reaches the guest.

A device drives a level (pyvmm.devices.irq.IrqLine); here a level becomes an
input of the in-kernel irqchip, numbered by GSI as on a PC (ISA IRQ n is GSI
n: the timer 0, the keyboard 1, COM1 4, the RTC 8). Without an irqchip there
is nothing to deliver to, and a line is connected to nothing.
"""

from __future__ import annotations

from pyvmm.devices.irq import IrqLine, NoIrq
from pyvmm.kvm.vm import Vm

# GSIs the in-kernel irqchip has: the PIC's 16 ISA IRQs and the IOAPIC's 24 pins.
IOAPIC_PINS = 24


class KvmIrqLine:
    """An `IrqLine` that sets one irqchip input with KVM_IRQ_LINE."""

    def __init__(self, vm: Vm, gsi: int) -> None:
        self.vm = vm
        self.gsi = gsi

    def set_level(self, high: bool) -> None:
        self.vm.irq_line(self.gsi, int(high))


class InterruptLines:
    """Hands out one line per GSI; each GSI is given to one device at most."""

    def __init__(self, vm: Vm, irqchip: bool) -> None:
        self.vm = vm
        self.irqchip = irqchip
        self._taken: dict[int, str] = {}

    def line(self, gsi: int, owner: str) -> IrqLine:
        """The line for `gsi`, for the device named `owner`.

        Raises ValueError for a GSI the irqchip lacks or one already given
        out (two devices on one level-triggered line would fight over it).
        """
        if not 0 <= gsi < IOAPIC_PINS:
            raise ValueError(f"GSI {gsi} for {owner}: the irqchip has GSIs 0-{IOAPIC_PINS - 1}")
        if gsi in self._taken:
            raise ValueError(f"GSI {gsi} for {owner} is already {self._taken[gsi]}'s")
        self._taken[gsi] = owner
        return KvmIrqLine(self.vm, gsi) if self.irqchip else NoIrq()

    @property
    def assigned(self) -> dict[int, str]:
        """GSI -> the device that drives it."""
        return dict(self._taken)
