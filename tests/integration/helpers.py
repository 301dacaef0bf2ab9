"""Run `pyvmm` as a user does: a subprocess, with its real exit status and streams."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUESTS = REPO / "guests"


def run_pyvmm(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyvmm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def guest(name: str) -> str:
    path = GUESTS / name
    assert path.is_file(), f"missing guest {path}"
    return str(path.relative_to(REPO))


@functools.cache
def host_keeps_32bit_paging() -> bool:
    """Probe, with the binding alone, whether this KVM accepts CR0.PG without long mode.

    kvm_pvm (a software KVM backend) silently clears it; VT-x and AMD-V keep it.
    """
    from pyvmm.kvm.system import open_kvm

    with open_kvm() as kvm, kvm.create_vm() as vm, vm.create_vcpu(0) as vcpu:
        sregs = vcpu.get_sregs()
        sregs.cr0 |= CR0_PE | CR0_PG
        sregs.cr4 |= CR4_PSE
        sregs.cs.db = 1
        vcpu.set_sregs(sregs)
        return bool(vcpu.get_sregs().cr0 & CR0_PG)


CR0_PE = 1 << 0
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
