"""A timer thread for a pure device whose interrupts come with time: the RTC's, the PIT's.

Pure device models (pyvmm.devices.rtc, pyvmm.devices.i8254) let time pass
only when the guest reads or writes a register, or when `tick(now)` is
called. A guest that programs a periodic interrupt and then waits in `hlt`
makes no access at all, so something must let time pass for it when the
interrupt is due: `tick`, which raises the line (KVM_IRQ_LINE; the
in-kernel PIC or IOAPIC wakes the vCPU) and says when it is next due.
QEMU's device timers do the same on its main loop.

The machine's rule is that devices are touched only from vCPU threads, under
the device lock when there are several (pyvmm/machine/vcpu_group.py, `post`).
So the timer thread here never touches the device. It only sleeps until the
time the device gave last, then posts `tick` to vCPU 0, which runs it between
two KVM_RUNs (kicking vCPU 0 out of a `hlt`). The time comes from the vCPU
side: each bus access that may move the next interrupt (the device counts
them in `schedule_changes`) asks the device again, right there, and hands the
answer to the thread. The thread's own lock guards that one time, nothing else.

The thread starts at the first such access (a guest that never programs an
interrupt never gets one), blocks every asynchronous signal so that
--timeout, Ctrl-C and the vCPU kicks still reach the threads that wait for
them, and wakes only when an interrupt is due or the schedule changed.

A device's clock may run `scale` times slower than the host's (the PIT's
`--pit-scale`): its times are in its own nanoseconds, and the thread waits
`scale` host nanoseconds for each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pyvmm.quiet_threads import signals_blocked

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object

NS_PER_S = 1_000_000_000


Clock = Callable[[], int]  # the device's time in its own nanoseconds
Post = Callable[[Callable[[], None]], None]  # runs work in a vCPU thread (VcpuGroup.post)


class TimedDevice(Protocol):
    """What the timer needs of a device."""

    @property
    def schedule_changes(self) -> int: ...

    def tick(self, now: int | None = None) -> int | None: ...

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class DeviceTimer:
    """Asks vCPU 0 to `tick` a device when its next interrupt is due.

    `clock` is the device's clock (ns), running `scale` times slower than the
    host's; `post(work)` runs `work` in a vCPU thread under the machine's
    device lock (`VcpuGroup.post`). `ports` is what goes on the bus. `close`
    stops the thread; it is idempotent. `name` names the thread.
    """

    def __init__(
        self, device: TimedDevice, clock: Clock, post: Post, name: str, scale: int = 1
    ) -> None:
        if scale < 1:
            raise ValueError(f"a timer scale is at least 1, not {scale}")
        self.device = device
        self._clock = clock
        self._post = post
        self._name = name
        self._scale = scale
        self._seen_changes = device.schedule_changes
        # Guards `_due`, `_closed` and the thread's start; never the device.
        self._wake = threading.Condition(threading.Lock())
        self._due: int | None = None  # clock time of the next interrupt; None: none known
        self._closed = False
        self._thread: threading.Thread | None = None
        self.ports = TimedPorts(self)

    def accessed(self) -> None:
        """After a bus access (in a vCPU thread): if the schedule moved, tell the thread."""
        changes = self.device.schedule_changes
        if changes != self._seen_changes:
            self._seen_changes = changes
            self._schedule(self.device.tick())

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
        self._seen_changes = self.device.schedule_changes
        self._schedule(self.device.tick())

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
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        # The new thread inherits this mask: asynchronous signals stay with the
        # threads that handle them (the main thread, the vCPU kick).
        with signals_blocked():
            self._thread.start()

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
                self._wake.wait(left * self._scale / NS_PER_S)
            return False


class TimedPorts:
    """The device as the bus sees it; an access that moves the schedule tells the timer."""

    def __init__(self, timer: DeviceTimer) -> None:
        self._timer = timer
        self._device = timer.device

    def read(self, offset: int, size: int) -> int:
        value = self._device.read(offset, size)
        self._timer.accessed()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self._device.write(offset, size, value)
        self._timer.accessed()
