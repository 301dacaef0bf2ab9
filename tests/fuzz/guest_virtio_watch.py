"""Watching what pyvmm's virtio devices do during a guest fuzz case of the virtio kind.

Watchers go between the machine's devices and guest memory (each queue's
`memory`, the balloon's `release`) and the disk (the block device's backend):
every guest-memory access pyvmm serves is checked against guest RAM as the
layout's arithmetic has it, writes and releases into the guest's own memory
are noted, each disk write is recorded; afterwards the disk image is compared
with what it was. What the devices counted (refusals by kind, bad accesses,
failed block requests...) is gathered for the campaign's report.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyvmm.devices.virtio.blk import SECTOR_SIZE
from pyvmm.devices.virtio.device import DEVICE_NEEDS_RESET
from tests.fuzz.guest_virtio import PRIVATE_END, VirtioSetup

# The PC's 32-bit MMIO hole starts here, RAM resumes at 4 GiB (pyvmm's layout).
HOLE_START = 0xD000_0000


def ram_ranges(ram_size: int) -> list[tuple[int, int]]:
    """Guest RAM as (gpa, size) pieces around the MMIO hole, computed here rather than
    asked of pyvmm, so that the check of the devices' accesses does not trust it."""
    below = min(ram_size, HOLE_START)
    return [(0, below)] + ([(1 << 32, ram_size - below)] if ram_size > below else [])


@dataclass
class DeviceWatch:
    """What the devices did to guest memory and the disk during one run."""

    ram: list[tuple[int, int]]
    outside: list[str] = field(default_factory=list)  # served accesses outside RAM: a finding
    private: int = 0  # writes and releases into the guest's own memory
    ram_written: int = 0  # bytes the devices wrote into guest RAM
    used: int = 0  # buffers the devices gave back through a used ring
    released: int = 0  # bytes the balloon gave back to the host
    disk_writes: list[tuple[int, int]] = field(default_factory=list)  # (offset, size)

    def in_ram(self, gpa: int, size: int) -> bool:
        return any(start <= gpa and gpa + size <= start + length for start, length in self.ram)

    def note(self, what: str, gpa: int, size: int, changes: bool) -> None:
        if size and not self.in_ram(gpa, size):
            self.outside.append(f"a device {what} 0x{gpa:x}+0x{size:x}, outside guest RAM")
        if changes and gpa < PRIVATE_END and size:
            self.private += 1


class WatchedMemory:
    """A queue's guest memory, watched: every access pyvmm serves is checked against RAM."""

    def __init__(self, memory: Any, watch: DeviceWatch) -> None:
        self._memory = memory
        self._watch = watch

    def contains(self, gpa: int, size: int = 1) -> bool:
        return bool(self._memory.contains(gpa, size))

    def read(self, gpa: int, size: int) -> bytes:
        data = self._memory.read(gpa, size)
        self._watch.note("read", gpa, size, changes=False)
        return bytes(data)

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        self._memory.write(gpa, data)
        self._watch.note("wrote", gpa, len(data), changes=True)
        self._watch.ram_written += len(data)


class WatchedBackend:
    """The block device's backend, watched: where each write and discard went."""

    def __init__(self, backend: Any, watch: DeviceWatch) -> None:
        self._backend = backend
        self._watch = watch

    def pread(self, size: int, offset: int) -> bytes:
        return bytes(self._backend.pread(size, offset))

    def pwrite(self, data: bytes, offset: int) -> None:
        self._watch.disk_writes.append((offset, len(data)))
        self._backend.pwrite(data, offset)

    def fsync(self) -> None:
        self._backend.fsync()

    def size(self) -> int:
        return int(self._backend.size())

    def discard(self, offset: int, size: int) -> None:
        self._backend.discard(offset, size)


def watch_devices(slots: list[Any], watch: DeviceWatch) -> None:
    """Put the watchers between the machine's devices and guest memory and the disk."""
    for slot in slots:
        for queue in slot.transport.queues:
            queue.memory = WatchedMemory(queue.memory, watch)
            push = queue.push

            def counted_push(head: int, length: int, push: Any = push) -> None:
                push(head, length)
                watch.used += 1

            queue.push = counted_push
        if slot.kind == "block":
            slot.device._backend = WatchedBackend(slot.device._backend, watch)
        elif slot.kind == "balloon":
            release = slot.device._release

            def watched_release(gpa: int, size: int, release: Any = release) -> None:
                release(gpa, size)
                watch.note("released", gpa, size, changes=True)
                watch.released += size

            slot.device._release = watched_release


def device_counts(slots: list[Any], watch: DeviceWatch | None = None) -> Counter[str]:
    """What the devices counted during the run: refusals by kind, and the rest; with
    `watch`, what the watchers saw too."""
    counts: Counter[str] = Counter()
    if watch is not None:
        counts["buffers used"] += watch.used
        counts["bytes written into guest RAM"] += watch.ram_written
        counts["disk writes"] += len(watch.disk_writes)
    for slot in slots:
        transport = slot.transport
        for queue in transport.queues:
            counts.update({f"refused {name}": n for name, n in queue.refusals.items()})
        counts["device needs reset"] += transport.failures
        counts["bad register access"] += transport.bad_accesses
        counts["ignored write"] += transport.ignored_writes
        counts["session left needing reset"] += bool(transport.status & DEVICE_NEEDS_RESET)
        device = slot.device
        if slot.kind == "block":
            for why, n in device.failed_requests.items():
                counts[
                    f"block {'unsupported request' if why.startswith('request type') else why}"
                ] += n
        elif slot.kind == "balloon":
            counts["balloon page numbers"] += device.inflated_pages + device.bad_pfns
            counts["balloon bad page numbers"] += device.bad_pfns
            counts["balloon pages released"] += device.released_pages
        elif slot.kind == "entropy":
            counts["entropy bytes"] += device.bytes_supplied
    return +counts


def disk_problems(
    before: bytes, path: str, read_only: bool, writes: list[tuple[int, int]] | None
) -> list[str]:
    """What is wrong with the disk image after the run. `writes` are the block device's
    (offset, size) writes, or None when they were not watched (a `pyvmm boot` run)."""
    with open(path, "rb") as file:
        after = file.read()
    if len(after) != len(before):
        return [f"the disk image went from {len(before)} to {len(after)} bytes"]
    capacity = len(before) // SECTOR_SIZE * SECTOR_SIZE
    problems = []
    if read_only and (after != before or writes):
        problems.append("a read-only disk image changed")
    for offset, size in writes or ():
        if offset < 0 or offset + size > capacity:
            problems.append(f"the block device wrote 0x{offset:x}+0x{size:x}, past its disk")
    if writes is not None:
        covered = bytearray(len(before))
        for offset, size in writes:
            covered[offset : offset + size] = b"\1" * len(covered[offset : offset + size])
        changed = [at for at in range(len(before)) if before[at] != after[at] and not covered[at]]
        if changed:
            problems.append(
                f"the disk image changed where no write went, from offset 0x{changed[0]:x}"
            )
    return problems


def write_disk(directory: str, setup: VirtioSetup) -> str:
    path = os.path.join(directory, "disk.img")
    with open(path, "wb") as file:
        file.write(setup.disk)
    return path
