"""The limits a user sets: --max-exits, --timeout, --console-rate, --input-buffer, -m.

Each asserts the outcome's message and the exit status of `pyvmm boot`.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time

from tests.integration.helpers import REPO, guest, run_pyvmm

EXIT_TIMEOUT = 124
EXIT_LIMIT = 126


def pyvmm_boot(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyvmm", "boot", *args]


def test_max_exits_stops_the_guest_with_registers_and_its_last_output() -> None:
    result = run_pyvmm("boot", "--max-exits", "5", guest("hello.bin"))
    assert result.returncode == EXIT_LIMIT
    assert result.stdout == "Hello"  # one exit per byte: five bytes, then the limit
    lines = result.stderr.splitlines()
    assert lines[0] == "pyvmm: guest reached the limit of 5 exits (--max-exits)"
    assert any(line.startswith("RIP=") for line in lines)
    assert lines[-2:] == ["pyvmm: last console output:", "  | Hello"]


def test_max_exits_larger_than_the_run_changes_nothing() -> None:
    result = run_pyvmm("boot", "--max-exits", "1000", guest("hello.bin"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello, world!\n", "")


def test_max_exits_counts_each_vcpu_of_an_smp_guest() -> None:
    result = run_pyvmm(
        "boot", "-smp", "2", "--mode", "protected", "--max-exits", "3", guest("smp.bin")
    )
    assert result.returncode == EXIT_LIMIT
    assert "reached the limit of 3 exits (--max-exits)" in result.stderr.splitlines()[0]


def test_timeout_shows_where_the_guest_was_and_what_it_printed() -> None:
    result = run_pyvmm("boot", "--timeout", "0.5", guest("tests/spin.bin"))
    assert result.returncode == EXIT_TIMEOUT
    lines = result.stderr.splitlines()
    assert lines[0] == "pyvmm: guest did not finish within 0.5 s"
    assert any(line.startswith("RIP=0000000000007c") for line in lines)  # in spin's loop
    assert lines[-1] == "  | spinning"


def test_verbose_shows_more_of_the_console() -> None:
    # hostile.bin prints hundreds of lines; stop it half way through.
    command = ["boot", "-m", "64M", "--mode", "long", "--max-exits", "5000", guest("hostile.bin")]
    quiet, verbose = run_pyvmm(*command), run_pyvmm(*command, "-v")
    tails = []
    for result in (quiet, verbose):
        assert result.returncode == EXIT_LIMIT
        lines = result.stderr.splitlines()
        tails.append([line for line in lines if line.startswith("  | ")])
        assert lines[-1] == "  | " + result.stdout.splitlines()[-1]  # the very last line
    assert (len(tails[0]), len(tails[1])) == (5, 40)


def test_console_rate_caps_a_flooding_guest() -> None:
    started = time.monotonic()
    result = run_pyvmm("boot", "--console-rate", "2K", guest("tests/flood.bin"))
    elapsed = time.monotonic() - started
    assert result.returncode == 0  # the guest halted: only its output was cut
    written = len(result.stdout)
    assert 2048 <= written <= 2048 * (1 + elapsed) + 1
    dropped = re.fullmatch(
        r"pyvmm: dropped (\d+) bytes of console output over --console-rate 2048 bytes/s\n",
        result.stderr,
    )
    assert dropped is not None, result.stderr
    assert int(dropped[1]) + written == 50_000  # every byte is accounted for


def test_without_a_rate_every_byte_of_a_flood_arrives() -> None:
    result = run_pyvmm("boot", guest("tests/flood.bin"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "#" * 50_000, "")


def test_input_reaches_the_guest_through_a_small_buffer_without_loss() -> None:
    text = "".join(chr(ord("a") + (n * 7) % 16) for n in range(20_000))  # no 'q'
    result = subprocess.run(
        pyvmm_boot("--input-buffer", "1K", "--timeout", "60", guest("tests/echo.bin")),
        input=text + "q",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ready\n" + text


def test_input_buffer_zero_gives_the_guest_no_input() -> None:
    result = subprocess.run(
        pyvmm_boot("--input-buffer", "0", "--timeout", "1", guest("tests/echo.bin")),
        input="abc q",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == EXIT_TIMEOUT
    assert result.stdout == "ready\n"


def test_a_guest_that_never_reads_holds_at_most_the_input_buffer() -> None:
    process = subprocess.Popen(
        pyvmm_boot("--input-buffer", "4K", "--timeout", "60", guest("tests/spin.bin")),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline() == b"spinning\n"
        pipe_size = fcntl.fcntl(process.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        os.set_blocking(process.stdin.fileno(), False)
        sent = 0
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0:  # until pyvmm stops taking bytes
            try:
                sent += os.write(process.stdin.fileno(), b"k" * 4096)
                quiet_since = time.monotonic()
            except BlockingIOError:
                time.sleep(0.02)
        # The pipe holds its share; pyvmm took the buffer's worth and not a byte more.
        assert sent == pipe_size + 4096
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM


# Spawns argv[1:] and prints its exit status and peak RSS (KiB). A child forked from
# this test process would inherit the test process's own high-water RSS at exec
# (getrusage(2): ru_maxrss survives execve), and pytest may be large by now.
MEASURE_RSS = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
output = child.stdout.read()
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, output.decode(errors="replace"), end="")
"""


def test_guest_ram_is_not_committed_until_the_guest_touches_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, *pyvmm_boot("-m", "16G", guest("hello.bin"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    status, peak_kib, output = result.stdout.split(" ", 2)
    assert int(status) == 0, result.stderr
    assert output == "Hello, world!\n"
    # 16 GiB of guest RAM, but only what the guest and pyvmm touched is resident.
    assert int(peak_kib) < 200 * 1024, f"peak RSS {peak_kib} KiB"


def test_memory_beyond_the_host_is_refused() -> None:
    result = run_pyvmm("boot", "-m", "64T", guest("hello.bin"))
    assert result.returncode == 2
    assert result.stderr.startswith("pyvmm boot: -m 64T is more than this host's RAM")
    assert result.stderr.count("\n") == 1


def test_ram_size_is_rounded_up_to_whole_pages() -> None:
    # Found by the guest fuzzer: a size that is not whole pages reached KVM (EINVAL).
    result = run_pyvmm("boot", "-m", "2049K", guest("hello.bin"), "-v")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n"
    assert "0x000000000-0x000200fff ram" in result.stderr  # 2052 KiB, as QEMU rounds
