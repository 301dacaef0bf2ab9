"""The PC's keyboard controller, an Intel 8042 ("i8042"), with a PS/2 keyboard and no mouse.

The controller has two ports (IBM PC AT Technical Reference, "Keyboard
Controller"; Intel UPI-41/42 data sheet for the chip itself): 0x60, the data
port (read: the output buffer; write: the input buffer, for the keyboard or
for a controller command's parameter) and 0x64 (read: the status register;
write: a controller command). Bit and command names are Linux's
(drivers/input/serio/i8042.h: I8042_STR_*, I8042_CTR_*, I8042_CMD_*), which
is what guests are written against; the model is checked against the
sequences of Linux's driver (drivers/input/serio/i8042.c:
`i8042_controller_check`, `i8042_controller_selftest`,
`i8042_controller_init`, `i8042_check_aux`, `i8042_set_mux_mode`), of its
keyboard driver (drivers/input/keyboard/atkbd.c: `atkbd_probe`,
`atkbd_reset_state`, `atkbd_activate`) and of the reboot path
(arch/x86/kernel/reboot.c: `kb_wait`, then command 0xfe), and against QEMU
(hw/input/pckbd.c, hw/input/ps2.c), which boots the same test guests.

What the guest sees:

- Answers are instant: the input buffer is never full (status IBF reads 0),
  so a guest that waits for IBF to clear, as every driver and reboot path
  does, goes on at once. Bytes for the guest (controller answers, keyboard
  replies, loopback bytes) wait in one queue, presented one at a time in the
  output buffer (OBF, and AUXDATA for a byte from the aux port).
- The state at entry is the one a PC BIOS leaves (SeaBIOS's ps2port.c, what
  a kernel booted by `qemu -kernel` finds): command byte 0x61 (keyboard
  interrupt, translation, aux port disabled), status 0x1c (system flag set
  by the BIOS's self-test, keyboard not inhibited, last write a command).
- Keyboard: a PS/2 MF2 keyboard that answers its commands (reset 0xff ->
  0xfa 0xaa, identify 0xf2 -> 0xfa 0xab 0x83, or 0x41 for 0x83 while the
  controller translates, echo 0xee -> 0xee, scanning on/off 0xf4/0xf5,
  LEDs 0xed, typematic 0xf3 and scan-code set 0xf0 with their parameter;
  an unknown command gets 0xfe, resend). It never sends a key: pyvmm's
  console is COM1, and no host key reaches this keyboard.
- Aux (mouse) port: nothing is plugged in. A byte sent there (command 0xd4)
  is answered with 0xfe and the status time-out bit, as a controller whose
  aux device does not answer reports it; the loopback (0xd3) works.
- IRQ 1 is high while the output buffer holds a byte that is not from the
  aux port, the command byte enables the keyboard interrupt (KBDINT) and the
  keyboard interface is enabled; IRQ 12 while it holds an aux byte and
  AUXINT is set (as QEMU gates them).
- The output port (commands 0xd0/0xd1): bit 0 is the CPU's reset line, bit 1
  the A20 gate. A write with bit 0 low, or a pulse command 0xf0-0xfe with
  bit 0 low (0xfe: "pulse reset", what every PC reboot path writes), calls
  `on_reset`. A20 is recorded and read back but gates nothing: KVM has no
  A20 mask, so addresses never wrap at 1 MiB.

The device knows nothing of ports: the bus hands it offset 0 (port 0x60) and
offset 4 (port 0x64). Accesses wider than a byte use the low byte and read
all ones above it, as the neighbouring ports are not the controller's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import Enum

from pyvmm.devices.irq import IrqLine, NoIrq
from pyvmm.errors import Log

log = Log(__name__)

I8042_DATA_PORT = 0x60
I8042_COMMAND_PORT = 0x64  # the status register when read
# Offsets the device sees: the bus maps 0x60 and 0x64 onto one device.
I8042_DATA = 0
I8042_STATUS = I8042_COMMAND_PORT - I8042_DATA_PORT
I8042_COMMAND = I8042_STATUS

# ISA IRQs of a PC's keyboard controller.
I8042_KBD_IRQ = 1
I8042_AUX_IRQ = 12

# Status register (IBM AT Technical Reference, "Status Register"; Linux I8042_STR_*).
I8042_STR_OBF = 0x01  # output buffer full: a byte waits at 0x60
I8042_STR_IBF = 0x02  # input buffer full: the controller has not taken the last write yet
I8042_STR_SYSFLAG = 0x04  # system flag: set by the self-test, and from command byte bit 2
I8042_STR_CMDDAT = 0x08  # A2: the last write went to 0x64 (a command), not 0x60 (data)
I8042_STR_KEYLOCK = 0x10  # 1: the keyboard is not inhibited (the keylock switch is open)
I8042_STR_AUXDATA = 0x20  # the byte in the output buffer came from the aux port
I8042_STR_TIMEOUT = 0x40  # the device did not answer
I8042_STR_PARITY = 0x80

# Controller command byte, "CTR" (internal RAM byte 0; Linux I8042_CTR_*).
I8042_CTR_KBDINT = 0x01  # keyboard bytes raise IRQ 1
I8042_CTR_AUXINT = 0x02  # aux bytes raise IRQ 12
I8042_CTR_SYSFLAG = 0x04  # copied to the status register's system flag
I8042_CTR_IGNKEYLOCK = 0x08
I8042_CTR_KBDDIS = 0x10  # keyboard interface disabled (clock held low)
I8042_CTR_AUXDIS = 0x20  # aux interface disabled
I8042_CTR_XLATE = 0x40  # translate the keyboard's scan codes (set 2) to set 1

# Controller commands (written to 0x64).
I8042_CMD_READ_RAM = 0x20  # 0x20-0x3f: read internal RAM byte n (0x20: the command byte)
I8042_CMD_WRITE_RAM = 0x60  # 0x60-0x7f: write internal RAM byte n (0x60: the command byte)
I8042_CMD_AUX_DISABLE = 0xA7
I8042_CMD_AUX_ENABLE = 0xA8
I8042_CMD_AUX_TEST = 0xA9  # aux interface test: 0x00 = lines OK
I8042_CMD_CTL_TEST = 0xAA  # controller self-test: 0x55 = passed
I8042_CMD_KBD_TEST = 0xAB  # keyboard interface test: 0x00 = lines OK
I8042_CMD_KBD_DISABLE = 0xAD
I8042_CMD_KBD_ENABLE = 0xAE
I8042_CMD_READ_INPUT = 0xC0  # input port
I8042_CMD_READ_OUTPUT = 0xD0  # output port
I8042_CMD_WRITE_OUTPUT = 0xD1
I8042_CMD_KBD_LOOP = 0xD2  # the next data byte comes back as if the keyboard sent it
I8042_CMD_AUX_LOOP = 0xD3  # ... as if the aux device sent it
I8042_CMD_AUX_SEND = 0xD4  # the next data byte goes to the aux device
I8042_CMD_DISABLE_A20 = 0xDD
I8042_CMD_ENABLE_A20 = 0xDF
I8042_CMD_PULSE = 0xF0  # 0xf0-0xff: pulse output port bits 3-0 where the command's bit is 0
I8042_CMD_RESET = 0xFE  # pulse bit 0: the CPU reset line

I8042_RET_CTL_TEST = 0x55
I8042_RET_INTERFACE_OK = 0x00
RAM_SIZE = 32  # internal RAM bytes reachable through 0x20-0x3f / 0x60-0x7f

# Output port (IBM AT Technical Reference, "Output Port Definitions").
I8042_OUT_RESET = 0x01  # 0 holds the CPU in reset
I8042_OUT_A20 = 0x02
I8042_OUT_KBD_OBF = 0x10  # wired to IRQ 1: output buffer full
I8042_OUT_AUX_OBF = 0x20  # wired to IRQ 12
# Bits 2-3 unused (read 1), 6-7 the keyboard clock and data lines (idle high), as QEMU.
I8042_OUT_ONES = 0xCC
# Input port: bit 7 set, the keyboard not inhibited (what QEMU answers).
I8042_INPUT_PORT = 0x80

# The state a PC BIOS leaves (SeaBIOS ps2port.c ps2_keyboard_setup; QEMU then reads these).
BIOS_CTR = I8042_CTR_KBDINT | I8042_CTR_AUXDIS | I8042_CTR_XLATE  # 0x61
BIOS_STATUS = I8042_STR_SYSFLAG | I8042_STR_CMDDAT | I8042_STR_KEYLOCK  # 0x1c

# Keyboard commands and replies (IBM PS/2 Keyboard Technical Reference; Linux atkbd.c).
KBD_CMD_SETLEDS = 0xED
KBD_CMD_ECHO = 0xEE
KBD_CMD_SSCANSET = 0xF0  # select (1-3) or, with 0, report the scan-code set
KBD_CMD_GETID = 0xF2
KBD_CMD_SETREP = 0xF3  # typematic rate and delay
KBD_CMD_ENABLE = 0xF4  # start scanning
KBD_CMD_RESET_DIS = 0xF5  # defaults, stop scanning
KBD_CMD_RESET_DEF = 0xF6  # defaults, keep scanning
KBD_CMD_SET_ALL_FIRST = 0xF7  # 0xf7-0xfd: set-3 key modes, acknowledged only
KBD_CMD_SET_ALL_LAST = 0xFD
KBD_CMD_RESEND = 0xFE
KBD_CMD_RESET_BAT = 0xFF  # reset and basic assurance test
KBD_REPLY_ACK = 0xFA
KBD_REPLY_RESEND = 0xFE
KBD_REPLY_BAT_OK = 0xAA
KBD_ID = (0xAB, 0x83)  # MF2 keyboard
KBD_ID_TRANSLATED = 0x41  # 0x83 as the controller's set 2 -> set 1 translation turns it
# A scan-code set number as it comes through translation (0x01, 0x02, 0x03 -> these).
TRANSLATED_SET = {1: 0x43, 2: 0x41, 3: 0x3F}
KBD_COMMANDS_WITH_PARAMETER = (KBD_CMD_SETLEDS, KBD_CMD_SSCANSET, KBD_CMD_SETREP)

# A byte sent to an empty aux port: what the controller reports when no device clocks it.
AUX_NO_DEVICE = 0xFE


class Source(Enum):
    """Where a byte in the output buffer came from: it decides AUXDATA and the IRQ."""

    CONTROLLER = "controller"
    KEYBOARD = "keyboard"
    AUX = "aux"


class I8042:
    """The 8042 keyboard controller: data at offset 0 (port 0x60), status/command at 4 (0x64).

    `on_reset(how)` is called with a short description when the guest pulses
    the CPU reset line (the run should end there, or the machine restart).
    `kbd_irq` is IRQ 1, `aux_irq` IRQ 12.
    """

    def __init__(
        self,
        on_reset: Callable[[str], None],
        kbd_irq: IrqLine | None = None,
        aux_irq: IrqLine | None = None,
    ) -> None:
        self._on_reset = on_reset
        self._kbd_irq = kbd_irq or NoIrq()
        self._aux_irq = aux_irq or NoIrq()
        self._kbd_level = False
        self._aux_level = False
        self._ram = bytearray(RAM_SIZE)
        self._ram[0] = BIOS_CTR
        self._status = BIOS_STATUS  # the bits not derived from the queue
        self._output: deque[tuple[int, Source, bool]] = deque()  # (byte, source, time-out)
        self._last_read = 0x00
        self._pending_command: int | None = None  # a command waiting for its data byte
        self._output_port = I8042_OUT_RESET | I8042_OUT_A20 | I8042_OUT_ONES
        # The keyboard behind the controller.
        self._kbd_pending: int | None = None  # a keyboard command waiting for its parameter
        self.scanning = True
        self.scan_set = 2
        self.leds = 0
        self.typematic = 0x2B  # the power-on default: 10.9 characters/s, 500 ms
        self.reset_requests = 0

    # -- what a test or the VMM may look at --------------------------------

    @property
    def command_byte(self) -> int:
        """The controller command byte (CTR): command 0x20 reads it, 0x60 writes it."""
        return self._ram[0]

    @property
    def a20_enabled(self) -> bool:
        """Output port bit 1, as last written (it gates nothing under KVM)."""
        return bool(self._output_port & I8042_OUT_A20)

    @property
    def status(self) -> int:
        """The status register as port 0x64 reads it."""
        status = self._status & ~(I8042_STR_OBF | I8042_STR_AUXDATA | I8042_STR_TIMEOUT)
        if self._output:
            _, source, timed_out = self._output[0]
            status |= I8042_STR_OBF
            if source is Source.AUX:
                status |= I8042_STR_AUXDATA
            if timed_out:
                status |= I8042_STR_TIMEOUT
        return status

    # -- the bus interface --------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        above = ((1 << (8 * size)) - 1) & ~0xFF  # the neighbouring ports: nothing there
        if offset == I8042_DATA:
            return self._read_data() | above
        if offset == I8042_STATUS:
            return self.status | above
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == I8042_DATA:
            self._write_data(value & 0xFF)
        elif offset == I8042_COMMAND:
            self._write_command(value & 0xFF)

    # -- ports ---------------------------------------------------------------

    def _read_data(self) -> int:
        if self._output:
            # Reading empties the output buffer: the IRQ line drops, and rises again
            # for the next byte, so that an edge-triggered PIC sees one edge per byte.
            self._last_read = self._output.popleft()[0]
            self._set_levels(False, False)
            self._update_irqs()
        return self._last_read  # an empty buffer reads its last byte again

    def _write_data(self, value: int) -> None:
        self._status &= ~I8042_STR_CMDDAT
        command, self._pending_command = self._pending_command, None
        if command is None:
            self._keyboard_receive(value)
        elif I8042_CMD_WRITE_RAM <= command < I8042_CMD_WRITE_RAM + RAM_SIZE:
            self._write_ram(command - I8042_CMD_WRITE_RAM, value)
        elif command == I8042_CMD_WRITE_OUTPUT:
            self._write_output_port(value)
        elif command == I8042_CMD_KBD_LOOP:
            self._queue(value, Source.KEYBOARD)
        elif command == I8042_CMD_AUX_LOOP:
            self._queue(value, Source.AUX)
        elif command == I8042_CMD_AUX_SEND:
            self._queue(AUX_NO_DEVICE, Source.AUX, timed_out=True)

    def _write_command(self, command: int) -> None:
        self._status |= I8042_STR_CMDDAT
        self._pending_command = None  # a new command drops a parameter still awaited
        if I8042_CMD_READ_RAM <= command < I8042_CMD_READ_RAM + RAM_SIZE:
            self._queue(self._ram[command - I8042_CMD_READ_RAM])
        elif I8042_CMD_WRITE_RAM <= command < I8042_CMD_WRITE_RAM + RAM_SIZE or command in (
            I8042_CMD_WRITE_OUTPUT,
            I8042_CMD_KBD_LOOP,
            I8042_CMD_AUX_LOOP,
            I8042_CMD_AUX_SEND,
        ):
            self._pending_command = command
        elif command == I8042_CMD_AUX_DISABLE:
            self._write_ram(0, self._ram[0] | I8042_CTR_AUXDIS)
        elif command == I8042_CMD_AUX_ENABLE:
            self._write_ram(0, self._ram[0] & ~I8042_CTR_AUXDIS)
        elif command in (I8042_CMD_AUX_TEST, I8042_CMD_KBD_TEST):
            self._queue(I8042_RET_INTERFACE_OK)
        elif command == I8042_CMD_CTL_TEST:
            self._status |= I8042_STR_SYSFLAG
            self._queue(I8042_RET_CTL_TEST)
        elif command == I8042_CMD_KBD_DISABLE:
            self._write_ram(0, self._ram[0] | I8042_CTR_KBDDIS)
        elif command == I8042_CMD_KBD_ENABLE:
            self._write_ram(0, self._ram[0] & ~I8042_CTR_KBDDIS)
        elif command == I8042_CMD_READ_INPUT:
            self._queue(I8042_INPUT_PORT)
        elif command == I8042_CMD_READ_OUTPUT:
            self._queue(self._output_port_value())
        elif command == I8042_CMD_DISABLE_A20:
            self._output_port &= ~I8042_OUT_A20
        elif command == I8042_CMD_ENABLE_A20:
            self._output_port |= I8042_OUT_A20
        elif command >= I8042_CMD_PULSE:
            if not command & I8042_OUT_RESET:  # bit 0 of the command low: pulse the reset line
                what = "pulse reset" if command == I8042_CMD_RESET else "pulse output port bits"
                self._reset(
                    f"command 0x{command:02x} ({what}) to the keyboard controller, port 0x64"
                )
        else:
            log.debug("i8042: command 0x%02x ignored", command)

    # -- controller internals -------------------------------------------------

    def _write_ram(self, index: int, value: int) -> None:
        self._ram[index] = value
        if index == 0:
            # The command byte's system flag is the status register's (IBM AT TR).
            if value & I8042_CTR_SYSFLAG:
                self._status |= I8042_STR_SYSFLAG
            else:
                self._status &= ~I8042_STR_SYSFLAG
            self._update_irqs()

    def _output_port_value(self) -> int:
        value = self._output_port & ~(I8042_OUT_KBD_OBF | I8042_OUT_AUX_OBF)
        if self._output:
            aux = self._output[0][1] is Source.AUX
            value |= I8042_OUT_AUX_OBF if aux else I8042_OUT_KBD_OBF
        return value

    def _write_output_port(self, value: int) -> None:
        self._output_port = value
        if not value & I8042_OUT_RESET:
            self._reset(
                f"command 0xd1 to the keyboard controller, port 0x64: output port 0x{value:02x}, "
                "reset line (bit 0) low"
            )

    def _reset(self, how: str) -> None:
        self.reset_requests += 1
        self._on_reset(how)

    def _queue(
        self, value: int, source: Source = Source.CONTROLLER, timed_out: bool = False
    ) -> None:
        self._output.append((value, source, timed_out))
        self._update_irqs()

    def _update_irqs(self) -> None:
        ctr = self._ram[0]
        kbd = aux = False
        if self._output:
            if self._output[0][1] is Source.AUX:
                aux = bool(ctr & I8042_CTR_AUXINT)
            else:
                kbd = bool(ctr & I8042_CTR_KBDINT) and not ctr & I8042_CTR_KBDDIS
        self._set_levels(kbd, aux)

    def _set_levels(self, kbd: bool, aux: bool) -> None:
        if kbd != self._kbd_level:
            self._kbd_level = kbd
            self._kbd_irq.set_level(kbd)
        if aux != self._aux_level:
            self._aux_level = aux
            self._aux_irq.set_level(aux)

    # -- the keyboard ----------------------------------------------------------

    def _keyboard_receive(self, value: int) -> None:
        """A byte written to 0x60 with no command pending goes to the keyboard."""
        command, self._kbd_pending = self._kbd_pending, None
        if command is not None:
            self._keyboard_parameter(command, value)
            return
        translated = bool(self._ram[0] & I8042_CTR_XLATE)
        if value in KBD_COMMANDS_WITH_PARAMETER:
            self._kbd_pending = value
            self._keyboard_reply(KBD_REPLY_ACK)
        elif value == KBD_CMD_ECHO:
            self._keyboard_reply(KBD_CMD_ECHO)
        elif value == KBD_CMD_GETID:
            second = KBD_ID_TRANSLATED if translated else KBD_ID[1]
            self._keyboard_reply(KBD_REPLY_ACK, KBD_ID[0], second)
        elif value == KBD_CMD_ENABLE:
            self.scanning = True
            self._keyboard_reply(KBD_REPLY_ACK)
        elif value in (KBD_CMD_RESET_DIS, KBD_CMD_RESET_DEF):
            self._keyboard_defaults()
            self.scanning = value == KBD_CMD_RESET_DEF
            self._keyboard_reply(KBD_REPLY_ACK)
        elif KBD_CMD_SET_ALL_FIRST <= value <= KBD_CMD_SET_ALL_LAST:
            self._keyboard_reply(KBD_REPLY_ACK)
        elif value == KBD_CMD_RESET_BAT:
            self._keyboard_defaults()
            self.scanning = True
            self._keyboard_reply(KBD_REPLY_ACK, KBD_REPLY_BAT_OK)
        else:  # 0xfe (resend) included: the keyboard has sent nothing worth resending
            self._keyboard_reply(KBD_REPLY_RESEND)

    def _keyboard_parameter(self, command: int, value: int) -> None:
        if command == KBD_CMD_SETLEDS:
            self.leds = value & 0x07
        elif command == KBD_CMD_SETREP:
            self.typematic = value & 0x7F
        elif command == KBD_CMD_SSCANSET:
            if value == 0:
                translated = bool(self._ram[0] & I8042_CTR_XLATE)
                current = TRANSLATED_SET[self.scan_set] if translated else self.scan_set
                self._keyboard_reply(KBD_REPLY_ACK, current)
                return
            if value in TRANSLATED_SET:
                self.scan_set = value
        self._keyboard_reply(KBD_REPLY_ACK)

    def _keyboard_defaults(self) -> None:
        self.scan_set = 2
        self.leds = 0
        self.typematic = 0x2B

    def _keyboard_reply(self, *values: int) -> None:
        for value in values:
            self._queue(value, Source.KEYBOARD)
