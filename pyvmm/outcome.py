"""How a run ended: every run ends in exactly one named outcome."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class OutcomeKind(enum.Enum):
    HALTED = "halted"  # HLT with nothing left to wake the vCPU
    DEBUG_EXIT = "debug-exit"  # the guest wrote to the debug-exit port
    SYSTEM_EVENT = "system-event"  # KVM_EXIT_SYSTEM_EVENT (shutdown, reset, crash)
    TRIPLE_FAULT = "triple-fault"  # KVM_EXIT_SHUTDOWN
    FAIL_ENTRY = "fail-entry"  # the hardware refused to enter the guest
    INTERNAL_ERROR = "internal-error"  # KVM could not go on (e.g. emulation failure)
    TIMEOUT = "timeout"  # --timeout elapsed
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM / SIGHUP
    DEBUG = "debug"  # a debugger's breakpoint, watchpoint or single step: not an end

    @property
    def is_abnormal(self) -> bool:
        return self not in (OutcomeKind.HALTED, OutcomeKind.DEBUG_EXIT, OutcomeKind.DEBUG)


# Exit statuses of `pyvmm boot` (documented in --help and the README).
EXIT_HALTED = 0
EXIT_GUEST_FAULT = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class RunOutcome:
    kind: OutcomeKind
    exit_status: int
    message: str
    registers: str | None = None  # a register dump for abnormal ends
    debug: object | None = None  # the exits.Debug that stopped a DEBUG outcome
