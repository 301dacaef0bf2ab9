"""GVA -> GPA -> HVA -> HPA on running guests that build their own page tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvmm._kvm import ffi
from pyvmm.arch.x86_64.page_walk import iter_leaf_walks
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import Machine, MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind
from pyvmm.memory.host_pagemap import host_frame
from tests.integration.helpers import GUESTS, host_keeps_32bit_paging, run_pyvmm

VMEM64 = {
    "image": "vmem64.bin",
    "mode": CpuMode.LONG,
    "marker_gva": 0xFFFF800012345010,
    "marker": b"PYVMM-HI",
    "marker_gpa": 0x300010,
    "alias_gvas": (0x40000020, 0x40001020),
    "alias_marker": b"ALIAS-AB",
    "alias_gpa": 0x301020,
    "cr3": 0x200000,
}
VMEM32 = {
    "image": "vmem32.bin",
    "mode": CpuMode.PROTECTED,
    "marker_gva": 0xC0345010,
    "marker": b"PYVMM-32",
    "marker_gpa": 0x300010,
    "alias_gvas": (0x80000020, 0x80001020),
    "alias_marker": b"ALIAS-32",
    "alias_gpa": 0x301020,
    "cr3": 0x200000,
}


def _guest_params(request: pytest.FixtureRequest) -> dict:  # type: ignore[type-arg]
    params: dict = request.param  # type: ignore[type-arg]
    if params is VMEM32 and not host_keeps_32bit_paging():
        pytest.skip("this host's KVM cannot run 32-bit paging (checked by probing it)")
    return params


@pytest.fixture(params=[VMEM64, VMEM32], ids=["long-mode", "32-bit"])
def halted_guest(request: pytest.FixtureRequest) -> Iterator[tuple[Machine, dict, bytes]]:  # type: ignore[type-arg]
    params = _guest_params(request)
    output = bytearray()
    machine = build_machine(
        MachineConfig(
            image=(GUESTS / params["image"]).read_bytes(),
            ram_size=128 << 20,
            console=output.extend,
            mode=params["mode"],
        )
    )
    with machine:
        code_hva = machine.memory.host_address(machine.entry.entry)
        code_frame_before = host_frame(code_hva)
        outcome = machine.run(timeout=60)
        assert outcome.kind is OutcomeKind.HALTED, outcome.message
        assert host_frame(code_hva) == code_frame_before  # the frame stayed put while it ran
        yield machine, params, bytes(output)


def test_guest_reports_success(halted_guest: tuple[Machine, dict, bytes]) -> None:  # type: ignore[type-arg]
    _, params, output = halted_guest
    assert b"BAD" not in output
    assert output.count(b": ok\n") == 2
    assert params["marker"] in output


def test_guest_runs_on_its_own_page_tables(halted_guest: tuple[Machine, dict, bytes]) -> None:  # type: ignore[type-arg]
    machine, params, _ = halted_guest
    assert machine.paging_registers().cr3 == params["cr3"]


def test_software_walk_agrees_with_kvm_on_every_mapped_page(
    halted_guest: tuple[Machine, dict, bytes],  # type: ignore[type-arg]
) -> None:
    machine, _, _ = halted_guest
    walks = list(iter_leaf_walks(machine.memory, machine.paging_registers(), machine.max_phys_bits))
    assert len(walks) >= 4
    for found in walks:
        for gva in (found.gva, found.gva + found.page_size - 1):
            kvm = machine.vcpu.translate(gva)
            assert kvm.valid, hex(gva)
            assert kvm.physical_address == found.gpa + (gva - found.gva), hex(gva)


def test_marker_is_found_at_every_level(halted_guest: tuple[Machine, dict, bytes]) -> None:  # type: ignore[type-arg]
    machine, params, _ = halted_guest
    chain = machine.translate(params["marker_gva"])
    assert chain.agrees_with_kvm
    assert chain.gpa == params["marker_gpa"]
    assert chain.page_size == 4096 and chain.walk.steps[-1].level == "PTE"
    # Read the marker through the host mapping the chain names: the VMM's own view.
    assert chain.hva is not None
    size = len(params["marker"])
    assert ffi.buffer(ffi.cast("char *", chain.hva), size)[:] == params["marker"]
    # The host-physical frame, where the kernel tells us, is real and stable.
    assert chain.host is not None
    if chain.host.hpa is not None:
        assert chain.host.pfn
        assert host_frame(chain.hva) == chain.host
    else:
        assert chain.host.note  # said clearly, never a zero


def test_two_virtual_pages_alias_one_physical_page(
    halted_guest: tuple[Machine, dict, bytes],  # type: ignore[type-arg]
) -> None:
    machine, params, _ = halted_guest
    first, second = (machine.translate(gva) for gva in params["alias_gvas"])
    assert first.gpa == second.gpa == params["alias_gpa"]
    assert first.hva == second.hva and first.hpa == second.hpa
    assert first.flags is not None and second.flags is not None
    assert first.flags.writable and first.flags.user
    assert not second.flags.writable and not second.flags.user
    assert machine.memory.read(params["alias_gpa"], 8) == params["alias_marker"]


def test_memmap_command_shows_the_chain() -> None:
    result = run_pyvmm(
        "memmap", "--mode", "long", "guests/vmem64.bin", "--translate", "0xffff800012345010"
    )
    assert result.returncode == 0, result.stderr
    assert "vmem64: wrote PYVMM-HI at 0xffff800012345010" in result.stderr  # guest console
    out = result.stdout
    assert "Guest paging: 4-level" in out and "CR3=0x200000" in out
    assert "0xffff800012345000-0xffff800012345fff  0x000300000-0x000300fff" in out
    assert "GVA 0xffff800012345010 -> GPA 0x300010  (4 KiB page, rwx kernel)" in out
    assert "KVM_TRANSLATE: 0x300010 (agrees)" in out
    assert "HVA -> HPA 0x" in out


def test_memmap_json() -> None:
    result = run_pyvmm(
        "memmap",
        "-q",
        "--json",
        "--mode",
        "long",
        "guests/vmem64.bin",
        "--translate",
        "0x40001020",
        "--translate",
        "0x7fff00000000",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["paging"]["mode"] == "4-level"
    alias, unmapped = report["translations"]
    assert alias["gpa"] == 0x301020 and alias["kvm_translate"]["agrees"]
    assert alias["flags"] == "r-- kernel"
    assert [step["level"] for step in alias["walk"]] == ["PML4E", "PDPTE", "PDE", "PTE"]
    assert unmapped["gpa"] is None and "not present" in unmapped["problem"]
    assert unmapped["kvm_translate"]["agrees"]
    gvas = {row["gva"] for row in report["mappings"]}
    assert 0xFFFF800012345000 in gvas
    assert any(entry["kind"] == "image" for entry in report["memory_map"])


def test_memmap_of_an_unpaged_guest() -> None:
    result = run_pyvmm("memmap", "-q", "guests/hello.bin", "--translate", "0x7c00")
    assert result.returncode == 0, result.stderr
    assert "paging is off: guest virtual = guest physical" in result.stdout
    assert "GVA 0x7c00 -> GPA 0x7c00" in result.stdout


def test_guest_sources_exist() -> None:
    for name in ("vmem64", "vmem32"):
        assert Path(GUESTS / f"{name}.s").is_file()


def test_an_address_past_ram_is_named_by_the_machine_map() -> None:
    """It said `GPA 0x40000000 is not RAM (MMIO or the PCI hole)` with 128M: it is neither."""
    result = run_pyvmm(
        "memmap", "-q", "--mode", "long", "guests/long.bin",
        "--translate", "0x40000000", "--translate", "0xfee00000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  0x008000000-0x0cfffffff  hole   unmapped: no RAM here" in out  # the map's row
    assert (
        "stops: GPA 0x40000000 is not RAM: it lies in 0x8000000-0xcfffffff, where there is "
        "no RAM (from the end of guest RAM to the MMIO hole)"
    ) in out
    assert (
        "stops: GPA 0xfee00000 is not RAM: it lies in the MMIO hole 0xd0000000-0xffffffff"
    ) in out
    # The identity mapping of the low 4 GiB, cut where the map's ranges meet.
    assert "0x008000000-0x0cfffffff  (not RAM: unmapped)" in out
    assert "0x0d0000000-0x0ffffffff  (not RAM: MMIO hole)" in out
