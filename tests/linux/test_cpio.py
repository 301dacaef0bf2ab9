"""The newc writer and the initramfs layout, without network or a kernel."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.linux.cpio import (
    BLOCK_SIZE,
    HEADER_SIZE,
    TRAILER_NAME,
    CpioError,
    Entry,
    read_newc,
    write_newc,
)
from tests.linux.initramfs import (
    BOOT_TIMER_CODE,
    BOOT_TIMER_PATH,
    POWER_OFF_LINE,
    SHELL_LINE,
    UP_LINE,
    boot_timer_program,
    command_lines,
    init_script,
    initramfs_entries,
)

ENTRIES = [
    Entry.directory("bin"),
    Entry.directory("dev"),
    Entry.char_device("dev/console", 5, 1),
    Entry.file("bin/busybox", b"\x7fELF" + bytes(range(256)) * 3 + b"odd", 0o755),
    Entry.symlink("bin/sh", "/bin/busybox"),
    Entry.file("init", b"#!/bin/sh\necho hi\n", 0o755),
    Entry.file("empty", b""),
]


def test_every_header_is_newc_and_aligned() -> None:
    archive = write_newc(ENTRIES)
    assert len(archive) % BLOCK_SIZE == 0
    offset = 0
    names = []
    while True:
        header = archive[offset : offset + HEADER_SIZE]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        assert header[6:].decode().isalnum() and header[6:] == header[6:].upper()
        namesize, filesize, check = fields[11], fields[6], fields[12]
        assert check == 0
        name = archive[offset + HEADER_SIZE : offset + HEADER_SIZE + namesize]
        assert name.endswith(b"\0") and b"\0" not in name[:-1]
        names.append(name[:-1].decode())
        data_start = offset + HEADER_SIZE + namesize
        data_start += -data_start % 4
        assert data_start % 4 == 0
        assert set(archive[offset + HEADER_SIZE + namesize : data_start]) <= {0}
        offset = data_start + filesize
        offset += -offset % 4
        if names[-1] == TRAILER_NAME:
            break
    assert names == [entry.name for entry in ENTRIES] + [TRAILER_NAME]
    assert set(archive[offset:]) <= {0}  # only the padding to 512 after the trailer


def test_read_back_gives_the_entries() -> None:
    members = read_newc(write_newc(ENTRIES))
    assert [m.name for m in members] == [e.name for e in ENTRIES]
    for member, entry in zip(members, ENTRIES, strict=True):
        assert member.fields["mode"] == entry.mode
        assert member.data == entry.data
        assert member.fields["filesize"] == len(entry.data)
        assert (member.fields["rdevmajor"], member.fields["rdevminor"]) == entry.rdev
        assert member.fields["uid"] == member.fields["gid"] == member.fields["mtime"] == 0
        is_dir = stat.S_ISDIR(entry.mode)
        assert member.fields["nlink"] == (2 if is_dir else 1)
    inodes = [m.fields["ino"] for m in members]
    assert len(set(inodes)) == len(inodes)
    console = members[2]
    assert stat.S_ISCHR(console.fields["mode"]) and console.fields["rdevmajor"] == 5
    assert members[4].data == b"/bin/busybox" and stat.S_ISLNK(members[4].fields["mode"])


def test_same_entries_same_bytes() -> None:
    assert write_newc(ENTRIES) == write_newc(list(ENTRIES))


@pytest.mark.parametrize(
    "entries",
    [
        [Entry.file("a", b"1"), Entry.file("a", b"2")],
        [Entry.file("", b"")],
        [Entry.file(TRAILER_NAME, b"")],
        [Entry("dev/x", stat.S_IFCHR | 0o600, b"data")],
        [Entry.char_device("dev/huge", 1 << 32, 0)],
    ],
    ids=["repeated", "empty-name", "trailer-name", "device-with-data", "field-overflow"],
)
def test_bad_entries_are_refused(entries: list[Entry]) -> None:
    with pytest.raises(CpioError):
        write_newc(entries)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda a: b"070707" + a[6:], "magic"),
        (lambda a: a[:20] + b"zz" + a[22:], "hex"),
        (lambda a: a[:200], "past the end|NUL|truncated|magic"),
    ],
    ids=["magic", "hex", "truncated"],
)
def test_reader_refuses_damaged_archives(mangle, message: str) -> None:
    with pytest.raises(CpioError, match=message):
        read_newc(mangle(write_newc(ENTRIES)))


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is not installed")
def test_gnu_cpio_reads_it_the_same() -> None:
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=write_newc(ENTRIES), capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == [entry.name for entry in ENTRIES]


# ---------------------------------------------------------------- initramfs


def test_initramfs_layout() -> None:
    init = init_script(["uname -r"])
    entries = initramfs_entries(b"BUSYBOX", ["bin/sh", "usr/bin/head", "etc/nowhere/x"], init)
    members = {m.name: m for m in read_newc(write_newc(entries))}
    assert members["init"].data.decode() == init
    assert members["init"].fields["mode"] == stat.S_IFREG | 0o755
    assert members["bin/busybox"].data == b"BUSYBOX"
    assert members[BOOT_TIMER_PATH.lstrip("/")].data == boot_timer_program()
    assert members[BOOT_TIMER_PATH.lstrip("/")].fields["mode"] == stat.S_IFREG | 0o755
    assert members["bin/sh"].data == members["usr/bin/head"].data == b"/bin/busybox"
    assert "etc/nowhere/x" not in members  # no directory for it: left out, not half made
    console = members["dev/console"].fields
    assert (console["rdevmajor"], console["rdevminor"]) == (5, 1)
    assert stat.S_ISCHR(console["mode"])
    for directory in ("proc", "sys", "dev", "bin", "sbin", "usr/bin"):
        assert stat.S_ISDIR(members[directory].fields["mode"])


def test_init_script_parses_and_ends_as_asked() -> None:
    for shell, last in ((False, POWER_OFF_LINE), (True, SHELL_LINE)):
        script = init_script(["uname -r", "cat /proc/cpuinfo | head"], shell=shell)
        assert script.startswith("#!/bin/sh\n")
        assert subprocess.run(["sh", "-n"], input=script.encode(), check=False).returncode == 0
        lines = script.splitlines()
        assert lines.index(f'echo "{UP_LINE}"') < lines.index(f'echo "{last}"')
        assert ("poweroff -f" in lines) is not shell
        assert lines.index(f'echo "{UP_LINE}"') + 2 == next(
            i for i, line in enumerate(lines) if line.startswith(BOOT_TIMER_PATH)
        )


def test_boot_timer_program_is_ioperm_out_exit() -> None:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    program = boot_timer_program()
    info = check_static_elf(program)
    code = program[info["entry_offset"] :]
    assert code == BOOT_TIMER_CODE
    text = [f"{i.mnemonic} {i.op_str}".strip() for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, 0)]
    assert text == [
        "mov eax, 0xad",  # ioperm
        "mov edi, 0x3f0",
        "mov esi, 1",
        "mov edx, 1",
        "syscall",
        "test eax, eax",
        "jne 0x25",  # refused
        "mov dx, 0x3f0",
        "mov al, 0x7b",  # 123
        "out dx, al",
        "xor edi, edi",
        "jmp 0x2a",  # exit
        "mov edi, 1",
        "mov eax, 0x3c",  # exit
        "syscall",
    ]
    offsets = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, 0)]
    assert 0x25 in offsets and 0x2A in offsets  # both jumps land on an instruction


def check_static_elf(program: bytes) -> dict[str, int]:
    """The ELF header and the one PT_LOAD of the program, checked field by field."""
    assert program[:8] == b"\x7fELF\x02\x01\x01\x00"
    e_type, machine, _, entry, phoff, shoff = struct.unpack_from("<HHIQQQ", program, 16)
    assert (e_type, machine, phoff, shoff) == (2, 62, 64, 0)
    phnum = struct.unpack_from("<H", program, 56)[0]
    assert phnum == 1
    p_type, flags, offset, vaddr, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", program, 64)
    assert (p_type, flags, offset, filesz, memsz) == (1, 5, 0, len(program), len(program))
    assert vaddr <= entry < vaddr + filesz
    return {"entry_offset": entry - vaddr}


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="x86-64")
def test_boot_timer_program_runs_and_is_refused_without_privilege(tmp_path: Path) -> None:
    """Run as nobody, ioperm fails with EPERM and it exits 1 before any out."""
    directory = Path(tempfile.mkdtemp(prefix="pyvmm-boot-timer-"))
    try:
        directory.chmod(0o755)
        program = directory / "pyvmm-boot-timer"
        program.write_bytes(boot_timer_program())
        program.chmod(0o755)
        unprivileged = (
            {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
        )
        result = subprocess.run([str(program)], check=False, **unprivileged)
        assert result.returncode == 1
    finally:
        shutil.rmtree(directory)


def test_commands_are_quoted_and_framed() -> None:
    command = """echo "it's $((1 + 2))" 'and | more'; exit 3"""
    result = subprocess.run(
        ["sh", "-c", command_lines(command)], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == [
        f"pyvmm-initramfs: $ {command}",
        "it's 3 and | more",
        "pyvmm-initramfs: exit 3",
    ]
