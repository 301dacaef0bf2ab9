"""The ACPI fixed hardware of a PC chipset: PM1a event and control blocks, the PM timer.

ACPI 6.3, 4.8 "ACPI Hardware Model": 4.8.2.1 "Power Management Timer",
4.8.3.1 "PM1 Event Grouping" (PM1_STS, PM1_EN), 4.8.3.2 "PM1 Control
Grouping" (PM1_CNT), and 7.4.2 "\\_Sx (System States)" for the sleep types.
The blocks sit where QEMU's PIIX4 and ICH9 power management put them once
the firmware has programmed their base, 0x600 (the FADT of `qemu-system-x86_64
-kernel`, `-M pc` and `-M q35` alike, says PM1a_EVT_BLK 0x600, PM1a_CNT_BLK
0x604, PM_TMR_BLK 0x608), so a guest that hard-codes QEMU's ports works too:

    +0  PM1_STS  16 bits, write 1 to clear   TMR_STS, WAK_STS...
    +2  PM1_EN   16 bits                     TMR_EN...
    +4  PM1_CNT  16 bits                     SCI_EN, SLP_TYP, SLP_EN
    +8  PM_TMR   32 bits, read-only          a 24-bit count at 3.579545 MHz

The timer counts from the injected clock (nanoseconds), as QEMU's counts
from its virtual clock (hw/acpi/core.c): 24 bits wide (the FADT leaves
TMR_VAL_EXT clear), TMR_STS set each time bit 23 changes. The FADT has no
SMI_CMD port, so the hardware is in ACPI mode from power-on: SCI_EN reads 1
(4.8.3.2.1; OSPM leaves it alone). Writing SLP_EN with SLP_TYP 0, the value
the DSDT's \\_S5 object gives (QEMU's too), is the soft-off: `on_power_off`
is called and the machine ends the run. pyvmm offers no other sleep state,
so other sleep types are ignored. No event raises an SCI: PM1_EN is kept,
but nothing is wired to GSI 9.
"""

from __future__ import annotations

from collections.abc import Callable

from pyvmm.errors import Log

log = Log(__name__)

# The block's place in the port space and its registers' offsets (see the docstring).
PM_BASE_PORT = 0x600
PM1A_EVT_BLK = PM_BASE_PORT
PM1_EVT_LEN = 4
PM1A_CNT_BLK = PM_BASE_PORT + 4
PM1_CNT_LEN = 2
PM_TMR_BLK = PM_BASE_PORT + 8
PM_TMR_LEN = 4
PM_PORT_SIZE = 12  # PM1a_EVT_BLK up to the end of PM_TMR_BLK
PM1_STS_OFFSET = 0
PM1_EN_OFFSET = 2
PM1_CNT_OFFSET = 4
PM_TMR_OFFSET = 8

# 4.8.2.1: the timer's frequency; 24 bits wide unless the FADT sets TMR_VAL_EXT.
PM_TIMER_FREQUENCY = 3_579_545
PM_TIMER_BITS = 24
PM_TIMER_MASK = (1 << PM_TIMER_BITS) - 1
NANOSECONDS = 1_000_000_000

# PM1_STS and PM1_EN bits (4.8.3.1.1, Tables 4-16 and 4-17).
TMR_STS = 1 << 0
BM_STS = 1 << 4
GBL_STS = 1 << 5
PWRBTN_STS = 1 << 8
SLPBTN_STS = 1 << 9
RTC_STS = 1 << 10
WAK_STS = 1 << 15
TMR_EN = 1 << 0
GBL_EN = 1 << 5
PWRBTN_EN = 1 << 8
SLPBTN_EN = 1 << 9
RTC_EN = 1 << 10
PM1_EN_BITS = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN

# PM1_CNT bits (4.8.3.2.1, Table 4-18).
SCI_EN = 1 << 0
BM_RLD = 1 << 1
GBL_RLS = 1 << 2  # write-only: would raise an SMI to the BIOS, and there is none
SLP_TYP_SHIFT = 10
SLP_TYP_MASK = 0x7 << SLP_TYP_SHIFT
SLP_EN = 1 << 13  # write-only: enter the sleep state SLP_TYP names
PM1_CNT_STORED = BM_RLD | SLP_TYP_MASK

# The sleep type that means soft-off (S5): \_S5's first element in pyvmm's DSDT.
S5_SLP_TYP = 0


class AcpiPm:
    """PM1a_EVT_BLK, PM1a_CNT_BLK and PM_TMR_BLK as one device of PM_PORT_SIZE ports.

    `clock()` gives the time in nanoseconds (any monotonic origin); the
    timer reads 0 at the first reading. `on_power_off()` is called when the
    guest writes SLP_EN with the S5 sleep type. Accesses of 1, 2 or 4
    bytes at any offset see the registers' little-endian bytes; the two
    bytes between PM1_CNT and PM_TMR read as zero and ignore writes.
    """

    def __init__(self, clock: Callable[[], int], on_power_off: Callable[[], None]) -> None:
        self._clock = clock
        self._on_power_off = on_power_off
        self._origin: int | None = None
        self.pm1_en = 0
        self.pm1_cnt = SCI_EN
        self._timer_periods_seen = 0  # bit 23 changes already acknowledged (TMR_STS)

    def ticks(self) -> int:
        """Timer ticks since the first reading (not masked to 24 bits)."""
        now = self._clock()
        if self._origin is None:
            self._origin = now
        return max(0, now - self._origin) * PM_TIMER_FREQUENCY // NANOSECONDS

    def timer(self) -> int:
        """PM_TMR: the low 24 bits of the count (4.8.2.1)."""
        return self.ticks() & PM_TIMER_MASK

    def pm1_status(self) -> int:
        """PM1_STS; TMR_STS is set once bit 23 of the count has changed since it was cleared."""
        return self._status_at(self.ticks())

    def _status_at(self, ticks: int) -> int:
        # No event sets the other status bits (no buttons, no RTC alarm, no wake).
        periods = ticks >> (PM_TIMER_BITS - 1)
        return TMR_STS if periods != self._timer_periods_seen else 0

    def read(self, offset: int, size: int) -> int:
        registers = self._snapshot()
        return int.from_bytes(registers[offset : offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        data = value.to_bytes(size, "little")
        for register in (PM1_STS_OFFSET, PM1_EN_OFFSET, PM1_CNT_OFFSET):
            # The bytes of this 16-bit register the access covers, and their value.
            mask = written = 0
            for index, byte in enumerate(data):
                position = offset + index - register
                if 0 <= position < 2:
                    mask |= 0xFF << (8 * position)
                    written |= byte << (8 * position)
            if mask:
                self._write_register(register, mask, written)

    def _snapshot(self) -> bytes:
        """All PM_PORT_SIZE bytes as the guest would read them now (one clock reading)."""
        ticks = self.ticks()
        return (
            self._status_at(ticks).to_bytes(2, "little")
            + self.pm1_en.to_bytes(2, "little")
            + self.pm1_cnt.to_bytes(2, "little")
            + bytes(2)
            + (ticks & PM_TIMER_MASK).to_bytes(4, "little")
        )

    def _write_register(self, register: int, mask: int, value: int) -> None:
        if register == PM1_STS_OFFSET:
            if value & mask & TMR_STS:  # write 1 to clear
                self._timer_periods_seen = self.ticks() >> (PM_TIMER_BITS - 1)
        elif register == PM1_EN_OFFSET:
            self.pm1_en = (self.pm1_en & ~mask | value & mask) & PM1_EN_BITS
        else:
            stored = mask & PM1_CNT_STORED
            self.pm1_cnt = self.pm1_cnt & ~stored | value & stored
            if value & mask & SLP_EN:
                self._sleep((value & SLP_TYP_MASK) >> SLP_TYP_SHIFT)

    def _sleep(self, sleep_type: int) -> None:
        if sleep_type == S5_SLP_TYP:
            self._on_power_off()
        else:
            log.info("guest asked for sleep type %d: pyvmm offers only S5 (type 0)", sleep_type)
