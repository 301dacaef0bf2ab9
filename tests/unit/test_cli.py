"""CLI parsing and the errors reported before any VM exists (no KVM needed)."""

from __future__ import annotations

import re

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
            # The name, then its status on the same line or, for a long name, the next.
            assert re.search(rf"^  {kind.value}\s", out, re.MULTILINE), kind
    for status in (EXIT_TIMEOUT, EXIT_LIMIT, EXIT_VMM_ERROR):
        assert f" {status} " in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pyvmm ")


def help_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*command, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["boot"], ["memmap"], ["demo"]])
def test_every_help_fits_a_terminal(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = help_text(command, capsys)
    assert [line for line in text.splitlines() if len(line) > 80] == []


def test_boot_help_tells_what_boot_does(capsys: pytest.CaptureFixture[str]) -> None:
    from pyvmm.arch.x86_64 import layout
    from pyvmm.cli.qemu_options import QEMU_OPTIONS
    from pyvmm.memory.size import format_size
    from pyvmm.observe.trace import CATEGORIES

    text = " ".join(help_text(["boot"], capsys).split())  # argparse wraps: compare words
    # Not "one vCPU" alone: -smp gives more, up to what KVM allows.
    assert "with one vCPU (-smp N: N vCPUs)" in text
    assert "KVM_CAP_MAX_VCPUS" in text
    # Every format the loader detects, multiboot first as it is detected first.
    formats = text[text.index("image formats, found by their contents") :]
    assert formats.index("multiboot") < formats.index("ELF32") < formats.index("flat binary")
    # The -m floor is the builder's.
    assert f"at least {format_size(layout.MIN_RAM_SIZE)}" in text
    # --trace: every kind, and the form shown works (tests/unit/test_cli_habits.py).
    assert "--trace KINDS or --trace=KINDS" in text
    assert f"(comma-separated: {', '.join(CATEGORIES)})" in text
    # Every QEMU option pyvmm knows is listed.
    for name in QEMU_OPTIONS:
        assert re.search(rf"(^|[ ,;]){re.escape(name)}([ ,;]|$)", text), name


def test_memmap_and_demo_help(capsys: pytest.CaptureFixture[str]) -> None:
    memmap = " ".join(help_text(["memmap"], capsys).split())
    assert "those of pyvmm boot" in memmap and "--translate GVA" in memmap
    assert "IMAGE multiboot kernel, ELF32 or ELF64 executable, or flat binary" in memmap
    demo = " ".join(help_text(["demo"], capsys).split())
    assert "equivalence, efficiency or isolation" in demo
    top = " ".join(help_text([], capsys).split())
    assert all(name in top for name in ("boot", "memmap", "demo"))
