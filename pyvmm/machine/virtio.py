"""Put the virtio devices a MachineConfig asks for on the MMIO bus (Virtio 1.2 §4.2).

Each device sits behind its own virtio-mmio transport at the slot
`layout.VIRTIO_SLOTS` gives its kind (0xfeb00000 + 0x200 * slot) and drives
that slot's ISA IRQ. A guest finds them three ways, as Linux does on x86:
by probing the windows for the magic value, on its kernel command line
(`linux_cmdline`, Linux's `virtio_mmio.device=` syntax, for the Linux boot
protocol) and in the ACPI DSDT (`acpi_devices`, HID LNRO0005, where the
machine has ACPI).
"""

from __future__ import annotations

import os

from pyvmm.arch.x86_64 import layout
from pyvmm.devices.bus import Bus
from pyvmm.devices.virtio.mmio import MMIO_WINDOW_SIZE, VirtioMmio
from pyvmm.errors import UsageError
from pyvmm.machine.interrupts import InterruptLines
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyvmm.console.input import InputBuffer
    from pyvmm.devices.bus import BusDevice
    from pyvmm.devices.virtio.console import VirtioConsole
    from pyvmm.devices.virtio.device import VirtioDevice


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
    """One transport on the bus: its kind, guest-physical window, GSI and device."""

    __slots__ = ("device", "gpa", "gsi", "kind", "transport")

    def __init__(
        self, kind: str, gpa: int, gsi: int, device: VirtioDevice, transport: VirtioMmio
    ) -> None:
        self.kind = kind
        self.gpa = gpa
        self.gsi = gsi
        self.device = device
        self.transport = transport


def slot_window(kind: str) -> tuple[int, int]:
    """(guest-physical base, GSI) of the transport for `kind` ("console", "block", ...)."""
    index, gsi = layout.VIRTIO_SLOTS[kind]
    return layout.VIRTIO_MMIO_BASE + index * layout.VIRTIO_MMIO_STRIDE, gsi


def open_drive(drive: Drive) -> int:
    """The drive's file, opened read-write (read-only with `read_only`); UsageError if not."""
    flags = os.O_RDONLY if drive.read_only else os.O_RDWR
    try:
        return os.open(drive.path, flags | os.O_CLOEXEC)
    except OSError as error:
        raise UsageError(f"--drive file={drive.path}: {error.strerror}") from None


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
) -> list[VirtioSlot]:
    """The virtio devices asked for, each on its transport: console output to `console`,
    a virtio-blk disk on `drive`, virtio-rng (host entropy, os.urandom) with `entropy`,
    a balloon that gives pages back to the host (madvise MADV_DONTNEED) with `balloon`.

    `close_later(callback)` registers what must be closed with the machine
    (the drive's file). `console_input` feeds the console's receiveq, through
    `post` (VcpuGroup.post) as input arrives (console/input.py). Raises
    UsageError for a drive that cannot be opened.
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
        wanted.append(("balloon", VirtioBalloon(memory.discard)))
    slots = []
    for kind, device in wanted:
        gpa, gsi = slot_window(kind)
        transport = VirtioMmio(device, memory, interrupts.line(gsi, f"virtio-{kind}"))
        on_bus: BusDevice = transport
        if kind == "console" and console_input is not None:
            on_bus = _with_input(transport, device, console_input, post)  # type: ignore[arg-type]
        mmio_bus.insert(on_bus, gpa, MMIO_WINDOW_SIZE, f"virtio-mmio {kind}")
        slots.append(VirtioSlot(kind, gpa, gsi, device, transport))
    return slots


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
