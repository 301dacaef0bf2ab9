"""Console output that cannot be delivered: a reader that went away, a full disk, a
non-blocking fd, a shared terminal or pipe, and over-long lines in the report (no KVM)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from pyvmm.cli.report import closed_console_outcome, finish_guest_line, report_end
from pyvmm.console.output import TAIL_LINE_WIDTH, ConsoleWriter
from pyvmm.machine.outcome import EXIT_HALTED, EXIT_TIMEOUT, OutcomeKind, RunOutcome


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_a_reader_that_went_away_is_told_once_and_the_rest_is_dropped(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    calls: list[None] = []
    writer = ConsoleWriter(write_end, name="stdout", on_reader_gone=lambda: calls.append(None))
    writer(b"seen\n")
    os.close(read_end)
    writer(b"lost")
    writer(b"lost too")
    assert calls == [None]  # once: the owner stops the run then
    assert writer.reader_gone
    assert writer.write_error is not None and writer.write_error.errno == errno.EPIPE
    assert (writer.bytes_written, writer.bytes_dropped) == (5, 12)


def test_another_write_error_is_kept_for_the_report_and_stops_nothing() -> None:
    calls: list[None] = []
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        writer = ConsoleWriter(full, name="stdout", on_reader_gone=lambda: calls.append(None))
        writer(b"Hello, world!\n")
        writer(b"more")
    finally:
        os.close(full)
    assert calls == []
    assert not writer.reader_gone
    assert writer.bytes_dropped == 18
    assert writer.describe_write_error() == (
        "cannot write to stdout: ENOSPC (No space left on device)"
    )


def test_a_non_blocking_fd_that_fills_up_is_waited_for_not_dropped(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    os.set_blocking(write_end, False)  # as another process sharing the terminal may leave it
    size = 1 << 20  # far more than a pipe holds
    received = bytearray()

    def read_all() -> None:
        while len(received) < size:
            received.extend(os.read(read_end, 65536))

    reader = threading.Thread(target=read_all)
    reader.start()
    writer = ConsoleWriter(write_end)
    writer(b"x" * size)
    reader.join(timeout=30)
    assert (writer.bytes_written, writer.bytes_dropped) == (size, 0)
    assert writer.write_error is None
    assert bytes(received) == b"x" * size


def test_shares_destination_compares_what_the_fds_point_at(pipe: tuple[int, int]) -> None:
    _read_end, write_end = pipe
    other_read, other_write = os.pipe()
    duplicate = os.dup(write_end)  # as `2>&1` makes it
    try:
        writer = ConsoleWriter(write_end)
        assert writer.shares_destination(duplicate)
        assert not writer.shares_destination(other_write)
        assert not ConsoleWriter(-1).shares_destination(duplicate)
    finally:
        for fd in (other_read, other_write, duplicate):
            os.close(fd)


class PipeStream(io.StringIO):
    """A text stream whose fileno() is a given fd (what report code checks)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def test_an_unfinished_guest_line_is_ended_once_where_pyvmm_writes_too(
    pipe: tuple[int, int],
) -> None:
    _read_end, write_end = pipe
    writer = ConsoleWriter(write_end)
    writer(b"Hello, wor")
    shared = PipeStream(os.dup(write_end))
    try:
        finish_guest_line(writer, shared)
        finish_guest_line(writer, shared)  # once per unfinished line
        assert shared.getvalue() == "\n"
        assert not writer.ends_mid_line
        writer(b"ld")
        assert writer.ends_mid_line  # new guest output: a new unfinished line
    finally:
        os.close(shared.fileno())


def test_an_unfinished_guest_line_elsewhere_is_left_alone(pipe: tuple[int, int]) -> None:
    _read_end, write_end = pipe
    other_read, other_write = os.pipe()
    writer = ConsoleWriter(write_end)
    writer(b"Hello, wor")
    elsewhere = PipeStream(other_write)
    try:
        finish_guest_line(writer, elsewhere)
        assert elsewhere.getvalue() == ""
        assert writer.ends_mid_line
    finally:
        os.close(other_read)
        os.close(other_write)


def test_a_long_line_in_the_tail_is_cut_with_a_count() -> None:
    writer = ConsoleWriter(-1)
    writer(b"start" + b"#" * 8000 + b"end\nshort line\n")
    long_line, short_line = writer.tail_lines(5)
    assert len(long_line) <= TAIL_LINE_WIDTH + 40  # the marker's own words
    assert long_line.startswith("start###")
    assert long_line.endswith("###end")
    assert f"[{5 + 8000 + 3 - TAIL_LINE_WIDTH} characters cut]" in long_line
    assert short_line == "short line"


# --- what the report says -------------------------------------------------------------


def test_a_run_ended_by_its_closed_console_reports_nothing(
    pipe: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    read_end, write_end = pipe
    writer = ConsoleWriter(write_end, name="stdout")
    os.close(read_end)
    writer(b"flood")
    outcome = closed_console_outcome(writer).replace(registers="RIP=...")
    assert (outcome.kind, outcome.signal) == (OutcomeKind.INTERRUPTED, signal.SIGPIPE)
    assert outcome.exit_status == 128 + signal.SIGPIPE
    report_end(outcome, writer, verbose=0)
    assert capsys.readouterr().err == ""  # like `yes | head`
    report_end(outcome, writer, verbose=1)
    err = capsys.readouterr().err
    assert "has no reader any more (EPIPE)" in err
    assert "cannot write to stdout: EPIPE (Broken pipe)" in err


def test_a_write_error_is_one_line_and_the_guests_end_is_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        writer = ConsoleWriter(full, name="stdout")
        writer(b"Hello, world!\n")
    finally:
        os.close(full)
    report_end(RunOutcome(OutcomeKind.HALTED, EXIT_HALTED, "guest halted"), writer, verbose=0)
    assert capsys.readouterr().err == (
        "pyvmm: dropped 14 bytes of console output: cannot write to stdout: "
        "ENOSPC (No space left on device)\n"
    )


def test_notes_follow_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = RunOutcome(OutcomeKind.TIMEOUT, EXIT_TIMEOUT, "guest did not finish within 1 s")
    report_end(outcome, ConsoleWriter(-1), verbose=0, notes=("every vCPU was halted",))
    assert capsys.readouterr().err.splitlines() == [
        "pyvmm: guest did not finish within 1 s",
        "pyvmm: every vCPU was halted",
    ]
