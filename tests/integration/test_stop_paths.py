"""Every stop says the same line and ends the same way, wherever it lands: during the build,
the run, a wait for gdb, memmap's report; and a run stopped from outside says why it had not
ended by itself when the vCPUs tell."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import socket
import subprocess
import sys
import termios
import textwrap
import time

import pytest

from tests.integration.helpers import REPO, guest, run_pyvmm

STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
PYVMM = [sys.executable, "-m", "pyvmm"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PYVMM, *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_while_waiting_for_gdb(signum: int) -> None:
    # Before: SIGTERM and SIGHUP killed pyvmm on the spot (no line, no cleanup);
    # SIGINT printed "pyvmm: interrupted".
    process = popen("boot", "-S", "--gdb", f"tcp::{free_port()}", guest("tests/spin.bin"))
    assert process.stderr is not None
    assert process.stderr.readline().startswith("pyvmm: waiting for gdb on tcp:")
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == -signum
    assert err == f"pyvmm: stopped by {signal.Signals(signum).name}\n"
    assert out == ""


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_during_memmaps_run_ends_memmap_by_the_signal(signum: int) -> None:
    # Before: memmap printed its report after the stop and exited 0.
    process = popen("memmap", guest("tests/spin.bin"))
    assert process.stderr is not None
    assert process.stderr.readline() == "spinning\n"  # memmap's console is stderr
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == -signum
    assert err.splitlines()[0] == f"pyvmm: stopped by {signal.Signals(signum).name}"
    assert any(line.startswith("RIP=") for line in err.splitlines())
    assert out == ""  # no memory report after a stop


def _own_terminal() -> None:
    """In the child: a new session whose controlling terminal is stdin (the pty)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_the_terminal_is_given_back_after_a_stop_while_waiting_for_gdb() -> None:
    # Before: SIGTERM's default action killed pyvmm with the terminal still in raw mode.
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    process = subprocess.Popen(
        [*PYVMM, "boot", "-S", "--gdb", f"tcp::{free_port()}", guest("tests/spin.bin")],
        cwd=REPO,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_own_terminal,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith("pyvmm: waiting for gdb on tcp:")
        assert termios.tcgetattr(terminal) != before  # pyvmm took the terminal over
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGTERM
        assert err == "pyvmm: stopped by SIGTERM\n"
        assert termios.tcgetattr(terminal) == before
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
        os.close(terminal)


# Runs the pyvmm program with a hook that sends a signal to itself at a known point.
_SIGNAL_AT = """
import os, signal, sys
import {module} as target

real = target.{function}

def hooked(*args, **kwargs):
    os.kill(os.getpid(), signal.{signal})
    return real(*args, **kwargs)

target.{function} = hooked
from pyvmm.cli import console_main
sys.argv = ["pyvmm", *sys.argv[1:]]
console_main()
"""


def run_with_signal_at(module: str, function: str, signum: int, *args: str) -> tuple[int, str]:
    script = _SIGNAL_AT.format(module=module, function=function, signal=signal.Signals(signum).name)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == ""
    return result.returncode, result.stderr


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_during_memmaps_report(signum: int) -> None:
    # Before: SIGTERM and SIGHUP killed pyvmm with no line.
    status, err = run_with_signal_at(
        "pyvmm.observe.memory_report", "mapping_rows", signum, "memmap", "-q", guest("hello.bin")
    )
    assert status == -signum
    assert err == f"pyvmm: stopped by {signal.Signals(signum).name}\n"


def test_ctrl_c_during_the_build_says_the_same_line() -> None:
    # Before: "pyvmm: interrupted".
    status, err = run_with_signal_at(
        "pyvmm.machine.builder", "setup_vcpu", signal.SIGINT, "boot", guest("hello.bin")
    )
    assert status == -signal.SIGINT
    assert err == "pyvmm: stopped by SIGINT\n"


# --- why a stopped run had not ended ---------------------------------------------------

WAITING_IF1 = (
    "pyvmm: when the run was stopped, every vCPU was halted or waiting for INIT/SIPI "
    "(vCPU 0 halted, IF=1; vCPU 1 waiting for INIT/SIPI): idle, waiting in hlt with "
    "interrupts enabled (IF=1) for the next one, as an operating system's idle loop does for "
    "ever; a guest that should end does so through the debug-exit port (0xf4) or an ACPI "
    "power-off"
)


def test_a_timeout_says_that_every_vcpu_was_halted() -> None:
    # Before: only "guest did not finish within 1.0 s".
    result = run_pyvmm("boot", "-smp", "2", "--timeout", "1", guest("tests/wait_irq.bin"))
    assert result.returncode == 124
    lines = result.stderr.splitlines()
    assert lines[:2] == ["pyvmm: guest did not finish within 1.0 s", WAITING_IF1]


def test_a_guest_halted_for_good_ends_the_run_with_the_in_kernel_irqchip() -> None:
    # Before: with the in-kernel irqchip (-smp > 1, --kernel-irqchip on) KVM kept
    # the vCPU in hlt with IF=0 for ever, and only --timeout ended the run.
    for args in ([], ["--kernel-irqchip", "on"], ["-smp", "2"], ["-smp", "3"]):
        result = run_pyvmm("boot", *args, "--timeout", "20", guest("hello.bin"))
        assert (result.returncode, result.stdout) == (0, "Hello, world!\n"), (args, result.stderr)
        assert result.stderr == "", args


def test_a_signal_says_it_too() -> None:
    process = popen("boot", "-smp", "2", guest("tests/wait_irq.bin"))
    assert process.stdout is not None
    assert process.stdout.readline() == "waiting\n"
    time.sleep(1)  # two instructions from the hlt: let the guest get there
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM
    assert err.splitlines()[:2] == ["pyvmm: stopped by SIGTERM", WAITING_IF1]


def test_a_guest_that_runs_gets_no_explanation() -> None:
    result = run_pyvmm("boot", "-smp", "2", "--timeout", "1", guest("tests/spin.bin"))
    assert result.returncode == 124
    assert not any("halted" in line for line in result.stderr.splitlines())
