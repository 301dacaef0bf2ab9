"""What the command line says around a run: the memory map and summary (-v), an abnormal end."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvmm.machine.builder import Machine
    from pyvmm.machine.outcome import RunOutcome

def log_memory_map(machine: Machine) -> None:
    log = logging.getLogger("pyvmm")
    if not log.isEnabledFor(logging.INFO):
        return
    from pyvmm.observe.machine_map import machine_memory_map

    for entry in machine_memory_map(machine):
        host = f" (host 0x{entry.hva:x})" if entry.hva is not None else ""
        log.info(
            "memory 0x%09x-0x%09x %-6s %s%s",
            entry.start,
            entry.end - 1,
            entry.kind,
            entry.description,
            host,
        )


def log_run_summary(machine: Machine, outcome: RunOutcome) -> None:
    logging.getLogger("pyvmm").info(
        "%s after %d exits; unassigned port accesses: %d reads, %d writes",
        outcome.kind.value,
        machine.loop.exit_count,
        machine.pio_bus.unmapped_reads,
        machine.pio_bus.unmapped_writes,
    )


TAIL_LINES = 5  # console lines shown after an abnormal end (-v: TAIL_LINES_VERBOSE)
TAIL_LINES_VERBOSE = 40


def report_end(outcome: RunOutcome, console: object, verbose: int) -> None:
    """An abnormal end: why, the registers, the console's last lines. Always: lost output."""
    from pyvmm.console.output import ConsoleWriter

    writer = console if isinstance(console, ConsoleWriter) else None
    if outcome.kind.is_abnormal:
        if writer is not None and writer.ends_mid_line and os.isatty(writer.fd):
            print(file=sys.stderr)  # start pyvmm's report on a line of its own
        print(f"pyvmm: {outcome.message}", file=sys.stderr)
        if outcome.registers:
            print(outcome.registers, file=sys.stderr)
        tail = writer.tail_lines(TAIL_LINES_VERBOSE if verbose else TAIL_LINES) if writer else []
        if tail:
            print("pyvmm: last console output:", file=sys.stderr)
            for line in tail:
                print(f"  | {line}", file=sys.stderr)
    if writer is not None and writer.bytes_over_rate:
        print(
            f"pyvmm: dropped {writer.bytes_over_rate} bytes of console output over "
            f"--console-rate {writer.rate_limit} bytes/s",
            file=sys.stderr,
        )


