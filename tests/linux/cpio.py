"""A cpio archive in the "newc" format, as the kernel's initramfs unpacker reads it.

Documentation/driver-api/early-userspace/buffer-format.rst: each entry is a
110-byte ASCII header ("070701" and thirteen 8-digit hex fields), the path
(NUL-terminated, its size counted in namesize), padding to a multiple of 4,
the file's data, padding to a multiple of 4; the archive ends with an entry
named TRAILER!!!. Written here rather than by cpio(1) so that device nodes
(/dev/console) and root-owned files go in without root and the archive is
the same byte for byte every time (mtime 0, inode numbers in order), like
the kernel's own usr/gen_init_cpio.c.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

NEWC_MAGIC = b"070701"  # "070702" is the same with a checksum; not used
HEADER_SIZE = 110
TRAILER_NAME = "TRAILER!!!"
BLOCK_SIZE = 512  # the archive is padded to it, as gen_init_cpio does
FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)


class CpioError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    """One file of the archive. `name` is relative ("bin/sh"), without a leading /."""

    name: str
    mode: int  # file type and permissions, as st_mode
    data: bytes = b""  # a regular file's contents, or a symlink's target
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node

    @staticmethod
    def directory(name: str, permissions: int = 0o755) -> Entry:
        return Entry(name, stat.S_IFDIR | permissions)

    @staticmethod
    def file(name: str, data: bytes, permissions: int = 0o644) -> Entry:
        return Entry(name, stat.S_IFREG | permissions, data)

    @staticmethod
    def symlink(name: str, target: str) -> Entry:
        return Entry(name, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def char_device(name: str, major: int, minor: int, permissions: int = 0o600) -> Entry:
        return Entry(name, stat.S_IFCHR | permissions, rdev=(major, minor))


def _pad4(size: int) -> int:
    return -size % 4


def header(fields: dict[str, int], name: str) -> bytes:
    """The 110-byte header, the NUL-terminated name and its padding."""
    encoded = name.encode() + b"\0"
    values = {**fields, "namesize": len(encoded), "check": 0}
    for key in FIELDS:
        if not 0 <= values[key] <= 0xFFFFFFFF:
            raise CpioError(f"{name}: {key} {values[key]} does not fit 8 hex digits")
    text = NEWC_MAGIC + b"".join(b"%08X" % values[key] for key in FIELDS)
    assert len(text) == HEADER_SIZE
    return text + encoded + b"\0" * _pad4(HEADER_SIZE + len(encoded))


def write_newc(entries: Iterable[Entry]) -> bytes:
    """The archive of `entries`, in order, with its trailer."""
    out = bytearray()
    seen: set[str] = set()
    for ino, entry in enumerate(entries, start=1):
        name = entry.name.strip("/")
        if not name or name in seen or name == TRAILER_NAME:
            raise CpioError(f"bad or repeated entry name {entry.name!r}")
        seen.add(name)
        kind = stat.S_IFMT(entry.mode)
        if entry.data and kind not in (stat.S_IFREG, stat.S_IFLNK):
            raise CpioError(f"{name}: only files and symlinks have data")
        fields = {
            "ino": ino,
            "mode": entry.mode,
            "uid": entry.uid,
            "gid": entry.gid,
            # One link each: the kernel treats regular files with nlink >= 2
            # that share (dev, ino) as hard links to one another.
            "nlink": 2 if kind == stat.S_IFDIR else 1,
            "mtime": 0,
            "filesize": len(entry.data),
            "devmajor": 0,
            "devminor": 0,
            "rdevmajor": entry.rdev[0],
            "rdevminor": entry.rdev[1],
        }
        out += header(fields, name)
        out += entry.data + b"\0" * _pad4(len(entry.data))
    trailer = dict.fromkeys(FIELDS, 0)
    trailer["nlink"] = 1
    out += header(trailer, TRAILER_NAME)
    out += b"\0" * (-len(out) % BLOCK_SIZE)
    return bytes(out)


@dataclass(frozen=True)
class Member:
    """One entry read back from an archive, with its header's fields."""

    name: str
    fields: dict[str, int]
    data: bytes


def read_newc(archive: bytes) -> list[Member]:
    """The entries of a newc archive, up to its trailer, every header checked."""
    members, offset = [], 0
    while True:
        if archive[offset : offset + 6] != NEWC_MAGIC:
            raise CpioError(f"no newc magic at offset {offset}")
        raw = archive[offset + 6 : offset + HEADER_SIZE]
        if len(raw) != 8 * len(FIELDS):
            raise CpioError(f"truncated header at offset {offset}")
        try:
            values = [int(raw[i : i + 8], 16) for i in range(0, len(raw), 8)]
        except ValueError as error:
            raise CpioError(f"bad hex field in the header at offset {offset}") from error
        fields = dict(zip(FIELDS, values, strict=True))
        name_start = offset + HEADER_SIZE
        name_bytes = archive[name_start : name_start + fields["namesize"]]
        if len(name_bytes) != fields["namesize"] or not name_bytes.endswith(b"\0"):
            raise CpioError(f"name at offset {name_start} is not NUL-terminated")
        name = name_bytes[:-1].decode()
        data_start = name_start + fields["namesize"]
        data_start += _pad4(data_start)
        data = archive[data_start : data_start + fields["filesize"]]
        if len(data) != fields["filesize"]:
            raise CpioError(f"{name}: data runs past the end of the archive")
        offset = data_start + fields["filesize"]
        offset += _pad4(offset)
        if name == TRAILER_NAME:
            return members
        members.append(Member(name, fields, data))
