"""pyvmm's cascaded 8259A PICs (pyvmm.devices.i8259), driven through their ports (no KVM).

Expected values come from the Intel 8259A datasheet (ICW/OCW formats,
priorities, EOI, poll, special masks) and the PC wiring: the master at
0x20 with vectors 0x08-0x0f after a BIOS, the slave at 0xa0 on IRQ 2 with
0x70-0x77, the PIIX ELCR at 0x4d0.
"""

from __future__ import annotations

import pytest

from pyvmm.devices.i8259 import CASCADE_IRQ, I8259, PicPair

CMD, DATA = 0, 1


class Outputs:
    def __init__(self) -> None:
        self.levels: list[bool] = []

    def __call__(self, level: bool) -> None:
        self.levels.append(level)


def bios_pics() -> tuple[PicPair, Outputs]:
    outputs = Outputs()
    pics = PicPair(on_output=outputs)
    pics.initialize()
    return pics, outputs


def unmask(pics: PicPair, *irqs: int) -> None:
    """OCW1 on both chips: unmask `irqs` (and the cascade), mask the rest."""
    master = 0xFF & ~(1 << CASCADE_IRQ)
    slave = 0xFF
    for irq in irqs:
        if irq < 8:
            master &= ~(1 << irq)
        else:
            slave &= ~(1 << (irq - 8))
    pics.master.write(DATA, 1, master)
    pics.slave.write(DATA, 1, slave)


def pulse(pics: PicPair, irq: int) -> None:
    pics.set_irq(irq, True)
    pics.set_irq(irq, False)


# -- the BIOS state ----------------------------------------------------------------


def test_bios_state_matches_seabios() -> None:
    pics, _ = bios_pics()
    state = pics.state()
    assert state["master"]["irq_base"] == 0x08
    assert state["slave"]["irq_base"] == 0x70
    assert state["master"]["imr"] == 0xFB  # everything masked but the cascade
    assert state["slave"]["imr"] == 0xFF
    for chip in ("master", "slave"):
        assert state[chip]["irr"] == 0
        assert state[chip]["isr"] == 0
        assert state[chip]["elcr"] == 0
        assert state[chip]["init_state"] == 0  # data port writes are OCW1
    assert pics.master.read(DATA, 1) == 0xFB
    assert pics.slave.read(DATA, 1) == 0xFF
    assert pics.output is False


def test_bios_state_vectors_for_every_irq() -> None:
    pics, _ = bios_pics()
    unmask(pics, *range(16))
    for irq in (0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15):
        pulse(pics, irq)
        vector = pics.acknowledge()
        assert vector == (0x08 + irq if irq < 8 else 0x70 + irq - 8)
        assert pics.end_of_interrupt_for_vector(vector) == irq
    assert pics.output is False


def test_power_on_state_is_qemu_reset() -> None:
    pics = PicPair()
    assert pics.master.irq_base == 0
    assert pics.master.imr == 0
    pulse(pics, 0)
    assert pics.acknowledge() == 0x00  # KVM's/QEMU's reset: IRQ 0 at vector 0


def test_initialize_with_other_bases_and_masks() -> None:
    pics = PicPair()
    pics.initialize(master_base=0x27, slave_base=0x2F, master_mask=0x00, slave_mask=0x00)
    assert pics.master.irq_base == 0x20  # the low 3 bits are the IRQ's
    assert pics.slave.irq_base == 0x28
    pulse(pics, 3)
    assert pics.acknowledge() == 0x23
    pulse(pics, 10)
    pics.master.write(CMD, 1, 0x20)
    assert pics.acknowledge() == 0x2A


def test_initialize_clears_pending_and_in_service() -> None:
    pics, outputs = bios_pics()
    unmask(pics, 0)
    pulse(pics, 0)
    pics.acknowledge()
    pulse(pics, 0)
    assert pics.state()["master"]["isr"] == 0x01
    assert pics.state()["master"]["irr"] == 0x01
    pics.initialize()
    assert pics.state()["master"]["isr"] == 0
    assert pics.state()["master"]["irr"] == 0
    assert pics.state()["master"]["imr"] == 0xFB
    assert pics.output is False
    assert outputs.levels == [True, False]


# -- edge-triggered IRQs, EOI, masking -----------------------------------------------


def test_edge_irq_acknowledge_and_non_specific_eoi() -> None:
    pics, _ = bios_pics()
    unmask(pics, 4)
    pics.set_irq(4, True)
    assert pics.output is True
    assert pics.state()["master"]["irr"] == 0x10
    assert pics.acknowledge() == 0x0C
    assert pics.state()["master"]["isr"] == 0x10
    assert pics.state()["master"]["irr"] == 0  # edge: cleared at the acknowledge
    assert pics.output is False
    pics.master.write(CMD, 1, 0x20)  # non-specific EOI
    assert pics.state()["master"]["isr"] == 0
    assert pics.output is False  # the line is still high, but no new edge


def test_edge_needs_a_new_rising_edge() -> None:
    pics, _ = bios_pics()
    unmask(pics, 1)
    pics.set_irq(1, True)
    pics.acknowledge()
    pics.master.write(CMD, 1, 0x20)
    pics.set_irq(1, True)  # still high: no edge
    assert pics.output is False
    pics.set_irq(1, False)
    pics.set_irq(1, True)
    assert pics.output is True
    assert pics.acknowledge() == 0x09


def test_irq_in_service_blocks_itself_and_lower_priorities() -> None:
    pics, _ = bios_pics()
    unmask(pics, 0, 3, 5)
    pulse(pics, 3)
    assert pics.acknowledge() == 0x0B
    pulse(pics, 5)
    assert pics.output is False  # IRQ 5 is below IRQ 3 in service
    pulse(pics, 3)
    assert pics.output is False  # IRQ 3 itself too
    pulse(pics, 0)
    assert pics.output is True  # IRQ 0 nests
    assert pics.acknowledge() == 0x08
    assert pics.state()["master"]["isr"] == 0x09
    pics.master.write(CMD, 1, 0x20)  # ends IRQ 0, the highest in service
    assert pics.state()["master"]["isr"] == 0x08
    assert pics.output is False
    pics.master.write(CMD, 1, 0x20)  # ends IRQ 3
    assert pics.output is True
    assert pics.acknowledge() == 0x0B  # IRQ 3 again before IRQ 5
    pics.master.write(CMD, 1, 0x20)
    assert pics.acknowledge() == 0x0D


def test_specific_eoi_ends_the_named_irq() -> None:
    pics, _ = bios_pics()
    unmask(pics, 0, 3)
    pulse(pics, 3)
    pics.acknowledge()
    pulse(pics, 0)
    pics.acknowledge()
    pics.master.write(CMD, 1, 0x63)  # specific EOI, IRQ 3
    assert pics.state()["master"]["isr"] == 0x01


def test_masked_irq_stays_pending_until_unmasked() -> None:
    pics, outputs = bios_pics()
    pulse(pics, 6)  # masked by the BIOS state
    assert pics.output is False
    assert pics.state()["master"]["irr"] == 0x40
    assert pics.acknowledge() == 0x0F  # spurious: nothing unmasked is pending
    assert pics.state()["master"]["isr"] == 0
    unmask(pics, 6)
    assert pics.output is True
    pics.master.write(DATA, 1, 0xFF)
    assert pics.output is False
    assert outputs.levels == [True, False]


def test_set_irq_range_and_cascade_no_op() -> None:
    pics, _ = bios_pics()
    unmask(pics, *range(16))
    with pytest.raises(ValueError):
        pics.set_irq(16, True)
    with pytest.raises(ValueError):
        pics.set_irq(-1, True)
    pics.set_irq(2, True)
    assert pics.state()["master"]["irr"] == 0
    assert pics.output is False


# -- level-triggered IRQs (ELCR) -----------------------------------------------------


def test_elcr_write_masks_and_read_back() -> None:
    pics, _ = bios_pics()
    pics.elcr.write(0, 1, 0xFF)
    pics.elcr.write(1, 1, 0xFF)
    assert pics.elcr.read(0, 1) == 0xF8  # IRQs 0, 1, 2 always edge
    assert pics.elcr.read(1, 1) == 0xDE  # IRQs 8 and 13 always edge
    assert pics.state()["master"]["elcr"] == 0xF8
    assert pics.state()["slave"]["elcr"] == 0xDE


def test_level_irq_keeps_irr_and_interrupts_again_after_eoi() -> None:
    pics, _ = bios_pics()
    pics.elcr.write(0, 1, 0x20)  # IRQ 5 level-triggered
    unmask(pics, 5)
    pics.set_irq(5, True)
    assert pics.acknowledge() == 0x0D
    assert pics.state()["master"]["irr"] == 0x20  # not cleared while the line is high
    assert pics.output is False  # in service
    pics.master.write(CMD, 1, 0x20)
    assert pics.output is True  # still high: interrupts again
    assert pics.acknowledge() == 0x0D
    pics.set_irq(5, False)
    assert pics.state()["master"]["irr"] == 0
    pics.master.write(CMD, 1, 0x20)
    assert pics.output is False


def test_level_irq_lowered_before_acknowledge_is_gone() -> None:
    pics, _ = bios_pics()
    pics.elcr.write(0, 1, 0x80)
    unmask(pics, 7)
    pics.set_irq(7, True)
    assert pics.output is True
    pics.set_irq(7, False)
    assert pics.output is False
    assert pics.state()["master"]["irr"] == 0


def test_icw1_keeps_elcr_and_level_irr() -> None:
    pics, _ = bios_pics()
    pics.elcr.write(0, 1, 0x08)
    pics.set_irq(3, True)  # level
    pulse(pics, 4)  # edge
    assert pics.state()["master"]["irr"] == 0x18
    pics.master.write(CMD, 1, 0x11)
    assert pics.state()["master"]["elcr"] == 0x08
    assert pics.state()["master"]["irr"] == 0x08


# -- the cascade ---------------------------------------------------------------------


def test_slave_irq_through_cascade_needs_both_eois() -> None:
    pics, _ = bios_pics()
    unmask(pics, 12)
    pics.set_irq(12, True)
    assert pics.output is True
    assert pics.state()["master"]["irr"] == 0x04  # the slave's INT on IRQ 2
    assert pics.acknowledge() == 0x74
    assert pics.state()["slave"]["isr"] == 0x10
    assert pics.state()["master"]["isr"] == 0x04
    pics.set_irq(12, False)
    pulse(pics, 12)
    assert pics.output is False  # the slave's IRQ 4 is in service
    pics.slave.write(CMD, 1, 0x20)
    assert pics.state()["slave"]["isr"] == 0
    assert pics.output is False  # the master's IRQ 2 is still in service
    pics.master.write(CMD, 1, 0x20)
    assert pics.state()["master"]["isr"] == 0
    assert pics.output is True
    assert pics.acknowledge() == 0x74


def test_slave_priorities_below_master_irq_1_above_irq_3() -> None:
    pics, _ = bios_pics()
    unmask(pics, 1, 3, 8, 15)
    pulse(pics, 3)
    pulse(pics, 15)
    pulse(pics, 8)
    pulse(pics, 1)
    vectors = []
    for _ in range(4):
        vectors.append(pics.acknowledge())
        if vectors[-1] >= 0x70:
            pics.slave.write(CMD, 1, 0x20)
        pics.master.write(CMD, 1, 0x20)
    assert vectors == [0x09, 0x70, 0x77, 0x0B]


def test_special_fully_nested_mode_lets_slave_irqs_nest() -> None:
    pics, _ = bios_pics()
    pics.master.write(CMD, 1, 0x11)
    pics.master.write(DATA, 1, 0x08)
    pics.master.write(DATA, 1, 0x04)
    pics.master.write(DATA, 1, 0x11)  # ICW4: SFNM, 8086
    assert pics.state()["master"]["special_fully_nested_mode"] == 1
    pics.master.write(DATA, 1, 0xFB)
    pics.slave.write(DATA, 1, 0x00)
    pulse(pics, 14)
    assert pics.acknowledge() == 0x76
    pulse(pics, 9)  # a higher-priority slave IRQ while the cascade is in service
    assert pics.output is True
    assert pics.acknowledge() == 0x71
    assert pics.state()["slave"]["isr"] == 0x42


def test_without_special_fully_nested_mode_slave_irqs_wait() -> None:
    pics, _ = bios_pics()
    pics.slave.write(DATA, 1, 0x00)
    pulse(pics, 14)
    assert pics.acknowledge() == 0x76
    pulse(pics, 9)
    assert pics.output is False  # the master's IRQ 2 is in service
    pics.slave.write(CMD, 1, 0x20)
    pics.master.write(CMD, 1, 0x20)
    assert pics.acknowledge() == 0x71


# -- guest-programmed initialization ---------------------------------------------------


def test_guest_icw_sequence_remaps_vectors() -> None:
    pics, _ = bios_pics()
    # A real-mode program remapping the PICs to 0x20/0x28.
    for port, value in ((CMD, 0x11), (DATA, 0x20), (DATA, 0x04), (DATA, 0x01)):
        pics.master.write(port, 1, value)
    for port, value in ((CMD, 0x11), (DATA, 0x28), (DATA, 0x02), (DATA, 0x01)):
        pics.slave.write(port, 1, value)
    state = pics.state()
    assert state["master"]["irq_base"] == 0x20
    assert state["slave"]["irq_base"] == 0x28
    assert state["master"]["imr"] == 0  # ICW1 unmasks everything
    assert state["master"]["init_state"] == 0
    assert state["master"]["init4"] == 1
    assert state["master"]["auto_eoi"] == 0
    pics.master.write(DATA, 1, 0xFA)  # OCW1 after the ICWs: unmask IRQ 0 (and 2)
    pics.slave.write(DATA, 1, 0xFE)
    assert pics.master.read(DATA, 1) == 0xFA
    pulse(pics, 0)
    assert pics.acknowledge() == 0x20
    pics.master.write(CMD, 1, 0x20)
    pulse(pics, 8)
    assert pics.acknowledge() == 0x28


def test_icw1_resets_in_service_and_mask() -> None:
    pics, _ = bios_pics()
    unmask(pics, 0)
    pulse(pics, 0)
    pics.acknowledge()
    pics.master.write(CMD, 1, 0x0B)  # read ISR
    pics.master.write(CMD, 1, 0x11)
    assert pics.state()["master"]["isr"] == 0
    assert pics.state()["master"]["imr"] == 0
    assert pics.state()["master"]["read_reg_select"] == 0
    assert pics.state()["master"]["init_state"] == 1


def test_icw_sequence_without_icw4_and_single_mode() -> None:
    chip = I8259(master=True)
    chip.write(CMD, 1, 0x10)  # edge, cascade, no ICW4
    chip.write(DATA, 1, 0x40)  # ICW2
    chip.write(DATA, 1, 0x04)  # ICW3
    assert chip.init_state == 0
    chip.write(DATA, 1, 0x3C)  # OCW1
    assert chip.imr == 0x3C
    assert chip.irq_base == 0x40
    chip.write(CMD, 1, 0x13)  # single, ICW4
    chip.write(DATA, 1, 0x50)  # ICW2; no ICW3
    chip.write(DATA, 1, 0x03)  # ICW4: AEOI
    assert chip.auto_eoi == 1
    assert chip.init_state == 0
    chip.write(DATA, 1, 0x81)
    assert chip.imr == 0x81
    assert chip.irq_base == 0x50


def test_wide_accesses_use_the_low_byte() -> None:
    pics, _ = bios_pics()
    pics.master.write(DATA, 2, 0x12F0)
    assert pics.master.read(DATA, 2) == 0xF0
    assert pics.master.read(DATA, 4) == 0xF0


# -- OCW3: reading IRR and ISR, polling ----------------------------------------------


def test_ocw3_selects_irr_or_isr() -> None:
    pics, _ = bios_pics()
    unmask(pics, 3, 5)
    pulse(pics, 3)
    pulse(pics, 5)
    pics.acknowledge()
    assert pics.master.read(CMD, 1) == 0x20  # IRR by default
    pics.master.write(CMD, 1, 0x0B)
    assert pics.master.read(CMD, 1) == 0x08  # ISR
    assert pics.master.read(CMD, 1) == 0x08  # it sticks
    pics.master.write(CMD, 1, 0x08)  # RR clear: no change
    assert pics.master.read(CMD, 1) == 0x08
    pics.master.write(CMD, 1, 0x0A)
    assert pics.master.read(CMD, 1) == 0x20


def test_poll_acknowledges_highest_pending() -> None:
    pics, _ = bios_pics()
    unmask(pics, 3, 5)
    pulse(pics, 5)
    pulse(pics, 3)
    pics.master.write(CMD, 1, 0x0C)  # poll
    assert pics.master.read(CMD, 1) == 0x83
    assert pics.state()["master"]["isr"] == 0x08
    assert pics.state()["master"]["irr"] == 0x20
    assert pics.master.read(CMD, 1) == 0x20  # poll is for one read: IRR again
    pics.master.write(CMD, 1, 0x0C)
    assert pics.master.read(CMD, 1) == 0  # IRQ 5 is below IRQ 3 in service


def test_poll_with_nothing_pending_reads_zero() -> None:
    pics, _ = bios_pics()
    pics.master.write(CMD, 1, 0x0C)
    assert pics.master.read(CMD, 1) == 0
    assert pics.state()["master"]["poll"] == 0


# -- auto-EOI and rotation -------------------------------------------------------------


def auto_eoi_master(pics: PicPair) -> None:
    for port, value in ((CMD, 0x11), (DATA, 0x08), (DATA, 0x04), (DATA, 0x03)):
        pics.master.write(port, 1, value)


def test_auto_eoi_leaves_nothing_in_service() -> None:
    pics, _ = bios_pics()
    auto_eoi_master(pics)
    assert pics.state()["master"]["auto_eoi"] == 1
    pulse(pics, 4)
    assert pics.acknowledge() == 0x0C
    assert pics.state()["master"]["isr"] == 0
    pulse(pics, 4)
    assert pics.output is True  # no EOI needed
    assert pics.acknowledge() == 0x0C


def test_rotate_in_auto_eoi_mode() -> None:
    pics, _ = bios_pics()
    auto_eoi_master(pics)
    pics.master.write(CMD, 1, 0x80)  # rotate in AEOI mode: set
    assert pics.state()["master"]["rotate_on_auto_eoi"] == 1
    pulse(pics, 1)
    assert pics.acknowledge() == 0x09
    assert pics.state()["master"]["priority_add"] == 2  # IRQ 1 now the lowest
    pulse(pics, 1)
    pulse(pics, 5)
    assert pics.acknowledge() == 0x0D
    pics.master.write(CMD, 1, 0x00)  # clear
    assert pics.state()["master"]["rotate_on_auto_eoi"] == 0
    assert pics.acknowledge() == 0x09
    assert pics.state()["master"]["priority_add"] == 6  # unchanged by IRQ 1's


def test_rotate_on_non_specific_eoi() -> None:
    pics, _ = bios_pics()
    unmask(pics, 0, 1, 3)
    pulse(pics, 0)
    assert pics.acknowledge() == 0x08
    pics.master.write(CMD, 1, 0xA0)  # rotate on non-specific EOI: IRQ 0 becomes the lowest
    assert pics.state()["master"]["isr"] == 0
    assert pics.state()["master"]["priority_add"] == 1
    pulse(pics, 0)
    pulse(pics, 3)
    pulse(pics, 1)
    assert pics.acknowledge() == 0x09
    pics.master.write(CMD, 1, 0xA0)  # now IRQ 1 is the lowest: 2, 3, ..., 0, 1
    assert pics.acknowledge() == 0x0B
    pics.master.write(CMD, 1, 0xA0)
    assert pics.acknowledge() == 0x08


def test_set_priority_and_rotate_on_specific_eoi() -> None:
    pics, _ = bios_pics()
    unmask(pics, 0, 5, 6)
    pics.master.write(CMD, 1, 0xC5)  # set priority: IRQ 5 the lowest, IRQ 6 the highest
    assert pics.state()["master"]["priority_add"] == 6
    pulse(pics, 0)
    pulse(pics, 5)
    pulse(pics, 6)
    assert pics.acknowledge() == 0x0E
    pics.master.write(CMD, 1, 0xE6)  # rotate on specific EOI, IRQ 6: 7, 0, ..., 6
    assert pics.state()["master"]["isr"] == 0
    assert pics.state()["master"]["priority_add"] == 7
    assert pics.acknowledge() == 0x08
    pics.master.write(CMD, 1, 0x60)
    assert pics.acknowledge() == 0x0D


# -- special mask mode ---------------------------------------------------------------


def test_special_mask_mode_lets_lower_priorities_in() -> None:
    pics, _ = bios_pics()
    unmask(pics, 3, 5)
    pulse(pics, 3)
    assert pics.acknowledge() == 0x0B
    pics.master.write(DATA, 1, 0xFB & ~0x20 | 0x08)  # mask IRQ 3, the one in service
    pulse(pics, 5)
    assert pics.output is False  # normal mode: IRQ 3 in service still blocks IRQ 5
    pics.master.write(CMD, 1, 0x68)  # special mask mode: set
    assert pics.state()["master"]["special_mask"] == 1
    pics.master.write(DATA, 1, pics.master.read(DATA, 1))  # OCW1 re-evaluates
    assert pics.output is True
    assert pics.acknowledge() == 0x0D
    assert pics.state()["master"]["isr"] == 0x28
    pics.master.write(CMD, 1, 0x48)  # special mask mode: clear
    assert pics.state()["master"]["special_mask"] == 0


# -- spurious interrupts ---------------------------------------------------------------


def test_spurious_vectors() -> None:
    pics, _ = bios_pics()
    assert pics.acknowledge() == 0x0F  # master IRQ 7
    assert pics.state()["master"]["isr"] == 0
    # The slave's request withdrawn after it reached the master: slave IRQ 7.
    pics.elcr.write(1, 1, 0x02)  # IRQ 9 level-triggered
    unmask(pics, 9)
    pics.set_irq(9, True)
    assert pics.state()["master"]["irr"] == 0x04
    pics.set_irq(9, False)
    assert pics.state()["master"]["irr"] == 0x04  # the master's IRQ 2 is edge-latched
    assert pics.acknowledge() == 0x77
    assert pics.state()["slave"]["isr"] == 0
    assert pics.end_of_interrupt_for_vector(0x77) is None


# -- on_output ---------------------------------------------------------------------------


def test_on_output_called_only_on_changes() -> None:
    pics, outputs = bios_pics()
    assert outputs.levels == []  # initialize left INT low, as it was
    unmask(pics, 3, 4, 12)
    pics.set_irq(3, True)
    pics.set_irq(4, True)  # INT already high
    pics.set_irq(12, True)
    pics.master.write(DATA, 1, 0xE3)  # OCW1 again, INT stays high
    assert outputs.levels == [True]
    assert pics.acknowledge() == 0x74  # slave IRQ 12 (through IRQ 2) outranks IRQ 3: low
    assert outputs.levels == [True, False]
    pics.slave.write(CMD, 1, 0x20)  # the master's IRQ 2 still in service
    assert outputs.levels == [True, False]
    pics.master.write(CMD, 1, 0x20)
    assert outputs.levels == [True, False, True]
    assert pics.acknowledge() == 0x0B  # IRQ 4 still waits below IRQ 3
    assert outputs.levels == [True, False, True, False]
    pics.master.write(CMD, 1, 0x20)
    assert outputs.levels == [True, False, True, False, True]
    pics.initialize()
    assert outputs.levels == [True, False, True, False, True, False]


def test_on_output_from_icw1() -> None:
    pics, outputs = bios_pics()
    pics.elcr.write(0, 1, 0x10)
    pics.set_irq(4, True)  # level, masked
    assert outputs.levels == []
    pics.master.write(CMD, 1, 0x11)  # ICW1 unmasks everything
    assert outputs.levels == [True]


# -- end_of_interrupt_for_vector ---------------------------------------------------------


def test_end_of_interrupt_for_vector_master() -> None:
    pics, _ = bios_pics()
    unmask(pics, 0, 1)
    pulse(pics, 1)
    assert pics.acknowledge() == 0x09
    pulse(pics, 0)
    assert pics.acknowledge() == 0x08
    assert pics.end_of_interrupt_for_vector(0x09) == 1  # that IRQ, not the highest in service
    assert pics.state()["master"]["isr"] == 0x01
    assert pics.end_of_interrupt_for_vector(0x09) is None  # no longer in service
    assert pics.end_of_interrupt_for_vector(0x08) == 0
    assert pics.state()["master"]["isr"] == 0


def test_end_of_interrupt_for_vector_slave_ends_cascade() -> None:
    pics, _ = bios_pics()
    unmask(pics, 14)
    pulse(pics, 14)
    assert pics.acknowledge() == 0x76
    assert pics.end_of_interrupt_for_vector(0x76) == 14
    assert pics.state()["slave"]["isr"] == 0
    assert pics.state()["master"]["isr"] == 0
    pulse(pics, 14)
    assert pics.output is True


def test_end_of_interrupt_for_vector_exceptions_are_none() -> None:
    pics, _ = bios_pics()
    for vector in range(0x08, 0x10):  # #DF, #TS, #NP, #SS, #GP, #PF... with nothing in service
        assert pics.end_of_interrupt_for_vector(vector) is None
    for vector in (0x00, 0x21, 0x70, 0x77, 0xFF):
        assert pics.end_of_interrupt_for_vector(vector) is None
    unmask(pics, 0)
    pulse(pics, 0)
    pics.acknowledge()
    assert pics.end_of_interrupt_for_vector(0x0D) is None  # #GP while IRQ 0 is in service
    assert pics.state()["master"]["isr"] == 0x01


def test_state_shape() -> None:
    pics, _ = bios_pics()
    state = pics.state()
    assert set(state) == {"master", "slave"}
    for chip in state.values():
        assert {"irr", "imr", "isr", "irq_base", "elcr"} <= set(chip)
        assert all(isinstance(value, int) for value in chip.values())
