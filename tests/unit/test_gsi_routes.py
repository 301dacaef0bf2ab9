"""The GSI routing pyvmm gives KVM agrees with what its firmware tables tell the guest."""

from __future__ import annotations

from collections import defaultdict

from pyvmm._kvm import lib
from pyvmm.arch.x86_64.gsi_routes import TIMER_PIN, pc_gsi_routes
from pyvmm.firmware import mptable
from pyvmm.firmware.acpi.madt import OVERRIDES


def routes_by_gsi() -> dict[int, set[tuple[int, int]]]:
    table: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for gsi, chip, pin in pc_gsi_routes():
        table[gsi].add((chip, pin))
    return table


def test_the_pit_drives_pic_input_0_and_the_pin_the_tables_name() -> None:
    assert routes_by_gsi()[0] == {(lib.KVM_IRQCHIP_PIC_MASTER, 0), (lib.KVM_IRQCHIP_IOAPIC, 2)}
    override = next(each for each in OVERRIDES if each.source == 0)
    assert override.gsi == TIMER_PIN == mptable.TIMER_PIN


def test_every_other_isa_irq_keeps_its_number_and_the_cascade_drives_nothing() -> None:
    table = routes_by_gsi()
    assert 2 not in table
    for gsi in range(1, 16):
        if gsi != 2:
            pic = lib.KVM_IRQCHIP_PIC_MASTER if gsi < 8 else lib.KVM_IRQCHIP_PIC_SLAVE
            assert table[gsi] == {(pic, gsi % 8), (lib.KVM_IRQCHIP_IOAPIC, gsi)}
    for gsi in range(16, 24):
        assert table[gsi] == {(lib.KVM_IRQCHIP_IOAPIC, gsi)}
    assert len(pc_gsi_routes()) == 2 + 14 + 22
