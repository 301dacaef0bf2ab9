"""Put the virtio devices a MachineConfig asks for on the MMIO bus (Virtio 1.2 §4.2).

Each device sits behind its own virtio-mmio transport at the slot
`layout.VIRTIO_SLOTS` gives its kind (0xfeb00000 + 0x200 * slot) and drives
that slot's ISA IRQ. A guest finds them three ways, as Linux does on x86:
by probing the windows for the magic value, on its kernel command line
(`linux_cmdline`, Linux's `virtio_mmio.device=` syntax, for the Linux boot
protocol) and in the ACPI DSDT (`acpi_devices`, HID LNRO0005, where the
machine has ACPI).

Notifications and interrupts take one of two paths (Virtio 1.2 §4.2.3.3,
§4.2.3.4). The plain one: the guest's QueueNotify write is an MMIO exit, the
vCPU thread serves the queue and raises the interrupt with KVM_IRQ_LINE. With
an I/O thread (`io_thread`, where the host has KVM_CAP_IOEVENTFD and
KVM_CAP_IRQFD_RESAMPLE): each queue's QueueNotify value is an ioeventfd, so
the write does not exit, the I/O thread serves the queue, and the interrupt
goes through an irqfd (`eventfd_wiring`).
"""

from __future__ import annotations

import functools
import os

from pyvmm.arch.x86_64 import layout
from pyvmm.devices.bus import Bus
from pyvmm.devices.virtio.mmio import (
    MMIO_WINDOW_SIZE,
    REGISTER_SIZE,
    VIRTIO_MMIO_QUEUE_NOTIFY,
    VirtioMmio,
)
from pyvmm.errors import UsageError
from pyvmm.machine.interrupts import InterruptLines, IrqfdLine
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyvmm.console.input import InputBuffer
    from pyvmm.devices.bus import BusDevice
    from pyvmm.devices.virtio.console import VirtioConsole
    from pyvmm.devices.virtio.device import VirtioDevice
    from pyvmm.kvm.vm import Vm
    from pyvmm.machine.io_thread import IoThread


class Drive:
    """A raw disk image for virtio-blk: QEMU's `-drive file=PATH[,readonly=on]`."""

    __slots__ = ("path", "read_only")

    def __init__(self, path: str, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"Drive({self.path!r}, read_only={self.read_only})"

    @classmethod
    def parse(cls, text: str) -> Drive:
        """`file=PATH[,readonly=on|off][,format=raw][,if=virtio]`, or UsageError.

        QEMU's -drive syntax (a `,,` stands for a comma in PATH); only what
        pyvmm's one virtio-blk disk can be is accepted.
        """
        fields: dict[str, str] = {}
        for item in text.replace(",,", "\0").split(","):
            key, equals, value = item.partition("=")
            if not equals:
                raise UsageError(f"--drive {text}: expected KEY=VALUE, got '{item}'")
            if key in fields:
                raise UsageError(f"--drive {text}: {key}= is given twice")
            fields[key] = value.replace("\0", ",")
        unknown = set(fields) - {"file", "readonly", "format", "if"}
        if unknown:
            raise UsageError(f"--drive {text}: unknown option {', '.join(sorted(unknown))}")
        if not fields.get("file"):
            raise UsageError(f"--drive {text}: needs file=PATH")
        if fields.get("format", "raw") != "raw":
            raise UsageError(f"--drive {text}: only format=raw (a plain disk image)")
        if fields.get("if", "virtio") != "virtio":
            raise UsageError(f"--drive {text}: only if=virtio (pyvmm's disk is virtio-blk)")
        readonly = fields.get("readonly", "off")
        if readonly not in ("on", "off"):
            raise UsageError(f"--drive {text}: readonly=on or readonly=off")
        return cls(fields["file"], readonly == "on")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Drive):
            return NotImplemented
        return (self.path, self.read_only) == (other.path, other.read_only)


class VirtioSlot:
    """One transport on the bus: its kind, guest-physical window, GSI and device;
    `eventfds` is True when its notifications and interrupt go through an
    ioeventfd and an irqfd."""

    __slots__ = ("device", "eventfds", "gpa", "gsi", "kind", "transport")

    def __init__(
        self,
        kind: str,
        gpa: int,
        gsi: int,
        device: VirtioDevice,
        transport: VirtioMmio,
        eventfds: bool = False,
    ) -> None:
        self.kind = kind
        self.gpa = gpa
        self.gsi = gsi
        self.device = device
        self.transport = transport
        self.eventfds = eventfds


def slot_window(kind: str) -> tuple[int, int]:
    """(guest-physical base, GSI) of the transport for `kind` ("console", "block", ...)."""
    index, gsi = layout.VIRTIO_SLOTS[kind]
    return layout.VIRTIO_MMIO_BASE + index * layout.VIRTIO_MMIO_STRIDE, gsi


def open_drive(drive: Drive) -> int:
    """The drive's file, opened read-write (read-only with `read_only`).

    UsageError for a path that cannot be opened, or that is no file or block
    device (a directory, a pipe, a socket, /dev/zero: nothing a disk can be
    read from at any offset), judged by stat(2) before the open and fstat(2)
    after it.
    """
    import stat

    def refuse_unless_a_disk(mode: int) -> None:
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            from pyvmm.loaders import file_kind

            raise UsageError(
                f"--drive file={drive.path}: {file_kind(mode)}, not a disk image "
                "(a raw image file or a block device)"
            )

    flags = os.O_RDONLY if drive.read_only else os.O_RDWR
    try:
        refuse_unless_a_disk(os.stat(drive.path).st_mode)
        fd = os.open(drive.path, flags | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise UsageError(f"--drive file={drive.path}: {error.strerror}") from None
    try:
        refuse_unless_a_disk(os.fstat(fd).st_mode)  # it may have changed since the stat
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach_virtio(
    mmio_bus: Bus,
    memory: GuestMemory,
    interrupts: InterruptLines,
    *,
    console: Callable[[bytes], None] | None = None,
    drive: Drive | None = None,
    entropy: bool = False,
    balloon: bool = False,
    close_later: Callable[[Callable[[], None]], object] | None = None,
    console_input: InputBuffer | None = None,
    post: Callable[[Callable[[], None]], None] | None = None,
    io_thread: IoThread | None = None,
    vm: Vm | None = None,
) -> list[VirtioSlot]:
    """The virtio devices asked for, each on its transport: console output to `console`,
    a virtio-blk disk on `drive`, virtio-rng (host entropy, os.urandom) with `entropy`,
    a balloon that gives pages back to the host (madvise MADV_DONTNEED) with `balloon`.

    `close_later(callback)` registers what must be closed with the machine
    (the drive's file). `console_input` feeds the console's receiveq, through
    `post` (VcpuGroup.post) as input arrives (console/input.py). With
    `io_thread` and `vm`, notifications and interrupts go through
    eventfds (`eventfd_wiring`); the I/O thread closes them. Raises
    UsageError for a drive that cannot be opened, KvmError if KVM refuses
    an ioeventfd or irqfd.
    """
    from pyvmm.devices.virtio.balloon import VirtioBalloon
    from pyvmm.devices.virtio.blk import FileBackend, VirtioBlk
    from pyvmm.devices.virtio.console import VirtioConsole
    from pyvmm.devices.virtio.rng import VirtioRng

    wanted: list[tuple[str, VirtioDevice]] = []
    if console is not None:
        wanted.append(("console", VirtioConsole(console)))
    if drive is not None:
        fd = open_drive(drive)
        if close_later is not None:
            close_later(lambda: os.close(fd))
        wanted.append(("block", VirtioBlk(FileBackend(fd), read_only=drive.read_only)))
    if entropy:
        wanted.append(("entropy", VirtioRng(os.urandom)))
    if balloon:
        max_pages = memory.size // 4096  # no driver gives more pages than there is RAM
        wanted.append(("balloon", VirtioBalloon(memory.discard, max_pages=max_pages)))
    slots = []
    for kind, device in wanted:
        gpa, gsi = slot_window(kind)
        line = interrupts.line(gsi, f"virtio-{kind}")
        irqfd = None
        if io_thread is not None and vm is not None:
            irqfd = IrqfdLine(vm, gsi)
            if close_later is not None:
                close_later(irqfd.close)
            io_thread.add(irqfd.resample, irqfd.resampled)
            line = irqfd
        transport = VirtioMmio(device, memory, line)
        if irqfd is not None and io_thread is not None and vm is not None:
            eventfd_wiring(vm, transport, gpa, io_thread)
        on_bus: BusDevice = transport
        if kind == "console" and console_input is not None:
            on_bus = _with_input(transport, device, console_input, post)  # type: ignore[arg-type]
        mmio_bus.insert(on_bus, gpa, MMIO_WINDOW_SIZE, f"virtio-mmio {kind}")
        slots.append(VirtioSlot(kind, gpa, gsi, device, transport, irqfd is not None))
    return slots


def eventfd_wiring(vm: Vm, transport: VirtioMmio, gpa: int, io_thread: IoThread) -> None:
    """One ioeventfd per queue on the window's QueueNotify register (§4.2.3.3), matching
    the queue's number: its notification wakes `io_thread`, which calls
    `transport.notify(queue)`. A write of any other value still exits."""
    notify = gpa + VIRTIO_MMIO_QUEUE_NOTIFY
    for index in range(len(transport.queues)):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            vm.ioeventfd(fd, notify, REGISTER_SIZE, datamatch=index)
        except BaseException:
            os.close(fd)
            raise
        io_thread.add(fd, functools.partial(transport.notify, index))


def eventfds_available(vm: Vm) -> bool:
    """Whether this host's KVM has what the eventfd path needs: KVM_CAP_IOEVENTFD,
    KVM_CAP_IRQFD and KVM_CAP_IRQFD_RESAMPLE (asked of the VM, KVM API doc 4.4)."""
    from pyvmm._kvm import lib

    capabilities = (lib.KVM_CAP_IOEVENTFD, lib.KVM_CAP_IRQFD, lib.KVM_CAP_IRQFD_RESAMPLE)
    return all(vm.check_extension(capability) > 0 for capability in capabilities)


def _with_input(
    transport: VirtioMmio,
    console: VirtioConsole,
    console_input: InputBuffer,
    post: Callable[[Callable[[], None]], None] | None,
) -> BusDevice:
    """The console's transport, fed from the host's input (console/input.py)."""
    from pyvmm.console.input import DeviceWithInput

    return DeviceWithInput(
        transport, lambda: console.input_space, console.push_input, console_input, post
    )


def linux_cmdline(slots: list[VirtioSlot]) -> str:
    """Linux's `virtio_mmio.device=<size>@<base>:<irq>` for each transport (needs
    CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES; Documentation/admin-guide/kernel-parameters.txt)."""
    return " ".join(
        f"virtio_mmio.device={MMIO_WINDOW_SIZE}@0x{slot.gpa:x}:{slot.gsi}" for slot in slots
    )


def acpi_devices(slots: list[VirtioSlot]) -> tuple[tuple[int, int, int], ...]:
    """(base, size, GSI) of each transport, for the DSDT's LNRO0005 devices."""
    return tuple((slot.gpa, MMIO_WINDOW_SIZE, slot.gsi) for slot in slots)
