"""CLI parsing and the errors reported before any VM exists (no KVM needed)."""

from __future__ import annotations

import pytest

from pyvmm.cli import main
from pyvmm.cli.parser import build_parser
from pyvmm.machine.outcome import EXIT_LIMIT, EXIT_TIMEOUT, EXIT_VMM_ERROR, OutcomeKind


def test_boot_defaults() -> None:
    args = build_parser().parse_args(["boot", "guests/hello.bin"])
    assert (args.image, args.memory, args.mode, args.load_addr, args.timeout) == (
        "guests/hello.bin",
        "128M",
        None,
        None,
        None,
    )


def test_boot_all_options() -> None:
    args = build_parser().parse_args(
        [
            "boot",
            "-m",
            "1G",
            "--mode",
            "long",
            "--load-addr",
            "0x200000",
            "--timeout",
            "2.5",
            "-vv",
            "x.bin",
        ]
    )
    assert (args.memory, args.mode, args.load_addr, args.timeout, args.verbose) == (
        "1G",
        "long",
        0x200000,
        2.5,
        2,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["boot"],
        ["frobnicate"],
        ["boot", "--mode", "v86", "x.bin"],
        ["boot", "--load-addr", "nowhere", "x.bin"],
        ["boot", "--load-addr", "-1", "x.bin"],
        ["boot", "--timeout", "0", "x.bin"],
        ["boot", "--timeout", "soon", "x.bin"],
        ["boot", "-m", "0", "x.bin"],
        ["boot", "-m", "many", "x.bin"],
    ],
)
def test_bad_usage_is_one_line_and_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyvmm") and err.count("\n") == 1


def test_missing_image_is_status_2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert main(["boot", str(tmp_path / "absent.bin")]) == 2
    assert "absent.bin" in capsys.readouterr().err


def test_help_documents_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("--timeout", "--max-exits", "--console-rate", "--input-buffer", "exit status"):
        assert text in out
    # Every way a run can end is named, with its status.
    for kind in OutcomeKind:
        if kind is not OutcomeKind.DEBUG:  # a debugger's stop, not an end
            assert f"  {kind.value} " in out, kind
    for status in (EXIT_TIMEOUT, EXIT_LIMIT, EXIT_VMM_ERROR):
        assert f" {status} " in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pyvmm ")
