"""Run a test guest under QEMU, the reference for every device's behaviour.

The device tests boot the same guest under QEMU (Debian's qemu-system-x86,
TCG so that the result does not depend on the host's KVM) and under pyvmm,
and compare what each printed and how each ended. A guest for this is a
multiboot kernel (both boot it with `-kernel`), prints on COM1 and ends
through the isa-debug-exit port at 0xf4, so both exit with (v << 1) | 1.

`.ci/run` installs QEMU; elsewhere a missing QEMU skips these comparisons,
unless PYVMM_REQUIRE_TOOLS=1 (CI) makes it a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

QEMU = "qemu-system-x86_64"
# What every comparison needs; a test adds its own devices and options.
QEMU_BASE = [
    "-accel", "tcg",
    "-display", "none",
    "-serial", "stdio",
    "-no-reboot",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
]  # fmt: skip


def require_qemu() -> str:
    """The QEMU binary, or skip (fail with PYVMM_REQUIRE_TOOLS=1) when it is missing."""
    path = shutil.which(QEMU)
    if path is None:
        message = f"{QEMU} is not installed (apt-get install qemu-system-x86)"
        if os.environ.get("PYVMM_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_qemu(
    kernel: Path | str,
    *extra: str,
    memory: str = "128M",
    timeout: float = 60,
    stdin: bytes = b"",
) -> subprocess.CompletedProcess[bytes]:
    """Boot multiboot `kernel` under QEMU; its COM1 output is the result's stdout."""
    command = [require_qemu(), *QEMU_BASE, "-m", memory, "-kernel", str(kernel), *extra]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, check=False)
