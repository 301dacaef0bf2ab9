"""Vectors 0x08-0x0f are CPU exceptions and PIC IRQs both: the in-service register decides."""

from __future__ import annotations

from types import SimpleNamespace

from pyvmm._kvm import lib
from pyvmm.arch.x86_64.pic import MASTER_VECTOR_BASE, SLAVE_VECTOR_BASE, in_service_irq

MASTER, SLAVE = lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE


def pics(master_isr: int = 0, slave_isr: int = 0) -> dict[int, SimpleNamespace]:
    return {
        MASTER: SimpleNamespace(irq_base=MASTER_VECTOR_BASE, isr=master_isr),
        SLAVE: SimpleNamespace(irq_base=SLAVE_VECTOR_BASE, isr=slave_isr),
    }


def test_an_irq_in_service_is_the_irq() -> None:
    assert in_service_irq(pics(master_isr=1 << 4), 0x0C) == (MASTER, 4)
    assert in_service_irq(pics(master_isr=1 << 2, slave_isr=1 << 0), 0x70) == (SLAVE, 0)


def test_the_same_vector_with_nothing_in_service_is_an_exception() -> None:
    assert in_service_irq(pics(), 0x0C) is None  # #SS, or an `int 0x0c`
    assert in_service_irq(pics(master_isr=1 << 5), 0x0C) is None  # IRQ 5 is 0x0d's


def test_vectors_outside_both_pics_are_never_irqs() -> None:
    busy = pics(master_isr=0xFF, slave_isr=0xFF)
    assert [v for v in range(256) if in_service_irq(busy, v) is not None] == [
        *range(0x08, 0x10),
        *range(0x70, 0x78),
    ]
