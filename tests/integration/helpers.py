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
    """Whether this KVM runs 32-bit paging: pyvmm's own probe (kvm_pvm cannot)."""
    from pyvmm.arch.x86_64.host_support import keeps_32bit_paging
    from pyvmm.kvm.system import open_kvm

    with open_kvm() as kvm:
        return keeps_32bit_paging(kvm)
