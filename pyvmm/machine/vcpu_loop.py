"""The KVM_RUN loop: run, decode the exit, dispatch it, until an outcome.

Anything else in pyvmm (a device, a signal handler, a timer) ends the run by
calling `request_stop`, which also sets `kvm_run.immediate_exit` so that a
KVM_RUN about to start returns at once instead of entering the guest.

A KVM_RUN interrupted by a signal (or by `immediate_exit`) calls the
`on_interrupted` hook, in this vCPU's thread, before the next KVM_RUN: that is
where the vCPU group checks whether the vCPU is halted for good and runs device
work that other threads asked for (see vcpu_group.py). Exits never reach it.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable

from pyvmm._kvm import ffi, lib
from pyvmm.devices.bus import Bus
from pyvmm.errors import DeviceError, KvmError, PyvmmError
from pyvmm.kvm.vcpu import Vcpu
from pyvmm.machine.outcome import (
    EXIT_HALTED,
    OutcomeKind,
    RunOutcome,
    exit_limit_reached,
    vmm_error,
)
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Protocol

    # An exit route: the device's read or write method, the offset in the
    # device, the access size, the address (for messages).
    ExitRoute = tuple[Callable[..., Any], int, int, int]

    from pyvmm.kvm.exits import VcpuExit

    class ExitObserver(Protocol):
        """Sees every exit with its timing: the trace and the statistics implement it."""

        def on_exit(self, exit: VcpuExit, run_ns: int, handle_ns: int) -> None: ...

        def on_interrupted(self, run_ns: int) -> None: ...


# pyvmm_run_fast's answers (_kvm_build.py), as locals' speed wants plain ints.
_IO_OUT = lib.PYVMM_FAST_IO_OUT
_IO_IN = lib.PYVMM_FAST_IO_IN
_MMIO_WRITE = lib.PYVMM_FAST_MMIO_WRITE
_BAD_VALUE = lib.PYVMM_FAST_BAD_VALUE
_NO_LIMIT = 1 << 62  # more exits than any run makes
# The bits of a port I/O answer that name the access, not the value written.
_PORT_KEY = (1 << 24) - 1
# KVM_RUN answering one of these means "a signal arrived, look and run again".
_INTERRUPTED = (-errno.EINTR, -errno.EAGAIN)


def _nothing(*args: int) -> int:
    return 0


def exit_route(bus: Bus, key: int, lock: threading.Lock | None) -> ExitRoute:
    """The route of the fast exit `key` (a pyvmm_run_fast answer without a written value),
    remembered in `bus.exit_routes`; with `lock`, the method takes the device lock."""
    what, size, address = key & 7, (key >> 3) & 15, key >> 8
    if what in (_IO_OUT, _IO_IN):
        address &= 0xFFFF
    read, write, base = bus.routes.get(address) or bus.route(address)
    method = write if what in (_IO_OUT, _MMIO_WRITE) else read
    if lock is not None:
        method = _locked(method, lock)
    entry: ExitRoute = (method, address - base, size, address)
    bus.exit_routes[key] = entry
    return entry


def _locked(method: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    def call(*args: int) -> Any:
        with lock:
            return method(*args)

    return call


# The loop each thread is running, for the rare device that needs its vCPU's
# registers (the no-BIOS trap); set once per run, never per exit.
_running = threading.local()


def running_vcpu() -> Vcpu | None:
    """The vCPU whose exits this thread is serving, or None outside a run."""
    loop = getattr(_running, "loop", None)
    return loop.vcpu if loop is not None else None


class VcpuLoop:
    """Runs one vCPU against its buses until something ends the run."""

    def __init__(
        self,
        vcpu: Vcpu,
        pio_bus: Bus,
        mmio_bus: Bus,
        device_lock: threading.Lock | None = None,
        max_exits: int | None = None,
        memory: GuestMemory | None = None,
        max_phys_bits: int = 52,
        keeps_32bit_paging: Callable[[], bool] | None = None,
    ) -> None:
        self.vcpu = vcpu
        self.pio_bus = pio_bus
        self.mmio_bus = mmio_bus
        self.exit_count = 0
        # --max-exits, per vCPU; a float so that the hot loop compares one number.
        self.max_exits: float = float("inf") if max_exits is None else max_exits
        # For reports that show the guest's code (emulation failures).
        self.memory = memory
        self.max_phys_bits = max_phys_bits
        # A probe of the host, asked only to explain a triple fault.
        self.keeps_32bit_paging = keeps_32bit_paging
        # The emulation assist layer (arch/x86_64/assist): instructions performed, by
        # mnemonic, shared by the machine's vCPUs; None: off (--emulate none).
        self.assists: dict[str, int] | None = None
        self.assist_ns = 0  # time spent performing them (--stats)
        # The SYSCALL repair (arch/x86_64/syscall_repair.py), where the host needs it.
        self.syscall_repair: Any = None
        # pyvmm's PIC and IOAPIC (machine/split_irqchip.py) with KVM's split irqchip.
        self.split_irqchip: Any = None
        self._stop: RunOutcome | None = None
        self._pause = False
        # Shared by every vCPU of an SMP machine: one device access at a time.
        self.device_lock = device_lock
        # Messages name the vCPU when there are several.
        self.who = "" if device_lock is None else f"vCPU {vcpu.vcpu_id}: "
        # Called with this loop after each interrupted KVM_RUN (set by the vCPU group).
        self.on_interrupted: Callable[[VcpuLoop], None] | None = None

    @property
    def stopping(self) -> bool:
        """True once the run was asked to end (`request_stop`)."""
        return self._stop is not None

    def request_stop(self, outcome: RunOutcome) -> None:
        """End the run with `outcome` (the first request wins). Safe in signal handlers."""
        if self._stop is None:
            self._stop = outcome
        run = self.vcpu.run_struct
        if run is not None:
            run.immediate_exit = 1

    def pause(self) -> None:
        """Return from `run` with a DEBUG outcome at the next chance (a debugger's Ctrl-C).

        Unlike `request_stop` the run can go on afterwards. Called from another
        thread, it must be followed by a signal to the vCPU thread (see
        `pyvmm.gdb.server`) to interrupt a KVM_RUN already in progress.
        """
        self._pause = True
        run = self.vcpu.run_struct
        if run is not None:
            run.immediate_exit = 1

    def clear_pause(self) -> None:
        """Forget a pause that came while the vCPU was not running."""
        self._pause = False
        run = self.vcpu.run_struct
        if run is not None and self._stop is None:
            run.immediate_exit = 0

    def register_dump(self) -> str:
        from pyvmm.arch.x86_64.register_dump import format_registers

        return format_registers(self.vcpu.get_regs(), self.vcpu.get_sregs())

    def run(self, observer: ExitObserver | None = None) -> RunOutcome:
        """Run until an outcome. With an observer, every exit is also timed and reported.

        Whatever the guest does, this returns an outcome: a pyvmm error while
        serving an exit becomes a VMM_ERROR outcome instead of an exception.
        """
        _running.loop = self
        try:
            if observer is not None:
                return self._run_observed(observer)
            return self._run_plain()
        except PyvmmError as error:
            return self._vmm_error(str(error))
        except Exception as error:  # a bug in pyvmm: still end in a known state
            return self._vmm_error(f"internal error: {type(error).__name__}: {error}")
        finally:
            _running.loop = None

    def _vmm_error(self, message: str) -> RunOutcome:
        try:
            registers = self.register_dump()
        except PyvmmError:
            registers = None
        outcome = vmm_error(f"{self.who}{message}")
        return RunOutcome(outcome.kind, outcome.exit_status, outcome.message, registers)

    def _run_plain(self) -> RunOutcome:
        """The exit path without tracing: no Python object made per common exit.

        `pyvmm_run_fast` (see _kvm_build.py) runs KVM_RUN and decodes port
        I/O of one unit and MMIO up to 8 bytes into one integer; that integer
        (without the value written) is the key of an exit route, kept by the
        bus, which holds the device's method, the offset and the size: the
        device gets plain integers after one dict lookup. A read's answer
        goes back to KVM in the next call, before KVM_RUN. Every other exit
        (string I/O included) is decoded into its dataclass and served by
        `_dispatch`, as in the observed loop.
        """
        if self._stop is not None:
            return self._stop
        run_fast, fd, run = self.vcpu.fast_run_call()
        out = ffi.new("uint64_t[1]")
        pio, mmio = self.pio_bus, self.mmio_bus
        pio_exits, mmio_exits = pio.exit_routes, mmio.exit_routes
        lock = self.device_lock
        dispatch = self._dispatch if lock is None else self._dispatch_locked
        # An int: comparing two ints costs less than an int with infinity, every exit.
        limit = int(min(self.max_exits, _NO_LIMIT))
        count = self.exit_count
        complete = value = what = 0
        entry: ExitRoute = (_nothing, 0, 0, 0)
        io_out, io_in, mmio_write = _IO_OUT, _IO_IN, _MMIO_WRITE  # locals: faster than globals
        try:
            while True:
                try:
                    answer = run_fast(fd, run, complete, value, out)
                except OverflowError:  # a read answered with a negative or huge number
                    raise self._bad_read(value, what, entry) from None
                if answer > 0:
                    count += 1
                    what = answer & 7
                    if what == io_out:
                        key = answer & _PORT_KEY  # without the value written
                        entry = pio_exits.get(key) or exit_route(pio, key, lock)
                        entry[0](entry[1], entry[2], answer >> 24)
                        complete = 0
                    elif what == io_in:
                        entry = pio_exits.get(answer) or exit_route(pio, answer, lock)
                        value = entry[0](entry[1], entry[2])
                        complete = 1
                    elif what == mmio_write:
                        entry = mmio_exits.get(answer) or exit_route(mmio, answer, lock)
                        entry[0](entry[1], entry[2], out[0])
                        complete = 0
                    else:
                        entry = mmio_exits.get(answer) or exit_route(mmio, answer, lock)
                        value = entry[0](entry[1], entry[2])
                        complete = 1
                    if count >= limit:
                        self._complete_read(complete, value, what, entry)
                        return self._limit_reached(count)
                    continue
                complete = 0
                if answer == 0:
                    from pyvmm.kvm.exits import decode  # only for the rarer exits

                    count += 1
                    outcome = dispatch(decode(run))
                    if outcome is not None:
                        return outcome
                    if count >= limit:
                        return self._limit_reached(count)
                    continue
                if answer == _BAD_VALUE:
                    raise self._bad_read(value, what, entry)
                if answer not in _INTERRUPTED:
                    raise KvmError("KVM_RUN", -answer)
                # A signal, or immediate_exit: its handler (already run) may have asked to stop.
                run.immediate_exit = 0
                if self._stop is not None:
                    return self._stop
                if self._pause:
                    return self._paused()
                if self.on_interrupted is not None:
                    self.on_interrupted(self)
        finally:
            self.exit_count = count

    def _complete_read(self, complete: int, value: int, what: int, entry: ExitRoute) -> None:
        """Give KVM a read's answer now: the loop ends before the next KVM_RUN would."""
        if complete and lib.pyvmm_complete_read(self.vcpu.run_struct, value) < 0:
            raise self._bad_read(value, what, entry)

    def _bad_read(self, value: int, what: int, entry: ExitRoute) -> DeviceError:
        bus = self.pio_bus if what == _IO_IN else self.mmio_bus
        return bus.read_too_wide(entry[3], entry[2], value)

    def _run_observed(self, observer: ExitObserver) -> RunOutcome:
        # A separate loop, so that the plain one pays nothing for tracing.
        from pyvmm.kvm.exits import decode
        from pyvmm.machine.exit_dispatch import dispatch

        vcpu = self.vcpu
        run = vcpu.run_struct
        clock = time.perf_counter_ns
        while self._stop is None:
            entered = clock()
            completed = vcpu.run()
            exited = clock()
            if not completed:
                run.immediate_exit = 0
                observer.on_interrupted(exited - entered)
                if self._pause:
                    return self._paused()
                if self.on_interrupted is not None:
                    self.on_interrupted(self)
                continue
            self.exit_count += 1
            exit = decode(run)
            outcome = dispatch(self, exit)
            handled = clock()
            observer.on_exit(exit, exited - entered, handled - exited)
            if outcome is not None:
                return outcome
            if self.exit_count >= self.max_exits:
                return self._limit_reached()
        return self._stop

    def _limit_reached(self, count: int | None = None) -> RunOutcome:
        limit = exit_limit_reached(self.exit_count if count is None else count)
        return RunOutcome(
            limit.kind, limit.exit_status, f"{self.who}{limit.message}", self.register_dump()
        )

    def _paused(self) -> RunOutcome:
        self._pause = False
        return RunOutcome(OutcomeKind.DEBUG, EXIT_HALTED, "interrupted by the debugger")

    def _dispatch_locked(self, exit: VcpuExit) -> RunOutcome | None:
        assert self.device_lock is not None
        with self.device_lock:
            return self._dispatch(exit)

    def _dispatch(self, exit: VcpuExit) -> RunOutcome | None:
        """Serve one decoded exit; an outcome when it ends the run (see exit_dispatch.py)."""
        from pyvmm.machine.exit_dispatch import dispatch

        return dispatch(self, exit)
