"""What the command line says around a run: the memory map and summary (-v), an abnormal end,
the BIOS services a guest called without a BIOS, and the VGA text screen."""

from __future__ import annotations

import os
import signal
import sys

from pyvmm.errors import INFO, Log

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

    from pyvmm.console.output import ConsoleWriter
    from pyvmm.machine.builder import Machine
    from pyvmm.machine.outcome import RunOutcome
    from pyvmm.observe.machine_map import MapEntry


def log_memory_map(machine: Machine) -> None:
    log = Log("pyvmm")
    if not log.isEnabledFor(INFO):
        return
    from pyvmm.observe.machine_map import machine_memory_map

    entries = machine_memory_map(machine)
    if machine.vga_text is not None:
        entries = _split_vga_slots(machine, entries)
    for entry in entries:
        host = f" (host 0x{entry.hva:x})" if entry.hva is not None else ""
        log.info(
            "memory 0x%09x-0x%09x %-6s %s%s",
            entry.start,
            entry.end - 1,
            entry.kind,
            entry.description,
            host,
        )


def _split_vga_slots(machine: Machine, entries: list[MapEntry]) -> list[MapEntry]:
    """Say which KVM slots the RAM row holding the VGA text page became, and add the page."""
    from dataclasses import replace

    from pyvmm.arch.x86_64 import layout
    from pyvmm.observe.machine_map import MapEntry

    watch = machine.vga_text
    assert watch is not None
    vga = layout.VGA_TEXT_GPA
    around = [str(slot) for slot, start, _ in watch.kvm_slots if start != vga]
    vga_slot = next(slot for slot, start, _ in watch.kvm_slots if start == vga)
    rows = []
    for entry in entries:
        if entry.kind == "ram" and entry.start <= vga < entry.end:
            slots = " and ".join(around)
            entry = replace(entry, description=f"RAM, KVM slots {slots} around the VGA text page")
        rows.append(entry)
    logged = "dirty-page logged" if watch.slot is not None else "KVM refused logging"
    what = f"VGA text buffer (RAM), KVM slot {vga_slot}, {logged}"
    hva = machine.memory.host_address(vga)
    rows.append(MapEntry(vga, vga + layout.VGA_TEXT_WATCHED_SIZE, "vga", what, hva))
    return sorted(rows, key=lambda item: (item.start, item.kind != "ram"))


def log_run_summary(machine: Machine, outcome: RunOutcome) -> None:
    log = Log("pyvmm")
    if not log.isEnabledFor(INFO):
        return
    finish_guest_line(machine.console)
    log.info(
        "%s after %d exits; unassigned port accesses: %d reads, %d writes",
        outcome.kind.value,
        machine.loop.exit_count,
        machine.pio_bus.unmapped_reads,
        machine.pio_bus.unmapped_writes,
    )


TAIL_LINES = 5  # console lines shown after an abnormal end (-v: TAIL_LINES_VERBOSE)
TAIL_LINES_VERBOSE = 40


def finish_guest_line(console: object, stream: TextIO | None = None) -> None:
    """Before pyvmm's own lines: end the line the guest left unfinished, if they share it.

    Only where the guest's console and `stream` (default: stderr) write to the
    same place, the same terminal, file or pipe (`2>&1`): there pyvmm's line
    would otherwise be glued to the guest's (`Hello, worpyvmm: ...`). Once per
    unfinished line.
    """
    from pyvmm.console.output import ConsoleWriter

    out = sys.stderr if stream is None else stream
    if not isinstance(console, ConsoleWriter) or not console.ends_mid_line:
        return
    try:
        fd = out.fileno()
    except (AttributeError, ValueError, OSError):
        return
    if console.shares_destination(fd):
        print(file=out)
        console.note_line_ended()


def closed_console_outcome(console: ConsoleWriter) -> RunOutcome:
    """The run's end when the console's reader went away (EPIPE): as `yes | head` ends."""
    from pyvmm.machine.outcome import interrupted

    return interrupted(
        "SIGPIPE",
        signal.SIGPIPE,
        f"the guest's console, {console.name}, has no reader any more (EPIPE): "
        "stopped as SIGPIPE stops a program writing to a closed pipe",
    )


def stop_notes(machine: Machine, outcome: RunOutcome) -> tuple[str, ...]:
    """After a stop from outside (--timeout, a signal): why the guest had not ended itself.

    Read from the vCPUs (KVM_GET_MP_STATE, RFLAGS.IF); call after the run,
    while the machine is open. Empty when nothing is known for certain.
    """
    from pyvmm.console.output import ConsoleWriter
    from pyvmm.machine.outcome import OutcomeKind
    from pyvmm.machine.vcpu_states import explain_never_ended, read_vcpu_states

    if outcome.kind not in (OutcomeKind.TIMEOUT, OutcomeKind.INTERRUPTED):
        return ()
    if isinstance(machine.console, ConsoleWriter) and machine.console.reader_gone:
        return ()  # the run ended because of the host, not of the guest
    states = read_vcpu_states(loop.vcpu for loop in machine.group.loops)
    why = explain_never_ended(states) if states else None
    return (why,) if why else ()


def report_end(
    outcome: RunOutcome, console: object, verbose: int, notes: Sequence[str] = ()
) -> None:
    """An abnormal end: why (and `notes`), the registers, the console's last lines.

    Always: console output that was lost, and why. A run ended because the
    console's reader went away says nothing, as `yes | head` says nothing,
    except with -v.
    """
    from pyvmm.console.output import ConsoleWriter

    writer = console if isinstance(console, ConsoleWriter) else None
    quiet = writer is not None and writer.reader_gone and not verbose
    if quiet and outcome.signal == signal.SIGPIPE:
        return
    if outcome.kind.is_abnormal:
        finish_guest_line(writer)
        print(f"pyvmm: {outcome.message}", file=sys.stderr)
        for note in notes:
            print(f"pyvmm: {note}", file=sys.stderr)
        if outcome.registers:
            print(outcome.registers, file=sys.stderr)
        tail = writer.tail_lines(TAIL_LINES_VERBOSE if verbose else TAIL_LINES) if writer else []
        if tail:
            print("pyvmm: last console output:", file=sys.stderr)
            for line in tail:
                print(f"  | {line}", file=sys.stderr)
    if writer is None:
        return
    if writer.bytes_over_rate:
        finish_guest_line(writer)
        print(
            f"pyvmm: dropped {_bytes(writer.bytes_over_rate)} of console output over "
            f"--console-rate {writer.rate_limit} bytes/s",
            file=sys.stderr,
        )
    problem = writer.describe_write_error()
    if problem is not None and not quiet:
        finish_guest_line(writer)
        print(
            f"pyvmm: dropped {_bytes(writer.bytes_dropped)} of console output: {problem}",
            file=sys.stderr,
        )


def _bytes(count: int) -> str:
    return "1 byte" if count == 1 else f"{count} bytes"


# The BIOS services called and the VGA text screen, taken while the machine is open.


class LegacyPcReport:
    """What a guest expected of a PC's BIOS and screen, captured before the machine closes.

    `bios_lines`: one line per kind of call into an empty IVT vector.
    `screen`: the VGA text buffer's SCREEN_SIZE bytes to show, None for none.
    `vga_written`: whether the guest wrote there (None: not watched). Read-only once made.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("bios_lines", "screen", "vga_written")

    def __init__(
        self,
        bios_lines: tuple[str, ...] = (),
        screen: bytes | None = None,
        vga_written: bool | None = None,
    ) -> None:
        self.bios_lines = bios_lines
        self.screen = screen
        self.vga_written = vga_written


def collect_legacy_pc(machine: Machine, vga: str) -> LegacyPcReport:
    """Read the no-BIOS trap and the VGA watch after a run; `vga` is --vga (auto, text, none)."""
    from pyvmm.arch.x86_64.no_bios import MAX_KINDS
    from pyvmm.errors import PyvmmError

    log = Log("pyvmm")
    lines: list[str] = []
    trap = machine.no_bios
    if trap is not None:
        lines = [call.report_line() for call in trap.calls.values()]
        if trap.uncounted:
            lines.append(f"and {trap.uncounted} more calls, of kinds past the first {MAX_KINDS}")
    watch = machine.vga_text
    if watch is None or vga == "none":
        return LegacyPcReport(tuple(lines))
    try:
        written = watch.written()
    except PyvmmError as error:  # the run's outcome matters more than the screen
        log.warning("cannot tell whether the guest wrote to the VGA text buffer: %s", error)
        return LegacyPcReport(tuple(lines))
    log.info(
        "VGA text buffer at 0xb8000: %s (watched %s)",
        "written by the guest" if written else "not written",
        watch.method,
    )
    screen = watch.screen() if written or vga == "text" else None
    return LegacyPcReport(tuple(lines), screen, written)


def report_legacy_pc(
    report: LegacyPcReport, stream: TextIO | None = None, console: object = None
) -> None:
    """Print the BIOS lines, then the framed screen, on `stream` (default: stderr).

    `console`: the guest's ConsoleWriter, whose unfinished last line is ended
    first where it shares `stream` (see `finish_guest_line`).
    """
    from pyvmm.devices.vga_text import render

    out = sys.stderr if stream is None else stream
    if not report.bios_lines and report.screen is None:
        return
    finish_guest_line(console, out)
    for line in report.bios_lines:
        print(f"pyvmm: {line}", file=out)
    if report.screen is None:
        return
    if report.vga_written:
        print("pyvmm: the guest wrote to the VGA text buffer at 0xb8000; the screen:", file=out)
    else:
        print("pyvmm: the VGA text screen at 0xb8000 (the guest did not write to it):", file=out)
    out.write(render(report.screen, color=_wants_color(out), ascii_only=not _encodes(out)))
    out.flush()


def _wants_color(stream: TextIO) -> bool:
    """ANSI colours only on a terminal, and not where NO_COLOR or TERM=dumb says no."""
    try:
        tty = os.isatty(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _encodes(stream: TextIO) -> bool:
    """Whether `stream` can write box drawing and CP437 glyphs."""
    encoding = getattr(stream, "encoding", None)
    if encoding is None:  # a text stream with no bytes behind it (io.StringIO)
        return True
    try:
        "┌─☺╔".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
