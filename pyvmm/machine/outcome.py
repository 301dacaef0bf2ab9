"""How a run ended: every run ends in exactly one named outcome.

Each kind has one exit status for `pyvmm boot` (documented in its --help and
the README). A debug-exit status is always odd ((v << 1) | 1, as QEMU), so
pyvmm's own statuses are even, except 1 for a guest fault, which a debug-exit
write of 0 also gives, as it does under QEMU: the stderr line tells them apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

EXIT_HALTED = 0  # hlt, or an orderly shutdown the guest asked for
EXIT_GUEST_FAULT = 1  # triple fault, failed entry, emulation failure, crash event
EXIT_USAGE = 2  # bad usage or bad input: nothing ran
EXIT_VMM_ERROR = 70  # pyvmm itself failed (sysexits' EX_SOFTWARE)
EXIT_TIMEOUT = 124  # --timeout expired (as timeout(1) reports it)
EXIT_LIMIT = 126  # --max-exits reached
EXIT_SIGNAL_BASE = 128  # + the signal number, as a shell reports it


class OutcomeKind(enum.Enum):
    HALTED = "halted"  # HLT with nothing left to wake the vCPU
    DEBUG_EXIT = "debug-exit"  # the guest wrote to the debug-exit port
    SYSTEM_EVENT = "system-event"  # KVM_EXIT_SYSTEM_EVENT (shutdown, reset, crash)
    TRIPLE_FAULT = "triple-fault"  # KVM_EXIT_SHUTDOWN
    FAIL_ENTRY = "fail-entry"  # the hardware refused to enter the guest
    INTERNAL_ERROR = "internal-error"  # KVM could not go on (e.g. emulation failure)
    TIMEOUT = "timeout"  # --timeout elapsed
    EXIT_LIMIT = "exit-limit"  # --max-exits reached
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM / SIGHUP
    VMM_ERROR = "vmm-error"  # pyvmm failed while the guest ran: never the guest's doing
    DEBUG = "debug"  # a debugger's breakpoint, watchpoint or single step: not an end

    @property
    def is_abnormal(self) -> bool:
        return self not in (OutcomeKind.HALTED, OutcomeKind.DEBUG_EXIT, OutcomeKind.DEBUG)


@dataclass(frozen=True)
class RunOutcome:
    kind: OutcomeKind
    exit_status: int
    message: str
    registers: str | None = None  # a register dump for abnormal ends
    debug: object | None = None  # the exits.Debug that stopped a DEBUG outcome


def timed_out(timeout: float) -> RunOutcome:
    return RunOutcome(OutcomeKind.TIMEOUT, EXIT_TIMEOUT, f"guest did not finish within {timeout} s")


def exit_limit_reached(count: int) -> RunOutcome:
    message = f"guest reached the limit of {count} exits (--max-exits)"
    return RunOutcome(OutcomeKind.EXIT_LIMIT, EXIT_LIMIT, message)


def interrupted(signal_name: str, signum: int) -> RunOutcome:
    return RunOutcome(
        OutcomeKind.INTERRUPTED, EXIT_SIGNAL_BASE + signum, f"stopped by {signal_name}"
    )


def vmm_error(message: str) -> RunOutcome:
    return RunOutcome(OutcomeKind.VMM_ERROR, EXIT_VMM_ERROR, message)
