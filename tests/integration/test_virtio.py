"""virtio devices under a real guest: guests/virtio/virtio.elf, pyvmm's own driver.

The driver (freestanding C, Virtio 1.2) finds each device by probing the
virtio-mmio windows, negotiates VIRTIO_F_VERSION_1, and uses split virtqueues:
it writes through virtio-console, reads and writes a disk image the host then
checks, reads entropy, and gives memory back through the balloon, whose
released pages must leave the VMM's resident memory.
"""

from __future__ import annotations

import re
from pathlib import Path

from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind
from tests.integration.helpers import REPO, guest, run_pyvmm

DRIVER = REPO / "guests" / "virtio" / "virtio.elf"
SUCCESS = (0x10 << 1) | 1  # debug-exit 0x10
SECTOR = 512
MIB = 1 << 20


def disk(tmp_path: Path) -> Path:
    image = tmp_path / "disk.img"
    image.write_bytes(b"pyvmm test disk\n".ljust(SECTOR, b"\0") + bytes(2047 * SECTOR))
    return image


def test_the_driver_uses_every_device_and_the_disk_write_lands(tmp_path: Path) -> None:
    image = disk(tmp_path)
    result = run_pyvmm(
        "boot", "--console", "virtio", "--drive", f"file={image}", "--virtio-rng", "--balloon",
        "--append", "console blk rng balloon=8", guest("virtio/virtio.elf"),
    )  # fmt: skip
    assert result.returncode == SUCCESS, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for kind, base in (("console", 0), ("block", 0x200), ("entropy", 0x400), ("balloon", 0x600)):
        assert f"virtio: found {kind} at 0x{0xFEB00000 + base:08x}" in lines
    assert "hello through virtio-console" in lines  # through the virtio-console's transmitq
    assert "blk: capacity 2048 sectors" in lines
    assert "blk: sector 0: 70 79 76 6d 6d 20 74 65 73 74 20 64 69 73 6b 0a" in lines
    assert "blk: ok" in lines and "rng: ok" in lines
    assert re.search(r"^rng: [0-9a-f]{32}$", result.stdout, re.MULTILINE)
    assert "balloon: inflated 8 MiB" in lines and "balloon: reported 8 MiB" in lines
    sector = image.read_bytes()[SECTOR : 2 * SECTOR]
    assert sector == b"pyvmm virtio-blk sector 1\n".ljust(SECTOR, b"\0")


def test_a_read_only_drive_refuses_the_write(tmp_path: Path) -> None:
    image = disk(tmp_path)
    before = image.read_bytes()
    result = run_pyvmm(
        "boot", "--drive", f"file={image},readonly=on", "--append", "blk",
        guest("virtio/virtio.elf"),
    )  # fmt: skip
    assert result.returncode == SUCCESS, result.stdout + result.stderr
    assert "blk: read-only: write refused (IOERR)" in result.stdout.splitlines()
    assert image.read_bytes() == before


def test_a_missing_device_is_the_drivers_failure_not_a_hang() -> None:
    result = run_pyvmm("boot", "--append", "blk", guest("virtio/virtio.elf"), timeout=60)
    assert result.returncode == (0x11 << 1) | 1, result.stdout + result.stderr
    assert "blk: FAILED (no working device)" in result.stdout


def test_verbose_lists_the_transports_and_bad_drives_are_one_line(tmp_path: Path) -> None:
    image = disk(tmp_path)
    result = run_pyvmm(
        "boot", "-v", "--drive", f"file={image},readonly=on", guest("hello.bin"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "virtio-mmio block at 0xfeb00200, GSI 6" in result.stderr
    assert f"virtio-blk: {image}, 2048 sectors of 512 bytes, read-only" in result.stderr
    bad = run_pyvmm("boot", "--drive", "file=x.img,format=qcow2", guest("hello.bin"))
    assert (bad.returncode, bad.stderr) == (
        2, "pyvmm boot: --drive file=x.img,format=qcow2: only format=raw (a plain disk image)\n"
    )  # fmt: skip


def guest_ram_rss(hva: int) -> int:
    """Resident bytes of the mapping at `hva` (this process's /proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            start, end = (int(part, 16) for part in fields[0].split("-"))
            inside = start <= hva < end
        elif inside and fields[0] == "Rss:":
            return int(fields[1]) * 1024
    raise AssertionError(f"no mapping at 0x{hva:x}")


def run_driver(arguments: str) -> tuple[int, int]:
    """(resident bytes of guest RAM after the run, pages the balloon released)."""
    config = MachineConfig(
        image=DRIVER.read_bytes(), ram_size=128 * MIB, console=lambda data: None,
        cmdline=f"virtio.elf {arguments}", balloon=True,
    )  # fmt: skip
    with build_machine(config) as machine:
        outcome = machine.run(timeout=120)
        assert (outcome.kind, outcome.exit_status) == (OutcomeKind.DEBUG_EXIT, SUCCESS), outcome
        [balloon] = machine.virtio
        return guest_ram_rss(machine.memory.mapping.hva), balloon.device.released_pages


def test_the_balloon_gives_the_pages_back_to_the_host() -> None:
    used, released = run_driver("touch=64")
    assert released == 0 and used >= 64 * MIB
    after, released = run_driver("touch=64 balloon=64")
    released_bytes = released * 4096
    assert released_bytes >= 64 * MIB  # inflated and then reported: both released
    assert used - after >= 0.8 * 64 * MIB, (used, after)


def test_qemus_drive_spelling_and_one_disk_only(tmp_path: Path) -> None:
    image = disk(tmp_path)
    qemu = run_pyvmm(
        "boot", "-drive", f"file={image},if=virtio", "--append", "blk", guest("virtio/virtio.elf")
    )
    assert qemu.returncode == SUCCESS, qemu.stdout + qemu.stderr
    assert "blk: ok" in qemu.stdout.splitlines()
    ide = run_pyvmm("boot", "-drive", f"file={image}", guest("hello.bin"))
    assert ide.returncode == 2 and ide.stderr.count("\n") == 1
    assert "pyvmm has no disks but one virtio-blk: --drive file=PATH" in ide.stderr
    two = run_pyvmm(
        "boot", "--drive", f"file={image}", "--drive", f"file={image}", guest("hello.bin")
    )
    assert (two.returncode, two.stderr) == (
        2, "pyvmm boot: --drive: pyvmm has one virtio-blk disk, not 2\n"
    )  # fmt: skip


def test_a_flushed_write_is_in_the_file_when_pyvmm_is_killed(tmp_path: Path) -> None:
    """The driver writes sector 1 and flushes (FLUSH: fsync), then keeps the balloon
    (`follow`, forever); pyvmm is killed with SIGKILL, no chance to flush anything of
    its own: the sector is in the image. pyvmm keeps no write of the guest's in its
    own memory, and FLUSH asks the host kernel to put it on the disk."""
    import signal
    import subprocess
    import sys

    image = disk(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pyvmm", "boot", "--drive", f"file={image}", "--balloon",
            "--timeout", "60", "--append", "blk follow", guest("virtio/virtio.elf"),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        cwd=REPO,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line == b"blk: sector 1 written, flushed, read back\n":
                break
        else:
            raise AssertionError("the driver never said it flushed")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    sector = image.read_bytes()[SECTOR : 2 * SECTOR]
    assert sector == b"pyvmm virtio-blk sector 1\n".ljust(SECTOR, b"\0")


def test_the_driver_fails_on_an_argument_it_does_not_know() -> None:
    """A typo (blkraed=4) must not pass as a run that did nothing and succeeded."""
    result = run_pyvmm("boot", "--append", "blkraed=4 console=0", guest("virtio/virtio.elf"))
    assert result.returncode == (0x11 << 1) | 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "virtio: argument 'blkraed=4': not an argument of this driver (see virtio.c's top)" in (
        lines
    )
    assert "virtio: argument 'console=0': console=N wants N KiB, 1 to 99999999" in lines
