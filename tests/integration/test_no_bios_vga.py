"""Guests written for a PC with a BIOS and a screen: pyvmm says what they did.

A boot sector that prints through `int 0x10`, or writes to the VGA text
buffer, used to end silently (or run the IVT as code). Now the BIOS calls
are named, an exception with no handler ends the run with status 12, and the
VGA text screen is shown on stderr.
"""

from __future__ import annotations

import re

import pytest

from pyvmm.machine.outcome import EXIT_UNHANDLED_EXCEPTION
from tests.integration.helpers import GUESTS, guest, run_pyvmm

NO_BIOS = "pyvmm has no BIOS, the call did nothing; "
README = "(see 'Writing your own guest' in the README)"


def where(name: str, code: bytes, skip: int = 0) -> str:
    """CS:IP (CS=0) `skip` bytes into the first `code` of a boot sector loaded at 0x7c00."""
    offset = (GUESTS / name).read_bytes().index(code) + skip
    return f"0000:{0x7C00 + offset:04x}"


def frame(*rows: str, hidden: int) -> list[str]:
    """The framed screen `pyvmm boot` draws when stderr is not a terminal."""
    top = "┌─ VGA text screen, 80x25 " + "─" * 55 + "┐"
    note = f" {hidden} blank rows below not shown "
    bottom = "└─" + note + "─" * (79 - len(note)) + "┘"
    return [top, *(f"│{row:<80}│" for row in rows), bottom]


def test_bios_calls_are_named_where_and_how_often_and_the_guest_runs_on() -> None:
    result = run_pyvmm("boot", guest("tests/bios_teletype.bin"))
    assert result.returncode == 0, result.stderr  # it reached its hlt
    assert result.stdout == ""
    video = "write text to COM1 at port 0x3f8, or to the VGA text buffer at 0xb8000"
    first_int10 = where("tests/bios_teletype.bin", b"\xcd\x10")
    # mov $0x0e, %ah; xor %bx, %bx; int $0x10
    teletype = where("tests/bios_teletype.bin", b"\xb4\x0e\x31\xdb\xcd\x10", skip=4)
    printed = len("Hello from int 0x10\r\n")
    keyboard = where("tests/bios_teletype.bin", b"\xcd\x16")
    assert result.stderr.splitlines() == [
        f"pyvmm: int 0x10 AH=0x00 (set video mode) at {first_int10}, 1 time: "
        f"{NO_BIOS}{video} {README}",
        f"pyvmm: int 0x10 AH=0x0e (video teletype output) at {teletype}, "
        f"{printed} times: {NO_BIOS}{video} {README}",
        f"pyvmm: int 0x16 AH=0x00 (read keystroke) at {keyboard}, 1 time: "
        f"{NO_BIOS}read COM1 at port 0x3f8: pyvmm feeds it from stdin {README}",
    ]


def test_bios_calls_are_logged_as_they_happen_with_v() -> None:
    result = run_pyvmm("boot", "-v", guest("tests/bios_teletype.bin"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    logged = [line for line in lines if line.startswith("pyvmm: guest called int 0x10 AH=0x0e")]
    assert len(logged) == 1  # the first call of each kind, not every one
    assert logged[0].endswith(": pyvmm has no BIOS, it returned at once")
    assert lines.index(logged[0]) < next(
        index for index, line in enumerate(lines) if line.startswith("pyvmm: halted after")
    )
    assert any("no BIOS: 256 empty IVT vectors point at pyvmm's stubs" in line for line in lines)
    assert any(
        re.search(r"memory 0x0000f0000-0x0000f03ff vmm +no-BIOS stubs: out 0xe5", line)
        for line in lines
    )


def test_a_guest_with_its_own_handler_keeps_it_and_may_chain_to_the_stub() -> None:
    result = run_pyvmm("boot", guest("tests/own_ivt.bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from my own int 0x10\n"  # its handler, on COM1
    chained = where("tests/own_ivt.bin", b"\x2e\xff\x1e")  # lcall *%cs:old_int10
    assert result.stderr.splitlines() == [
        f"pyvmm: int 0x10 AH=0x00 (set video mode) at {chained}, 1 time: {NO_BIOS}"
        f"write text to COM1 at port 0x3f8, or to the VGA text buffer at 0xb8000 {README}"
    ]


def test_a_real_mode_exception_with_no_handler_ends_the_run() -> None:
    result = run_pyvmm("boot", "--timeout", "20", guest("tests/real_mode_fault.bin"))
    assert result.returncode == EXIT_UNHANDLED_EXCEPTION == 12, result.stderr
    assert result.stdout == "about to execute ud2\n"  # once: the guest did not run again
    ud2 = where("tests/real_mode_fault.bin", b"\x0f\x0b")
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"pyvmm: guest raised #UD (invalid opcode, vector 6) at {ud2} ('ud2') with no "
        "handler for it in its IVT: pyvmm has no BIOS (a BIOS's bare iret would run the "
        "instruction again, forever)"
    )
    assert f"RIP={int(ud2[5:], 16):016x}" in result.stderr  # the guest's, not the stub's
    assert "Traceback" not in result.stderr


VGA_TEXT_SCREEN = frame("Hello from the VGA text buffer", "", "╔═══╗", "║ ☺ ║", "╚═══╝", hidden=20)


@pytest.mark.parametrize("option", [(), ("--vga", "auto")])
def test_the_vga_text_screen_is_shown_when_the_guest_wrote_to_it(option: tuple[str, ...]) -> None:
    result = run_pyvmm("boot", *option, guest("tests/vga_text.bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "pyvmm: the guest wrote to the VGA text buffer at 0xb8000; the screen:",
        *VGA_TEXT_SCREEN,
    ]


def test_vga_none_shows_nothing() -> None:
    result = run_pyvmm("boot", "--vga", "none", guest("tests/vga_text.bin"))
    assert result.returncode == 0
    assert result.stderr == ""


def test_vga_auto_says_nothing_for_a_guest_that_left_the_screen_alone() -> None:
    result = run_pyvmm("boot", "--vga", "auto", guest("hello.bin"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello, world!\n", "")


def test_vga_text_always_shows_the_screen() -> None:
    result = run_pyvmm("boot", "--vga", "text", guest("hello.bin"))
    assert result.returncode == 0 and result.stdout == "Hello, world!\n"
    assert result.stderr.splitlines() == [
        "pyvmm: the VGA text screen at 0xb8000 (the guest did not write to it):",
        "┌─ VGA text screen, 80x25 (blank) " + "─" * 47 + "┐",
        "└" + "─" * 80 + "┘",
    ]


def test_the_screen_of_a_protected_mode_kernel_is_shown() -> None:
    result = run_pyvmm("boot", "--mode", "protected", guest("tests/vga32.bin"))
    assert result.returncode == 1, result.stderr  # debug-exit 0
    assert result.stderr.splitlines() == [
        "pyvmm: the guest wrote to the VGA text buffer at 0xb8000; the screen:",
        *frame("Hello from 32-bit protected mode", "bye", hidden=23),
    ]


def test_v_says_how_the_vga_text_buffer_is_watched() -> None:
    result = run_pyvmm("boot", "-v", guest("tests/vga_text.bin"))
    assert result.returncode == 0
    assert re.search(
        r"^pyvmm: VGA text buffer at 0xb8000: written by the guest \(watched by .+\)$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    assert re.search(
        r"^pyvmm: memory 0x0000b8000-0x0000b8fff vga +VGA text buffer \(RAM\), KVM slot \d+",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    quiet = run_pyvmm("boot", "-v", "--vga", "none", guest("tests/vga_text.bin"))
    assert "VGA" not in quiet.stderr


def test_help_documents_the_status_and_the_option() -> None:
    result = run_pyvmm("boot", "--help")
    assert result.returncode == 0
    assert re.search(r"unhandled-exception\s+12\s", result.stdout), result.stdout
    assert "--vga {auto,text,none}" in result.stdout


def test_an_irq_at_an_empty_vector_is_acknowledged_not_taken_for_an_exception() -> None:
    """IRQ 4 arrives at vector 0x0c, #SS's too: the PIC's in-service bit says it is the IRQ."""
    result = run_pyvmm("boot", guest("tests/irq_no_handler.bin"))
    assert (result.returncode, result.stdout) == ((0x10 << 1) | 1, "survived the interrupt\n")
    assert result.stderr.startswith(
        "pyvmm: IRQ 4 (vector 0x0c), with no handler in the IVT, interrupted the guest at "
    ), result.stderr
    assert "sent the PIC its EOI" in result.stderr and "#SS" not in result.stderr
