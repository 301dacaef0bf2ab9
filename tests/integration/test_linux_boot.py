"""Linux's x86 boot protocol under KVM: synthetic kernels, the CLI's refusals, Debian's kernel.

The synthetic kernels (tests/fuzz/image_linux.py) check the 64-bit entry
state the way a kernel would rely on it (RSI, __BOOT_CS/__BOOT_DS, the
command line and the initrd the zero page points at) and report on the
debug-exit port. The tests marked `linux` boot Debian's stock cloud kernel,
its bzImage and the vmlinux inside it (tests/linux/kernels.py fetches them
with `apt-get download` into ~/.cache/pyvmm, never into the checkout), until
its first line, "Linux version ...", and its command line are on COM1.
"""

from __future__ import annotations

import io
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import pyvmm
from tests.fuzz.image_linux import build_bzimage, build_vmlinux, protocol_check_code
from tests.integration.helpers import REPO, run_pyvmm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tests.linux.kernels import Kernel

MIB = 1 << 20
PASSED = (0x2A << 1) | 1  # what the check code writes to the debug-exit port when all hold
INITRD = b"070701" + bytes(4090)


@pytest.fixture
def initrd(tmp_path: Path) -> str:
    path = tmp_path / "initrd.cpio"
    path.write_bytes(INITRD)
    return str(path)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "kernel",
    [
        build_bzimage(kernel=bytes(0x200) + protocol_check_code(), init_size=MIB),
        build_vmlinux(code=protocol_check_code(), paddr=2 * MIB, vaddr=0xFFFF_FFFF_8100_0000),
    ],
    ids=["bzimage", "vmlinux"],
)
def test_a_kernel_finds_the_64_bit_entry_state(tmp_path: Path, initrd: str, kernel: bytes) -> None:
    image = write(tmp_path, "kernel", kernel)
    result = run_pyvmm(
        "boot", image, "-m", "32M", "--append", "ok=1 console=ttyS0", "--initrd", initrd,
        "--timeout", "30",
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (PASSED, "L"), result.stderr


@pytest.mark.parametrize(
    ("kernel", "options", "words"),
    [
        (build_bzimage(version=0x020B), (), "boot protocol 2.11: pyvmm needs 2.12 or later"),
        (build_bzimage(xloadflags=0), (), "no 64-bit entry point (XLF_KERNEL_64"),
        (build_bzimage()[:0x240], (), "truncated bzImage: its setup header runs to 0x26c"),
        (build_bzimage(init_size=64 * MIB), ("-m", "8M"), "the kernel needs 64 MiB"),
        (build_bzimage(cmdline_size=8), ("--append", "console=ttyS0"), "13 bytes, more than"),
        (build_bzimage(), ("-m", "24M", "--initrd", "BIG"), "the initrd (16 MiB) does not fit"),
        (build_bzimage(), ("--initrd", "A,B"), "takes one initrd"),
        (build_bzimage(), ("--mode", "protected"), "long mode, not in protected mode"),
    ],
    ids=["old", "no-64", "truncated", "kernel-too-big", "cmdline", "initrd", "two", "mode"],
)
def test_a_kernel_pyvmm_cannot_boot_is_one_line_and_status_2(
    tmp_path: Path, kernel: bytes, options: tuple[str, ...], words: str
) -> None:
    image = write(tmp_path, "kernel", kernel)
    files = {"BIG": write(tmp_path, "big", bytes(16 * MIB))}
    files["A,B"] = ",".join(write(tmp_path, name, b"0707") for name in ("a", "b"))
    result = run_pyvmm("boot", image, *(files.get(option, option) for option in options))
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.startswith("pyvmm: ") and result.stderr.count("\n") == 1
    assert words in result.stderr


def test_format_flat_boots_a_bzimage_as_bytes(tmp_path: Path) -> None:
    """--format flat: the same file is a flat binary (its first byte is code in real mode)."""
    image = write(tmp_path, "kernel", b"\xb0\x07\xe6\xf4" + build_bzimage()[4:])
    as_linux = run_pyvmm("boot", image, "--timeout", "10")  # its kernel: hlt, interrupts off
    assert as_linux.returncode == 0, as_linux.stderr
    as_bytes = run_pyvmm("boot", "--format", "flat", image, "--timeout", "10")
    assert as_bytes.returncode == (7 << 1) | 1, as_bytes.stderr  # mov al, 7; out 0xf4, al


# --- Debian's stock kernel -------------------------------------------------------------------

# This host emulates all CPL0 code (kvm_pvm): the banner takes about 22 s of
# emulated boot from a vmlinux, and a bzImage's decompression about 125 s more
# (issue 15's figures; 14 s and 94 s were measured here).
VMLINUX_BANNER_SECONDS = 22
BANNER_SECONDS = VMLINUX_BANNER_SECONDS + 125
SLACK_SECONDS = 60


def stock_kernel() -> Kernel:
    """Debian's cloud kernel, bzImage and vmlinux (tests/linux/kernels.py: fetched once into
    the cache, outside the checkout); pytest.skip with its reason when apt cannot give it."""
    from tests.linux import debian, kernels

    try:
        return kernels.stock_kernel()
    except debian.PackageUnavailable as error:
        pytest.skip(f"cannot download {kernels.STOCK_PACKAGE}: {error}")


def first_lines(kernel: Path, limit: float) -> tuple[list[tuple[float, str]], str]:
    """COM1's lines with the seconds since start, up to the kernel's command line; stderr.

    pyvmm is stopped (SIGTERM) once the kernel has printed its command line,
    the line after its banner, or after `limit` seconds.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "boot", str(kernel),
         "--append", "console=ttyS0 earlyprintk=serial,ttyS0", "--timeout", str(limit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        errors="replace", cwd=REPO,
    )  # fmt: skip
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def read_lines() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put((time.monotonic() - started, line.rstrip("\n")))
        lines.put((time.monotonic() - started, ""))  # the end of its output

    threading.Thread(target=read_lines, daemon=True).start()
    seen: list[tuple[float, str]] = []
    try:
        while not seen or ("Command line:" not in seen[-1][1] and seen[-1][1]):
            seen.append(lines.get(timeout=limit + SLACK_SECONDS))
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=60)
    return seen, errors


@pytest.mark.linux
@pytest.mark.parametrize(
    ("kernel", "seconds"),
    [("bzimage", BANNER_SECONDS), ("vmlinux", VMLINUX_BANNER_SECONDS)],
)
def test_debian_s_cloud_kernel_prints_its_banner_on_com1(kernel: str, seconds: int) -> None:
    """The stock kernel through the 64-bit entry: its first lines reach COM1 in time.

    It goes no further here: the kernel's own boot on this host needs work
    other parts of pyvmm are doing (issue 15: the assist layer, the host
    probe).
    """
    seen, errors = first_lines(getattr(stock_kernel(), kernel), seconds + SLACK_SECONDS)
    shown = "\n".join(f"{at:6.1f} s  {line}" for at, line in seen) + "\n" + errors[-2000:]
    assert seen[0][1].startswith("[    0.000000] Linux version "), shown
    # The user's options first, then what this host needs (pyvmm host), if anything.
    assert "Command line: console=ttyS0 earlyprintk=serial,ttyS0" in seen[-1][1], shown
    assert seen[0][0] < seconds + SLACK_SECONDS, shown


def test_the_library_boots_a_linux_kernel_with_its_command_line_and_initrd() -> None:
    kernel = build_bzimage(kernel=bytes(0x200) + protocol_check_code(), init_size=MIB)
    output = io.BytesIO()
    with pyvmm.create_machine(
        kernel, ram_size="32M", console=output, append="ok=1", modules=[("initrd", INITRD)]
    ) as machine:
        outcome = machine.run(timeout=30)
    assert (outcome.exit_status, output.getvalue()) == (PASSED, b"L"), outcome.message
