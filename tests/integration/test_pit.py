"""The PIT (8254, ports 0x40-0x43, port 0x61) on a real guest, against QEMU.

guests/tests/pit.elf reads back statuses, holds a latched count, waits on
counter 2's OUT at port 0x61 as Linux's TSC calibration does, and takes IRQ 0
in mode 2 (periodic) and mode 4 (Linux's one-shot) through the PIC. Its
lines do not depend on the host's speed, so QEMU (TCG, its own 8254), pyvmm's
8254 (the default), pyvmm's 8254 ten times slower, and KVM's in-kernel PIT
(`--pit kernel`) must all print the same.
"""

from __future__ import annotations

import pytest

from tests.integration.helpers import guest, run_pyvmm
from tests.integration.qemu import run_qemu

PIT = "tests/pit.elf"
DONE = 33  # debug-exit 0x10
EXPECTED = [
    "pit: status 34 36 1a",
    "pit: latch holds",
    "pit: out2 rises",
    "pit: irq0 5 periodic",
    "pit: irq0 1 one-shot",
    "pit: done",
]


def test_qemu_prints_the_expected_lines() -> None:
    qemu = run_qemu(guest(PIT), "-nodefaults")
    assert qemu.returncode == DONE, qemu.stdout.decode() + qemu.stderr.decode()
    assert qemu.stdout.decode().splitlines() == EXPECTED


@pytest.mark.parametrize(
    "options",
    [[], ["--kernel-irqchip", "on"], ["--pit", "kernel"], ["--pit-scale", "10"], ["-smp", "2"]],
    ids=["user", "kvm-irqchip", "kernel", "scale-10", "smp"],
)  # fmt: skip
def test_pit_guest_matches_qemu(options: list[str]) -> None:
    result = run_pyvmm(
        "boot", "-m", "128M", "--stats", *options, "--timeout", "120", guest(PIT), timeout=180
    )
    assert result.returncode == DONE, result.stdout + result.stderr
    assert result.stdout.splitlines() == EXPECTED
    # pyvmm's PICs (the split irqchip) gave KVM each of the guest's 6 vectors at least.
    split = [line for line in result.stderr.splitlines() if line.startswith("split irqchip: ")]
    if options[:1] in (["--pit"], ["--kernel-irqchip"]):
        assert split == []  # KVM's PICs: nothing of pyvmm's to count
    else:
        assert len(split) == 1 and int(split[0].split()[2]) >= 6, split
    if options[:1] == ["--pit"]:
        assert "PIT:" not in result.stderr  # KVM's: no exits, no line
        return
    # Ports 0x40-0x43 and 0x61 exit to pyvmm's 8254; 6 interrupts at the least.
    assert "port 0x0043" in result.stderr and "port 0x0061" in result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("PIT: "))
    delivered = int(line.split()[1])
    assert delivered >= 6, line
    assert ("10 times slower" in line) == (options == ["--pit-scale", "10"])


def test_without_an_irqchip_the_pit_still_counts() -> None:
    """--kernel-irqchip off: no PIC, so IRQ 0 never comes; the counts and OUT 2 do."""
    result = run_pyvmm(
        "boot", "-m", "128M", "--kernel-irqchip", "off", "--timeout", "60", guest(PIT), timeout=90
    )
    assert result.stdout.splitlines()[:3] == EXPECTED[:3]
    assert "halted" in result.stderr or result.returncode == 0, result.stderr
