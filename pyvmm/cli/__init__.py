"""The command line. `main(argv) -> int` is the whole interface for callers in Python.

`pyvmm` (the console script) and `python -m pyvmm` run `console_main`, which
also ends the process the way the run ended: with its exit status, or, when a
signal stopped the run, by that same signal after everything is cleaned up,
as a well-behaved Unix program does (the shell then reports 128+N and a
script running pyvmm stops on Ctrl-C too).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from pyvmm.errors import PyvmmError
from pyvmm.machine.outcome import EXIT_SIGNAL_BASE, EXIT_VMM_ERROR, RunOutcome


@dataclass(frozen=True)
class Ending:
    """How a command ended: its exit status, and the signal that stopped it, if one did."""

    status: int
    signal: int | None = None

    @classmethod
    def of(cls, outcome: RunOutcome) -> Ending:
        return cls(outcome.exit_status, outcome.signal)


def run_boot(args: argparse.Namespace) -> Ending:
    from pyvmm.cli.boot import run_boot

    return Ending.of(run_boot(args))


def run_memmap(args: argparse.Namespace) -> Ending:
    from pyvmm.cli.memmap import run_memmap

    return Ending(run_memmap(args))


def run_demo(args: argparse.Namespace) -> Ending:
    from pyvmm import demos

    if args.name is None:
        sys.stdout.write(demos.list_demos())
        return Ending(0)
    return Ending(demos.run_demo(args.name, sys.stdout))


COMMANDS: dict[str, Callable[[argparse.Namespace], Ending]] = {
    "boot": run_boot,
    "memmap": run_memmap,
    "demo": run_demo,
}


def run_command(argv: Sequence[str] | None = None) -> Ending:
    """Parse `argv` (default: sys.argv[1:]), run the command; never raises."""
    from pyvmm.cli.arguments import normalize_arguments
    from pyvmm.cli.parser import build_parser, check_combinations

    verbose = 0
    try:
        parser = build_parser()
        # QEMU's spellings and what argparse would misread, before argparse sees them.
        arguments = normalize_arguments(
            parser.commands, list(sys.argv[1:] if argv is None else argv)
        )
        args = parser.parse_args(arguments)
        check_combinations(args)
        verbose = args.verbose
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
            format="pyvmm: %(message)s",
            stream=sys.stderr,
        )
        return COMMANDS[args.command](args)
    except SystemExit as exit:  # --help and --version
        return Ending(int(exit.code or 0))
    except PyvmmError as error:
        if verbose:
            logging.getLogger("pyvmm").debug("details", exc_info=True)
        message = str(error)
        print(message if message.startswith("pyvmm") else f"pyvmm: {message}", file=sys.stderr)
        return Ending(error.exit_status, getattr(error, "signal", None))
    except KeyboardInterrupt:  # Ctrl-C outside a run (a run turns it into an outcome)
        print("pyvmm: interrupted", file=sys.stderr)
        return Ending(EXIT_SIGNAL_BASE + signal.SIGINT, signal.SIGINT)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Ending(EXIT_SIGNAL_BASE + signal.SIGPIPE, signal.SIGPIPE)
    except Exception as error:  # a bug in pyvmm: one line, a status, no traceback
        if verbose:
            logging.getLogger("pyvmm").error("details", exc_info=True)
        print(f"pyvmm: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return Ending(EXIT_VMM_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one pyvmm command; return its exit status (128+N when signal N stopped it)."""
    return run_command(argv).status


def end_process(ending: Ending) -> NoReturn:
    """Exit with the status, or die by the signal that stopped the run (its default action)."""
    if ending.signal is None:
        sys.exit(ending.status)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or gone: nothing to flush
            stream.flush()
    if ending.signal != signal.SIGKILL:  # SIGKILL has no handler and cannot be blocked
        signal.signal(ending.signal, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [ending.signal])
    os.kill(os.getpid(), ending.signal)
    os._exit(ending.status)  # only if the signal could not end us (it is ignored from outside)


def console_main() -> NoReturn:
    """The `pyvmm` program."""
    end_process(run_command())
