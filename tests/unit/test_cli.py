"""CLI parsing and the errors reported before any VM exists (no KVM needed)."""

from __future__ import annotations

import re
import signal

import pytest

from pyvmm.cli import main
from pyvmm.cli.parser import MAX_TIMEOUT, build_parser
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
    assert (
        "IMAGE multiboot kernel, Linux bzImage or vmlinux, ELF32 or ELF64 executable, or flat "
        "binary" in memmap
    )
    demo = " ".join(help_text(["demo"], capsys).split())
    assert "equivalence, efficiency, isolation (resource control)" in demo
    # Every demo is named whole (argparse once broke "binary-\ntranslation"), with its needs.
    from pyvmm.cli.parser import DEMO_NAMES

    raw = help_text(["demo"], capsys)
    assert all(name in raw for name in DEMO_NAMES)
    assert "pip install unicorn" in demo and "apt-get install crun" in demo
    top = " ".join(help_text([], capsys).split())
    assert all(name in top for name in ("boot", "memmap", "demo"))


# --- messages a fresh user's trial found misleading ------------------------------------------


def refusal_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        # `--timeout 1e9` and `inf` said "must be a positive number of seconds": they are.
        ("inf", f"inf is too long: at most {MAX_TIMEOUT} seconds (about 292 years), the "
                "longest alarm the run's timer can hold (setitimer, counted in 64-bit "
                "nanoseconds); leave --timeout out for no limit"),
        ("1e10", f"1e10 is too long: at most {MAX_TIMEOUT} seconds"),
        ("nan", "'nan' is not a number of seconds"),
        ("soon", "'soon' is not a number of seconds"),
        ("0", "0 is not positive: give the seconds the guest may run (leave --timeout out "
              "for no limit)"),
        ("-1", "-1 is not positive"),
        ("1e-400", "1e-400 is too short: it is 0 seconds as a float"),
    ],
)  # fmt: skip
def test_a_refused_timeout_says_what_is_wrong(
    value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal_line(["boot", "--timeout", value, "x.bin"], capsys)
    assert line.startswith(f"pyvmm boot: argument --timeout: {says}"), line


def test_the_longest_timeout_is_the_longest_alarm() -> None:
    """1e9 s (under 32 years) was refused; the real limit is the timer's."""
    assert build_parser().parse_args(["boot", "--timeout", "1e9", "x.bin"]).timeout == 1e9
    previous = signal.getitimer(signal.ITIMER_REAL)
    try:
        signal.setitimer(signal.ITIMER_REAL, MAX_TIMEOUT)  # taken...
        with pytest.raises(OverflowError):
            signal.setitimer(signal.ITIMER_REAL, MAX_TIMEOUT + 1)  # ... and one more is not
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--max-exits", "0"], "argument --max-exits: 0 is not positive"),
        (["--max-exits", "1e3"], "argument --max-exits: '1e3' is not a whole number of exits"),
        (["-smp", "two"], "argument -smp: 'two' is not a whole number of vCPUs"),
        (["-smp", "0"], "argument -smp: 0 is not positive: a machine needs at least one vCPU"),
        (["--load-addr", "-1"], "argument --load-addr: address '-1' is negative"),
        (["--load-addr", "high"], "argument --load-addr: 'high' is not an address"),
        (["--console-rate", "0"], "argument --console-rate: 0 is not positive"),
        (["--console-rate", "fast"], "argument --console-rate: 'fast' is not a number of bytes"),
        (["--console-rate", "1.5"], "argument --console-rate: '1.5' is not a whole number of"),
        # "buffer size '-1' must be 0..1G" did not say which end was wrong.
        (["--input-buffer", "-1"], "argument --input-buffer: '-1' is negative"),
        (["--input-buffer", "2G"], "argument --input-buffer: 2G is more than 1 GiB, the most"),
    ],
)
def test_other_refused_values_say_what_is_wrong(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal_line(["boot", *argv, "x.bin"], capsys)
    assert line.startswith(f"pyvmm boot: {says}"), line


def test_a_byte_count_in_b_is_bytes() -> None:
    """`--input-buffer 100B` was 100 MiB: a plain number is MiB for -m, and B was ignored."""
    args = build_parser().parse_args(["boot", "--input-buffer", "100B", "x.bin"])
    assert args.input_buffer == 100


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        # It was `pyvmm: unrecognized arguments: guests/hello.bin`, under no command's name.
        (["boot", "x.bin", "y.bin"],
         "pyvmm boot: unexpected argument y.bin: pyvmm boot takes one IMAGE (IMAGE is 'x.bin')"),
        (["memmap", "x.bin", "y", "z"],
         "pyvmm memmap: unexpected arguments y z: pyvmm memmap takes one IMAGE "
         "(IMAGE is 'x.bin')"),
        (["demo", "isolation", "now"],
         "pyvmm demo: unexpected argument now: pyvmm demo takes one NAME (NAME is 'isolation')"),
    ],
)  # fmt: skip
def test_a_leftover_argument_is_the_commands_usage_error(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal_line(argv, capsys) == line


@pytest.mark.parametrize("command", ["boot", "memmap", "demo"])
def test_every_see_in_a_help_names_a_section_of_that_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pyvmm memmap --help` said "(see image formats)", a section only boot's help had."""
    text = help_text([command], capsys)
    words = " ".join(text.split())
    for section in re.findall(r"\(see ([^)]+?)(?: below)?\)", words):
        if section.startswith("pyvmm "):  # another command's help, named as such
            continue
        assert re.search(rf"^{re.escape(section)}\b", text, re.MULTILINE), (command, section)


def test_boot_help_says_when_hlt_ends_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_text(["boot"], capsys).split())
    assert (
        "halted 0 no vCPU can run again: each executed HLT with interrupts off (IF=0) or "
        "waits for INIT/SIPI (with --kernel-irqchip off: the guest executed HLT)"
    ) in text


def test_demo_names_are_the_demos() -> None:
    """The parser lists the demos without importing them; the two lists must agree."""
    from pyvmm.cli.parser import DEMO_NAMES
    from pyvmm.demos import DEMOS

    assert list(DEMOS) == DEMO_NAMES
