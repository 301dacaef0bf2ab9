"""A 16550A UART, the PC's COM port, as a pure state machine.

Registers and bits follow the National Semiconductor / Texas Instruments
PC16550D datasheet ("PC16550D Universal Asynchronous Receiver/Transmitter with
FIFOs", TI literature number SNLS378); bit constants take the names of Linux's
include/uapi/linux/serial_reg.h, which is what guest drivers are written
against. The model follows rust-vmm's vm-superio `Serial` and Firecracker's
legacy serial port, and is checked against what Linux's 8250 driver
(drivers/tty/serial/8250/8250_port.c) probes: the IER and loopback tests of
`autoconfig`, the FIFO bits of IIR, the FIFO depth measured by `size_fifo` and
the THRE re-assert test of `serial8250_do_startup`.

The device knows nothing of KVM, ports or threads: the bus hands it offsets
0..7 from its base, transmitted bytes go to an `output` callable, received
bytes come in through `enqueue_input`, and it drives an `IrqLine` level.
Transmission is instantaneous, so THR is always empty and the modem inputs
are those of a ready terminal (CTS, DSR and DCD asserted).

The line has no speed either way, which decides the receive interrupts in FIFO
mode (PC16550D, "FIFO Interrupt Mode Operation"): received data available
(IIR 0x04) while the FIFO holds at least the trigger level (FCR bits 6-7: 1, 4,
8 or 14 characters), the character timeout indication (IIR 0x0C) while it
holds fewer. The chip waits 4 character times without a character received or
read before it indicates the timeout; at no line speed those have always
passed by the time the guest can look, so the indication is pending at once.
QEMU (hw/char/serial.c) gives the same indication after 4 character times at
the programmed baud rate. Outside FIFO mode every character is data available.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from pyvmm.devices.irq import IrqLine, NoIrq

# Register offsets from the base (PC16550D register summary). Offsets 0 and 1 are the
# divisor latch while LCR.DLAB is set; offset 2 reads IIR and writes FCR.
RBR = 0  # receiver buffer (read)
THR = 0  # transmitter holding register (write)
DLL = 0  # divisor latch, low byte (DLAB=1)
IER = 1  # interrupt enable
DLM = 1  # divisor latch, high byte (DLAB=1)
IIR = 2  # interrupt identification (read)
FCR = 2  # FIFO control (write)
LCR = 3  # line control
MCR = 4  # modem control
LSR = 5  # line status
MSR = 6  # modem status
SCR = 7  # scratch
REGISTER_COUNT = 8

# IER: which conditions may interrupt. Bits 4-7 read as 0 on a 16550A; Linux
# writes them to detect XScale and other variants, so they must not stick.
IER_RDI = 0x01  # received data available (ERBFI)
IER_THRI = 0x02  # transmitter holding register empty (ETBEI)
IER_RLSI = 0x04  # receiver line status (ELSI)
IER_MSI = 0x08  # modem status (EDSSI)
IER_MASK = 0x0F

# IIR: bit 0 is "no interrupt pending", bits 1-3 the highest-priority source,
# bits 6-7 are set while the FIFOs are enabled (both set = 16550A, not 16550).
IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_RX_TIMEOUT = 0x0C  # character timeout indication (FIFO mode only)
IIR_FIFO_BITS = 0xC0

FCR_ENABLE_FIFO = 0x01
FCR_CLEAR_RCVR = 0x02
FCR_CLEAR_XMIT = 0x04
FCR_TRIGGER_MASK = 0xC0  # the receiver FIFO trigger level, bits 6-7
# FCR bits 6-7 -> the trigger level in characters (PC16550D, FCR).
RX_TRIGGER_LEVELS = {0x00: 1, 0x40: 4, 0x80: 8, 0xC0: 14}

LCR_DLAB = 0x80  # divisor latch access bit

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08  # on a PC, gates the UART's interrupt onto the ISA IRQ line
MCR_LOOP = 0x10
MCR_MASK = 0x1F  # bits 5-7 read as 0 on a 16550A

LSR_DR = 0x01  # data ready
LSR_OE = 0x02  # overrun error
LSR_PE = 0x04  # parity error (never raised: no line noise here)
LSR_FE = 0x08  # framing error (never raised)
LSR_BI = 0x10  # break interrupt (never raised)
LSR_THRE = 0x20  # transmitter holding register empty
LSR_TEMT = 0x40  # transmitter empty
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI  # the receiver line status interrupt's sources

MSR_DCTS = 0x01  # delta CTS
MSR_DDSR = 0x02  # delta DSR
MSR_TERI = 0x04  # trailing edge of RI (RI went from on to off)
MSR_DDCD = 0x08  # delta DCD
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
MSR_DELTA_MASK = 0x0F

# The baud rate is the 1.8432 MHz crystal of a PC divided by 16 and the divisor.
BAUD_BASE = 115_200
# Divisor at power-on: 12 = 9600 baud, as vm-superio uses (the real chip's
# latch is undefined until programmed).
DEFAULT_DIVISOR = 12
# OUT2 set at reset (a real chip clears MCR): the same choice as vm-superio,
# so that a minimal guest driver which only enables interrupts in IER, and
# never writes MCR, still has them delivered when the VM has an irqchip.
# Linux programs MCR itself, so it is unaffected.
DEFAULT_MCR = MCR_OUT2
# Modem inputs outside loopback: a terminal that is connected and ready.
DEFAULT_MODEM_INPUTS = MSR_DCD | MSR_DSR | MSR_CTS

# The 16550's FIFO depth. Loopback must honour it: drivers measure the FIFO by
# looping bytes back (Linux's size_fifo calls a chip that holds 64 a
# "U6_16550A", not a 16550A).
HARDWARE_FIFO_SIZE = 16
# Host input gets a deeper buffer than the chip's 16 bytes so that a burst
# (a paste) is not cut short while the guest is slow to drain it; it is
# bounded so that a guest which never reads cannot make the VMM hold
# unbounded memory. `enqueue_input` says how much it took, so the caller
# can keep the rest and retry instead of losing it.
RX_FIFO_CAPACITY = 64


def _loopback_modem_inputs(mcr: int) -> int:
    """In loopback the modem outputs feed the inputs (PC16550D, MCR bit 4)."""
    inputs = 0
    if mcr & MCR_DTR:
        inputs |= MSR_DSR
    if mcr & MCR_RTS:
        inputs |= MSR_CTS
    if mcr & MCR_OUT1:
        inputs |= MSR_RI
    if mcr & MCR_OUT2:
        inputs |= MSR_DCD
    return inputs


class Serial16550:
    """A 16550A UART seen through its eight byte-wide registers."""

    def __init__(self, output: Callable[[bytes], None], irq: IrqLine | None = None) -> None:
        self._output = output
        self._irq: IrqLine = irq if irq is not None else NoIrq()
        self._irq_level = False
        self._rx: deque[int] = deque()
        self.reset()

    def reset(self) -> None:
        """Power-on state (with the two documented departures: divisor and MCR)."""
        self._ier = 0
        self._lcr = 0
        self._mcr = DEFAULT_MCR
        self._scr = 0
        self._divisor = DEFAULT_DIVISOR
        self._fifo_enabled = False
        self._rx_trigger = 1
        self._lsr_errors = 0
        self._msr_deltas = 0
        # THR-empty is an event, not a level: it is pending from the moment THR
        # empties (or THRI is enabled while it is empty) until IIR reports it.
        self._thri_pending = False
        self._rx.clear()
        self._update_irq()

    # -- the bus interface -------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """Read `size` byte registers from `offset` up, assembled little-endian."""
        value = 0
        for index in range(size):
            value |= self._read_byte(offset + index) << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Write `size` byte registers from `offset` up, low byte first, as an ISA bus does."""
        for index in range(size):
            self._write_byte(offset + index, (value >> (8 * index)) & 0xFF)

    # -- the host side -----------------------------------------------------

    def enqueue_input(self, data: bytes) -> int:
        """Receive `data` from the line; returns how many bytes fit in the FIFO.

        Bytes that do not fit are lost to the guest as on a real chip, which
        flags an overrun (LSR.OE); a caller that wants no loss enqueues at most
        `input_space` bytes. In loopback the line input is disconnected from
        the receiver, so nothing is taken.
        """
        if not data or self._mcr & MCR_LOOP:
            return 0
        accepted = min(len(data), self.input_space)
        self._rx.extend(data[:accepted])
        if accepted < len(data):
            self._lsr_errors |= LSR_OE
        self._update_irq()
        return accepted

    @property
    def input_space(self) -> int:
        """How many received bytes `enqueue_input` can take now without overrun."""
        if self._mcr & MCR_LOOP:
            return 0
        return RX_FIFO_CAPACITY - len(self._rx)

    @property
    def divisor(self) -> int:
        """The divisor latch, DLM:DLL."""
        return self._divisor

    @property
    def baud_rate(self) -> int:
        """The programmed line speed; 0 for divisor 0, which a real chip leaves undefined."""
        return BAUD_BASE // self._divisor if self._divisor else 0

    @property
    def rx_trigger(self) -> int:
        """The receiver FIFO trigger level in characters (FCR bits 6-7)."""
        return self._rx_trigger

    @property
    def irq_level(self) -> bool:
        """The level last driven on the interrupt line."""
        return self._irq_level

    # -- registers ---------------------------------------------------------

    def _read_byte(self, offset: int) -> int:
        dlab = self._lcr & LCR_DLAB
        if offset == RBR:
            return self._divisor & 0xFF if dlab else self._read_rbr()
        if offset == IER:
            return self._divisor >> 8 if dlab else self._ier
        if offset == IIR:
            return self._read_iir()
        if offset == LCR:
            return self._lcr
        if offset == MCR:
            return self._mcr
        if offset == LSR:
            return self._read_lsr()
        if offset == MSR:
            return self._read_msr()
        if offset == SCR:
            return self._scr
        return 0xFF  # past the device: a floating ISA bus reads all ones

    def _write_byte(self, offset: int, value: int) -> None:
        dlab = self._lcr & LCR_DLAB
        if offset == THR:
            if dlab:
                self._divisor = (self._divisor & 0xFF00) | value
            else:
                self._transmit(value)
        elif offset == IER:
            if dlab:
                self._divisor = (value << 8) | (self._divisor & 0xFF)
            else:
                self._write_ier(value)
        elif offset == FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self._lcr = value
        elif offset == MCR:
            self._write_mcr(value)
        elif offset == SCR:
            self._scr = value
        # LSR and MSR writes are for factory testing only; the chip's behaviour
        # is undefined and QEMU and vm-superio ignore them, as does this model.
        # Offsets past 7 are not ours.

    def _read_rbr(self) -> int:
        # An empty FIFO reads 0, as in QEMU's FIFO mode and vm-superio.
        value = self._rx.popleft() if self._rx else 0
        self._update_irq()
        return value

    def _read_iir(self) -> int:
        pending = self._pending_interrupt()
        if pending == IIR_THRI:
            # Reading IIR while it reports THR empty acknowledges that interrupt.
            self._thri_pending = False
            self._update_irq()
        return pending | (IIR_FIFO_BITS if self._fifo_enabled else 0)

    def _read_lsr(self) -> int:
        value = self._lsr_errors | LSR_THRE | LSR_TEMT
        if self._rx:
            value |= LSR_DR
        # The error bits, and with them the line status interrupt, clear on read.
        self._lsr_errors = 0
        self._update_irq()
        return value

    def _read_msr(self) -> int:
        value = self._modem_inputs() | self._msr_deltas
        self._msr_deltas = 0
        self._update_irq()
        return value

    def _transmit(self, value: int) -> None:
        if self._mcr & MCR_LOOP:
            self._loop_back(value)
        else:
            self._output(bytes((value,)))
        # The byte leaves at once, so THR is empty again straight away.
        if self._ier & IER_THRI:
            self._thri_pending = True
        self._update_irq()

    def _loop_back(self, value: int) -> None:
        if len(self._rx) < HARDWARE_FIFO_SIZE:
            self._rx.append(value)
        else:
            self._lsr_errors |= LSR_OE

    def _write_ier(self, value: int) -> None:
        value &= IER_MASK
        enabling_thri = bool(value & IER_THRI) and not self._ier & IER_THRI
        self._ier = value
        if not value & IER_THRI:
            self._thri_pending = False
        elif enabling_thri:
            # Enabling THRI while THR is empty (always, here) raises the
            # interrupt at once. Linux's startup THRE test toggles IER to 0 and
            # back and expects it to re-assert; like QEMU and Bochs this fires
            # on the rising edge of the bit.
            self._thri_pending = True
        self._update_irq()

    def _write_fcr(self, value: int) -> None:
        enable = bool(value & FCR_ENABLE_FIFO)
        # Switching the FIFOs on or off empties them (PC16550D, FCR bit 0).
        # The clear bits are honoured even without bit 0 in the same write, as
        # QEMU does; Linux always sets bit 0 with them anyway.
        if value & FCR_CLEAR_RCVR or enable != self._fifo_enabled:
            self._rx.clear()
        # FCR_CLEAR_XMIT has nothing to do: bytes leave as soon as written.
        self._rx_trigger = RX_TRIGGER_LEVELS[value & FCR_TRIGGER_MASK]
        self._fifo_enabled = enable
        self._update_irq()

    def _write_mcr(self, value: int) -> None:
        before = self._modem_inputs()
        self._mcr = value & MCR_MASK
        after = self._modem_inputs()
        changed = before ^ after
        if changed & MSR_CTS:
            self._msr_deltas |= MSR_DCTS
        if changed & MSR_DSR:
            self._msr_deltas |= MSR_DDSR
        if changed & MSR_DCD:
            self._msr_deltas |= MSR_DDCD
        if before & MSR_RI and not after & MSR_RI:
            self._msr_deltas |= MSR_TERI
        self._update_irq()

    # -- interrupts --------------------------------------------------------

    def _modem_inputs(self) -> int:
        if self._mcr & MCR_LOOP:
            return _loopback_modem_inputs(self._mcr)
        return DEFAULT_MODEM_INPUTS

    def _pending_interrupt(self) -> int:
        """The IIR code of the highest-priority pending interrupt (PC16550D IIR priorities)."""
        if self._ier & IER_RLSI and self._lsr_errors:
            return IIR_RLSI
        if self._ier & IER_RDI and self._rx:
            if not self._fifo_enabled or len(self._rx) >= self._rx_trigger:
                return IIR_RDI
            return IIR_RX_TIMEOUT  # below the trigger level: see the module's docstring
        if self._ier & IER_THRI and self._thri_pending:
            return IIR_THRI
        if self._ier & IER_MSI and self._msr_deltas:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        # A PC wires the UART's interrupt to the ISA bus through OUT2. Loopback
        # forces the modem outputs, OUT2 among them, inactive on the pins, so
        # the line stays low there even though IIR still reports interrupts.
        routed = self._mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2
        level = routed and self._pending_interrupt() != IIR_NO_INT
        if level != self._irq_level:
            self._irq_level = level
            self._irq.set_level(level)
