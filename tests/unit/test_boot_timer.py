"""The boot timer at port 0x3f0 (Firecracker's), driven as a guest's /init drives it."""

from __future__ import annotations

from pyvmm.devices.boot_timer import (
    BOOT_TIMER_MAGIC,
    BOOT_TIMER_PORT,
    BootTimer,
    describe_boot_time,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_first_magic_write_is_the_boot_time_and_later_ones_are_counted() -> None:
    clock = Clock(100.0)
    timer = BootTimer(started=98.5, clock=clock)
    assert timer.boot_seconds is None and describe_boot_time(timer) is None
    timer.write(0, 1, BOOT_TIMER_MAGIC)  # what `outb(123, 0x3f0)` sends
    assert timer.boot_seconds == 1.5 and timer.writes == 1
    assert describe_boot_time(timer) == (
        "boot time: 1.500 s from VM creation to the guest's boot-timer write (port 0x3f0)"
    )
    clock.now = 200.0
    timer.write(0, 1, BOOT_TIMER_MAGIC)
    timer.write(0, 1, BOOT_TIMER_MAGIC)
    assert timer.boot_seconds == 1.5 and timer.writes == 3
    assert describe_boot_time(timer).endswith("(port 0x3f0); 2 later writes of 123")


def test_other_values_are_ignored() -> None:
    timer = BootTimer(started=0.0, clock=Clock(5.0))
    for value in (0, 122, 124, 0xFF):
        timer.write(0, 1, value)
    assert timer.boot_seconds is None and timer.writes == 0


def test_a_wider_write_counts_by_its_byte_at_the_port() -> None:
    timer = BootTimer(started=0.0, clock=Clock(2.0))
    timer.write(0, 2, 0x1200 | BOOT_TIMER_MAGIC)  # outw: 123 at 0x3f0, 0x12 at 0x3f1
    assert timer.boot_seconds == 2.0 and timer.writes == 1
    timer.write(1, 1, BOOT_TIMER_MAGIC)  # not the device's port
    assert timer.writes == 1


def test_reads_give_all_ones() -> None:
    timer = BootTimer(started=0.0)
    assert timer.read(0, 1) == 0xFF
    assert timer.read(0, 2) == 0xFFFF
    assert BOOT_TIMER_PORT == 0x3F0
