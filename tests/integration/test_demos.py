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
from pathlib import Path

from pyvmm.kvm.host import kvm_backend
from pyvmm.machine.outcome import EXIT_TIMEOUT, EXIT_VMM_ERROR
from tests.integration.helpers import guest, run_pyvmm

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


def test_demo_without_name_lists_the_three_demos() -> None:
    result = run_pyvmm("demo")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == ["equivalence", "efficiency", "isolation"]


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
    assert "VMM counted unassigned: 14 writes, 3 reads" in out
    assert "20,000 bytes captured" in out
    assert f"stopped by --timeout 5: exit status {EXIT_TIMEOUT}" in out
    assert re.search(r"= [\d,]+ console bytes \+ 17 port accesses \+ 4 accesses outside RAM", out)
    assert "0x746a5a2920 = 500,000,500,000 (correct)" in out
    assert re.search(r"^exit status\s+85 ", out, re.M), out
    assert re.search(r"^hostile VM still running when it finished\s+yes", out, re.M), out
    assert "verdict: every attempt was contained" in out


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


def test_hostile_guest_alone() -> None:
    """hostile.bin under plain `pyvmm boot`: every attempt reported, then the timeout."""
    result = run_pyvmm(
        "boot", "-m", "64M", "--mode", "long", "--timeout", "2", "-v", guest("hostile.bin")
    )
    assert result.returncode == 124
    lines = [line for line in result.stdout.splitlines() if line.startswith("hostile:")]
    assert lines[1] == "hostile: (a) read back 0xffffffff"
    assert lines[-1] == "hostile: (e) jmp . forever, no hlt"
    assert result.stdout.count("#" * 79 + "\n") == 250
    assert "unassigned port accesses: 3 reads, 14 writes" in result.stderr
    assert "guest did not finish within 2.0 s" in result.stderr
