"""The VGA text screen: 80x25 cells of (CP437 character, attribute), drawn for a terminal.

In colour text mode (BIOS mode 3) the screen is 2000 cells of two bytes: the
character's code in code page 437, then its attribute: foreground colour in
bits 0-3 (bit 3: bright), background in bits 4-6, blink in bit 7 (IBM VGA
Technical Reference, "Attribute Controller"; the buffer is at 0xb8000, see
`pyvmm.arch.x86_64.layout`). Everything here is a pure function of those
4000 bytes; where they come from is the machine's business.
"""

from __future__ import annotations

COLUMNS = 80
ROWS = 25
CELL_SIZE = 2
SCREEN_SIZE = COLUMNS * ROWS * CELL_SIZE  # 4000 bytes

# Code page 437 as the VGA's character generator draws it: 0x01-0x1f and 0x7f
# are glyphs, not control codes (the mapping of the Unicode Consortium's
# cp437_DOSLatinUS table with the IBM PC glyphs for the control range).
_CONTROL_GLYPHS = "☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
CP437 = (
    " "
    + _CONTROL_GLYPHS
    + bytes(range(0x20, 0x7F)).decode("ascii")
    + "⌂"
    # 0x80-0xfe as Python's cp437 codec decodes them (spelled out: importing the
    # codec costs more at start-up than the table; tests/unit/test_vga_text.py checks it)
    + "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐"
    "└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■"
    + " "  # 0xff is a non-breaking space: a plain one keeps columns aligned
)
# Codes that draw nothing: NUL, space and 0xff.
BLANK_CODES = frozenset({0x00, 0x20, 0xFF})

# VGA colour number -> ANSI colour number (SGR 30-37/90-97, 40-47): the VGA
# order is black, blue, green, cyan, red, magenta, brown, grey; ANSI swaps
# blue and red, cyan and yellow.
_ANSI_OF_VGA = (0, 4, 2, 6, 1, 5, 3, 7)
SGR_RESET = "\x1b[0m"


def cells(screen: bytes) -> list[list[tuple[int, int]]]:
    """The ROWS x COLUMNS grid of (character code, attribute) of a SCREEN_SIZE-byte buffer.

    Raises ValueError if `screen` is not SCREEN_SIZE bytes.
    """
    if len(screen) != SCREEN_SIZE:
        raise ValueError(f"a VGA text screen is {SCREEN_SIZE} bytes, not {len(screen)}")
    row_size = COLUMNS * CELL_SIZE
    return [
        [(screen[start + column * 2], screen[start + column * 2 + 1]) for column in range(COLUMNS)]
        for start in range(0, SCREEN_SIZE, row_size)
    ]


def is_blank_row(row: list[tuple[int, int]]) -> bool:
    return all(code in BLANK_CODES for code, _ in row)


def shown_rows(screen: bytes) -> list[list[tuple[int, int]]]:
    """The rows down to the last one that shows a character (trailing blank rows cut)."""
    rows = cells(screen)
    while rows and is_blank_row(rows[-1]):
        rows.pop()
    return rows


def text_lines(screen: bytes) -> list[str]:
    """The shown rows as Unicode text, trailing spaces removed (for tests and logs)."""
    return ["".join(CP437[code] for code, _ in row).rstrip() for row in shown_rows(screen)]


def sgr(attribute: int) -> str:
    """The ANSI SGR sequence for a VGA attribute; 0 (black on black) is the terminal's
    own colours, as in QEMU's curses display. Blink (bit 7) is not drawn."""
    if attribute == 0:
        return SGR_RESET
    foreground = attribute & 0x7
    bright = attribute & 0x8
    background = (attribute >> 4) & 0x7
    fg_code = (90 if bright else 30) + _ANSI_OF_VGA[foreground]
    return f"\x1b[0;{fg_code};{40 + _ANSI_OF_VGA[background]}m"


def render(screen: bytes, color: bool = False, ascii_only: bool = False) -> str:
    """The screen in a frame, one line per shown row, ending with a newline.

    `color`: attributes as ANSI colours (only for a terminal). `ascii_only`:
    the frame in ASCII and every character outside printable ASCII as '?',
    for a stream that cannot encode Unicode. Raises ValueError for a buffer
    of the wrong size.
    """
    rows = shown_rows(screen)
    hidden = ROWS - len(rows)
    horizontal, vertical, corners = ("-", "|", "++++") if ascii_only else ("─", "│", "┌┐└┘")
    title = f" VGA text screen, {COLUMNS}x{ROWS} "
    if not rows:
        title += "(blank) "
    top = corners[0] + horizontal + title + horizontal * (COLUMNS - 1 - len(title)) + corners[1]
    note = f" {hidden} blank rows below not shown " if rows and hidden else ""
    bottom = corners[2] + horizontal + note + horizontal * (COLUMNS - 1 - len(note)) + corners[3]
    lines = [top]
    for row in rows:
        lines.append(vertical + _draw_row(row, color, ascii_only) + vertical)
    lines.append(bottom)
    return "\n".join(lines) + "\n"


def _draw_row(row: list[tuple[int, int]], color: bool, ascii_only: bool) -> str:
    parts: list[str] = []
    current = None
    for code, attribute in row:
        if color and attribute != current:
            parts.append(sgr(attribute))
            current = attribute
        character = CP437[code]
        if ascii_only and not (0x20 <= ord(character) < 0x7F):
            character = " " if code in BLANK_CODES else "?"
        parts.append(character)
    if color and current != 0:
        parts.append(SGR_RESET)
    return "".join(parts)
