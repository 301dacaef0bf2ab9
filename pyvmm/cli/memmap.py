"""`pyvmm memmap`: run a guest, then show its memory at every level."""

from __future__ import annotations

import argparse
import json
import sys

from pyvmm.cli.boot import build_from_args
from pyvmm.cli.report import log_run_summary, report_end


def run_memmap(args: argparse.Namespace) -> int:
    from pyvmm.observe.machine_map import machine_memory_map
    from pyvmm.observe.memory_report import MemoryReport, mapping_rows, render_text, report_to_json

    with build_from_args(args, None if args.quiet else sys.stderr) as machine:
        outcome = machine.run(timeout=args.timeout)
        log_run_summary(machine, outcome)
        report_end(outcome, machine.console, args.verbose)
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
    return 0


