"""Guest fuzz cases of the virtio kind: a guest that drives pyvmm's virtio-mmio devices
with hostile virtqueues, under KVM.

The machine has some of the four devices (console, block on a temporary raw
image, entropy, balloon) in their windows at 0xfeb00000 + 0x200 * slot. The
guest is user-mode code (CPL3 code runs natively even on hosts whose KVM
emulates ring 0), a straight line of MMIO accesses and stores into its RAM,
planned on the host before it runs:

- the plan's driver is the unit tests' Linux-like one (tests/unit/virtio_rings.py:
  `MmioDriver` probes and sets queues up, `DriverRing` lays rings out and adds
  chains) talking to an offline twin of each device over a model of the
  guest's RAM; every register access and every store it makes is recorded,
  and the reads it made decide what it writes next, as they would for a
  driver in the guest;
- between its well-formed steps the plan breaks the rules: descriptors
  scribbled over by the virtqueue fuzzer's own generator (virtqueue_fuzz.scribble,
  with this machine's addresses: RAM, the MMIO hole and the virtio windows
  themselves, the ends of RAM, the top of the address space), chains that loop,
  indirect tables that are bad, lengths that overflow, device-writable buffers
  where readable ones are needed and the reverse, avail indexes that jump,
  queue sizes that are no power of 2, rings in the hole or misaligned,
  notifications of queues that do not exist, status writes out of order,
  resets between a request and its kick, configuration-space and register
  accesses of every width (and across the end of a window), windows of
  devices the machine lacks;
- the recording is compiled into x86-64 code: `mov` to and from the window
  for each access, `rep movsb` (or `rep stosb` for zeros) from a data area in
  the image for each store, then a debug-exit with the case's own value.

The guest keeps its own memory (pyvmm's tables and its image) below
`PRIVATE_END` and gives the devices the RAM above it. What a run must show, on
top of the guest fuzzer's property (a named outcome and its status, no
exception, no hang, nothing left behind in the host process; guest_run.py):
the guest reaches its debug-exit, unless a device wrote into or released the
guest's own memory (the guest may point a device there, and then crash);
every guest-memory access a device makes that pyvmm lets through lies in
RAM, by the layout's own arithmetic; the disk image keeps its size and
changes only where the block device wrote (nowhere when read-only), each of
those writes inside the disk (the watchers: guest_virtio_watch.py). Case N of
seed S depends on (S, N) alone; what the devices count may not, when an I/O
thread serves the notifications while the guest goes on (half of the cases;
the others take the plain path, an MMIO exit per notification).
"""

from __future__ import annotations

import contextlib
import logging
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyvmm.arch.x86_64 import layout
from pyvmm.devices.virtio.balloon import BALLOON_STAT, INFLATEQ, REPORTINGQ, STATSQ
from pyvmm.devices.virtio.blk import (
    DISCARD_SEGMENT,
    REQUEST_HEADER,
    SECTOR_SIZE,
    VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VirtioBlk,
)
from pyvmm.devices.virtio.device import (
    ACKNOWLEDGE,
    DEVICE_NEEDS_RESET,
    DRIVER,
    DRIVER_OK,
    FAILED,
    FEATURES_OK,
    VIRTIO_F_VERSION_1,
)
from pyvmm.devices.virtio.mmio import (
    MMIO_WINDOW_SIZE,
    VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL,
    VIRTIO_MMIO_INTERRUPT_ACK,
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_DESC_HIGH,
    VIRTIO_MMIO_QUEUE_DESC_LOW,
    VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_QUEUE_USED_HIGH,
    VIRTIO_MMIO_QUEUE_USED_LOW,
    VIRTIO_MMIO_STATUS,
    VirtioMmio,
)
from pyvmm.errors import GuestMemoryError
from tests.fuzz.virtqueue_fuzz import DESC, DEVICES, INDIRECT, NEXT, WRITE, Disk, scribble
from tests.unit.virtio_rings import Allocator, DriverRing, FakeMemory, MmioDriver

MIB = 1 << 20
PAGE = 0x1000
KINDS = tuple(layout.VIRTIO_SLOTS)  # console, block, entropy, balloon
WINDOWS = {
    kind: layout.VIRTIO_MMIO_BASE + slot * layout.VIRTIO_MMIO_STRIDE
    for kind, (slot, _) in layout.VIRTIO_SLOTS.items()
}
# Eight windows' worth: the four devices', then addresses no device claims.
WINDOWS_SPAN = 8 * layout.VIRTIO_MMIO_STRIDE
# The guest's own memory: pyvmm's GDT, page tables, TSS and stack, then its image
# at 1 MiB (code, then the data its stores copy). The devices get the RAM above.
LOAD_GPA = layout.HIGH_LOAD_GPA
PRIVATE_END = 4 * MIB
IMAGE_LIMIT = PRIVATE_END - LOAD_GPA
# Where each device's driver puts its rings and buffers (its allocator), 2 MiB each;
# hostile addresses go anywhere in the devices' RAM, other devices' rings included.
RING_AREAS = {
    kind: (PRIVATE_END + 2 * MIB * n, PRIVATE_END + 2 * MIB * (n + 1))
    for n, kind in enumerate(KINDS)
}
# 16 MiB mostly; now and then RAM that runs past the 32-bit hole, so that RAM
# continues at 4 GiB (the devices reach it, the guest's page tables do not).
RAM_SIZES = ((16 * MIB, 6), (layout.MMIO_GAP_START + 16 * MIB, 1))
DISK_SIZES = (4096, 64 * 1024, 1000, 17 * SECTOR_SIZE)  # 1000: not whole sectors
DEVICE_SHARE = 0.85  # chance that the machine has each device
ABSENT_TARGET = 0.05  # chance that a session drives the window of a device the machine lacks
CLI_SHARE = 0.03  # cases run as `pyvmm boot --console virtio --drive ... --virtio-rng --balloon`
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
PLAN_READ_BUDGET = 4 * MIB  # bytes a twin reads for one register access (PlanMemory)


# --- the script the guest runs ----------------------------------------------------


@dataclass(frozen=True)
class Mmio:
    """One access to guest-physical `gpa` of `size` bytes: a write of `value`, or a read."""

    gpa: int
    size: int
    value: int | None = None


@dataclass(frozen=True)
class Store:
    """The guest writes `data` into its RAM at `gpa`."""

    gpa: int
    data: bytes


Op = Mmio | Store


@dataclass(frozen=True)
class VirtioSetup:
    """The virtio side of a case: the machine's devices, the disk, and the guest's script."""

    devices: tuple[str, ...]
    disk: bytes  # the raw image's bytes before the run (block only)
    read_only: bool
    script: tuple[Op, ...]
    end_value: int  # what the guest writes to the debug-exit port after its script
    # Notifications through ioeventfds served by an I/O thread, interrupts through
    # irqfds (pyvmm's default); False: the plain path, an MMIO exit per notification.
    eventfds: bool = True


def compile_script(script: tuple[Op, ...], end_value: int) -> bytes:
    """x86-64 code, entered at LOAD_GPA in user mode, that runs `script` then exits.

    An access is `mov eax, gpa` then a `mov` of its width through [rax]; a
    store is `rep movsb` from the data after the code (zeros: `rep stosb`).
    Every address is below 4 GiB, where pyvmm's page tables map RAM 1:1.
    """
    code = bytearray()
    data = bytearray()
    sources: list[tuple[int, int]] = []  # (offset of an imm32 in code, offset in data)
    for op in script:
        if isinstance(op, Mmio):
            assert op.gpa + op.size <= 1 << 32, op
            code += b"\xb8" + U32.pack(op.gpa)  # mov eax, gpa
            width = {1: b"", 2: b"\x66", 4: b"", 8: b"\x48"}[op.size]
            byte_op = op.size == 1
            if op.value is None:
                code += width + (
                    b"\x8a\x08" if byte_op else b"\x8b\x08"
                )  # mov cl/cx/ecx/rcx, [rax]
                continue
            if op.value >> 32:
                code += b"\x48\xb9" + op.value.to_bytes(8, "little")  # mov rcx, imm64
            else:
                code += b"\xb9" + U32.pack(op.value)  # mov ecx, imm32
            code += width + (b"\x88\x08" if byte_op else b"\x89\x08")  # mov [rax], cl/cx/ecx/rcx
            continue
        assert op.gpa >= PRIVATE_END and op.gpa + len(op.data) <= 0xD000_0000, hex(op.gpa)
        if not any(op.data):
            code += b"\x31\xc0"  # xor eax, eax
        else:
            code += b"\xbe"  # mov esi, source (patched below)
            sources.append((len(code), len(data)))
            code += bytes(4)
            data += op.data
        code += b"\xbf" + U32.pack(op.gpa) + b"\xb9" + U32.pack(len(op.data))  # mov edi; mov ecx
        code += b"\xf3\xa4" if any(op.data) else b"\xf3\xaa"  # rep movsb / rep stosb
    code += b"\xb0" + bytes([end_value]) + b"\xe6\xf4\xeb\xfe"  # mov al, v; out 0xf4, al; jmp $
    code += bytes(-len(code) % 16)
    data_gpa = LOAD_GPA + len(code)
    for at, offset in sources:
        code[at : at + 4] = U32.pack(data_gpa + offset)
    image = bytes(code + data)
    assert len(image) <= IMAGE_LIMIT, f"a {len(image)}-byte image reaches the devices' RAM"
    return image


def describe_op(op: Op) -> str:
    if isinstance(op, Store):
        what = (
            "zeros"
            if not any(op.data)
            else op.data[:16].hex() + ("..." if len(op.data) > 16 else "")
        )
        return f"store 0x{op.gpa:x} <- {len(op.data)} bytes: {what}"
    where = f"0x{op.gpa:x}"
    for kind, base in WINDOWS.items():
        if base <= op.gpa < base + MMIO_WINDOW_SIZE:
            where += f" ({kind} +0x{op.gpa - base:03x})"
    if op.value is None:
        return f"read{op.size} {where}"
    return f"write{op.size} {where} <- 0x{op.value:x}"


# --- planning: a Linux-like driver, recorded, and a hostile one -----------------------


class PlanMemory(FakeMemory):
    """The plan's model of guest RAM, with the balloon's `discard` (the page reads as zeros).

    Reads past a budget (`PLAN_READ_BUDGET`, renewed at each register access) fail:
    the twins need not follow a chain of gigabytes, which the real devices must.
    """

    budget = 0

    def read(self, gpa: int, size: int) -> bytes:
        self.budget -= size
        if self.budget < 0:
            raise GuestMemoryError(gpa, size, "is more than the plan's twin reads")
        return super().read(gpa, size)

    def discard(self, gpa: int, size: int) -> None:
        self.write(gpa, bytes(size))


class RecordedStores:
    """The plan driver's view of RAM: each write is also a store of the guest's script."""

    def __init__(self, memory: PlanMemory, script: list[Op]) -> None:
        self.memory = memory
        self.script = script

    def contains(self, gpa: int, size: int = 1) -> bool:
        return self.memory.contains(gpa, size)

    def read(self, gpa: int, size: int) -> bytes:
        return FakeMemory.read(self.memory, gpa, size)  # the driver's reads cost no budget

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        self.memory.write(gpa, data)
        self.script.append(Store(gpa, bytes(data)))


class Window:
    """One device's window as the plan's driver sees it: every access is recorded for the
    guest and answered by an offline twin of the device over the plan's RAM."""

    def __init__(self, kind: str, device: Any, memory: PlanMemory, script: list[Op]) -> None:
        self.kind = kind
        self.gpa = WINDOWS[kind]
        self.script = script
        self.twin = VirtioMmio(device, memory)
        self.stores = RecordedStores(memory, script)
        self.driver = MmioDriver(self, self.stores)  # type: ignore[arg-type]
        self.driver.alloc = Allocator(*RING_AREAS[kind])
        self.rings: dict[int, DriverRing] = {}

    # The transport interface MmioDriver calls, for any width.
    def read(self, offset: int, size: int) -> int:
        self.script.append(Mmio(self.gpa + offset, size))
        self.stores.memory.budget = PLAN_READ_BUDGET
        return self.twin.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.script.append(Mmio(self.gpa + offset, size, value))
        self.stores.memory.budget = PLAN_READ_BUDGET
        self.twin.write(offset, size, value)

    @property
    def device(self) -> Any:
        return self.twin.device

    @property
    def queue_count(self) -> int:
        return int(self.device.queue_count)


def take_slot(ring: DriverRing) -> int:
    """A free descriptor of `ring`; when none is left, the driver starts over from 0."""
    if not ring.free:
        ring.free = list(range(ring.size))
    return ring.free.pop(0)


def put_chain(
    ring: DriverRing, parts: list[tuple[int, int, int]], loop_to: int | None = None
) -> None:
    """Write `parts` ((gpa, length, flags) each) at free descriptors as one chain linked by
    NEXT, its last part leading back to part `loop_to` if given, and make it available."""
    slots = [take_slot(ring) for _ in parts]
    for position, (gpa, length, flags) in enumerate(parts):
        if position + 1 < len(parts):
            flags, after = flags | NEXT, slots[position + 1]
        elif loop_to is not None:
            flags, after = flags | NEXT, slots[loop_to]
        else:
            after = 0
        ring.write_desc(slots[position], gpa, length, flags, after)
    ring.publish(slots[0])


class Planner:
    """Plans one case's script: a few sessions with the devices, each a bring-up then steps."""

    def __init__(self, rng: random.Random, ram_size: int, disk_size: int, read_only: bool) -> None:
        self.rng = rng
        self.ram = layout.ram_ranges(ram_size)
        self.low_end = self.ram[0][1]
        self.ram_end = self.ram[-1][0] + self.ram[-1][1]
        self.memory = PlanMemory(self.ram)
        self.script: list[Op] = []
        self.disk_size = disk_size
        self.read_only = read_only
        self.windows: dict[str, Window] = {}

    def window(self, kind: str) -> Window:
        if kind not in self.windows:
            if kind == "block":
                device: Any = VirtioBlk(Disk(self.disk_size), read_only=self.read_only)
            else:
                device = DEVICES[kind](self.memory)  # type: ignore[arg-type]
            self.windows[kind] = Window(kind, device, self.memory, self.script)
        return self.windows[kind]

    # -- addresses ---------------------------------------------------------------

    def address(self, rng: random.Random) -> int:
        """Where a hostile descriptor points (virtqueue_fuzz.address, for this machine)."""
        return rng.choice(
            [
                rng.randrange(PRIVATE_END, self.low_end),  # the devices' RAM
                rng.randrange(self.low_end, layout.MMIO_GAP_END),  # the hole
                layout.VIRTIO_MMIO_BASE + rng.randrange(WINDOWS_SPAN),  # the virtio windows
                self.low_end - rng.randrange(1, 64),  # straddles the end of (low) RAM
                self.ram_end - rng.randrange(1, 64),
                self.ram_end + rng.randrange(0x1_0000),  # past RAM
                (1 << 64) - rng.randrange(1, 4096),  # the top of the address space
                0,
            ]
        )

    def bad_ring_address(self, alloc: Allocator, size: int, alignment: int) -> int:
        """A ring address the device must refuse, or now and then a good one."""
        rng = self.rng
        return rng.choice(
            [
                alloc(size, alignment) + rng.randrange(1, alignment) if alignment > 1 else 1,
                rng.randrange(self.low_end, layout.MMIO_GAP_END) & ~0xF,  # the hole
                layout.VIRTIO_MMIO_BASE + rng.randrange(0, WINDOWS_SPAN, 16),  # a window
                (self.low_end - rng.randrange(16, 4096)) & ~0xF,  # runs past low RAM
                self.ram_end + rng.randrange(0, 1 << 20, 16),
                rng.getrandbits(64) & ~0xF,
                alloc(size, alignment),
            ]
        )

    def pfn(self) -> int:
        """A page number for the balloon: the devices' RAM, not RAM, any, or the guest's own."""
        rng = self.rng
        return rng.choice(
            [
                rng.randrange(PRIVATE_END, self.low_end) >> 12,
                rng.randrange(PRIVATE_END, self.low_end) >> 12,
                rng.randrange(self.low_end, 1 << 32) >> 12,
                self.ram_end >> 12,
                rng.getrandbits(32),
                rng.randrange(PRIVATE_END) >> 12 if rng.random() < 0.1 else 0xFFFF_FFFF,
            ]
        )

    # -- sessions ------------------------------------------------------------------

    def session(self, window: Window) -> None:
        """Bring the device up (or try to), then a few steps, well-formed or not."""
        rng = self.rng
        if rng.random() < 0.1:
            self.status_out_of_order(window)
        self.bring_up(window)
        for _ in range(rng.randrange(1, 8)):
            if window.twin.status & DEVICE_NEEDS_RESET and rng.random() < 0.5:
                self.bring_up(window)  # start over, as Linux's virtio_device_restore would
            step = rng.choices(STEPS, STEP_WEIGHTS)[0]
            try:
                step(self, window)
            except AssertionError:  # the plan driver ran out of RAM or met a device it cannot drive
                return

    def bring_up(self, window: Window) -> None:
        """Linux's probe and queue setup (a queue set up with hostile values now and then),
        then DRIVER_OK, sometimes only after a first request."""
        rng = self.rng
        driver = window.driver
        window.rings.clear()
        roll = rng.random()
        if roll < 0.4:
            accept = (1 << 64) - 1  # everything offered, as Linux takes what it knows
        elif roll < 0.9:
            accept = rng.getrandbits(64) | (1 << VIRTIO_F_VERSION_1)
        else:
            accept = rng.getrandbits(64)  # maybe no VERSION_1: FEATURES_OK is refused
        try:
            if not driver.probe(accept):
                return
            for index in range(window.queue_count):
                if rng.random() < 0.1:
                    self.hostile_queue_setup(window, index)
                else:
                    window.rings[index] = driver.setup_queue(index)
            if rng.random() < 0.2 and window.rings:  # a request made before DRIVER_OK
                self.request(window)
            if rng.random() < 0.95:
                driver.add_status(DRIVER_OK)
        except AssertionError:
            return

    def hostile_queue_setup(self, window: Window, index: int) -> None:
        """vm_setup_vq with a size that is no power of 2 (or too large) and rings in the
        hole, in a window, misaligned or past RAM; the device must refuse QueueReady."""
        rng = self.rng
        window.write(VIRTIO_MMIO_QUEUE_SEL, 4, index)
        window.read(VIRTIO_MMIO_QUEUE_READY, 4)
        largest = window.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4) or 256
        size = rng.choice(
            [3, 6, 100, largest - 1, largest + 1, largest * 2, 0, 0xFFFF_FFFF, largest, 1]
        )
        entries = min(max(size, 1), 1024)
        alloc = window.driver.alloc
        areas = (
            (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, 16 * entries, 16),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 6 + 2 * entries, 2),
            (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, 6 + 8 * entries, 4),
        )
        window.write(VIRTIO_MMIO_QUEUE_NUM, 4, size)
        for low, high, length, alignment in areas:
            gpa = self.bad_ring_address(alloc, length, alignment)
            window.write(low, 4, gpa & 0xFFFF_FFFF)
            window.write(high, 4, gpa >> 32)
        window.write(VIRTIO_MMIO_QUEUE_READY, 4, 1)
        window.read(VIRTIO_MMIO_QUEUE_READY, 4)

    # -- steps: each does one thing to one device ---------------------------------------

    def pick_ring(self, window: Window) -> tuple[int, DriverRing] | None:
        if not window.rings:
            return None
        index = self.rng.choice(sorted(window.rings))
        return index, window.rings[index]

    def kick(self, window: Window, index: int) -> None:
        if self.rng.random() < 0.9:
            window.driver.kick(index)

    def request(self, window: Window) -> None:
        """A request the device expects (its directions swapped now and then), then the
        virtqueue fuzzer's scribbles over the ring, then a kick."""
        picked = self.pick_ring(window)
        if picked is None:
            return
        index, ring = picked
        rng = self.rng
        readable, writable = self.request_buffers(window, index)
        if rng.random() < 0.1:  # device-writable where readable is needed, and the reverse
            readable, writable = (
                [rng.randbytes(size) for size in writable],
                [len(b) for b in readable],
            )
        negotiated = window.twin.queues[index].indirect
        indirect = rng.random() < (0.3 if negotiated else 0.03)
        indirect = indirect or len(readable) + len(writable) > ring.size
        if len(ring.free) < (1 if indirect else len(readable) + len(writable)):
            ring.free = list(range(ring.size))
        ring.add(readable, writable, indirect=indirect)
        if rng.random() < 0.35:
            scribble(rng, ring, window.stores, self.address)
            (ring.avail_idx,) = U16.unpack(window.stores.read(ring.avail + 2, U16.size))
        self.kick(window, index)

    def request_buffers(self, window: Window, index: int) -> tuple[list[bytes], list[int]]:
        """(readable data, writable sizes) of a request the device understands on `index`."""
        rng = self.rng
        sizes = [rng.choice((1, 16, 64, 512, 4096)) for _ in range(rng.randrange(1, 4))]
        if window.kind == "console":
            return ([], sizes) if index == 0 else ([rng.randbytes(size) for size in sizes], [])
        if window.kind == "entropy":
            return [], sizes
        if window.kind == "block":
            return self.block_request()
        roles = window.device.roles
        role = roles[index] if index < len(roles) else None
        if role == REPORTINGQ:
            return [], [PAGE * rng.choice((1, 2, 16))]
        if role == STATSQ:
            stats = b"".join(
                BALLOON_STAT.pack(rng.randrange(12), rng.getrandbits(64))
                for _ in range(rng.randrange(1, 12))
            )
            return [stats], []
        pfns = b"".join(U32.pack(self.pfn()) for _ in range(rng.randrange(1, 33)))
        return [pfns], ([] if role == INFLATEQ or rng.random() < 0.9 else [8])

    def block_request(self) -> tuple[list[bytes], list[int]]:
        """virtio-blk: header, data, status byte; sectors on the disk, at its edge or far off."""
        rng = self.rng
        capacity = self.disk_size // SECTOR_SIZE
        kind = rng.choice(
            [
                *(VIRTIO_BLK_T_IN, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_FLUSH),
                *(VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_OUT),
                *(VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD, rng.getrandbits(32)),
            ]
        )
        on_disk = [0, rng.randrange(max(capacity, 1)), rng.randrange(max(capacity, 1))]
        sector = rng.choice([*on_disk, capacity - 1, capacity, rng.getrandbits(64)]) % (1 << 64)
        size = (
            rng.choice((1, 1, 2, 8)) * SECTOR_SIZE if rng.random() < 0.9 else rng.randrange(1, 2000)
        )
        header = REQUEST_HEADER.pack(kind, 0, sector)
        if kind == VIRTIO_BLK_T_IN:
            return [header], [size, 1] if rng.random() < 0.7 else [size + 1]
        if kind == VIRTIO_BLK_T_OUT:
            return [header, rng.randbytes(size)], [1]
        if kind == VIRTIO_BLK_T_GET_ID:
            return [header], [20, 1]
        if kind == VIRTIO_BLK_T_DISCARD:
            segment = DISCARD_SEGMENT.pack(
                sector, rng.choice((1, 8, capacity + 1)), rng.choice((0, 0, 1))
            )
            return [header, segment], [1]
        return [header], [1]

    def loop(self, window: Window) -> None:
        """A chain whose last descriptor leads back into itself, in the table or in an
        indirect table."""
        picked = self.pick_ring(window)
        if picked is None:
            return
        index, ring = picked
        rng = self.rng
        count = rng.randrange(1, 5)
        buffers = [(ring.buffer(rng.randbytes(16)), 16) for _ in range(count)]
        back = rng.randrange(count)
        if rng.random() < 0.7:
            parts = [(gpa, length, self.direction()) for gpa, length in buffers]
            put_chain(ring, parts, loop_to=back)
        else:
            table = ring.alloc(DESC.size * count, 16)
            for position, (gpa, length) in enumerate(buffers):
                after = position + 1 if position + 1 < count else back
                ring.write_desc(position, gpa, length, NEXT | self.direction(), after, table=table)
            head = take_slot(ring)
            ring.write_desc(head, table, DESC.size * count, INDIRECT)
            ring.publish(head)
        self.kick(window, index)

    def direction(self) -> int:
        return WRITE if self.rng.random() < 0.5 else 0

    def bad_indirect(self, window: Window) -> None:
        """An indirect descriptor the driver must not make: empty, ragged or oversized
        table, a table outside RAM, INDIRECT with NEXT, an indirect inside an indirect
        table, an entry pointing past its table (and now and then a good one)."""
        picked = self.pick_ring(window)
        if picked is None:
            return
        index, ring = picked
        rng = self.rng
        count = rng.randrange(1, 4)
        table = ring.alloc(DESC.size * (count + 1), 16)
        for position in range(count):
            gpa = ring.buffer(rng.randbytes(32))
            flags = (NEXT if position + 1 < count else 0) | self.direction()
            ring.write_desc(position, gpa, 32, flags, position + 1, table=table)
        length, flags = DESC.size * count, INDIRECT
        variant = rng.randrange(8)
        if variant == 0:
            length = 0
        elif variant == 1:
            length += rng.randrange(1, DESC.size)
        elif variant == 2:
            length = DESC.size * (ring.size + rng.choice((1, 1000)))
        elif variant == 3:
            table = self.address(rng)
        elif variant == 4:
            flags |= NEXT
        elif variant == 5:
            ring.write_desc(rng.randrange(count), table, length, INDIRECT, table=table)
        elif variant == 6:
            ring.write_desc(
                count - 1, ring.buffer(b"x"), 1, NEXT, count + rng.randrange(3), table=table
            )
        head = take_slot(ring)
        ring.write_desc(head, table, length, flags, take_slot(ring))
        ring.publish(head)
        self.kick(window, index)

    def overflow(self, window: Window) -> None:
        """Lengths that add up past 2^32, or a buffer that wraps the 64-bit address space."""
        picked = self.pick_ring(window)
        if picked is None:
            return
        index, ring = picked
        rng = self.rng
        gpa = PRIVATE_END + rng.randrange(self.low_end - PRIVATE_END)
        if rng.random() < 0.5:
            parts = [(gpa, 0xFFFF_FFFF), (gpa, rng.choice((1, 0xFFFF_FFFF)))]
        elif rng.random() < 0.5:
            parts = [((1 << 64) - rng.randrange(1, 64), rng.choice((64, 0xFFFF_FFFF)))]
        else:  # whole RAM, many times over: up to 2^32 bytes
            parts = [(PRIVATE_END, self.low_end - PRIVATE_END)] * min(
                ring.size, 1 + (1 << 32) // (self.low_end - PRIVATE_END)
            )
        flags = self.direction()
        put_chain(ring, [(where, length, flags) for where, length in parts])
        self.kick(window, index)

    def misordered(self, window: Window) -> None:
        """A device-readable buffer after a device-writable one (§2.7.4.2)."""
        picked = self.pick_ring(window)
        if picked is None:
            return
        index, ring = picked
        rng = self.rng
        readable, writable = self.request_buffers(window, index)
        parts = [(ring.alloc(size), size, WRITE) for size in writable or [16]]
        parts += [(ring.buffer(data), len(data), 0) for data in readable or [rng.randbytes(16)]]
        put_chain(ring, parts)
        self.kick(window, index)

    def avail_jump(self, window: Window) -> None:
        """The avail idx moved by more than the queue holds."""
        picked = self.pick_ring(window)
        if picked is None:
            return
        index, ring = picked
        ring.set_avail_idx(ring.avail_idx + self.rng.choice((ring.size + 1, 0x8000, 0xFFFF)))
        self.kick(window, index)

    def config_access(self, window: Window) -> None:
        """The configuration space at every width, now and then across the window's end."""
        rng = self.rng
        size = rng.choice((1, 2, 4, 8))
        offset = VIRTIO_MMIO_CONFIG + rng.randrange(MMIO_WINDOW_SIZE - VIRTIO_MMIO_CONFIG)
        if rng.random() < 0.5:
            window.read(offset, size)
        else:
            window.write(offset, size, rng.getrandbits(8 * size))

    def register_access(self, window: Window) -> None:
        """A control register read or written out of turn, at any width and alignment."""
        rng = self.rng
        size = rng.choice((4, 4, 1, 2, 8))
        offset = rng.randrange(0, VIRTIO_MMIO_CONFIG, 4) + (
            rng.randrange(4) if rng.random() < 0.2 else 0
        )
        if rng.random() < 0.4:
            window.read(offset, size)
        else:
            value = rng.choice((0, 1, 0xFFFF_FFFF, rng.getrandbits(32), rng.getrandbits(8 * size)))
            window.write(offset, size, value & ((1 << (8 * size)) - 1))

    def missing_queue(self, window: Window) -> None:
        """A notification, or a queue setup, for a queue the device does not have."""
        rng = self.rng
        index = rng.choice(
            (window.queue_count, window.queue_count + 1, 0xFFFF, 0xFFFF_FFFF, rng.getrandbits(32))
        )
        if rng.random() < 0.6:
            window.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, index)
        else:
            window.write(VIRTIO_MMIO_QUEUE_SEL, 4, index)
            window.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)
            window.write(VIRTIO_MMIO_QUEUE_NUM, 4, 16)
            window.write(VIRTIO_MMIO_QUEUE_READY, 4, 1)

    def status_out_of_order(self, window: Window) -> None:
        """A status write that skips a step, clears a bit, sets DEVICE_NEEDS_RESET or junk."""
        value = self.rng.choice(
            (
                DRIVER_OK,
                FEATURES_OK,
                ACKNOWLEDGE | DRIVER_OK,
                ACKNOWLEDGE | FEATURES_OK,
                ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
                DEVICE_NEEDS_RESET,
                FAILED,
                ACKNOWLEDGE,
                0xFFFF_FFFF,
                self.rng.getrandbits(8),
            )
        )
        window.write(VIRTIO_MMIO_STATUS, 4, value)

    def reset_mid_request(self, window: Window) -> None:
        """A request made available, then a device reset before (or instead of) its kick;
        then the driver starts over, or not."""
        picked = self.pick_ring(window)
        if picked is not None:
            index, ring = picked
            readable, writable = self.request_buffers(window, index)
            if len(ring.free) < len(readable) + len(writable):
                ring.free = list(range(ring.size))
            if len(readable) + len(writable) <= ring.size:
                ring.add(readable, writable)
        window.write(VIRTIO_MMIO_STATUS, 4, 0)
        if picked is not None and self.rng.random() < 0.5:
            window.driver.kick(picked[0])
        window.rings.clear()
        if self.rng.random() < 0.5:
            self.bring_up(window)

    def take_interrupt(self, window: Window) -> None:
        """vm_interrupt: read InterruptStatus and acknowledge it (or ack junk)."""
        if self.rng.random() < 0.8:
            window.driver.take_interrupt()
        else:
            window.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, self.rng.getrandbits(32))

    def features_again(self, window: Window) -> None:
        """Feature registers poked after FEATURES_OK, with selectors past the two words."""
        rng = self.rng
        window.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, rng.choice((0, 1, 2, 0xFFFF_FFFF)))
        window.read(VIRTIO_MMIO_DEVICE_FEATURES, 4)
        window.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, rng.choice((0, 1, 2, 0xFFFF_FFFF)))
        window.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, rng.getrandbits(32))


Step = Callable[[Planner, Window], None]
STEPS_AND_WEIGHTS: tuple[tuple[Step, int], ...] = (
    (Planner.request, 14),
    (Planner.loop, 2),
    (Planner.bad_indirect, 3),
    (Planner.overflow, 2),
    (Planner.misordered, 2),
    (Planner.avail_jump, 1),
    (Planner.config_access, 3),
    (Planner.register_access, 2),
    (Planner.missing_queue, 1),
    (Planner.status_out_of_order, 1),
    (Planner.reset_mid_request, 1),
    (Planner.take_interrupt, 2),
    (Planner.features_again, 1),
)
STEPS = tuple(step for step, _ in STEPS_AND_WEIGHTS)
STEP_WEIGHTS = tuple(weight for _, weight in STEPS_AND_WEIGHTS)


@dataclass(frozen=True)
class VirtioPlan:
    """What guest_cases.py needs to make a GuestCase of the virtio kind."""

    setup: VirtioSetup
    image: bytes
    ram_size: int
    console_input: bytes | None
    via_cli: bool


@contextlib.contextmanager
def quiet_refusals() -> Iterator[None]:
    """The devices log a warning for each refusal: thousands in a campaign, all counted."""
    logger = logging.getLogger("pyvmm.devices.virtio")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def case_random(seed: int, index: int) -> random.Random:
    return random.Random(f"pyvmm-guest-fuzz-virtio:{seed}:{index}")


def plan_case(seed: int, index: int) -> VirtioPlan:
    """Case `index` of campaign `seed` of the virtio kind: the same on every run."""
    rng = case_random(seed, index)
    devices = tuple(kind for kind in KINDS if rng.random() < DEVICE_SHARE) or (rng.choice(KINDS),)
    sizes, weights = zip(*RAM_SIZES, strict=True)
    ram_size = rng.choices(sizes, weights)[0]
    disk = rng.randbytes(rng.choice(DISK_SIZES))
    read_only = rng.random() < 0.2
    planner = Planner(rng, ram_size, len(disk), read_only)
    with quiet_refusals():
        plan_sessions(rng, planner, devices)
    end_value = rng.randrange(1, 128)
    script = tuple(planner.script)
    console_input = rng.randbytes(rng.choice((1, 16, 300))) if rng.random() < 0.3 else None
    via_cli = rng.random() < CLI_SHARE
    eventfds = rng.random() < 0.5
    setup = VirtioSetup(devices, disk, read_only, script, end_value, eventfds)
    return VirtioPlan(setup, compile_script(script, end_value), ram_size, console_input, via_cli)


def plan_sessions(rng: random.Random, planner: Planner, devices: tuple[str, ...]) -> None:
    """One to four sessions, each with a device of the machine (or now and then one it lacks)."""
    for _ in range(rng.randrange(1, 5)):
        absent = [kind for kind in KINDS if kind not in devices]
        if absent and rng.random() < ABSENT_TARGET:
            kind = rng.choice(absent)
        else:
            kind = rng.choice(devices)
        planner.session(planner.window(kind))
        if rng.random() < 0.1:  # an access to a window no device has
            gpa = layout.VIRTIO_MMIO_BASE + rng.randrange(
                4 * layout.VIRTIO_MMIO_STRIDE, WINDOWS_SPAN
            )
            planner.script.append(Mmio(gpa, rng.choice((1, 2, 4, 8)), rng.choice((None, 1))))
