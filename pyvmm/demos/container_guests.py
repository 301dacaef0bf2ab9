"""The containers demo's VM side: two tiny guests written as bytes, and what they show.

- The exit loop (CPL3, --mode user): `out dx, al` COUNT times to a port with
  a device of pyvmm's behind it, then the debug-exit port. Each `out` is one
  VM exit: the VM's counterpart of a process's system call, the crossing
  from the workload to what serves it.
- The RAM walk (CPL0, --mode long): the guest loads its own GDT, IDT and
  page tables (CR3), all inside its own RAM, then writes one quadword to
  each page from 2 MiB upward, past the end of its RAM, reads back the last
  page it wrote and ends. Writes past RAM find no memory slot: each is an
  MMIO exit pyvmm counts and drops, and the read gets all ones.

The machine code is written out byte by byte with its assembly beside it, as
pyvmm/demos/native.py does; tests/unit/test_demo_containers.py assembles the
same text with GNU as (when installed) to keep the two in step.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.gdt import flat_gdt, gdt_bytes, interrupt_gate
from pyvmm.demos.common import stop_if_interrupted
from pyvmm.demos.kernels import ResultPort
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind

LOAD_GPA = layout.HIGH_LOAD_GPA  # 0x100000: flat images start here
DEBUG_EXIT_STATUS = 85  # mov al, 0x2a; out 0xf4, al: (0x2a << 1) | 1
FAULT_STATUS = (0x55 << 1) | 1  # the RAM walk's exception handler: mov al, 0x55; out 0xf4, al
GUEST_TIMEOUT = 60.0

# ----------------------------------------------------------------------------
# The exit loop.

EXIT_PORT = 0xE10  # clear of the kernels' result port (0xe00-0xe07) and of pyvmm's devices


def exit_loop_image(count: int) -> bytes:
    """`out dx, al` to EXIT_PORT `count` times (1 <= count < 2**32), then the debug exit."""
    if not 1 <= count < 1 << 32:
        raise ValueError(f"count {count} is not a u32 above 0")
    return (
        b"\xb9" + struct.pack("<I", count)  # mov ecx, count
        + b"\xba" + struct.pack("<I", EXIT_PORT)  # mov edx, EXIT_PORT
        + bytes.fromhex(
            "ee"  # 1: out dx, al
            "e2fd"  # loop 1b
            "b02a"  # mov al, 0x2a
            "e6f4"  # out 0xf4, al
        )
    )  # fmt: skip


class CountingPort:
    """A device that only counts the guest's writes (reads give 0)."""

    def __init__(self) -> None:
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes += 1


@dataclass(frozen=True)
class ExitLoopRun:
    count: int  # the `out`s the guest made
    served: int  # the writes pyvmm's device received
    exits: int  # VM exits in all (the `out`s and the debug exit)
    seconds: float  # Machine.run() alone


class GuestRunError(Exception):
    """A demo guest ended other than as it must (its one-line message says how)."""


def run_exit_loop(count: int) -> ExitLoopRun:
    """The exit loop at CPL3 in a fresh VM; raises GuestRunError if it ends another way."""
    config = MachineConfig(
        image=exit_loop_image(count),
        ram_size=layout.MIB * 4,
        console=lambda data: None,
        mode=CpuMode.USER,
        load_gpa=LOAD_GPA,
    )
    port = CountingPort()
    with build_machine(config) as machine:
        machine.attach_pio_device(port, EXIT_PORT, 1, "exit counter")
        started = time.perf_counter()
        outcome = machine.run(GUEST_TIMEOUT)
        seconds = time.perf_counter() - started
        stop_if_interrupted(outcome)
        exits = machine.loop.exit_count
    if outcome.kind is not OutcomeKind.DEBUG_EXIT or outcome.exit_status != DEBUG_EXIT_STATUS:
        raise GuestRunError(f"the exit loop ended: {outcome.message}")
    return ExitLoopRun(count, port.writes, exits, seconds)


def ns_per_exit(short: ExitLoopRun, long: ExitLoopRun) -> float:
    """The cost of one exit, from two runs that differ only in their count (ns)."""
    return (long.seconds - short.seconds) / (long.count - short.count) * 1e9


# ----------------------------------------------------------------------------
# The RAM walk. Offsets are from LOAD_GPA.

WALK_RAM_SIZE = 16 * layout.MIB
WALK_START = 2 * layout.MIB  # above the image; below it, pyvmm's entry structures
PAGES_PAST_RAM = 16
WALK_END = WALK_RAM_SIZE + PAGES_PAST_RAM * 4096
GDT_OFFSET = 0x800
GDTR_OFFSET = 0x820
IDTR_OFFSET = 0x830
HANDLER_OFFSET = 0x900
IDT_OFFSET = 0x1000
IDT_VECTORS = 32  # the exceptions
PML4_OFFSET = 0x2000
PDPT_OFFSET = 0x3000
PD_OFFSET = 0x4000
WALK_IMAGE_SIZE = 0x5000
RESULT_PORT = 0xE00  # two 32-bit `out`s, low half at +0, high at +4 (kernels.ResultPort)
RESULT_PORT_SIZE = 8

# null; 64-bit code (selector 0x08); data (0x10): the table pyvmm's long mode starts with.
WALK_GDT = gdt_bytes(flat_gdt(long_mode=True))
GDT_LIMIT = len(WALK_GDT) - 1
IDT_LIMIT = IDT_VECTORS * 16 - 1


def _absolute(offset: int) -> bytes:
    return struct.pack("<I", LOAD_GPA + offset)


def walk_code() -> bytes:
    """The RAM walk's code, at LOAD_GPA."""
    return (
        b"\x0f\x01\x14\x25" + _absolute(GDTR_OFFSET)  # lgdt [GDTR]
        + b"\x0f\x01\x1c\x25" + _absolute(IDTR_OFFSET)  # lidt [IDTR]
        + bytes.fromhex(
            "b810000000"  # mov eax, 0x10
            "8ed8"  # mov ds, eax
            "8ec0"  # mov es, eax
            "8ed0"  # mov ss, eax
        )
        + b"\xb8" + _absolute(PML4_OFFSET)  # mov eax, PML4
        + bytes.fromhex("0f22d8")  # mov cr3, rax
        + b"\xbf" + struct.pack("<I", WALK_START)  # mov edi, WALK_START
        + b"\xb9" + struct.pack("<I", WALK_END)  # mov ecx, WALK_END
        + bytes.fromhex(
            "48893f"  # 1: mov [rdi], rdi
            "4881c700100000"  # add rdi, 4096
            "4839cf"  # cmp rdi, rcx
            "72f1"  # jb 1b
            "488b8700f0ffff"  # mov rax, [rdi - 4096]
        )
        + b"\xba" + struct.pack("<I", RESULT_PORT)  # mov edx, RESULT_PORT
        + bytes.fromhex(
            "ef"  # out dx, eax
            "48c1e820"  # shr rax, 32
            "83c204"  # add edx, 4
            "ef"  # out dx, eax
            "b02a"  # mov al, 0x2a
            "e6f4"  # out 0xf4, al
        )
    )  # fmt: skip


# Every exception vector's handler: end the run with FAULT_STATUS.
WALK_HANDLER = bytes.fromhex(
    "b055"  # mov al, 0x55
    "e6f4"  # out 0xf4, al
    "f4"  # hlt
)


def walk_image() -> bytes:
    """The RAM walk: code, its GDT, IDT and page tables (2 MiB pages, the low 1 GiB)."""
    image = bytearray(WALK_IMAGE_SIZE)

    def put(offset: int, data: bytes) -> None:
        image[offset : offset + len(data)] = data

    code = walk_code()
    assert len(code) < GDT_OFFSET
    put(0, code)
    put(GDT_OFFSET, WALK_GDT)
    put(GDTR_OFFSET, struct.pack("<HQ", GDT_LIMIT, LOAD_GPA + GDT_OFFSET))
    put(IDTR_OFFSET, struct.pack("<HQ", IDT_LIMIT, LOAD_GPA + IDT_OFFSET))
    put(HANDLER_OFFSET, WALK_HANDLER)
    put(IDT_OFFSET, interrupt_gate(LOAD_GPA + HANDLER_OFFSET) * IDT_VECTORS)
    present_writable = 0x3
    put(PML4_OFFSET, struct.pack("<Q", LOAD_GPA + PDPT_OFFSET | present_writable))
    put(PDPT_OFFSET, struct.pack("<Q", LOAD_GPA + PD_OFFSET | present_writable))
    large_page = 0x80
    put(
        PD_OFFSET,
        b"".join(
            struct.pack("<Q", index << 21 | large_page | present_writable) for index in range(512)
        ),
    )
    return bytes(image)


@dataclass(frozen=True)
class Table:
    """A descriptor-table register or CR3: where it points, in guest-physical memory."""

    name: str
    base: int
    limit: int | None  # None for CR3 (a page, 4 KiB)

    @property
    def end(self) -> int:
        return self.base + (4096 if self.limit is None else self.limit + 1)


@dataclass(frozen=True)
class WalkRun:
    entry_tables: tuple[Table, ...]  # GDTR, IDTR, CR3 as pyvmm set them up
    guest_tables: tuple[Table, ...]  # the same registers after the guest's run
    ram_size: int
    pages_in_ram: int
    pages_past_ram: int
    mmio_writes_dropped: int  # writes pyvmm found no RAM or device for
    read_back: int | None  # what the guest read from its last write past RAM
    exit_status: int
    message: str
    rss_before: int | None  # this process's VmRSS (bytes) with the VM built, before its run
    rss_after: int | None  # ... and after its run, the VM still open
    threads: tuple[str, ...]  # this process's threads (comm), with the VM open


def _tables(sregs: object) -> tuple[Table, ...]:
    gdt, idt = sregs.gdt, sregs.idt  # type: ignore[attr-defined]
    return (
        Table("GDTR", int(gdt.base), int(gdt.limit)),
        Table("IDTR", int(idt.base), int(idt.limit)),
        Table("CR3", int(sregs.cr3) & ~0xFFF, None),  # type: ignore[attr-defined]
    )


def vm_rss(status: Path = Path("/proc/self/status")) -> int | None:
    """VmRSS of a process in bytes (None when it cannot be read)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def thread_names(task_dir: Path = Path("/proc/self/task")) -> tuple[str, ...]:
    """The comm of every thread of a process, as the host lists them."""
    names = []
    try:
        for task in sorted(task_dir.iterdir(), key=lambda path: int(path.name)):
            try:
                names.append((task / "comm").read_text().strip())
            except OSError:
                continue
    except OSError:
        return ()
    return tuple(names)


def run_walk() -> WalkRun:
    """The RAM walk in a fresh VM in this process: its tables, its writes, this process's RSS."""
    config = MachineConfig(
        image=walk_image(),
        ram_size=WALK_RAM_SIZE,
        console=lambda data: None,
        mode=CpuMode.LONG,
        load_gpa=LOAD_GPA,
    )
    port = ResultPort()
    with build_machine(config) as machine:
        machine.attach_pio_device(port, RESULT_PORT, RESULT_PORT_SIZE, "walk result")
        entry = _tables(machine.vcpu.get_sregs())
        rss_before = vm_rss()
        outcome = machine.run(GUEST_TIMEOUT)
        stop_if_interrupted(outcome)
        after = _tables(machine.vcpu.get_sregs())
        rss_after = vm_rss()
        threads = thread_names()
        dropped = machine.mmio_bus.unmapped_writes
    ram_pages = (WALK_RAM_SIZE - WALK_START) // 4096
    return WalkRun(
        entry_tables=entry,
        guest_tables=after,
        ram_size=WALK_RAM_SIZE,
        pages_in_ram=ram_pages,
        pages_past_ram=PAGES_PAST_RAM,
        mmio_writes_dropped=dropped,
        read_back=port.result,
        exit_status=outcome.exit_status,
        message=outcome.message,
        rss_before=rss_before,
        rss_after=rss_after,
        threads=threads,
    )
