"""The MC146818A model against the datasheet, QEMU's choices and the sequences Linux uses.

The register sequences are those of Linux's drivers/rtc/rtc-mc146818-lib.c
(`mc146818_avoid_UIP` / `mc146818_get_time`, `mc146818_set_time`) and
drivers/rtc/rtc-cmos.c (`cmos_do_probe`, `cmos_irq_enable`,
`cmos_irq_set_freq`, `cmos_set_alarm`). Time is a fake clock the tests move.
"""

from __future__ import annotations

import calendar
import datetime
import random
import signal
import threading
import time
from collections.abc import Callable

import pytest

from pyvmm.cli import main
from pyvmm.cli.qemu_options import QEMU_OPTIONS, CommandContext
from pyvmm.devices.rtc import (
    ALARM_DONT_CARE,
    CMOS_CENTURY,
    CMOS_IBM_PS2_CENTURY,
    NS_PER_S,
    REG_A_UIP,
    REG_B_24H,
    REG_B_AIE,
    REG_B_DM,
    REG_B_PIE,
    REG_B_SET,
    REG_B_UIE,
    REG_C_AF,
    REG_C_IRQF,
    REG_C_PF,
    REG_C_UF,
    RTC_DAY_OF_MONTH,
    RTC_DAY_OF_WEEK,
    RTC_HOURS,
    RTC_HOURS_ALARM,
    RTC_MINUTES,
    RTC_MINUTES_ALARM,
    RTC_MONTH,
    RTC_REG_A,
    RTC_REG_B,
    RTC_REG_C,
    RTC_REG_D,
    RTC_SECONDS,
    RTC_SECONDS_ALARM,
    RTC_YEAR,
    Mc146818Rtc,
    civil_from_days,
    days_from_civil,
    pc_cmos_memory,
)
from pyvmm.machine.rtc_timer import RtcTimer

# Linux's include/linux/mc146818rtc.h
RTC_REF_CLCK_32KHZ = 0x20
RTC_DIV_RESET2 = 0x70
MIB = 1 << 20
GIB = 1 << 30


class FakeClock:
    """ns since the epoch; each reading moves it on by `step` (a port access takes time)."""

    def __init__(self, when: datetime.datetime, step: int = 0) -> None:
        self.ns = calendar.timegm(when.utctimetuple()) * NS_PER_S + when.microsecond * 1000
        self.step = step

    def __call__(self) -> int:
        now = self.ns
        self.ns += self.step
        return now

    def advance(self, ns: int) -> None:
        self.ns += ns


class RecordingLine:
    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, high: bool) -> None:
        self.levels.append(high)

    @property
    def high(self) -> bool:
        return bool(self.levels) and self.levels[-1]


def utc(*fields: int) -> datetime.datetime:
    return datetime.datetime(*fields, tzinfo=datetime.timezone.utc)  # type: ignore[misc]


def make(
    when: datetime.datetime, step: int = 0, **kwargs: object
) -> tuple[Mc146818Rtc, FakeClock, RecordingLine]:
    clock = FakeClock(when, step)
    line = RecordingLine()
    return Mc146818Rtc(clock, line, **kwargs), clock, line  # type: ignore[arg-type]


def cmos_read(rtc: Mc146818Rtc, index: int) -> int:
    rtc.write(0, 1, index)
    return rtc.read(1, 1)


def cmos_write(rtc: Mc146818Rtc, index: int, value: int) -> None:
    rtc.write(0, 1, index)
    rtc.write(1, 1, value)


def bcd2bin(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def linux_get_time(rtc: Mc146818Rtc, clock: FakeClock) -> datetime.datetime:
    """mc146818_avoid_UIP + mc146818_get_time_callback, century from the FADT's 0x32."""
    for _ in range(100):
        seconds = cmos_read(rtc, RTC_SECONDS)
        if cmos_read(rtc, RTC_REG_A) & REG_A_UIP:
            clock.advance(100_000)  # udelay(UIP_RECHECK_DELAY)
            continue
        if seconds != cmos_read(rtc, RTC_SECONDS):
            continue
        fields = [cmos_read(rtc, index) for index in (RTC_MINUTES, RTC_HOURS)]
        fields += [cmos_read(rtc, index) for index in (RTC_DAY_OF_MONTH, RTC_MONTH, RTC_YEAR)]
        century = cmos_read(rtc, CMOS_CENTURY)
        control = cmos_read(rtc, RTC_REG_B)
        if cmos_read(rtc, RTC_REG_A) & REG_A_UIP:
            clock.advance(100_000)
            continue
        if seconds != cmos_read(rtc, RTC_SECONDS):
            continue
        values = [seconds, *fields, century]
        if not control & REG_B_DM:
            values = [bcd2bin(value) for value in values]
        sec, minute, hour, mday, month, year, century = values
        return utc(century * 100 + year, month, mday, hour, minute, sec)
    raise AssertionError("UIP never cleared")


def linux_set_time(rtc: Mc146818Rtc, when: datetime.datetime) -> None:
    """mc146818_set_time: SET, divider reset, the bytes (BCD), then both registers back."""
    century, year = divmod(when.year, 100)
    binary = cmos_read(rtc, RTC_REG_B) & REG_B_DM

    def enc(value: int) -> int:
        return value if binary else (value // 10) << 4 | value % 10

    save_control = cmos_read(rtc, RTC_REG_B)
    cmos_write(rtc, RTC_REG_B, save_control | REG_B_SET)
    save_freq_select = cmos_read(rtc, RTC_REG_A)
    cmos_write(rtc, RTC_REG_A, save_freq_select | RTC_DIV_RESET2)
    for index, value in (
        (RTC_YEAR, year),
        (RTC_MONTH, when.month),
        (RTC_DAY_OF_MONTH, when.day),
        (RTC_HOURS, when.hour),
        (RTC_MINUTES, when.minute),
        (RTC_SECONDS, when.second),
        (CMOS_CENTURY, century),
    ):
        cmos_write(rtc, index, enc(value))
    cmos_write(rtc, RTC_REG_B, save_control)
    cmos_write(rtc, RTC_REG_A, save_freq_select)


def check_intr(rtc: Mc146818Rtc) -> None:
    """cmos_checkintr: read register C after changing an enable bit."""
    cmos_read(rtc, RTC_REG_C)


def irq_enable(rtc: Mc146818Rtc, mask: int) -> None:
    """cmos_irq_enable: flush pending status, then set the enable bits."""
    control = cmos_read(rtc, RTC_REG_B)
    check_intr(rtc)
    cmos_write(rtc, RTC_REG_B, control | mask)
    check_intr(rtc)


# --- the time -------------------------------------------------------------------


def test_power_on_registers_are_what_seabios_leaves() -> None:
    rtc, _, line = make(utc(2024, 2, 29, 13, 45, 10))
    assert cmos_read(rtc, RTC_REG_A) & ~REG_A_UIP == 0x26  # 32.768 kHz, 1024 Hz
    assert cmos_read(rtc, RTC_REG_B) == REG_B_24H  # 24-hour, BCD, no interrupts
    assert cmos_read(rtc, RTC_REG_C) == 0
    assert cmos_read(rtc, RTC_REG_D) == 0x80  # VRT
    assert line.levels == []


def test_linux_reads_the_clock_in_bcd() -> None:
    rtc, clock, _ = make(utc(2024, 2, 29, 13, 45, 10, 250_000), step=8_000)
    assert linux_get_time(rtc, clock) == utc(2024, 2, 29, 13, 45, 10)
    assert cmos_read(rtc, RTC_SECONDS) == 0x10  # BCD: 10 is 0x10
    assert cmos_read(rtc, RTC_YEAR) == 0x24 and cmos_read(rtc, CMOS_CENTURY) == 0x20
    assert cmos_read(rtc, RTC_DAY_OF_WEEK) == 5  # a Thursday; Sunday is 1


def test_binary_mode() -> None:
    rtc, clock, _ = make(utc(2031, 12, 31, 23, 59, 30), step=8_000)
    cmos_write(rtc, RTC_REG_B, REG_B_24H | REG_B_DM)
    assert cmos_read(rtc, RTC_HOURS) == 23 and cmos_read(rtc, RTC_MONTH) == 12
    assert cmos_read(rtc, CMOS_CENTURY) == 20 and cmos_read(rtc, RTC_YEAR) == 31
    assert linux_get_time(rtc, clock) == utc(2031, 12, 31, 23, 59, 30)


@pytest.mark.parametrize(
    ("hour", "bcd", "binary"),
    [
        (0, 0x12, 12),  # midnight is 12 AM
        (1, 0x01, 1),
        (11, 0x11, 11),
        (12, 0x92, 0x8C),  # noon is 12 PM
        (13, 0x81, 0x81),
        (23, 0x91, 0x8B),
    ],
)
def test_twelve_hour_mode_puts_pm_in_bit_7(hour: int, bcd: int, binary: int) -> None:
    rtc, _, _ = make(utc(2024, 5, 6, hour, 30, 0))
    cmos_write(rtc, RTC_REG_B, 0)
    assert cmos_read(rtc, RTC_HOURS) == bcd
    cmos_write(rtc, RTC_REG_B, REG_B_DM)
    assert cmos_read(rtc, RTC_HOURS) == binary


def test_century_byte_and_its_ps2_alias() -> None:
    rtc, _, _ = make(utc(1999, 12, 31, 23, 59, 59, 500_000))
    assert cmos_read(rtc, CMOS_CENTURY) == 0x19
    assert cmos_read(rtc, CMOS_IBM_PS2_CENTURY) == 0x19
    cmos_write(rtc, CMOS_IBM_PS2_CENTURY, 0x21)
    assert cmos_read(rtc, CMOS_CENTURY) == 0x21


def test_the_time_follows_the_clock_across_days_and_years() -> None:
    rtc, clock, _ = make(utc(1999, 12, 31, 23, 59, 59, 500_000))
    clock.advance(NS_PER_S // 2)
    assert [cmos_read(rtc, i) for i in (RTC_YEAR, RTC_MONTH, RTC_DAY_OF_MONTH)] == [0, 1, 1]
    assert cmos_read(rtc, CMOS_CENTURY) == 0x20
    assert cmos_read(rtc, RTC_DAY_OF_WEEK) == 7  # 2000-01-01 was a Saturday


# --- UIP and the update ------------------------------------------------------------


def test_uip_is_set_for_the_last_244_us_of_each_second() -> None:
    rtc, clock, _ = make(utc(2024, 1, 1, 0, 0, 0))
    clock.advance(NS_PER_S - 244_140 - 1)
    assert not cmos_read(rtc, RTC_REG_A) & REG_A_UIP
    clock.advance(1)
    assert cmos_read(rtc, RTC_REG_A) & REG_A_UIP
    assert cmos_read(rtc, RTC_SECONDS) == 0x00  # not updated yet
    clock.advance(244_139)
    assert cmos_read(rtc, RTC_REG_A) & REG_A_UIP
    clock.advance(1)  # the update
    assert not cmos_read(rtc, RTC_REG_A) & REG_A_UIP
    assert cmos_read(rtc, RTC_SECONDS) == 0x01


def test_a_guest_polling_uip_sees_it_clear() -> None:
    """The issue's guest: wait while UIP is set, then read the seconds."""
    rtc, _, _ = make(utc(2024, 1, 1, 0, 0, 59, 999_900), step=8_000)
    polls = 0
    while cmos_read(rtc, RTC_REG_A) & REG_A_UIP:
        polls += 1
        assert polls < 1000, "UIP never cleared"
    assert polls > 0  # it started inside the window
    assert cmos_read(rtc, RTC_SECONDS) == 0x00 and cmos_read(rtc, RTC_MINUTES) == 0x01


def test_linux_get_time_retries_inside_the_update_window() -> None:
    rtc, clock, _ = make(utc(2024, 3, 31, 23, 59, 59, 999_850), step=8_000)
    assert linux_get_time(rtc, clock) == utc(2024, 4, 1, 0, 0, 0)


def test_set_clears_uip_and_uie() -> None:
    """Datasheet: SET inhibits the update and clears UIP; SET going high clears UIE."""
    rtc, clock, _ = make(utc(2024, 1, 1, 0, 0, 0, 999_900))
    assert cmos_read(rtc, RTC_REG_A) & REG_A_UIP
    cmos_write(rtc, RTC_REG_B, REG_B_24H | REG_B_UIE)
    cmos_write(rtc, RTC_REG_B, REG_B_24H | REG_B_UIE | REG_B_SET)
    assert cmos_read(rtc, RTC_REG_B) == REG_B_24H | REG_B_SET
    assert not cmos_read(rtc, RTC_REG_A) & REG_A_UIP
    clock.advance(5 * NS_PER_S)
    assert cmos_read(rtc, RTC_SECONDS) == 0x00  # no update while SET is held


# --- setting the time ---------------------------------------------------------------


def test_linux_set_time_sets_the_guest_clock_only() -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0, 300_000), step=8_000)
    host_before = clock.ns
    linux_set_time(rtc, utc(2001, 2, 3, 4, 5, 6))
    assert linux_get_time(rtc, clock) == utc(2001, 2, 3, 4, 5, 6)
    assert cmos_read(rtc, RTC_DAY_OF_WEEK) == 7  # Saturday
    # The divider was released: the first update comes half a second later.
    clock.advance(NS_PER_S // 2)
    assert linux_get_time(rtc, clock) == utc(2001, 2, 3, 4, 5, 7)
    clock.advance(3600 * NS_PER_S)
    assert linux_get_time(rtc, clock) == utc(2001, 2, 3, 5, 5, 7)
    assert clock.ns - host_before < 3601 * NS_PER_S  # only the fake clock moved


def test_writes_with_set_held_take_effect_when_set_is_released() -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0, 250_000))
    cmos_write(rtc, RTC_REG_B, REG_B_24H | REG_B_SET)
    cmos_write(rtc, RTC_HOURS, 0x08)
    cmos_write(rtc, RTC_MINUTES, 0x30)
    clock.advance(2 * NS_PER_S)
    assert cmos_read(rtc, RTC_HOURS) == 0x08 and cmos_read(rtc, RTC_SECONDS) == 0x00
    cmos_write(rtc, RTC_REG_B, REG_B_24H)
    assert [cmos_read(rtc, i) for i in (RTC_HOURS, RTC_MINUTES, RTC_SECONDS)] == [8, 0x30, 0]
    # The divider kept its phase: the next update is 0.75 s away, not 1 s.
    clock.advance(750_000_000)
    assert cmos_read(rtc, RTC_SECONDS) == 0x01


def test_a_write_while_the_clock_runs_takes_effect_at_once() -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0))
    cmos_write(rtc, RTC_YEAR, 0x30)
    assert cmos_read(rtc, RTC_YEAR) == 0x30 and cmos_read(rtc, RTC_HOURS) == 0x12
    clock.advance(61 * NS_PER_S)
    assert cmos_read(rtc, RTC_MINUTES) == 0x01 and cmos_read(rtc, RTC_YEAR) == 0x30


def test_the_divider_held_in_reset_stops_the_clock() -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0, 900_000))
    cmos_write(rtc, RTC_REG_A, 0x26 | RTC_DIV_RESET2)
    clock.advance(10 * NS_PER_S)
    assert cmos_read(rtc, RTC_SECONDS) == 0x00
    assert not cmos_read(rtc, RTC_REG_A) & REG_A_UIP
    cmos_write(rtc, RTC_REG_A, 0x26)
    clock.advance(NS_PER_S // 2 - 1)
    assert cmos_read(rtc, RTC_SECONDS) == 0x00
    clock.advance(1)
    assert cmos_read(rtc, RTC_SECONDS) == 0x01


def test_register_a_uip_is_read_only_c_and_d_are_read_only() -> None:
    rtc, _, _ = make(utc(2024, 6, 1, 12, 0, 0))
    cmos_write(rtc, RTC_REG_A, 0x80 | 0x2F)
    assert cmos_read(rtc, RTC_REG_A) == 0x2F
    cmos_write(rtc, RTC_REG_C, 0xFF)
    cmos_write(rtc, RTC_REG_D, 0x00)
    assert cmos_read(rtc, RTC_REG_C) == 0 and cmos_read(rtc, RTC_REG_D) == 0x80


# --- ports ------------------------------------------------------------------------------


def test_bit_7_of_the_index_is_the_nmi_mask_not_part_of_the_index() -> None:
    rtc, _, _ = make(utc(2024, 6, 1, 12, 0, 0))
    rtc.write(0, 1, 0x80 | RTC_REG_D)
    assert rtc.nmi_disabled and rtc.index == RTC_REG_D
    assert rtc.read(1, 1) == 0x80
    rtc.write(0, 1, 0x80 | 0x40)
    rtc.write(1, 1, 0x5A)
    rtc.write(0, 1, 0x40)
    assert not rtc.nmi_disabled and rtc.read(1, 1) == 0x5A
    assert rtc.read(0, 1) == 0xFF  # the index register is write-only (QEMU reads 0xff)


def test_a_word_write_to_0x70_is_index_then_data() -> None:
    rtc, _, _ = make(utc(2024, 6, 1, 12, 0, 0))
    rtc.write(0, 2, 0xA5 << 8 | 0x50)  # outw %ax, $0x70
    assert cmos_read(rtc, 0x50) == 0xA5
    rtc.write(0, 1, 0x50)
    assert rtc.read(1, 2) == 0xFF << 8 | 0xA5  # the byte past 0x71 is not the RTC's


def test_the_rest_of_the_128_bytes_is_plain_memory() -> None:
    rtc, _, _ = make(utc(2024, 6, 1, 12, 0, 0), cmos={0x14: 0x02})
    assert cmos_read(rtc, 0x14) == 0x02
    for index in [*range(0x0E, CMOS_CENTURY), *range(CMOS_CENTURY + 1, 0x37), *range(0x38, 0x80)]:
        cmos_write(rtc, index, index ^ 0xA5)
    for index in [*range(0x0E, CMOS_CENTURY), *range(CMOS_CENTURY + 1, 0x37), *range(0x38, 0x80)]:
        assert cmos_read(rtc, index) == index ^ 0xA5


@pytest.mark.parametrize("cmos", [{0x0D: 0}, {CMOS_CENTURY: 0x20}, {0x80: 0}, {0x20: 256}])
def test_presets_must_be_plain_cmos_bytes(cmos: dict[int, int]) -> None:
    with pytest.raises(ValueError, match="CMOS byte"):
        make(utc(2024, 6, 1), cmos=cmos)


def test_garbage_from_the_guest_never_raises() -> None:
    rng = random.Random(12)
    rtc, clock, _ = make(utc(2024, 6, 1), step=3_000)
    for _ in range(20_000):
        offset, size = rng.choice([(0, 1), (1, 1), (0, 2), (1, 2), (0, 4)])
        if rng.random() < 0.5:
            rtc.write(offset, size, rng.getrandbits(8 * size))
        else:
            assert 0 <= rtc.read(offset, size) < 1 << (8 * size)
        if rng.random() < 0.01:
            clock.advance(rng.randrange(-NS_PER_S, 100 * NS_PER_S))  # steps back, too
        due = rtc.tick()
        assert due is None or due > clock.ns - clock.step


# --- interrupts ---------------------------------------------------------------------------


def test_linux_probe_then_periodic_interrupts_at_the_programmed_rate() -> None:
    rtc, clock, line = make(utc(2024, 6, 1, 12, 0, 0, 123_456))
    # cmos_do_probe: 1024 Hz, every interrupt off, C read.
    cmos_write(rtc, RTC_REG_A, RTC_REF_CLCK_32KHZ | 0x06)
    control = cmos_read(rtc, RTC_REG_B) & ~(REG_B_PIE | REG_B_AIE | REG_B_UIE)
    cmos_write(rtc, RTC_REG_B, control)
    check_intr(rtc)
    assert control & REG_B_24H and not control & REG_B_DM  # "only 24-hr BCD mode"
    assert rtc.tick() is None  # nothing enabled
    irq_enable(rtc, REG_B_PIE)
    # A timer that calls tick when told delivers 1024 interrupts a second,
    # each acknowledged by reading C (cmos_interrupt).
    start = clock.ns
    count = 0
    while True:
        due = rtc.tick(clock.ns)
        assert due is not None and due > clock.ns
        clock.ns = due
        if due - start > NS_PER_S:
            break
        assert rtc.tick(due) is None and line.high
        assert cmos_read(rtc, RTC_REG_C) & (REG_C_IRQF | REG_C_PF) == REG_C_IRQF | REG_C_PF
        assert not line.high
        count += 1
    assert count == 1024


@pytest.mark.parametrize("freq", [2, 64, 128, 256, 1024, 8192])
def test_linux_irq_set_freq(freq: int) -> None:
    """cmos_irq_set_freq: RS = 16 - (ffs(freq) - 1); the period is 1/freq s."""
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0))
    rate = 16 - (freq.bit_length() - 1)
    cmos_write(rtc, RTC_REG_A, RTC_REF_CLCK_32KHZ | rate)
    irq_enable(rtc, REG_B_PIE)
    first = rtc.tick(clock.ns)
    assert first is not None
    clock.ns = first
    cmos_read(rtc, RTC_REG_C)
    second = rtc.tick(clock.ns)
    assert second is not None and second - first == pytest.approx(NS_PER_S / freq, abs=1)


@pytest.mark.parametrize(("rate", "freq"), [(1, 256), (2, 128), (3, 8192), (6, 1024), (15, 2)])
def test_periodic_rates_of_datasheet_table_5(rate: int, freq: int) -> None:
    """With a 32.768 kHz time base RS 0001 and 0010 are 256 and 128 Hz, not 32768 and 16384."""
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0))
    cmos_write(rtc, RTC_REG_A, RTC_REF_CLCK_32KHZ | rate)
    clock.advance(NS_PER_S)
    check_intr(rtc)
    irq_enable(rtc, REG_B_PIE)
    ticks = []
    for _ in range(3):
        due = rtc.tick(clock.ns)
        assert due is not None
        clock.ns = due
        cmos_read(rtc, RTC_REG_C)
        ticks.append(due)
    assert ticks[2] - ticks[1] == pytest.approx(NS_PER_S / freq, abs=1)


def test_rate_zero_gives_no_periodic_interrupt() -> None:
    rtc, clock, line = make(utc(2024, 6, 1, 12, 0, 0))
    cmos_write(rtc, RTC_REG_A, RTC_REF_CLCK_32KHZ)
    irq_enable(rtc, REG_B_PIE)
    assert rtc.tick() is None
    clock.advance(NS_PER_S // 10)
    assert cmos_read(rtc, RTC_REG_C) & REG_C_PF == 0 and not line.high


def test_flags_are_set_without_their_enable_but_irqf_is_not() -> None:
    rtc, clock, line = make(utc(2024, 6, 1, 12, 0, 0))
    clock.advance(NS_PER_S + 1)
    assert cmos_read(rtc, RTC_REG_C) == REG_C_PF | REG_C_UF  # no IRQF: nothing enabled
    assert line.levels == []
    assert cmos_read(rtc, RTC_REG_C) == 0  # read-to-clear


def test_enabling_a_source_whose_flag_is_set_raises_the_line_at_once() -> None:
    """QEMU: "if an interrupt flag is already set when the interrupt becomes enabled"."""
    rtc, clock, line = make(utc(2024, 6, 1, 12, 0, 0))
    clock.advance(NS_PER_S + 1)
    cmos_write(rtc, RTC_REG_B, REG_B_24H | REG_B_UIE)
    assert line.high
    cmos_write(rtc, RTC_REG_B, REG_B_24H)  # disabled again: IRQF follows
    assert not line.high


def test_reading_c_lowers_the_line_once_and_the_next_event_raises_it_again() -> None:
    rtc, clock, line = make(utc(2024, 6, 1, 12, 0, 0, 500_000))
    irq_enable(rtc, REG_B_UIE)
    due = rtc.tick()
    assert due == clock.ns + NS_PER_S // 2
    assert rtc.tick(due - 1) == due and not line.high
    assert rtc.tick(due) is None and line.levels == [True]
    clock.ns = due + 3 * NS_PER_S  # three more updates, the line stays high
    assert cmos_read(rtc, RTC_REG_C) == REG_C_IRQF | REG_C_UF | REG_C_PF
    assert line.levels == [True, False]
    assert rtc.tick() == due + 4 * NS_PER_S


def test_update_ended_interrupt() -> None:
    rtc, clock, line = make(utc(2024, 6, 1, 12, 0, 0, 250_000))
    irq_enable(rtc, REG_B_UIE)
    due = rtc.tick()
    assert due is not None
    clock.ns = due
    assert cmos_read(rtc, RTC_REG_C) & (REG_C_IRQF | REG_C_UF) == REG_C_IRQF | REG_C_UF
    assert line.levels == [True, False]  # raised by the access, lowered by reading C
    assert cmos_read(rtc, RTC_SECONDS) == 0x01


def set_alarm(rtc: Mc146818Rtc, hours: int, minutes: int, seconds: int) -> None:
    """cmos_set_alarm: AIE off, C read, the three bytes, AIE on, C read."""
    control = cmos_read(rtc, RTC_REG_B) & ~REG_B_AIE
    cmos_write(rtc, RTC_REG_B, control)
    check_intr(rtc)
    cmos_write(rtc, RTC_HOURS_ALARM, hours)
    cmos_write(rtc, RTC_MINUTES_ALARM, minutes)
    cmos_write(rtc, RTC_SECONDS_ALARM, seconds)
    cmos_write(rtc, RTC_REG_B, control | REG_B_AIE)
    check_intr(rtc)


def test_alarm_at_a_time_of_day() -> None:
    start = utc(2024, 6, 1, 12, 0, 0, 400_000)
    rtc, clock, line = make(start)
    set_alarm(rtc, 0x12, 0x00, 0x03)
    due = rtc.tick()
    assert due == clock.ns + 2_600_000_000  # at 12:00:03
    clock.ns = due - 1
    assert cmos_read(rtc, RTC_REG_C) & REG_C_AF == 0
    clock.ns = due
    assert rtc.tick() is None and line.high
    assert cmos_read(rtc, RTC_REG_C) & (REG_C_IRQF | REG_C_AF) == REG_C_IRQF | REG_C_AF
    assert rtc.tick() == due + 86_400 * NS_PER_S  # the same time tomorrow


def test_an_alarm_passed_between_two_accesses_is_not_lost() -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0))
    set_alarm(rtc, 0x12, 0x00, 0x30)
    clock.advance(45 * NS_PER_S)
    assert cmos_read(rtc, RTC_REG_C) & REG_C_AF


@pytest.mark.parametrize(
    ("alarm", "start", "expected"),
    [
        ((ALARM_DONT_CARE, ALARM_DONT_CARE, ALARM_DONT_CARE), (12, 0, 0), (12, 0, 1)),
        ((0xFF, 0xFF, 0x30), (12, 0, 45), (12, 1, 30)),  # every minute
        ((0xFF, 0x15, 0x00), (12, 20, 0), (13, 15, 0)),  # every hour
        ((0xC5, 0x59, 0x59), (23, 59, 59), (0, 59, 59)),  # any hour, at :59:59
        ((0x23, 0xFF, 0xFF), (12, 0, 0), (23, 0, 0)),  # every second of 23:xx
        ((0x23, 0xFF, 0xFF), (23, 10, 0), (23, 10, 1)),
        ((0x08, 0x00, 0x00), (9, 0, 0), (8, 0, 0)),  # tomorrow
    ],
)
def test_alarm_dont_care_bytes(
    alarm: tuple[int, int, int], start: tuple[int, int, int], expected: tuple[int, int, int]
) -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, *start))
    set_alarm(rtc, *alarm)
    due = rtc.tick()
    assert due is not None
    when = datetime.datetime.fromtimestamp(due / NS_PER_S, datetime.timezone.utc)
    assert (when.hour, when.minute, when.second) == expected
    assert 0 < due - clock.ns <= 86_400 * NS_PER_S


def test_alarm_hours_in_twelve_hour_mode() -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0))
    cmos_write(rtc, RTC_REG_B, 0)  # 12-hour BCD
    set_alarm(rtc, 0x81, 0x00, 0x00)  # 1 PM
    assert rtc.tick() == clock.ns + 3600 * NS_PER_S


def test_an_alarm_byte_out_of_range_never_matches() -> None:
    rtc, _, _ = make(utc(2024, 6, 1, 12, 0, 0))
    set_alarm(rtc, 0x24, 0x00, 0x00)
    assert rtc.tick() is None


def test_no_alarm_while_set_is_held() -> None:
    rtc, clock, _ = make(utc(2024, 6, 1, 12, 0, 0))
    set_alarm(rtc, 0xFF, 0xFF, 0xFF)
    cmos_write(rtc, RTC_REG_B, cmos_read(rtc, RTC_REG_B) | REG_B_SET)
    assert rtc.tick() is None
    clock.advance(5 * NS_PER_S)
    assert cmos_read(rtc, RTC_REG_C) & REG_C_AF == 0


# --- the CMOS map ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("below", "above", "cpus", "base", "ext", "ext16", "high"),
    [
        (2 * MIB, 0, 1, 640, 1024, 0, 0),
        (16 * MIB, 0, 1, 640, 15 * 1024, 0, 0),
        (128 * MIB, 0, 4, 640, 0xFFFF, (128 - 16) * 16, 0),
        (0xD000_0000, 2 * GIB, 255, 640, 0xFFFF, 0xCF00, 2 * GIB >> 16),
    ],
)
def test_memory_sizes_as_qemu_pc_cmos_init_writes_them(
    below: int, above: int, cpus: int, base: int, ext: int, ext16: int, high: int
) -> None:
    cmos = pc_cmos_memory(below, above, cpus)
    assert cmos[0x15] | cmos[0x16] << 8 == base
    assert cmos[0x17] | cmos[0x18] << 8 == ext == cmos[0x30] | cmos[0x31] << 8
    assert cmos[0x34] | cmos[0x35] << 8 == ext16
    assert cmos[0x5B] | cmos[0x5C] << 8 | cmos[0x5D] << 16 == high
    assert cmos[0x5F] == cpus - 1
    assert cmos[0x10] == 0 and cmos[0x12] == 0 and cmos[0x14] == 0x02
    rtc, _, _ = make(utc(2024, 6, 1), cmos=cmos)
    assert cmos_read(rtc, 0x34) == cmos[0x34]


def test_civil_dates_agree_with_gmtime() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        seconds = rng.randrange(-(10**11), 10**11)
        expected = time.gmtime(seconds)
        days = seconds // 86_400
        assert civil_from_days(days) == (expected.tm_year, expected.tm_mon, expected.tm_mday)
        assert days_from_civil(expected.tm_year, expected.tm_mon, expected.tm_mday) == days
    assert days_from_civil(2024, 13, 1) == days_from_civil(2025, 1, 1)  # garbage carries


# --- the timer (pyvmm.machine.rtc_timer) -------------------------------------------------


class VcpuZero:
    """Stands in for VcpuGroup.post: collects work, which the test runs as vCPU 0 would."""

    def __init__(self) -> None:
        self.posted: list[Callable[[], None]] = []
        self.masks: list[set[signal.Signals]] = []
        self.event = threading.Event()

    def post(self, work: Callable[[], None]) -> None:
        self.masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        self.posted.append(work)
        self.event.set()

    def run_posted(self, timeout: float = 10) -> None:
        assert self.event.wait(timeout), "the timer posted nothing"
        self.event.clear()
        while self.posted:
            self.posted.pop(0)()


def test_the_timer_posts_tick_when_the_interrupt_is_due() -> None:
    line = RecordingLine()
    rtc = Mc146818Rtc(time.time_ns, line)
    vcpu = VcpuZero()
    timer = RtcTimer(rtc, time.time_ns, vcpu.post)
    try:
        ports = timer.ports
        ports.write(0, 1, RTC_SECONDS)  # a guest that only reads the time: no thread
        ports.read(1, 1)
        assert not timer.running
        ports.write(0, 2, (RTC_REF_CLCK_32KHZ | 0x0A) << 8 | RTC_REG_A)  # 64 Hz
        ports.write(0, 2, (REG_B_24H | REG_B_PIE) << 8 | RTC_REG_B)
        if line.high:
            # A slow host: a periodic tick (PF) came between the two writes, and
            # PIE let it through at once; nothing more is due before it is read.
            assert not timer.running
            ports.write(0, 1, RTC_REG_C)
            assert ports.read(1, 1) & REG_C_PF
        assert timer.running
        for _ in range(3):
            vcpu.run_posted()
            assert line.high
            ports.write(0, 1, RTC_REG_C)
            assert ports.read(1, 1) & REG_C_PF
            assert not line.high
        # The thread keeps asynchronous signals away: the main thread handles them.
        assert {signal.SIGALRM, signal.SIGINT, signal.SIGTERM} <= vcpu.masks[0]
        ports.write(0, 2, REG_B_24H << 8 | RTC_REG_B)  # PIE off: nothing more is due
        vcpu.event.wait(0.05)  # a tick the thread was posting as PIE went off
        vcpu.event.clear()
        vcpu.posted.clear()
        assert not vcpu.event.wait(0.2)
    finally:
        timer.close()
    assert not timer.running
    timer.close()  # idempotent


# --- QEMU's -rtc (pyvmm.cli.qemu_options) --------------------------------------------------


@pytest.mark.parametrize(
    "value", ["base=utc", "clock=host", "base=utc,clock=host,driftfix=none", "driftfix=none"]
)
def test_qemu_rtc_defaults_are_accepted(value: str) -> None:
    context = CommandContext("pyvmm boot", frozenset())
    assert QEMU_OPTIONS["-rtc"].handle("-rtc", value, context) == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("base=localtime", "sets the clock itself"),
        ("base=2006-06-17T16:01:21", "sets the clock itself"),
        ("clock=vm", "keeps the host's time in UTC"),
        ("driftfix=slew", "driftfix=none"),
        ("utc", "takes only those properties"),
        ("base=utc,speed=2", "no property 'speed'"),
    ],
)
def test_other_qemu_rtc_settings_are_refused_in_one_line(
    value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["boot", "-rtc", value, "guests/hello.bin"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"pyvmm boot: cannot use -rtc {value}: pyvmm's RTC")
    assert says in captured.err


def test_a_reset_keeps_what_the_battery_keeps_and_clears_what_the_reset_pin_clears() -> None:
    """`--reboot`: the guest's clock, CMOS RAM, register A and the data mode survive."""
    rtc, clock, _ = make(utc(2026, 11, 30, 7, 0, 0))
    linux_set_time(rtc, utc(1999, 12, 31, 23, 59, 50))
    cmos_write(rtc, 0x4F, 0x2A)
    cmos_write(rtc, RTC_REG_A, RTC_REF_CLCK_32KHZ | 0x03)  # 8192 Hz periodic rate
    cmos_write(rtc, RTC_REG_B, REG_B_24H | REG_B_DM | REG_B_PIE | REG_B_UIE)
    clock.advance(5 * NS_PER_S)
    contents = rtc.battery_backed()
    clock.advance(10 * NS_PER_S)  # the reboot takes time; the clock goes on
    line = RecordingLine()
    after = Mc146818Rtc(clock, line, cmos={0x15: 0x80}, battery=contents)
    assert linux_get_time(after, clock) == utc(2000, 1, 1, 0, 0, 5)
    assert cmos_read(after, 0x4F) == 0x2A
    assert cmos_read(after, 0x15) == 0x80  # what firmware writes at each boot
    assert cmos_read(after, RTC_REG_A) & ~REG_A_UIP == RTC_REF_CLCK_32KHZ | 0x03
    assert cmos_read(after, RTC_REG_B) == REG_B_24H | REG_B_DM  # PIE and UIE cleared
    assert cmos_read(after, RTC_REG_C) == 0 and not line.high
    assert cmos_read(after, RTC_REG_D) & 0x80  # VRT: the battery is good


def test_battery_contents_of_the_wrong_size_are_refused() -> None:
    from pyvmm.devices.rtc import CmosContents

    with pytest.raises(ValueError, match="64 bytes, not 128"):
        make(utc(2026, 1, 1), battery=CmosContents(bytes(64), 0))
