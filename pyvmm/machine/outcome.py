"""How a run ended: every run ends in exactly one named outcome.

Each kind has one exit status for `pyvmm boot`, documented in its --help and
the README. Odd statuses belong to debug-exit alone: a guest that writes v to
port 0xf4 ends the process with (v << 1) | 1, as QEMU's isa-debug-exit does,
and test harnesses read 1 (a write of 0) as "pass". So every other outcome,
a guest that crashed or a VMM that failed, exits with an even status and can
never pass for a debug-exit. A stop signal is not an exit status at all: the
CLI ends the process by the same signal (see `pyvmm.cli`).
"""

from __future__ import annotations

import enum

EXIT_HALTED = 0  # hlt, or a power-off or reset the guest asked for
EXIT_USAGE = 2  # bad usage or bad input: nothing ran
EXIT_TRIPLE_FAULT = 4  # KVM_EXIT_SHUTDOWN: a fault while delivering a double fault
EXIT_INTERNAL_ERROR = 6  # KVM_EXIT_INTERNAL_ERROR: KVM could not go on (emulation failure)
EXIT_FAIL_ENTRY = 8  # KVM_EXIT_FAIL_ENTRY: the hardware refused the guest state
EXIT_GUEST_CRASH = 10  # KVM_SYSTEM_EVENT_CRASH (or another event pyvmm cannot honour)
EXIT_UNHANDLED_EXCEPTION = 12  # a real-mode CPU exception reached pyvmm's no-BIOS stub
EXIT_VMM_ERROR = 70  # pyvmm itself failed (sysexits' EX_SOFTWARE)
EXIT_TIMEOUT = 124  # --timeout expired (as timeout(1) reports it)
EXIT_LIMIT = 126  # --max-exits reached
EXIT_SIGNAL_BASE = 128  # + the signal number: how a shell reports a death by that signal


class OutcomeKind(enum.Enum):
    """The ways a run can end; `value` is the name `pyvmm boot` reports.

    The KVM exits behind them are described in KVM API doc 5 ("The kvm_run
    structure"): KVM_EXIT_HLT, KVM_EXIT_SHUTDOWN (a triple fault, Intel SDM
    vol. 3A, 6.15 "Interrupt 8 - Double Fault Exception"), KVM_EXIT_SYSTEM_EVENT,
    KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTERNAL_ERROR. `is_abnormal` is true for
    every kind but HALTED, DEBUG_EXIT, POWER_OFF, RESET, QUIT and DEBUG.
    """

    HALTED = "halted"  # HLT with nothing left to wake the vCPU
    DEBUG_EXIT = "debug-exit"  # the guest wrote to the debug-exit port
    # The guest turned the machine off: ACPI S5 through PM1a_CNT, or KVM's shutdown event.
    POWER_OFF = "power-off"
    SYSTEM_EVENT = "system-event"  # KVM_EXIT_SYSTEM_EVENT other than shutdown/reset: a crash
    # The guest pulsed the reset line: keyboard controller 0xfe, port 0x92 or 0xcf9.
    RESET = "reset"
    TRIPLE_FAULT = "triple-fault"  # KVM_EXIT_SHUTDOWN
    FAIL_ENTRY = "fail-entry"  # the hardware refused to enter the guest
    INTERNAL_ERROR = "internal-error"  # KVM could not go on (e.g. emulation failure)
    # A real-mode exception whose IVT vector is still pyvmm's no-BIOS stub:
    # a BIOS's bare iret would re-run the faulting instruction forever.
    UNHANDLED_EXCEPTION = "unhandled-exception"
    # The monitor's `quit` (machine/monitor.py): the user ended the run, as QEMU's quit does.
    QUIT = "quit"
    TIMEOUT = "timeout"  # --timeout elapsed
    EXIT_LIMIT = "exit-limit"  # --max-exits reached
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM / SIGHUP, or killed from gdb
    VMM_ERROR = "vmm-error"  # pyvmm failed while the guest ran: never the guest's doing
    DEBUG = "debug"  # a debugger's breakpoint, watchpoint or single step: not an end

    @property
    def is_abnormal(self) -> bool:
        return self not in (
            OutcomeKind.HALTED,
            OutcomeKind.DEBUG_EXIT,
            OutcomeKind.POWER_OFF,
            OutcomeKind.RESET,
            OutcomeKind.QUIT,
            OutcomeKind.DEBUG,
        )


class RunOutcome:
    """How one run ended.

    `exit_status` is the status `pyvmm boot` exits with (0..255); for an
    INTERRUPTED outcome it is what a shell shows (128 + `signal`), while the
    CLI itself ends by `signal`. `message` is one line for people;
    `registers` a multi-line register dump (abnormal ends only).
    Read-only once made: `replace` and `with_message` make changed copies.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("debug", "exit_status", "kind", "message", "registers", "signal")

    def __init__(
        self,
        kind: OutcomeKind,
        exit_status: int,
        message: str,
        registers: str | None = None,
        debug: object | None = None,
        signal: int | None = None,
    ) -> None:
        self.kind = kind
        self.exit_status = exit_status
        self.message = message
        self.registers = registers  # a register dump for abnormal ends
        self.debug = debug  # the exits.Debug that stopped a DEBUG outcome
        self.signal = signal  # INTERRUPTED: the signal that stopped the run

    def replace(self, **changes: object) -> RunOutcome:
        """A copy with `changes` (field=value) applied, as dataclasses.replace."""
        values = {name: getattr(self, name) for name in self.__slots__}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"RunOutcome has no field {', '.join(sorted(unknown))}")
        values.update(changes)
        return RunOutcome(**values)  # type: ignore[arg-type]

    def with_message(self, message: str) -> RunOutcome:
        """A copy that says `message` instead."""
        return self.replace(message=message)

    def __repr__(self) -> str:
        return (
            f"RunOutcome(kind={self.kind!r}, exit_status={self.exit_status!r}, "
            f"message={self.message!r}, registers={self.registers!r}, "
            f"debug={self.debug!r}, signal={self.signal!r})"
        )


def timed_out(timeout: float) -> RunOutcome:
    return RunOutcome(OutcomeKind.TIMEOUT, EXIT_TIMEOUT, f"guest did not finish within {timeout} s")


def exit_limit_reached(count: int) -> RunOutcome:
    message = f"guest reached the limit of {count} exits (--max-exits)"
    return RunOutcome(OutcomeKind.EXIT_LIMIT, EXIT_LIMIT, message)


def interrupted(signal_name: str, signum: int, message: str | None = None) -> RunOutcome:
    return RunOutcome(
        OutcomeKind.INTERRUPTED,
        EXIT_SIGNAL_BASE + signum,
        message or f"stopped by {signal_name}",
        signal=signum,
    )


def powered_off(how: str) -> RunOutcome:
    """The guest turned the machine off; `how` says through what. Status 0, as QEMU exits."""
    return RunOutcome(OutcomeKind.POWER_OFF, EXIT_HALTED, f"guest powered the machine off: {how}")


def reset_requested(how: str) -> RunOutcome:
    """The guest reset the machine; `how` names the register it used (see pyvmm.machine.reset)."""
    # Status 0, as `qemu -no-reboot` exits when the guest resets.
    return RunOutcome(OutcomeKind.RESET, EXIT_HALTED, f"guest reset the machine: {how}")


def quit_requested(by: str) -> RunOutcome:
    """The user ended the run (`by`: the monitor's quit). Status 0, as QEMU's quit exits."""
    return RunOutcome(OutcomeKind.QUIT, EXIT_HALTED, f"{by} ended the run")


def unhandled_exception(message: str, registers: str | None = None) -> RunOutcome:
    return RunOutcome(OutcomeKind.UNHANDLED_EXCEPTION, EXIT_UNHANDLED_EXCEPTION, message, registers)


def vmm_error(message: str) -> RunOutcome:
    return RunOutcome(OutcomeKind.VMM_ERROR, EXIT_VMM_ERROR, message)


# The halted outcome of a guest that enabled interrupts on a machine with no irqchip.
HALTED_WAITING = (
    "guest halted with interrupts enabled (IF=1), waiting for one, but this machine has no "
    "interrupt controllers (--kernel-irqchip off): nothing can wake it"
)
