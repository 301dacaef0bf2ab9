"""The machine's PIT: KVM's in-kernel PIT2, or pyvmm's 8254 with a timer, maybe slowed.

`--pit kernel` is KVM_CREATE_PIT2 (made with the irqchip, machine/early_vm.py):
the guest's accesses to ports 0x40-0x43 and 0x61 never exit, and KVM delivers
IRQ 0, reinjecting ticks the guest missed. `--pit user` (the default) is
pyvmm.devices.i8254 on the port bus: each access exits, a timer thread
(machine/device_timer.py) starts only when the guest programs counter 0, and
a tick the guest was too slow for is dropped. Only the user PIT can run
slower than the host (`--pit-scale N`): on a host where one emulated tick
costs more than a period (a software KVM running a kernel's CPL0 timer
handler instruction by instruction), a kernel at N times fewer ticks per
second makes progress between them. It also spares the VM's close the host's
wait for the in-kernel PIT's teardown (an SRCU grace period, 13-20 ms on the
host this was written on).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

from pyvmm.devices.bus import Bus
from pyvmm.devices.i8254 import I8254, PIT_GSI, PIT_PORT, PIT_PORT_SIZE, PORT_B, PortB
from pyvmm.errors import UsageError
from pyvmm.machine.device_timer import DeviceTimer, Post, TimedPorts
from pyvmm.machine.interrupts import InterruptLines

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from pyvmm.machine.builder import MachineConfig

KERNEL = "kernel"
USER = "user"
MAX_PIT_SCALE = 1000


def check_pit(config: MachineConfig) -> None:
    """Refuse a PIT the machine cannot have (UsageError, one line)."""
    if config.pit not in (KERNEL, USER):
        raise UsageError(f"--pit: 'kernel' or 'user', not {config.pit!r}")
    if not 1 <= config.pit_scale <= MAX_PIT_SCALE:
        raise UsageError(f"--pit-scale: 1 to {MAX_PIT_SCALE}, not {config.pit_scale}")
    if config.pit == KERNEL and config.pit_scale != 1:
        raise UsageError(
            "--pit-scale slows pyvmm's own PIT, not KVM's: use --pit user (the default)"
        )


def scaled_clock(scale: int) -> Callable[[], int]:
    """The host's monotonic clock (ns), `scale` times slower."""
    if scale == 1:
        return time.monotonic_ns
    return lambda: time.monotonic_ns() // scale


def attach_pit(
    pio_bus: Bus, interrupts: InterruptLines, post: Post, resources: ExitStack, scale: int = 1
) -> I8254:
    """pyvmm's 8254 at ports 0x40-0x43 and port 0x61, driving GSI 0.

    With an in-kernel irqchip counter 0 gets a timer (stopped when `resources`
    closes, before the VM); without one its line goes nowhere and the counts
    are still right at each read. `scale` >= 1 slows the PIT's clock.
    """
    clock = scaled_clock(scale)
    pit = I8254(clock, interrupts.line(PIT_GSI, "PIT"))
    device: I8254 | TimedPorts = pit
    if interrupts.irqchip:
        timer = DeviceTimer(pit, clock, post, "pit-timer", scale)
        resources.callback(timer.close)
        device = timer.ports
    pio_bus.insert(device, PIT_PORT, PIT_PORT_SIZE, "PIT (8254)")
    pio_bus.insert(PortB(pit), PORT_B, 1, "port 0x61 (PIT counter 2 gate, speaker)")
    return pit


def describe_pit(pit: I8254, config: MachineConfig | None) -> str:
    """--stats' line for the user PIT: IRQ 0 edges delivered and dropped, and its scale."""
    scale = 1 if config is None else config.pit_scale
    line = f"PIT: {pit.interrupts} IRQ 0 delivered, {pit.dropped} dropped (late)"
    if scale != 1:
        line += f"; its clock ran {scale} times slower than the host's (--pit-scale)"
    return line
