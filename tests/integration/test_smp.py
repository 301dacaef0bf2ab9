"""Several vCPUs: INIT/SIPI through the in-kernel LAPICs, and ending together."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import EXIT_TIMEOUT, EXIT_TRIPLE_FAULT, EXIT_USAGE, OutcomeKind
from tests.integration.helpers import GUESTS, guest, run_pyvmm
from tests.integration.vcpu_limits import host_vcpu_limits, most_vcpus


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
    assert outcome.message.startswith(
        "vCPU 1: guest triple-faulted (KVM_EXIT_SHUTDOWN) with no IDT (IDTR limit 0)"
    )
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
    assert result.stderr.splitlines()[0] == (
        "pyvmm: vCPU 1: guest triple-faulted (KVM_EXIT_SHUTDOWN) with no IDT (IDTR limit 0), "
        "so any exception ends in a triple fault; at RIP: 'ud2'"
    )


def test_smp_without_irqchip_is_refused() -> None:
    result = run_pyvmm("boot", "-smp", "2", "--kernel-irqchip", "off", guest("hello.bin"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1


@pytest.mark.parametrize("count", ["0", "many", "100000"])
def test_bad_cpu_counts(count: str) -> None:
    result = run_pyvmm("boot", "-smp", count, guest("hello.bin"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1


# --- many vCPUs: the count is checked, and a run ends whatever the count ------


# Refused at once: 20 runs each cost about a Python start-up.
REFUSAL_RUNS = 20


@pytest.mark.parametrize("count", ["256", "1000"])
def test_too_many_vcpus_are_refused_in_one_line_every_time(count: str) -> None:
    # Found by hand: -smp 256 died of SIGSEGV (a kick sent to a vCPU thread that
    # had ended), and -smp 1000 ran 1001 threads, deaf to --timeout and SIGTERM.
    for _ in range(REFUSAL_RUNS):
        result = run_pyvmm("boot", "-smp", count, "--timeout", "2", guest("hello.bin"), timeout=5)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"pyvmm boot: -smp {count}: more than the "), result.stderr


@pytest.mark.parametrize("cpus", ["ceiling", "64"])
def test_a_timeout_ends_a_run_with_many_vcpus(cpus: str) -> None:
    count = most_vcpus() if cpus == "ceiling" else int(cpus)
    for _ in range(3):
        # The guest prints and waits in `sti; hlt` for an interrupt that never
        # comes, and its 1..count-1 APs wait for a SIPI.
        result = run_pyvmm(
            "boot", "-smp", str(count), "--timeout", "0.5", guest("tests/wait_irq.bin")
        )
        assert result.returncode == EXIT_TIMEOUT, result.stderr
        assert result.stdout == "waiting\n"
        assert result.stderr.splitlines()[0] == "pyvmm: guest did not finish within 0.5 s"


def _kick_timers() -> int:
    """The process's POSIX timers now (the halt watch's, one per vCPU thread in a run)."""
    timers = Path("/proc/self/timers")
    if not timers.exists():  # a kernel without CONFIG_CHECKPOINT_RESTORE
        return 0
    return sum(line.startswith("ID:") for line in timers.read_text().splitlines())


def test_every_vcpu_thread_is_joined_after_a_run_at_the_ceiling() -> None:
    before = threading.active_count()
    timers = _kick_timers()
    config = MachineConfig(
        image=(GUESTS / "tests" / "wait_irq.bin").read_bytes(),
        ram_size=16 << 20,
        console=lambda data: None,
        cpus=most_vcpus(),
    )
    with build_machine(config) as machine:
        outcome = machine.run(timeout=0.5)
        assert _kick_timers() == timers  # each vCPU thread deleted its timer
    assert outcome.kind is OutcomeKind.TIMEOUT
    assert threading.active_count() == before


@pytest.mark.parametrize("cpus", ["2", "ceiling"])
def test_a_guest_halted_with_interrupts_off_ends_with_every_ap_waiting(cpus: str) -> None:
    # Before: the in-kernel irqchip kept vCPU 0 in hlt (IF=0) until --timeout.
    # Now the halt watch sees that no vCPU can run again (all held out of KVM_RUN
    # while it confirms) and ends the run as halted.
    count = most_vcpus() if cpus == "ceiling" else int(cpus)
    config = MachineConfig(
        image=(GUESTS / "hello.bin").read_bytes(),
        ram_size=16 << 20,
        console=lambda data: None,
        cpus=count,
    )
    with build_machine(config) as machine:
        outcome = machine.run(timeout=30)
    assert (outcome.kind, outcome.exit_status) == (OutcomeKind.HALTED, 0), outcome.message
    aps = "vCPU 1" if count == 2 else f"vCPUs 1-{count - 1}"
    assert outcome.message == f"guest halted (vCPU 0 halted, IF=0; {aps} waiting for INIT/SIPI)"


def test_more_vcpus_than_recommended_is_said_under_verbose_only() -> None:
    recommended, _ = host_vcpu_limits()
    count = recommended + 1
    if count > most_vcpus():
        pytest.skip(f"this host recommends {recommended} vCPUs, the most pyvmm runs")
    note = (
        f"pyvmm: -smp {count}: more vCPUs than this host's KVM recommends "
        f"(KVM_CAP_NR_VCPUS = {recommended}): they share its CPUs"
    )
    args = ("-smp", str(count), "--timeout", "0.5", guest("tests/wait_irq.bin"))
    verbose = run_pyvmm("boot", "-v", *args)
    assert verbose.returncode == EXIT_TIMEOUT, verbose.stderr
    assert note in verbose.stderr.splitlines()
    quiet = run_pyvmm("boot", *args)
    assert quiet.returncode == EXIT_TIMEOUT, quiet.stderr
    assert "KVM_CAP_NR_VCPUS" not in quiet.stderr


def test_machines_in_one_process_ask_kvm_for_cpuid_once_and_keep_their_apic_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KVM_GET_SUPPORTED_CPUID runs once per process (arch/x86_64/cpu.py: supported_cpuid);
    each vCPU's table is a copy rewritten with its own APIC ID, so no machine sees another's."""
    from pyvmm.arch.x86_64 import cpu
    from pyvmm.kvm.system import Kvm

    asked = []
    ask = Kvm.get_supported_cpuid

    def counting(self: Kvm, max_entries: int = 256) -> object:
        asked.append(max_entries)
        return ask(self, max_entries)

    monkeypatch.setattr(Kvm, "get_supported_cpuid", counting)
    monkeypatch.setattr(cpu, "_supported_by_device", {})
    for cpus in (3, 2, 1):
        console = bytearray()
        config = MachineConfig(
            image=guest_bytes("smp.bin"),
            ram_size=64 << 20,
            console=console.extend,
            mode=CpuMode.PROTECTED,
            cpus=cpus,
        )
        with build_machine(config) as machine:
            outcome = machine.run(timeout=60)
        assert outcome.kind is OutcomeKind.DEBUG_EXIT and outcome.exit_status == (cpus << 1) | 1
        ids = re.findall(r"(?:BSP|AP) APIC ID ([0-9a-f]{2})", console.decode())
        assert sorted(int(each, 16) for each in ids) == list(range(cpus)), console
    assert asked == [256]


def guest_bytes(name: str) -> bytes:
    return (GUESTS / name).read_bytes()
