"""How the PC's interrupt inputs (GSIs) reach KVM's in-kernel PICs and IOAPIC.

KVM's default routing after KVM_CREATE_IRQCHIP wires GSI n to IOAPIC pin n
(and GSIs 0-15 to PIC input n as well). A PC wires its PIT differently: its
IRQ 0 drives 8259 input 0 but IOAPIC pin 2, which the firmware says with
ACPI's interrupt source override (IRQ 0 -> GSI 2, pyvmm/firmware/acpi/madt.py)
and the MP table's IRQ 0 entry on pin 2 (pyvmm/firmware/mptable.py). Left at
KVM's default, a kernel that believes the tables programs pin 2 for its
timer and never gets a tick. So pyvmm replaces the routing, as QEMU does
(hw/i386/kvm/ioapic.c, kvm_pc_setup_irq_routing):

- GSI 0 (the PIT): PIC master input 0 and IOAPIC pin 2;
- GSIs 1, 3-7: PIC master inputs, 8-15: PIC slave inputs (GSI 2 is the
  cascade and drives no PIC input);
- GSIs 1 and 3-23: IOAPIC pins of the same number.

KVM API doc 4.52, KVM_SET_GSI_ROUTING.
"""

from __future__ import annotations

from pyvmm._kvm import lib

IOAPIC_PINS = 24
PIT_GSI = 0
TIMER_PIN = 2  # the IOAPIC pin the PIT's IRQ 0 drives
CASCADE = 2  # the slave PIC's input on the master


def pc_gsi_routes() -> list[tuple[int, int, int]]:
    """(gsi, irqchip, pin) for every input of the PC's interrupt controllers."""
    routes = [
        (PIT_GSI, lib.KVM_IRQCHIP_PIC_MASTER, 0),
        (PIT_GSI, lib.KVM_IRQCHIP_IOAPIC, TIMER_PIN),
    ]
    for gsi in range(1, 16):
        if gsi == CASCADE:
            continue
        chip = lib.KVM_IRQCHIP_PIC_MASTER if gsi < 8 else lib.KVM_IRQCHIP_PIC_SLAVE
        routes.append((gsi, chip, gsi % 8))
    for gsi in range(1, IOAPIC_PINS):
        if gsi != TIMER_PIN:
            routes.append((gsi, lib.KVM_IRQCHIP_IOAPIC, gsi))
    return routes
