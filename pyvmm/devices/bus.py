"""One bus type for port I/O and MMIO (Firecracker's `Bus`, kvmtool's iotrap).

Devices sit on non-overlapping [base, base + length) ranges and see only an
offset from their base. An access nobody claims behaves like a PC's floating
bus: reads return all ones, writes vanish; both are counted so they can be
reported.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from pyvmm.errors import BusError, BusOverlap, DeviceError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object  # the protocol is for type checkers; at run time, a plain base class

ADDRESS_LIMIT = 1 << 64


class BusDevice(Protocol):
    """What a device offers a bus. `offset` is relative to the device's base.

    Any object with these two methods is one (a pure Python object: no KVM,
    no base address). `size` is the access width in bytes (1, 2 or 4 for
    port I/O, up to 8 for MMIO); values are unsigned integers of that width,
    little-endian on the MMIO bus. `read` returns the value the guest reads,
    which must fit in `size` bytes (anything else, like an exception from
    either method, ends the run as a vmm-error); `write` gets the value the
    guest wrote. They run on the vCPU's thread, between two KVM_RUN calls
    (KVM_EXIT_IO / KVM_EXIT_MMIO, KVM API doc 5).
    """

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class Shifted:
    """Shows `device` at `shift` bytes into its own register window.

    For devices whose registers are not contiguous on the bus, e.g. PCI's
    CONFIG_ADDRESS (0xcf8) and CONFIG_DATA (0xcfc), between which 0xcf9 is
    the PC's reset-control register and not the PCI device's.
    """

    def __init__(self, device: BusDevice, shift: int) -> None:
        self.device = device
        self.shift = shift

    def read(self, offset: int, size: int) -> int:
        return self.device.read(offset + self.shift, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.device.write(offset + self.shift, size, value)


class BusRange:
    """`device` at [base, base + length) on a bus, named `name` in messages (read-only)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("base", "device", "length", "name")

    def __init__(self, base: int, length: int, device: BusDevice, name: str) -> None:
        self.base = base
        self.length = length
        self.device = device
        self.name = name

    @property
    def end(self) -> int:
        return self.base + self.length


# A route: the device's read and write methods and the base their offsets are from.
Route = tuple[Callable[[int, int], int], Callable[[int, int, int], None], int]
# Routes remembered per bus before the cache starts again (MMIO addresses are many).
ROUTE_CACHE_LIMIT = 4096


class Bus:
    """Sorted, non-overlapping device ranges; lookup is a bisect on the bases.

    `routes` caches, per address already accessed, the device's two methods
    and base (see `route`), so that the exit loop reaches a device with one
    dict lookup; `insert` empties it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._ranges: list[BusRange] = []
        self._bases: list[int] = []
        self.unmapped_reads = 0
        self.unmapped_writes = 0
        self.routes: dict[int, Route] = {}
        # The exit loop's own routes, by its keys (machine/vcpu_loop.py), emptied with `routes`.
        self.exit_routes: dict[int, tuple] = {}  # type: ignore[type-arg]

    @property
    def ranges(self) -> tuple[BusRange, ...]:
        return tuple(self._ranges)

    def insert(self, device: BusDevice, base: int, length: int, name: str | None = None) -> None:
        label = name or type(device).__name__
        if length <= 0:
            raise BusError(f"{self.name}: {label} at 0x{base:x} has an empty range")
        if base < 0 or base + length > ADDRESS_LIMIT:
            raise BusError(f"{self.name}: {label} at 0x{base:x} runs past the address space")
        new = BusRange(base, length, device, label)
        index = bisect.bisect_left(self._bases, base)
        for neighbour in self._ranges[max(index - 1, 0) : index + 1]:
            if neighbour.base < new.end and base < neighbour.end:
                raise BusOverlap(
                    f"{self.name}: {label} at 0x{base:x}..0x{new.end:x} overlaps "
                    f"{neighbour.name} at 0x{neighbour.base:x}..0x{neighbour.end:x}"
                )
        self._ranges.insert(index, new)
        self._bases.insert(index, base)
        self.routes.clear()
        self.exit_routes.clear()

    def find(self, address: int) -> BusRange | None:
        index = bisect.bisect_right(self._bases, address) - 1
        if index < 0:
            return None
        found = self._ranges[index]
        return found if address < found.end else None

    def route(self, address: int) -> Route:
        """(read, write, base) for `address`, remembered in `routes`.

        The device at `address` is called as read(address - base, size) and
        write(address - base, size, value), exactly as `read` and `write` call
        it; an address nobody claims gets the floating bus's methods (base 0).
        """
        found = self.find(address)
        if found is None:
            route: Route = (self._unmapped_read, self._unmapped_write, 0)
        else:
            route = (found.device.read, found.device.write, found.base)
        if len(self.routes) >= ROUTE_CACHE_LIMIT:
            self.routes.clear()
            self.exit_routes.clear()
        self.routes[address] = route
        return route

    def _unmapped_read(self, address: int, size: int) -> int:
        self.unmapped_reads += 1
        return (1 << (8 * size)) - 1

    def _unmapped_write(self, address: int, size: int, value: int) -> None:
        self.unmapped_writes += 1

    def read_too_wide(self, address: int, size: int, value: int) -> DeviceError:
        """The error for a device whose read answer does not fit the access's `size` bytes."""
        found = self.find(address)
        who = found.name if found is not None else "nothing"
        return DeviceError(
            f"{self.name}: {who} answered {hex(value)} to a {size}-byte read at "
            f"0x{address:x}: more than {8 * size} bits"
        )

    def read(self, address: int, size: int) -> int:
        found = self.find(address)
        if found is None:
            self.unmapped_reads += 1
            return (1 << (8 * size)) - 1
        return found.device.read(address - found.base, size)

    def write(self, address: int, size: int, value: int) -> None:
        found = self.find(address)
        if found is None:
            self.unmapped_writes += 1
            return
        found.device.write(address - found.base, size, value)
