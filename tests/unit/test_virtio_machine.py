"""The virtio devices on the machine: where they go, how they are announced, --drive.

No KVM: the transports are attached to a bus over plain guest memory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pyvmm.devices.bus import Bus
from pyvmm.errors import GuestMemoryError, UsageError
from pyvmm.firmware.acpi import aml, dsdt
from pyvmm.machine.virtio import Drive, acpi_devices, attach_virtio, linux_cmdline, open_drive
from pyvmm.memory.guest_memory import GuestMemory
from tests.integration.test_firmware import require_iasl


class Lines:
    def __init__(self) -> None:
        self.owners: dict[int, str] = {}

    def line(self, gsi: int, owner: str) -> object:
        self.owners[gsi] = owner
        return None


@pytest.fixture
def memory():  # type: ignore[no-untyped-def]
    with GuestMemory.from_ranges([(0, 16 << 20)]) as memory:
        yield memory


def test_each_kind_has_its_slot_and_irq(memory: GuestMemory, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    bus, lines, closers = Bus("mmio"), Lines(), []
    slots = attach_virtio(
        bus, memory, lines, console=lambda data: None, drive=Drive(str(disk)), entropy=True,
        balloon=True, close_later=closers.append,
    )  # fmt: skip
    assert [(slot.kind, slot.gpa, slot.gsi) for slot in slots] == [
        ("console", 0xFEB00000, 5),
        ("block", 0xFEB00200, 6),
        ("entropy", 0xFEB00400, 7),
        ("balloon", 0xFEB00600, 10),
    ]
    assert lines.owners == {5: "virtio-console", 6: "virtio-block", 7: "virtio-entropy",
                            10: "virtio-balloon"}  # fmt: skip
    assert bus.read(0xFEB00200, 4) == 0x74726976  # "virt": MagicValue (4.2.2)
    assert bus.read(0xFEB00208, 4) == 2  # DeviceID: block
    assert linux_cmdline(slots[:2]) == (
        "virtio_mmio.device=512@0xfeb00000:5 virtio_mmio.device=512@0xfeb00200:6"
    )
    assert acpi_devices(slots[:1]) == ((0xFEB00000, 0x200, 5),)
    for close in closers:
        close()


def test_only_what_is_asked_for(memory: GuestMemory) -> None:
    bus = Bus("mmio")
    slots = attach_virtio(bus, memory, Lines(), entropy=True)
    assert [slot.kind for slot in slots] == ["entropy"]
    assert bus.read(0xFEB00000, 4) == 0xFFFFFFFF  # no console: nothing there


@pytest.mark.parametrize(
    ("text", "drive"),
    [
        ("file=disk.img", Drive("disk.img")),
        ("file=disk.img,readonly=on", Drive("disk.img", read_only=True)),
        ("file=a,,b.img,format=raw,if=virtio", Drive("a,b.img")),
    ],
)
def test_drive_takes_qemus_spelling(text: str, drive: Drive) -> None:
    assert Drive.parse(text) == drive


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("disk.img", "expected KEY=VALUE, got 'disk.img'"),
        ("readonly=on", "needs file=PATH"),
        ("file=d,format=qcow2", "only format=raw (a plain disk image)"),
        ("file=d,if=ide", "only if=virtio (pyvmm's disk is virtio-blk)"),
        ("file=d,cache=none", "unknown option cache"),
        ("file=d,readonly=yes", "readonly=on or readonly=off"),
    ],
)
def test_drive_refuses_what_pyvmm_cannot_be(text: str, why: str) -> None:
    with pytest.raises(UsageError) as error:
        Drive.parse(text)
    assert str(error.value) == f"--drive {text}: {why}"


def test_a_missing_image_is_a_usage_error(memory: GuestMemory, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="No such file or directory"):
        attach_virtio(Bus("mmio"), memory, Lines(), drive=Drive(str(tmp_path / "none.img")))


def test_discard_gives_pages_back_and_refuses_anything_outside_ram(memory: GuestMemory) -> None:
    memory.write(0x200000, b"\x55" * 8192)
    memory.discard(0x200000, 4096)
    assert memory.read(0x200000, 4096) == bytes(4096)  # a fresh page
    assert memory.read(0x201000, 2) == b"\x55\x55"  # the next page is untouched
    with pytest.raises(GuestMemoryError):
        memory.discard(0x1000, 100)  # not whole pages
    with pytest.raises(GuestMemoryError):
        memory.discard((16 << 20) - 4096, 8192)  # runs past guest RAM


def test_memory32_fixed_and_extended_interrupt_follow_acpi_6_4_3() -> None:
    assert aml.memory32_fixed(0xFEB00000, 0x200) == bytes.fromhex("86 0900 01 0000b0fe 00020000")
    assert aml.extended_interrupt(5, level=True, active_low=False) == bytes.fromhex(
        "89 0600 01 01 05000000"
    )


def test_iasl_reads_the_virtio_devices_in_the_dsdt(tmp_path: Path) -> None:
    iasl = require_iasl()
    (tmp_path / "dsdt.dat").write_bytes(dsdt.dsdt(virtio=((0xFEB00000, 5), (0xFEB00200, 6))))
    result = subprocess.run(
        [iasl, "-d", "dsdt.dat"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    source = (tmp_path / "dsdt.dsl").read_text()
    assert source.count('Name (_HID, "LNRO0005")') == 2
    assert "0xFEB00200,         // Address Base" in source
    assert "Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, )" in source


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(UsageError) as error:
        Drive.parse("file=a.img,file=b.img")
    assert str(error.value) == "--drive file=a.img,file=b.img: file= is given twice"


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: os.mkfifo(path), "a pipe (FIFO)"),
        (lambda path: os.mkdir(path), "a directory"),
        (lambda path: socket.socket(socket.AF_UNIX).bind(str(path)), "a socket"),
    ],
)
def test_a_drive_must_be_a_file_or_a_block_device(
    tmp_path: Path, make: Callable[[Path], object], kind: str
) -> None:
    path = tmp_path / "disk.img"
    make(path)
    with pytest.raises(UsageError) as refused:
        open_drive(Drive(str(path)))
    assert str(refused.value) == (
        f"--drive file={path}: {kind}, not a disk image (a raw image file or a block device)"
    )


def test_a_character_device_is_no_disk_and_a_file_is() -> None:
    with pytest.raises(UsageError, match="/dev/zero: a character device, not a disk image"):
        open_drive(Drive("/dev/zero"))
    with tempfile.NamedTemporaryFile() as image:
        fd = open_drive(Drive(image.name, read_only=True))
        try:
            assert os.fstat(fd).st_ino == os.fstat(image.fileno()).st_ino
        finally:
            os.close(fd)
