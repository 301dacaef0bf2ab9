"""Malformed images through the real command line: exit status 2 and one line, never a traceback.

The images come from the image fuzzer's builders (tests/fuzz/image_seeds.py):
truncated, bit-flipped and size-inflated flat, ELF and multiboot images.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuzz.image_formats import MB_SEARCH
from tests.fuzz.image_seeds import (
    CODE,
    DATA,
    DATA_GPA,
    KERNEL_GPA,
    Seg,
    build_aout,
    build_elf,
    build_multiboot_elf,
)
from tests.integration.helpers import GUESTS, REPO, guest, run_pyvmm

MIB = 1 << 20
GOOD = [Seg(KERNEL_GPA, CODE), Seg(DATA_GPA, DATA, memsz=0x2000)]


def committed(name: str, change: Callable[[bytearray], object]) -> bytes:
    image = bytearray((GUESTS / name).read_bytes())
    change(image)
    return bytes(image)


def flip(position: int, bit: int) -> Callable[[bytearray], object]:
    return lambda image: image.__setitem__(position, image[position] ^ 1 << bit)


# (id, image, extra options, what the one line must say)
CASES: list[tuple[str, bytes, list[str], str]] = [
    ("elf64-truncated", (GUESTS / "elf64.elf").read_bytes()[:40], [],
     "truncated ELF header: the file has 40 bytes, an ELF64 header needs 64"),
    ("elf32-class-bit-flipped", committed("elf32.elf", flip(4, 2)), [], "unknown ELF class 5"),
    ("elf64-phoff-bit-flipped", committed("elf64.elf", flip(33, 4)), [],
     "program headers at 0x1040 run past the end of the 472-byte file"),
    ("elf-overlapping-segments",
     build_elf(64, [Seg(KERNEL_GPA, CODE, memsz=0x2000), GOOD[1]], KERNEL_GPA), [],
     "segments 0 (0x100000..0x102000) and 1 (0x101000..0x103000) overlap in physical memory"),
    ("elf-segment-outside-ram", build_elf(32, [Seg(0x300_0000, CODE)], 0x300_0000), ["-m", "16M"],
     "segment 0 at 0x3000000..0x3000040 (64 bytes) does not fit in guest RAM "
     "(RAM ends at 0x1000000)"),
    ("elf-huge-p_memsz", build_elf(64, [GOOD[0], Seg(DATA_GPA, DATA, memsz=1 << 40)], KERNEL_GPA),
     [], "segment 1 at 0x101000..0x10000101000 (1 TiB) does not fit in guest RAM"),
    ("elf-p_filesz-over-p_memsz", build_elf(32, [Seg(KERNEL_GPA, CODE, memsz=16)], KERNEL_GPA), [],
     "segment 0 has p_filesz 0x40 larger than p_memsz 0x10"),
    ("elf-p_offset-past-eof", build_elf(64, [Seg(KERNEL_GPA, CODE, offset=0x10000)], KERNEL_GPA),
     [], "segment 0 data at 0x10000..0x10040 runs past the end of the 184-byte file"),
    ("elf-entry-outside-segments", build_elf(64, GOOD, 0x20_0000), [],
     "entry point 0x200000 is not inside any loaded segment (0x100000..0x100040, "
     "0x101000..0x103000)"),
    ("elf-phnum-huge", build_elf(32, GOOD, KERNEL_GPA, phnum=0xFFFF), [],
     "program headers at 0x34 run past the end of the"),
    ("elf-phentsize-wrong", build_elf(64, GOOD, KERNEL_GPA, phentsize=16), [],
     "program header entries of 16 bytes are smaller than the 56-byte ELF64 program header"),
    ("elf-on-the-firmware-tables", build_elf(64, [Seg(0xE_1000, CODE)], 0xE_1000), [],
     "segment 0 at 0xe1000..0xe1040 overlaps the firmware's ACPI tables at 0xe1000..0xe2000; "
     "link that segment at another physical address (its p_paddr)"),
    ("multiboot-bad-checksum", build_aout(checksum=0x1234_5678), ["--multiboot"],
     "no multiboot header: magic 0x1BADB002 with a valid checksum is not in the first 8 KiB"),
    ("multiboot-load-end-below-load", build_aout(load_end_addr=KERNEL_GPA - 0x1000), [],
     "load_end_addr 0xff000 is not above load_addr 0x100000"),
    ("multiboot-load-above-header", build_aout(header_addr=KERNEL_GPA - 0x10), [],
     "load_addr 0x100000 is above header_addr 0xffff0"),
    ("multiboot-bss-huge", build_aout(bss_end_addr=0xFFFF_FFFF), [],
     "kernel segment 0 at 0x100000..0xffffffff"),
    ("multiboot-header-past-8k", build_aout(header_offset=MB_SEARCH - 16), [],
     "the multiboot header at 0x1ff0..0x2010 runs past the first 8 KiB"),
    ("multiboot-elf-entry-outside", build_multiboot_elf(32, entry=0x30_0000), [],
     "entry point 0x300000 is not inside any loaded segment"),
    ("flat-inflated-past-ram", b"\xf4" * (3 * MIB // 2), ["-m", "2M", "--mode", "protected"],
     "image of 1.5 MiB at 0x100000 does not fit in guest RAM (needs 0x100000..0x280000, "
     "RAM ends at 0x200000)"),
    ("flat-larger-than-ram", b"\xf4" * (3 * MIB), ["-m", "2M", "--mode", "protected"],
     "is 3 MiB, larger than the 2 MiB of guest RAM: a flat binary (a file that is not ELF) "
     "is copied whole into RAM"),
    ("flat-real-mode-past-1m", b"\xf4" * MIB, [],
     "image at 0x7c00..0x107c00 runs past 1 MiB (0x100000), the real-mode limit"),
]  # fmt: skip


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvmm: "), result.stderr
    assert says in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("image", "options", "says"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])  # fmt: skip
def test_malformed_image_is_refused_in_one_line(
    tmp_path: Path, image: bytes, options: list[str], says: str
) -> None:
    path = tmp_path / "image"
    path.write_bytes(image)
    assert_one_line_refusal(run_pyvmm("boot", *options, str(path), timeout=30), says)


def test_empty_image(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert_one_line_refusal(run_pyvmm("boot", str(tmp_path / "empty")), "is empty")


def test_multiboot_kernel_with_a_non_utf8_path(tmp_path: Path) -> None:
    """The path is the command line's first word; a surrogate in it used to crash."""
    path = tmp_path / b"k\xff.elf".decode("utf-8", "surrogateescape")
    path.write_bytes((GUESTS / "multiboot.elf").read_bytes())
    assert_one_line_refusal(run_pyvmm("boot", str(path)), "is not valid UTF-8")


def test_boot_under_an_address_space_limit() -> None:
    """`ulimit -v 1G` leaves room for a small guest (reading the image once asked for 4 GiB)."""
    limit = 1 << 30

    def limit_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "pyvmm", "boot", "-m", "16M", guest("hello.bin")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_address_space,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello, world!\n", "")


# --- files judged before they are read (a fresh user's trial) ---------------------------------
# `pyvmm boot /dev/zero` read 8.4 GB in 22 s before it refused; a 2 GiB sparse flat file was
# read whole before "does not fit in guest RAM"; a FIFO with no writer hung silently.


def test_a_device_is_refused_unread() -> None:
    result = run_pyvmm("boot", "/dev/zero", timeout=30)
    assert_one_line_refusal(result, "image '/dev/zero' is a character device, not a file")
    assert result.returncode == 2


def test_a_fifo_without_a_writer_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "kernel.fifo"
    os.mkfifo(fifo)
    result = run_pyvmm("boot", str(fifo), timeout=30)  # it hung: TimeoutExpired
    assert_one_line_refusal(result, f"image '{fifo}' is a pipe (FIFO), not a file")


def test_a_flat_image_larger_than_ram_is_refused_with_both_sizes(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with image.open("wb") as sparse:
        sparse.truncate(2 << 30)  # sparse: no disk, and never read
    result = run_pyvmm("boot", str(image), timeout=30)
    assert_one_line_refusal(
        result,
        f"image '{image}' is 2 GiB, larger than the 128 MiB of guest RAM: a flat binary "
        "(a file that is not ELF) is copied whole into RAM",
    )


def test_a_module_is_named_a_module() -> None:
    result = run_pyvmm("boot", "-initrd", "/nonexistent", guest("multiboot.elf"))
    assert_one_line_refusal(result, "cannot read module '/nonexistent': No such file or directory")
    result = run_pyvmm("boot", "-initrd", "/dev/null", guest("multiboot.elf"))
    assert_one_line_refusal(result, "module '/dev/null' is a character device, not a file")


def test_a_template_guest_not_built_says_how_to_build_it(tmp_path: Path) -> None:
    """A fresh clone has guests/template's sources, not its binaries (they are git-ignored)."""
    shutil.copytree(GUESTS / "template", tmp_path / "guests" / "template",
                    ignore=shutil.ignore_patterns("*.bin", "*.elf", "*.o", "*.tmp"))  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pyvmm", "boot", "guests/template/boot.bin"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert_one_line_refusal(
        result,
        "image 'guests/template/boot.bin' is not built: run `make -C guests/template` "
        "(its sources are in guests/template)",
    )
