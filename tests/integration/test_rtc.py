"""The RTC and CMOS (MC146818A, ports 0x70/0x71) on a real guest, against QEMU.

guests/tests/rtc.elf reads the clock as Linux does in every data mode and
hour format, watches an update (UIP), sets the clock as Linux does, counts
periodic interrupts on IRQ 8 through the PICs, and prints the CMOS bytes the
firmware leaves. QEMU runs it under TCG with `-nodefaults` (no floppy drive,
as pyvmm has none). The time differs by a second or so between the runs:
its lines are compared by their form and with the host's clock; everything
else must be the same, but for the equipment byte (QEMU's claims a PS/2
mouse, pyvmm has none).
"""

from __future__ import annotations

import datetime
import re

import pytest

from tests.integration.helpers import guest, run_pyvmm
from tests.integration.qemu import run_qemu

RTC = "tests/rtc.elf"
DONE = 33  # debug-exit 0x10
TIME_LINE = re.compile(
    r"(bcd|bin) (24h|12h): (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)( AM| PM)? dow (\d\d)"
)
EQUIPMENT = re.compile(r"^cmos: 10=(..) 12=(..) 14=(..)$", re.MULTILINE)
# Seconds a printed time may lie from the host's clock: the runs, a slow host.
TOLERANCE = datetime.timedelta(seconds=60)


def times(output: str) -> dict[str, datetime.datetime]:
    """Each `bcd 24h: ...` line's time, 12-hour ones turned into 24-hour."""
    found = {}
    for match in TIME_LINE.finditer(output):
        mode, hours, year, month, day, hour, minute, second, half, dow = match.groups()
        hour_value = int(hour)
        if hours == "12h":
            assert 1 <= hour_value <= 12, match.group(0)
            hour_value = hour_value % 12 + (12 if half == " PM" else 0)
        else:
            assert half is None, match.group(0)
        when = datetime.datetime(
            int(year), int(month), int(day), hour_value, int(minute), int(second),
            tzinfo=datetime.timezone.utc,
        )  # fmt: skip
        assert int(dow) == when.isoweekday() % 7 + 1, match.group(0)  # Sunday is 1
        found[f"{mode} {hours}"] = when
    return found


def without_time_and_equipment(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if not TIME_LINE.match(line) and not EQUIPMENT.match(line)
    ]


def check_times(output: str, started: datetime.datetime, ended: datetime.datetime) -> None:
    found = times(output)
    assert set(found) == {"bcd 24h", "bin 24h", "bcd 12h", "bin 12h"}, output
    for mode, when in found.items():
        assert started - TOLERANCE <= when <= ended + TOLERANCE, (mode, when, started)
    # Read one after the other, a second or two apart at most.
    assert max(found.values()) - min(found.values()) <= datetime.timedelta(seconds=2)


def run_both(*options: str, memory: str = "128M") -> tuple[str, str]:
    """The guest's output under QEMU and pyvmm (with the irqchip), given the same `options`."""
    image = guest(RTC)
    started = datetime.datetime.now(datetime.timezone.utc)
    qemu = run_qemu(image, "-nodefaults", *options, memory=memory)
    ours = run_pyvmm(
        "boot", "-m", memory, "--kernel-irqchip", "on", *options, "--timeout", "120", image,
        timeout=180,
    )  # fmt: skip
    ended = datetime.datetime.now(datetime.timezone.utc)
    assert qemu.returncode == DONE, qemu.stdout.decode() + qemu.stderr.decode()
    assert ours.returncode == DONE, ours.stdout + ours.stderr
    check_times(qemu.stdout.decode(), started, ended)
    check_times(ours.stdout, started, ended)
    return qemu.stdout.decode(), ours.stdout


@pytest.mark.parametrize(("options", "cpus"), [([], "00"), (["-smp", "2"], "01")])
def test_rtc_guest_matches_qemu(options: list[str], cpus: str) -> None:
    """With two vCPUs the device is reached under the machine's device lock."""
    qemu, ours = run_both(*options)
    assert without_time_and_equipment(ours) == without_time_and_equipment(qemu)
    lines = ours.splitlines()
    for line in (
        "rtc: A=26 B=02 D=80",
        f"cmos: base=0280 ext=ffff extmem=ffff ext16=0700 high=000000 cpus={cpus}",
        "update: UIP set, then clear, and the seconds changed",
        "irq8: 5 periodic interrupts at 64 Hz, C=c0",
        "rtc: done",
    ):
        assert line in lines
    # Set as Linux sets it; the first update comes half a second after, so
    # the second may have ticked on a slow host.
    assert any(
        line in lines
        for line in ("set: 2001-02-03 04:05:06 dow 07", "set: 2001-02-03 04:05:07 dow 07")
    )
    qemu_equipment = EQUIPMENT.search(qemu)
    ours_equipment = EQUIPMENT.search(ours)
    assert qemu_equipment is not None and ours_equipment is not None
    assert ours_equipment.groups() == ("00", "00", "02")  # no drives; a math coprocessor
    assert qemu_equipment.groups()[:2] == ("00", "00")
    assert int(qemu_equipment.group(3), 16) & 0x02  # QEMU's: FPU, and a PS/2 mouse


@pytest.mark.parametrize(
    ("memory", "sizes"),
    [
        ("8M", "base=0280 ext=1c00 extmem=1c00 ext16=0000 high=000000"),
        ("3G", "base=0280 ext=ffff extmem=ffff ext16=bf00 high=000000"),
    ],
)
def test_cmos_memory_sizes_match_qemu(memory: str, sizes: str) -> None:
    qemu, ours = run_both(memory=memory)
    expected = f"cmos: {sizes} cpus=00"
    assert expected in ours.splitlines()
    assert expected in qemu.splitlines()


def test_memory_above_4g_and_the_cpu_count() -> None:
    """Above 3.25 GiB pyvmm's hole differs from QEMU's, so this is checked alone.

    5 GiB: 0xd0000000 bytes below 4 GiB (0xcf00 64-KiB units above 16 MiB),
    1.75 GiB above it (0x7000 units); 4 CPUs give 0x5f = 3.
    """
    result = run_pyvmm("boot", "-m", "5G", "-smp", "4", "--timeout", "120", guest(RTC), timeout=180)
    assert result.returncode == DONE, result.stdout + result.stderr
    assert (
        "cmos: base=0280 ext=ffff extmem=ffff ext16=cf00 high=007000 cpus=03"
        in result.stdout.splitlines()
    )


def test_without_an_irqchip_the_clock_still_reads() -> None:
    """Polling needs no interrupt: all but the IRQ 8 part runs; its hlt then ends the run."""
    result = run_pyvmm(
        "boot", "--kernel-irqchip", "off", "--timeout", "120", guest(RTC), timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr  # halted
    assert "update: UIP set, then clear, and the seconds changed" in result.stdout
    assert "irq8" not in result.stdout
    assert len(times(result.stdout)) == 4
