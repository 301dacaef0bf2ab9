"""Command line: argparse only. `main(argv) -> int` is the whole interface."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pyvmm import __version__
from pyvmm.errors import PyvmmError, UsageError
from pyvmm.loaders.entry import CpuMode
from pyvmm.memory.size import parse_memory_size

DEFAULT_MEMORY = "128M"  # QEMU's default

BOOT_EPILOG = """\
exit status:
  0     the guest halted (HLT) or asked for a shutdown
  N     the guest wrote v to the debug-exit port 0xf4: N = (v << 1) | 1, as QEMU
  1     the guest faulted (triple fault, failed entry, KVM internal error),
        timed out (--timeout), or pyvmm failed at run time
  2     bad usage or bad input (unreadable or malformed image, bad -m, ...)
  128+S stopped by signal S (130 for Ctrl-C, 143 for SIGTERM)

image formats: ELF32 (entered in protected mode), ELF64 (long mode), anything
else is a flat binary (real mode at 0x7c00 by default, like a boot sector).
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
    boot.add_argument("image", metavar="IMAGE", help="flat binary, ELF32 or ELF64 executable")
    boot.add_argument(
        "-m",
        "--memory",
        default=DEFAULT_MEMORY,
        metavar="MEM",
        help="guest RAM: plain MiB or with a K/M/G/T suffix (default %(default)s)",
    )
    boot.add_argument(
        "--mode",
        choices=[mode.value for mode in CpuMode],
        help="CPU state at entry (default: real for flat binaries, from the ELF class otherwise)",
    )
    boot.add_argument(
        "--load-addr",
        type=_parse_address,
        metavar="ADDR",
        help="guest-physical load address of a flat binary "
        "(default 0x7c00 in real mode, 0x100000 otherwise)",
    )
    boot.add_argument(
        "--timeout",
        type=_parse_timeout,
        metavar="SECONDS",
        help="stop the guest after this many seconds (exit status 1)",
    )
    boot.add_argument(
        "-v", "--verbose", action="count", default=0, help="say what the VMM does (-vv: more)"
    )
    return parser


def _parse_address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid address '{text}'") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"address '{text}' is outside the 64-bit space")
    return value


def _parse_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid timeout '{text}'") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError("timeout must be a positive number of seconds")
    return value


def run_boot(args: argparse.Namespace) -> int:
    # Imported here so that `pyvmm --help` works even without the compiled binding.
    from pyvmm.builder import MachineConfig, build_machine
    from pyvmm.console import ConsoleWriter
    from pyvmm.kvm.system import DEFAULT_KVM_PATH
    from pyvmm.loaders import read_image

    ram_size = parse_memory_size(args.memory)
    image = read_image(args.image)
    config = MachineConfig(
        image=image,
        ram_size=ram_size,
        console=ConsoleWriter(sys.stdout.fileno()),
        mode=CpuMode(args.mode) if args.mode else None,
        load_gpa=args.load_addr,
        # Lets tests (and odd hosts) point pyvmm at another KVM device node.
        kvm_path=os.environ.get("PYVMM_KVM_PATH", DEFAULT_KVM_PATH),
    )
    with build_machine(config) as machine:
        outcome = machine.run(timeout=args.timeout)
        logging.getLogger("pyvmm").info(
            "%s after %d exits; unassigned port accesses: %d reads, %d writes",
            outcome.kind.value,
            machine.loop.exit_count,
            machine.pio_bus.unmapped_reads,
            machine.pio_bus.unmapped_writes,
        )
    if outcome.kind.is_abnormal:
        print(f"pyvmm: {outcome.message}", file=sys.stderr)
        if outcome.registers:
            print(outcome.registers, file=sys.stderr)
    return outcome.exit_status


def main(argv: Sequence[str] | None = None) -> int:
    verbose = 0
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
            format="pyvmm: %(message)s",
            stream=sys.stderr,
        )
        return run_boot(args)
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


if __name__ == "__main__":
    sys.exit(main())
