"""Every port a built machine's bus answers is in the README's machine table ("The machine").

The table lists ports and addresses in its first column ("0x3f8-0x3ff",
"0x60, 0x64"); a device put on the port I/O bus without a row there fails
here. (Devices KVM serves itself, the PICs and the PIT, are in the table
but not on pyvmm's bus.)
"""

from __future__ import annotations

import re

import pytest

import pyvmm
from tests.integration.helpers import REPO, guest

README = (REPO / "README.md").read_text()


def table_ports() -> list[tuple[int, int]]:
    """The [start, end] port and address ranges in the machine table's first column."""
    start = README.index("| ports / address | device |")
    rows = README[start:].split("\n\n", 1)[0].splitlines()[2:]
    ranges = []
    for row in rows:
        cell = row.split("|")[1]
        for first, last in re.findall(r"(0x[0-9a-f]+)(?:-(0x[0-9a-f]+))?", cell):
            ranges.append((int(first, 16), int(last or first, 16)))
    return ranges


@pytest.mark.parametrize("options", [{}, {"testdev": True}], ids=["default", "testdev"])
def test_every_port_on_the_bus_is_in_the_table(options: dict[str, object]) -> None:
    listed = table_ports()
    with pyvmm.create_machine(REPO / guest("hello.bin"), ram_size="16M", **options) as machine:
        ranges = machine.pio_bus.ranges
        assert ranges
        for each in ranges:
            last = each.base + each.length - 1
            assert any(first <= each.base and last <= end for first, end in listed), (
                f"{each.name} at ports 0x{each.base:x}-0x{last:x} is not in README's machine table"
            )


def test_the_boot_timer_has_its_row() -> None:
    assert (0x3F0, 0x3F0) in table_ports()
