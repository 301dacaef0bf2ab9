"""--acpi on|off, and QEMU's spellings of it (-no-acpi, -machine acpi=off)."""

from __future__ import annotations

import argparse

import pytest

from pyvmm.cli import main
from pyvmm.cli.arguments import normalize_arguments
from pyvmm.cli.parser import build_parser, check_combinations


def parse(*argv: str) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(normalize_arguments(parser.commands, list(argv)))
    check_combinations(args)
    return args


@pytest.mark.parametrize("command", ["boot", "memmap"])
def test_acpi_is_on_by_default_as_in_qemu(command: str) -> None:
    assert parse(command, "guests/hello.bin").acpi == "on"
    assert parse(command, "--acpi", "off", "guests/hello.bin").acpi == "off"


@pytest.mark.parametrize(
    "qemu",
    [["-no-acpi"], ["--no-acpi"], ["-machine", "acpi=off"], ["-M", "accel=kvm,acpi=off"]],
)
def test_qemu_spellings_turn_acpi_off(qemu: list[str]) -> None:
    assert parse("boot", *qemu, "guests/hello.bin").acpi == "off"


def test_machine_acpi_on_is_the_default_spelled_out() -> None:
    assert parse("boot", "-machine", "acpi=on", "guests/hello.bin").acpi == "on"


def test_other_acpi_values_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "-machine", "acpi=auto", "guests/hello.bin"]) == 2
    assert capsys.readouterr().err.strip() == (
        "pyvmm boot: cannot use -machine acpi=auto: acpi=auto is not available: "
        "pyvmm takes on or off"
    )
    assert main(["boot", "--acpi", "maybe", "guests/hello.bin"]) == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
