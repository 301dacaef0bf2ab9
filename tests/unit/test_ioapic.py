"""pyvmm's userspace I/O APIC (pyvmm.devices.ioapic), driven as a guest and its devices would.

Expected values come from the 82093AA datasheet's register description
(IOAPICID, IOAPICVER, IOREDTBL), the SDM's MSI formats (vol. 3A, 11.11.1 and
11.11.2) and KVM's ioapic_mmio_read/write for access sizes. Messages are
recorded as (address, data) pairs; no KVM.
"""

from __future__ import annotations

import pytest

from pyvmm.devices.ioapic import IOREGSEL, IOWIN, WINDOW_SIZE, IoApic
from pyvmm.firmware import area

FIXED, LOWEST_PRIORITY, NMI, EXTINT = 0, 1, 4, 7
LOGICAL = 1 << 11
DELIVERY_STATUS = 1 << 12
ACTIVE_LOW = 1 << 13
REMOTE_IRR = 1 << 14
LEVEL = 1 << 15
MASKED = 1 << 16


class Rig:
    """An IoApic with its messages and route updates recorded, in order, in `events`."""

    def __init__(self, cls: type[IoApic] = IoApic) -> None:
        self.events: list[object] = []
        self.ioapic = cls(self._deliver, self._routes)

    def _deliver(self, address: int, data: int) -> None:
        self.events.append((address, data))

    def _routes(self) -> None:
        self.events.append("routes")

    @property
    def messages(self) -> list[object]:
        return [event for event in self.events if event != "routes"]

    @property
    def route_updates(self) -> int:
        return self.events.count("routes")

    def read_reg(self, register: int) -> int:
        self.ioapic.write(IOREGSEL, 4, register)
        return self.ioapic.read(IOWIN, 4)

    def write_reg(self, register: int, value: int) -> None:
        self.ioapic.write(IOREGSEL, 4, register)
        self.ioapic.write(IOWIN, 4, value)

    def program(self, pin: int, low: int, destination: int = 0) -> None:
        """Write entry `pin` as Linux does: the high dword (destination), then the low."""
        self.write_reg(0x11 + 2 * pin, destination << 24)
        self.write_reg(0x10 + 2 * pin, low)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_id_version_and_arbitration_registers(rig: Rig) -> None:
    assert rig.read_reg(0x01) == 0x0017_0011  # 24 entries (max index 23), version 0x11
    assert rig.read_reg(0x00) == area.IO_APIC_ID << 24
    rig.write_reg(0x00, 0xFA12_3456)  # only bits 27:24 are the ID
    assert rig.read_reg(0x00) == 0x0A00_0000
    assert rig.read_reg(0x02) == 0x0A00_0000  # arbitration reads the ID, like KVM's
    rig.write_reg(0x01, 0)
    rig.write_reg(0x02, 0x0500_0000)
    assert rig.read_reg(0x01) == 0x0017_0011
    assert rig.read_reg(0x02) == 0x0A00_0000
    assert rig.ioapic.state()["id"] == 0xA


def test_ioregsel_keeps_its_low_byte(rig: Rig) -> None:
    rig.ioapic.write(IOREGSEL, 4, 0x1234)
    assert rig.ioapic.read(IOREGSEL, 4) == 0x34
    assert rig.ioapic.state()["ioregsel"] == 0x34


def test_reset_state_every_entry_masked(rig: Rig) -> None:
    for pin in range(area.IO_APIC_PINS):
        assert rig.read_reg(0x10 + 2 * pin) == MASKED
        assert rig.read_reg(0x11 + 2 * pin) == 0
        assert rig.ioapic.entry(pin) == MASKED
    assert rig.ioapic.state() == {
        "id": area.IO_APIC_ID,
        "version": area.IO_APIC_VERSION,
        "ioregsel": 0x11 + 2 * 23,
        "irr": 0,
        "entries": [MASKED] * 24,
    }
    # Masked at reset: an asserted pin sends nothing.
    rig.ioapic.set_irq(4, True)
    assert rig.messages == []


def test_unknown_indirect_registers_read_zero_and_ignore_writes(rig: Rig) -> None:
    for register in (0x03, 0x0F, 0x40, 0x41, 0xFF):
        rig.write_reg(register, 0xFFFF_FFFF)
        assert rig.read_reg(register) == 0
    assert rig.ioapic.state()["entries"] == [MASKED] * 24
    assert rig.route_updates == 0


def test_edge_physical_fixed_message(rig: Rig) -> None:
    rig.program(4, 0x31 | FIXED << 8, destination=3)
    assert rig.messages == []
    rig.ioapic.set_irq(4, True)
    assert rig.messages == [(0xFEE0_3000, 0x31)]
    rig.ioapic.set_irq(4, True)  # still high: no new edge
    assert len(rig.messages) == 1
    rig.ioapic.set_irq(4, False)
    assert len(rig.messages) == 1
    rig.ioapic.set_irq(4, True)
    assert rig.messages == [(0xFEE0_3000, 0x31)] * 2
    assert rig.ioapic.state()["irr"] == 0
    assert rig.ioapic.entry(4) & REMOTE_IRR == 0  # edges never set remote IRR


def test_edge_logical_lowest_priority_message(rig: Rig) -> None:
    rig.program(5, 0x40 | LOWEST_PRIORITY << 8 | LOGICAL, destination=0x0F)
    rig.ioapic.set_irq(5, True)
    assert rig.messages == [(0xFEE0_F004, 0x0140)]


def test_edge_active_low_entry_takes_high_as_asserted(rig: Rig) -> None:
    rig.program(6, 0x36 | ACTIVE_LOW, destination=1)
    rig.ioapic.set_irq(6, True)
    assert rig.messages == [(0xFEE0_1000, 0x36)]  # polarity is not part of the message


def test_masked_edge_is_ignored_as_the_datasheet_says(rig: Rig) -> None:
    rig.program(4, 0x31 | MASKED, destination=3)
    rig.ioapic.set_irq(4, True)
    rig.ioapic.set_irq(4, False)
    assert rig.ioapic.state()["irr"] == 0
    rig.program(4, 0x31, destination=3)  # unmask
    assert rig.messages == []
    rig.ioapic.set_irq(4, True)  # the next edge goes through
    assert rig.messages == [(0xFEE0_3000, 0x31)]


class LatchingIoApic(IoApic):
    LATCH_MASKED_EDGES = True


def test_latched_masked_edge_is_sent_at_unmask() -> None:
    rig = Rig(LatchingIoApic)
    rig.program(4, 0x31 | MASKED, destination=3)
    rig.ioapic.set_irq(4, True)
    rig.ioapic.set_irq(4, False)  # a pulse: the edge stays pending
    assert rig.ioapic.state()["irr"] == 1 << 4
    assert rig.messages == []
    rig.program(4, 0x31, destination=3)
    assert rig.messages == [(0xFEE0_3000, 0x31)]
    assert rig.ioapic.state()["irr"] == 0
    rig.program(4, 0x31, destination=3)  # sent once only
    assert len(rig.messages) == 1


def test_level_one_message_until_eoi(rig: Rig) -> None:
    rig.program(9, 0x59 | LEVEL, destination=1)
    rig.ioapic.set_irq(9, True)
    assert rig.messages == [(0xFEE0_1000, 0xC059)]  # trigger mode and assert bits set
    assert rig.ioapic.entry(9) & REMOTE_IRR
    assert rig.read_reg(0x10 + 2 * 9) == 0x59 | LEVEL | REMOTE_IRR
    assert rig.ioapic.state()["irr"] == 1 << 9
    rig.ioapic.set_irq(9, True)  # remote IRR set: nothing more
    rig.ioapic.eoi(0x58)  # another vector
    assert len(rig.messages) == 1
    assert rig.ioapic.entry(9) & REMOTE_IRR


def test_level_redelivered_at_eoi_while_asserted(rig: Rig) -> None:
    rig.program(9, 0x59 | LEVEL, destination=1)
    rig.ioapic.set_irq(9, True)
    rig.ioapic.eoi(0x59)
    assert rig.messages == [(0xFEE0_1000, 0xC059)] * 2
    assert rig.ioapic.entry(9) & REMOTE_IRR  # set again by the re-delivery


def test_level_nothing_after_the_pin_drops(rig: Rig) -> None:
    rig.program(9, 0x59 | LEVEL, destination=1)
    rig.ioapic.set_irq(9, True)
    rig.ioapic.set_irq(9, False)
    assert rig.ioapic.state()["irr"] == 0
    rig.ioapic.eoi(0x59)
    assert len(rig.messages) == 1
    assert rig.ioapic.entry(9) == 0x59 | LEVEL | 1 << 56  # remote IRR cleared
    rig.ioapic.eoi(0x59)
    assert len(rig.messages) == 1


def test_eoi_clears_every_level_entry_with_the_vector(rig: Rig) -> None:
    rig.program(10, 0x60 | LEVEL, destination=1)
    rig.program(11, 0x60 | LEVEL, destination=2)
    rig.ioapic.set_irq(10, True)
    rig.ioapic.set_irq(11, True)
    rig.ioapic.set_irq(11, False)
    assert len(rig.messages) == 2
    rig.ioapic.eoi(0x60)
    assert rig.ioapic.entry(10) & REMOTE_IRR  # still asserted: sent again
    assert rig.ioapic.entry(11) & REMOTE_IRR == 0
    assert rig.messages[2:] == [(0xFEE0_1000, 0xC060)]


def test_level_masked_then_unmasked_while_asserted(rig: Rig) -> None:
    rig.program(9, 0x59 | LEVEL | MASKED, destination=1)
    rig.ioapic.set_irq(9, True)
    assert rig.messages == []
    assert rig.ioapic.state()["irr"] == 1 << 9
    rig.program(9, 0x59 | LEVEL, destination=1)
    assert rig.messages == [(0xFEE0_1000, 0xC059)]
    # Unmasking a pin that dropped while masked sends nothing.
    rig.program(8, 0x58 | LEVEL | MASKED)
    rig.ioapic.set_irq(8, True)
    rig.ioapic.set_irq(8, False)
    rig.program(8, 0x58 | LEVEL)
    assert len(rig.messages) == 1


def test_remote_irr_is_read_only_and_cleared_by_edge_mode(rig: Rig) -> None:
    rig.program(9, 0x59 | LEVEL, destination=1)
    rig.ioapic.set_irq(9, True)
    rig.write_reg(0x10 + 2 * 9, 0x59 | LEVEL)  # rewrite with bit 14 clear
    assert rig.ioapic.entry(9) & REMOTE_IRR
    assert len(rig.messages) == 1
    # Linux's __eoi_ioapic_pin: masked and edge, then the level entry restored.
    rig.write_reg(0x10 + 2 * 9, 0x59 | MASKED)
    assert rig.ioapic.entry(9) & REMOTE_IRR == 0
    assert len(rig.messages) == 1
    rig.write_reg(0x10 + 2 * 9, 0x59 | LEVEL)
    assert rig.messages == [(0xFEE0_1000, 0xC059)] * 2  # still asserted: sent again
    assert rig.ioapic.entry(9) & REMOTE_IRR


def test_guest_cannot_set_delivery_status_or_remote_irr(rig: Rig) -> None:
    rig.write_reg(0x10 + 2 * 3, 0x33 | LEVEL | MASKED | DELIVERY_STATUS | REMOTE_IRR)
    assert rig.read_reg(0x10 + 2 * 3) == 0x33 | LEVEL | MASKED
    rig.write_reg(0x11 + 2 * 3, 0xFF00_0000)
    assert rig.ioapic.entry(3) == 0xFF00_0000 << 32 | 0x33 | LEVEL | MASKED


def test_on_routes_changed_only_for_entry_writes(rig: Rig) -> None:
    rig.write_reg(0x00, 0x0100_0000)
    rig.write_reg(0x01, 0)
    rig.write_reg(0x02, 0)
    rig.write_reg(0x03, 0)
    rig.write_reg(0x40, 0)  # past entry 23
    rig.ioapic.write(0x40, 4, 0x31)  # no EOI register in version 0x11
    assert rig.route_updates == 0
    rig.write_reg(0x10, 0x31)  # entry 0, low dword
    assert rig.route_updates == 1
    rig.write_reg(0x11 + 2 * 23, 0x0200_0000)  # entry 23, high dword
    assert rig.route_updates == 2
    rig.ioapic.set_irq(0, True)
    rig.ioapic.eoi(0x31)
    assert rig.route_updates == 2


def test_routes_are_updated_before_the_unmask_sends(rig: Rig) -> None:
    rig.program(9, 0x59 | LEVEL | MASKED, destination=1)
    rig.ioapic.set_irq(9, True)
    rig.events.clear()
    rig.write_reg(0x10 + 2 * 9, 0x59 | LEVEL)
    assert rig.events == ["routes", (0xFEE0_1000, 0xC059)]


def test_msi_message_formats(rig: Rig) -> None:
    assert rig.ioapic.msi_message(0) == (0xFEE0_0000, 0)
    rig.program(1, 0x00 | EXTINT << 8 | LOGICAL | LEVEL | MASKED, destination=0xFF)
    assert rig.ioapic.msi_message(1) == (0xFEEF_F004, 0xC700)  # masked or not
    rig.program(2, 0x02 | NMI << 8, destination=0x80)
    assert rig.ioapic.msi_message(2) == (0xFEE8_0000, 0x0402)


def test_pins_out_of_range(rig: Rig) -> None:
    for pin in (24, -1):
        with pytest.raises(ValueError):
            rig.ioapic.set_irq(pin, True)
        with pytest.raises(ValueError):
            rig.ioapic.entry(pin)
        with pytest.raises(ValueError):
            rig.ioapic.msi_message(pin)
    rig.ioapic.set_irq(23, True)  # the last pin is fine


def test_narrow_and_wide_reads(rig: Rig) -> None:
    rig.write_reg(0x01, 0)
    assert rig.ioapic.read(IOWIN, 1) == 0x11  # the register's low byte
    assert rig.ioapic.read(IOWIN, 2) == 0x0011
    assert rig.ioapic.read(IOWIN, 8) == 0x0017_0011  # 32 bits zero-extended
    assert rig.ioapic.read(IOWIN + 2, 1) == 0  # only the exact offsets decode
    assert rig.ioapic.read(IOWIN + 2, 2) == 0
    assert rig.ioapic.read(IOREGSEL, 1) == 0x01
    assert rig.ioapic.read(IOREGSEL, 8) == 0x01
    assert rig.ioapic.read(0x04, 4) == 0
    assert rig.ioapic.read(0x40, 4) == 0
    assert rig.ioapic.read(WINDOW_SIZE - 4, 4) == 0
    assert rig.ioapic.read(IOWIN, 3) == 0  # no such size


def test_narrow_and_wide_writes(rig: Rig) -> None:
    rig.ioapic.write(IOREGSEL, 1, 0x1A)  # entry 5, low dword
    assert rig.ioapic.read(IOREGSEL, 4) == 0x1A
    # A byte write fills the whole register, zero-extended: the mask bit goes.
    rig.ioapic.write(IOWIN, 1, 0x35)
    assert rig.ioapic.entry(5) == 0x35
    rig.ioapic.write(IOWIN, 2, 0x8045)
    assert rig.ioapic.entry(5) == 0x8045
    rig.ioapic.write(IOWIN, 8, 0xFFFF_FFFF_0001_0046)  # the low 32 bits
    assert rig.ioapic.entry(5) == 0x0001_0046
    rig.ioapic.write(IOWIN, 3, 0x47)  # no such size: ignored
    rig.ioapic.write(IOWIN + 1, 1, 0x47)  # not a register
    assert rig.ioapic.entry(5) == 0x0001_0046
    rig.ioapic.write(IOREGSEL, 8, 0x1_0000_0002)
    assert rig.ioapic.read(IOREGSEL, 4) == 0x02
