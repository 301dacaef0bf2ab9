"""The command line a QEMU user meets, on real guests: habits run, ignored options don't exist."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import guest, run_pyvmm
from tests.integration.test_gdb_stub import run_with_gdb


def test_a_qemu_command_line_boots_as_it_is(tmp_path: Path) -> None:
    """What a hobby-kernel Makefile passes to qemu-system-x86_64, kernel aside."""
    result = run_pyvmm(
        "boot",
        "-nographic",
        "-enable-kvm",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-serial",
        "mon:stdio",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-m",
        "64M",
        guest("elf64.elf"),
    )
    assert result.returncode == 85, result.stderr  # the guest's own debug-exit status
    assert result.stderr == ""


def test_nographic_shows_no_screen_and_curses_shows_it() -> None:
    """QEMU -nographic shows no VGA screen: neither does pyvmm at the end (--vga none)."""
    shown = run_pyvmm("boot", guest("tests/vga_text.bin"))
    assert (shown.returncode, "Hello from the VGA text buffer" in shown.stderr) == (0, True)
    hidden = run_pyvmm("boot", "-nographic", guest("tests/vga_text.bin"))
    assert (hidden.returncode, hidden.stderr) == (0, "")
    curses = run_pyvmm("boot", "-display", "curses", guest("hello.bin"))
    assert (curses.returncode, curses.stdout) == (0, "Hello, world!\n")
    assert "VGA text screen, 80x25" in curses.stderr  # --vga text: shown even if unwritten


def test_kernel_gets_a_hint_not_a_run() -> None:
    result = run_pyvmm("boot", "-kernel", guest("hello.bin"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "pyvmm boot: -kernel is not a pyvmm option: give the image as the first argument "
        "(pyvmm boot [OPTIONS] IMAGE)\n"
    )


@pytest.mark.parametrize("image", ["hello.bin", "elf64.elf"])
def test_append_is_refused_for_an_image_without_a_command_line(image: str) -> None:
    result = run_pyvmm("boot", "--append", "console=ttyS0", guest(image))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "pyvmm: a kernel command line (--append) needs a multiboot or Linux kernel: the image "
        "has no multiboot header in its first 8 KiB and is no bzImage or vmlinux\n"
    )


def test_trace_kinds_before_the_image() -> None:
    """`--trace io IMAGE`, the form --help shows, used to take the kinds for the image."""
    result = run_pyvmm("boot", "--kernel-irqchip", "off", "--trace", "io", guest("hello.bin"))
    assert (result.returncode, result.stdout) == (0, "Hello, world!\n"), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 14 and all(" IO " in line for line in lines)  # no HLT line


def test_trace_file_alone_writes_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    result = run_pyvmm(
        "boot", "--trace-file", str(trace), "--trace-format", "json", guest("hello.bin")
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello, world!\n", "")
    reasons = [json.loads(line)["reason"] for line in trace.read_text().splitlines()]
    # KVM serves the hlt itself (the in-kernel irqchip): it is no exit.
    assert reasons == ["KVM_EXIT_IO"] * 14


def test_gdb_on_a_busy_port_is_a_usage_error(busy_port: int) -> None:
    result = run_pyvmm("boot", "--gdb", f"tcp::{busy_port}", guest("hello.bin"), timeout=30)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"pyvmm boot: --gdb tcp:127.0.0.1:{busy_port}: port {busy_port} is in use; "
        "choose another with --gdb tcp::PORT\n"
    )


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_stats_and_trace_see_a_run_under_gdb(tmp_path: Path) -> None:
    """--stats and --trace used to be dropped silently when --gdb drove the run."""
    trace = tmp_path / "trace.txt"
    _, status, out, err = run_with_gdb(
        ["-S", "--stats", "--trace=io", "--trace-file", str(trace), guest("hello.bin")],
        ["continue"],
        tmp_path,
    )
    assert (status, out) == (0, "Hello, world!\n"), err
    assert "exits: " in err and "port 0x03f8                        14" in err
    assert len(trace.read_text().splitlines()) == 14
