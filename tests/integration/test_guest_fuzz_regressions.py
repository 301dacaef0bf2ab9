"""VMM bugs found by the guest fuzzer (tests/fuzz/guest_fuzz.py), one minimal case each.

Each test says how the bug showed up and replays it with the image and
registers inline. A bug still open is marked xfail(strict=True), with an entry
in guest_fuzz.KNOWN_BUGS; once fixed, the test passes and both must go.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from pyvmm.errors import UsageError
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind
from tests.integration.helpers import REPO

MIB = 1 << 20
# mov al, 0; out 0xf4, al: end through the debug-exit port (status 1).
DEBUG_EXIT_0 = bytes.fromhex("b000e6f4")


def test_smp_run_restores_the_kick_signal_handler() -> None:
    # Found by the fuzzer's host-state check after every 2-vCPU guest (first: seed 1,
    # case 10): VcpuGroup.run installed its SIGUSR1 kick handler and never put the
    # old one back, so a program embedding pyvmm ignored SIGUSR1 from then on.
    before = signal.getsignal(signal.SIGUSR1)
    config = MachineConfig(
        image=DEBUG_EXIT_0,
        ram_size=16 * MIB,
        console=lambda data: None,
        mode=CpuMode.PROTECTED,
        cpus=2,
        max_exits=100,
    )
    try:
        with build_machine(config) as machine:
            outcome = machine.run(timeout=5)
        assert outcome.kind is OutcomeKind.DEBUG_EXIT, outcome.message
        assert signal.getsignal(signal.SIGUSR1) == before
    finally:
        signal.signal(signal.SIGUSR1, before)


# The run's stop request, as VcpuGroup.request_stop makes it when vCPU 0 ends an
# SMP run (debug-exit, triple fault, the end of its loop), with the --timeout
# alarm (or its 10 ms re-kick, or Ctrl-C) landing in the main thread right then.
_STOP_UNDER_SIGNAL = textwrap.dedent(
    """
    import contextlib, os, signal
    from pyvmm.machine.builder import MachineConfig, build_machine
    from pyvmm.loaders.entry import CpuMode
    from pyvmm.machine.outcome import vmm_error
    from pyvmm.machine.run_signals import stop_on_signals

    config = MachineConfig(image=b"\\xeb\\xfe", ram_size=16 << 20, console=lambda data: None,
                           mode=CpuMode.PROTECTED, cpus=2)
    with build_machine(config) as machine:
        group = machine.group
        with stop_on_signals(group.request_stop, None):
            lock = getattr(group, "_lock", None) or contextlib.nullcontext()
            with lock:
                os.kill(os.getpid(), signal.SIGALRM)  # its handler runs here, lock held
                group.loops[0].request_stop(vmm_error("stopped"))
    print("ended")
    """
)


def test_stop_signal_during_a_stop_request_does_not_hang() -> None:
    # Found while checking the fuzzer's SMP timeouts: the timeout and stop-signal
    # handlers call VcpuGroup.request_stop, which held a plain threading.Lock; a
    # signal landing while the main thread was inside request_stop itself made
    # the handler wait for a lock its own thread held: pyvmm hung for good, deaf
    # to SIGTERM. Too narrow a window for a random run to hit reliably, so the
    # test holds the lock while the signal arrives.
    try:
        result = subprocess.run(
            [sys.executable, "-c", _STOP_UNDER_SIGNAL],
            capture_output=True,
            text=True,
            timeout=8,
            cwd=REPO,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("pyvmm hung when a stop signal arrived during a stop request")
    assert result.stdout == "ended\n", result.stderr


def test_ram_size_that_is_not_whole_pages_is_refused_or_rounded() -> None:
    # Found while choosing the fuzzer's RAM sizes: `pyvmm boot -m 2049K` (and any
    # MachineConfig.ram_size that is not a multiple of 4 KiB) reached KVM and
    # failed with "KVM_SET_USER_MEMORY_REGION failed: EINVAL", a VMM error
    # (status 70). Rounding up as QEMU does, or a UsageError, are both right.
    config = MachineConfig(
        image=DEBUG_EXIT_0,
        ram_size=16 * MIB + 0x800,
        console=lambda data: None,
        mode=CpuMode.PROTECTED,
        max_exits=100,
    )
    try:
        machine = build_machine(config)
    except UsageError:
        return
    with machine:
        outcome = machine.run(timeout=5)
    assert outcome.kind is OutcomeKind.DEBUG_EXIT, outcome.message
