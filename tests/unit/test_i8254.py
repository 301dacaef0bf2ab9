"""pyvmm's 8254 PIT (pyvmm.devices.i8254), driven by a clock the test sets (no KVM).

Expected values come from the Intel 8254 datasheet's mode descriptions and
figures: counts at a given number of input clocks after the load, OUT levels,
the read-back status byte, and IRQ 0's rising edges on counter 0.
"""

from __future__ import annotations

import pytest

from pyvmm.devices.i8254 import I8254, MIN_IRQ_PERIOD_NS, NS_PER_S, PIT_HZ, PortB


class Clock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def clocks(self, n: int) -> None:
        """Advance by exactly n input clocks (from a whole-clock boundary of the load)."""
        self.ns += -(-n * NS_PER_S // PIT_HZ)


class Line:
    def __init__(self) -> None:
        self.levels: list[bool] = []

    def set_level(self, high: bool) -> None:
        self.levels.append(high)

    @property
    def pulses(self) -> int:
        return sum(1 for a, b in zip(self.levels, self.levels[1:], strict=False) if a and not b)


def pit_with(control: int, count: int, channel: int = 0) -> tuple[I8254, Clock, Line]:
    clock, line = Clock(), Line()
    pit = I8254(clock, line)
    pit.write(3, 1, control)
    pit.write(channel, 1, count & 0xFF)
    pit.write(channel, 1, count >> 8)
    return pit, clock, line


def read_count(pit: I8254, channel: int = 0) -> int:
    pit.write(3, 1, channel << 6)  # counter latch command
    return pit.read(channel, 1) | pit.read(channel, 1) << 8


def test_mode_2_counts_down_and_reloads() -> None:
    pit, clock, _ = pit_with(0x34, 1000)  # counter 0, LSB then MSB, mode 2, binary
    assert read_count(pit) == 1000
    clock.clocks(300)
    assert read_count(pit) == 700
    clock.clocks(700)
    assert read_count(pit) == 1000  # reloaded at the terminal count
    clock.clocks(999)
    assert read_count(pit) == 1


def test_mode_3_counts_by_two() -> None:
    pit, clock, _ = pit_with(0x36, 1000)
    clock.clocks(100)
    assert read_count(pit) == 800


def test_a_latched_count_stays_until_read_and_a_second_latch_is_ignored() -> None:
    pit, clock, _ = pit_with(0x34, 5000)
    pit.write(3, 1, 0x00)
    clock.clocks(1000)
    pit.write(3, 1, 0x00)  # ignored: the first latch is still unread
    assert pit.read(0, 1) | pit.read(0, 1) << 8 == 5000
    assert read_count(pit) == 4000


def test_read_back_latches_status_then_count() -> None:
    pit, clock, _ = pit_with(0x34, 0x1234)
    clock.clocks(0x34)
    pit.write(3, 1, 0xC2)  # read-back: count and status of counter 0
    status = pit.read(0, 1)
    # OUT high, count loaded, LSB-then-MSB (3), mode 2, binary: 0b1_0_11_010_0.
    assert status == 0xB4
    assert pit.read(0, 1) | pit.read(0, 1) << 8 == 0x1200


def test_status_after_a_control_word_has_null_count_and_mode_0_out_low() -> None:
    pit = I8254(Clock())
    pit.write(3, 1, 0x30)  # counter 0, mode 0
    pit.write(3, 1, 0xE2)  # read-back, status only
    assert pit.read(0, 1) == 0x70  # OUT low, null count, LSB-then-MSB, mode 0


def test_unlatched_reads_alternate_lsb_and_msb() -> None:
    pit, _clock, _ = pit_with(0x34, 0x0302)
    assert (pit.read(0, 1), pit.read(0, 1)) == (0x02, 0x03)


@pytest.mark.parametrize(("control", "byte", "count"), [(0x14, 0x80, 0x80), (0x24, 0x80, 0x8000)])
def test_lsb_only_and_msb_only_counts(control: int, byte: int, count: int) -> None:
    clock = Clock()
    pit = I8254(clock)
    pit.write(3, 1, control)
    pit.write(0, 1, byte)
    pit.write(3, 1, 0xD2)  # read-back, count only
    value = pit.read(0, 1)
    assert value == (count & 0xFF if control == 0x14 else count >> 8)


def test_bcd_counts() -> None:
    pit, clock, _ = pit_with(0x35, 0x1000)  # BCD 1000
    clock.clocks(1)
    assert read_count(pit) == 0x0999


def test_a_count_of_zero_is_65536() -> None:
    pit, clock, line = pit_with(0x34, 0)
    clock.clocks(65535)
    assert read_count(pit) == 1
    clock.clocks(1)
    assert pit.tick() is not None and line.pulses == 1


def test_irq_0_comes_every_period_in_mode_2() -> None:
    count = 11932  # 100 Hz
    pit, clock, line = pit_with(0x34, count)
    due = pit.tick()
    assert due == clock.ns + -(-count * NS_PER_S // PIT_HZ)
    clock.ns = due - 1
    assert pit.tick() == due and line.pulses == 0
    for n in range(1, 4):
        clock.ns = due
        due = pit.tick()
        assert line.pulses == n
    assert pit.interrupts == 3 and pit.dropped == 0


def test_late_ticks_are_dropped_not_queued() -> None:
    count = 11932
    pit, clock, line = pit_with(0x34, count)
    due = pit.tick()
    assert due is not None
    period = -(-count * NS_PER_S // PIT_HZ)
    clock.ns = due + 5 * period  # five more periods (10 ms each) went by
    following = pit.tick()
    assert line.pulses == 1 and pit.dropped == 5
    assert following is not None and following > clock.ns


def test_mode_0_interrupts_once() -> None:
    pit, clock, line = pit_with(0x30, 1193)  # about 1 ms
    due = pit.tick()
    assert due is not None
    clock.ns = due + 10 * NS_PER_S
    assert pit.tick() is None and line.pulses == 1
    assert pit.tick() is None and line.pulses == 1


def test_a_new_control_word_stops_counter_0s_interrupts() -> None:
    pit, _clock, _line = pit_with(0x34, 11932)
    pit.write(3, 1, 0x34)
    assert pit.tick() is None and pit.schedule_changes == 3


def test_the_fastest_irq_0_is_min_irq_period() -> None:
    pit, clock, _line = pit_with(0x34, 2)  # 596 kHz
    first = pit.tick()
    assert first is not None
    clock.ns = first
    assert pit.tick() == first + MIN_IRQ_PERIOD_NS


def test_counter_2_out_shows_at_port_0x61_bit_5_with_its_gate() -> None:
    clock = Clock()
    pit = I8254(clock)
    port_b = PortB(pit)
    port_b.write(0, 1, 0x01)  # gate 2 high, speaker off
    pit.write(3, 1, 0xB0)  # counter 2, mode 0
    pit.write(2, 1, 0xFF)
    pit.write(2, 1, 0xFF)  # 65535 clocks, about 55 ms
    assert port_b.read(0, 1) & 0x21 == 0x01  # OUT 2 low while counting
    clock.clocks(65535)
    assert port_b.read(0, 1) & 0x21 == 0x21
    # The refresh bit toggles as time passes.
    seen = set()
    for _ in range(4):
        clock.ns += 15_085
        seen.add(port_b.read(0, 1) & 0x10)
    assert seen == {0, 0x10}


def test_a_rising_gate_restarts_mode_2_on_counter_2() -> None:
    clock = Clock()
    pit = I8254(clock)
    pit.write(3, 1, 0xB4)  # counter 2, mode 2
    pit.write(2, 1, 100)
    pit.write(2, 1, 0)
    pit.write_port_b(1)
    clock.clocks(40)
    assert read_count(pit, 2) == 60
    pit.write_port_b(0)
    pit.write_port_b(1)
    assert read_count(pit, 2) == 100


def test_the_clock_sets_the_pace_so_a_slower_clock_is_a_slower_pit() -> None:
    host = Clock()
    scale = 10
    pit = I8254(lambda: host.ns // scale)
    pit.write(3, 1, 0x34)
    pit.write(0, 1, 1000 & 0xFF)
    pit.write(0, 1, 1000 >> 8)
    host.ns += 10 * (300 * NS_PER_S // PIT_HZ + 1)
    assert read_count(pit) == 700


def test_a_scaled_timer_posts_no_earlier_than_scale_times_the_period() -> None:
    """The timer thread waits `scale` host ns per device ns (a lower bound: never early)."""
    import threading
    import time

    from pyvmm.machine.device_timer import DeviceTimer
    from pyvmm.machine.pit import scaled_clock

    scale = 20
    clock = scaled_clock(scale)
    pit = I8254(clock, Line())
    posted = threading.Event()
    timer = DeviceTimer(pit, clock, lambda work: posted.set(), "pit-timer", scale)
    try:
        start = time.monotonic()
        timer.ports.write(3, 1, 0x34)
        timer.ports.write(0, 1, 1193 & 0xFF)  # 1 ms
        timer.ports.write(0, 1, 1193 >> 8)
        assert timer.running
        assert posted.wait(10)
        assert time.monotonic() - start >= scale * 0.001
    finally:
        timer.close()
