"""The machine's interrupt lines: how a device's `IrqLine` reaches the guest.

A device drives a level (pyvmm.devices.irq.IrqLine); here a level becomes an
input of the in-kernel irqchip (KVM_IRQ_LINE) or of pyvmm's own PIC and
IOAPIC with the split irqchip (split_irqchip.py), numbered by GSI as on a PC (ISA IRQ n is GSI
n: the timer 0, the keyboard 1, COM1 4, the RTC 8). Without an irqchip there
is nothing to deliver to, and a line is connected to nothing.
"""

from __future__ import annotations

import os
import threading

from pyvmm.devices.irq import IrqLine, NoIrq
from pyvmm.kvm.vm import Vm

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from pyvmm.machine.split_irqchip import SplitIrqchip

# GSIs the in-kernel irqchip has: the PIC's 16 ISA IRQs and the IOAPIC's 24 pins.
IOAPIC_PINS = 24


class KvmIrqLine:
    """An `IrqLine` that sets one irqchip input with KVM_IRQ_LINE."""

    def __init__(self, vm: Vm, gsi: int) -> None:
        self.vm = vm
        self.gsi = gsi

    def set_level(self, high: bool) -> None:
        self.vm.irq_line(self.gsi, int(high))


class IrqfdLine:
    """An `IrqLine` raised through an irqfd with resampling (KVM_IRQFD, KVM API doc 4.75).

    A write to the eventfd `trigger` raises GSI `gsi` without an ioctl,
    from any thread (an I/O thread serving an ioeventfd). With
    KVM_IRQFD_FLAG_RESAMPLE the input stays high until the guest's EOI;
    KVM then lowers it and signals `resample`, and `resampled` (bound to it
    by the caller, e.g. `IoThread.add`) raises it again if the device still
    holds its level high: a level-triggered line, as QEMU's INTx irqfds are.
    Lowering needs nothing: the guest's EOI does it. Raises KvmError if the
    host has no irqfd or no irqchip.
    """

    def __init__(self, vm: Vm, gsi: int) -> None:
        from pyvmm._kvm import lib

        flags = os.EFD_CLOEXEC | os.EFD_NONBLOCK
        self.gsi = gsi
        self.trigger = os.eventfd(0, flags)
        self.resample = os.eventfd(0, flags)
        self.high = False
        try:
            vm.irqfd(self.trigger, gsi, lib.KVM_IRQFD_FLAG_RESAMPLE, self.resample)
        except BaseException:
            os.close(self.trigger)
            os.close(self.resample)
            raise

    def set_level(self, high: bool) -> None:
        self.high = high
        if high:
            os.eventfd_write(self.trigger, 1)

    def resampled(self) -> None:
        """The guest's EOI lowered the input: raise it again if the level is still high."""
        if self.high:
            os.eventfd_write(self.trigger, 1)

    def close(self) -> None:
        """Close `trigger` (the VM keeps its own reference until it closes)."""
        if self.trigger >= 0:
            os.close(self.trigger)
            self.trigger = -1


class SharedInput:
    """One irqchip input driven by several lines: its level is the OR of theirs.

    KVM ORs the sources it knows of one GSI the same way (a level-triggered
    input is high while any source holds it high: `__kvm_irq_line_state`), but
    every KVM_IRQ_LINE from the VMM is one source to it, so the OR of the
    VMM's own lines is made here. Each change is passed on at once, repeats
    included, as QEMU passes on each `qemu_set_irq`.
    """

    def __init__(self, output: IrqLine) -> None:
        self._output = output
        self._levels: list[bool] = []
        self._lock = threading.Lock()  # a device may drive its line from a timer thread

    def source(self) -> IrqLine:
        """A new line into this input, low to begin with."""
        self._levels.append(False)
        return _Source(self, len(self._levels) - 1)

    def set_source_level(self, index: int, high: bool) -> None:
        with self._lock:
            self._levels[index] = high
            self._output.set_level(any(self._levels))


class _Source:
    def __init__(self, shared: SharedInput, index: int) -> None:
        self._shared = shared
        self._index = index

    def set_level(self, high: bool) -> None:
        self._shared.set_source_level(self._index, high)


class InterruptLines:
    """Hands out the lines of each GSI: one owner each, and shared lines ORed with it."""

    def __init__(self, vm: Vm, irqchip: bool, split: SplitIrqchip | None = None) -> None:
        self.vm = vm
        self.irqchip = irqchip
        self.split = split  # the PIC and IOAPIC are pyvmm's (split_irqchip.py)
        self._taken: dict[int, str] = {}
        self._inputs: dict[int, SharedInput] = {}

    def line(self, gsi: int, owner: str, *, shared: bool = False) -> IrqLine:
        """The line for `gsi`, for the device named `owner`.

        A GSI has one owner, the device wired to it (COM1 on 4). A `shared`
        line does not own its GSI: it is for a device that may drive any GSI,
        QEMU's pc-testdev, and its level is ORed with the owner's and the
        other shared lines' (`SharedInput`), so a guest pulsing a line never
        lowers what the owner holds high. Raises ValueError for a GSI the
        irqchip lacks or an owner for a GSI already owned (two devices on one
        level-triggered line would fight over it).
        """
        if not 0 <= gsi < IOAPIC_PINS:
            raise ValueError(f"GSI {gsi} for {owner}: the irqchip has GSIs 0-{IOAPIC_PINS - 1}")
        if not shared:
            if gsi in self._taken:
                raise ValueError(f"GSI {gsi} for {owner} is already {self._taken[gsi]}'s")
            self._taken[gsi] = owner
        if not self.irqchip:
            return NoIrq()
        if gsi not in self._inputs:
            output: IrqLine = KvmIrqLine(self.vm, gsi)
            if self.split is not None:
                from pyvmm.machine.split_irqchip import SplitIrqLine

                output = SplitIrqLine(self.split, gsi)
            self._inputs[gsi] = SharedInput(output)
        return self._inputs[gsi].source()

    @property
    def assigned(self) -> dict[int, str]:
        """GSI -> the device that drives it."""
        return dict(self._taken)
