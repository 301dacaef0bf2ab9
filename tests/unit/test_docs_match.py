"""The README and the --help texts say what the code does (no KVM needed).

Each check reads the document and compares it with the code's own constants
or parser, so that a change to one without the other fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pyvmm.cli import main
from pyvmm.cli.arguments import normalize_arguments
from pyvmm.cli.parser import build_parser, check_combinations
from pyvmm.demos.common import CANNOT_RUN, EVIDENCE_FAILS, EVIDENCE_HOLDS
from pyvmm.machine import outcome
from pyvmm.machine.outcome import OutcomeKind
from pyvmm.shipped import shipped_file

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

# The status each outcome is documented with, from the code's constants.
STATUS_TEXT = {
    "halted": str(outcome.EXIT_HALTED),
    "system-event": str(outcome.EXIT_GUEST_CRASH),
    "power-off": str(outcome.EXIT_HALTED),
    "reset": str(outcome.EXIT_HALTED),
    "triple-fault": str(outcome.EXIT_TRIPLE_FAULT),
    "internal-error": str(outcome.EXIT_INTERNAL_ERROR),
    "fail-entry": str(outcome.EXIT_FAIL_ENTRY),
    "unhandled-exception": str(outcome.EXIT_UNHANDLED_EXCEPTION),
    "quit": str(outcome.EXIT_HALTED),
    "timeout": str(outcome.EXIT_TIMEOUT),
    "exit-limit": str(outcome.EXIT_LIMIT),
    "vmm-error": str(outcome.EXIT_VMM_ERROR),
    "bad input": str(outcome.EXIT_USAGE),
}


def readme_outcome_table() -> dict[str, str]:
    start = README.index("| outcome | status | meaning |")
    rows = README[start:].split("\n\n", 1)[0].splitlines()[2:]
    # An escaped pipe (`\\|`) is part of a cell, not a column border.
    cells = (re.split(r"(?<!\\)\|", row) for row in rows)
    return {cell[1].strip(): cell[2].strip() for cell in cells}


def test_the_readme_outcome_table_has_every_outcome_with_its_status() -> None:
    table = readme_outcome_table()
    ending = {kind.value for kind in OutcomeKind} - {OutcomeKind.DEBUG.value}
    assert set(table) == ending | {"bad input"}
    for name, status in STATUS_TEXT.items():
        assert table[name] == status, name
    assert table["debug-exit"] == "(v << 1) \\| 1"
    assert table["interrupted"] == "killed by the signal"


def test_boot_help_gives_the_same_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "--help"]) == 0
    epilog = capsys.readouterr().out.split("how a run ends", 1)[1]
    for name, status in STATUS_TEXT.items():
        if name == "system-event":
            status = status.replace(" or ", "|")
        line = re.search(rf"^  {re.escape(name)}\s+(\S+)", epilog, re.MULTILINE)
        assert line is not None and line.group(1) == status, name


def test_no_document_claims_status_1_for_anything_but_debug_exit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "stderr line tells them apart" not in README
    for command in (["boot", "--help"], ["memmap", "--help"], ["demo", "--help"]):
        main(command)
        text = " ".join(capsys.readouterr().out.split())
        assert "1 when pyvmm failed" not in text and ", 1 when it does not" not in text


def test_memmap_and_demo_help_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    main(["memmap", "--help"])
    memmap = " ".join(capsys.readouterr().out.split())
    assert f"{outcome.EXIT_VMM_ERROR} when pyvmm failed" in memmap
    main(["demo", "--help"])
    demo = " ".join(capsys.readouterr().out.split())
    assert f"{EVIDENCE_HOLDS} when the evidence supports the property" in demo
    assert f"{EVIDENCE_FAILS} when it does not" in demo
    assert f"{CANNOT_RUN} when the demo cannot run" in demo


def test_bare_pyvmm_commands_come_after_the_venv_is_activated() -> None:
    activate = README.index(". .venv/bin/activate")
    first_bare = re.search(r"^(\$ )?pyvmm (boot|memmap|demo)", README, re.MULTILINE)
    assert first_bare is not None and first_bare.start() > activate


def readme_guest_commands() -> list[str]:
    """Every `pyvmm boot ...` command in the README's guest tables."""
    return re.findall(r"^\| `guests/[^`]+` \| `(pyvmm boot [^`]+)` \|", README, re.MULTILINE)


@pytest.mark.parametrize("command", readme_guest_commands())
def test_each_guest_table_command_parses_and_names_a_shipped_guest(command: str) -> None:
    argv = shlex.split(command)[1:]
    parser = build_parser()
    args = parser.parse_args(normalize_arguments(parser.commands, argv))
    check_combinations(args)
    assert args.image.startswith("guests/")
    assert shipped_file(args.image).is_file()


def test_the_guest_tables_are_found() -> None:
    assert len(readme_guest_commands()) >= 12
