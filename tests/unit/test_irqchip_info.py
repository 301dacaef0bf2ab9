"""`info pic`'s text, from the models' registers (QEMU's HMP layout)."""

from __future__ import annotations

from pyvmm.devices.i8259 import PicPair
from pyvmm.devices.ioapic import IOREGSEL, IOWIN, IoApic
from pyvmm.machine.irqchip_info import ioapic_lines, pic_line


def test_the_pics_as_a_bios_leaves_them() -> None:
    pics = PicPair()
    pics.initialize()
    pics.set_irq(4, True)  # COM1 asks; masked, so only IRR shows it
    assert pic_line(0, pics.state()["master"]) == (
        "pic0: irr=10 imr=fb isr=00 hprio=0 irq_base=08 rr_sel=0 elcr=00 fnm=0\n"
    )
    assert pic_line(1, pics.state()["slave"]) == (
        "pic1: irr=00 imr=ff isr=00 hprio=0 irq_base=70 rr_sel=0 elcr=00 fnm=0\n"
    )


def test_the_ioapic_table_irr_and_remote_irr() -> None:
    delivered: list[tuple[int, int]] = []
    ioapic = IoApic(lambda address, data: delivered.append((address, data)))
    for register, value in (
        (0x14, 0x0000_A031),  # pin 2: level, active low, vector 0x31
        (0x15, 0x0100_0000),  # to APIC 1
        (0x1A, 0x0001_8035),  # pin 5: level, masked
    ):
        ioapic.write(IOREGSEL, 4, register)
        ioapic.write(IOWIN, 4, value)
    ioapic.set_irq(2, True)  # delivered: remote IRR set until the EOI
    ioapic.set_irq(5, True)  # masked: its request waits in IRR
    lines = ioapic_lines(ioapic.state()).splitlines()
    assert len(delivered) == 1
    assert lines[0] == "ioapic0: ver=0x11 id=0x00 sel=0x1a (redir[5])"
    assert lines[1] == (
        "  pin 0  0x0000000000010000 dest=0 vec=0   active-hi edge  masked fixed  physical"
    )
    assert lines[3] == (
        "  pin 2  0x010000000000e031 dest=1 vec=49  active-lo level        fixed  physical"
    )
    assert len(lines) == 1 + 24 + 2
    assert lines[-2:] == ["  IRR 2 5", "  Remote IRR 2"]
