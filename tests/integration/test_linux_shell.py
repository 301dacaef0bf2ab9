"""pyvmm boots the small test kernel (tests/linux) with its busybox initramfs to the end.

The kernel is built from Debian's linux-source-6.1 with guests/linux's
configuration, the initramfs from busybox-static (tests/linux/kernels.py,
cached outside the checkout). /init prints its marker, writes the boot timer
(port 0x3f0), runs `uname -r` and powers off through ACPI: pyvmm ends with
the power-off outcome, status 0. On this host the kernel's ring-0 code is
emulated and its system calls need the SYSCALL repair; the probe's
command-line additions are added by pyvmm itself.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.helpers import run_pyvmm
from tests.linux import debian
from tests.linux.initramfs import MARKER, POWER_OFF_LINE, UP_LINE, build_initramfs
from tests.linux.kernels import tiny_kernel

pytestmark = pytest.mark.linux

BOOT_LIMIT = 240  # seconds; about 37 here


def test_the_small_kernel_runs_init_a_command_and_powers_off() -> None:
    try:
        kernel = tiny_kernel()
        initramfs = build_initramfs(["uname -r"])
    except debian.PackageUnavailable as error:
        pytest.skip(f"cannot download the package: {error}")
    result = run_pyvmm(
        "boot", "-m", "128M", "--stats", "--timeout", str(BOOT_LIMIT),
        "--initrd", str(initramfs.path),
        "--append", "console=ttyS0 cryptomgr.notests reboot=k",
        str(kernel.vmlinux),
        timeout=BOOT_LIMIT + 60,
    )  # fmt: skip
    output = result.stdout.replace("\r", "")
    lines = output.splitlines()
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]
    expected = [UP_LINE, f"{MARKER}: $ uname -r", kernel.release, f"{MARKER}: exit 0"]
    expected.append(POWER_OFF_LINE)
    position = 0
    for line in expected:
        assert line in lines[position:], f"no {line!r} after line {position}:\n{output[-3000:]}"
        position = lines.index(line, position) + 1
    assert "guest powered the machine off" in result.stderr, result.stderr[-3000:]
    # The boot timer saw /init's write; --stats says when.
    assert re.search(
        r"^boot time: [\d.]+ s from VM creation to the guest's boot-timer write", result.stderr,
        re.MULTILINE,
    ), result.stderr[-3000:]  # fmt: skip
