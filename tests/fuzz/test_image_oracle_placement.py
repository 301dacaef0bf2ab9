"""The image fuzzer's oracle checks where pyvmm put its own structures (no /dev/kvm).

Each test hands the fuzzer a placement that breaks one rule of
arch/x86_64/placement.py and expects the case to fail; the real placement
passes the same case.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import tests.fuzz.image_fuzz as fuzz
from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.placement import Placement, reserved_ranges
from tests.fuzz.image_cases import make_case
from tests.fuzz.image_seeds import seed_corpus


def plain_case(name: str) -> fuzz.Case:
    """Seed `name` as it is, in 64 MiB, every option at its default."""
    seed = next(seed for seed in seed_corpus() if seed.name == name)
    return dataclasses.replace(
        make_case(1, 0), source=seed, image=seed.data, mutations=(), ram="64M", mode=None,
        force_multiboot=False, load_gpa=None, cmdline="kernel", modules=(), via_file=False,
    )  # fmt: skip


def with_places(monkeypatch: pytest.MonkeyPatch, places: layout.VmmPlaces) -> None:
    """Make the fuzzer's placement put pyvmm's structures at `places`, whatever the image."""
    real = fuzz.plan_placement

    def forced(*args: Any, **kwargs: Any) -> Placement:
        placement = real(*args, **kwargs)
        mode = placement.image.mode
        reserved = reserved_ranges(mode, places, kwargs.get("machine_ranges", ()))
        return Placement(placement.image, places, tuple(reserved))

    monkeypatch.setattr(fuzz, "plan_placement", forced)


@pytest.mark.parametrize("name", ["elf64/over-vmm-defaults", "elf32/over-vmm-defaults"])
def test_the_real_placement_passes(name: str) -> None:
    outcome = fuzz.run_case(plain_case(name))
    assert outcome.kind == "loaded", outcome.detail


def test_a_structure_left_under_the_image_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader itself refuses it (the list says the stack is there): one line, status 2."""
    with_places(monkeypatch, layout.DEFAULT_PLACES)
    outcome = fuzz.run_case(plain_case("elf64/over-vmm-defaults"))
    assert outcome.kind == "rejected"  # the image is refused against the list it was given
    assert "overlaps pyvmm's page tables" in outcome.detail


def test_a_structure_moved_onto_the_multiboot_information_is_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not in the list the loader got, so the information lands on it: the oracle sees it."""
    real = fuzz.plan_placement

    def hidden(*args: Any, **kwargs: Any) -> Placement:
        placement = real(*args, **kwargs)
        # The stack where the information will go, and left out of the list.
        places = layout.VmmPlaces(stack_top=0x10_5000)
        return Placement(placement.image, places, placement.reserved)

    monkeypatch.setattr(fuzz, "plan_placement", hidden)
    outcome = fuzz.run_case(plain_case("multiboot/elf32"))
    assert outcome.kind == "failed"
    assert "overlaps the image, the multiboot data or a machine range" in outcome.detail


def test_a_structure_moved_for_nothing_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    with_places(monkeypatch, layout.VmmPlaces(gdt=0x8000))
    outcome = fuzz.run_case(plain_case("elf32/good"))
    assert outcome.kind == "failed"
    assert "was moved from its free default place 0x500" in outcome.detail


def test_a_structure_in_the_ebda_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    with_places(monkeypatch, layout.VmmPlaces(gdt=0x8_0000, stack_top=0xA_0000))
    outcome = fuzz.run_case(plain_case("elf32/over-vmm-defaults"))
    assert outcome.kind == "failed" and "lies in the EBDA or the BIOS area" in outcome.detail
