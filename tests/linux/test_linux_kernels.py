"""The real kernels and initramfs, fetched and built from Debian's packages (marked `linux`).

The first run downloads about 30 MB and builds the small kernel (minutes);
later runs find everything in the cache (see tests/linux/cache.py). A test is
skipped, with one line, only when apt cannot give it its package.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration.qemu import require_qemu
from tests.linux import bzimage, debian
from tests.linux.cpio import read_newc
from tests.linux.initramfs import (
    BOOT_TIMER_PORT,
    BOOT_TIMER_VALUE,
    DEFAULT_COMMANDS,
    MARKER,
    POWER_OFF_LINE,
    UP_LINE,
    build_initramfs,
    init_script,
)
from tests.linux.kernels import REPO, TINY_CONFIG, dropped_settings, stock_kernel, tiny_kernel

pytestmark = pytest.mark.linux

T = TypeVar("T")


def prepared(make: Callable[[], T]) -> T:
    try:
        return make()
    except debian.PackageUnavailable as error:
        pytest.skip(f"cannot download the package: {error}")


def test_stock_kernel_vmlinux_is_linux_elf64() -> None:
    kernel = prepared(stock_kernel)
    vmlinux = kernel.vmlinux.read_bytes()
    info = bzimage.check_linux_elf(vmlinux)
    assert info.entry == 0x1000000  # physical start of a 64-bit kernel (CONFIG_PHYSICAL_START)
    assert kernel.release.endswith("-cloud-amd64")
    image = kernel.bzimage.read_bytes()
    again = bzimage.extract_vmlinux(image)
    assert again.vmlinux == vmlinux
    assert again.header.kernel_version.startswith(kernel.release + " ")
    assert again.header.version >= 0x020C  # 64-bit entry (boot protocol 2.12)
    assert "CONFIG_KERNEL_" in kernel.config.read_text()


def test_busybox_initramfs() -> None:
    first = prepared(lambda: build_initramfs(DEFAULT_COMMANDS))
    again = build_initramfs(DEFAULT_COMMANDS)
    assert again.path == first.path and again.key == first.key
    members = {member.name: member for member in read_newc(first.path.read_bytes())}
    assert members["init"].data.decode() == init_script(DEFAULT_COMMANDS)
    busybox = members["bin/busybox"].data
    assert busybox[:4] == b"\x7fELF" and struct.unpack_from("<H", busybox, 18)[0] == 62
    for applet in ("bin/sh", "bin/mount", "bin/dd", "sbin/poweroff", "bin/cttyhack"):
        assert members[applet].data == b"/bin/busybox", applet
    other = build_initramfs(["true"], shell=True)
    assert other.key != first.key
    packed = build_initramfs(DEFAULT_COMMANDS, compress=True)
    assert packed.path.name.endswith(".cpio.gz") and packed.key != first.key
    assert gzip.decompress(packed.path.read_bytes()) == first.path.read_bytes()


def test_the_command_prepares_an_initramfs() -> None:
    """`python -m tests.linux.kernels --initramfs`: progress on stderr, paths on stdout."""
    prepared(lambda: build_initramfs(["echo from-the-command"]))  # skips without apt
    result = subprocess.run(
        [sys.executable, "-m", "tests.linux.kernels", "--initramfs", "--command",
         "echo from-the-command"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    path = Path(line.split()[1])
    assert line.startswith("initramfs ") and path.is_file()
    assert "echo from-the-command" in read_newc(path.read_bytes())[-1].data.decode()


def test_tiny_kernel_builds_from_the_kept_configuration() -> None:
    kernel = prepared(tiny_kernel)
    assert kernel.release.startswith("6.1")
    info = bzimage.check_linux_elf(kernel.vmlinux.read_bytes())
    config = kernel.config.read_text()
    assert dropped_settings(TINY_CONFIG.read_text(), config) == []
    for off in ("MODULES", "FTRACE", "DEBUG_INFO_BTF", "IMA", "MODULE_SIG", "SMP", "VT"):
        assert f"CONFIG_{off}=y" not in config, off
    image = kernel.bzimage.read_bytes()
    extracted = bzimage.extract_vmlinux(image)
    assert extracted.compression == "gzip"
    assert extracted.elf.entry == info.entry
    assert kernel.manifest["times"]["build_s"] > 0


@pytest.mark.parametrize(
    ("which", "image"),
    [("tiny", "bzimage"), ("tiny", "vmlinux"), ("stock", "bzimage"), ("stock", "vmlinux")],
)
def test_qemu_boots_it_to_the_commands_and_power_off(
    which: str, image: str, tmp_path: Path
) -> None:
    """The reference: QEMU (TCG, so not this host's KVM) boots each kernel with the initramfs.

    A vmlinux goes in through its PVH note. The machine is q35, which has no
    floppy controller at 0x3f0, so a debugcon device there records the boot
    timer's write.
    """
    kernel = prepared(tiny_kernel if which == "tiny" else stock_kernel)
    initramfs = prepared(lambda: build_initramfs(DEFAULT_COMMANDS))
    timer = tmp_path / "boot-timer"
    command = [
        require_qemu(), "-machine", "q35", "-accel", "tcg", "-m", "256M",
        "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", str(getattr(kernel, image)), "-initrd", str(initramfs.path),
        "-append", "console=ttyS0",
        "-chardev", f"file,id=timer,path={timer}",
        "-device", f"isa-debugcon,iobase={BOOT_TIMER_PORT:#x},chardev=timer",
    ]  # fmt: skip
    # A couple of seconds each here; a kernel that halts instead of powering
    # off would keep QEMU running until the timeout.
    result = subprocess.run(command, capture_output=True, timeout=120, check=False)
    output = result.stdout.decode(errors="replace").replace("\r", "")
    lines = output.splitlines()
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert UP_LINE in lines, output[-3000:]
    # In order, though the kernel's own messages may come between them.
    expected = [
        UP_LINE,
        f"{MARKER}: $ uname -r",
        kernel.release,
        f"{MARKER}: exit 0",
        f"{MARKER}: $ head -n 8 /proc/cpuinfo",
        f"{MARKER}: exit 0",
        POWER_OFF_LINE,
    ]
    position = 0
    for line in expected:
        assert line in lines[position:], f"no {line!r} after line {position}:\n{output[-3000:]}"
        position = lines.index(line, position) + 1
    assert any(line.startswith("processor") for line in lines), "no /proc/cpuinfo output"
    assert timer.read_bytes() == bytes([BOOT_TIMER_VALUE])
