"""The benchmark suites run end to end and measure what they say (never how fast).

Tiny counts: these check structure and behaviour (every VMM made exactly the
exits asked for, ratios are positive numbers, a missing tool becomes a note),
not timing thresholds.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from benchmarks import suite_exits, suite_startup
from benchmarks.comparison import Comparison
from benchmarks.suite_exits import (
    C_LABEL,
    CASES,
    PYVMM_LABEL,
    SMP_CPUS,
    SMP_NAME,
    RefVmmError,
    run_ref_vmm,
)
from benchmarks.suite_startup import (
    BOOT_NAME,
    CYCLE_NAME,
    MICROVM_BOOT_NAME,
    MICROVM_LABEL,
    PYTHON_BOOT_NAME,
    PYTHON_LABEL,
    PYTHON_RSS_NAME,
    QEMU_LABEL,
    RSS_NAME,
    Plan,
)

BENCHMARKS = Path(suite_exits.__file__).resolve().parent
TOOLS = ("make", "as", "ld", "objcopy")
needs_compiler = pytest.mark.skipif(
    suite_exits.find_compiler() is None, reason="no C compiler for the reference VMM"
)


def assert_measured(comparison: Comparison, pairs: int) -> None:
    assert "skipped" not in comparison.notes, comparison.notes["skipped"]
    assert len(comparison.a) == len(comparison.b) == pairs
    assert all(math.isfinite(sample) and sample > 0 for sample in comparison.a + comparison.b)
    ratio = comparison.ratio
    assert ratio is not None and math.isfinite(ratio) and ratio > 0
    json.dumps(comparison.to_json())  # the report must serialize


def assert_skipped(comparison: Comparison, *needles: str) -> None:
    assert comparison.a == comparison.b == []
    assert comparison.ratio is None
    reason = comparison.notes["skipped"]
    assert any(needle in reason for needle in needles), reason


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in TOOLS), reason="GNU make/binutils not installed"
)
def test_benchmark_guests_rebuild_to_the_committed_bytes(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "-C", str(BENCHMARKS), f"OUT={tmp_path}"], check=True, capture_output=True
    )
    for image in ("exit_guest.bin", "hello_exit.bin", "smp_exit_guest.bin"):
        assert (tmp_path / image).read_bytes() == (BENCHMARKS / image).read_bytes(), (
            f"benchmarks/{image} differs from what its source builds: run make -C benchmarks"
        )


@needs_compiler
def test_exit_suite_counts_the_same_exits_in_both_vmms() -> None:
    count, pairs = 40, 2
    comparisons = suite_exits.collect(quick=True, count=count, pairs=pairs)
    names = [comparison.name for comparison in comparisons]
    assert names == [case.name for case in CASES] + [SMP_NAME]
    *single, smp = comparisons
    for comparison in single:
        assert comparison.suite == "exits"
        assert comparison.unit == "us/exit"
        assert (comparison.a_label, comparison.b_label) == (C_LABEL, PYVMM_LABEL)
        assert_measured(comparison, pairs)
        # count loop exits plus the final debug-exit write, in each run of each VMM
        # ... and in ref_vmm's loop called from inside a Python process
        assert comparison.notes["exit_counts"] == {
            C_LABEL: [count + 1] * pairs,
            PYVMM_LABEL: [count + 1] * pairs,
            suite_exits.IN_PYTHON_LABEL: [count + 1] * suite_exits.IN_PYTHON_SAMPLES,
        }
        assert comparison.notes["c_us_per_exit_inside_python"] > 0
        assert comparison.notes["count"] == count
        assert comparison.notes["cpl"] in (0, 3)
    # every vCPU's share of the writes, then its done or debug-exit write
    assert (smp.suite, smp.unit, smp.a_label, smp.b_label) == (
        "exits",
        "us/exit",
        C_LABEL,
        PYVMM_LABEL,
    )
    assert_measured(smp, pairs)
    per_cpu = count // SMP_CPUS
    assert smp.notes["cpus"] == SMP_CPUS and smp.notes["count_per_cpu"] == per_cpu
    exits = SMP_CPUS * (per_cpu + 1)
    assert smp.notes["exit_counts"] == {C_LABEL: [exits] * pairs, PYVMM_LABEL: [exits] * pairs}


@needs_compiler
def test_smp_row_on_two_vcpus_and_one(tmp_path: Path) -> None:
    binary = suite_exits.build_ref_vmm(tmp_path)
    for cpus in (1, 2):
        machine, _ = suite_exits.build_smp_machine(7, cpus)
        with machine:
            suite_exits.write_state_file(machine, tmp_path / "state.bin")
        assert suite_exits.measure_c_smp(binary, tmp_path / "state.bin", 7, cpus)[1] == 8 * cpus
        assert suite_exits.measure_pyvmm_smp(7, cpus)[1] == 8 * cpus


@needs_compiler
def test_ref_vmm_refuses_several_vcpus_without_the_irqchip(tmp_path: Path) -> None:
    binary = suite_exits.build_ref_vmm(tmp_path)
    machine, _ = suite_exits.build_smp_machine(1, 2)
    with machine:
        suite_exits.write_state_file(machine, tmp_path / "state.bin", irqchip=False)
    with pytest.raises(RefVmmError, match="needs the in-kernel irqchip"):
        run_ref_vmm(binary, tmp_path / "state.bin", cpus=2)


def test_state_file_says_whether_the_machine_has_the_irqchip(tmp_path: Path) -> None:
    machine, _ = suite_exits.build_smp_machine(1, 1)
    with machine:
        suite_exits.write_state_file(machine, tmp_path / "split.bin")
        suite_exits.write_state_file(machine, tmp_path / "off.bin", irqchip=False)
    flags = {name: (tmp_path / name).read_bytes()[20:24] for name in ("split.bin", "off.bin")}
    # The default machine's irqchip is split: STATE_IRQCHIP | STATE_SPLIT_IRQCHIP.
    assert flags == {"split.bin": b"\x05\0\0\0", "off.bin": b"\0\0\0\0"}


def test_exit_suite_without_a_compiler_is_skipped_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(suite_exits, "find_compiler", lambda: None)
    messages: list[str] = []
    comparisons = suite_exits.collect(quick=True, progress=messages.append, count=1, pairs=1)
    assert len(comparisons) == len(CASES) + 1
    for comparison in comparisons:
        assert_skipped(comparison, "no C compiler")
    assert any("skipped" in message for message in messages)


@needs_compiler
def test_ref_vmm_rejects_a_file_that_is_not_a_state_file(tmp_path: Path) -> None:
    binary = suite_exits.build_ref_vmm(tmp_path)
    state = tmp_path / "junk.bin"
    state.write_bytes(b"not a state file")
    with pytest.raises(RefVmmError, match="not a ref_vmm state file"):
        run_ref_vmm(binary, state)


@needs_compiler
def test_exit_guest_reports_an_unknown_kind(tmp_path: Path) -> None:
    binary = suite_exits.build_ref_vmm(tmp_path)
    case = suite_exits.Case("bad kind", CASES[0].mode, suite_exits.ExitKind.PORT_OUT)
    machine, _ = suite_exits.build_exit_machine(case, 5)
    with machine:
        machine.memory.write_u64(suite_exits.PARAMS_GPA + 8, 7)
        suite_exits.write_state_file(machine, tmp_path / "state.bin")
    run = run_ref_vmm(binary, tmp_path / "state.bin")
    assert (run.exits, run.io_out, run.debug_exit) == (1, 1, 1)


def test_boot_sector_is_padded_and_signed() -> None:
    sector = suite_startup.boot_sector(b"\xf4")
    assert len(sector) == 512
    assert sector[0] == 0xF4 and sector[510:] == b"\x55\xaa"
    with pytest.raises(ValueError):
        suite_startup.boot_sector(bytes(511))


def test_missing_qemu_is_a_note_with_the_install_command(tmp_path: Path) -> None:
    comparison, qemu_rss = suite_startup.compare_boot(
        suite_startup.QUICK, tmp_path, "qemu-system-x86_64-not-installed", None
    )
    assert qemu_rss is None
    assert_skipped(comparison, "install with: apt-get install qemu-system-x86")
    comparison, qemu_rss = suite_startup.compare_boot_microvm(
        suite_startup.QUICK, tmp_path, "qemu-system-x86_64-not-installed", None
    )
    assert qemu_rss is None
    assert_skipped(comparison, "install with: apt-get install qemu-system-x86")


def test_jump_rom_jumps_to_the_boot_sector() -> None:
    rom = suite_startup.jump_rom()
    assert len(rom) == 64 * 1024  # QEMU takes -bios images in 64 KiB units
    assert rom[-16:-11] == bytes.fromhex("ea 00 7c 00 00")  # ljmp $0, $0x7c00 at 0xfffffff0
    assert rom.count(0) == len(rom) - 2  # 0xea and 0x7c


def test_microvm_command_runs_the_image_at_0x7c00_through_the_jump_rom() -> None:
    command = suite_startup.qemu_microvm_command("qemu", Path("j.rom"), Path("hello_exit.bin"))
    line = " ".join(command)
    assert "-M microvm," in line and "-bios j.rom" in line
    assert "loader,file=hello_exit.bin,addr=0x7c00,force-raw=on" in line
    assert "isa-serial=on" in line and "-serial stdio" in line
    assert "isa-debug-exit,iobase=0xf4,iosize=4" in line


def test_startup_suite_runs_every_comparison_or_says_why_not() -> None:
    plan = Plan(
        boot_pairs=1, cycle_pairs=2, cycles=3, rss_pairs=1, qemu_timeout=60, fast_boot_pairs=2
    )
    rows = suite_startup.collect(quick=True, plan=plan)
    boot, microvm, fastest, python_boot, floor_boot, irqchips, cycle, rss, python_rss, floor_rss = (
        rows
    )
    assert [row.name for row in rows] == [
        BOOT_NAME,
        MICROVM_BOOT_NAME,
        suite_startup.FASTEST_BOOT_NAME,
        PYTHON_BOOT_NAME,
        suite_startup.FLOOR_BOOT_NAME,
        suite_startup.IRQCHIP_BOOT_NAME,
        CYCLE_NAME,
        RSS_NAME,
        PYTHON_RSS_NAME,
        suite_startup.FLOOR_RSS_NAME,
    ]
    assert all(row.suite == "startup" for row in rows)
    assert [row.a_label for row in (boot, microvm, fastest, python_boot, python_rss)] == [
        QEMU_LABEL,
        MICROVM_LABEL,
        MICROVM_LABEL,
        PYTHON_LABEL,
        PYTHON_LABEL,
    ]

    assert fastest.b_label == "pyvmm --kernel-irqchip off"
    for row, pairs in ((boot, 1), (microvm, 2), (fastest, 2)):
        if "skipped" in row.notes:
            assert_skipped(row, "apt-get install qemu-system-x86", "QEMU cannot boot")
        else:
            assert_measured(row, pairs)
            assert row.unit == "ms"
    assert_measured(python_boot, 2)
    assert python_boot.unit == "ms"
    # The floor imports what the boot imports (argparse, threading...) but pyvmm's modules.
    assert_measured(floor_boot, 2)
    assert floor_boot.a_label == suite_startup.FLOOR_LABEL
    floor = floor_boot.notes["floor_modules"]
    assert {"argparse", "threading", "_cffi_backend", "pyvmm._kvm"} <= set(floor)
    assert [name for name in floor if name.startswith("pyvmm")] == ["pyvmm._kvm"]
    # Its imports take time: slower than the bare interpreter, faster than the boot.
    assert min(python_boot.a) < statistics.median(floor_boot.a) < max(floor_boot.b)
    assert_measured(irqchips, 2)
    assert (irqchips.a_label, irqchips.b_label) == ("pyvmm --kernel-irqchip on", "pyvmm")
    if suite_exits.gnu_time() is None:
        assert_skipped(python_rss, "apt-get install time")
        assert_skipped(floor_rss, "apt-get install time")
    else:
        assert_measured(python_rss, 1)
        assert python_rss.unit == "KiB"
        assert_measured(floor_rss, 1)
        assert floor_rss.notes["floor_modules"] == floor

    if suite_exits.find_compiler() is None:
        assert_skipped(cycle, "no C compiler")
        assert_skipped(rss, "no C compiler")
        return
    assert_measured(cycle, 2)
    assert cycle.unit == "ms/cycle"
    assert cycle.notes["c_ms_per_cycle_without_irqchip"] > 0
    exits = suite_startup.HELLO_EXITS
    assert cycle.notes["exits_per_cycle"] == {C_LABEL: [exits] * 2, PYVMM_LABEL: [exits] * 2}
    # The clocked run: each VMM made one VM and one vCPU a cycle, and ran it to the end;
    # the time inside those calls is part of, never more than, the cycle's.
    split = cycle.notes["system_calls"]
    for label in (C_LABEL, PYVMM_LABEL):
        calls = split["calls_per_cycle"][label]
        assert calls["KVM_CREATE_VM"][0] == calls["KVM_CREATE_VCPU"][0] == 1
        assert calls["KVM_RUN"][0] >= exits
        assert calls["close"][0] >= 3  # the vCPU, the VM, /dev/kvm
        assert 0 < split["inside_calls_ms"][label] <= split["cycle_ms"][label]
    assert split["pyvmm_calls_over_c_cycle"] > 0
    assert split["c_cycle_ms_inside_python"] > 0  # ref_vmm as a library, through ctypes
    if suite_exits.gnu_time() is None:
        assert_skipped(rss, "apt-get install time")
    else:
        assert_measured(rss, 1)
        assert rss.unit == "KiB"


def test_virtio_suite_compares_the_two_consoles() -> None:
    from benchmarks import suite_virtio

    row, reads, paths = suite_virtio.collect(quick=True)
    assert (row.suite, row.unit, row.a_label, row.b_label) == (
        "virtio", "us/KiB", "16550 (COM1)", "virtio-console"
    )  # fmt: skip
    assert len(row.a) == len(row.b) == suite_virtio.QUICK[1]
    assert row.ratio is not None and row.ratio < 1  # virtio costs less per KiB
    kib = suite_virtio.QUICK[0]
    assert min(row.notes["exits_per_run"]["serial"]) > kib * 1024  # an exit per byte
    assert row.notes["virtio_exits_per_4k_request"] < 100
    # virtio-blk: the guest's reads against the host's, and the two notification paths.
    mib, pairs = suite_virtio.BLK_QUICK
    assert (reads.unit, len(reads.a), len(reads.b)) == ("us/MiB", pairs, pairs)
    assert reads.ratio is not None and reads.ratio > 0
    assert 0 < reads.notes["throughput_guest_over_host"] == round(1 / reads.ratio, 3)
    assert (paths.a_label, paths.b_label) == ("MMIO exit + KVM_IRQ_LINE", "ioeventfd + irqfd")
    exits = paths.notes["exits_per_request"]
    # Without an ioeventfd every request's QueueNotify is an exit; with one, none is.
    assert exits["MMIO exit + KVM_IRQ_LINE"] >= 1
    assert exits["ioeventfd, polling the used ring"] < 0.5
    assert paths.notes["requests_per_run"] == mib * 16
