"""The command line. `main(argv) -> int` is the whole interface for callers in Python.

`pyvmm` (the console script) and `python -m pyvmm` run `console_main`, which
also ends the process the way the run ended: with its exit status, or, when a
signal stopped the run, by that same signal after everything is cleaned up,
as a well-behaved Unix program does (the shell then reports 128+N and a
script running pyvmm stops on Ctrl-C too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from pyvmm.errors import DEBUG, INFO, WARNING, Log, PyvmmError, UsageError, configure_logging
from pyvmm.machine.outcome import EXIT_SIGNAL_BASE, EXIT_VMM_ERROR

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    from pyvmm.machine.outcome import RunOutcome


class Ending:
    """How a command ended: its exit status, and the signal that stopped it, if one did."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("signal", "status")

    def __init__(self, status: int, signal: int | None = None) -> None:
        self.status = status
        self.signal = signal

    @classmethod
    def of(cls, outcome: RunOutcome) -> Ending:
        return cls(outcome.exit_status, outcome.signal)


def run_boot(args: argparse.Namespace) -> Ending:
    from pyvmm.cli.boot import run_boot

    return Ending.of(run_boot(args))


def run_memmap(args: argparse.Namespace) -> Ending:
    from pyvmm.cli.memmap import run_memmap

    status, signum = run_memmap(args)
    return Ending(status, signum)


def run_demo(args: argparse.Namespace) -> Ending:
    from pyvmm import demos
    from pyvmm.startup_gc import resume_collection

    resume_collection()  # demos run long outside Machine.run (unicorn, child processes)

    if args.name is None:
        sys.stdout.write(demos.list_demos())
        return Ending(0)
    return Ending(demos.run_demo(args.name, sys.stdout))


def run_host(args: argparse.Namespace) -> Ending:
    from pyvmm.cli.host import run_host
    from pyvmm.startup_gc import resume_collection

    resume_collection()  # the probe's guests run outside Machine.run

    return Ending(run_host(args))


COMMANDS: dict[str, Callable[[argparse.Namespace], Ending]] = {
    "boot": run_boot,
    "memmap": run_memmap,
    "demo": run_demo,
    "host": run_host,
}


def run_command(argv: Sequence[str] | None = None) -> Ending:
    """Parse `argv` (default: sys.argv[1:]), run the command; never raises.

    Every stop by a signal ends the same way, wherever it lands (parsing, the
    build, the run, a wait for gdb, the report after the run): one line
    `pyvmm: stopped by SIGNAME` on stderr, and an Ending with that signal. A
    run turns the signal into its INTERRUPTED outcome; outside a run SIGTERM
    and SIGHUP raise StoppedBySignal and SIGINT KeyboardInterrupt, so that
    what was set up (the terminal, the machine) is undone on the way out.
    """
    from pyvmm.machine.run_signals import StoppedBySignal, stop_signals_raise

    with stop_signals_raise():
        try:
            return _run_command(argv)
        except StoppedBySignal as stop:  # landed while an error was being reported
            print(f"pyvmm: {stop}", file=sys.stderr)
            return Ending(stop.exit_status, stop.signal)


def _run_command(argv: Sequence[str] | None) -> Ending:
    from pyvmm.cli.arguments import normalize_arguments
    from pyvmm.cli.parser import build_parser, check_combinations
    from pyvmm.machine.run_signals import StoppedBySignal

    verbose = 0
    command: str | None = None
    try:
        parser = build_parser()
        # QEMU's spellings and what argparse would misread, before argparse sees them.
        arguments = normalize_arguments(
            parser.commands, list(sys.argv[1:] if argv is None else argv)
        )
        args = parser.parse_args(arguments)
        command = args.command
        check_combinations(args)
        verbose = args.verbose
        configure_logging(  # logging itself is imported once something is logged
            level=DEBUG if verbose > 1 else INFO if verbose else WARNING,
            format="pyvmm: %(message)s",
            stream=sys.stderr,
        )
        return COMMANDS[args.command](args)
    except SystemExit as exit:  # --help and --version
        return Ending(int(exit.code or 0))
    except StoppedBySignal as stop:  # SIGTERM or SIGHUP outside a run
        print(f"pyvmm: {stop}", file=sys.stderr)
        return Ending(stop.exit_status, stop.signal)
    except PyvmmError as error:
        if verbose:
            Log("pyvmm").debug("details", exc_info=True)
        message = str(error)
        if not message.startswith("pyvmm"):
            # A usage error names its command, wherever it was found (parser or run).
            who = f"pyvmm {command}" if isinstance(error, UsageError) and command else "pyvmm"
            message = f"{who}: {message}"
        print(message, file=sys.stderr)
        return Ending(error.exit_status)
    except KeyboardInterrupt:  # Ctrl-C outside a run (a run turns it into an outcome)
        print(f"pyvmm: stopped by {signal.SIGINT.name}", file=sys.stderr)
        return Ending(EXIT_SIGNAL_BASE + signal.SIGINT, signal.SIGINT)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Ending(EXIT_SIGNAL_BASE + signal.SIGPIPE, signal.SIGPIPE)
    except Exception as error:  # a bug in pyvmm: one line, a status, no traceback
        if verbose:
            Log("pyvmm").error("details", exc_info=True)
        print(f"pyvmm: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return Ending(EXIT_VMM_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one pyvmm command; return its exit status (128+N when signal N stopped it)."""
    return run_command(argv).status


def end_process(ending: Ending) -> NoReturn:
    """Exit with the status, or die by the signal that stopped the run (its default action).

    A normal exit flushes stdout and stderr and leaves with os._exit: the
    interpreter's own teardown would only free what the process is about to
    give back anyway.
    """
    if ending.signal is None:
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
        except (OSError, ValueError):
            sys.exit(ending.status)  # the interpreter reports a stream it cannot flush
        if "logging" in sys.modules:  # -v: its handlers are flushed at exit
            sys.modules["logging"].shutdown()
        # Everything pyvmm opened is closed and the streams are flushed: skip the
        # interpreter's teardown of every module and object (about 5 ms here).
        os._exit(ending.status)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, gone or None
            stream.flush()
    if ending.signal != signal.SIGKILL:  # SIGKILL has no handler and cannot be blocked
        signal.signal(ending.signal, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [ending.signal])
    os.kill(os.getpid(), ending.signal)
    os._exit(ending.status)  # only if the signal could not end us (it is ignored from outside)


STANDARD_STREAMS = (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w"))


def open_closed_standard_fds() -> None:
    """Give each of fds 0, 1 and 2 that is closed /dev/null, as careful Unix programs do.

    Started with `>&-`, the first file pyvmm opened would become fd 1 (the
    image, /dev/kvm...) and anything meant for stdout would land in it. Python
    leaves `sys.stdout` None then; it gets a stream on /dev/null too. The
    program's business only: the library never touches the process's fds.
    """
    for name, fd, mode in STANDARD_STREAMS:
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: `fd` itself,
        if null != fd:  # since the ones below it are open already
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:  # the stream lives as long as the process
            stream = open(fd, mode, closefd=False, errors="backslashreplace")  # noqa: SIM115
            setattr(sys, name, stream)


def console_main() -> NoReturn:
    """The `pyvmm` program."""
    from pyvmm.startup_gc import pause_collection

    pause_collection()  # until the guest runs (Machine.run resumes it)
    open_closed_standard_fds()
    end_process(run_command())
