"""The two 8259A PICs as a PC BIOS leaves them, loaded into KVM's in-kernel PIC.

A guest entered in real mode expects what a BIOS set up before the boot
sector ran. SeaBIOS, QEMU's BIOS, programs the PICs in `pic_setup`
(src/hw/pic.c): `pic_reset(BIOS_HWIRQ0_VECTOR, BIOS_HWIRQ8_VECTOR)` sends ICW1
0x11 (edge-triggered, cascade, ICW4 follows), ICW2 the vector bases 0x08 and
0x70, ICW3 0x04 / 0x02 (the slave on the master's IRQ 2), ICW4 0x01 (8086
mode, normal EOI), then masks every IRQ but the cascade:
`PIC_IRQMASK_DEFAULT = ~PIC1_IRQ2` (src/hw/pic.h). SeaBIOS's drivers later
unmask the IRQs they serve (`enable_hwirq`: timer, keyboard, RTC...), each
with its handler in the IVT; pyvmm has no BIOS handlers, so those IRQs stay
masked: an unmasked line would reach pyvmm's no-BIOS stub instead.

KVM's reset state is another: vector base 0 and nothing masked, so IRQ n
would arrive as vector n, a CPU exception's. Other entry modes keep it: an
operating system programs the PICs itself.

The state is loaded with KVM_SET_IRQCHIP (KVM API doc 4.27) into `struct
kvm_pic_state`; ICW3 has no field there, KVM wires the cascade to IRQ 2.
"""

from __future__ import annotations

from pyvmm._kvm import lib

# SeaBIOS's vector bases and masks (src/hw/pic.h), as pyvmm's own 8259 model has them.
from pyvmm.devices.i8259 import (
    CASCADE_IRQ,
    MASTER_IMR,
    MASTER_VECTOR_BASE,
    SLAVE_IMR,
    SLAVE_VECTOR_BASE,
)
from pyvmm.kvm.vm import Vm

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any


# chip id -> (ICW2 vector base, OCW1 mask)
BIOS_PICS = {
    lib.KVM_IRQCHIP_PIC_MASTER: (MASTER_VECTOR_BASE, MASTER_IMR),
    lib.KVM_IRQCHIP_PIC_SLAVE: (SLAVE_VECTOR_BASE, SLAVE_IMR),
}


def initialize_pic_state(pic: Any, vector_base: int, mask: int) -> None:
    """Set a `struct kvm_pic_state` as ICW1 0x11, ICW2 `vector_base`, ICW3, ICW4 0x01 and
    OCW1 `mask` leave an 8259A (8259A datasheet, "Initialization Command Words").

    Pure: works on any object with the struct's fields. Nothing is pending or in
    service, the priorities are the fixed ones (IRQ 0 highest), reads of the
    command port return IRR, and the edge/level register (ELCR) is left as it is.
    """
    pic.irq_base = vector_base & 0xF8  # ICW2: the low 3 bits are the IRQ number
    pic.imr = mask
    pic.irr = pic.isr = pic.last_irr = 0
    pic.priority_add = 0
    pic.read_reg_select = 0
    pic.poll = 0
    pic.special_mask = 0
    pic.init_state = 0  # initialization done: data port writes are OCW1
    pic.init4 = 1  # ICW1 bit 0: ICW4 was sent
    pic.auto_eoi = 0
    pic.rotate_on_auto_eoi = 0
    pic.special_fully_nested_mode = 0


def in_service_irq(pics: dict[int, Any], vector: int) -> tuple[int, int] | None:
    """(chip id, IRQ on that chip) whose interrupt at `vector` the PICs have in service.

    `pics` maps KVM_IRQCHIP_PIC_MASTER/SLAVE to a `struct kvm_pic_state`. On a
    PC, vectors 0x08-0x0f are both CPU exceptions and the master's IRQs 0-7
    (IBM's choice); the in-service register tells which (8259A datasheet,
    "In-Service Register"), as a BIOS's default handlers ask. Pure.
    """
    for chip_id, pic in pics.items():
        irq = vector - pic.irq_base
        if 0 <= irq < 8 and pic.isr & (1 << irq):
            return chip_id, irq
    return None


def acknowledge_irq_vector(vm: Vm, vector: int) -> int | None:
    """If `vector` is a PIC interrupt in service, end it (an EOI) and return its ISA IRQ.

    What a BIOS's default handler for an IRQ does: a non-specific EOI to the
    PIC that serves it (and the master's cascade for the slave), so the line
    can interrupt again. None for anything else (a CPU exception, an `int n`).
    Raises KvmError without an in-kernel irqchip.
    """
    master, slave = lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE
    chips = {chip_id: vm.get_irqchip(chip_id) for chip_id in (master, slave)}
    found = in_service_irq({chip_id: chip.chip.pic for chip_id, chip in chips.items()}, vector)
    if found is None:
        return None
    chip_id, irq = found
    chips[chip_id].chip.pic.isr &= ~(1 << irq) & 0xFF
    vm.set_irqchip(chips[chip_id])
    if chip_id == slave:
        chips[master].chip.pic.isr &= ~(1 << CASCADE_IRQ) & 0xFF
        vm.set_irqchip(chips[master])
        return 8 + irq
    return irq


def set_bios_pic_state(vm: Vm) -> None:
    """Load both in-kernel PICs with SeaBIOS's setup (KVM_GET_IRQCHIP, then KVM_SET_IRQCHIP).

    Needs the in-kernel irqchip; raises KvmError otherwise.
    """
    for chip_id, (vector_base, mask) in BIOS_PICS.items():
        chip = vm.get_irqchip(chip_id)
        initialize_pic_state(chip.chip.pic, vector_base, mask)
        vm.set_irqchip(chip)
