"""Committed guest binaries are exactly what their sources build."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

GUESTS = Path(__file__).resolve().parents[2] / "guests"
TOOLS = ("make", "as", "ld", "objcopy", "gcc")
# Users build the template guests themselves (guests/template/Makefile); never committed.
TEMPLATE = Path("template")


def committed_images() -> set[Path]:
    return {
        path.relative_to(GUESTS)
        for path in GUESTS.rglob("*")
        if path.suffix in (".bin", ".elf")
        and path.is_file()
        and TEMPLATE not in path.relative_to(GUESTS).parents
    }


def test_every_image_has_its_source_beside_it() -> None:
    images = committed_images()
    assert Path("hello.bin") in images
    for image in images:
        assert (GUESTS / image).with_suffix(".s").is_file(), f"{image} has no source"


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in TOOLS), reason="GNU make, binutils or gcc not installed"
)
def test_rebuild_gives_the_same_bytes(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "-C", str(GUESTS), f"OUT={tmp_path}"], check=True, capture_output=True
    )
    built = {
        path.relative_to(tmp_path)
        for path in tmp_path.rglob("*")
        if path.suffix in (".bin", ".elf")
    }
    assert built == committed_images()
    for image in sorted(built):
        assert (tmp_path / image).read_bytes() == (GUESTS / image).read_bytes(), (
            f"guests/{image} differs from what its source builds: run make -C guests"
        )
