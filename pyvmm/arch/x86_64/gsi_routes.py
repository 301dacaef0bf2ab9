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


ISA_IRQS = 16


def pic_input(gsi: int) -> int | None:
    """The ISA IRQ (8259 input, 0-15; 8-15 on the slave) GSI `gsi` drives; None: none."""
    if gsi >= ISA_IRQS or gsi == CASCADE:
        return None
    return gsi


def ioapic_pin(gsi: int) -> int | None:
    """The IOAPIC pin GSI `gsi` drives; None: none (GSI 2, whose pin is the PIT's)."""
    if gsi == PIT_GSI:
        return TIMER_PIN
    if gsi == TIMER_PIN:
        return None
    return gsi


def pc_gsi_routes() -> list[tuple[int, int, int]]:
    """(gsi, irqchip, pin) for every input of KVM's PICs and IOAPIC, wired as
    `pic_input` and `ioapic_pin` say (pyvmm's own split irqchip uses them too)."""
    routes = []
    for gsi in range(IOAPIC_PINS):
        irq = pic_input(gsi)
        if irq is not None:
            chip = lib.KVM_IRQCHIP_PIC_MASTER if irq < 8 else lib.KVM_IRQCHIP_PIC_SLAVE
            routes.append((gsi, chip, irq % 8))
        pin = ioapic_pin(gsi)
        if pin is not None:
            routes.append((gsi, lib.KVM_IRQCHIP_IOAPIC, pin))
    return routes
