"""benchmarks/suite_linux.py's milestone watcher, on a stand-in console (no KVM, no kernel)."""

from __future__ import annotations

import re
import sys

import pytest

from benchmarks.suite_linux import pyvmm_notes
from tests.linux.console import BootFailed, Milestone, milestones, watch

# Prints a boot's lines, a shell prompt, then echoes what is typed, as a guest console would.
FAKE = r"""
import sys, time
for line in ["Linux version 6.1.0", "Run /init as init process", "pyvmm-initramfs: up",
             "pyvmm-initramfs: shell"]:
    print(line, flush=True)
    time.sleep(0.01)
sys.stdout.write("~ # "); sys.stdout.flush()
for typed in sys.stdin:
    if typed.startswith("poweroff"):
        break
    print("shell-42" if "6*7" in typed else typed.strip(), flush=True)
    sys.stdout.write("~ # "); sys.stdout.flush()
"""


def test_every_milestone_is_timed_in_order_and_the_shell_is_answered() -> None:
    boot = watch([sys.executable, "-c", FAKE], milestones(shell=True), 30, "fake")
    names = list(boot.milestones)
    assert names == ["banner", "Run /init", "marker", "shell prompt", "command output"]
    times = [boot.milestones[name] for name in names]
    assert times == sorted(times)
    assert "shell-42" in boot.output


def test_a_console_that_ends_early_names_the_milestone_it_missed() -> None:
    script = "print('Linux version 6.1.0', flush=True)"
    with pytest.raises(BootFailed, match="no 'Run /init' within 30 s"):
        watch([sys.executable, "-c", script], milestones(shell=False), 30, "fake")


def test_a_milestone_must_follow_the_one_before() -> None:
    script = "print('b', flush=True); print('a', flush=True)"
    steps = [Milestone("a", re.compile(rb"a")), Milestone("b", re.compile(rb"b"))]
    with pytest.raises(BootFailed, match="no 'b'"):
        watch([sys.executable, "-c", script], steps, 30, "fake")


def test_a_boot_that_hangs_is_killed_at_the_limit() -> None:
    script = "import time; print('Linux version', flush=True); time.sleep(60)"
    with pytest.raises(BootFailed, match="within 1 s"):
        watch([sys.executable, "-c", script], milestones(shell=False), 1, "fake")


def test_pyvmm_notes_read_its_stats() -> None:
    stderr = (
        "pyvmm: added to the kernel's command line for this host (pyvmm host): noxsave\n"
        "time: 400.5 s, 390.0 s inside KVM_RUN (97.4 %), 10.5 s in pyvmm (2.6 %)\n"
        "emulation assists: 40, 0.004 s, 0.00 % of the run\n  wait                 39\n"
        "  int3          1\n"
        "syscall repairs: 212, 0.030 s, 0.01 % of the run\n"
        "PIT: 300 IRQ 0 delivered, 2 dropped (late)\n"
        "boot time: 33.512 s from VM creation to the guest's boot-timer write (port 0x3f0)\n"
    )
    from tests.linux.console import Boot

    notes = pyvmm_notes(Boot(stderr=stderr))
    assert notes["boot_time_s"] == 33.512
    assert notes["syscall_repairs"] == 212 and notes["assists"] == 40 and notes["pit_irqs"] == 300
    assert notes["assists_by_instruction"] == {"wait": 39, "int3": 1}
    assert (notes["assist_s"], notes["syscall_repair_s"], notes["run_s"]) == (0.004, 0.03, 400.5)
    assert str(notes["host_line"]).endswith("noxsave")
