"""The PC's two chipset reset registers: port 0x92 and port 0xcf9.

- **System Control Port A, port 0x92** ("fast A20 and init", from the IBM
  PS/2; Intel 82371AB PIIX4 datasheet, "Port 92 Register"): bit 0
  (ALT_RST), written as 1 where it was 0, resets the CPU; bit 1 (ALT_A20)
  is the A20 gate. It reads back what was written. At entry it reads 0x02,
  A20 enabled, as a BIOS leaves it (what a kernel booted by `qemu -kernel`
  reads there). A20 is recorded but gates nothing: KVM has no A20 mask.
- **Reset Control Register, port 0xcf9** (PIIX4 datasheet, "Reset Control
  Register"; the ICH datasheets' RST_CNT): bit 1 (SYS_RST) chooses a hard
  reset (1) or a soft one, the CPU alone (0); writing bit 2 (RST_CPU) as 1
  performs it; bit 3 (FULL_RST, ICH) asks for a full power cycle. Bit 1
  reads back, as QEMU's PIIX3 keeps it. Linux's BOOT_CF9 reboot writes
  `cf9 | 2`, then `cf9 | 6` (warm) or `cf9 | 0xe` (cold).

0xcf9 is one byte inside the PCI configuration ports 0xcf8-0xcff: the bus
dispatches an access by its first port, so a dword at 0xcf8 still goes to
CONFIG_ADDRESS and only an access that starts at 0xcf9 comes here (on a PIIX
likewise, only byte accesses decode as the RC register). Both devices call
`on_reset(how)` with a short description; accesses wider than a byte use the
low byte and read all ones above it.
"""

from __future__ import annotations

from collections.abc import Callable

SYSTEM_CONTROL_PORT_A = 0x92
RESET_CONTROL_PORT = 0xCF9

# Port 0x92 bits (PIIX4, "Port 92 Register").
PORT92_ALT_RST = 0x01  # 0 -> 1: reset the CPU
PORT92_ALT_A20 = 0x02  # A20 gate
PORT92_AT_ENTRY = PORT92_ALT_A20  # what a BIOS leaves: A20 on

# Reset Control Register bits (PIIX4; bit 3 from the ICH's RST_CNT).
RC_SYS_RST = 0x02  # 1: hard reset (the whole system), 0: soft (INIT, the CPU)
RC_RST_CPU = 0x04  # 1: reset now, of the kind SYS_RST says
RC_FULL_RST = 0x08  # ICH: a full reset, power cycled
RC_KEPT = RC_SYS_RST  # what reads back (QEMU's PIIX3 keeps this bit alone)


def _with_floating_bytes(value: int, size: int) -> int:
    return value | (((1 << (8 * size)) - 1) & ~0xFF)


class SystemControlPortA:
    """Port 0x92: `on_reset` when bit 0 goes from 0 to 1; bit 1 is A20."""

    def __init__(self, on_reset: Callable[[str], None]) -> None:
        self._on_reset = on_reset
        self.value = PORT92_AT_ENTRY

    @property
    def a20_enabled(self) -> bool:
        return bool(self.value & PORT92_ALT_A20)

    def read(self, offset: int, size: int) -> int:
        return _with_floating_bytes(self.value, size)

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        rising = value & PORT92_ALT_RST and not self.value & PORT92_ALT_RST
        self.value = value
        if rising:
            self._on_reset(f"0x{value:02x} to port 0x92, System Control Port A (bit 0: fast reset)")


class ResetControl:
    """Port 0xcf9: `on_reset` on a write with RST_CPU (bit 2) set."""

    def __init__(self, on_reset: Callable[[str], None]) -> None:
        self._on_reset = on_reset
        self.value = 0

    def read(self, offset: int, size: int) -> int:
        return _with_floating_bytes(self.value, size)

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        self.value = value & RC_KEPT
        if value & RC_RST_CPU:
            kind = (
                "full reset"
                if value & RC_FULL_RST
                else "hard reset"
                if value & RC_SYS_RST
                else "soft reset"
            )
            self._on_reset(f"0x{value:02x} to port 0xcf9, the Reset Control Register ({kind})")
