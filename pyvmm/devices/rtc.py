"""The PC's real-time clock and CMOS RAM: a Motorola MC146818A behind ports 0x70/0x71.

Registers and bits follow the Motorola MC146818A datasheet ("MC146818A Real-Time
Clock Plus RAM (RTC)"): the sections "Address Map", "Time, Calendar and Alarm
Locations" (Table 2 for BCD and binary, 12- and 24-hour formats; alarm bytes
of 11XXXXXX are "don't care"), "Register A" (UIP, DV2-DV0, RS3-RS0; Tables 4
and 5), "Register B" (SET, PIE, AIE, UIE, SQWE, DM, 24/12, DSE), "Register C"
(IRQF, PF, AF, UF), "Register D" (VRT), "Update Cycle" (Table 6: UIP rises
244 us before the update) and "Interrupts". The register names are those of
QEMU's include/hw/rtc/mc146818rtc_regs.h and Linux's include/linux/mc146818rtc.h,
which guest drivers are written against.

Where a PC differs from the bare chip, this follows QEMU's hw/rtc/mc146818rtc.c:

- the index register is port 0x70, the data register port 0x71; bit 7 of a
  write to 0x70 is the PC's NMI-disable bit (kept in `nmi_disabled`; pyvmm has
  no NMI source it gates), bits 0-6 select one of 128 bytes; a read of 0x70
  returns 0xff;
- the time is the host's clock plus an offset the guest sets by writing the
  time registers (the host's clock is never changed), at power-on the host's
  time in UTC, like QEMU's default `-rtc base=utc`;
- register A powers on as 0x26 (32.768 kHz time base, 1024 Hz periodic rate),
  register B as 0x02 (24-hour, BCD), D as 0x80 (VRT): the values QEMU's
  realize function and SeaBIOS's rtc_setup leave for a kernel;
- the century is CMOS byte 0x32 (BCD or binary, as DM says); 0x37, the IBM
  PS/2 century byte, is the same byte;
- the day of the week (register 6, 1 = Sunday) is derived from the date;
- UF keeps being set once a second while SET is held (the update cycle runs,
  only the transfer to the time registers is inhibited), AF is not; the
  daylight-saving bit DSE is kept but does nothing, as in QEMU.

Where QEMU departs from the datasheet this follows the datasheet: PF is set
at the periodic rate whether PIE is set or not (QEMU runs its periodic timer
only with PIE), and the periodic ticks are taps of the same divider as the
seconds, so they keep their phase to the second.

The device is pure: it reads its injected clock (nanoseconds of UTC since the
Unix epoch) at every access and lets time pass only then. An interrupt source
the guest enabled (periodic, alarm, update-ended) raises the IrqLine (IRQ 8 on
a PC) when an access finds its flag set; for a guest that waits in `hlt`
instead, `tick(now)` lets time pass from outside and returns when the line is
next due to rise (pyvmm.machine.rtc_timer has vCPU 0 call it at that time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pyvmm.devices.irq import IrqLine, NoIrq

# Ports and the PC's wiring (QEMU's RTC_ISA_BASE and RTC_ISA_IRQ).
RTC_PORT = 0x70  # the index register; the data register is RTC_PORT + 1
RTC_PORT_SIZE = 2
RTC_GSI = 8  # ISA IRQ 8, the slave PIC's input 0
INDEX_OFFSET = 0
DATA_OFFSET = 1
NMI_DISABLE = 0x80  # bit 7 of a write to port 0x70 on a PC
INDEX_MASK = 0x7F
CMOS_SIZE = 128

# The clock's registers (datasheet, "Address Map").
RTC_SECONDS = 0x00
RTC_SECONDS_ALARM = 0x01
RTC_MINUTES = 0x02
RTC_MINUTES_ALARM = 0x03
RTC_HOURS = 0x04
RTC_HOURS_ALARM = 0x05
RTC_DAY_OF_WEEK = 0x06
RTC_DAY_OF_MONTH = 0x07
RTC_MONTH = 0x08
RTC_YEAR = 0x09
RTC_REG_A = 0x0A
RTC_REG_B = 0x0B
RTC_REG_C = 0x0C
RTC_REG_D = 0x0D

HOURS_PM = 0x80  # the PM bit of the hours bytes in 12-hour mode
ALARM_DONT_CARE = 0xC0  # an alarm byte with both top bits set matches any value

REG_A_UIP = 0x80  # update in progress (read-only)
REG_A_DV = 0x70  # DV2-DV0: the time base, or the divider held in reset
REG_A_RS = 0x0F  # RS3-RS0: the periodic rate
DV_RESET = 0x60  # DV2 and DV1 set (11x): the divider chain held in reset

REG_B_SET = 0x80
REG_B_PIE = 0x40
REG_B_AIE = 0x20
REG_B_UIE = 0x10
REG_B_SQWE = 0x08
REG_B_DM = 0x04  # data mode: 1 binary, 0 BCD
REG_B_24H = 0x02
REG_B_DSE = 0x01

REG_C_IRQF = 0x80
REG_C_PF = 0x40
REG_C_AF = 0x20
REG_C_UF = 0x10
REG_C_MASK = REG_C_PF | REG_C_AF | REG_C_UF  # each flag has its enable at the same bit of B

REG_D_VRT = 0x80  # valid RAM and time: the battery is good

RESET_REG_A = 0x26  # DV = 010 (32.768 kHz), RS = 0110 (1024 Hz)
RESET_REG_B = REG_B_24H

# The PC's CMOS map: SeaBIOS's src/hw/rtc.h names, the values QEMU's
# hw/i386/pc.c pc_cmos_init writes (memory sizes), and Ralf Brown's CMOS list.
CMOS_FLOPPY_DRIVE_TYPE = 0x10
CMOS_DISK_DATA = 0x12
CMOS_EQUIPMENT_INFO = 0x14
CMOS_MEM_BASE_LOW = 0x15  # KiB below 1 MiB (at most 640)
CMOS_MEM_BASE_HIGH = 0x16
CMOS_MEM_EXT_LOW = 0x17  # KiB from 1 MiB up (at most 0xffff), as the POST measured it
CMOS_MEM_EXT_HIGH = 0x18
CMOS_MEM_EXTMEM_LOW = 0x30  # the same, as the BIOS reports it (int 15h AH=88h)
CMOS_MEM_EXTMEM_HIGH = 0x31
CMOS_CENTURY = 0x32
CMOS_MEM_EXTMEM2_LOW = 0x34  # 64 KiB units from 16 MiB up to 4 GiB (at most 0xffff)
CMOS_MEM_EXTMEM2_HIGH = 0x35
CMOS_IBM_PS2_CENTURY = 0x37
CMOS_MEM_HIGHMEM_LOW = 0x5B  # 64 KiB units above 4 GiB, three bytes
CMOS_MEM_HIGHMEM_MID = 0x5C
CMOS_MEM_HIGHMEM_HIGH = 0x5D
CMOS_BIOS_SMP_COUNT = 0x5F  # CPUs - 1
EQUIPMENT_FPU = 0x02  # equipment byte bit 1: a math coprocessor

# The bytes the time follows; the alarm bytes are plain registers.
TIME_REGISTERS = frozenset(
    {
        RTC_SECONDS,
        RTC_MINUTES,
        RTC_HOURS,
        RTC_DAY_OF_WEEK,
        RTC_DAY_OF_MONTH,
        RTC_MONTH,
        RTC_YEAR,
        CMOS_CENTURY,
    }
)

NS_PER_S = 1_000_000_000
KIB = 1024
MIB = 1024 * KIB
RTC_CLOCK_HZ = 32_768  # the PC's crystal; the divider chain counts its cycles
# UIP is set for the last 244 us before each update (datasheet Table 6, t_BUC;
# QEMU's UIP_HOLD_LENGTH: 8 cycles of 32.768 kHz).
UIP_HOLD_NS = 8 * NS_PER_S // RTC_CLOCK_HZ
# "The first update cycle begins one-half second later" than the divider's release.
DIVIDER_RELEASE_PHASE_NS = NS_PER_S // 2
SECONDS_PER_DAY = 86_400
_NEVER = -1  # an alarm byte out of range: it matches no time
# 1970-01-01 (day 0) was a Thursday; register 6 counts Sunday as 1.
_EPOCH_DAY_OF_WEEK = 5

Clock = Callable[[], int]  # nanoseconds of UTC since the Unix epoch


def periodic_period_cycles(rate: int) -> int:
    """The periodic interrupt's period for RS3-RS0 = `rate`, in 32.768 kHz cycles; 0: none.

    Datasheet Table 5 with a 32.768 kHz time base: 0001 and 0010 give 256 and
    128 Hz (the 4 MHz taps, not 32768 and 16384 Hz), 0011 to 1111 give 8192 Hz
    down to 2 Hz. QEMU's periodic_period_to_clock computes the same.
    """
    rate &= REG_A_RS
    if rate == 0:
        return 0
    if rate <= 2:
        rate += 7
    return 1 << (rate - 1)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date; any int, out-of-range ones too.

    A month outside 1..12 carries into the year and a day outside the month
    counts on from its first, as mktime does: a guest's garbage gives a date,
    never an error.
    """
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    if month <= 2:
        year -= 1
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1  # from March 1st
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of the day `days` after 1970-01-01 (proleptic Gregorian)."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_from_march + 2) // 5 + 1
    month = month_from_march + 3 if month_from_march < 10 else month_from_march - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def pc_cmos_memory(ram_below_4g: int, ram_above_4g: int, cpus: int) -> dict[int, int]:
    """The CMOS bytes a PC's firmware leaves for the kernel: memory sizes, equipment, CPUs.

    `ram_below_4g` and `ram_above_4g` are bytes of RAM below and above 4 GiB.
    As QEMU's hw/i386/pc.c (pc_cmos_init, rtc_set_cpus_count), read back by
    SeaBIOS's src/fw/paravirt.c (qemu_preinit, qemu_early_e820) and old
    kernels: base memory in KiB (at most 640), memory from 1 MiB in KiB (at
    most 0xffff) twice, memory from 16 MiB in 64 KiB units (at most 0xffff),
    memory above 4 GiB in 64 KiB units (three bytes), CPUs - 1. No floppy
    drive (0x10 = 0), no IDE disk (0x12 = 0), and the equipment byte says only
    "math coprocessor" (QEMU's also claims a PS/2 mouse; pyvmm has none).
    """
    base = min(ram_below_4g // KIB, 640)
    extended = min(max(ram_below_4g - MIB, 0) // KIB, 0xFFFF)
    above_16m = min(max(ram_below_4g - 16 * MIB, 0) // (64 * KIB), 0xFFFF)
    above_4g = min(ram_above_4g // (64 * KIB), 0xFF_FFFF)
    return {
        CMOS_FLOPPY_DRIVE_TYPE: 0,
        CMOS_DISK_DATA: 0,
        CMOS_EQUIPMENT_INFO: EQUIPMENT_FPU,
        CMOS_MEM_BASE_LOW: base & 0xFF,
        CMOS_MEM_BASE_HIGH: base >> 8,
        CMOS_MEM_EXT_LOW: extended & 0xFF,
        CMOS_MEM_EXT_HIGH: extended >> 8,
        CMOS_MEM_EXTMEM_LOW: extended & 0xFF,
        CMOS_MEM_EXTMEM_HIGH: extended >> 8,
        CMOS_MEM_EXTMEM2_LOW: above_16m & 0xFF,
        CMOS_MEM_EXTMEM2_HIGH: above_16m >> 8,
        CMOS_MEM_HIGHMEM_LOW: above_4g & 0xFF,
        CMOS_MEM_HIGHMEM_MID: (above_4g >> 8) & 0xFF,
        CMOS_MEM_HIGHMEM_HIGH: above_4g >> 16,
        # QEMU writes 0 when the count does not fit (the BIOS then asks fw_cfg).
        CMOS_BIOS_SMP_COUNT: cpus - 1 if 1 <= cpus <= 0x100 else 0,
    }


# What the chip's RESET pin clears in register B (datasheet, "RESET"); the
# clock, the calendar, the rest of register B, register A and the RAM stay.
REG_B_CLEARED_BY_RESET = REG_B_PIE | REG_B_AIE | REG_B_UIE | REG_B_SQWE


class CmosContents:
    """What the battery keeps while the machine resets: the 128 bytes and the clock.

    `ram` is the chip's 128 bytes as they stood (registers A and B, the
    alarms, the latched time while the clock is stopped, CMOS RAM);
    `offset_ns` is the guest's time minus the host's, in nanoseconds, which
    the guest moves by setting the clock. Made by `Mc146818Rtc.battery_backed`.
    Read-only once made.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("offset_ns", "ram")

    def __init__(self, ram: bytes, offset_ns: int) -> None:
        self.ram = ram
        self.offset_ns = offset_ns


class Mc146818Rtc:
    """The MC146818A with the PC's 128 bytes of CMOS RAM, seen through ports 0x70 and 0x71.

    `clock()` returns the time in nanoseconds of UTC since the Unix epoch (the
    host's `time.time_ns` in pyvmm; a fake in tests). `irq` is the RTC's
    interrupt line (ISA IRQ 8): high while register C's IRQF is set. `cmos`
    presets bytes 0x0e-0x7f (e.g. `pc_cmos_memory`); the clock's registers
    0x00-0x0d and the century byte come from the clock. `battery` (from the
    previous machine's `battery_backed`) makes this a reset rather than a
    power-on: the RAM and the guest's clock carry over, and only what the
    chip's RESET pin clears is cleared (PIE, AIE, UIE, SQWE and register C's
    flags); `cmos` is written over it as firmware rewrites it at each boot.
    Raises ValueError for a preset outside 0x0e-0x7f or a value that is not a
    byte, or battery contents that are not 128 bytes.
    """

    def __init__(
        self,
        clock: Clock,
        irq: IrqLine | None = None,
        cmos: Mapping[int, int] | None = None,
        battery: CmosContents | None = None,
    ) -> None:
        self._clock = clock
        self._irq: IrqLine = irq if irq is not None else NoIrq()
        self._irq_level = False
        self._ram = bytearray(CMOS_SIZE)
        if battery is not None and len(battery.ram) != CMOS_SIZE:
            raise ValueError(f"CMOS contents of {len(battery.ram)} bytes, not {CMOS_SIZE}")
        if battery is not None:
            self._ram[:] = battery.ram
        for index, value in (cmos or {}).items():
            if not RTC_REG_D < index < CMOS_SIZE or index in (CMOS_CENTURY, CMOS_IBM_PS2_CENTURY):
                raise ValueError(f"CMOS byte 0x{index:x} is not plain CMOS RAM (0x0e-0x7f)")
            if not 0 <= value <= 0xFF:
                raise ValueError(f"CMOS byte 0x{index:x}: {value} is not a byte")
            self._ram[index] = value
        if battery is None:
            self._ram[RTC_REG_A] = RESET_REG_A
            self._ram[RTC_REG_B] = RESET_REG_B
        else:
            self._ram[RTC_REG_B] &= ~REG_B_CLEARED_BY_RESET
        self._ram[RTC_REG_C] = 0
        self._ram[RTC_REG_D] = REG_D_VRT
        self._index = 0
        self._nmi_disabled = False
        self._flags = 0  # PF, AF, UF of register C
        now = clock()
        # While the divider runs, the guest's time in ns is the clock's plus this.
        self._offset_ns = 0 if battery is None else battery.offset_ns
        self._last_ns = now  # time has passed in the device up to here
        # Counts the changes that can move the next interrupt (see `schedule_changes`).
        self._schedule_changes = 0
        self._registers_cache: tuple[tuple[int, int] | None, dict[int, int]] = (None, {})

    def battery_backed(self) -> CmosContents:
        """What survives a machine reset (see `CmosContents`), as of now."""
        return CmosContents(bytes(self._ram), self._offset_ns)

    # -- the bus interface -------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """Read `size` byte ports from `offset` (0: port 0x70, 1: 0x71), little-endian."""
        value = 0
        for index in range(size):
            value |= self._read_port(offset + index) << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Write `size` byte ports from `offset` up, low byte first (`outw` 0x70: index, data)."""
        for index in range(size):
            self._write_port(offset + index, (value >> (8 * index)) & 0xFF)

    # -- the host side -----------------------------------------------------

    def tick(self, now: int | None = None) -> int | None:
        """Let time pass up to `now` (the clock's ns; None: read the clock) and drive the line.

        Returns the clock time (ns) at which the IRQ line is next due to rise:
        the next periodic tick (PIE), update (UIE) or alarm (AIE), whichever
        comes first; None when the line is high already (the guest has not
        read register C yet) or no enabled source can raise it. A timer that
        calls `tick` at that time delivers interrupts to a guest that waits
        in `hlt`; any register access may move the time (see
        `schedule_changes`).
        """
        if now is None:
            now = self._clock()
        self._advance(now)
        if self._irq_level or not self._divider_running():
            return None
        guest_ns = now + self._offset_ns
        control = self._ram[RTC_REG_B]
        due: list[int] = []
        period = periodic_period_cycles(self._ram[RTC_REG_A])
        if control & REG_B_PIE and period:
            cycle = guest_ns * RTC_CLOCK_HZ // NS_PER_S
            next_cycle = (cycle // period + 1) * period
            due.append(-(-next_cycle * NS_PER_S // RTC_CLOCK_HZ))  # the first ns of that cycle
        if control & REG_B_UIE:
            due.append((guest_ns // NS_PER_S + 1) * NS_PER_S)
        if control & REG_B_AIE and not control & REG_B_SET:
            alarm = self._next_alarm(guest_ns // NS_PER_S)
            if alarm is not None:
                due.append(alarm * NS_PER_S)
        return min(due) - self._offset_ns if due else None

    @property
    def schedule_changes(self) -> int:
        """How many accesses so far may have moved the time `tick` returns.

        Writes to the clock's registers and reads of register C (which lower
        the line) count; a timer compares the count to know when to ask again.
        """
        return self._schedule_changes

    @property
    def irq_level(self) -> bool:
        """The level last driven on the interrupt line (register C's IRQF)."""
        return self._irq_level

    @property
    def nmi_disabled(self) -> bool:
        """Bit 7 of the last write to port 0x70: the PC's NMI mask."""
        return self._nmi_disabled

    @property
    def index(self) -> int:
        """The CMOS byte port 0x71 reaches (0-0x7f)."""
        return self._index

    def guest_seconds(self, now: int | None = None) -> int:
        """The time the guest's registers hold, in seconds since the Unix epoch."""
        if now is None:
            now = self._clock()
        if self._clock_running():
            return (now + self._offset_ns) // NS_PER_S
        return self._registers_seconds()

    # -- ports ---------------------------------------------------------------

    def _read_port(self, offset: int) -> int:
        if offset != DATA_OFFSET:
            return 0xFF  # the index register is write-only (QEMU reads 0xff); past the device
        now = self._clock()
        self._advance(now)
        return self._read_register(self._index, now)

    def _write_port(self, offset: int, value: int) -> None:
        if offset == INDEX_OFFSET:
            self._nmi_disabled = bool(value & NMI_DISABLE)
            self._index = value & INDEX_MASK
        elif offset == DATA_OFFSET:
            now = self._clock()
            self._advance(now)
            self._write_register(self._index, value, now)

    # -- registers -----------------------------------------------------------

    def _read_register(self, index: int, now: int) -> int:
        if index == CMOS_IBM_PS2_CENTURY:
            index = CMOS_CENTURY
        if index in TIME_REGISTERS:
            if self._clock_running():
                return self._time_registers((now + self._offset_ns) // NS_PER_S)[index]
            return self._ram[index]
        if index == RTC_REG_A:
            uip = REG_A_UIP if self._update_in_progress(now) else 0
            return self._ram[RTC_REG_A] | uip
        if index == RTC_REG_C:
            value = self._register_c()
            # Reading C clears every flag, and with IRQF the line.
            self._flags = 0
            self._schedule_changes += 1
            self._update_irq()
            return value
        if index == RTC_REG_D:
            return REG_D_VRT
        return self._ram[index]

    def _write_register(self, index: int, value: int, now: int) -> None:
        if index == CMOS_IBM_PS2_CENTURY:
            index = CMOS_CENTURY
        if index in TIME_REGISTERS:
            if self._clock_running():
                # The chip takes the byte at once; the others keep the time they show.
                self._latch(now)
                self._ram[index] = value
                self._set_from_registers(now, self._phase(now))
            else:
                self._ram[index] = value  # SET held, or the divider stopped: taken later
            self._schedule_changes += 1
        elif index == RTC_REG_A:
            self._write_register_a(value, now)
        elif index == RTC_REG_B:
            self._write_register_b(value, now)
        elif index in (RTC_REG_C, RTC_REG_D):
            return  # read-only
        else:
            self._ram[index] = value
            if index in (RTC_SECONDS_ALARM, RTC_MINUTES_ALARM, RTC_HOURS_ALARM):
                self._schedule_changes += 1

    def _write_register_a(self, value: int, now: int) -> None:
        was_running = self._divider_running()
        self._ram[RTC_REG_A] = value & ~REG_A_UIP  # UIP is read-only
        if was_running and not self._divider_running():
            if not self._ram[RTC_REG_B] & REG_B_SET:
                self._latch(now)  # the registers keep the time the divider stopped at
        elif not was_running and self._divider_running():
            # Released from reset: the first update comes half a second later.
            self._set_from_registers(now, DIVIDER_RELEASE_PHASE_NS)
        self._schedule_changes += 1

    def _write_register_b(self, value: int, now: int) -> None:
        old = self._ram[RTC_REG_B]
        if value & REG_B_SET:
            value &= ~REG_B_UIE  # "the SET bit going high clears the UIE bit"
            if not old & REG_B_SET and self._divider_running():
                self._latch(now)  # updates stop: the registers keep the time they showed
        elif old & REG_B_SET and self._divider_running():
            # SET released: the clock goes on from the registers the guest wrote, in
            # the mode they were written in, at the divider's phase (as QEMU).
            self._set_from_registers(now, self._phase(now))
        self._ram[RTC_REG_B] = value
        self._schedule_changes += 1
        self._update_irq()  # IRQF follows the enables at once (datasheet, "Register C")

    def _register_c(self) -> int:
        flags = self._flags
        if flags & self._ram[RTC_REG_B] & REG_C_MASK:
            flags |= REG_C_IRQF
        return flags

    # -- time ----------------------------------------------------------------

    def _divider_running(self) -> bool:
        # DV 000, 001 and 010 are time bases; 11x holds the divider in reset and
        # 011/10x are factory tests, in which QEMU's clock stops too.
        return self._ram[RTC_REG_A] & REG_A_DV <= 0x20

    def _clock_running(self) -> bool:
        return self._divider_running() and not self._ram[RTC_REG_B] & REG_B_SET

    def _phase(self, now: int) -> int:
        return (now + self._offset_ns) % NS_PER_S

    def _update_in_progress(self, now: int) -> bool:
        # "Writing the SET bit to a one inhibits any update cycle and then clears UIP."
        if not self._clock_running():
            return False
        return self._phase(now) >= NS_PER_S - UIP_HOLD_NS

    def _advance(self, now: int) -> None:
        """Set the flags of the events between the last access and `now`."""
        last, self._last_ns = self._last_ns, now
        if now <= last or not self._divider_running():
            return  # no time passed (or the host's clock stepped back), or no divider
        start, end = last + self._offset_ns, now + self._offset_ns
        period = periodic_period_cycles(self._ram[RTC_REG_A])
        if period:
            # PF is set whatever PIE says; PIE only lets it through to IRQF.
            start_tick = start * RTC_CLOCK_HZ // NS_PER_S // period
            if end * RTC_CLOCK_HZ // NS_PER_S // period > start_tick:
                self._flags |= REG_C_PF
        start_s, end_s = start // NS_PER_S, end // NS_PER_S
        if end_s > start_s:
            self._flags |= REG_C_UF
            if not self._ram[RTC_REG_B] & REG_B_SET:
                alarm = self._next_alarm(start_s)
                if alarm is not None and alarm <= end_s:
                    self._flags |= REG_C_AF
        self._update_irq()

    def _latch(self, now: int) -> None:
        """Store the time the registers show now, for while the clock does not run."""
        for index, value in self._time_registers((now + self._offset_ns) // NS_PER_S).items():
            self._ram[index] = value

    def _set_from_registers(self, now: int, phase_ns: int) -> None:
        """Run the clock from the time in the registers, `phase_ns` into its second."""
        self._offset_ns = self._registers_seconds() * NS_PER_S + phase_ns - now

    def _to_register(self, value: int) -> int:
        if self._ram[RTC_REG_B] & REG_B_DM:
            return value & 0xFF
        return (((value // 10) % 10) << 4 | value % 10) & 0xFF if 0 <= value < 100 else 0xFF

    def _from_register(self, value: int) -> int:
        if self._ram[RTC_REG_B] & REG_B_DM:
            return value
        return (value >> 4) * 10 + (value & 0x0F)

    def _hours_to_register(self, hours: int) -> int:
        if self._ram[RTC_REG_B] & REG_B_24H:
            return self._to_register(hours)
        return self._to_register(hours % 12 or 12) | (HOURS_PM if hours >= 12 else 0)

    def _hours_from_register(self, value: int) -> int:
        if self._ram[RTC_REG_B] & REG_B_24H:
            return self._from_register(value)
        hours = self._from_register(value & ~HOURS_PM) % 12
        return hours + 12 if value & HOURS_PM else hours

    def _time_registers(self, seconds: int) -> dict[int, int]:
        # They change once a second: a guest reading ten bytes converts once.
        key = (seconds, self._ram[RTC_REG_B] & (REG_B_DM | REG_B_24H))
        if self._registers_cache[0] != key:
            self._registers_cache = (key, self._convert_time(seconds))
        return self._registers_cache[1]

    def _convert_time(self, seconds: int) -> dict[int, int]:
        days, second_of_day = divmod(seconds, SECONDS_PER_DAY)
        year, month, day = civil_from_days(days)
        hours, rest = divmod(second_of_day, 3600)
        minutes, secs = divmod(rest, 60)
        century, year_of_century = divmod(year, 100)
        return {
            RTC_SECONDS: self._to_register(secs),
            RTC_MINUTES: self._to_register(minutes),
            RTC_HOURS: self._hours_to_register(hours),
            RTC_DAY_OF_WEEK: self._to_register((days + _EPOCH_DAY_OF_WEEK - 1) % 7 + 1),
            RTC_DAY_OF_MONTH: self._to_register(day),
            RTC_MONTH: self._to_register(month),
            RTC_YEAR: self._to_register(year_of_century),
            CMOS_CENTURY: self._to_register(century),
        }

    def _registers_seconds(self) -> int:
        ram = self._ram
        year = self._from_register(ram[RTC_YEAR]) + 100 * self._from_register(ram[CMOS_CENTURY])
        days = days_from_civil(
            year, self._from_register(ram[RTC_MONTH]), self._from_register(ram[RTC_DAY_OF_MONTH])
        )
        return (
            days * SECONDS_PER_DAY
            + self._hours_from_register(ram[RTC_HOURS]) * 3600
            + self._from_register(ram[RTC_MINUTES]) * 60
            + self._from_register(ram[RTC_SECONDS])
        )

    def _alarm_field(self, index: int, limit: int) -> int | None:
        """The alarm byte's value, None for "don't care", _NEVER when no time matches it."""
        value = self._ram[index]
        if value & ALARM_DONT_CARE == ALARM_DONT_CARE:
            return None
        decoded = (
            self._hours_from_register(value)
            if index == RTC_HOURS_ALARM
            else self._from_register(value)
        )
        return decoded if 0 <= decoded < limit else _NEVER

    def _next_alarm(self, after: int) -> int | None:
        """The first second after `after` whose time of day the alarm bytes match."""
        hours = self._alarm_field(RTC_HOURS_ALARM, 24)
        minutes = self._alarm_field(RTC_MINUTES_ALARM, 60)
        seconds = self._alarm_field(RTC_SECONDS_ALARM, 60)
        if _NEVER in (hours, minutes, seconds):
            return None
        when = after + 1
        # Each step moves to the next time the first mismatching field matches;
        # a handful of steps always reaches a match within a day.
        for _ in range(8):
            day, second_of_day = divmod(when, SECONDS_PER_DAY)
            hour, rest = divmod(second_of_day, 3600)
            minute, second = divmod(rest, 60)
            start_of_hour = day * SECONDS_PER_DAY + hour * 3600
            if hours is not None and hour != hours:
                when = day * SECONDS_PER_DAY + hours * 3600
                when += SECONDS_PER_DAY if hour > hours else 0
            elif minutes is not None and minute != minutes:
                when = start_of_hour + minutes * 60 + (3600 if minute > minutes else 0)
            elif seconds is not None and second != seconds:
                when = start_of_hour + minute * 60 + seconds + (60 if second > seconds else 0)
            else:
                return when
        return None  # not reached: the fields are in range

    def _update_irq(self) -> None:
        level = bool(self._flags & self._ram[RTC_REG_B] & REG_C_MASK)
        if level != self._irq_level:
            self._irq_level = level
            self._irq.set_level(level)
