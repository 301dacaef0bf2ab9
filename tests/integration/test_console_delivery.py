"""Console output pyvmm cannot deliver: a reader that went away, a full disk, a closed
stdout, a line pyvmm's messages would be glued to, and an endless line in the report."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, guest, run_pyvmm

PYVMM = [sys.executable, "-m", "pyvmm"]


def read_then_close(command: list[str], stream: str, count: int = 100) -> tuple[int, str]:
    """Run `command`, read `count` bytes of its `stream` and close it, as `| head -c` does.

    Returns the exit status (-N: killed by signal N) and what was left on the other stream.
    """
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, **pipes)
    try:
        reader = process.stdout if stream == "stdout" else process.stderr
        assert reader is not None
        assert len(reader.read(count)) == count
        reader.close()
        # A hang guard, not a speed check: a run that never ends fails here.
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, (err if stream == "stdout" else out).decode()


def test_a_flood_into_a_closed_pipe_ends_as_by_sigpipe_and_says_nothing() -> None:
    # Before: the run went on, at full CPU, until --timeout (status 124).
    command = [*PYVMM, "boot", "--timeout", "20", guest("tests/flood_forever.bin")]
    status, err = read_then_close(command, "stdout")
    assert status == -signal.SIGPIPE  # a shell shows 141, like `yes | head`
    assert err == ""


def test_with_v_the_closed_pipe_is_reported() -> None:
    command = [*PYVMM, "boot", "-v", "--timeout", "20", guest("tests/flood_forever.bin")]
    status, err = read_then_close(command, "stdout")
    assert status == -signal.SIGPIPE
    assert "pyvmm: the guest's console, stdout, has no reader any more (EPIPE)" in err
    assert "cannot write to stdout: EPIPE (Broken pipe)" in err


def test_memmap_whose_console_reader_went_away_ends_the_same_way() -> None:
    # memmap's console is stderr; the report (stdout) is not printed after such a stop.
    # No --timeout: before, this run never ended (read_then_close's wait gives up).
    command = [*PYVMM, "memmap", guest("tests/flood_forever.bin")]
    status, out = read_then_close(command, "stderr")
    assert status == -signal.SIGPIPE
    assert out == ""


def test_a_full_disk_is_reported_once_and_the_guests_status_kept() -> None:
    # Before: status 0 and not a word.
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*PYVMM, "boot", guest("hello.bin")],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0  # the guest halted
    assert result.stderr == (
        "pyvmm: dropped 14 bytes of console output: cannot write to stdout: "
        "ENOSPC (No space left on device)\n"
    )


def test_pyvmm_starts_its_line_after_an_unfinished_guest_line_in_the_same_pipe() -> None:
    result = subprocess.run(
        [*PYVMM, "boot", "--console-rate", "10", guest("hello.bin")],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # 2>&1
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    # Before: "Hello, worpyvmm: dropped 4 bytes..."
    assert result.stdout == (
        "Hello, wor\npyvmm: dropped 4 bytes of console output over --console-rate 10 bytes/s\n"
    )


def test_separate_destinations_get_no_extra_line() -> None:
    result = run_pyvmm("boot", "--console-rate", "10", guest("hello.bin"))
    assert result.stdout == "Hello, wor"
    assert result.stderr.startswith("pyvmm: dropped 4 bytes")


def test_an_endless_console_line_is_cut_in_the_report() -> None:
    result = run_pyvmm("boot", "--timeout", "1", guest("tests/flood_forever.bin"))
    assert result.returncode == 124
    lines = result.stderr.splitlines()
    tail = lines[lines.index("pyvmm: last console output:") + 1 :]
    assert len(tail) == 1
    assert "characters cut]" in tail[0]
    assert len(tail[0]) < 220  # was the whole 8 KiB tail on one line


# --- fds 0, 1 and 2 closed at start-up ------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("closed", [(1,), (0, 1, 2)], ids=["stdout", "all three"])
def test_closed_standard_fds_become_dev_null_not_the_next_file(
    closed: tuple[int, ...], tmp_path: Path
) -> None:
    # Before, with all three closed: fd 0 was /dev/kvm, fd 1 the VM, fd 2 the vCPU.
    port = free_port()
    stderr = tmp_path / "stderr"  # what pyvmm said, for a failure's message (fd 2 left open)

    def close_fds() -> None:
        for fd in closed:
            os.close(fd)

    with stderr.open("wb") as stderr_file:  # the child keeps its own copy
        process = subprocess.Popen(
            [*PYVMM, "boot", "-S", "--gdb", f"tcp::{port}", guest("tests/spin.bin")],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            preexec_fn=close_fds,
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # the machine is built once the stub listens
            try:
                connection = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        with connection:
            targets = [os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in closed]
        assert targets == ["/dev/null"] * len(closed)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGTERM, stderr.read_text(errors="replace")
