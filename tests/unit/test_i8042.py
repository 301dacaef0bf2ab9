"""The keyboard controller and the reset registers, driven as Linux drives them.

`Linux` below follows drivers/input/serio/i8042.c (`i8042_wait_read`,
`i8042_wait_write`, `__i8042_command`, `i8042_flush`, and the probe steps
built on them), drivers/input/keyboard/atkbd.c and libps2 (`ps2_command`, a
command byte then its parameters, each answered through the keyboard's
interrupt) and arch/x86/kernel/reboot.c (`kb_wait` then 0xfe; BOOT_CF9_SAFE).
"""

from __future__ import annotations

import pytest

from pyvmm.devices.bus import Bus, Shifted
from pyvmm.devices.i8042 import (
    BIOS_CTR,
    I8042,
    I8042_CTR_AUXDIS,
    I8042_CTR_AUXINT,
    I8042_CTR_KBDDIS,
    I8042_CTR_KBDINT,
    I8042_CTR_SYSFLAG,
    I8042_CTR_XLATE,
    I8042_STR_AUXDATA,
    I8042_STR_CMDDAT,
    I8042_STR_IBF,
    I8042_STR_KEYLOCK,
    I8042_STR_OBF,
    I8042_STR_SYSFLAG,
    I8042_STR_TIMEOUT,
)
from pyvmm.devices.pci_absent import PciAbsent, pci_config_address
from pyvmm.devices.reset_control import ResetControl, SystemControlPortA
from pyvmm.machine.outcome import OutcomeKind, RunOutcome
from pyvmm.machine.reset import attach_reset_sources

# i8042.h: a command's low byte goes to 0x64; bits 12-15 count its parameters,
# bits 8-11 its results.
I8042_CMD_CTL_RCTR = 0x0120
I8042_CMD_CTL_WCTR = 0x1060
I8042_CMD_CTL_TEST = 0x01AA
I8042_CMD_KBD_DISABLE = 0x00AD
I8042_CMD_KBD_ENABLE = 0x00AE
I8042_CMD_KBD_TEST = 0x01AB
I8042_CMD_KBD_LOOP = 0x11D2
I8042_CMD_AUX_DISABLE = 0x00A7
I8042_CMD_AUX_ENABLE = 0x00A8
I8042_CMD_AUX_TEST = 0x01A9
I8042_CMD_AUX_SEND = 0x10D4
I8042_CMD_AUX_LOOP = 0x11D3
I8042_CTL_TIMEOUT = 10000  # polls of 50 us: half a second
I8042_BUFFER_SIZE = 16
# atkbd.c: command | parameters << 12 | results << 8, as for the controller.
ATKBD_CMD_SETLEDS = 0x10ED
ATKBD_CMD_GSCANSET = 0x11F0
ATKBD_CMD_SSCANSET = 0x10F0
ATKBD_CMD_GETID = 0x02F2
ATKBD_CMD_SETREP = 0x10F3
ATKBD_CMD_ENABLE = 0x00F4
ATKBD_CMD_RESET_DIS = 0x00F5
ATKBD_CMD_RESET_BAT = 0x02FF
ATKBD_CMD_ECHO = 0x01EE  # not in atkbd.c: the keyboard answers 0xee itself, no ACK
PS2_RET_ACK = 0xFA


class Line:
    """An IrqLine that records its level and counts rising edges (what an ISA PIC sees)."""

    def __init__(self) -> None:
        self.high = False
        self.edges = 0

    def set_level(self, high: bool) -> None:
        assert high != self.high, "devices call set_level only on a change"
        self.edges += high
        self.high = high


class Linux:
    """Linux's i8042 helpers over ports 0x60 and 0x64 of `bus`."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def read_status(self) -> int:
        return self.bus.read(0x64, 1)

    def read_data(self) -> int:
        return self.bus.read(0x60, 1)

    def wait_write(self) -> int:
        for _ in range(I8042_CTL_TIMEOUT):
            if not self.read_status() & I8042_STR_IBF:
                return 0
        return -1  # -ETIMEDOUT

    def wait_read(self) -> int:
        for _ in range(I8042_CTL_TIMEOUT):
            if self.read_status() & I8042_STR_OBF:
                return 0
        return -1

    def command(self, param: list[int], command: int) -> int:
        """__i8042_command: 0, and the results in `param`, or -1."""
        if self.wait_write():
            return -1
        self.bus.write(0x64, 1, command & 0xFF)
        for index in range((command >> 12) & 0xF):
            if self.wait_write():
                return -1
            self.bus.write(0x60, 1, param[index])
        for index in range((command >> 8) & 0xF):
            if self.wait_read():
                return -1
            if command == I8042_CMD_AUX_LOOP and not self.read_status() & I8042_STR_AUXDATA:
                return -1
            param[index] = self.read_data()
        return 0

    def flush(self) -> int:
        count = 0
        while self.read_status() & I8042_STR_OBF:
            if count >= I8042_BUFFER_SIZE:
                return -5  # -EIO: "No controller found"
            count += 1
            self.read_data()
        return 0

    def read_ctr(self) -> int:
        param = [0]
        assert self.command(param, I8042_CMD_CTL_RCTR) == 0
        return param[0]

    def write_ctr(self, ctr: int) -> None:
        assert self.command([ctr], I8042_CMD_CTL_WCTR) == 0

    def ps2_command(self, command: int, param: list[int]) -> list[int]:
        """libps2 ps2_command through i8042_kbd_write: each byte, then its answer.

        The answers come as the keyboard interrupt does in Linux
        (i8042_interrupt: one byte per IRQ): read while OBF is set. Returns
        every byte received: the ACKs, then the results.
        """
        sends = [command & 0xFF, *param[: (command >> 12) & 0xF]]
        received: list[int] = []
        for byte in sends:
            assert self.wait_write() == 0
            self.bus.write(0x60, 1, byte)
            received += self.drain()
        return received

    def drain(self) -> list[int]:
        received = []
        while self.read_status() & I8042_STR_OBF:
            received.append(self.read_data())
        return received


def make_i8042() -> tuple[I8042, Bus, Linux, Line, Line, list[str]]:
    resets: list[str] = []
    kbd, aux = Line(), Line()
    i8042 = I8042(resets.append, kbd, aux)
    bus = Bus("pio")
    bus.insert(i8042, 0x60, 1)
    bus.insert(Shifted(i8042, 4), 0x64, 1)
    return i8042, bus, Linux(bus), kbd, aux, resets


# -- the controller --------------------------------------------------------


def test_i8042_controller_check_finds_a_controller() -> None:
    """i8042_flush must end: an absent controller's 0xff status never empties."""
    _, _, linux, _, _, _ = make_i8042()
    assert linux.read_status() == 0x1C  # as SeaBIOS leaves it: SYS, A2, not inhibited
    assert linux.flush() == 0
    linux.bus.write(0x64, 1, 0xD2)  # a byte that waits for the flush
    linux.bus.write(0x60, 1, 0x5A)
    assert linux.read_status() & I8042_STR_OBF
    assert linux.flush() == 0
    assert not linux.read_status() & I8042_STR_OBF


def test_i8042_controller_selftest() -> None:
    _, _, linux, _, _, _ = make_i8042()
    linux.write_ctr(BIOS_CTR & ~I8042_CTR_SYSFLAG)  # as at power-on: the flag clear
    assert not linux.read_status() & I8042_STR_SYSFLAG
    param = [0]
    assert linux.command(param, I8042_CMD_CTL_TEST) == 0
    assert param == [0x55]  # I8042_RET_CTL_TEST
    assert linux.read_status() & I8042_STR_SYSFLAG
    for command in (I8042_CMD_KBD_TEST, I8042_CMD_AUX_TEST):
        param = [0xFF]
        assert linux.command(param, command) == 0
        assert param == [0x00]  # the interface's lines are fine


def test_i8042_controller_init_reads_a_stable_ctr_and_writes_it_back() -> None:
    i8042, _, linux, kbd, _, _ = make_i8042()
    first, second = linux.read_ctr(), linux.read_ctr()
    assert first == second == BIOS_CTR == 0x61
    assert linux.read_status() & I8042_STR_KEYLOCK  # no "Warning: Keylock active"
    ctr = (first | I8042_CTR_KBDDIS) & ~I8042_CTR_KBDINT
    assert ctr & I8042_CTR_XLATE  # translated: i8042_direct stays false
    linux.write_ctr(ctr)
    assert linux.flush() == 0
    edges = kbd.edges  # the BIOS's CTR had KBDINT: the reads above raised IRQ 1
    assert i8042.command_byte == ctr == linux.read_ctr()
    assert kbd.edges == edges  # KBDINT off now: the answer raised nothing


def test_the_ctr_system_flag_is_the_status_registers() -> None:
    _, _, linux, _, _, _ = make_i8042()
    linux.write_ctr(BIOS_CTR & ~I8042_CTR_SYSFLAG)
    assert not linux.read_status() & I8042_STR_SYSFLAG
    linux.write_ctr(BIOS_CTR | I8042_CTR_SYSFLAG)
    assert linux.read_status() & I8042_STR_SYSFLAG


def test_status_a2_tells_the_last_port_written() -> None:
    _, bus, linux, _, _, _ = make_i8042()
    bus.write(0x64, 1, 0xA7)
    assert linux.read_status() & I8042_STR_CMDDAT
    bus.write(0x60, 1, 0xEE)  # to the keyboard
    assert not linux.read_status() & I8042_STR_CMDDAT


def test_i8042_check_aux_loopback_toggle_and_irq() -> None:
    i8042, _, linux, kbd, aux, _ = make_i8042()
    assert linux.flush() == 0
    param = [0x5A]
    assert linux.command(param, I8042_CMD_AUX_LOOP) == 0 and param == [0x5A]
    # i8042_toggle_aux: the CTR's AUXDIS bit follows 0xa7 / 0xa8.
    assert linux.command([0], I8042_CMD_AUX_DISABLE) == 0
    assert linux.read_ctr() & I8042_CTR_AUXDIS
    assert linux.command([0], I8042_CMD_AUX_ENABLE) == 0
    assert not linux.read_ctr() & I8042_CTR_AUXDIS
    # The IRQ test: aux port enabled with its interrupt, a loopback byte, then IRQ 12.
    linux.write_ctr((i8042.command_byte & ~I8042_CTR_AUXDIS) | I8042_CTR_AUXINT)
    assert linux.command([0xA5], I8042_CMD_AUX_LOOP & 0xF0FF) == 0
    assert aux.high and aux.edges == 1 and not kbd.high
    status = linux.read_status()  # i8042_interrupt
    assert status & I8042_STR_OBF and status & I8042_STR_AUXDATA
    assert linux.read_data() == 0xA5
    assert not aux.high


def test_i8042_set_mux_mode_finds_no_multiplexer() -> None:
    """Three loopback bytes; a plain controller echoes the third, an active mux does not."""
    _, _, linux, _, _, _ = make_i8042()
    echoed = []
    for value in (0xF0, 0x56, 0xA4):
        param = [value]
        assert linux.command(param, I8042_CMD_AUX_LOOP) == 0
        echoed.append(param[0])
    assert echoed == [0xF0, 0x56, 0xA4]  # mux_version == 0xa4: "not a mux"


def test_the_aux_port_has_no_device() -> None:
    _, _, linux, _, _, _ = make_i8042()
    assert linux.command([0xF2], I8042_CMD_AUX_SEND) == 0  # psmouse's get-ID
    status = linux.read_status()
    assert status & I8042_STR_AUXDATA and status & I8042_STR_TIMEOUT
    assert linux.read_data() == 0xFE
    assert not linux.read_status() & (I8042_STR_OBF | I8042_STR_TIMEOUT)


def test_internal_ram_and_output_port() -> None:
    i8042, bus, linux, _, _, resets = make_i8042()
    assert linux.command([0x5A], 0x1061) == 0  # RAM byte 1
    param = [0]
    assert linux.command(param, 0x0121) == 0 and param == [0x5A]
    assert linux.command(param, 0x01D0) == 0 and param == [0xCF]  # reset high, A20 on
    bus.write(0x64, 1, 0xDD)
    assert not i8042.a20_enabled
    assert linux.command(param, 0x01D0) == 0 and param == [0xCD]
    assert linux.command([0xCF], 0x10D1) == 0  # A20 back on, reset line high
    assert i8042.a20_enabled and resets == []
    # 0xd0 while a byte waits: the output port's bit 4 (IRQ 1, OBF) shows it.
    bus.write(0x64, 1, 0xD2)
    bus.write(0x60, 1, 0x5A)
    bus.write(0x64, 1, 0xD0)
    assert linux.drain() == [0x5A, 0xCF | 0x10]
    assert linux.command([0xCE], 0x10D1) == 0  # bit 0 low: the CPU reset line
    assert len(resets) == 1 and "0xd1" in resets[0] and "0xce" in resets[0]


def test_wide_accesses_use_the_low_byte() -> None:
    i8042, _, _, _, _, _ = make_i8042()
    assert i8042.read(4, 2) == 0xFF00 | 0x1C
    i8042.write(4, 4, 0x1234_5620)  # command 0x20
    assert i8042.read(0, 1) == BIOS_CTR


# -- the keyboard (atkbd) ----------------------------------------------------


def enable_keyboard_port(linux: Linux) -> None:
    """i8042_enable_kbd_port: keyboard interface and interrupt on."""
    ctr = linux.read_ctr()
    linux.write_ctr((ctr & ~I8042_CTR_KBDDIS) | I8042_CTR_KBDINT)


def test_atkbd_probe_and_connect() -> None:
    i8042, _, linux, kbd, _, _ = make_i8042()
    enable_keyboard_port(linux)
    edges = kbd.edges
    # atkbd_probe: GETID, translated (the BIOS left XLATE on): ab 41, an MF2 keyboard.
    assert linux.ps2_command(ATKBD_CMD_GETID, []) == [PS2_RET_ACK, 0xAB, 0x41]
    assert kbd.edges - edges == 3  # one keyboard interrupt per byte
    assert linux.ps2_command(ATKBD_CMD_RESET_DIS, []) == [PS2_RET_ACK]  # atkbd_deactivate
    assert not i8042.scanning
    # atkbd_reset_state: LEDs off, then the typematic rate.
    assert linux.ps2_command(ATKBD_CMD_SETLEDS, [0]) == [PS2_RET_ACK, PS2_RET_ACK]
    assert linux.ps2_command(ATKBD_CMD_SETREP, [0]) == [PS2_RET_ACK, PS2_RET_ACK]
    assert i8042.typematic == 0
    assert linux.ps2_command(ATKBD_CMD_ENABLE, []) == [PS2_RET_ACK]  # atkbd_activate
    assert i8042.scanning
    assert not kbd.high


def test_atkbd_reset_echo_and_scan_sets() -> None:
    i8042, _, linux, _, _, _ = make_i8042()
    enable_keyboard_port(linux)
    assert linux.ps2_command(ATKBD_CMD_RESET_BAT, []) == [PS2_RET_ACK, 0xAA]
    assert linux.ps2_command(ATKBD_CMD_ECHO, []) == [0xEE]
    assert linux.ps2_command(ATKBD_CMD_GSCANSET, [0]) == [PS2_RET_ACK, PS2_RET_ACK, 0x41]
    linux.write_ctr(i8042.command_byte & ~I8042_CTR_XLATE)  # i8042.direct
    assert linux.ps2_command(ATKBD_CMD_GETID, []) == [PS2_RET_ACK, 0xAB, 0x83]
    assert linux.ps2_command(ATKBD_CMD_SSCANSET, [3]) == [PS2_RET_ACK, PS2_RET_ACK]
    assert linux.ps2_command(ATKBD_CMD_GSCANSET, [0]) == [PS2_RET_ACK, PS2_RET_ACK, 3]
    assert linux.ps2_command(0x05, []) == [0xFE]  # unknown: resend


def test_keyboard_irq_follows_kbdint_and_kbddis() -> None:
    _, bus, linux, kbd, aux, _ = make_i8042()
    linux.write_ctr(I8042_CTR_XLATE)  # no interrupts
    bus.write(0x60, 1, 0xEE)
    assert not kbd.high and linux.drain() == [0xEE]
    linux.write_ctr(I8042_CTR_XLATE | I8042_CTR_KBDINT | I8042_CTR_KBDDIS)
    bus.write(0x60, 1, 0xEE)
    assert not kbd.high
    linux.write_ctr(I8042_CTR_XLATE | I8042_CTR_KBDINT)  # enabled: the waiting byte raises it
    assert kbd.high
    assert linux.drain() == [0xEE] and not kbd.high
    bus.write(0x60, 1, 0xFF)  # two bytes: the line drops and rises again between them
    edges = kbd.edges
    assert linux.drain() == [0xFA, 0xAA]
    assert kbd.edges == edges + 1 and not kbd.high and not aux.high


# -- resets ---------------------------------------------------------------------


def test_linux_reboot_kb_wait_then_0xfe() -> None:
    """BOOT_KBD: ten times kb_wait (IBF clear within 0x10000 reads) and 0xfe."""
    i8042, bus, linux, _, _, resets = make_i8042()
    for _ in range(10):
        assert any(not linux.read_status() & I8042_STR_IBF for _ in range(0x10000))
        bus.write(0x64, 1, 0xFE)
    assert len(resets) == 10 == i8042.reset_requests
    assert "0xfe" in resets[0] and "port 0x64" in resets[0]


@pytest.mark.parametrize("command", range(0xF0, 0x100))
def test_pulse_commands_reset_when_bit_0_is_pulsed(command: int) -> None:
    _, bus, _, _, _, resets = make_i8042()
    bus.write(0x64, 1, command)
    assert len(resets) == (0 if command & 1 else 1)


def test_port_92_fast_reset() -> None:
    resets: list[str] = []
    port = SystemControlPortA(resets.append)
    assert port.read(0, 1) == 0x02 and port.a20_enabled  # as a BIOS leaves it
    port.write(0, 1, 0x00)
    assert not port.a20_enabled and port.read(0, 1) == 0x00 and resets == []
    port.write(0, 1, 0x03)  # bit 0 goes from 0 to 1
    assert len(resets) == 1 and "port 0x92" in resets[0]
    port.write(0, 1, 0x03)  # still 1: no new edge
    assert len(resets) == 1
    port.write(0, 1, 0x02)
    port.write(0, 1, 0x03)
    assert len(resets) == 2


def test_port_cf9_linux_boot_cf9_safe() -> None:
    resets: list[str] = []
    rc = ResetControl(resets.append)
    cf9 = rc.read(0, 1) & ~0x06  # a warm reboot
    rc.write(0, 1, cf9 | 2)  # "Request hard reset"
    assert rc.read(0, 1) == 0x02 and resets == []
    rc.write(0, 1, cf9 | 0x06)  # "Actually do the reset"
    assert len(resets) == 1 and "hard reset" in resets[0] and "0xcf9" in resets[0]
    cf9 = rc.read(0, 1) & ~0x0E  # a cold one
    rc.write(0, 1, cf9 | 2)
    assert len(resets) == 1
    rc.write(0, 1, cf9 | 0x0E)
    assert len(resets) == 2 and "full reset" in resets[1]
    rc.write(0, 1, 0x04)
    assert "soft reset" in resets[-1]


def test_attached_resets_end_the_run_and_leave_0xcf8_to_pci() -> None:
    outcomes: list[RunOutcome] = []
    bus = Bus("pio")
    pci = PciAbsent()
    # As attach_qemu_board places the empty PCI bus: CONFIG_ADDRESS at 0xcf8 (one byte
    # of bus range, dispatched by its first port), CONFIG_DATA at 0xcfc.
    bus.insert(pci, 0xCF8, 1)
    bus.insert(Shifted(pci, 4), 0xCFC, 4)
    sources = attach_reset_sources(bus, None, outcomes.append)
    address = pci_config_address(0, 3, 0, 0x10)
    bus.write(0xCF8, 4, address)  # a dword at 0xcf8 covers 0xcf9 and still goes to PCI
    assert pci.config_address == address and bus.read(0xCF8, 4) == address
    assert outcomes == [] and sources.reset_control.value == 0
    assert bus.read(0xCF9, 1) == 0x00  # the Reset Control Register
    assert bus.read(0xCFC, 4) == 0xFFFF_FFFF
    for port, value in ((0x64, 0xFE), (0x92, 0x03), (0xCF9, 0x06)):
        bus.write(port, 1, value)
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.RESET] * 3
    assert all(outcome.exit_status == 0 for outcome in outcomes)
    assert not OutcomeKind.RESET.is_abnormal
    messages = [outcome.message for outcome in outcomes]
    assert "keyboard controller" in messages[0] and "0x92" in messages[1]
    assert "0xcf9" in messages[2]
    assert bus.unmapped_reads == bus.unmapped_writes == 0
