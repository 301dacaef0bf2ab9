"""The split irqchip: KVM's local APICs, pyvmm's PIC pair and IOAPIC.

With KVM_CAP_SPLIT_IRQCHIP (KVM API doc 7.8) only the LAPICs live in the
kernel; the 8259 pair and the I/O APIC are the VMM's devices, as with QEMU's
`kernel-irqchip=split` and in Cloud Hypervisor. pyvmm's default, because a
VM with KVM's whole irqchip (KVM_CREATE_IRQCHIP) makes its process wait
about 15 ms at the close when it lived less than 20 ms (README, "The price
of Python"), and because every interrupt is then visible in Python.

How an interrupt travels, by GSI as on a PC (gsi_routes.py, the same
wiring as KVM's own irqchip is given): GSI 0, the PIT, drives PIC input 0 and
IOAPIC pin 2; GSIs 1 and 3-15 drive the PIC input and the IOAPIC pin of
their number; 16-23 the IOAPIC alone.

- The IOAPIC sends each interrupt as an MSI (KVM_SIGNAL_MSI, from any
  thread: KVM wakes the destination). So that the in-kernel LAPIC reports
  the EOI of a level-triggered one (KVM_EXIT_IOAPIC_EOI, then `eoi`), the
  redirection table is mirrored as MSI routes, GSI n for pin n
  (KVM_SET_GSI_ROUTING), whenever the guest rewrites it.
- The PIC's INT output is the boot CPU's ExtINT: KVM takes its vector with
  KVM_INTERRUPT when the last exit said `ready_for_interrupt_injection`;
  until then `request_interrupt_window` asks KVM for a
  KVM_EXIT_IRQ_WINDOW_OPEN. The boot CPU gets the work posted (it leaves
  KVM_RUN, even a `hlt`, to do it before its next KVM_RUN), from whichever
  thread raised the output (QEMU's kvm_arch_pre_run does it before each
  KVM_RUN).

One lock serialises the two devices, whichever thread drives them.
"""

from __future__ import annotations

import errno
import threading

from pyvmm.arch.x86_64.gsi_routes import ioapic_pin, pic_input
from pyvmm.devices.i8259 import (
    ELCR_PORT,
    ELCR_PORT_SIZE,
    MASTER_PORT,
    PIC_PORT_SIZE,
    SLAVE_PORT,
    PicPair,
)
from pyvmm.devices.ioapic import IO_APIC_PINS, IoApic
from pyvmm.errors import KvmError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyvmm.devices.bus import Bus
    from pyvmm.kvm.vm import Vm
    from pyvmm.machine.vcpu_loop import VcpuLoop


class _Locked:
    """A bus device whose accesses take the irqchip's lock."""

    __slots__ = ("_device", "_lock")

    def __init__(self, device: object, lock: threading.Lock) -> None:
        self._device = device
        self._lock = lock

    def read(self, offset: int, size: int) -> int:
        with self._lock:
            return self._device.read(offset, size)  # type: ignore[attr-defined]

    def write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            self._device.write(offset, size, value)  # type: ignore[attr-defined]


class SplitIrqchip:
    """pyvmm's PIC pair and IOAPIC in front of KVM's LAPICs (KVM_CAP_SPLIT_IRQCHIP).

    Made after `Vm.enable_split_irqchip(IO_APIC_PINS)`. `attach(pio_bus,
    mmio_bus)` puts the devices on the buses; `connect(bsp_loop, post)`
    names the boot CPU's loop (the PIC's interrupts go to it) and the vCPU
    group's `post`, which runs work in that vCPU's thread. `set_level(gsi,
    high)` is an input from any thread; `inject` and `eoi` serve the two
    exits the split irqchip brings (exit_dispatch.py): KVM_EXIT_IRQ_WINDOW_OPEN
    and KVM_EXIT_IOAPIC_EOI.
    """

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.lock = threading.Lock()
        self.pic = PicPair(on_output=self._pic_output)
        self.ioapic = IoApic(deliver=self._deliver, on_routes_changed=self._routes_changed)
        self._routes: list[tuple[int, int]] | None = None
        self._bsp: VcpuLoop | None = None
        self._post: Callable[[Callable[[], None]], None] | None = None
        self.msis = 0  # interrupts sent by the IOAPIC
        self.undelivered = 0  # messages no LAPIC took
        self.extints = 0  # vectors the PIC gave the boot CPU

    def attach(self, pio_bus: Bus, mmio_bus: Bus) -> None:
        """Put the PICs (0x20, 0xa0), the ELCR (0x4d0) and the IOAPIC (0xfec00000) on the buses."""
        from pyvmm.devices.ioapic import IO_APIC_GPA, WINDOW_SIZE

        lock = self.lock
        pio_bus.insert(_Locked(self.pic.master, lock), MASTER_PORT, PIC_PORT_SIZE, "PIC (master)")
        pio_bus.insert(_Locked(self.pic.slave, lock), SLAVE_PORT, PIC_PORT_SIZE, "PIC (slave)")
        pio_bus.insert(_Locked(self.pic.elcr, lock), ELCR_PORT, ELCR_PORT_SIZE, "ELCR")
        mmio_bus.insert(_Locked(self.ioapic, lock), IO_APIC_GPA, WINDOW_SIZE, "IOAPIC")

    def connect(self, bsp: VcpuLoop, post: Callable[[Callable[[], None]], None]) -> None:
        """The PIC's interrupts go to `bsp`; `post(work)` runs work in its thread."""
        self._bsp = bsp
        self._post = post

    def initialize_pic(self) -> None:
        """The PICs as a BIOS leaves them (vector bases 0x08 and 0x70)."""
        with self.lock:
            self.pic.initialize()

    def set_level(self, gsi: int, high: bool) -> None:
        """Input `gsi` (0-23) is now `high` or low; from any thread."""
        with self.lock:
            irq = pic_input(gsi)
            if irq is not None:
                self.pic.set_irq(irq, high)
            pin = ioapic_pin(gsi)
            if pin is not None:
                self.ioapic.set_irq(pin, high)

    def end_of_interrupt_for_vector(self, vector: int) -> int | None:
        """A BIOS handler's EOI for `vector` if the PIC has it in service (no_bios.py)."""
        with self.lock:
            return self.pic.end_of_interrupt_for_vector(vector)

    def eoi(self, vector: int) -> None:
        """KVM_EXIT_IOAPIC_EOI: a LAPIC ended level-triggered `vector`."""
        with self.lock:
            self.ioapic.eoi(vector)

    def inject(self) -> None:
        """In the boot CPU's thread (posted, or at KVM_EXIT_IRQ_WINDOW_OPEN): hand the
        PIC's interrupt to KVM if the vCPU can take it (KVM_INTERRUPT), and keep asking
        for an interrupt window while the PIC's output stays high (QEMU's
        kvm_arch_pre_run)."""
        bsp = self._bsp
        if bsp is None:
            return
        run = bsp.vcpu.run_struct
        with self.lock:
            if self.pic.output and run.ready_for_interrupt_injection and run.if_flag:
                vector = self.pic.acknowledge()
                bsp.vcpu.interrupt(vector)
                self.extints += 1
                # KVM holds one such vector until the guest takes it (KVM_INTERRUPT would
                # say EEXIST): not ready again until KVM's next exit says so.
                run.ready_for_interrupt_injection = 0
            run.request_interrupt_window = 1 if self.pic.output else 0

    def _pic_output(self, high: bool) -> None:
        # Under the lock, in whichever thread changed the PIC.
        bsp = self._bsp
        if not high or bsp is None:
            return
        run = bsp.vcpu.run_struct
        if run is not None:
            run.request_interrupt_window = 1  # seen by the next guest entry
        if self._post is not None:
            # Even from the boot CPU's own thread (a device's work posted to it, a port
            # write): a halted vCPU takes no window exit, but a posted call always runs.
            self._post(self.inject)

    def _deliver(self, address: int, data: int) -> None:
        try:
            self.vm.signal_msi(address, data)
        except KvmError as error:
            # KVM answers -1, EPERM, when no LAPIC takes the message (e.g. lowest
            # priority to broadcast): the guest's own mistake, lost as on a real bus.
            if error.errno != errno.EPERM:
                raise
            self.undelivered += 1
            return
        self.msis += 1

    def _routes_changed(self) -> None:
        routes = [self.ioapic.msi_message(pin) for pin in range(IO_APIC_PINS)]
        if routes != self._routes:
            self.vm.set_msi_routing(routes)
            self._routes = routes

    def describe(self) -> str:
        """--stats' line: what pyvmm's PIC and IOAPIC handed to KVM's LAPICs."""
        line = (
            f"split irqchip: {self.extints} PIC vectors (KVM_INTERRUPT), "
            f"{self.msis} IOAPIC messages (KVM_SIGNAL_MSI)"
        )
        if self.undelivered:
            line += f", {self.undelivered} taken by no LAPIC"
        return line

    def state(self) -> dict[str, object]:
        """The PICs' and the IOAPIC's registers, for the monitor."""
        with self.lock:
            return {"pic": self.pic.state(), "ioapic": self.ioapic.state()}


class SplitIrqLine:
    """An `IrqLine` into input `gsi` of the split irqchip."""

    __slots__ = ("_chip", "gsi")

    def __init__(self, chip: SplitIrqchip, gsi: int) -> None:
        self._chip = chip
        self.gsi = gsi

    def set_level(self, high: bool) -> None:
        self._chip.set_level(self.gsi, high)
