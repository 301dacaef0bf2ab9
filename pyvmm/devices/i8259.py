"""The PC's two cascaded programmable interrupt controllers, Intel 8259As, and their ELCR.

Intel 8259A datasheet (order 231468): "Interrupt Sequence", "Initialization
Command Words" (ICW1-ICW4), "Operation Command Words" (OCW1-OCW3), "Fully
Nested Mode", "End of Interrupt", "Automatic Rotation" and "Specific
Rotation", "Special Mask Mode", "Poll Command", "Reading the 8259A Status",
"Edge and Level Triggered Modes", "Special Fully Nested Mode" and "Cascade
Mode". The PC/AT wiring (IBM PC/AT Technical Reference, "Interrupts"): the
master at ports 0x20-0x21 serves ISA IRQs 0-7, the slave at 0xa0-0xa1 IRQs
8-15, and the slave's INT drives the master's IR2. The edge/level control
registers at 0x4d0-0x4d1 are the PIIX's (Intel 82371AB PIIX4 datasheet,
"ELCR1/ELCR2 - Edge/Level Control Registers"): IRQs 0, 1, 2, 8 and 13 are
always edge-triggered.

Behaviour follows QEMU's emulated PIC (hw/intc/i8259.c), register for
register: IRR, IMR, ISR, the edge detector's last input levels, the lowest
priority's rotation (`priority_add`: IRQ `priority_add` has the highest
priority), poll, special mask, auto-EOI, rotate on auto-EOI, special fully
nested mode (master only), and the ICW sequence's state. Its simplifications
are kept: ICW1's LTIM bit (level-triggered mode for the whole chip) is
ignored, the ELCR decides per IRQ; ICW3's cascade identity is not checked,
the slave sits on the master's IRQ 2; an ELCR write does not re-evaluate the
lines; a poll read answers on either port.

A pure state machine, no KVM: the machine wires `PicPair.set_irq` to its
IRQ lines, `PicPair.output` (or `on_output`) to the vCPU's INTR, and
`PicPair.acknowledge` to the interrupt-acknowledge cycle. Not thread safe:
the caller serializes every call (bus accesses, `set_irq`, `acknowledge`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable

MASTER_PORT = 0x20
SLAVE_PORT = 0xA0
PIC_PORT_SIZE = 2  # offset 0: command port, offset 1: data port
ELCR_PORT = 0x4D0
ELCR_PORT_SIZE = 2  # offset 0: the master's ELCR (IRQs 0-7), offset 1: the slave's (8-15)
CASCADE_IRQ = 2  # the master's input the slave's INT drives
SPURIOUS_IRQ = 7  # what an acknowledge with nothing pending reports
# PIIX4 ELCR1/ELCR2: the bits that can be set (IRQs 0, 1, 2, 8, 13 stay edge-triggered).
MASTER_ELCR_MASK = 0xF8
SLAVE_ELCR_MASK = 0xDE
# The state SeaBIOS leaves (src/hw/pic.h, as pyvmm/arch/x86_64/pic.py loads into KVM):
# vector bases BIOS_HWIRQ0_VECTOR and BIOS_HWIRQ8_VECTOR, everything masked but the cascade.
MASTER_VECTOR_BASE = 0x08
SLAVE_VECTOR_BASE = 0x70
MASTER_IMR = 0xFF & ~(1 << CASCADE_IRQ)
SLAVE_IMR = 0xFF

# Command port writes: ICW1 has bit 4 set; otherwise bits 4:3 are 00 for OCW2, 01 for OCW3.
ICW1 = 0x10
OCW3 = 0x08
# init_state: which ICW the data port expects next (0: none, data writes are OCW1).
_DONE, _ICW2, _ICW3, _ICW4 = 0, 1, 2, 3


def _priority(mask: int, priority_add: int) -> int:
    """Priority (0 highest .. 7 lowest) of the highest-priority bit in `mask`; 8 when empty."""
    if not mask:
        return 8
    priority = 0
    while not mask & (1 << ((priority + priority_add) & 7)):
        priority += 1
    return priority


class I8259:
    """One 8259A: its registers and its 2-byte bus window (command port, data port).

    `on_int(level)` is the INT pin: called with its level every time the chip
    re-evaluates it, repeats included (as QEMU's pic_update_irq raises or
    lowers its output each time); `output` holds the last level. Registers
    are 8-bit ints named as QEMU's PICCommonState (and KVM's struct
    kvm_pic_state). The power-on state is QEMU's reset: vector base 0,
    nothing masked, ELCR 0.
    """

    __slots__ = (
        "auto_eoi",
        "elcr",
        "elcr_mask",
        "imr",
        "init4",
        "init_state",
        "irq_base",
        "irr",
        "is_master",
        "isr",
        "last_irr",
        "on_int",
        "output",
        "poll",
        "priority_add",
        "read_reg_select",
        "rotate_on_auto_eoi",
        "single_mode",
        "special_fully_nested_mode",
        "special_mask",
    )

    def __init__(
        self,
        *,
        master: bool,
        on_int: Callable[[bool], None] | None = None,
        elcr_mask: int | None = None,
    ) -> None:
        self.is_master = master
        self.on_int = on_int
        if elcr_mask is None:
            elcr_mask = MASTER_ELCR_MASK if master else SLAVE_ELCR_MASK
        self.elcr_mask = elcr_mask
        self.elcr = 0
        self.output = False
        self.irr = 0
        self._reset_registers()

    def _reset_registers(self) -> None:
        """ICW1's reset (QEMU's pic_reset_common), without re-evaluating INT.

        IRR keeps only the level-triggered lines' bits; the ELCR is kept.
        """
        self.last_irr = 0
        self.irr &= self.elcr
        self.imr = 0
        self.isr = 0
        self.priority_add = 0
        self.irq_base = 0
        self.read_reg_select = 0
        self.poll = 0
        self.special_mask = 0
        self.init_state = _DONE
        self.auto_eoi = 0
        self.rotate_on_auto_eoi = 0
        self.special_fully_nested_mode = 0
        self.init4 = 0
        self.single_mode = 0

    # -- the interrupt logic ------------------------------------------------------

    def pending_irq(self) -> int | None:
        """The IRQ (0-7) the chip would interrupt for now, None if none.

        Datasheet "Fully Nested Mode" and "Special Mask Mode": the
        highest-priority unmasked request, if it outranks everything in
        service (in special mask mode, masked in-service IRQs don't count; in
        special fully nested mode the master ignores its cascade's ISR bit,
        so the slave's interrupts can nest).
        """
        priority = _priority(self.irr & ~self.imr & 0xFF, self.priority_add)
        if priority == 8:
            return None
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr
        if self.special_fully_nested_mode and self.is_master:
            in_service &= ~(1 << CASCADE_IRQ)
        if priority < _priority(in_service & 0xFF, self.priority_add):
            return (priority + self.priority_add) & 7
        return None

    def update(self) -> None:
        """Re-evaluate the INT pin and report it through `on_int`."""
        self.output = self.pending_irq() is not None
        if self.on_int is not None:
            self.on_int(self.output)

    def set_irq(self, irq: int, high: bool) -> None:
        """Input IR`irq` (0-7) at level `high` (datasheet "Edge and Level Triggered Modes").

        Edge-triggered (ELCR bit clear): a rising edge sets the IRR bit.
        Level-triggered: the IRR bit follows the line.
        """
        mask = 1 << irq
        if self.elcr & mask:
            if high:
                self.irr |= mask
                self.last_irr |= mask
            else:
                self.irr &= ~mask
                self.last_irr &= ~mask
        elif high:
            if not self.last_irr & mask:
                self.irr |= mask
            self.last_irr |= mask
        else:
            self.last_irr &= ~mask
        self.update()

    def intack(self, irq: int) -> None:
        """INTA for `irq` ("Interrupt Sequence"): ISR set unless auto-EOI; edge IRR bit cleared."""
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        if not self.elcr & (1 << irq):
            self.irr &= ~(1 << irq)
        self.update()

    def end_of_interrupt(self, irq: int | None = None) -> None:
        """An EOI ("End of Interrupt"): `irq`'s ISR bit (specific) or the highest one's (None)."""
        if irq is None:
            priority = _priority(self.isr, self.priority_add)
            if priority == 8:
                return
            irq = (priority + self.priority_add) & 7
        self.isr &= ~(1 << irq)
        self.update()

    def initialize(self, vector_base: int, mask: int) -> None:
        """The state ICW1 0x11, ICW2 `vector_base`, ICW3, ICW4 0x01 and OCW1 `mask` leave.

        As pyvmm/arch/x86_64/pic.py's `initialize_pic_state`: cascade mode,
        8086 mode, normal EOI, fixed priorities, command-port reads give
        IRR, the ELCR kept. INT is re-evaluated once, at the end.
        """
        self._reset_registers()
        self.irq_base = vector_base & 0xF8
        self.init4 = 1
        self.imr = mask & 0xFF
        self.update()

    # -- the bus --------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """Offset 0 (command port): IRR or ISR as OCW3 chose; offset 1 (data port): IMR.

        After a poll command (OCW3 bit 2) the next read, on either port,
        is the poll answer ("Poll Command"): 0x80 | IRQ, acknowledging it,
        or 0 with nothing pending. A read of `size` > 1 bytes returns the byte
        zero-extended.
        """
        if self.poll:
            self.poll = 0
            irq = self.pending_irq()
            if irq is None:
                return 0
            self.intack(irq)
            return 0x80 | irq
        if offset & 1:
            return self.imr
        return self.isr if self.read_reg_select else self.irr

    def write(self, offset: int, size: int, value: int) -> None:
        """Offset 0: ICW1, OCW2 or OCW3; offset 1: ICW2-ICW4 during initialization, else OCW1.

        Only the low byte of a wider write is used (the 8259A's bus is 8 bits).
        """
        value &= 0xFF
        if offset & 1:
            self._write_data(value)
        elif value & ICW1:
            self._reset_registers()
            self.update()  # QEMU's pic_init_reset: nothing masked, nothing in service
            self.init_state = _ICW2
            self.init4 = value & 1
            self.single_mode = (value >> 1) & 1
        elif value & OCW3:
            if value & 0x04:
                self.poll = 1
            if value & 0x02:
                self.read_reg_select = value & 1
            if value & 0x40:
                self.special_mask = (value >> 5) & 1
        else:
            self._write_ocw2(value)

    def _write_data(self, value: int) -> None:
        if self.init_state == _DONE:
            self.imr = value  # OCW1
            self.update()
        elif self.init_state == _ICW2:
            self.irq_base = value & 0xF8
            if not self.single_mode:
                self.init_state = _ICW3
            else:
                self.init_state = _ICW4 if self.init4 else _DONE
        elif self.init_state == _ICW3:
            self.init_state = _ICW4 if self.init4 else _DONE
        else:  # ICW4: bit 1 AEOI, bit 4 SFNM; 8086 mode and buffering are not modelled
            self.special_fully_nested_mode = (value >> 4) & 1
            self.auto_eoi = (value >> 1) & 1
            self.init_state = _DONE

    def _write_ocw2(self, value: int) -> None:
        """OCW2: bits 7-5 R, SL, EOI; bits 2-0 the IRQ for the specific commands."""
        command, irq = value >> 5, value & 7
        if command in (0, 4):  # rotate in automatic EOI mode: clear (000) / set (100)
            self.rotate_on_auto_eoi = command >> 2
        elif command in (1, 5):  # non-specific EOI (001), rotate on non-specific EOI (101)
            priority = _priority(self.isr, self.priority_add)
            if priority != 8:
                irq = (priority + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if command == 5:
                    self.priority_add = (irq + 1) & 7
                self.update()
        elif command == 3:  # specific EOI (011)
            self.isr &= ~(1 << irq)
            self.update()
        elif command == 6:  # set priority (110): `irq` becomes the lowest
            self.priority_add = (irq + 1) & 7
            self.update()
        elif command == 7:  # rotate on specific EOI (111)
            self.isr &= ~(1 << irq)
            self.priority_add = (irq + 1) & 7
            self.update()
        # 010: no operation

    def registers(self) -> dict[str, int]:
        """The chip's registers by QEMU's / KVM's field names, all ints."""
        return {
            "irr": self.irr,
            "imr": self.imr,
            "isr": self.isr,
            "irq_base": self.irq_base,
            "elcr": self.elcr,
            "elcr_mask": self.elcr_mask,
            "last_irr": self.last_irr,
            "priority_add": self.priority_add,
            "read_reg_select": self.read_reg_select,
            "poll": self.poll,
            "special_mask": self.special_mask,
            "init_state": self.init_state,
            "auto_eoi": self.auto_eoi,
            "rotate_on_auto_eoi": self.rotate_on_auto_eoi,
            "special_fully_nested_mode": self.special_fully_nested_mode,
            "init4": self.init4,
            "single_mode": self.single_mode,
            "output": int(self.output),
        }


class Elcr:
    """The PIIX's edge/level control registers, a 2-byte bus window at 0x4d0.

    Offset 0 is the master's ELCR (bit n: IRQ n level-triggered), offset 1
    the slave's (bit n: IRQ 8 + n). Writes keep only the settable bits
    (PIIX4 "ELCR1/ELCR2": 0xf8 and 0xde); the lines are not re-evaluated
    until they next change (as QEMU). Accesses use and return one byte, as
    the chips' ports do.
    """

    __slots__ = ("_chips",)

    def __init__(self, master: I8259, slave: I8259) -> None:
        self._chips = (master, slave)

    def read(self, offset: int, size: int) -> int:
        return self._chips[offset & 1].elcr

    def write(self, offset: int, size: int, value: int) -> None:
        chip = self._chips[offset & 1]
        chip.elcr = value & chip.elcr_mask


class PicPair:
    """The PC's master and slave 8259As, cascaded on the master's IRQ 2, and their ELCR.

    `master` (bus window at 0x20), `slave` (0xa0) and `elcr` (0x4d0) are the
    bus devices. `on_output(level)` is called whenever the master's INT pin
    changes level (from `set_irq`, a port write, `acknowledge`,
    `initialize`...), never for a repeat. The power-on state is QEMU's reset
    (vector bases 0, nothing masked); `initialize` gives a BIOS's. Not
    thread safe: the caller serializes every call.
    """

    __slots__ = ("_on_output", "_output", "elcr", "master", "slave")

    def __init__(self, on_output: Callable[[bool], None] | None = None) -> None:
        self._on_output = on_output
        self._output = False
        self.master = I8259(master=True, on_int=self._master_int)
        self.slave = I8259(master=False, on_int=self._slave_int)
        self.elcr = Elcr(self.master, self.slave)

    def _master_int(self, level: bool) -> None:
        if level != self._output:
            self._output = level
            if self._on_output is not None:
                self._on_output(level)

    def _slave_int(self, level: bool) -> None:
        self.master.set_irq(CASCADE_IRQ, level)

    @property
    def output(self) -> bool:
        """The master's INT pin: True when an interrupt waits for `acknowledge`."""
        return self._output

    def set_irq(self, irq: int, high: bool) -> None:
        """ISA IRQ `irq` (0-15; 8-15 on the slave) at level `high`.

        IRQ 2 is the cascade, driven by the slave alone: setting it does
        nothing. ValueError outside 0-15.
        """
        if not 0 <= irq < 16:
            raise ValueError(f"ISA IRQ {irq} is not 0-15")
        if irq == CASCADE_IRQ:
            return
        if irq < 8:
            self.master.set_irq(irq, high)
        else:
            self.slave.set_irq(irq - 8, high)

    def acknowledge(self) -> int:
        """The interrupt-acknowledge cycle ("Interrupt Sequence"): the vector (0-255) for the CPU.

        The master's highest-priority pending IRQ; for IRQ 2, the slave's
        (acknowledged on both chips). With nothing pending, the spurious IRQ 7
        of the chip asked: master base + 7, or slave base + 7 through the
        cascade; a spurious IRQ is not put in service.
        """
        irq = self.master.pending_irq()
        if irq is None:
            return self.master.irq_base + SPURIOUS_IRQ
        if irq == CASCADE_IRQ:
            slave_irq = self.slave.pending_irq()
            if slave_irq is None:
                slave_irq = SPURIOUS_IRQ
            else:
                self.slave.intack(slave_irq)
            vector = self.slave.irq_base + slave_irq
        else:
            vector = self.master.irq_base + irq
        self.master.intack(irq)
        return vector

    def initialize(
        self,
        master_base: int = MASTER_VECTOR_BASE,
        slave_base: int = SLAVE_VECTOR_BASE,
        master_mask: int = MASTER_IMR,
        slave_mask: int = SLAVE_IMR,
    ) -> None:
        """Both chips as a PC BIOS leaves them, without the guest writing ICWs.

        SeaBIOS's `pic_setup`, as pyvmm/arch/x86_64/pic.py BIOS_PICS: ICW1
        0x11, ICW2 `master_base` / `slave_base` (vector bases, low 3 bits
        dropped), ICW3, ICW4 0x01, OCW1 `master_mask` / `slave_mask` (bit n
        set: IRQ n masked). Nothing pending on edge lines or in service; the
        ELCR kept.
        """
        self.master._reset_registers()
        self.master.irq_base = master_base & 0xF8
        self.master.init4 = 1
        self.master.imr = master_mask & 0xFF
        self.slave.initialize(slave_base, slave_mask)  # feeds the master's IRQ 2, re-evaluates
        self.master.update()

    def end_of_interrupt_for_vector(self, vector: int) -> int | None:
        """If `vector` is an IRQ in service, end it and return its ISA IRQ (0-15); else None.

        The contract of pyvmm/arch/x86_64/pic.py `acknowledge_irq_vector`, on
        this model: what a BIOS's default IRQ handler does, an EOI for that
        IRQ on its chip and, for a slave IRQ, for the cascade on the master.
        None when no chip has `vector` in service (datasheet "In-Service
        Register"): on a PC, vectors 0x08-0x0f are also CPU exceptions.
        """
        for chip, first in ((self.master, 0), (self.slave, 8)):
            irq = vector - chip.irq_base
            if 0 <= irq < 8 and chip.isr & (1 << irq):
                chip.end_of_interrupt(irq)
                if chip is self.slave:
                    self.master.end_of_interrupt(CASCADE_IRQ)
                return first + irq
        return None

    def state(self) -> dict[str, dict[str, int]]:
        """{"master": registers, "slave": registers}: each chip's `I8259.registers()`.

        At least irr, imr, isr, irq_base and elcr (8-bit ints), for a
        monitor's "info pic".
        """
        return {"master": self.master.registers(), "slave": self.slave.registers()}
