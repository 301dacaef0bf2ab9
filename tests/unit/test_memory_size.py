from __future__ import annotations

import pytest

from pyvmm.errors import UsageError
from pyvmm.memory.size import parse_memory_size, parse_ram_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("512", 512 << 20),
        ("2048k", 2 << 20),
        ("1.5G", 3 << 29),
        ("64MiB", 64 << 20),
        ("1T", 1 << 40),
    ],
)
def test_sizes_like_qemu(text: str, size: int) -> None:
    assert parse_memory_size(text) == size


@pytest.mark.parametrize(
    ("text", "size"), [("2049K", 2052 << 10), ("1K", 4096), ("64M", 64 << 20), ("0.5K", 4096)]
)
def test_ram_size_is_rounded_up_to_whole_pages_as_qemu_does(text: str, size: int) -> None:
    assert parse_ram_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "lots", "12X", "1e3M", "0.0000001K"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError):
        parse_memory_size(text)
