from __future__ import annotations

import pytest

from pyvmm.errors import UsageError
from pyvmm.memory.size import format_size, parse_memory_size, parse_ram_size


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


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (1, "1 byte"),
        (300, "300 bytes"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (5 << 20, "5 MiB"),
        (1 << 40, "1 TiB"),  # was "1024 GiB"
        (100 << 40, "100 TiB"),  # -m 100T was "104857600 MiB"
        ((1 << 20) - 1, "1023.9 KiB"),  # cut, never rounded up to the next unit
        (24105 << 20, "23.5 GiB"),
    ],
)
def test_one_size_formatter_for_every_message(size: int, text: str) -> None:
    assert format_size(size) == text


def test_the_loaders_use_the_same_formatter() -> None:
    from pyvmm.loaders import flat

    assert flat.format_size is format_size


def test_qemu_size_spelling_and_no_hotplug() -> None:
    assert parse_ram_size("size=64M") == 64 << 20
    with pytest.raises(UsageError, match="no memory hotplug"):
        parse_ram_size("1G,slots=2,maxmem=4G")
