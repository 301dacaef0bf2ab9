"""The RTC on the machine: ports 0x70/0x71, IRQ 8, and a timer for guests that wait.

The MC146818A model (pyvmm.devices.rtc) is pure: time passes in it only when
the guest reads or writes a register. That is enough for a guest that polls
(UIP, the time, register C). A guest that enables the periodic, alarm or
update-ended interrupt and then waits in `hlt` makes no access at all, so
something must let time pass for it when the interrupt is due: `tick(now)`,
which raises the line (KVM_IRQ_LINE; the in-kernel PIC or IOAPIC wakes the
vCPU) and says when the line is next due to rise. QEMU's periodic and update
timers do the same for hw/rtc/mc146818rtc.c on its main loop.

The machine's rule is that devices are touched only from vCPU threads, under
the device lock when there are several (pyvmm/machine/vcpu_group.py, `post`).
So the timer thread here never touches the device. It only sleeps until the
time the device gave last, then posts `tick` to vCPU 0, which runs it between
two KVM_RUNs (kicking vCPU 0 out of a `hlt`). The time comes from the vCPU
side: each bus access that may move the next interrupt (a write to a clock
register, a read of register C: the device counts them in `schedule_changes`)
asks the device again, right there, and hands the answer to the thread. The
thread's own lock guards that one time, nothing else.

The thread starts at the first such access (a guest that only reads the time
never gets one), blocks every asynchronous signal so that --timeout, Ctrl-C
and the vCPU kicks still reach the threads that wait for them, and wakes only
when an interrupt is due or the schedule changed: a guest that leaves its RTC
interrupts off costs nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack

from pyvmm.arch.x86_64 import layout
from pyvmm.devices.bus import Bus
from pyvmm.devices.rtc import (
    NS_PER_S,
    RTC_GSI,
    RTC_PORT,
    RTC_PORT_SIZE,
    Clock,
    CmosContents,
    Mc146818Rtc,
    pc_cmos_memory,
)
from pyvmm.machine.interrupts import InterruptLines

# Raised by a thread itself (a fault), never sent: blocking them would not help.
_SYNCHRONOUS_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}
)

Post = Callable[[Callable[[], None]], None]  # runs work in a vCPU thread (VcpuGroup.post)


class RtcTimer:
    """Asks vCPU 0 to `tick` the RTC when its next interrupt is due.

    `clock` is the device's clock (ns since the epoch); `post(work)` runs
    `work` in a vCPU thread under the machine's device lock
    (`VcpuGroup.post`). `ports` is what goes on the bus. `close` stops the
    thread; it is idempotent.
    """

    def __init__(self, rtc: Mc146818Rtc, clock: Clock, post: Post) -> None:
        self.rtc = rtc
        self._clock = clock
        self._post = post
        self._seen_changes = rtc.schedule_changes
        # Guards `_due`, `_closed` and the thread's start; never the device.
        self._wake = threading.Condition(threading.Lock())
        self._due: int | None = None  # clock time of the next interrupt; None: none known
        self._closed = False
        self._thread: threading.Thread | None = None
        self.ports = RtcPorts(self)

    def accessed(self) -> None:
        """After a bus access (in a vCPU thread): if the schedule moved, tell the thread."""
        changes = self.rtc.schedule_changes
        if changes != self._seen_changes:
            self._seen_changes = changes
            self._schedule(self.rtc.tick())

    def close(self) -> None:
        """Stop the thread and wait for it."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def running(self) -> bool:
        """Whether the thread has been started and not stopped."""
        return self._thread is not None and self._thread.is_alive()

    def _fire(self) -> None:
        """Posted to vCPU 0: let time pass in the device (raising its line), then reschedule."""
        self._seen_changes = self.rtc.schedule_changes
        self._schedule(self.rtc.tick())

    def _schedule(self, due: int | None) -> None:
        with self._wake:
            if self._closed:
                return
            self._due = due
            if self._thread is None:
                if due is None:
                    return
                self._start()
            self._wake.notify()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rtc-timer", daemon=True)
        # The new thread inherits this mask: asynchronous signals stay with the
        # threads that handle them (the main thread, the vCPU kick).
        blocked = signal.valid_signals() - _SYNCHRONOUS_SIGNALS
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _run(self) -> None:
        while self._wait_until_due():
            # vCPU 0 ticks the device, which gives the next time (`_fire`).
            self._post(self._fire)

    def _wait_until_due(self) -> bool:
        """Sleep until the interrupt is due (True) or the timer is closed (False)."""
        with self._wake:
            while not self._closed:
                if self._due is None:
                    self._wake.wait()
                    continue
                left = self._due - self._clock()
                if left <= 0:
                    self._due = None
                    return True
                self._wake.wait(left / NS_PER_S)
            return False


class RtcPorts:
    """The RTC as the port I/O bus sees it; an access that moves the schedule tells the timer."""

    def __init__(self, timer: RtcTimer) -> None:
        self._timer = timer
        self._rtc = timer.rtc

    def read(self, offset: int, size: int) -> int:
        value = self._rtc.read(offset, size)
        self._timer.accessed()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self._rtc.write(offset, size, value)
        self._timer.accessed()


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
    device: Mc146818Rtc | RtcPorts = rtc
    if interrupts.irqchip:
        timer = RtcTimer(rtc, clock, post)
        resources.callback(timer.close)
        device = timer.ports
    pio_bus.insert(device, RTC_PORT, RTC_PORT_SIZE, "RTC/CMOS (MC146818A)")
    return rtc
