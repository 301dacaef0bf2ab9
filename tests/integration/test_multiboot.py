"""Boot guests/multiboot.elf, a Multiboot (v1) ELF32 kernel, and check what it was told.

The guest prints the magic check, the command line, mem_lower/mem_upper, the
memory map, and each module's string and size (see guests/multiboot.s).
"""

from __future__ import annotations

import pytest

from tests.integration.helpers import GUESTS, guest, run_pyvmm

# The memory map and mem_* for -m 128M: RAM from 0 to 128 MiB, as a PC BIOS reports it.
MEMORY_128M = [
    "mem_lower=639KiB mem_upper=130048KiB",
    "mmap: base=0x0000000000000000 len=0x000000000009fc00 type=1",
    "mmap: base=0x000000000009fc00 len=0x0000000000000400 type=2",
    "mmap: base=0x00000000000e0000 len=0x0000000000001000 type=4",
    "mmap: base=0x00000000000e1000 len=0x0000000000001000 type=3",
    "mmap: base=0x00000000000f0000 len=0x0000000000010000 type=2",
    "mmap: base=0x0000000000100000 len=0x0000000007f00000 type=1",
]
# -m 5G: RAM stops at the 32-bit MMIO gap (0xd0000000) and the rest lies above 4 GiB.
MEMORY_5G = [
    "mem_lower=639KiB mem_upper=3406848KiB",
    "mmap: base=0x0000000000000000 len=0x000000000009fc00 type=1",
    "mmap: base=0x000000000009fc00 len=0x0000000000000400 type=2",
    "mmap: base=0x00000000000e0000 len=0x0000000000001000 type=4",
    "mmap: base=0x00000000000e1000 len=0x0000000000001000 type=3",
    "mmap: base=0x00000000000f0000 len=0x0000000000010000 type=2",
    "mmap: base=0x0000000000100000 len=0x00000000cff00000 type=1",
    "mmap: base=0x0000000100000000 len=0x0000000070000000 type=1",
]


def hello_size() -> int:
    return (GUESTS / "hello.bin").stat().st_size


def test_multiboot_kernel_is_detected_and_sees_the_memory_map() -> None:
    result = run_pyvmm("boot", "-m", "128M", guest("multiboot.elf"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "multiboot: magic ok"
    # Without --append, QEMU passes the kernel's path alone; before the CLI passes
    # a command line at all, it is empty.
    assert lines[1] == "cmdline: guests/multiboot.elf"  # QEMU passes the kernel path first
    assert lines[2:] == [*MEMORY_128M, "mods: 0"]


def test_multiboot_memory_map_above_4_gib() -> None:
    result = run_pyvmm("boot", "-m", "5G", guest("multiboot.elf"))
    if result.returncode == 2 and "more than this host" in result.stderr:
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [*MEMORY_5G, "mods: 0"]


def test_multiboot_cmdline_and_module() -> None:
    result = run_pyvmm(
        "boot",
        "-m",
        "128M",
        guest("multiboot.elf"),
        "--append",
        "console=ttyS0 debug",
        "--initrd",
        guest("hello.bin"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "multiboot: magic ok",
        "cmdline: guests/multiboot.elf console=ttyS0 debug",
        *MEMORY_128M,
        "mods: 1",
        f"module 0: guests/hello.bin 0x{hello_size():08x}",
    ]


def test_multiboot_two_modules() -> None:
    result = run_pyvmm(
        "boot",
        guest("multiboot.elf"),
        "--append",
        "a b",
        "--initrd",
        f"{guest('hello.bin')},{guest('elf32.elf')}",
    )
    assert result.returncode == 0, result.stderr
    elf32_size = (GUESTS / "elf32.elf").stat().st_size
    assert result.stdout.splitlines()[1] == "cmdline: guests/multiboot.elf a b"
    assert result.stdout.splitlines()[-3:] == [
        "mods: 2",
        f"module 0: guests/hello.bin 0x{hello_size():08x}",
        f"module 1: guests/elf32.elf 0x{elf32_size:08x}",
    ]


def test_forcing_multiboot_on_a_plain_elf_fails_in_one_line() -> None:
    result = run_pyvmm("boot", "--multiboot", guest("elf32.elf"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "no multiboot header" in result.stderr


def test_qemu_single_dash_spellings() -> None:
    result = run_pyvmm(
        "boot", "-append", "x y", "-initrd", "guests/hello.bin", "guests/multiboot.elf"
    )
    assert result.returncode == 0, result.stderr
    assert "cmdline: guests/multiboot.elf x y\n" in result.stdout
    assert "module 0: guests/hello.bin 0x0000001d\n" in result.stdout
