"""The VGA text screen: CP437, trimming, the frame and the ANSI colours, from 4000 bytes."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace
from typing import Any

import pytest

from pyvmm.cli.report import LegacyPcReport, collect_legacy_pc, report_legacy_pc
from pyvmm.devices.vga_text import (
    COLUMNS,
    CP437,
    ROWS,
    SCREEN_SIZE,
    cells,
    render,
    sgr,
    shown_rows,
    text_lines,
)

SGR = re.compile(r"\x1b\[[0-9;]*m")


def screen_with(*writes: tuple[int, int, bytes, int]) -> bytes:
    """A blank screen with `text` at (row, column) in `attribute`, for each write."""
    screen = bytearray(SCREEN_SIZE)
    for row, column, text, attribute in writes:
        start = (row * COLUMNS + column) * 2
        for index, code in enumerate(text):
            screen[start + 2 * index] = code
            screen[start + 2 * index + 1] = attribute
    return bytes(screen)


def test_cp437_maps_every_code_to_one_character() -> None:
    assert len(CP437) == 256 and all(len(character) == 1 for character in CP437)
    assert CP437[0x41] == "A" and CP437[0x7E] == "~"
    # The glyphs the VGA draws, not control codes or Latin-1.
    assert (CP437[0x01], CP437[0x03], CP437[0x0D], CP437[0x1A]) == ("☺", "♥", "♪", "→")
    assert (CP437[0x7F], CP437[0x80], CP437[0x82], CP437[0xE1]) == ("⌂", "Ç", "é", "ß")
    assert (CP437[0xB0], CP437[0xC9], CP437[0xCD], CP437[0xDB]) == ("░", "╔", "═", "█")
    assert CP437[0x00] == CP437[0x20] == CP437[0xFF] == " "


def test_cells_are_character_then_attribute_row_by_row() -> None:
    grid = cells(screen_with((1, 2, b"A", 0x1E)))
    assert len(grid) == ROWS and all(len(row) == COLUMNS for row in grid)
    assert grid[1][2] == (0x41, 0x1E) and grid[0][0] == (0, 0)


def test_a_buffer_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="4000 bytes"):
        cells(bytes(3999))


def test_trailing_blank_rows_are_cut_and_leading_ones_kept() -> None:
    screen = screen_with((2, 0, b"x", 0x07), (4, 79, b"\x20", 0x70))  # row 4: a blank cell
    assert len(shown_rows(screen)) == 3
    assert text_lines(screen) == ["", "", "x"]
    assert shown_rows(bytes(SCREEN_SIZE)) == []


def test_render_frames_the_shown_rows() -> None:
    screen = screen_with((0, 0, b"Hello", 0x0A), (2, 3, b"\xc9\xcd\xbb", 0x1E))
    lines = render(screen).splitlines()
    assert lines[0].startswith("┌─ VGA text screen, 80x25 ") and lines[0].endswith("┐")
    assert lines[1] == "│Hello" + " " * 75 + "│"
    assert lines[3] == "│   ╔═╗" + " " * 74 + "│"
    assert lines[-1].startswith("└─ 22 blank rows below not shown ") and lines[-1].endswith("┘")
    assert len(lines) == 5 and {len(line) for line in lines} == {COLUMNS + 2}
    assert "\x1b" not in render(screen)


def test_a_blank_screen_is_a_frame_that_says_so() -> None:
    lines = render(bytes(SCREEN_SIZE)).splitlines()
    assert len(lines) == 2 and "(blank)" in lines[0]


def test_a_full_screen_has_no_note() -> None:
    lines = render(bytes([0x41, 0x07]) * (SCREEN_SIZE // 2)).splitlines()
    assert len(lines) == ROWS + 2 and set(lines[-1][1:-1]) == {"─"}


def test_ascii_only_for_streams_that_cannot_encode_unicode() -> None:
    screen = screen_with((0, 0, b"ok \x01\xc9", 0x07))
    text = render(screen, ascii_only=True)
    text.encode("ascii")
    assert text.splitlines()[1].startswith("|ok ??   ")


@pytest.mark.parametrize(
    ("attribute", "codes"),
    [
        (0x07, "0;37;40"),  # light grey on black, the BIOS's default
        (0x0A, "0;92;40"),  # light green on black
        (0x1E, "0;93;44"),  # yellow (bright brown) on blue
        (0x4F, "0;97;41"),  # white on red
        (0x31, "0;34;46"),  # blue on cyan
        (0x96, "0;33;44"),  # blink bit ignored: brown on blue
    ],
)
def test_attributes_map_to_ansi_colours(attribute: int, codes: str) -> None:
    assert sgr(attribute) == f"\x1b[{codes}m"


def test_attribute_zero_is_the_terminals_own_colours() -> None:
    assert sgr(0) == "\x1b[0m"


def test_colour_render_changes_colour_only_where_the_attribute_does() -> None:
    screen = screen_with((0, 0, b"ab", 0x0A), (0, 2, b"c", 0x1E))
    row = render(screen, color=True).splitlines()[1]
    assert row.startswith("│\x1b[0;92;40mab\x1b[0;93;44mc\x1b[0m")
    assert SGR.sub("", row) == render(screen).splitlines()[1]


def test_report_prints_the_bios_lines_then_the_screen() -> None:
    out = io.StringIO()
    screen = screen_with((0, 0, b"hi", 0x07))
    report_legacy_pc(LegacyPcReport(("int 0x10 AH=0x0e ...",), screen, True), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "pyvmm: int 0x10 AH=0x0e ..."
    assert lines[1] == "pyvmm: the guest wrote to the VGA text buffer at 0xb8000; the screen:"
    assert lines[3].startswith("│hi ") and "\x1b" not in out.getvalue()  # not a terminal


def test_report_falls_back_to_ascii_where_the_stream_cannot_encode_the_frame() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    report_legacy_pc(LegacyPcReport((), screen_with((0, 0, b"\x01", 0x07)), False), out)
    lines = raw.getvalue().decode("ascii").splitlines()
    assert lines[0] == "pyvmm: the VGA text screen at 0xb8000 (the guest did not write to it):"
    assert lines[1].startswith("+- VGA text screen") and lines[2].startswith("|? ")


def test_report_without_a_screen_prints_only_the_bios_lines() -> None:
    out = io.StringIO()
    report_legacy_pc(LegacyPcReport(), out)
    assert out.getvalue() == ""


class FakeWatch:
    """A VgaTextWatch's interface over a fixed screen."""

    def __init__(self, screen: bytes, written: bool) -> None:
        self._screen, self._written = screen, written
        self.method = "by a test"

    def written(self) -> bool:
        return self._written

    def screen(self) -> bytes:
        return self._screen


@pytest.mark.parametrize(
    ("vga", "written", "shown"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("text", False, True),
        ("text", True, True),
        ("none", True, False),
    ],
)
def test_the_screen_is_collected_as_vga_says(vga: str, written: bool, shown: bool) -> None:
    screen = screen_with((0, 0, b"hi", 0x07))
    machine: Any = SimpleNamespace(no_bios=None, vga_text=FakeWatch(screen, written))
    report = collect_legacy_pc(machine, vga)
    assert report.screen == (screen if shown else None)
    assert report.bios_lines == ()


def test_the_bios_calls_are_collected_one_line_per_kind() -> None:
    from pyvmm.arch.x86_64.no_bios import BiosCall

    trap = SimpleNamespace(
        calls={(0x10, 0x0E): BiosCall("int 0x10 AH=0x0e (video teletype output)", 0x10, "0:1", 2)},
        uncounted=3,
    )
    machine: Any = SimpleNamespace(no_bios=trap, vga_text=None)
    lines = collect_legacy_pc(machine, "auto").bios_lines
    assert len(lines) == 2 and lines[0].startswith("int 0x10 AH=0x0e (video teletype output) at")
    assert lines[1] == "and 3 more calls, of kinds past the first 64"


def test_the_high_half_of_the_glyph_table_is_code_page_437() -> None:
    from pyvmm.devices.vga_text import CP437

    assert len(CP437) == 256
    assert CP437[0x80:0xFF] == bytes(range(0x80, 0xFF)).decode("cp437")
