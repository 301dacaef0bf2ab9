"""The PC's programmable interval timer, an Intel 8254 (ports 0x40-0x43), and port 0x61.

Intel 8254 datasheet (order 231164): "Control Word Format", "Read-Back
Command", "Counter Latch Command", "Modes" 0-5 and "Gate"; the PC/AT wiring
(IBM PC/AT Technical Reference, "System Timers"): 1,193,182 Hz input clock;
counter 0 drives IRQ 0; counter 1 the DRAM refresh; counter 2 the speaker,
its gate and output at port 0x61 ("system control port B": bit 0 gate 2,
bit 1 speaker data, bit 4 refresh toggle, bit 5 OUT 2).

A pure state machine, like pyvmm's RTC: time passes in it only through its
clock, read at each access and at `tick`. Counts and OUT levels are
functions of the time since the count was loaded (d, in input clocks):

    mode 0 (interrupt on terminal count)  OUT low until d = N, then high
    mode 1 (hardware one-shot)            OUT low while d < N (from the load or a gate edge)
    mode 2 (rate generator)               OUT low for the one clock before each reload
    mode 3 (square wave)                  OUT high for ceil(N/2), low for floor(N/2)
    mode 4 (software strobe)              OUT low for the one clock at d = N
    mode 5 (hardware strobe)              as 4, from the load or a gate edge

where N is the count (0 means 65,536, or 10,000 in BCD). Counter 0's rising
OUT edges are IRQ 0's: `tick(now)` pulses the line once when one or more
edges fell since the last (a late tick is dropped, not queued: a physical
PIT's lost-tick behaviour, not KVM's reinjection) and returns when the next
falls; edges come at most every MIN_IRQ_PERIOD_NS (KVM's in-kernel PIT
likewise bounds its rate). Simplifications, as QEMU's hw/timer/i8254.c:
counters 0 and 1 are gated on; a low gate does not pause counting in modes
0, 2, 3 and 4; modes 1 and 5 start counting at the count's load as well as
at a rising gate.

The clock may run slower than the host's (`pyvmm boot --pit-scale`): the
guest then sees a consistent, slower PIT, in its counts and its interrupts.
"""

from __future__ import annotations

from collections.abc import Callable

from pyvmm.devices.irq import IrqLine, NoIrq

PIT_PORT = 0x40
PIT_PORT_SIZE = 4
PIT_GSI = 0
PORT_B = 0x61  # system control port B (speaker gate and data, refresh and OUT 2)
PIT_HZ = 1_193_182
NS_PER_S = 1_000_000_000
# The fastest IRQ 0 delivered: 1 kHz (a HZ=1000 kernel's tick). A faster
# program (the hostile guest's divisor 2 is 596 kHz) gets edges this far apart.
MIN_IRQ_PERIOD_NS = 1_000_000
REFRESH_PERIOD_NS = 15_085  # port 0x61 bit 4 toggles at every DRAM refresh (15.085 us)

CONTROL = 3  # offset of the control word register
READ_BACK = 3  # the control word's counter field for the read-back command
# Access modes (control word bits 5-4).
LATCH, LSB, MSB, LSB_MSB = 0, 1, 2, 3

Clock = Callable[[], int]  # nanoseconds on the device's timeline (monotonic)


def _from_bcd(value: int) -> int:
    return sum(((value >> (4 * i)) & 0xF) * 10**i for i in range(4))


def _to_bcd(value: int) -> int:
    return sum(((value // 10**i) % 10) << (4 * i) for i in range(4))


class Counter:
    """One of the three counters; its state as the datasheet names it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.mode = 0
        self.access = LSB_MSB
        self.bcd = False
        self.count = 0x10000  # N, the loaded count (1..65536)
        self.loaded_at: int | None = None  # when counting started; None: no count yet
        self.gate = index != 2  # counters 0 and 1 are gated on; 2 through port 0x61
        self.null_count = True
        self.write_msb_next = False
        self.read_msb_next = False
        self.pending_lsb = 0
        self.latched: list[int] = []  # bytes of a latched count, in read order
        self.status: int | None = None  # a latched status byte

    def elapsed(self, now: int) -> int:
        """d: input clocks since the count was loaded (0 before)."""
        if self.loaded_at is None or now <= self.loaded_at:
            return 0
        return (now - self.loaded_at) * PIT_HZ // NS_PER_S

    def value(self, now: int) -> int:
        """The counting element (CE) as a read would show it, 16 bits."""
        if self.loaded_at is None:
            return self.count & 0xFFFF
        d, n = self.elapsed(now), self.count
        if self.mode == 2:
            left = n - d % n
        elif self.mode == 3:
            left = n - (2 * d) % n
        else:
            left = n - d
        return left & 0xFFFF

    def out(self, now: int) -> bool:
        """The OUT pin's level."""
        if self.loaded_at is None:
            return self.mode != 0  # mode 0 sets OUT low at the control word
        d, n = self.elapsed(now), self.count
        if self.mode == 0:
            return d >= n
        if self.mode == 1:
            return d >= n
        if self.mode == 2:
            return d % n != n - 1
        if self.mode == 3:
            return d % n < (n + 1) // 2
        return d != n  # modes 4 and 5

    def first_edge(self) -> tuple[int, int | None] | None:
        """(d of OUT's first rising edge after the load, period in clocks or None)."""
        if self.loaded_at is None:
            return None
        n = self.count
        if self.mode in (2, 3):
            return n, n
        if self.mode in (4, 5):
            return n + 1, None
        return n, None  # modes 0 and 1

    def status_byte(self, now: int) -> int:
        """The read-back status: OUT, null count, access, mode, BCD (datasheet figure 8)."""
        return (
            (self.out(now) << 7)
            | (self.null_count << 6)
            | (self.access << 4)
            | (self.mode << 1)
            | self.bcd
        )

    def program(self, access: int, mode: int, bcd: bool) -> None:
        """A control word for this counter: new mode, no count until one is written."""
        self.access = access
        self.mode = mode - 4 if mode > 5 else mode  # 6 and 7 are modes 2 and 3
        self.bcd = bcd
        self.loaded_at = None
        self.null_count = True
        self.write_msb_next = self.read_msb_next = False
        self.latched = []

    def latch(self, now: int) -> None:
        """Counter latch command; a second one before the read is ignored."""
        if self.latched:
            return
        value = self.value(now)
        if self.bcd:
            value = _to_bcd(value % 10_000)
        lsb, msb = value & 0xFF, value >> 8
        self.latched = {LSB: [lsb], MSB: [msb]}.get(self.access, [lsb, msb])

    def read(self, now: int) -> int:
        if self.status is not None:
            status, self.status = self.status, None
            return status
        if self.latched:
            return self.latched.pop(0)
        value = self.value(now)
        if self.bcd:
            value = _to_bcd(value % 10_000)
        if self.access == LSB:
            return value & 0xFF
        if self.access == MSB:
            return value >> 8
        msb, self.read_msb_next = self.read_msb_next, not self.read_msb_next
        return value >> 8 if msb else value & 0xFF

    def write(self, now: int, byte: int) -> bool:
        """A count byte; True when a whole count was loaded (counting restarts)."""
        if self.access == LSB:
            raw = byte
        elif self.access == MSB:
            raw = byte << 8
        elif not self.write_msb_next:
            self.pending_lsb, self.write_msb_next = byte, True
            if self.mode == 0:
                self.loaded_at = None  # mode 0: the first byte stops the count
            return False
        else:
            raw, self.write_msb_next = self.pending_lsb | (byte << 8), False
        count = _from_bcd(raw) if self.bcd else raw
        self.count = count or (10_000 if self.bcd else 0x10000)
        self.loaded_at = now
        self.null_count = False
        return True

    def set_gate(self, now: int, high: bool) -> None:
        """Counter 2's gate from port 0x61: a rising edge restarts modes 1, 2, 3 and 5."""
        if high and not self.gate and self.mode in (1, 2, 3, 5) and self.loaded_at is not None:
            self.loaded_at = now
        self.gate = high


class I8254:
    """The PIT: counters 0-2 at offsets 0-2, the control word at offset 3.

    `clock()` gives nanoseconds on the device's timeline; `irq` is IRQ 0
    (pulsed once per delivered edge). Accesses of any size act on the low
    byte, as the 8254's 8-bit bus does. `schedule_changes` counts the
    accesses that may move the next interrupt (the timer asks `tick` again
    after one); `interrupts` and `dropped` count the edges delivered and
    those that fell while an earlier one was still undelivered.
    """

    def __init__(self, clock: Clock, irq: IrqLine | None = None) -> None:
        self._clock = clock
        self._irq: IrqLine = irq if irq is not None else NoIrq()
        self.counters = [Counter(i) for i in range(3)]
        self.port_b = 0  # bits 0-3 as last written to port 0x61
        self._next_edge: int | None = None  # counter 0's next IRQ 0 edge, device ns
        self._period_ns: int | None = None
        self.schedule_changes = 0
        self.interrupts = 0
        self.dropped = 0

    # -- the bus ----------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if offset == CONTROL:
            return 0xFF  # the control word register cannot be read
        return self.counters[offset].read(self._clock())

    def write(self, offset: int, size: int, value: int) -> None:
        now = self._clock()
        value &= 0xFF
        if offset != CONTROL:
            if self.counters[offset].write(now, value) and offset == 0:
                self._rearm(now)
            elif offset == 0 and self._next_edge is not None and self.counters[0].loaded_at is None:
                self._rearm(now)  # mode 0's first byte stopped it
            return
        select, access, mode, bcd = value >> 6, (value >> 4) & 3, (value >> 1) & 7, value & 1
        if select == READ_BACK:
            for counter in self.counters:
                if value & (2 << counter.index):
                    if not value & 0x10 and counter.status is None:
                        counter.status = counter.status_byte(now)
                    if not value & 0x20:
                        counter.latch(now)
            return
        counter = self.counters[select]
        if access == LATCH:
            counter.latch(now)
            return
        counter.program(access, mode, bool(bcd))
        if select == 0:
            self._rearm(now)

    # -- port 0x61 --------------------------------------------------------------

    def read_port_b(self) -> int:
        """Port 0x61: bits 0-3 as written, bit 4 the refresh toggle, bit 5 counter 2's OUT."""
        now = self._clock()
        refresh = (now // REFRESH_PERIOD_NS) & 1
        return (self.port_b & 0x0F) | (refresh << 4) | (self.counters[2].out(now) << 5)

    def write_port_b(self, value: int) -> None:
        self.port_b = value & 0x0F
        self.counters[2].set_gate(self._clock(), bool(value & 1))

    # -- time -------------------------------------------------------------------

    def tick(self, now: int | None = None) -> int | None:
        """Let time pass to `now`: pulse IRQ 0 if an edge fell, and say when the next falls.

        Returns the device time (ns) of counter 0's next rising OUT edge, None
        when none will come without a new program.
        """
        if now is None:
            now = self._clock()
        edge = self._next_edge
        if edge is None or now < edge:
            return edge
        self._irq.set_level(True)
        self._irq.set_level(False)
        self.interrupts += 1
        if self._period_ns is None:
            self._next_edge = None
            return None
        missed = (now - edge) // self._period_ns
        self.dropped += missed
        self._next_edge = edge + (missed + 1) * self._period_ns
        return self._next_edge

    def _rearm(self, now: int) -> None:
        """Counter 0 was programmed or loaded: find its first edge from now on."""
        self.schedule_changes += 1
        counter = self.counters[0]
        edge = counter.first_edge()
        if edge is None or counter.loaded_at is None:
            self._next_edge = self._period_ns = None
            return
        first, period = edge
        start = counter.loaded_at
        self._next_edge = start + max(_ns(first), MIN_IRQ_PERIOD_NS if period else 0)
        self._period_ns = None if period is None else max(_ns(period), MIN_IRQ_PERIOD_NS)


class PortB:
    """Port 0x61 as the bus sees it."""

    def __init__(self, pit: I8254) -> None:
        self._pit = pit

    def read(self, offset: int, size: int) -> int:
        return self._pit.read_port_b()

    def write(self, offset: int, size: int, value: int) -> None:
        self._pit.write_port_b(value)


def _ns(clocks: int) -> int:
    """Input clocks to ns, rounded up: an edge is never early."""
    return -(-clocks * NS_PER_S // PIT_HZ)
