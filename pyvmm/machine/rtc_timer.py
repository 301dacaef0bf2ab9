"""The RTC on the machine: ports 0x70/0x71, IRQ 8, and a timer for guests that wait.

The MC146818A model (pyvmm.devices.rtc) is pure: time passes in it only when
the guest reads or writes a register. That is enough for a guest that polls
(UIP, the time, register C). A guest that enables the periodic, alarm or
update-ended interrupt and then waits in `hlt` makes no access at all, so
something must let time pass for it when the interrupt is due: `tick(now)`,
which raises the line (KVM_IRQ_LINE; the in-kernel PIC or IOAPIC wakes the
vCPU) and says when the line is next due to rise. QEMU's periodic and update
timers do the same for hw/rtc/mc146818rtc.c on its main loop.

The timer (pyvmm/machine/device_timer.py) starts at the first access that
enables such an interrupt (a guest that only reads the time never gets one):
a guest that leaves its RTC interrupts off costs nothing.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from pyvmm.arch.x86_64 import layout
from pyvmm.devices.bus import Bus
from pyvmm.devices.rtc import (
    RTC_GSI,
    RTC_PORT,
    RTC_PORT_SIZE,
    Clock,
    CmosContents,
    Mc146818Rtc,
    pc_cmos_memory,
)
from pyvmm.machine.device_timer import DeviceTimer, Post, TimedPorts
from pyvmm.machine.interrupts import InterruptLines


class RtcTimer(DeviceTimer):
    """The RTC's timer: asks vCPU 0 to `tick` it when its next interrupt is due.

    `clock` is the device's clock (ns since the epoch); see DeviceTimer.
    """

    def __init__(self, rtc: Mc146818Rtc, clock: Clock, post: Post) -> None:
        super().__init__(rtc, clock, post, "rtc-timer")
        self.rtc = rtc


def attach_rtc(
    pio_bus: Bus,
    interrupts: InterruptLines,
    ram_size: int,
    cpus: int,
    post: Post,
    resources: ExitStack,
    battery: CmosContents | None = None,
) -> Mc146818Rtc:
    """The PC's RTC and CMOS at ports 0x70-0x71 on GSI 8, its CMOS holding the machine's sizes.

    The clock is the host's wall clock (`time.time_ns`, UTC), as QEMU's
    default `-rtc base=utc,clock=host`. With an in-kernel irqchip the device
    gets a timer (`post` is `VcpuGroup.post`; the timer stops when
    `resources` closes, before the VM); without one its line goes nowhere and
    nothing else is needed: time passes at each access. `battery` carries the
    CMOS and the guest's clock over from the machine before a reset.
    """
    below_4g = above_4g = 0
    for gpa, size in layout.ram_ranges(ram_size):
        if gpa < layout.MMIO_GAP_END:
            below_4g += size
        else:
            above_4g += size
    clock = time.time_ns
    rtc = Mc146818Rtc(
        clock,
        interrupts.line(RTC_GSI, "RTC"),
        cmos=pc_cmos_memory(below_4g, above_4g, cpus),
        battery=battery,
    )
    device: Mc146818Rtc | TimedPorts = rtc
    if interrupts.irqchip:
        timer = RtcTimer(rtc, clock, post)
        resources.callback(timer.close)
        device = timer.ports
    pio_bus.insert(device, RTC_PORT, RTC_PORT_SIZE, "RTC/CMOS (MC146818A)")
    return rtc
