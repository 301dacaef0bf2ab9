"""guests/tests/syscall.bin: a kernel sets SYSCALL up and its CPL3 program makes system calls.

On VT-x/AMD-V the CPU runs `syscall`; a KVM that leaves it at CPL3 (kvm_pvm)
raises #PF at LSTAR instead, and pyvmm's SYSCALL repair completes the entry
(pyvmm.arch.x86_64.syscall_repair). Nothing here assumes which: the guest's
output and exit status must be the same either way. A run with `--emulate
none` (no repair) shows what this host does: where it goes through, the
first run must have had no repair armed; where the guest's #PF handler
finds the user fetch at LSTAR, the first run must have repaired every one
of the guest's 8 system calls.
"""

from __future__ import annotations

from tests.integration.helpers import guest, run_pyvmm

STATUS = (0x2B << 1) | 1  # the guest's debug-exit value 0x2b
STAYED_STATUS = (0x3D << 1) | 1  # its #PF handler saw a syscall left at CPL3
CALLS = 8
LINES = [
    "syscall: kernel ready",
    "#PF: kernel fault at 0000000040000000 fixed up",
    "syscall: handler moved",
    "user: hello from CPL3",
    "user: 40+2=000000000000002a",
    "user: #PF at 0000000040000000 fixed up",
    "user: kernel saw CPL0 IF=0 user IF=1 RSP kept",
    "user: exit",
    f"syscall: {CALLS} calls",
]
STAYED = "#PF: user fetch at LSTAR: syscall stayed at CPL3"


def boot(*options: str):
    return run_pyvmm(
        "boot", "--mode", "long", "--timeout", "60", *options, guest("tests/syscall.bin"),
        timeout=90,
    )  # fmt: skip


def test_system_calls_from_cpl3_work_with_or_without_the_repair():
    result = boot("--stats")
    assert result.returncode == STATUS, result.stderr
    assert result.stdout.splitlines() == LINES
    bare = boot("--emulate", "none")
    repairs = [line for line in result.stderr.splitlines() if line.startswith("syscall repairs:")]
    if bare.returncode == STATUS:  # the CPU does it (VT-x/AMD-V): no repair armed
        assert bare.stdout.splitlines() == LINES
        assert repairs == []
    else:
        assert bare.returncode == STAYED_STATUS, bare.stderr
        assert bare.stdout.splitlines() == [*LINES[:3], STAYED]
        assert len(repairs) == 1 and repairs[0].startswith(f"syscall repairs: {CALLS}, ")


def test_the_repair_is_on_every_vcpu_of_an_smp_machine():
    """-smp 2: vCPU 0 makes the calls (vCPU 1 waits for INIT/SIPI); its repair serves them."""
    result = boot("--stats", "-smp", "2")
    assert result.returncode == STATUS, result.stderr
    assert result.stdout.splitlines() == LINES
    bare = boot("--emulate", "none")
    repairs = [line for line in result.stderr.splitlines() if line.startswith("syscall repairs:")]
    if bare.returncode == STATUS:
        assert repairs == []
    else:
        assert len(repairs) == 1 and repairs[0].startswith(f"syscall repairs: {CALLS}, ")
