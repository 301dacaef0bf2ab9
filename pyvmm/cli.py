"""Command line: argparse only. `main(argv) -> int` is the whole interface."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from pyvmm import __version__
from pyvmm.errors import PyvmmError, UsageError
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.outcome import EXIT_VMM_ERROR
from pyvmm.memory.size import parse_memory_size, parse_ram_size

if TYPE_CHECKING:
    from pyvmm.console.input import InputBuffer
    from pyvmm.machine.builder import Machine
    from pyvmm.machine.outcome import RunOutcome

DEFAULT_MEMORY = "128M"  # QEMU's default

BOOT_EPILOG = """\
how a run ends (outcome: exit status):
  halted          0     the guest executed HLT
  system-event    0|1   the guest asked KVM for a shutdown (0), a reset or crash (1)
  debug-exit      N     the guest wrote v to the debug-exit port 0xf4:
                        N = (v << 1) | 1, as QEMU's isa-debug-exit (always odd)
  triple-fault    1     the guest faulted; so do fail-entry (KVM could not enter
  fail-entry            it) and internal-error (KVM could not emulate an
  internal-error        instruction, which is named, with where it was)
  timeout         124   --timeout expired (as timeout(1) reports it)
  exit-limit      126   --max-exits reached
  interrupted     128+S stopped by signal S: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP
  vmm-error       70    pyvmm itself failed (no usable /dev/kvm, a KVM call
                        failed, an exit it cannot handle)
  bad input       2     bad usage or input (unreadable or malformed image,
                        bad -m, ...): nothing ran
An abnormal end prints its reason, the guest's registers and the last lines
of its console on stderr (-v: more lines).

console: COM1 is this terminal. Output goes to stdout (--console-rate caps
it); keystrokes go to the guest unechoed, one by one, through a buffer of
--input-buffer bytes (pyvmm stops reading stdin while it is full); Ctrl-C
still ends the run, and the terminal is restored on every end.

image formats: ELF32 (entered in protected mode), ELF64 (long mode), anything
else is a flat binary (real mode at 0x7c00 by default, like a boot sector).
"""


MEMMAP_EPILOG = """\
exit status: 0 when the report was printed (the guest's own ending is its
first line), 1 when pyvmm failed, 2 for bad usage or input.

example: pyvmm memmap --mode long guests/vmem64.bin --translate 0xffff800012345010
"""

DEMO_EPILOG = """\
exit status: 0 when the evidence supports the property, 1 when it does not,
2 when the demo cannot run (it needs guests/ and benchmarks/ from a checkout).
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyvmm", description="A small, readable VMM on Linux KVM.")
    parser.add_argument("--version", action="version", version=f"pyvmm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    boot = commands.add_parser(
        "boot",
        help="boot a guest image",
        description="Boot IMAGE in a new VM with one vCPU; its serial port is this terminal.",
        epilog=BOOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_machine_arguments(boot)
    boot.add_argument(
        "--input-buffer",
        type=_parse_buffer_size,
        default="64K",
        metavar="BYTES",
        help="most stdin bytes held for the guest, K/M suffixes allowed (default %(default)s; "
        "0: the guest gets no input)",
    )
    boot.add_argument(
        "--trace",
        nargs="?",
        const="all",
        metavar="KINDS",
        help="print one line per exit; --trace=KINDS keeps only those (comma-separated: io, "
        "mmio, hlt, shutdown, fail-entry, internal-error, system-event, unknown)",
    )
    boot.add_argument("--trace-file", metavar="FILE", help="write the trace to FILE, not stderr")
    boot.add_argument(
        "--trace-format", choices=["text", "json"], default="text", help="trace line format"
    )
    boot.add_argument(
        "--stats", action="store_true", help="print exit statistics and timings at the end"
    )
    boot.add_argument(
        "--gdb",
        metavar="tcp::PORT",
        help="wait for gdb on this address and let it drive the guest (gdb: target remote :PORT)",
    )
    boot.add_argument(
        "-s", dest="gdb_default", action="store_true", help="shorthand for --gdb tcp::1234"
    )
    boot.add_argument(
        "-S",
        dest="gdb_stop",
        action="store_true",
        help="with --gdb/-s: stop before the first guest instruction",
    )

    memmap = commands.add_parser(
        "memmap",
        help="run a guest, then show its memory at every level",
        description="Run IMAGE until it ends, then print the machine's memory map, the "
        "guest's page-table mappings (guest virtual -> guest physical -> host virtual), "
        "and the whole chain down to host physical for each --translate address. "
        "The guest's serial output goes to stderr.",
        epilog=MEMMAP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_machine_arguments(memmap)
    memmap.add_argument(
        "--translate",
        action="append",
        default=[],
        type=_parse_address,
        metavar="GVA",
        help="show the full translation chain of this guest-virtual address (repeatable)",
    )
    memmap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    memmap.add_argument(
        "-q", "--quiet", action="store_true", help="discard the guest's serial output"
    )

    demo = commands.add_parser(
        "demo",
        help="show Popek & Goldberg's VMM properties on real guests",
        description="Run a teaching demo (from a source checkout): equivalence, efficiency "
        "or isolation (resource control). Without NAME, list the demos.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "name",
        nargs="?",
        choices=["equivalence", "efficiency", "isolation"],
        metavar="NAME",
        help="equivalence, efficiency or isolation",
    )
    demo.set_defaults(verbose=0)
    return parser


def add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that describe a VM, shared by every command that builds one."""
    parser.add_argument("image", metavar="IMAGE", help="flat binary, ELF32 or ELF64 executable")
    parser.add_argument(
        "-m",
        "--memory",
        default=DEFAULT_MEMORY,
        metavar="MEM",
        help="guest RAM: plain MiB or with a K/M/G/T suffix (default %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in CpuMode],
        help="CPU state at entry (default: real for flat binaries, from the ELF class otherwise)",
    )
    parser.add_argument(
        "--load-addr",
        type=_parse_address,
        metavar="ADDR",
        help="guest-physical load address of a flat binary "
        "(default 0x7c00 in real mode, 0x100000 otherwise)",
    )
    parser.add_argument(
        "--timeout",
        type=_parse_timeout,
        metavar="SECONDS",
        help="stop the guest after this many seconds (exit status 124)",
    )
    parser.add_argument(
        "--max-exits",
        type=_parse_count,
        metavar="N",
        help="stop the guest after N VM exits of any one vCPU (exit status 126)",
    )
    parser.add_argument(
        "--console-rate",
        type=_parse_rate,
        metavar="BYTES",
        help="most console output per second, K/M suffixes allowed (default: no limit); "
        "output over it is dropped and counted",
    )
    parser.add_argument(
        "--append",
        "-append",
        metavar="ARGS",
        help="multiboot kernel command line; the kernel sees '<IMAGE> ARGS', as with QEMU",
    )
    parser.add_argument(
        "--initrd",
        "-initrd",
        metavar="FILES",
        help="comma-separated files loaded as multiboot modules ('FILE args' passes args)",
    )
    parser.add_argument(
        "--multiboot",
        action="store_true",
        help="boot IMAGE with the multiboot protocol (found by its header otherwise)",
    )
    parser.add_argument(
        "-smp",
        dest="smp",
        type=_parse_cpus,
        default=1,
        metavar="N",
        help="number of vCPUs (default 1; more than one adds the in-kernel APICs and PIT)",
    )
    parser.add_argument(
        "--kernel-irqchip",
        choices=["on", "off"],
        help="in-kernel interrupt controllers and PIT (default: on with -smp > 1; without "
        "them a single vCPU's hlt ends the run, with them hlt waits for an interrupt)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say what the VMM does (-vv: more)"
    )


def _parse_address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid address '{text}'") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"address '{text}' is outside the 64-bit space")
    return value


def _parse_cpus(text: str) -> int:
    # QEMU also accepts "-smp cpus=N"; the plain count is what every guide uses.
    value = text.removeprefix("cpus=")
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"invalid CPU count '{text}'")
    return int(value)


def _parse_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count '{text}': a positive integer")
    return int(text)


def _byte_count(text: str, what: str) -> int:
    # Plain numbers are bytes here (not MiB as for -m): "1000" means 1000 bytes.
    try:
        return parse_memory_size(text) if text[-1:].isalpha() else int(text)
    except (UsageError, ValueError):
        raise argparse.ArgumentTypeError(f"invalid {what} '{text}'") from None


def _parse_rate(text: str) -> int:
    value = _byte_count(text, "rate")
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid rate '{text}': must be at least 1 byte/s")
    return value


def _parse_buffer_size(text: str) -> int:
    value = _byte_count(text, "buffer size")
    if not 0 <= value <= 1 << 30:
        raise argparse.ArgumentTypeError(f"buffer size '{text}' must be 0..1G")
    return value


def _parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid timeout '{text}'") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError("timeout must be a positive number of seconds")
    return value


def build_from_args(
    args: argparse.Namespace, console: TextIO | None, console_input: InputBuffer | None = None
) -> Machine:
    """Build the machine the shared options describe; console None discards output."""
    from pyvmm.console.output import ConsoleWriter
    from pyvmm.kvm.system import DEFAULT_KVM_PATH
    from pyvmm.loaders import read_image
    from pyvmm.machine.builder import MachineConfig, build_machine

    ram_size = parse_ram_size(args.memory)
    image = read_image(args.image)
    cmdline = args.image if args.append is None else f"{args.image} {args.append}"
    modules = tuple(
        (entry, read_image(entry.split()[0]))
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
        force_multiboot=args.multiboot,
        irqchip=None if args.kernel_irqchip is None else args.kernel_irqchip == "on",
        # Lets tests (and odd hosts) point pyvmm at another KVM device node.
        kvm_path=os.environ.get("PYVMM_KVM_PATH", DEFAULT_KVM_PATH),
    )
    return build_machine(config)


def run_boot(args: argparse.Namespace) -> int:
    from pyvmm.observe.exit_stats import ExitStatistics, FanOut
    from pyvmm.observe.trace import ExitTracer, parse_categories

    categories = parse_categories(args.trace) if args.trace else None
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
        gdb_address = args.gdb or ("tcp::1234" if args.gdb_default else None)
        if gdb_address is not None:
            from pyvmm.gdb.server import GdbServer, parse_gdb_address
            from pyvmm.kvm.system import DEFAULT_KVM_PATH

            kvm_path = os.environ.get("PYVMM_KVM_PATH", DEFAULT_KVM_PATH)
            server = GdbServer(machine, parse_gdb_address(gdb_address), kvm_path)
            outcome = server.serve(stop_at_start=args.gdb_stop, timeout=args.timeout)
        else:
            outcome = machine.run(timeout=args.timeout, observer=observer)
        log_run_summary(machine, outcome)
    report_end(outcome, machine.console, args.verbose)
    if statistics is not None:
        print(statistics.summary(), file=sys.stderr)
    return outcome.exit_status


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


def run_demo(args: argparse.Namespace) -> int:
    from pyvmm import demos

    if args.name is None:
        sys.stdout.write(demos.list_demos())
        return 0
    return demos.run_demo(args.name, sys.stdout)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "boot": run_boot,
    "memmap": run_memmap,
    "demo": run_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    verbose = 0
    try:
        arguments = list(sys.argv[1:] if argv is None else argv)
        # A bare --trace must not swallow the image name: kinds go after '='.
        arguments = ["--trace=all" if item == "--trace" else item for item in arguments]
        args = build_parser().parse_args(arguments)
        verbose = args.verbose
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
            format="pyvmm: %(message)s",
            stream=sys.stderr,
        )
        return COMMANDS[args.command](args)
    except SystemExit as exit:  # --help and --version
        return int(exit.code or 0)
    except PyvmmError as error:
        if verbose:
            logging.getLogger("pyvmm").debug("details", exc_info=True)
        message = str(error)
        print(message if message.startswith("pyvmm") else f"pyvmm: {message}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        print("pyvmm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:  # a bug in pyvmm: one line, a status, no traceback
        if verbose:
            logging.getLogger("pyvmm").error("details", exc_info=True)
        print(f"pyvmm: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_VMM_ERROR


if __name__ == "__main__":
    sys.exit(main())
