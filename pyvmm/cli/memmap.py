"""`pyvmm memmap`: run a guest, then show its memory at every level."""

from __future__ import annotations

import argparse
import json
import sys

from pyvmm.cli.boot import build_from_args
from pyvmm.cli.report import log_run_summary, report_end, stop_notes


def run_memmap(args: argparse.Namespace) -> tuple[int, int | None]:
    """Run the guest, then print its memory report: (exit status, the signal that stopped it).

    A run stopped by a signal (or by its console's reader going away) ends
    there, as every stop does: the report is not printed, the signal is returned.
    """
    from pyvmm.observe.machine_map import machine_memory_map
    from pyvmm.observe.memory_report import MemoryReport, mapping_rows, render_text, report_to_json

    with build_from_args(args, None if args.quiet else sys.stderr) as machine:
        outcome = machine.run(timeout=args.timeout)
        log_run_summary(machine, outcome)
        report_end(outcome, machine.console, args.verbose, stop_notes(machine, outcome))
        if outcome.signal is not None:
            return outcome.exit_status, outcome.signal
        report = MemoryReport(
            outcome=f"{outcome.kind.value}: {outcome.message}",
            memory_map=machine_memory_map(machine),
            paging=machine.paging_registers(),
            mappings=mapping_rows(machine.mappings(), machine.memory),
            translations=[machine.translate(gva) for gva in args.translate],
        )
    if args.json:
        print(json.dumps(report_to_json(report), indent=2))
    else:
        sys.stdout.write(render_text(report))
    return 0, None
