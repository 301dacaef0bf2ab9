"""`pyvmm demo`: each demo runs real guests and prints evidence for one VMM property.

Equivalence and isolation run from a directory outside the checkout: the
guests and kernels ship with pyvmm, and the hostile VM's child process must
import the same pyvmm (tests/integration/test_install.py does the same after a
non-editable install).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyvmm.kvm.host import kvm_backend
from pyvmm.machine.outcome import EXIT_TIMEOUT, EXIT_VMM_ERROR
from tests.integration.helpers import REPO, guest, run_pyvmm
from tests.integration.qemu import run_qemu

DEMO_TIMEOUT = 120


def run_demo_in(directory: Path, name: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m pyvmm demo NAME` with `directory` as the current directory."""
    return subprocess.run(
        [sys.executable, "-m", "pyvmm", "demo", name],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        cwd=directory,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )


def test_demo_without_name_lists_the_demos() -> None:
    result = run_pyvmm("demo")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == [
        "equivalence",
        "efficiency",
        "isolation",
        "paravirtualization",
        "binary-translation",
        "sensitive-instructions",
        "containers",
    ]


def test_unknown_demo_is_a_usage_error() -> None:
    result = run_pyvmm("demo", "speed")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_equivalence_results_are_identical(tmp_path: Path) -> None:
    result = run_demo_in(tmp_path, "equivalence")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for kernel in ("int_loop", "mem_checksum", "sieve", "cpuid_loop"):
        rows = [line for line in out.splitlines() if line.startswith(kernel)]
        assert [row.split()[1] for row in rows] == ["CPL3", "CPL0"], out
        for row in rows:
            native, guest = row.split()[3:5] if kernel != "cpuid_loop" else row.split()[3:7:2]
            assert native == guest
            assert "identical" in row
    assert "DIFFERENT" not in out
    assert re.search(r"^CPUID\.1:ECX bit 31 \(hypervisor\)\s+[01]\s+1\s+", out, re.M), out
    assert "CPUID.0x40000000 signature" in out
    assert "verdict: every result is bit-identical" in out


def test_efficiency_counts_instructions_and_exits() -> None:
    result = run_pyvmm("demo", "efficiency", timeout=DEMO_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    text = " ".join(out.split())  # headings and sentences are wrapped
    assert "1,000,000 iterations of `add rax, rcx; loop` = 2,000,000 instructions" in text
    ring3 = re.search(r"^guest --mode user\s+CPL3\s+right\s+(\d+)\s+([\d,]+)", out, re.M)
    ring0 = re.search(r"^guest --mode long\s+CPL0\s+right\s+(\d+)\s+", out, re.M)
    assert ring3 and ring0, out
    # 40 console bytes and one debug-exit write, in either ring.
    assert int(ring3.group(1)) == int(ring0.group(1)) == 41
    assert int(ring3.group(2).replace(",", "")) >= 1000
    if kvm_backend().startswith("kvm_pvm"):
        assert "holds for ring-3 guest code; on this host ring-0 guest code is emulated" in text
    else:
        assert "runs directly on the CPU in ring 3 and ring 0" in text


def test_isolation_contains_the_hostile_guest(tmp_path: Path) -> None:
    result = run_demo_in(tmp_path, "isolation")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "NOT CONTAINED" not in out
    assert "read back 0xffffffff" in out
    assert "read GPA 0xfffff000" in out and "0xffffffffffffffff" in out
    # (c): its own PIC and PIT answered from KVM, its own RTC from pyvmm.
    assert re.search(r"mask 0xfe, IRR 0x01: its own, in KVM \(0 of \d+ accesses exited\)", out)
    assert "status 0x34: its own, in KVM (0 of 5 accesses exited)" in out
    assert "year 0x99: its own, in pyvmm (8 of 8 accesses exited)" in out
    assert "pyvmm counted 0 accesses to ports with no device" in out
    assert "20,000 bytes captured" in out
    assert f"stopped by --timeout 5: exit status {EXIT_TIMEOUT}" in out
    assert re.search(
        r"= [\d,]+ console bytes \+ 8 RTC accesses \+ 4 accesses outside RAM$", out, re.M
    )
    assert re.search(r"not exits: \d+ PIC and PIT accesses, \d+ KVM_RUN calls cut short", out)
    # Each reset ended its own VM; each fresh VM's clock is the host's, not the hostile's 99.
    year = time.gmtime().tm_year
    for register in ("0x64 <- 0xfe", "0x92 <- 0x01", "0xcf9 <- 0x06"):
        row = (
            rf"^{re.escape(register)} .*\s+reset, status 0\s+"
            rf"0x{year % 100:02d} \(the host's: {year}\)\s+still running$"
        )
        assert re.search(row, out, re.M), out
    assert "0x746a5a2920 = 500,000,500,000 (correct)" in out
    assert re.search(r"^exit status\s+85 ", out, re.M), out
    assert re.search(r"^hostile VM still running when it finished\s+yes", out, re.M), out
    assert "verdict: every attempt was contained in its own VM" in out


def test_isolation_cannot_run_when_the_hostile_vm_does_not_start(tmp_path: Path) -> None:
    """The child pyvmm fails (no KVM device there): one line, status 2, no containment table."""
    missing = tmp_path / "no-kvm"
    result = run_demo_in(tmp_path, "isolation", PYVMM_KVM_PATH=str(missing))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    # The child's own last line, then its status (vmm-error: no usable KVM).
    assert lines[0].startswith("pyvmm demo isolation cannot run: the hostile VM did not start: ")
    assert f"pyvmm: cannot open {missing}" in lines[0]
    assert lines[0].endswith(f"(exit status {EXIT_VMM_ERROR})")
    assert "NOT CONTAINED" not in result.stdout and "verdict" not in result.stdout


def hostile_alone(*options: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """hostile.bin under `pyvmm boot -v --stats`, and its (c) values ("mask" -> "fe", ...).

    With the in-kernel irqchip the PIT is KVM's too, as in the demo (--pit kernel)."""
    if "--kernel-irqchip" not in options:
        options = ("--pit", "kernel", *options)
    result = run_pyvmm(
        "boot", "-m", "64M", "--mode", "long", "--timeout", "2", "-v", "--stats", *options,
        guest("hostile.bin"),
    )  # fmt: skip
    values = dict(re.findall(r"^hostile: \(c\) .*: (\w+) 0x([0-9a-f]+)$", result.stdout, re.M))
    return result, values


def stats_of(stderr: str) -> tuple[int, dict[int, int], dict[str, int]]:
    """--stats: (exits, exits by port, exits by reason)."""
    total = re.search(r"^exits: (\d+) ", stderr, re.M)
    assert total, stderr
    ports = {
        int(port, 16): int(n) for port, n in re.findall(r"^  port 0x(\w+) +(\d+)$", stderr, re.M)
    }
    reasons = {name: int(n) for name, n in re.findall(r"^  (KVM_EXIT_\w+) +(\d+)$", stderr, re.M)}
    return int(total[1]), ports, reasons


def test_hostile_guest_alone() -> None:
    """hostile.bin under plain `pyvmm boot`: its own devices answer, every exit is accounted for."""
    result, values = hostile_alone()
    assert result.returncode == EXIT_TIMEOUT, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("hostile:")]
    assert lines[1] == "hostile: (a) read back 0xffffffff"
    assert lines[-1] == "hostile: (e) jmp . forever, no hlt"
    assert result.stdout.count("#" * 79 + "\n") == 250
    # Its PIC kept its mask and got the PIT's tick, its RTC its year: nothing reset it.
    assert values == {"mask": "fe", "status": "34", "IRR": "01", "year": "99"}
    assert "unassigned port accesses: 0 reads, 0 writes" in result.stderr
    assert "guest did not finish within 2.0 s" in result.stderr
    exits, ports, reasons = stats_of(result.stderr)
    # The PIC (0x20/0x21) and PIT (0x40-0x43) are KVM's: no exit. The RTC's 8 accesses exit.
    assert not {0x20, 0x21, 0x40, 0x41, 0x42, 0x43} & set(ports)
    assert ports == {0x70: 4, 0x71: 4, 0x3F8: len(result.stdout)}
    assert reasons["KVM_EXIT_MMIO"] == 4
    assert f"timeout after {exits} exits" in result.stderr
    assert exits == len(result.stdout) + 8 + 4


def test_hostile_guest_without_the_in_kernel_devices() -> None:
    """--kernel-irqchip off: no PIC, so its accesses reach pyvmm and no device; the PIT's
    reach pyvmm's 8254, whose read-back status is the same as KVM's PIT's."""
    result, values = hostile_alone("--kernel-irqchip", "off")
    assert result.returncode == EXIT_TIMEOUT, result.stderr
    assert values == {"mask": "ff", "status": "34", "IRR": "ff", "year": "99"}
    assert "(1 write, 1 read): IRR 0xff" in result.stdout
    # The guest's own account: PIC 6 writes, 2 reads.
    assert "unassigned port accesses: 2 reads, 6 writes" in result.stderr
    exits, ports, _ = stats_of(result.stderr)
    assert (ports[0x20], ports[0x21], ports[0x40], ports[0x43]) == (3, 5, 3, 2)
    assert exits == len(result.stdout) + 8 + 13 + 4


RESET_GUEST = "hostile_reset.elf"


@pytest.mark.parametrize(
    ("argument", "how"),
    [
        ("kbd", "command 0xfe (pulse reset) to the keyboard controller, port 0x64"),
        ("port92", "0x01 to port 0x92, System Control Port A (bit 0: fast reset)"),
        ("cf9", "0x06 to port 0xcf9, the Reset Control Register (hard reset)"),
        ("", "command 0xfe (pulse reset) to the keyboard controller, port 0x64"),
    ],
)
def test_hostile_reset_ends_its_run_as_qemu_does(argument: str, how: str) -> None:
    """hostile_reset.elf resets through the register named: the run ends, status 0, like QEMU's."""
    append = ["-append", argument] if argument else []
    qemu = run_qemu(REPO / "guests" / RESET_GUEST, *append)
    result = run_pyvmm("boot", guest(RESET_GUEST), *append)
    year = time.gmtime().tm_year % 100
    assert result.stdout.splitlines()[0] == f"hostile_reset: its clock's year: 0x{year:02d}"
    assert "still running" not in result.stdout
    assert (result.returncode, result.stdout) == (0, qemu.stdout.decode())
    assert qemu.returncode == 0  # -no-reboot
    assert result.stderr == (
        f"pyvmm: guest reset the machine: {how}: the run ends, as with qemu -no-reboot "
        "(--reboot restarts the machine)\n"
    )


def test_hostile_reset_refuses_an_unknown_reset() -> None:
    qemu = run_qemu(REPO / "guests" / RESET_GUEST, "-append", "floppy")
    result = run_pyvmm("boot", guest(RESET_GUEST), "-append", "floppy")
    assert result.stdout.splitlines()[1:] == [
        "hostile_reset: unknown reset 'floppy': give kbd, port92 or cf9"
    ]
    assert (result.returncode, result.stdout) == (qemu.returncode, qemu.stdout.decode())
    assert result.returncode == 3  # debug-exit 1
