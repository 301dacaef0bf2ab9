"""QEMU's pc-testdev on real guests: pyvmm --testdev against qemu -device pc-testdev.

guests/tests/testdev.elf checks every part as kvm-unit-tests uses it (the
scratch port, the flush-page port, the iomem, GSIs pulsed through the IOAPIC
and the PIC) and is compared with QEMU under TCG, as every device is.
guests/tests/testdev_unaligned.elf makes the accesses that QEMU cuts into
pieces when KVM brings them and not under TCG: it is compared with QEMU
under KVM, which pyvmm follows.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.helpers import guest, run_pyvmm
from tests.integration.qemu import QEMU_BASE, require_qemu, run_qemu

TESTDEV = "tests/testdev.elf"
UNALIGNED = "tests/testdev_unaligned.elf"
PASSED = 1  # debug-exit with 0 failed checks


def test_testdev_guest_matches_qemu() -> None:
    image = guest(TESTDEV)
    qemu = run_qemu(image, "-device", "pc-testdev")
    ours = run_pyvmm("boot", "--testdev", "--kernel-irqchip", "on", image, timeout=300)
    assert ours.returncode == PASSED, ours.stdout + ours.stderr
    assert qemu.returncode == PASSED, qemu.stdout.decode() + qemu.stderr.decode()
    assert ours.stdout == qemu.stdout.decode()
    assert "FAIL" not in ours.stdout
    for line in (
        "scratch outl/inl 0xe0=11223344 ok",
        "scratch after rep outsb=00000070 ok",
        "word in a flushed page=5a5aa5a5 ok",
        "iomem[0] after movw at 3=ef345678 ok",
        "ioapic edge GSI 14 pulse: interrupts=00000001 ok",
        "ioapic edge GSI 4 (COM1's) pulse: interrupts=00000001 ok",
        "pic IRQ 5 pulse: interrupts=00000001 ok",
        "testdev: failed checks=00",
    ):
        assert line in ours.stdout.splitlines()


def test_qemu_spelling_adds_the_testdev() -> None:
    ours = run_pyvmm(
        "boot", "-device", "pc-testdev", "--kernel-irqchip", "on", guest(TESTDEV), timeout=300
    )
    assert ours.returncode == PASSED, ours.stdout + ours.stderr
    assert ours.stdout.splitlines()[-1] == "testdev: failed checks=00"


def run_qemu_kvm(image: str) -> subprocess.CompletedProcess[bytes]:
    """QEMU with KVM, its in-kernel irqchip and pc-testdev; skip when its KVM cannot start."""
    base = ["kvm" if item == "tcg" else item for item in QEMU_BASE]
    command = [require_qemu(), *base, "-m", "128M", "-device", "pc-testdev", "-kernel", image]
    result = subprocess.run(command, capture_output=True, timeout=120, check=False)
    if result.returncode != PASSED and not result.stdout:
        pytest.skip(f"QEMU could not run under KVM here: {result.stderr.decode().strip()}")
    return result


def test_straddling_port_accesses_match_qemu_under_kvm() -> None:
    image = guest(UNALIGNED)
    qemu = run_qemu_kvm(image)
    ours = run_pyvmm("boot", "--testdev", image, timeout=300)
    assert ours.returncode == qemu.returncode == PASSED, ours.stderr
    assert ours.stdout == qemu.stdout.decode()
    lines = ours.stdout.splitlines()
    assert "inl 0xe2=00001122" in lines  # scratch bytes 2-3, then the flush port's 0s
    assert "inl 0xea=ffff1122" in lines  # scratch bytes 2-3, then no device
    assert "outl 0xe1 aabbccdd, then inl 0xe0=bbccdd44" in lines
