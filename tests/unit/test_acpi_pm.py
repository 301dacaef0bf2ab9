"""The ACPI PM1a event/control blocks and PM timer, driven as OSPM drives them (no KVM)."""

from __future__ import annotations

import pytest

from pyvmm.devices.acpi_pm import (
    PM1_CNT_OFFSET,
    PM1_EN_OFFSET,
    PM1_STS_OFFSET,
    PM_TIMER_FREQUENCY,
    PM_TMR_OFFSET,
    SCI_EN,
    SLP_EN,
    SLP_TYP_SHIFT,
    TMR_EN,
    TMR_STS,
    AcpiPm,
)

SECOND = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 5 * SECOND  # any origin: the timer starts at its first reading

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def powered_off() -> list[bool]:
    return []


@pytest.fixture
def pm(clock: Clock, powered_off: list[bool]) -> AcpiPm:
    return AcpiPm(clock, lambda: powered_off.append(True))


def test_timer_counts_at_3_579545_mhz(pm: AcpiPm, clock: Clock) -> None:
    assert pm.read(PM_TMR_OFFSET, 4) == 0
    clock.now += SECOND // 1000
    assert pm.read(PM_TMR_OFFSET, 4) == PM_TIMER_FREQUENCY // 1000
    clock.now += SECOND - SECOND // 1000
    assert pm.read(PM_TMR_OFFSET, 4) == PM_TIMER_FREQUENCY


def test_timer_is_24_bits_and_wraps(pm: AcpiPm, clock: Clock) -> None:
    pm.read(PM_TMR_OFFSET, 4)
    clock.now += 5 * SECOND  # 17.9 million ticks: more than 2**24
    ticks = 5 * PM_TIMER_FREQUENCY
    assert pm.read(PM_TMR_OFFSET, 4) == ticks & 0xFF_FFFF
    assert pm.read(PM_TMR_OFFSET + 3, 1) == 0  # the top byte of the register reads 0
    assert pm.read(PM_TMR_OFFSET, 2) == ticks & 0xFFFF
    assert pm.read(PM_TMR_OFFSET + 2, 1) == (ticks >> 16) & 0xFF


def test_tmr_sts_is_set_when_bit_23_changes_and_cleared_by_writing_1(
    pm: AcpiPm, clock: Clock
) -> None:
    assert pm.read(PM1_STS_OFFSET, 2) == 0
    clock.now += (1 << 23) * SECOND // PM_TIMER_FREQUENCY - 1000  # just before bit 23 sets
    assert pm.read(PM1_STS_OFFSET, 2) & TMR_STS == 0
    clock.now += 2000
    assert pm.read(PM1_STS_OFFSET, 2) & TMR_STS
    pm.write(PM1_STS_OFFSET, 2, 0)  # writing 0 leaves it
    assert pm.read(PM1_STS_OFFSET, 2) & TMR_STS
    pm.write(PM1_STS_OFFSET, 2, TMR_STS)
    assert pm.read(PM1_STS_OFFSET, 2) & TMR_STS == 0
    clock.now += (1 << 23) * SECOND // PM_TIMER_FREQUENCY  # bit 23 clears again: set again
    assert pm.read(PM1_STS_OFFSET, 4) & TMR_STS


def test_pm1_en_keeps_its_bits(pm: AcpiPm) -> None:
    pm.write(PM1_EN_OFFSET, 2, 0xFFFF)
    assert pm.read(PM1_EN_OFFSET, 2) == 0x0721  # TMR, GBL, PWRBTN, SLPBTN, RTC
    pm.write(PM1_STS_OFFSET, 4, 0)  # a dword at the block's start: STS, then EN
    assert pm.read(PM1_EN_OFFSET, 2) == 0
    pm.write(PM1_EN_OFFSET, 1, TMR_EN)
    assert pm.read(PM1_STS_OFFSET, 4) == TMR_EN << 16


def test_hardware_is_in_acpi_mode_and_sleep_type_is_kept(pm: AcpiPm) -> None:
    assert pm.read(PM1_CNT_OFFSET, 2) == SCI_EN  # no SMI_CMD: always ACPI mode
    pm.write(PM1_CNT_OFFSET, 2, 5 << SLP_TYP_SHIFT)  # SCI_EN cleared: ignored
    assert pm.read(PM1_CNT_OFFSET, 2) == SCI_EN | 5 << SLP_TYP_SHIFT


def test_slp_en_with_s5_sleep_type_powers_off(pm: AcpiPm, powered_off: list[bool]) -> None:
    pm.write(PM1_CNT_OFFSET, 2, 0 << SLP_TYP_SHIFT | SLP_EN)
    assert powered_off == [True]
    assert pm.read(PM1_CNT_OFFSET, 2) & SLP_EN == 0  # write-only


def test_slp_en_written_alone_in_the_high_byte_powers_off(
    pm: AcpiPm, powered_off: list[bool]
) -> None:
    pm.write(PM1_CNT_OFFSET + 1, 1, SLP_EN >> 8)
    assert powered_off == [True]


def test_other_sleep_types_and_plain_writes_do_not_power_off(
    pm: AcpiPm, powered_off: list[bool]
) -> None:
    pm.write(PM1_CNT_OFFSET, 2, 5 << SLP_TYP_SHIFT | SLP_EN)  # S3 on QEMU: pyvmm has none
    pm.write(PM1_CNT_OFFSET, 2, 0)
    pm.write(PM1_CNT_OFFSET, 1, 0xFF)  # the low byte holds no SLP_EN
    assert powered_off == []


def test_the_gap_reads_zero_and_ignores_writes(pm: AcpiPm, powered_off: list[bool]) -> None:
    pm.write(6, 2, 0xFFFF)
    assert pm.read(6, 2) == 0 and powered_off == []
