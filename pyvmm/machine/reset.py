"""The ways a PC guest resets its machine, on the port bus: the run ends as OutcomeKind.RESET.

A guest reboots through one of three registers, all of which pulse the
CPU's reset line (Linux tries them in arch/x86/kernel/reboot.c,
`native_machine_emergency_restart`):

- the keyboard controller, port 0x64, command 0xfe (`pyvmm.devices.i8042`),
  after waiting for its input buffer to empty (`kb_wait`);
- System Control Port A, port 0x92, bit 0 (`pyvmm.devices.reset_control`);
- the Reset Control Register, port 0xcf9, bit 2 (the same module).

Each ends the run with a RESET outcome (status 0, as `qemu -no-reboot`
exits) whose message says which register the guest used. Restarting the
machine instead is the caller's choice (`pyvmm boot --reboot` builds a new
one). A triple fault, which also resets a real PC, stays OutcomeKind.TRIPLE_FAULT:
it is a crash to report, not a request.
"""

from __future__ import annotations

from collections.abc import Callable

from pyvmm.devices.bus import Bus, Shifted
from pyvmm.devices.i8042 import (
    I8042,
    I8042_AUX_IRQ,
    I8042_COMMAND_PORT,
    I8042_DATA_PORT,
    I8042_KBD_IRQ,
    I8042_STATUS,
)
from pyvmm.devices.reset_control import (
    RESET_CONTROL_PORT,
    SYSTEM_CONTROL_PORT_A,
    ResetControl,
    SystemControlPortA,
)
from pyvmm.machine.interrupts import InterruptLines
from pyvmm.machine.outcome import RunOutcome, reset_requested


class ResetSources:
    """The devices `attach_reset_sources` put on the bus (read-only)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("i8042", "port92", "reset_control")

    def __init__(
        self, i8042: I8042, port92: SystemControlPortA, reset_control: ResetControl
    ) -> None:
        self.i8042 = i8042
        self.port92 = port92
        self.reset_control = reset_control


def attach_reset_sources(
    pio_bus: Bus, interrupts: InterruptLines | None, stop: Callable[[RunOutcome], None]
) -> ResetSources:
    """The keyboard controller (0x60, 0x64; IRQ 1 and 12), port 0x92 and port 0xcf9.

    A reset through any of them calls `stop` with a RESET outcome. Without
    `interrupts` (tests) the controller's IRQ lines are connected to nothing.
    The PCI configuration ports around 0xcf9 (0xcf8, 0xcfc-0xcff) are
    attach_qemu_board's.
    """

    def on_reset(how: str) -> None:
        stop(reset_requested(how))

    kbd_irq = aux_irq = None
    if interrupts is not None:
        kbd_irq = interrupts.line(I8042_KBD_IRQ, "i8042 keyboard")
        aux_irq = interrupts.line(I8042_AUX_IRQ, "i8042 aux port")
    i8042 = I8042(on_reset, kbd_irq, aux_irq)
    pio_bus.insert(i8042, I8042_DATA_PORT, 1, "i8042 data")
    pio_bus.insert(Shifted(i8042, I8042_STATUS), I8042_COMMAND_PORT, 1, "i8042 status/command")
    port92 = SystemControlPortA(on_reset)
    pio_bus.insert(port92, SYSTEM_CONTROL_PORT_A, 1, "System Control Port A")
    reset_control = ResetControl(on_reset)
    pio_bus.insert(reset_control, RESET_CONTROL_PORT, 1, "Reset Control Register")
    return ResetSources(i8042, port92, reset_control)
