"""The 16550A model against the datasheet and what Linux's 8250 driver probes."""

from __future__ import annotations

import pytest

from pyvmm.devices.irq import NoIrq
from pyvmm.devices.serial import (
    DLL,
    DLM,
    FCR,
    FCR_CLEAR_RCVR,
    FCR_ENABLE_FIFO,
    HARDWARE_FIFO_SIZE,
    IER,
    IER_MSI,
    IER_RDI,
    IER_RLSI,
    IER_THRI,
    IIR,
    IIR_FIFO_BITS,
    IIR_MSI,
    IIR_NO_INT,
    IIR_RDI,
    IIR_RLSI,
    IIR_RX_TIMEOUT,
    IIR_THRI,
    LCR,
    LCR_DLAB,
    LSR,
    LSR_DR,
    LSR_OE,
    LSR_TEMT,
    LSR_THRE,
    MCR,
    MCR_DTR,
    MCR_LOOP,
    MCR_OUT1,
    MCR_OUT2,
    MCR_RTS,
    MSR,
    MSR_CTS,
    MSR_DCD,
    MSR_DCTS,
    MSR_DDCD,
    MSR_DDSR,
    MSR_DSR,
    MSR_RI,
    MSR_TERI,
    RBR,
    RX_FIFO_CAPACITY,
    SCR,
    THR,
    Serial16550,
)


class RecordingIrq:
    """An IrqLine that remembers every level it was driven to."""

    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, high: bool) -> None:
        self.levels.append(high)

    @property
    def high(self) -> bool:
        return bool(self.levels) and self.levels[-1]


class Uart:
    """A UART with its output and interrupt line captured, plus byte accessors."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.irq = RecordingIrq()
        self.device = Serial16550(self.chunks.append, self.irq)

    @property
    def output(self) -> bytes:
        return b"".join(self.chunks)

    def inb(self, offset: int) -> int:
        return self.device.read(offset, 1)

    def outb(self, offset: int, value: int) -> None:
        self.device.write(offset, 1, value)


@pytest.fixture
def uart() -> Uart:
    return Uart()


def test_reset_state(uart: Uart) -> None:
    registers = {offset: uart.inb(offset) for offset in (IER, IIR, LCR, MCR, LSR, MSR, SCR)}
    assert registers == {
        IER: 0x00,
        IIR: IIR_NO_INT,
        LCR: 0x00,
        MCR: MCR_OUT2,
        LSR: LSR_THRE | LSR_TEMT,
        MSR: MSR_DCD | MSR_DSR | MSR_CTS,
        SCR: 0x00,
    }
    assert (uart.device.divisor, uart.device.baud_rate) == (12, 9600)
    assert uart.irq.levels == []  # nothing pending: the line was never raised


def test_thr_writes_go_to_the_output_one_byte_each(uart: Uart) -> None:
    for byte in b"Hi\n":
        uart.outb(THR, byte)
        # Transmission is instant: THR and the shift register are empty again.
        assert uart.inb(LSR) == LSR_THRE | LSR_TEMT
    assert uart.chunks == [b"H", b"i", b"\n"]
    assert uart.inb(RBR) == 0  # nothing was received


def test_the_device_works_without_an_irq_line() -> None:
    chunks: list[bytes] = []
    device = Serial16550(chunks.append)
    device.write(IER, 1, IER_THRI)
    device.write(THR, 1, ord("x"))
    assert chunks == [b"x"]
    assert device.irq_level
    assert device.read(IIR, 1) == IIR_THRI
    assert not device.irq_level
    NoIrq().set_level(True)  # accepted and ignored


def test_linux_8250_autoconfig_sees_a_16550a(uart: Uart) -> None:
    # The existence test: IER holds exactly its low nibble.
    saved_ier = uart.inb(IER)
    uart.outb(IER, 0)
    assert uart.inb(IER) & 0x0F == 0
    uart.outb(IER, 0x0F)
    assert uart.inb(IER) & 0x0F == 0x0F
    uart.outb(IER, saved_ier)

    # The loopback test: MCR = LOOP | RTS | OUT2 must read back as CTS | DCD.
    saved_mcr = uart.inb(MCR)
    saved_lcr = uart.inb(LCR)
    uart.outb(MCR, MCR_LOOP | 0x0A)
    assert uart.inb(MSR) & 0xF0 == 0x90
    uart.outb(MCR, saved_mcr)

    # Clear a would-be EFR (with LCR=0xBF offset 2 is FCR here), then enable
    # the FIFOs: IIR bits 7:6 == 0b11 is what makes Linux call it a 16550A.
    uart.outb(LCR, 0xBF)
    uart.outb(FCR, 0)
    uart.outb(LCR, 0)
    uart.outb(FCR, FCR_ENABLE_FIFO)
    iir = uart.inb(IIR)
    assert iir == 0xC1
    assert iir >> 6 == 3

    # autoconfig_16550a: no EFR behind offset 2 with LCR=0x80 or 0xBF...
    uart.outb(LCR, 0x80)
    assert uart.inb(2) != 0
    uart.outb(LCR, 0xBF)
    assert uart.inb(2) != 0
    # ...no National SuperIO EXCR1 mirroring MCR.LOOP at offset 2 with LCR=0xE0...
    uart.outb(LCR, 0)
    mcr = uart.inb(MCR)
    uart.outb(LCR, 0xE0)
    assert not (uart.inb(2) ^ mcr) & MCR_LOOP
    uart.outb(LCR, 0)
    uart.outb(MCR, mcr ^ MCR_LOOP)
    uart.outb(LCR, 0xE0)
    assert not (uart.inb(2) ^ mcr) & MCR_LOOP
    uart.outb(LCR, 0)
    uart.outb(MCR, mcr)
    # ...no TI16750 64-byte FIFO bit (IIR bit 5) with or without DLAB...
    uart.outb(FCR, FCR_ENABLE_FIFO | 0x20)
    status1 = uart.inb(IIR) >> 5
    uart.outb(FCR, FCR_ENABLE_FIFO)
    uart.outb(LCR, LCR_DLAB)
    uart.outb(FCR, FCR_ENABLE_FIFO | 0x20)
    status2 = uart.inb(IIR) >> 5
    uart.outb(FCR, FCR_ENABLE_FIFO)
    uart.outb(LCR, 0)
    assert (status1, status2) == (6, 6)
    # ...and no XScale UUE bit (IER bit 6).
    uart.outb(IER, 0x40)
    assert uart.inb(IER) & 0x40 == 0
    uart.outb(IER, 0)

    # The scratch register test (autoconfig_8250) passes too.
    uart.outb(SCR, 0xA5)
    assert uart.inb(SCR) == 0xA5
    uart.outb(SCR, 0x5A)
    assert uart.inb(SCR) == 0x5A

    uart.outb(LCR, saved_lcr)
    assert uart.output == b""  # probing never printed anything


def test_linux_size_fifo_counts_16_bytes(uart: Uart) -> None:
    # size_fifo() loops 256 bytes back and counts what arrives; 64 would make
    # Linux call the chip a U6_16550A instead of a 16550A.
    uart.outb(FCR, FCR_ENABLE_FIFO | FCR_CLEAR_RCVR | 0x04)
    uart.outb(MCR, MCR_LOOP)
    uart.outb(LCR, LCR_DLAB)
    uart.outb(DLL, 1)
    uart.outb(DLM, 0)
    uart.outb(LCR, 0x03)
    for byte in range(256):
        uart.outb(THR, byte)
    count = 0
    received = []
    while uart.inb(LSR) & LSR_DR and count < 256:
        received.append(uart.inb(RBR))
        count += 1
    assert count == HARDWARE_FIFO_SIZE == 16
    assert received == list(range(16))
    assert uart.output == b""


def test_divisor_latch_programming_for_115200(uart: Uart) -> None:
    uart.outb(IER, IER_RDI)
    uart.outb(LCR, LCR_DLAB)
    uart.outb(DLL, 1)
    uart.outb(DLM, 0)
    # With DLAB set, offsets 0 and 1 are the latch, not THR and IER.
    assert (uart.inb(DLL), uart.inb(DLM)) == (1, 0)
    assert uart.output == b""
    uart.outb(LCR, 0x03)  # 8N1, DLAB off
    assert uart.inb(LCR) == 0x03
    assert uart.inb(IER) == IER_RDI
    assert (uart.device.divisor, uart.device.baud_rate) == (1, 115200)
    uart.outb(THR, ord("A"))
    assert uart.output == b"A"


def test_divisor_uses_both_latch_bytes(uart: Uart) -> None:
    uart.outb(LCR, LCR_DLAB)
    uart.outb(DLM, 0x01)
    uart.outb(DLL, 0x80)
    assert uart.device.divisor == 0x180
    assert uart.device.baud_rate == 300
    uart.outb(DLM, 0)
    uart.outb(DLL, 0)
    assert uart.device.baud_rate == 0  # undefined on the chip; no crash here


@pytest.mark.parametrize(
    ("mcr", "msr"),
    [
        (MCR_DTR, MSR_DSR),
        (MCR_RTS, MSR_CTS),
        (MCR_OUT1, MSR_RI),
        (MCR_OUT2, MSR_DCD),
        (MCR_DTR | MCR_RTS | MCR_OUT1 | MCR_OUT2, 0xF0),
        (0, 0x00),
    ],
)
def test_loopback_maps_modem_outputs_to_inputs(uart: Uart, mcr: int, msr: int) -> None:
    uart.outb(MCR, MCR_LOOP | mcr)
    assert uart.inb(MSR) & 0xF0 == msr


def test_loopback_returns_transmitted_bytes(uart: Uart) -> None:
    uart.outb(MCR, 0x1A)  # LOOP | OUT2 | RTS
    uart.outb(THR, ord("o"))
    uart.outb(THR, ord("k"))
    assert uart.output == b""
    assert uart.inb(LSR) & LSR_DR
    assert bytes([uart.inb(RBR), uart.inb(RBR)]) == b"ok"
    assert not uart.inb(LSR) & LSR_DR
    # Host input is cut off while the line is looped back; the caller keeps it.
    assert uart.device.input_space == 0
    assert uart.device.enqueue_input(b"kept") == 0
    assert uart.inb(LSR) == LSR_THRE | LSR_TEMT  # nothing arrived, so no overrun either

    uart.outb(MCR, MCR_OUT2)
    assert uart.inb(MSR) & 0xF0 == 0xB0
    uart.outb(THR, ord("!"))
    assert uart.output == b"!"
    assert uart.device.enqueue_input(b"in") == 2


def test_loopback_overrun(uart: Uart) -> None:
    uart.outb(MCR, MCR_LOOP)
    for byte in range(HARDWARE_FIFO_SIZE + 1):
        uart.outb(THR, byte)
    assert uart.inb(LSR) == LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT
    assert uart.inb(LSR) == LSR_DR | LSR_THRE | LSR_TEMT


def test_msr_delta_bits_and_their_clearing(uart: Uart) -> None:
    # Entering loopback drops CTS, DSR and DCD (no outputs set besides LOOP).
    uart.outb(MCR, MCR_LOOP)
    assert uart.inb(MSR) == MSR_DCTS | MSR_DDSR | MSR_DDCD
    assert uart.inb(MSR) == 0  # deltas clear on read
    # RI only reports its trailing edge.
    uart.outb(MCR, MCR_LOOP | MCR_OUT1)
    assert uart.inb(MSR) == MSR_RI
    uart.outb(MCR, MCR_LOOP)
    assert uart.inb(MSR) == MSR_TERI
    assert uart.inb(MSR) == 0
    # Deltas accumulate until read, even if the line goes back.
    uart.outb(MCR, MCR_LOOP | MCR_RTS)
    uart.outb(MCR, MCR_LOOP)
    assert uart.inb(MSR) == MSR_DCTS
    # Leaving loopback restores the terminal's lines, and says so.
    uart.outb(MCR, MCR_OUT2)
    assert uart.inb(MSR) == MSR_DCD | MSR_DSR | MSR_CTS | MSR_DCTS | MSR_DDSR | MSR_DDCD
    assert uart.inb(MSR) == MSR_DCD | MSR_DSR | MSR_CTS


def test_enabling_thri_raises_it_and_reading_iir_clears_it(uart: Uart) -> None:
    uart.outb(IER, IER_THRI)
    assert uart.irq.high
    assert uart.inb(IIR) == IIR_THRI
    assert not uart.irq.high
    assert uart.inb(IIR) == IIR_NO_INT
    # Writing THR empties it again at once: a fresh THRE interrupt.
    uart.outb(THR, ord("a"))
    assert uart.irq.high
    assert uart.inb(IIR) == IIR_THRI
    assert uart.inb(IIR) == IIR_NO_INT
    assert uart.irq.levels == [True, False, True, False]
    # Disabling THRI withdraws a pending one.
    uart.outb(THR, ord("b"))
    uart.outb(IER, 0)
    assert not uart.irq.high
    assert uart.inb(IIR) == IIR_NO_INT


def test_thr_write_without_thri_enabled_raises_nothing(uart: Uart) -> None:
    uart.outb(THR, ord("a"))
    assert uart.inb(IIR) == IIR_NO_INT
    assert uart.irq.levels == []
    # Writing IER again with THRI still set is not a new rising edge.
    uart.outb(IER, IER_THRI)
    assert uart.inb(IIR) == IIR_THRI
    uart.outb(IER, IER_THRI | IER_RDI)
    assert uart.inb(IIR) == IIR_NO_INT


def test_linux_thre_reassert_test_finds_no_bug(uart: Uart) -> None:
    # serial8250_do_startup: set IER.THRI, read IIR, IER=0, set THRI again,
    # read IIR. A UART whose second read shows no interrupt is flagged buggy.
    uart.outb(IER, IER_THRI)
    iir1 = uart.inb(IIR)
    uart.outb(IER, 0)
    uart.outb(IER, IER_THRI)
    iir = uart.inb(IIR)
    uart.outb(IER, 0)
    assert not iir1 & IIR_NO_INT
    assert not iir & IIR_NO_INT
    # The TXEN test that follows: THRI enabled with TEMT set must interrupt.
    uart.outb(IER, IER_THRI)
    lsr = uart.inb(LSR)
    iir = uart.inb(IIR)
    uart.outb(IER, 0)
    assert lsr & LSR_TEMT
    assert not iir & IIR_NO_INT


def test_linux_autoconfig_irq_probe_raises_the_line(uart: Uart) -> None:
    uart.outb(MCR, MCR_DTR | MCR_RTS | MCR_OUT2)
    uart.outb(IER, 0x0F)
    for offset in (LSR, RBR, IIR, MSR):
        uart.inb(offset)
    assert not uart.irq.high
    uart.outb(THR, 0xFF)
    assert uart.irq.high


def test_interrupt_priorities(uart: Uart) -> None:
    # A modem status change, via a round trip through loopback.
    uart.outb(MCR, MCR_LOOP | MCR_OUT2)
    uart.outb(MCR, MCR_OUT2)
    uart.outb(FCR, FCR_ENABLE_FIFO)
    uart.outb(IER, IER_RDI | IER_THRI | IER_RLSI | IER_MSI)
    # More input than fits: data available and an overrun.
    assert uart.device.enqueue_input(bytes(RX_FIFO_CAPACITY + 1)) == RX_FIFO_CAPACITY
    assert uart.irq.high

    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_RLSI
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_RLSI  # until LSR is read
    assert uart.inb(LSR) == LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_RDI
    for _ in range(RX_FIFO_CAPACITY):
        uart.inb(RBR)
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_THRI
    assert uart.irq.high
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_MSI
    assert uart.irq.high
    uart.inb(MSR)
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_NO_INT
    assert not uart.irq.high
    assert uart.irq.levels == [True, False]  # one edge each way, no repeats


def test_receive_interrupt_outranks_thre(uart: Uart) -> None:
    uart.outb(IER, IER_THRI | IER_RDI)
    uart.device.enqueue_input(b"x")
    assert uart.inb(IIR) == IIR_RDI
    assert uart.inb(IIR) == IIR_RDI  # reading IIR does not take THRE's turn away
    uart.inb(RBR)
    assert uart.inb(IIR) == IIR_THRI
    assert uart.inb(IIR) == IIR_NO_INT


def test_out2_gates_the_interrupt_line(uart: Uart) -> None:
    uart.outb(MCR, 0)
    uart.outb(IER, IER_RDI)
    uart.device.enqueue_input(b"k")
    assert uart.inb(IIR) == IIR_RDI  # pending in the chip...
    assert not uart.irq.high  # ...but not routed to the PC's IRQ line
    uart.outb(MCR, MCR_OUT2)
    assert uart.irq.high
    uart.outb(MCR, MCR_OUT2 | MCR_DTR | MCR_RTS)
    assert uart.irq.high
    uart.outb(MCR, MCR_OUT2)
    uart.outb(MCR, MCR_OUT2 | MCR_LOOP)  # loopback disconnects OUT2 from its pin
    assert not uart.irq.high
    uart.outb(MCR, MCR_OUT2)
    assert uart.irq.high
    uart.inb(RBR)
    assert not uart.irq.high
    assert uart.irq.levels == [True, False, True, False]


def test_receive_path(uart: Uart) -> None:
    assert uart.device.enqueue_input(b"") == 0
    assert uart.device.enqueue_input(b"hi") == 2
    assert uart.inb(LSR) & LSR_DR
    assert uart.inb(IIR) == IIR_NO_INT  # data, but its interrupt is not enabled
    assert not uart.irq.high
    uart.outb(IER, IER_RDI)
    assert uart.inb(IIR) == IIR_RDI
    assert uart.irq.high
    assert uart.inb(RBR) == ord("h")
    assert uart.irq.high
    assert uart.inb(RBR) == ord("i")
    assert not uart.inb(LSR) & LSR_DR
    assert uart.inb(IIR) == IIR_NO_INT
    assert not uart.irq.high
    assert uart.inb(RBR) == 0  # empty


def test_receive_fifo_bound_and_overrun(uart: Uart) -> None:
    assert uart.device.input_space == RX_FIFO_CAPACITY == 64
    data = bytes(range(100))
    assert uart.device.enqueue_input(data) == 64
    assert uart.device.input_space == 0
    assert uart.inb(LSR) == LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT
    assert uart.inb(LSR) == LSR_DR | LSR_THRE | LSR_TEMT  # OE clears on read
    assert uart.device.enqueue_input(b"more") == 0
    assert uart.inb(LSR) & LSR_OE
    received = bytes(uart.inb(RBR) for _ in range(64))
    assert received == data[:64]  # nothing already accepted was disturbed
    assert not uart.inb(LSR) & LSR_DR


def test_filling_the_fifo_exactly_is_no_overrun(uart: Uart) -> None:
    assert uart.device.enqueue_input(bytes(32)) == 32
    assert uart.device.enqueue_input(bytes(uart.device.input_space)) == 32
    assert uart.inb(LSR) == LSR_DR | LSR_THRE | LSR_TEMT


def test_overrun_raises_the_line_status_interrupt(uart: Uart) -> None:
    uart.outb(IER, IER_RLSI)
    uart.device.enqueue_input(bytes(RX_FIFO_CAPACITY))
    assert uart.inb(IIR) == IIR_NO_INT
    uart.device.enqueue_input(b"!")
    assert uart.irq.high
    assert uart.inb(IIR) == IIR_RLSI
    uart.inb(LSR)
    assert uart.inb(IIR) == IIR_NO_INT
    assert not uart.irq.high


def test_fcr_is_write_only_and_controls_the_fifo(uart: Uart) -> None:
    uart.outb(FCR, 0xC7)  # enable, clear both, trigger level 14
    assert uart.inb(FCR) == 0xC1  # offset 2 reads IIR, never FCR
    uart.device.enqueue_input(b"abc")
    uart.outb(FCR, FCR_ENABLE_FIFO | FCR_CLEAR_RCVR)
    assert not uart.inb(LSR) & LSR_DR
    assert uart.inb(IIR) == 0xC1  # still enabled

    uart.device.enqueue_input(b"abc")
    uart.outb(FCR, FCR_ENABLE_FIFO)  # no clear bit, no change of mode: data stays
    assert uart.inb(RBR) == ord("a")
    uart.outb(FCR, 0)  # turning the FIFOs off empties them
    assert uart.inb(IIR) == IIR_NO_INT
    assert not uart.inb(LSR) & LSR_DR
    assert uart.output == b""


@pytest.mark.parametrize("fcr, trigger", [(0x07, 1), (0x47, 4), (0x87, 8), (0xC7, 14)])
def test_fifo_mode_data_available_at_the_trigger_level_timeout_below(
    uart: Uart, fcr: int, trigger: int
) -> None:
    # PC16550D, FIFO interrupt mode: data available (0x04) from the trigger level
    # up, the character timeout indication (0x0c) below it, both from IER.ERBFI.
    uart.outb(FCR, fcr)
    uart.outb(IER, IER_RDI)
    assert uart.device.rx_trigger == trigger
    uart.device.enqueue_input(b"x" * (trigger - 1))
    if trigger > 1:
        assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_RX_TIMEOUT
        assert uart.irq.high
    uart.device.enqueue_input(b"y")
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_RDI
    uart.inb(RBR)  # one below the level again: the timeout indication
    expected = IIR_RX_TIMEOUT if trigger > 1 else IIR_NO_INT
    assert uart.inb(IIR) == IIR_FIFO_BITS | expected
    for _ in range(trigger - 1):
        uart.inb(RBR)
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_NO_INT
    assert not uart.irq.high


def test_outside_fifo_mode_every_character_is_data_available(uart: Uart) -> None:
    uart.outb(FCR, 0xC6)  # a trigger level of 14, but the FIFOs stay off
    uart.outb(IER, IER_RDI)
    uart.device.enqueue_input(b"a")
    assert uart.inb(IIR) == IIR_RDI
    uart.outb(IER, IER_THRI)  # ERBFI off masks the timeout indication too
    uart.outb(FCR, 0xC7)
    uart.device.enqueue_input(b"a")
    assert uart.inb(IIR) == IIR_FIFO_BITS | IIR_THRI


def test_wide_accesses_split_into_byte_registers(uart: Uart) -> None:
    # MCR, LSR, MSR and SCR in one little-endian dword.
    assert uart.device.read(MCR, 4) == 0x00_B0_60_08
    # A 16-bit divisor write with DLAB set fills DLL then DLM.
    uart.outb(LCR, LCR_DLAB)
    uart.device.write(DLL, 2, 0x0203)
    assert uart.device.divisor == 0x0203
    assert uart.device.read(DLL, 2) == 0x0203
    uart.outb(LCR, 0)
    # `out dx, ax` to THR also writes IER with the high byte.
    uart.device.write(THR, 2, (IER_THRI << 8) | ord("w"))
    assert uart.output == b"w"
    assert uart.inb(IER) == IER_THRI
    # A word read of RBR pops one byte and reads IER.
    uart.device.enqueue_input(b"rs")
    assert uart.device.read(RBR, 2) == (IER_THRI << 8) | ord("r")
    assert uart.inb(RBR) == ord("s")


def test_wide_accesses_past_the_last_register(uart: Uart) -> None:
    uart.device.write(SCR, 4, 0x11223344)
    assert uart.inb(SCR) == 0x44
    assert uart.device.read(SCR, 2) == 0xFF44
    assert uart.device.read(SCR, 4) == 0xFFFFFF44
    assert uart.device.read(MSR, 4) == 0xFFFF44B0


def test_unmapped_offsets(uart: Uart) -> None:
    assert uart.device.read(8, 1) == 0xFF
    assert uart.device.read(0x10, 2) == 0xFFFF
    before = [uart.inb(offset) for offset in (IER, LCR, MCR, LSR, MSR, SCR)]
    for offset in (8, 9, 15, 0x100):
        uart.device.write(offset, 1, 0x5A)
    assert [uart.inb(offset) for offset in (IER, LCR, MCR, LSR, MSR, SCR)] == before
    assert uart.output == b""


def test_register_masks_and_read_only_registers(uart: Uart) -> None:
    uart.outb(IER, 0xFF)
    assert uart.inb(IER) == 0x0F
    uart.outb(MCR, 0xFF)
    assert uart.inb(MCR) == 0x1F
    uart.outb(MCR, MCR_OUT2)
    uart.outb(IER, 0)
    uart.inb(MSR)  # clear the deltas from the loopback round trip
    uart.outb(LSR, 0xFF)
    uart.outb(MSR, 0xFF)
    assert uart.inb(LSR) == LSR_THRE | LSR_TEMT
    assert uart.inb(MSR) == MSR_DCD | MSR_DSR | MSR_CTS


def test_reset_restores_power_on_state_and_lowers_the_line(uart: Uart) -> None:
    uart.outb(LCR, LCR_DLAB)
    uart.outb(DLL, 1)
    uart.outb(LCR, 0x03)
    uart.outb(SCR, 0x42)
    uart.outb(FCR, FCR_ENABLE_FIFO)
    uart.outb(IER, IER_RDI)
    uart.device.enqueue_input(b"q")
    assert uart.irq.high
    uart.device.reset()
    assert not uart.irq.high
    assert uart.device.divisor == 12
    assert [uart.inb(offset) for offset in (IER, IIR, LCR, MCR, LSR, MSR, SCR)] == [
        0,
        IIR_NO_INT,
        0,
        MCR_OUT2,
        LSR_THRE | LSR_TEMT,
        0xB0,
        0,
    ]
