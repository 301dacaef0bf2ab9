"""Several vCPUs: INIT/SIPI through the in-kernel LAPICs, and ending together."""

from __future__ import annotations

import re
import threading

import pytest

from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import EXIT_TRIPLE_FAULT, OutcomeKind
from tests.integration.helpers import GUESTS, guest, run_pyvmm


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_every_cpu_reports_its_apic_id_once(cpus: int) -> None:
    result = run_pyvmm(
        "boot",
        "-smp",
        str(cpus),
        "--kernel-irqchip",
        "on",
        "--mode",
        "protected",
        "--timeout",
        "60",
        guest("smp.bin"),
        timeout=120,
    )
    lines = result.stdout.splitlines()
    ids = [
        int(match.group(1), 16)
        for line in lines
        if (match := re.fullmatch(r"(?:BSP|AP) APIC ID ([0-9a-f]{2})", line))
    ]
    assert sorted(ids) == list(range(cpus)), result.stdout
    assert lines[0] == "BSP APIC ID 00"
    assert lines[-1] == f"CPUs up: {cpus:02x}"
    # The guest ends through debug-exit with the CPU count: (N << 1) | 1.
    assert result.returncode == (cpus << 1) | 1, result.stderr


def test_a_triple_fault_on_a_secondary_vcpu_ends_the_whole_run() -> None:
    before = threading.active_count()
    config = MachineConfig(
        image=(GUESTS / "tests" / "ap_triple_fault.bin").read_bytes(),
        ram_size=64 << 20,
        console=lambda data: None,
        mode=CpuMode.PROTECTED,
        cpus=2,
    )
    with build_machine(config) as machine:
        outcome = machine.run(timeout=60)
    assert outcome.kind is OutcomeKind.TRIPLE_FAULT
    assert outcome.message == "vCPU 1: guest triple-faulted (KVM_EXIT_SHUTDOWN)"
    assert outcome.registers is not None and "CR0=" in outcome.registers
    assert threading.active_count() == before  # every vCPU thread joined


def test_the_cli_reports_it_in_one_line_plus_registers() -> None:
    result = run_pyvmm(
        "boot",
        "-smp",
        "2",
        "--mode",
        "protected",
        "--timeout",
        "60",
        guest("tests/ap_triple_fault.bin"),
        timeout=120,
    )
    assert result.returncode == EXIT_TRIPLE_FAULT
    assert (
        result.stderr.splitlines()[0] == "pyvmm: vCPU 1: guest triple-faulted (KVM_EXIT_SHUTDOWN)"
    )


def test_smp_without_irqchip_is_refused() -> None:
    result = run_pyvmm("boot", "-smp", "2", "--kernel-irqchip", "off", guest("hello.bin"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1


@pytest.mark.parametrize("count", ["0", "many", "100000"])
def test_bad_cpu_counts(count: str) -> None:
    result = run_pyvmm("boot", "-smp", count, guest("hello.bin"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
