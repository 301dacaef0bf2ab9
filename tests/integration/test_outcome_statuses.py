"""Every ending a real `pyvmm boot` can reach, with its documented status.

Odd statuses belong to debug-exit alone (see tests/unit/test_outcome_statuses.py
for the outcomes no real guest here can cause: fail-entry, system events).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from pyvmm.machine.outcome import (
    EXIT_INTERNAL_ERROR,
    EXIT_LIMIT,
    EXIT_TIMEOUT,
    EXIT_TRIPLE_FAULT,
    EXIT_USAGE,
    EXIT_VMM_ERROR,
)
from tests.integration.helpers import REPO, guest, run_pyvmm

pytestmark = pytest.mark.kvm

CASES = [
    # (name, arguments, environment, status, first stderr line's start)
    ("halted", ["boot", "guests/hello.bin"], {}, 0, None),
    ("debug-exit", ["boot", "guests/elf64.elf"], {}, (42 << 1) | 1, None),
    (
        "triple-fault",
        ["boot", "guests/tests/triple_fault.bin"],
        {},
        EXIT_TRIPLE_FAULT,
        "pyvmm: guest triple-faulted",
    ),
    (
        "internal-error",
        ["boot", "--mode", "long", "guests/tests/emulation_failure.bin"],
        {},
        EXIT_INTERNAL_ERROR,
        "pyvmm: KVM could not emulate",
    ),
    (
        "timeout",
        ["boot", "--timeout", "0.5", "guests/tests/spin.bin"],
        {},
        EXIT_TIMEOUT,
        "pyvmm: guest did not finish",
    ),
    (
        "exit-limit",
        ["boot", "--max-exits", "3", "guests/tests/flood.bin"],
        {},
        EXIT_LIMIT,
        "pyvmm: guest reached the limit",
    ),
    (
        "vmm-error",
        ["boot", "guests/hello.bin"],
        {"PYVMM_KVM_PATH": "/dev/null"},
        EXIT_VMM_ERROR,
        "pyvmm: ",
    ),
    ("bad input", ["boot", "-m", "1K", "guests/hello.bin"], {}, EXIT_USAGE, "pyvmm boot: -m 1K "),
]


@pytest.mark.parametrize(
    ("name", "args", "env", "status", "says"), CASES, ids=[c[0] for c in CASES]
)
def test_each_ending_has_its_status(
    name: str, args: list[str], env: dict[str, str], status: int, says: str | None
) -> None:
    args = [
        guest(arg.removeprefix("guests/")) if arg.startswith("guests/") else arg for arg in args
    ]
    result = run_pyvmm(*args, env=env)
    assert result.returncode == status, result.stderr
    assert (result.returncode % 2 == 1) == (name == "debug-exit")
    if says is not None:
        assert result.stderr.startswith(says), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_ends_pyvmm_by_that_signal(signum: signal.Signals) -> None:
    """After cleaning up, pyvmm dies by the signal it got: no exit status of its own."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "boot", guest("tests/spin.bin")],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "spinning\n"
    time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signum, stderr
    assert stderr.startswith(f"pyvmm: stopped by {signum.name}")
    # A shell reports this as 128+N, as for any program a signal ended.
    shell = subprocess.run(
        [
            "sh",
            "-c",
            f'"$0" -m pyvmm boot {guest("tests/spin.bin")} & sleep 1.5; '
            f"kill -{signum.name.removeprefix('SIG')} $!; wait $!; echo $?",
            sys.executable,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert shell.stdout.splitlines()[-1] == str(128 + signum)
