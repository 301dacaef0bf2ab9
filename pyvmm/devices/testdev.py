"""QEMU's pc-testdev: the test device KVM's own test kernels (kvm-unit-tests) talk to.

QEMU's hw/misc/pc-testdev.c (`-device pc-testdev`, as QEMU 7.2 has it; the code
dates from QEMU 1.3) puts five regions on the ISA bus, all served here:

- ports 0xe0-0xe3, "pc-testdev-ioport" (1, 2 or 4 bytes): a 32-bit scratch
  register. A write at 0xe0+k replaces its bytes from k on; a read gives them
  back (kvm-unit-tests' x86/emulator.c and x86/realmode.c: `rep outsb`, and
  `in`/`out` of each width).
- ports 0xe4-0xe7, "pc-testdev-flush-page" (4-byte accesses only): `outl v`
  flushes guest page `v & ~0xfff` from the host's mappings, so that KVM drops
  its translations of it and faults them in afresh (x86/eventinj.c,
  `flush_phys_addr`); reads give 0.
- ports 0xe8-0xeb, "pc-testdev-ioport-byte": the same scratch register, which
  QEMU serves one byte at a time (a difference no guest can see).
- ports 0x2000-0x2017, "pc-testdev-irq-line" (1-byte accesses only): a write
  of v to 0x2000+n sets interrupt line (GSI) n high when v != 0, low when
  v == 0 (lib/x86/apic.c, `set_irq_line`); reads give 0.
- 0xff000000-0xff00ffff, "pc-testdev-iomem": 64 KiB of memory that the guest
  reaches only through MMIO exits, zero at start (x86/ioram.h,
  IORAM_BASE_PHYS: the emulator tests run instructions on it).

How one access is served, where it straddles regions or is of a size a
region does not take, follows QEMU under KVM: QEMU hands a KVM_EXIT_IO to
its memory core (`address_space_rw`, accel/kvm/kvm-all.c `kvm_handle_io`),
which cuts the access at region boundaries into naturally aligned pieces of
at most the region's largest valid size (softmmu/physmem.c,
`memory_access_size`); a piece of a size the region does not take reads 0
and is dropped on write (softmmu/memory.c, `memory_region_access_valid`), and
a byte no region covers reads 0xff and is dropped (the PC's empty I/O
space). So `inl 0xe2` reads scratch bytes 2-3 then two zero bytes from the
flush port, `inl 0xea` bytes 2-3 then 0xffff, and `outw 0x2000` sets GSI 0
from its low byte and GSI 1 from its high byte. Measured with QEMU 7.2 under
KVM; under TCG, QEMU's own `in`/`out` helpers do not cut unaligned accesses,
which then read 0 and are dropped.

Differences from QEMU 7.2, both deliberate:

- Ports 0x2010-0x2017 (GSIs 16-23) drive the IOAPIC's upper pins. QEMU 7.2
  aborts on a write there (`isa_get_irq: Assertion 'isairq < ISA_NUM_IRQS'`,
  hw/isa/isa-bus.c): its ISA bus has 16 IRQs, though the region has 24 ports.
- A line the guest drives here is ORed with the level of the device that owns
  the same GSI (COM1 on 4...): see `pyvmm.machine.interrupts`. In QEMU both
  set the one input and the last write wins.

The device is pure: the lines come in as `IrqLine`s (24, GSI order) and the
page flush as a callable taking a guest-physical address.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyvmm.devices.bus import Bus, Shifted
from pyvmm.devices.irq import IrqLine, NoIrq
from pyvmm.errors import Log
from pyvmm.memory.guest_memory import GuestMemory

if TYPE_CHECKING:
    from pyvmm.machine.interrupts import InterruptLines

log = Log(__name__)

# Where QEMU's testdev_realizefn puts the regions.
TESTDEV_PORT = 0xE0  # scratch 0xe0, flush-page 0xe4, scratch again (byte-wise) 0xe8
TESTDEV_PORTS_SIZE = 12
TESTDEV_IRQ_PORT = 0x2000
TESTDEV_IRQ_LINES = 24  # ports 0x2000 + n, n = GSI 0..23
TESTDEV_IOMEM_GPA = 0xFF00_0000
TESTDEV_IOMEM_SIZE = 0x1_0000  # IOMEM_LEN

# Offsets of the regions within the port window at TESTDEV_PORT.
SCRATCH = 0x0  # pc-testdev-ioport
FLUSH_PAGE = 0x4  # pc-testdev-flush-page
SCRATCH_BYTEWISE = 0x8  # pc-testdev-ioport-byte
REGION_SIZE = 4

PAGE_SIZE = 0x1000
UNASSIGNED_BYTE = 0xFF  # what a port no device claims reads as


@dataclass(frozen=True)
class _Region:
    """One of QEMU's MemoryRegions: its place, the access sizes it takes, its handlers."""

    start: int
    length: int
    min_size: int  # MemoryRegionOps.valid.min_access_size
    max_size: int  # MemoryRegionOps.valid.max_access_size (QEMU's default is 4)
    read: Callable[[int, int], int]
    write: Callable[[int, int, int], None]


def _pieces(
    regions: Sequence[_Region], offset: int, size: int
) -> Iterator[tuple[_Region | None, int, int, int]]:
    """Cut an access as QEMU's memory core does: (region, offset in it, size, byte position).

    None for a byte no region covers. A piece stops at its region's end, is
    no wider than the region's largest access nor than its offset's alignment,
    and is a power of two (softmmu/physmem.c, memory_access_size).
    """
    position = 0
    while position < size:
        address = offset + position
        region = next((r for r in regions if r.start <= address < r.start + r.length), None)
        if region is None:
            yield None, address, 1, position
            position += 1
            continue
        inside = address - region.start
        piece = min(size - position, region.start + region.length - address, region.max_size)
        alignment = inside & -inside
        if alignment:
            piece = min(piece, alignment)
        piece = 1 << (piece.bit_length() - 1)
        yield region, inside, piece, position
        position += piece


def _read(regions: Sequence[_Region], offset: int, size: int) -> int:
    value = 0
    for region, inside, piece, position in _pieces(regions, offset, size):
        if region is None:
            part = UNASSIGNED_BYTE
        elif region.min_size <= piece <= region.max_size:
            part = region.read(inside, piece)
        else:
            part = 0  # QEMU's unassigned_mem_read for an access the region refuses
        value |= part << (8 * position)
    return value


def _write(regions: Sequence[_Region], offset: int, size: int, value: int) -> None:
    for region, inside, piece, position in _pieces(regions, offset, size):
        if region is not None and region.min_size <= piece <= region.max_size:
            region.write(inside, piece, (value >> (8 * position)) & ((1 << (8 * piece)) - 1))


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


class PcTestdev:
    """QEMU's pc-testdev: its state, and one bus device per place it sits.

    `ports` goes at TESTDEV_PORT (TESTDEV_PORTS_SIZE ports), `irq_ports` at
    TESTDEV_IRQ_PORT (TESTDEV_IRQ_LINES ports), `iomem` on the MMIO bus at
    TESTDEV_IOMEM_GPA (TESTDEV_IOMEM_SIZE bytes). `irq_lines[n]` is GSI n
    (missing ones are connected to nothing); `flush_page(gpa)` gets the
    page-aligned guest-physical address of each valid flush-page write.
    """

    def __init__(
        self,
        irq_lines: Sequence[IrqLine] = (),
        flush_page: Callable[[int], None] | None = None,
    ) -> None:
        self.scratch = 0  # QEMU's ioport_data
        self.memory = bytearray(TESTDEV_IOMEM_SIZE)  # QEMU's iomem_buf
        self.levels = [False] * TESTDEV_IRQ_LINES  # what the guest last wrote to each line
        self._lines = [*irq_lines, *[NoIrq()] * (TESTDEV_IRQ_LINES - len(irq_lines))]
        self._flush_page = flush_page
        self.flushed_pages = 0
        scratch = (self._read_scratch, self._write_scratch)
        self._port_regions = (
            _Region(SCRATCH, REGION_SIZE, 1, 4, *scratch),
            _Region(FLUSH_PAGE, REGION_SIZE, 4, 4, self._read_zero, self._write_flush),
            _Region(SCRATCH_BYTEWISE, REGION_SIZE, 1, 4, *scratch),
        )
        self._irq_regions = (
            _Region(0, TESTDEV_IRQ_LINES, 1, 1, self._read_zero, self._write_line),
        )
        self.ports = _Window(self._port_regions)
        self.irq_ports = _Window(self._irq_regions)
        self.iomem = PcTestdevIomem(self.memory)

    def _read_scratch(self, offset: int, size: int) -> int:
        return (self.scratch >> (8 * offset)) & _mask(size)

    def _write_scratch(self, offset: int, size: int, value: int) -> None:
        shift = 8 * offset
        kept = self.scratch & ~(_mask(size) << shift)
        self.scratch = (kept | (value << shift)) & _mask(4)

    @staticmethod
    def _read_zero(offset: int, size: int) -> int:
        return 0

    def _write_flush(self, offset: int, size: int, value: int) -> None:
        self.flushed_pages += 1
        if self._flush_page is not None:
            self._flush_page(value & ~(PAGE_SIZE - 1))

    def _write_line(self, offset: int, size: int, value: int) -> None:
        high = value != 0
        self.levels[offset] = high
        self._lines[offset].set_level(high)


class _Window:
    """A run of ports over some of the device's regions (a BusDevice)."""

    def __init__(self, regions: Sequence[_Region]) -> None:
        self._regions = regions

    def read(self, offset: int, size: int) -> int:
        return _read(self._regions, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        _write(self._regions, offset, size, value)


class PcTestdevIomem:
    """The 64 KiB iomem (a BusDevice for the MMIO bus): bytes as written, little-endian.

    QEMU serves it in naturally aligned pieces of up to 4 bytes, each a copy
    to or from its buffer, which is the same as copying the whole access.
    A byte past the end reads all ones, as an address no device claims does
    in pyvmm (KVM splits an access at the page boundary there anyway).
    """

    def __init__(self, memory: bytearray) -> None:
        self.memory = memory

    def read(self, offset: int, size: int) -> int:
        inside = self.memory[offset : offset + size]
        return int.from_bytes(inside + bytes([UNASSIGNED_BYTE]) * (size - len(inside)), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        end = min(offset + size, len(self.memory))
        if offset < end:
            self.memory[offset:end] = value.to_bytes(size, "little")[: end - offset]


class HostPageFlush:
    """Flushes a guest page as QEMU's pc-testdev does: mprotect(PROT_NONE), then read-write.

    Changing the host page's protection makes the kernel's MMU notifiers
    (include/linux/mmu_notifier.h) tell KVM to drop every translation it holds
    of the page, so the guest's next access to it faults it in again; the
    page's contents are kept. A page that is not RAM
    (MMIO, a hole) is left alone, as QEMU's bounce buffer has nothing to flush.
    While it is PROT_NONE, another vCPU touching the page would fail its
    KVM_RUN: the guest flushes pages only it is using, as in QEMU.
    """

    def __init__(self, memory: GuestMemory) -> None:
        self._memory = memory
        libc = ctypes.CDLL(None, use_errno=True)
        self._mprotect = libc.mprotect
        self._mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

    def __call__(self, gpa: int) -> None:
        if self._memory.mapping.closed or self._memory.find_region(gpa, PAGE_SIZE) is None:
            return
        hva = self._memory.host_address(gpa)
        # PROT_NONE is 0 (Python's mmap module does not name it).
        for protection in (0, mmap.PROT_READ | mmap.PROT_WRITE):
            if self._mprotect(hva, PAGE_SIZE, protection) != 0:
                log.warning(
                    "pc-testdev: cannot flush guest page 0x%x: mprotect: %s",
                    gpa,
                    os.strerror(ctypes.get_errno()),
                )
                return


def attach_pc_testdev(
    pio_bus: Bus, mmio_bus: Bus, memory: GuestMemory, interrupts: InterruptLines
) -> PcTestdev:
    """Put QEMU's pc-testdev on the buses (`--testdev`, QEMU's `-device pc-testdev`).

    Its lines are extra sources on GSIs 0-23, ORed with each GSI's owner
    (`InterruptLines.line(..., shared=True)`). Ports a device attached
    earlier holds keep it: in a real-mode entry, pyvmm's no-BIOS trap on
    0xe5, where QEMU's pc-testdev ignores the byte writes the trap takes.
    """
    lines = [interrupts.line(gsi, "pc-testdev", shared=True) for gsi in range(TESTDEV_IRQ_LINES)]
    device = PcTestdev(lines, HostPageFlush(memory))
    _insert_around(pio_bus, device.ports, TESTDEV_PORT, TESTDEV_PORTS_SIZE, "pc-testdev")
    pio_bus.insert(
        device.irq_ports, TESTDEV_IRQ_PORT, TESTDEV_IRQ_LINES, "pc-testdev IRQ lines (GSI 0-23)"
    )
    mmio_bus.insert(device.iomem, TESTDEV_IOMEM_GPA, TESTDEV_IOMEM_SIZE, "pc-testdev iomem")
    if not interrupts.irqchip:
        log.info(
            "pc-testdev: no in-kernel irqchip, so its IRQ-line ports 0x%x-0x%x reach no "
            "interrupt controller (--kernel-irqchip on gives one)",
            TESTDEV_IRQ_PORT,
            TESTDEV_IRQ_PORT + TESTDEV_IRQ_LINES - 1,
        )
    return device


def _insert_around(pio_bus: Bus, device: _Window, port: int, length: int, name: str) -> None:
    """Insert `device` on the ports of [port, port + length) that no device holds yet."""
    run_start: int | None = None
    for each in range(port, port + length + 1):
        free = each < port + length and pio_bus.find(each) is None
        if free and run_start is None:
            run_start = each
        elif not free and run_start is not None:
            view = device if run_start == port else Shifted(device, run_start - port)
            pio_bus.insert(view, run_start, each - run_start, name)
            run_start = None
