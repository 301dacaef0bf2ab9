"""QEMU's pc-testdev (pyvmm.devices.testdev) and the shared-GSI rule, without KVM.

The expected values of the straddling accesses are what QEMU 7.2 gives under
KVM (guests/tests/testdev_unaligned.s; tests/integration/test_testdev.py
compares the two on real guests).
"""

from __future__ import annotations

import pytest

from pyvmm.devices.bus import Bus
from pyvmm.devices.sink import IgnoredPort
from pyvmm.devices.testdev import (
    TESTDEV_IOMEM_GPA,
    TESTDEV_IOMEM_SIZE,
    TESTDEV_IRQ_LINES,
    TESTDEV_IRQ_PORT,
    TESTDEV_PORT,
    HostPageFlush,
    PcTestdev,
    attach_pc_testdev,
)
from pyvmm.machine.interrupts import InterruptLines
from pyvmm.memory.guest_memory import GuestMemory


class Line:
    """An IrqLine that records every level set."""

    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, high: bool) -> None:
        self.levels.append(high)


class FakeVm:
    """The one Vm method InterruptLines calls: KVM_IRQ_LINE, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def irq_line(self, gsi: int, level: int) -> None:
        self.calls.append((gsi, level))


def port_read(device: PcTestdev, port: int, size: int) -> int:
    return device.ports.read(port - TESTDEV_PORT, size)


def port_write(device: PcTestdev, port: int, size: int, value: int) -> None:
    device.ports.write(port - TESTDEV_PORT, size, value)


# --- the scratch register at 0xe0, and at 0xe8 byte by byte ---------------------------


def test_scratch_keeps_what_each_width_writes() -> None:
    device = PcTestdev()
    assert port_read(device, 0xE0, 4) == 0
    port_write(device, 0xE0, 4, 0x11223344)
    assert port_read(device, 0xE0, 4) == 0x11223344
    assert [port_read(device, 0xE0 + k, 1) for k in range(4)] == [0x44, 0x33, 0x22, 0x11]
    assert port_read(device, 0xE2, 2) == 0x1122
    port_write(device, 0xE1, 1, 0x55)
    assert port_read(device, 0xE0, 4) == 0x11225544
    port_write(device, 0xE2, 2, 0xBEEF)
    assert port_read(device, 0xE0, 4) == 0xBEEF5544


def test_port_0xe8_is_the_same_register() -> None:
    device = PcTestdev()
    port_write(device, 0xE0, 4, 0x11223344)
    assert port_read(device, 0xE8, 4) == 0x11223344
    port_write(device, 0xE9, 1, 0x55)
    assert port_read(device, 0xE0, 4) == 0x11225544
    port_write(device, 0xEA, 2, 0xABCD)
    assert port_read(device, 0xE0, 4) == 0xABCD5544


def test_rep_outsb_leaves_the_last_byte() -> None:
    """kvm-unit-tests' test_stringio: `rep outsb` of "abc...p", then inb gives 'p'."""
    device = PcTestdev()
    for byte in b"abcdefghijklmnop":
        port_write(device, 0xE0, 1, byte)
    assert port_read(device, 0xE0, 1) == ord("p")


@pytest.mark.parametrize(
    ("port", "size", "value"),
    [
        (0xE1, 2, 0x2233),  # cut into two bytes by alignment
        (0xE1, 4, 0x00112233),  # bytes 1-3, then a byte of the flush port: 0
        (0xE2, 4, 0x00001122),  # bytes 2-3, then two bytes of the flush port
        (0xE3, 4, 0x00000011),
        (0xE5, 4, 0x44000000),  # flush port pieces read 0, then scratch byte 0 at 0xe8
        (0xE9, 4, 0xFF112233),  # bytes 1-3 at 0xe9, then 0xec: no device
        (0xEA, 4, 0xFFFF1122),
        (0xEC, 4, 0xFFFFFFFF),  # past the device
    ],
)
def test_straddling_reads_are_cut_as_qemu_cuts_them(port: int, size: int, value: int) -> None:
    device = PcTestdev()
    port_write(device, 0xE0, 4, 0x11223344)
    assert port_read(device, port, size) == value


@pytest.mark.parametrize(
    ("port", "value", "after"),
    [
        (0xE1, 0xAABBCCDD, 0xBBCCDD44),  # three bytes land; the fourth, at 0xe4, does not
        (0xE6, 0x99887766, 0x11229988),  # the flush port drops its half; 0xe8 takes the rest
    ],
)
def test_straddling_writes_are_cut_as_qemu_cuts_them(port: int, value: int, after: int) -> None:
    device = PcTestdev()
    port_write(device, 0xE0, 4, 0x11223344)
    port_write(device, port, 4, value)
    assert port_read(device, 0xE0, 4) == after
    assert device.flushed_pages == 0


# --- the flush-page port at 0xe4 ----------------------------------------------------------


def test_flush_page_takes_4_byte_writes_only_and_reads_0() -> None:
    pages: list[int] = []
    device = PcTestdev(flush_page=pages.append)
    port_write(device, 0xE4, 1, 0x12)
    port_write(device, 0xE4, 2, 0x1234)
    assert pages == []
    port_write(device, 0xE4, 4, 0x0012_3ABC)
    assert pages == [0x0012_3000]
    assert [port_read(device, 0xE4, size) for size in (1, 2, 4)] == [0, 0, 0]
    assert port_read(device, 0xE0, 4) == 0  # the scratch register is untouched


def test_host_page_flush_keeps_the_page_and_skips_what_is_not_ram() -> None:
    with GuestMemory.from_ranges([(0, 0x10000)]) as memory:
        memory.write(0x2FF0, b"kept across the flush")
        flush = HostPageFlush(memory)
        flush(0x2000)
        assert memory.read(0x2FF0, 21) == b"kept across the flush"
        memory.write(0x2000, b"still writable")  # the protection is restored
        assert memory.read(0x2000, 14) == b"still writable"
        flush(0x10000)  # past RAM: nothing to flush, no error
        flush(0xFF00_0000)


# --- the IRQ-line ports at 0x2000 ---------------------------------------------------------


def test_a_write_sets_the_level_of_gsi_n() -> None:
    lines = [Line() for _ in range(TESTDEV_IRQ_LINES)]
    device = PcTestdev(lines)
    device.irq_ports.write(14, 1, 1)
    device.irq_ports.write(14, 1, 0)
    device.irq_ports.write(14, 1, 0x80)  # any value but 0 is high (QEMU: !!data)
    assert lines[14].levels == [True, False, True]
    device.irq_ports.write(23, 1, 1)  # GSI 23: the IOAPIC's last pin
    assert lines[23].levels == [True]
    assert device.levels[14] and device.levels[23] and not device.levels[0]
    assert [line.levels for n, line in enumerate(lines) if n not in (14, 23)] == [[]] * 22


def test_irq_ports_take_bytes_and_read_0() -> None:
    lines = [Line() for _ in range(TESTDEV_IRQ_LINES)]
    device = PcTestdev(lines)
    device.irq_ports.write(0, 2, 0x0100)  # two byte writes: GSI 0 low, GSI 1 high
    assert (lines[0].levels, lines[1].levels) == ([False], [True])
    assert device.irq_ports.read(0, 1) == 0
    assert device.irq_ports.read(0, 2) == 0
    assert device.irq_ports.read(22, 4) == 0xFFFF0000  # 0x2016-0x2017, then no device


# --- the iomem at 0xff000000 --------------------------------------------------------------


def test_iomem_gives_back_what_was_written() -> None:
    iomem = PcTestdev().iomem
    assert iomem.read(0, 4) == 0 and iomem.read(TESTDEV_IOMEM_SIZE - 4, 4) == 0
    iomem.write(0, 4, 0x12345678)
    assert iomem.read(1, 1) == 0x56 and iomem.read(2, 2) == 0x1234
    iomem.write(3, 2, 0xBEEF)  # unaligned, across two dwords
    assert iomem.read(0, 4) == 0xEF345678 and iomem.read(4, 4) == 0xBE
    iomem.write(0x100, 8, 0x0807060504030201)  # an 8-byte MMIO access (movq, cmpxchg8b)
    assert iomem.read(0x104, 4) == 0x08070605
    iomem.write(TESTDEV_IOMEM_SIZE - 2, 4, 0xCAFEF00D)  # the part past the end is dropped
    assert iomem.read(TESTDEV_IOMEM_SIZE - 2, 4) == 0xFFFFF00D


# --- the shared-GSI rule (pyvmm.machine.interrupts) --------------------------------------


def test_a_shared_line_is_ored_with_the_owner() -> None:
    vm = FakeVm()
    lines = InterruptLines(vm, irqchip=True)  # type: ignore[arg-type]
    com1 = lines.line(4, "COM1")
    testdev = lines.line(4, "pc-testdev", shared=True)
    com1.set_level(True)
    testdev.set_level(True)  # the guest pulses GSI 4 while COM1 holds it high
    testdev.set_level(False)
    assert vm.calls == [(4, 1), (4, 1), (4, 1)]  # the owner's level stays
    com1.set_level(False)
    assert vm.calls[-1] == (4, 0)
    testdev.set_level(True)
    testdev.set_level(False)
    assert vm.calls[-2:] == [(4, 1), (4, 0)]


def test_a_gsi_still_has_one_owner() -> None:
    lines = InterruptLines(FakeVm(), irqchip=True)  # type: ignore[arg-type]
    lines.line(8, "pc-testdev", shared=True)  # a shared line first: the owner still gets it
    lines.line(8, "RTC")
    with pytest.raises(ValueError, match="GSI 8 for i8042 is already RTC's"):
        lines.line(8, "i8042")
    lines.line(8, "pc-testdev 2", shared=True)
    assert lines.assigned == {8: "RTC"}
    with pytest.raises(ValueError, match="GSIs 0-23"):
        lines.line(24, "pc-testdev", shared=True)


def test_without_an_irqchip_shared_lines_reach_nothing() -> None:
    vm = FakeVm()
    line = InterruptLines(vm, irqchip=False).line(3, "pc-testdev", shared=True)  # type: ignore[arg-type]
    line.set_level(True)
    assert vm.calls == []


# --- attaching it ------------------------------------------------------------------------


def test_attach_puts_it_where_qemu_does() -> None:
    pio_bus, mmio_bus, vm = Bus("pio"), Bus("mmio"), FakeVm()
    interrupts = InterruptLines(vm, irqchip=True)  # type: ignore[arg-type]
    owner = interrupts.line(4, "COM1")
    with GuestMemory.from_ranges([(0, 0x10000)]) as memory:
        device = attach_pc_testdev(pio_bus, mmio_bus, memory, interrupts)
        pio_bus.write(0xE0, 4, 0x11223344)
        assert pio_bus.read(0xE8, 4) == 0x11223344
        assert pio_bus.read(0xEC, 1) == 0xFF  # not the device's
        mmio_bus.write(TESTDEV_IOMEM_GPA + 8, 4, 0xDEADBEEF)
        assert mmio_bus.read(TESTDEV_IOMEM_GPA + 8, 4) == 0xDEADBEEF
        assert mmio_bus.find(TESTDEV_IOMEM_GPA + TESTDEV_IOMEM_SIZE) is None
        pio_bus.write(0xE4, 4, 0x1000)
        assert device.flushed_pages == 1
        owner.set_level(True)
        pio_bus.write(TESTDEV_IRQ_PORT + 4, 1, 1)
        pio_bus.write(TESTDEV_IRQ_PORT + 4, 1, 0)
        pio_bus.write(TESTDEV_IRQ_PORT + 23, 1, 1)
        assert vm.calls == [(4, 1), (4, 1), (4, 1), (23, 1)]
        assert pio_bus.find(TESTDEV_IRQ_PORT + TESTDEV_IRQ_LINES) is None
    assert interrupts.assigned == {4: "COM1"}


def test_attach_leaves_the_no_bios_port_to_its_trap() -> None:
    """In a real-mode entry 0xe5 is pyvmm's no-BIOS trap; the rest is still the testdev."""
    pio_bus, mmio_bus = Bus("pio"), Bus("mmio")
    trap = IgnoredPort()
    pio_bus.insert(trap, 0xE5, 1, "no-BIOS trap")
    interrupts = InterruptLines(FakeVm(), irqchip=False)  # type: ignore[arg-type]
    with GuestMemory.from_ranges([(0, 0x10000)]) as memory:
        device = attach_pc_testdev(pio_bus, mmio_bus, memory, interrupts)
        pio_bus.write(0xE4, 4, 0x1000)  # the flush port's dword starts at 0xe4: the testdev's
    assert pio_bus.find(0xE5).device is trap  # type: ignore[union-attr]
    assert device.flushed_pages == 1
    pio_bus.write(0xE8, 4, 0xA1B2C3D4)
    assert pio_bus.read(0xE0, 4) == 0xA1B2C3D4
    assert pio_bus.read(0xEB, 1) == 0xA1


# --- the command line ------------------------------------------------------------------


def test_qemu_device_pc_testdev_becomes_testdev() -> None:
    from pyvmm.cli.arguments import normalize_arguments
    from pyvmm.cli.parser import build_parser

    parser = build_parser()
    argv = normalize_arguments(parser.commands, ["boot", "-device", "pc-testdev", "k.elf"])
    assert argv == ["boot", "--testdev", "k.elf"]
    assert parser.parse_args(argv).testdev is True
    assert parser.parse_args(["boot", "k.elf"]).testdev is False
    argv = normalize_arguments(parser.commands, ["memmap", "-device", "pc-testdev,id=t", "k"])
    assert parser.parse_args(argv).testdev is True


def test_pc_testdev_properties_are_refused() -> None:
    from pyvmm.cli.arguments import normalize_arguments
    from pyvmm.cli.parser import build_parser
    from pyvmm.errors import UsageError

    parser = build_parser()
    with pytest.raises(UsageError, match="pc-testdev has no property 'iobase'"):
        normalize_arguments(parser.commands, ["boot", "-device", "pc-testdev,iobase=0x10", "k"])
