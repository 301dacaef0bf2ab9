"""Fuzz the virtio devices with hostile virtqueues: random rings in real guest memory.

    python -m tests.fuzz.virtqueue_fuzz --count 20000 --seed 1
    python -m tests.fuzz.virtqueue_fuzz --seed 1 --case 1234   # replay one, traceback included

Each case brings one device (console, block, entropy or balloon) to
DRIVER_OK over its virtio-mmio transport as Linux's driver would, in guest
RAM with a hole (pyvmm's GuestMemory: an access outside RAM raises, it never
reaches host memory), then scribbles over its rings as a hostile guest may:
descriptors pointing into the hole, past RAM or at the top of the address
space, lengths of 0 or 4 GiB, NEXT/INDIRECT/WRITE flags at random, chains that
loop, avail indexes that jump, and random register writes; then kicks. The
property: no exception leaves the transport, no kick takes more than a
second, and the device either serves the requests or refuses them (counted;
DEVICE_NEEDS_RESET). Case N of seed S depends on (S, N) alone.
"""

from __future__ import annotations

import argparse
import collections
import random
import struct
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Protocol

from pyvmm.devices.virtio.balloon import VirtioBalloon
from pyvmm.devices.virtio.blk import VirtioBlk
from pyvmm.devices.virtio.console import VirtioConsole
from pyvmm.devices.virtio.device import DEVICE_NEEDS_RESET, VIRTIO_F_VERSION_1
from pyvmm.devices.virtio.mmio import (
    VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_STATUS,
    VirtioMmio,
)
from pyvmm.devices.virtio.rng import VirtioRng
from pyvmm.memory.guest_memory import GuestMemory
from tests.unit.virtio_rings import DriverRing, MmioDriver

LOW_RAM = 0x20_0000  # the rings live here (the test driver's allocator)
HIGH_RAM = 0x1_0000_0000
RAM = ((0, LOW_RAM), (HIGH_RAM, 0x10_0000))  # a hole from 2 MiB to 4 GiB
KICK_LIMIT = 1.0  # seconds: a kick that takes longer is a hang
DESC = struct.Struct("<QIHH")
U16 = struct.Struct("<H")
NEXT, WRITE, INDIRECT = 1, 2, 4


class Disk:
    """A block backend over bytes: no file."""

    def __init__(self, size: int = 64 * 1024) -> None:
        self.data = bytearray(size)

    def pread(self, size: int, offset: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def pwrite(self, data: bytes, offset: int) -> None:
        self.data[offset : offset + len(data)] = data

    def fsync(self) -> None:
        return None

    def size(self) -> int:
        return len(self.data)

    def discard(self, offset: int, size: int) -> None:
        return None


DEVICES: dict[str, Callable[[GuestMemory], object]] = {
    "console": lambda memory: VirtioConsole(lambda data: None),
    "block": lambda memory: VirtioBlk(Disk()),
    "entropy": lambda memory: VirtioRng(lambda size: bytes(size)),
    "balloon": lambda memory: VirtioBalloon(memory.discard),
}


def address(rng: random.Random) -> int:
    return rng.choice(
        [
            rng.randrange(0x1000, LOW_RAM),  # RAM
            rng.randrange(LOW_RAM, HIGH_RAM),  # the hole
            HIGH_RAM + rng.randrange(0, 0x10_0000),  # high RAM
            HIGH_RAM + 0x10_0000 - rng.randrange(1, 64),  # straddles the end
            (1 << 64) - rng.randrange(1, 4096),  # the top of the address space
            0,
        ]
    )


def length(rng: random.Random) -> int:
    return rng.choice([0, 1, 16, 512, 4096, 0xFFFF_FFFF, rng.randrange(1 << 32)])


class RingMemory(Protocol):
    """What `scribble` writes the ring through: GuestMemory, or a recorder in front of it."""

    def read(self, gpa: int, size: int) -> bytes: ...

    def write(self, gpa: int, data: bytes) -> None: ...


def scribble(
    rng: random.Random,
    ring: DriverRing,
    memory: RingMemory,
    pick_address: Callable[[random.Random], int] = address,
) -> None:
    """Overwrite a few of `ring`'s descriptors with random ones (addresses from
    `pick_address`, lengths from `length`, random NEXT/WRITE/INDIRECT flags and next
    indexes), then, most of the time, move its avail idx by a step or by a jump past
    the queue size over random ring entries. The guest fuzzer (guest_virtio.py) calls
    it with its machine's addresses, through guest code."""
    for _ in range(rng.randrange(0, 8)):
        slot = rng.randrange(ring.size)
        flags = rng.getrandbits(3) & (NEXT | WRITE | INDIRECT)
        entry = DESC.pack(pick_address(rng), length(rng), flags, rng.randrange(ring.size + 2))
        memory.write(ring.desc + slot * DESC.size, entry)
    if rng.random() < 0.7:  # avail idx: a step, or a jump past the queue size
        step = rng.choice([1, 2, ring.size, ring.size + 1, rng.randrange(1 << 16)])
        (old,) = U16.unpack(memory.read(ring.avail + 2, U16.size))
        for position in range(min(step, ring.size)):
            memory.write(ring.avail + 4 + 2 * position, U16.pack(rng.randrange(ring.size + 3)))
        memory.write(ring.avail + 2, U16.pack((old + step) & 0xFFFF))


class Outcome:
    __slots__ = ("case", "error", "kind", "needs_reset", "refusals", "used")

    def __init__(self, case: int, kind: str) -> None:
        self.case = case
        self.kind = kind
        self.error: str | None = None
        self.needs_reset = False
        self.refusals: collections.Counter[str] = collections.Counter()
        self.used = 0


def run_case(seed: int, case: int) -> Outcome:
    """One hostile device session; raises nothing: an escape is recorded as the error."""
    rng = random.Random(f"{seed}:{case}")
    kind = rng.choice(sorted(DEVICES))
    outcome = Outcome(case, kind)
    with GuestMemory.from_ranges(RAM) as memory:
        device = DEVICES[kind](memory)
        transport = VirtioMmio(device, memory)  # type: ignore[arg-type]
        driver = MmioDriver(transport, memory)  # type: ignore[arg-type]
        try:
            accept = rng.getrandbits(64) | (1 << VIRTIO_F_VERSION_1)
            if not driver.probe(accept):
                return outcome
            rings = [driver.setup_queue(i) for i in range(device.queue_count)]  # type: ignore[attr-defined]
            driver.add_status(4)  # DRIVER_OK
            for _ in range(rng.randrange(1, 6)):
                index = rng.randrange(len(rings))
                ring = rings[index]
                if rng.random() < 0.5:  # a well-formed request first, sometimes
                    ring.add([b"x" * 16], [64])
                scribble(rng, ring, memory)
                if rng.random() < 0.1:  # a register write out of turn
                    transport.write(rng.randrange(0, 0x100, 4), 4, rng.getrandbits(32))
                started = time.monotonic()
                transport.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, index)
                if time.monotonic() - started > KICK_LIMIT:
                    outcome.error = (
                        f"a kick of queue {index} took {time.monotonic() - started:.1f} s"
                    )
                    return outcome
                outcome.used += len(ring.get_used())
        except Exception:  # the property: nothing escapes the transport
            outcome.error = traceback.format_exc(limit=6)
        for queue in transport.queues:
            outcome.refusals.update(queue.refusals)
        outcome.needs_reset = bool(transport.read(VIRTIO_MMIO_STATUS, 4) & DEVICE_NEEDS_RESET)
    return outcome


class Report:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.cases = 0
        self.failures: list[Outcome] = []
        self.refusals: collections.Counter[str] = collections.Counter()
        self.needs_reset = 0
        self.used = 0
        self.kinds: collections.Counter[str] = collections.Counter()

    def add(self, outcome: Outcome) -> None:
        self.cases += 1
        self.kinds[outcome.kind] += 1
        self.refusals.update(outcome.refusals)
        self.needs_reset += outcome.needs_reset
        self.used += outcome.used
        if outcome.error is not None:
            self.failures.append(outcome)

    def summary(self) -> str:
        lines = [
            f"seed {self.seed}: {self.cases} cases ({dict(sorted(self.kinds.items()))}), "
            f"{len(self.failures)} failures, {self.needs_reset} ended in DEVICE_NEEDS_RESET, "
            f"{self.used} buffers used",
            "refused: " + ", ".join(f"{name} {n}" for name, n in self.refusals.most_common()),
        ]
        for outcome in self.failures[:10]:
            first = (outcome.error or "").strip().splitlines()[-1]
            lines.append(f"  case {outcome.case} ({outcome.kind}): {first}")
            lines.append(
                f"      replay: python -m tests.fuzz.virtqueue_fuzz --seed {self.seed} "
                f"--case {outcome.case}"
            )
        return "\n".join(lines)


def run_campaign(count: int, seed: int, start: int = 0) -> Report:
    report = Report(seed)
    for case in range(start, start + count):
        report.add(run_case(seed, case))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz.virtqueue_fuzz", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=20000, help="cases (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (default 1)")
    parser.add_argument("--start", type=int, default=0, help="first case number (default 0)")
    parser.add_argument("--case", type=int, help="replay this one case, with its traceback")
    args = parser.parse_args(argv)
    if args.case is not None:
        outcome = run_case(args.seed, args.case)
        print(outcome.error or f"case {args.case} ({outcome.kind}): no failure")
        return 1 if outcome.error else 0
    started = time.monotonic()
    report = run_campaign(args.count, args.seed, args.start)
    print(report.summary())
    print(f"{time.monotonic() - started:.1f} s")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
