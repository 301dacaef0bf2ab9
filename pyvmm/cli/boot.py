"""`pyvmm boot`: build the machine the options describe, run it, report how it ended."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from pyvmm.cli.report import (
    collect_legacy_pc,
    log_memory_map,
    log_run_summary,
    report_end,
    report_legacy_pc,
)
from pyvmm.errors import UsageError
from pyvmm.loaders.entry import CpuMode
from pyvmm.memory.size import parse_ram_size

if TYPE_CHECKING:
    from pyvmm.console.input import InputBuffer
    from pyvmm.machine.builder import Machine
    from pyvmm.machine.outcome import RunOutcome

def build_from_args(
    args: argparse.Namespace, console: TextIO | None, console_input: InputBuffer | None = None
) -> Machine:
    """Build the machine the shared options describe; console None discards output."""
    from pyvmm.console.output import ConsoleWriter
    from pyvmm.kvm.system import DEFAULT_KVM_PATH
    from pyvmm.loaders import read_image
    from pyvmm.machine.builder import MachineConfig, build_machine, check_ram_size
    from pyvmm.shipped import resolve_image

    ram_size = parse_ram_size(args.memory)
    check_ram_size(ram_size, args.memory)  # before anything else: the message quotes -m
    image = read_image(resolve_image(args.image))
    cmdline = args.image if args.append is None else f"{args.image} {args.append}"
    modules = tuple(
        (entry, read_image(resolve_image(entry.split()[0])))
        for entry in (args.initrd.split(",") if args.initrd else [])
        if entry.strip()
    )
    config = MachineConfig(
        image=image,
        ram_size=ram_size,
        console=ConsoleWriter(
            -1 if console is None else console.fileno(), rate_limit=args.console_rate
        ),
        console_input=console_input,
        max_exits=args.max_exits,
        mode=CpuMode(args.mode) if args.mode else None,
        load_gpa=args.load_addr,
        cpus=args.smp,
        cmdline=cmdline,
        modules=modules,
        append=args.append,
        force_multiboot=args.multiboot,
        irqchip=None if args.kernel_irqchip is None else args.kernel_irqchip == "on",
        vga_text=getattr(args, "vga", "none") != "none",  # only `boot` shows the screen
        # Lets tests (and odd hosts) point pyvmm at another KVM device node.
        kvm_path=os.environ.get("PYVMM_KVM_PATH", DEFAULT_KVM_PATH),
    )
    return build_machine(config)


def run_boot(args: argparse.Namespace) -> RunOutcome:
    from pyvmm.observe.exit_stats import ExitStatistics, FanOut
    from pyvmm.observe.trace import ExitTracer, parse_categories

    categories = parse_categories(args.trace) if args.trace else None
    gdb_spec = args.gdb or ("tcp::1234" if args.gdb_default else None)
    gdb_address: tuple[str, int] | None = None
    if gdb_spec is not None:
        from pyvmm.gdb.server import parse_gdb_address

        gdb_address = parse_gdb_address(gdb_spec)  # a bad address, before the VM is built
    with contextlib.ExitStack() as files:
        console_input = open_console_input(files, args.input_buffer)
        machine = files.enter_context(build_from_args(args, sys.stdout, console_input))
        log_memory_map(machine)
        observers: list[Any] = []
        if categories is not None:
            stream = files.enter_context(open_trace_file(args.trace_file))
            observers.append(
                ExitTracer(
                    machine.vcpu,
                    machine.memory,
                    stream,
                    categories,
                    json_lines=args.trace_format == "json",
                    max_phys_bits=machine.max_phys_bits,
                )
            )
        statistics = ExitStatistics() if args.stats else None
        if statistics is not None:
            observers.append(statistics)
        observer = (
            observers[0] if len(observers) == 1 else FanOut(*observers) if observers else None
        )
        if gdb_address is not None:
            from pyvmm.gdb.server import GdbServer
            from pyvmm.kvm.system import DEFAULT_KVM_PATH

            kvm_path = os.environ.get("PYVMM_KVM_PATH", DEFAULT_KVM_PATH)
            server = GdbServer(machine, gdb_address, kvm_path)
            outcome = server.serve(
                stop_at_start=args.gdb_stop, timeout=args.timeout, observer=observer
            )
        else:
            outcome = machine.run(timeout=args.timeout, observer=observer)
        log_run_summary(machine, outcome)
        legacy_pc = collect_legacy_pc(machine, args.vga)
    report_end(outcome, machine.console, args.verbose)
    report_legacy_pc(legacy_pc, console=None if outcome.kind.is_abnormal else machine.console)
    if statistics is not None:
        print(statistics.summary(), file=sys.stderr)
    return outcome


def open_console_input(resources: contextlib.ExitStack, capacity: int) -> InputBuffer | None:
    """stdin feeds COM1 for the run; the terminal mode and the reader end with it."""
    from pyvmm.console.input import InputBuffer, StdinReader, guest_terminal, readable_input

    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return None
    if capacity == 0 or not readable_input(fd):
        return None
    buffer = InputBuffer(capacity)
    resources.enter_context(guest_terminal(fd))
    resources.enter_context(StdinReader(fd, buffer))
    return buffer


def open_trace_file(path: str | None) -> TextIO:
    """The trace goes to stderr by default: stdout is the guest's console."""
    if path is None:
        return contextlib.nullcontext(sys.stderr)  # type: ignore[return-value]
    try:
        return open(path, "w", buffering=1)
    except OSError as error:
        raise UsageError(f"cannot write trace file '{path}': {error.strerror}") from None


