"""The benchmark kernels give the same results in a guest, at CPL3 and CPL0, as natively.

Small n only: ring-0 guest code may be emulated (a kvm_pvm host), thousands
of times slower than native. These tests check behaviour, never timing.
"""

from __future__ import annotations

import struct

import pytest

from pyvmm.arch.x86_64 import layout
from pyvmm.demos import kernels
from pyvmm.demos.kernels import (
    BAD_INDEX_STATUS,
    BUFFER_GPA,
    PARAMS_GPA,
    RESULT_PORT,
    RESULT_PORT_SIZE,
    KernelMismatch,
    KernelRunError,
    ResultPort,
    load_kernel_image,
    run_in_guest,
    run_native,
)
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind

# (kernel, n at CPL3, n at CPL0)
CASES = [
    ("int_loop", 100_000, 300),
    ("mem_checksum", (1 << 20) + 3, 1003),
    ("sieve", 100_000, 500),
]
STUB_EXITS = 3  # the result's two `out`s and the write to the debug-exit port


@pytest.mark.parametrize("ring", [3, 0])
@pytest.mark.parametrize(("kernel", "n3", "n0"), CASES)
def test_guest_result_equals_native(kernel: str, n3: int, n0: int, ring: int) -> None:
    n = n3 if ring == 3 else n0
    native = run_native(kernel, n)
    guest = run_in_guest(kernel, n, ring)
    assert guest.result == native.result
    assert guest.exits == STUB_EXITS
    assert guest.seconds > 0


@pytest.mark.parametrize("ring", [3, 0])
def test_zero_work_still_reports_a_result(ring: int) -> None:
    assert run_in_guest("sieve", 0, ring).result == 0
    assert run_in_guest("int_loop", 0, ring).result == run_native("int_loop", 0).result


@pytest.mark.parametrize("ring", [3, 0])
def test_cpuid_loop_runs_n_cpuids(ring: int) -> None:
    # CPUID may be handled inside the kernel without an exit to pyvmm: no exit count asserted.
    assert run_in_guest("cpuid_loop", 40, ring).result == 40


def test_cpuid_vendor_leaf_runs_in_the_guest() -> None:
    # Leaf 0: EAX is the highest basic leaf, EBX the vendor string's first four bytes.
    for ring in (3, 0):
        result = run_in_guest("cpuid_leaf", 0, ring).result
        assert result & 0xFFFF_FFFF >= 1
        assert (result >> 32).to_bytes(4, "little").isalpha()


def test_mismatch_with_the_native_result_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    true_result = run_native("sieve", 100).result
    monkeypatch.setitem(kernels._native_results, ("sieve", 100), true_result + 1)
    with pytest.raises(KernelMismatch, match=r"sieve\(100\) at CPL3 returned 0x0*19"):
        run_in_guest("sieve", 100, 3)
    assert run_in_guest("sieve", 100, 3, check=False).result == true_result


def test_bad_ring_is_refused() -> None:
    with pytest.raises(KernelRunError, match="ring 1"):
        run_in_guest("sieve", 100, 1)


@pytest.mark.parametrize("mode", [CpuMode.USER, CpuMode.LONG])
def test_stub_rejects_an_index_past_the_table(mode: CpuMode) -> None:
    image = load_kernel_image()
    config = MachineConfig(
        image=image.data,
        ram_size=BUFFER_GPA + (1 << 20),
        console=lambda data: None,
        mode=mode,
        load_gpa=layout.HIGH_LOAD_GPA,
    )
    port = ResultPort()
    with build_machine(config) as machine:
        machine.pio_bus.insert(port, RESULT_PORT, RESULT_PORT_SIZE, "kernel result")
        machine.memory.write(PARAMS_GPA, struct.pack("<QQQ", len(image.offsets), 10, BUFFER_GPA))
        outcome = machine.run(timeout=30)
    assert outcome.kind is OutcomeKind.DEBUG_EXIT
    assert outcome.exit_status == BAD_INDEX_STATUS
    assert port.result is None
