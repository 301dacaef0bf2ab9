"""Loader bugs found by the image fuzzer (tests/fuzz/image_fuzz.py), one minimal case each.

1. A multiboot command line or module string that is not valid UTF-8 (Python
   decodes such a path or argument with lone surrogates) crashed the
   information builder with UnicodeEncodeError instead of a LoaderError.
2. read_image asked read() for the whole 4 GiB cap at once, which allocates
   4 GiB up front: any image, even 29 bytes, failed with MemoryError under
   `ulimit -v`, and a host that does not overcommit could not boot at all.
   A host that truly cannot hold an image now gets a one-line ImageTooLarge.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyvmm.loaders as loaders
from pyvmm.arch.x86_64.placement import reserved_ranges
from pyvmm.errors import ImageTooLarge, LoaderError
from pyvmm.loaders import EntryPoint, load_image, read_image
from pyvmm.loaders.entry import CpuMode
from pyvmm.loaders.multiboot import BadMultiboot
from pyvmm.memory.guest_memory import GuestMemory

RAM_SIZE = 2 << 20
FILL = 0xAA
REPO = Path(__file__).resolve().parents[2]

# A multiboot kernel with address fields: header at 0x100000, entered just after it.
MB_MAGIC, MB_FLAGS = 0x1BADB002, 0x1_0003
AOUT_KERNEL = struct.pack(
    "<8I",
    MB_MAGIC,
    MB_FLAGS,
    -(MB_MAGIC + MB_FLAGS) & 0xFFFF_FFFF,
    0x10_0000,  # header_addr
    0x10_0000,  # load_addr
    0,  # load_end_addr: the whole file
    0,  # bss_end_addr: none
    0x10_0020,  # entry_addr
) + bytes.fromhex("f4ebfd")


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory.from_ranges([(0, RAM_SIZE)]) as guest_memory:
        guest_memory.fill(0, RAM_SIZE, FILL)
        yield guest_memory


def load_multiboot_kernel(memory: GuestMemory, cmdline: str, modules: Any = ()) -> EntryPoint:
    return load_image(
        AOUT_KERNEL,
        memory,
        mode=None,
        load_gpa=None,
        default_flat_gpa=lambda mode: 0x7C00,
        cmdline=cmdline,
        modules=modules,
        reserved=reserved_ranges(CpuMode.PROTECTED),
    )


# --- 1. non-UTF-8 multiboot strings ---------------------------------------------------


def test_multiboot_kernel_itself_loads(memory: GuestMemory) -> None:
    assert load_multiboot_kernel(memory, "kernel \u00e9").entry == 0x10_0020


def test_multiboot_command_line_not_utf8_is_refused(memory: GuestMemory) -> None:
    # What `pyvmm boot $'k\xff.elf'` makes of the kernel path under a UTF-8 locale.
    path = b"k\xff.elf".decode("utf-8", "surrogateescape")
    with pytest.raises(BadMultiboot) as error:
        load_multiboot_kernel(memory, f"{path} console=ttyS0")
    assert str(error.value) == (
        "the multiboot command line 'k\\udcff.elf console=ttyS0' is not valid UTF-8 "
        "(a file name or argument in another encoding?)"
    )
    assert error.value.exit_status == 2
    assert memory.read(0, RAM_SIZE) == bytes([FILL]) * RAM_SIZE


def test_multiboot_module_string_not_utf8_is_refused(memory: GuestMemory) -> None:
    with pytest.raises(BadMultiboot, match=r"^the multiboot module 1 string 'm\\udcff' is not"):
        load_multiboot_kernel(memory, "kernel", [("ok", b"1"), ("m\udcff", b"2")])
    assert memory.read(0, RAM_SIZE) == bytes([FILL]) * RAM_SIZE


# --- 2. read_image and host memory ----------------------------------------------------


@pytest.fixture
def read_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every read() read_image makes, through a spying open()."""
    sizes: list[int] = []

    class Spy(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            sizes.append(-1 if size is None else size)
            return super().read(size)

    monkeypatch.setattr(
        loaders, "open", lambda name, mode, **_: Spy(io.FileIO(name)), raising=False
    )
    return sizes


def test_read_image_asks_for_the_file_size_not_the_cap(
    read_sizes: list[int], tmp_path: Path
) -> None:
    path = tmp_path / "guest.bin"
    path.write_bytes(b"\xf4" * 29)
    assert read_image(str(path)) == b"\xf4" * 29
    assert read_sizes == [30]  # the size and one byte more, which finds the end


def test_read_image_reads_a_file_without_a_size_in_chunks(
    read_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A procfs file announces size 0: it is read piecewise up to the cap, never all at once.

    (This test read /dev/zero before devices were refused unread.)
    """
    monkeypatch.setattr(loaders, "MAX_IMAGE_SIZE", 64)
    with pytest.raises(ImageTooLarge, match="larger than the 64 bytes limit"):
        read_image("/proc/self/maps")
    assert read_sizes[0] == 1 and 0 < max(read_sizes) <= 1 << 20


def test_read_image_reads_under_an_address_space_limit(tmp_path: Path) -> None:
    """Under `ulimit -v 1G`, a small image reads (it used to raise MemoryError)."""
    path = tmp_path / "guest.bin"
    path.write_bytes(b"\xf4")
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from pyvmm.loaders import read_image\n"
        "print(len(read_image(sys.argv[1])))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "1\n", "")


class HostOutOfMemory(io.BufferedReader):
    def read(self, size: int | None = -1) -> bytes:
        raise MemoryError


def test_image_the_host_cannot_hold_is_a_loader_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "big.img"
    path.write_bytes(bytes(3000))
    monkeypatch.setattr(
        loaders, "open", lambda name, mode, **_: HostOutOfMemory(io.FileIO(name)), raising=False
    )
    with pytest.raises(ImageTooLarge) as error:
        read_image(str(path))
    assert str(error.value) == f"image {str(path)!r} (2.9 KiB) does not fit in this host's memory"
    assert isinstance(error.value, LoaderError) and error.value.exit_status == 2
