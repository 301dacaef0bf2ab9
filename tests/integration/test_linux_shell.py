"""pyvmm boots the small test kernel and Debian's stock kernel with a busybox initramfs.

The kernel is built from Debian's linux-source-6.1 with guests/linux's
configuration, the initramfs from busybox-static (tests/linux/kernels.py,
cached outside the checkout). /init prints its marker, writes the boot timer
(port 0x3f0), runs `uname -r` and powers off through ACPI: pyvmm ends with
the power-off outcome, status 0. On this host the kernel's ring-0 code is
emulated and its system calls need the SYSCALL repair; the probe's
command-line additions are added by pyvmm itself.

The stock kernel (Debian's linux-image-cloud-amd64, its vmlinux) boots to
busybox's shell, where a command typed on the console runs; `poweroff -f`
ends it. It is the slowest test (see `python -m benchmarks --suite linux`).
With `-smp 2` it brings its second CPU up, counts both and powers off.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.integration.helpers import run_pyvmm
from tests.linux import debian
from tests.linux.console import SHELL_ANSWER, milestones, watch
from tests.linux.initramfs import MARKER, POWER_OFF_LINE, UP_LINE, build_initramfs
from tests.linux.kernels import stock_kernel, tiny_kernel

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


STOCK_LIMIT = 1200  # seconds; the slowest test (see the linux benchmark suite for the time)


def test_the_stock_kernel_reaches_a_shell_that_runs_a_typed_command() -> None:
    """Debian's linux-image-cloud-amd64, its vmlinux, to busybox's prompt; a command typed
    on the console is run, and `poweroff -f` ends pyvmm with status 0."""
    try:
        kernel = stock_kernel()
        initramfs = build_initramfs(["uname -r"], shell=True)
    except debian.PackageUnavailable as error:
        pytest.skip(f"cannot download the package: {error}")
    command = [
        sys.executable, "-m", "pyvmm", "boot", "-m", "128M", "--stats",
        "--timeout", str(STOCK_LIMIT), "--initrd", str(initramfs.path),
        "--append", "console=ttyS0 cryptomgr.notests reboot=k", str(kernel.vmlinux),
    ]  # fmt: skip
    boot = watch(command, milestones(shell=True), STOCK_LIMIT + 60, "pyvmm, stock kernel")
    lines = boot.output.splitlines()
    assert kernel.release in lines, boot.output[-3000:]  # /init's `uname -r`
    assert SHELL_ANSWER in lines
    assert "guest powered the machine off" in boot.stderr, boot.stderr[-3000:]
    # kvm-clock where the host offers it (KVM_FEATURE_CLOCKSOURCE2 in CPUID 0x40000001).
    if host_offers_kvmclock():
        assert "kvm-clock: Using msrs 4b564d01 and 4b564d00" in boot.output
        assert "clocksource: Switched to clocksource kvm-clock" in boot.output
    # What pyvmm did for this host, said in one line (none of it on VT-x/AMD-V).
    added = [line for line in boot.stderr.splitlines() if line.startswith("pyvmm: added")]
    assert len(added) <= 1


def test_the_stock_kernel_brings_up_two_cpus_and_powers_off() -> None:
    """-smp 2: INIT/SIPI bring the second CPU up, both run, /init counts them and powers
    off. On a host whose hypercalls never return (`pyvmm host`: vmcall), the kernel would
    stop in its first PV IPI: pyvmm hides KVM's hypercall features from it there."""
    try:
        kernel = stock_kernel()
        initramfs = build_initramfs(["grep -c ^processor /proc/cpuinfo"])
    except debian.PackageUnavailable as error:
        pytest.skip(f"cannot download the package: {error}")
    result = run_pyvmm(
        "boot", "-m", "128M", "-smp", "2", "--timeout", str(STOCK_LIMIT),
        "--initrd", str(initramfs.path),
        "--append", "console=ttyS0 cryptomgr.notests reboot=k", str(kernel.vmlinux),
        timeout=STOCK_LIMIT + 60,
    )  # fmt: skip
    output = result.stdout.replace("\r", "")
    lines = output.splitlines()
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]
    assert any(line.endswith("smp: Brought up 1 node, 2 CPUs") for line in lines), output[-3000:]
    expected = [f"{MARKER}: $ grep -c ^processor /proc/cpuinfo", "2", f"{MARKER}: exit 0"]
    position = 0
    for line in [*expected, POWER_OFF_LINE]:
        assert line in lines[position:], f"no {line!r} after line {position}:\n{output[-3000:]}"
        position = lines.index(line, position) + 1
    assert "guest powered the machine off" in result.stderr, result.stderr[-3000:]


KVM_CPUID_FEATURES = 0x40000001
KVM_FEATURE_CLOCKSOURCE2 = 3  # Documentation/virt/kvm/x86/cpuid.rst


def host_offers_kvmclock() -> bool:
    from pyvmm.kvm.system import DEFAULT_KVM_PATH, open_kvm

    with open_kvm(DEFAULT_KVM_PATH) as kvm:
        cpuid = kvm.get_supported_cpuid()
        for index in range(cpuid.nent):  # type: ignore[attr-defined]
            entry = cpuid.entries[index]  # type: ignore[attr-defined]
            if entry.function == KVM_CPUID_FEATURES:
                return bool(entry.eax >> KVM_FEATURE_CLOCKSOURCE2 & 1)
    return False
