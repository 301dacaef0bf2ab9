"""virtio notifications through ioeventfds and interrupts through irqfds, against the plain path.

The same driver run (guests/virtio/virtio.elf) with `--ioeventfd on` (the
QueueNotify writes go to eventfds and an I/O thread serves the queues) and
`--ioeventfd off` (each write is an MMIO exit served by the vCPU) must print
the same lines and leave the same bytes on the disk; only the exits differ:
with eventfds no QueueNotify write reaches pyvmm.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.helpers import guest, run_pyvmm
from tests.integration.test_virtio import SECTOR, SUCCESS, disk

NOTIFY = re.compile(r"^\s+MMIO 0xfeb00[0-9a-f]50\s+(\d+)$", re.MULTILINE)


def driver_run(tmp_path: Path, ioeventfd: str, *extra: str) -> tuple[str, str, bytes]:
    image = disk(tmp_path)
    result = run_pyvmm(
        "boot", "--ioeventfd", ioeventfd, "--console", "virtio", "--drive", f"file={image}",
        "--virtio-rng", "--balloon", *extra, "--append", "console blk rng balloon=8",
        guest("virtio/virtio.elf"),
    )  # fmt: skip
    assert result.returncode == SUCCESS, result.stdout + result.stderr
    return result.stdout, result.stderr, image.read_bytes()


@pytest.mark.parametrize("ioeventfd", ["on", "off"])
def test_both_paths_serve_the_driver_alike(tmp_path: Path, ioeventfd: str) -> None:
    stdout, stderr, image = driver_run(tmp_path, ioeventfd, "-v", "--stats")
    lines = stdout.splitlines()
    for wanted in ("hello through virtio-console", "blk: ok", "rng: ok"):
        assert wanted in lines
    assert "balloon: reported 8 MiB" in lines
    assert image[SECTOR : 2 * SECTOR] == b"pyvmm virtio-blk sector 1\n".ljust(SECTOR, b"\0")
    # Left to choose, --ioeventfd off gives the split irqchip: pyvmm's IOAPIC.
    path = "ioeventfd and irqfd" if ioeventfd == "on" else "MMIO exit and pyvmm's IOAPIC"
    for kind, base, gsi in (("console", 0, 5), ("block", 0x200, 6), ("balloon", 0x600, 10)):
        assert f"virtio-mmio {kind} at 0x{0xFEB00000 + base:x}, GSI {gsi} ({path})" in stderr
    notifies = sum(int(count) for count in NOTIFY.findall(stderr))
    if ioeventfd == "on":
        assert notifies == 0  # every QueueNotify write went to an eventfd
    else:
        assert notifies >= 4  # at least one per device (console, blk, rng, balloon)


@pytest.mark.parametrize("irqchip", ["off", "split"])
def test_eventfds_need_the_irqchip_and_say_so_in_one_line(irqchip: str) -> None:
    """An irqfd's level-triggered resampling needs KVM's IOAPIC: split has pyvmm's."""
    result = run_pyvmm(
        "boot", "--ioeventfd", "on", "--kernel-irqchip", irqchip, "--virtio-rng",
        guest("hello.bin"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "pyvmm boot: --ioeventfd on needs KVM's whole irqchip (an irqfd raises one of its "
        f"inputs): --kernel-irqchip on, not {irqchip}; or --ioeventfd off\n"
    )


def test_virtio_devices_choose_kvm_s_whole_irqchip_by_default() -> None:
    """Left to choose, a machine with virtio devices takes KVM's irqchip and the irqfds."""
    result = run_pyvmm("boot", "-v", "--virtio-rng", guest("hello.bin"))
    assert result.returncode == 0, result.stderr
    assert "(ioeventfd and irqfd)" in result.stderr
    assert "interrupt controllers: KVM's PICs, IOAPIC and LAPICs (--kernel-irqchip on)" in (
        result.stderr
    )


def test_without_the_irqchip_the_default_is_the_plain_path() -> None:
    result = run_pyvmm(
        "boot", "-v", "--kernel-irqchip", "off", "--virtio-rng", guest("hello.bin"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "virtio-mmio entropy at 0xfeb00400, GSI 7 (MMIO exit, no interrupt controller)" in (
        result.stderr
    )
    assert "interrupt controllers: none (--kernel-irqchip off)" in result.stderr


@pytest.mark.parametrize("ioeventfd", ["on", "off"])
def test_the_driver_sleeps_until_the_interrupt(tmp_path: Path, ioeventfd: str) -> None:
    """`irq`: the driver waits in `sti; hlt` for the used-buffer interrupt (an irqfd with
    --ioeventfd on, a KVM_IRQ_LINE off) and reads 2 MiB in 64 KiB requests."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(range(256)) * (9 << 12))  # 2 MiB and a bit, bytes 0..255
    result = run_pyvmm(
        "boot", "--ioeventfd", ioeventfd, "--drive", f"file={image},readonly=on",
        "--append", "blkread=2 irq", guest("virtio/virtio.elf"), timeout=60,
    )  # fmt: skip
    assert result.returncode == SUCCESS, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # Each request's first byte is 0 and its last 255: 32 requests, sum 32 * 255.
    assert "blkread: read 2 MiB in 32 requests, byte sum 8160" in lines
    # One interrupt per request: the device raises it for every used buffer and the
    # driver sleeps until it comes, even when the answer was there before it slept.
    assert re.findall(r"^irq: (\d+) interrupts$", result.stdout, re.MULTILINE) == ["32"]
