"""CI's short image-fuzz run, and checks that the fuzzer itself sees what it must.

The long campaign is `python -m tests.fuzz.image_fuzz --count 20000 --seed 1`.
No /dev/kvm needed: images are loaded into anonymous guest memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import tests.fuzz.image_fuzz as fuzz
from pyvmm.errors import LoaderError
from pyvmm.loaders.entry import EntryPoint
from pyvmm.memory.guest_memory import GuestMemory
from tests.fuzz.image_cases import make_case
from tests.fuzz.image_fuzz import Report, run_campaign, run_case
from tests.fuzz.image_seeds import FAMILIES, seed_corpus

CI_SEED = 1
CI_COUNT = 600

# Each defective seed, unmutated, in 2 MiB of RAM (multiboot forced for that family):
# the LoaderError subclass that must refuse it, or None where the loaders accept it.
EXPECTED_IN_2M = {
    "overlap": "BadElf",
    "overlap-same-start": "BadElf",
    "outside-small-ram": "ImageTooLarge",
    "outside-ram": "ImageTooLarge",
    "in-mmio-hole": "ImageTooLarge",
    "straddles-ram-end": "ImageTooLarge",
    "huge-memsz": "ImageTooLarge",
    "filesz-over-memsz": "BadElf",
    "offset-past-eof": "BadElf",
    "offset-max": "BadElf",
    "entry-outside": "BadEntryPoint",
    "entry-at-segment-end": "BadEntryPoint",
    "entry-in-gap": "BadEntryPoint",
    "phnum-huge": "BadElf",
    "phentsize-zero": "BadElf",
    "phentsize-small": "BadElf",
    "phentsize-plus-one": None,  # a legal stride; the second header is then garbage, skipped
    "phentsize-huge": "BadElf",
    "phoff-past-eof": "BadElf",
    "phoff-max": "BadElf",
    "no-pt-load": "BadElf",
    "et-dyn": "UnsupportedElf",
    "wrong-machine": "UnsupportedElf",
    "ident-only": "BadElf",
    "higher-half-entry-outside": "BadEntryPoint",
    "on-firmware-tables": "ReservedOverlap",
    "fills-low-memory": "NoRoomForVmm",
    "above-4g": "ImageTooLarge",
    "address-wrap": "BadElf",
    "memsz-2**63": "ImageTooLarge",
    "aout-bad-checksum": "BadMultiboot",
    "aout-load-above-header": "BadMultiboot",
    "aout-header-before-file": "BadMultiboot",
    "aout-load-end-below-load": "BadMultiboot",
    "aout-load-end-past-eof": "BadMultiboot",
    "aout-bss-below-load-end": "BadMultiboot",
    "aout-bss-huge": "ImageTooLarge",
    "aout-bss-fills-2m": "ImageTooLarge",
    "aout-entry-outside": "BadEntryPoint",
    "aout-header-runs-past-8k": "BadMultiboot",
    "aout-header-beyond-8k": "BadMultiboot",
    "aout-fields-truncated": "BadMultiboot",
    "aout-unknown-required-flag": "UnsupportedMultiboot",
    "aout-on-firmware-tables": "ReservedOverlap",
    "aout-fills-low-memory": "NoRoomForVmm",
    "aout-crosses-4g": "ImageTooLarge",
    "no-address-fields-not-elf": "BadMultiboot",
    "elf64-above-4g": "ImageTooLarge",
    "elf32-overlap": "BadElf",
    "elf32-huge-memsz": "ImageTooLarge",
    "elf32-entry-outside": "BadEntryPoint",
    "bzimage-2.11": "BzImageTooOld",
    "bzimage-2.02": "BzImageTooOld",
    "bzimage-no-kernel-64": "NoKernel64",
    "bzimage-zimage": "BadBzImage",
    "bzimage-header-truncated": "BadBzImage",
    "bzimage-header-short": "BadBzImage",
    "bzimage-no-kernel": "BadBzImage",
    "bzimage-init-size-huge": "ImageTooLarge",
    "bzimage-fixed-high": "ImageTooLarge",
    "vmlinux-on-firmware-tables": "ReservedOverlap",
    "vmlinux-above-4g": "ImageTooLarge",
}


@pytest.fixture(scope="module")
def report() -> Report:
    return run_campaign(CI_COUNT, CI_SEED)


def test_short_campaign_has_no_failure(report: Report) -> None:
    assert report.count == CI_COUNT
    assert not report.failures, report.summary()


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_both_loaded_and_rejected(report: Report, family: str) -> None:
    outcomes = report.by_family[family]
    assert outcomes["loaded"] and outcomes["rejected"], report.summary()


def test_summary_gives_the_figures(report: Report) -> None:
    text = report.summary()
    assert f"seed {CI_SEED}: {CI_COUNT} images" in text
    assert "rejected by error class" in text and "failures: 0" in text
    assert all(family in text for family in FAMILIES)


def test_corpus_has_the_committed_guests_and_every_family() -> None:
    names = {seed.name for seed in seed_corpus()}
    assert {"guests/elf32.elf", "guests/elf64.elf", "guests/multiboot.elf"} <= names
    assert "guests/hello.bin" in names
    assert {seed.family for seed in seed_corpus()} == set(FAMILIES)


def _load_unmutated(name: str, ram: str) -> str | None:
    seed = next(seed for seed in seed_corpus() if seed.name == name)
    with GuestMemory.from_ranges(fuzz.RAM_CONFIGS[ram]) as memory:
        try:
            placement = fuzz.plan_placement(
                seed.data,
                memory,
                mode=None,
                load_gpa=None,
                force_multiboot=seed.family == "multiboot",
                machine_ranges=fuzz.MACHINE_RANGES,
            )
            fuzz.load_image(
                seed.data,
                memory,
                mode=None,
                load_gpa=None,
                default_flat_gpa=fuzz.default_load_gpa,
                force_multiboot=seed.family == "multiboot",
                reserved=placement.reserved,
            )
        except LoaderError as error:
            assert len(str(error).splitlines()) == 1
            return type(error).__name__
    return None


@pytest.mark.parametrize(
    "name", [seed.name for seed in seed_corpus() if not seed.sound], ids=lambda name: name
)
def test_each_defective_seed_is_refused_for_its_defect(name: str) -> None:
    assert _load_unmutated(name, "2M") == EXPECTED_IN_2M[name.split("/", 1)[1]]


@pytest.mark.parametrize("name", [seed.name for seed in seed_corpus() if seed.sound])
def test_each_sound_seed_loads(name: str) -> None:
    """Sound seeds load as they are (in 64 MiB; "flat/1m" is past 1 MiB in real mode)."""
    expected = "UnreachableImage" if name == "flat/1m" else None
    assert _load_unmutated(name, "64M") == expected


def test_a_case_depends_on_seed_and_number_only() -> None:
    assert make_case(5, 123) == make_case(5, 123)
    assert make_case(5, 123) != make_case(5, 124)


def test_a_crash_in_the_loader_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise IndexError("index out of range")

    monkeypatch.setattr(fuzz, "load_image", crash)
    outcome = run_case(_plain_case("elf64/good"))  # a case whose placement succeeds
    assert outcome.kind == "failed" and outcome.detail == "IndexError: index out of range"


def test_a_two_line_message_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise LoaderError("first line\nsecond line")

    monkeypatch.setattr(fuzz, "load_image", refuse)
    outcome = run_case(_plain_case("elf64/good"))
    assert outcome.kind == "failed" and "not one non-empty line" in outcome.detail


def _plain_case(name: str) -> fuzz.Case:
    """Seed `name` as it is, in 2 MiB, every option at its default."""
    seed = next(seed for seed in seed_corpus() if seed.name == name)
    return dataclasses.replace(
        make_case(CI_SEED, 0), source=seed, image=seed.data, mutations=(), ram="2M", mode=None,
        force_multiboot=False, image_format=None, load_gpa=None, cmdline="kernel", modules=(),
        via_file=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [
        "elf64/good",
        "multiboot/aout",
        "guests/hello.bin",
        "linux/bzimage-fixed-low",
        "linux/vmlinux",
    ],
)
def test_a_wrong_entry_point_is_a_failure(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The oracle parses the image itself: an entry moved by a page is caught."""
    case = _plain_case(name)
    assert run_case(case).kind == "loaded"
    real_load = fuzz.load_image

    def shifted(*args: Any, **kwargs: Any) -> EntryPoint:
        entry = real_load(*args, **kwargs)
        return EntryPoint(
            entry.entry + 0x1000, entry.mode, entry.protocol, entry.image_start,
            entry.image_end, entry.registers, entry.segments,
        )  # fmt: skip

    monkeypatch.setattr(fuzz, "load_image", shifted)
    outcome = run_case(case)
    assert outcome.kind == "failed" and "entry" in outcome.detail


@pytest.mark.parametrize(
    ("name", "offset", "words"),
    [
        ("linux/bzimage-fixed-low", 0x210, "type_of_loader"),  # type_of_loader
        ("linux/vmlinux", 0x202, "no setup header"),  # the HdrS magic pyvmm writes
        ("linux/bzimage-fixed-low", 0x1F4, "setup header was not copied"),  # syssize
    ],
)
def test_a_wrong_zero_page_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, name: str, offset: int, words: str
) -> None:
    """The oracle reads the zero page RSI points at, field by field."""
    case = _plain_case(name)
    assert run_case(case).kind == "loaded"
    real_load = fuzz.load_image

    def spoiled(*args: Any, **kwargs: Any) -> EntryPoint:
        entry = real_load(*args, **kwargs)
        zero_page = dict(entry.registers)["rsi"]
        memory: GuestMemory = args[1]
        memory.write(zero_page + offset, bytes([memory.read(zero_page + offset, 1)[0] ^ 0x5A]))
        return entry

    monkeypatch.setattr(fuzz, "load_image", spoiled)
    outcome = run_case(case)
    assert outcome.kind == "failed" and words in outcome.detail, outcome.detail


def test_main_returns_0_without_failures(capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz.main(["--count", "30", "--seed", "2"]) == 0
    assert "failures: 0" in capsys.readouterr().out
