"""The bzImage payload finder and vmlinux extraction, on synthetic images."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct

import pytest

from tests.linux.bzimage import (
    BzImageTooOld,
    KernelImageError,
    NotABzImage,
    UnknownCompression,
    check_linux_elf,
    detect_compression,
    extract_vmlinux,
    find_payload,
    read_setup_header,
)

VERSION_STRING = b"6.1.0-test (pyvmm@tests) #1 SMP"


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    name += b"\0"
    return (
        struct.pack("<III", len(name), len(desc), note_type)
        + name.ljust((len(name) + 3) & ~3, b"\0")
        + desc.ljust((len(desc) + 3) & ~3, b"\0")
    )


def make_elf(notes: bytes, machine: int = 62, elf_class: int = 2) -> bytes:
    """An ELF64 with one PT_LOAD, one PT_NOTE and a two-entry section table."""
    text = b"\x90" * 64 + b"\xf4"
    phoff, phnum, shnum = 64, 2, 2
    text_offset = phoff + 56 * phnum
    notes_offset = text_offset + len(text)
    notes_offset += -notes_offset % 4
    shoff = notes_offset + len(notes)
    shoff += -shoff % 8
    header = (
        b"\x7fELF"
        + bytes([elf_class, 1, 1, 0])
        + bytes(8)
        + struct.pack(
            "<HHIQQQIHHHHHH", 2, machine, 1, 0x1000000, phoff, shoff, 0, 64, 56, phnum, 64, shnum, 0
        )
    )
    load = struct.pack("<IIQQQQQQ", 1, 5, text_offset, 0x1000000, 0x1000000, 65, 65, 0x1000)
    pnote = struct.pack("<IIQQQQQQ", 4, 4, notes_offset, 0, 0, len(notes), len(notes), 4)
    body = bytearray(header + load + pnote + text)
    body += bytes(notes_offset - len(body)) + notes
    body += bytes(shoff - len(body))
    body += bytes(64)  # SHT_NULL
    body += struct.pack("<IIQQQQIIQQ", 1, 7, 6, 0, notes_offset, len(notes), 0, 0, 4, 0)
    return bytes(body)


LINUX_ELF = make_elf(
    note(b"Linux", 0x100, b"salt") + note(b"Xen", 18, struct.pack("<I", 0x1000850))
)
RELOCS = b"\x00\x00\x00\x00" + b"\x12\x34\x56\x78" * 10  # vmlinux.relocs after the ELF


def size_trailer(data: bytes) -> bytes:
    return struct.pack("<I", len(data) & 0xFFFFFFFF)


def compress(codec: str, data: bytes) -> bytes:
    """A payload as arch/x86/boot/compressed/Makefile makes it."""
    if codec == "gzip":
        return gzip.compress(data, mtime=0)  # gzip's ISIZE is the size trailer
    if codec == "bzip2":
        return bz2.compress(data) + size_trailer(data)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE) + size_trailer(data)
    if codec == "xz":
        return lzma.compress(data, check=lzma.CHECK_CRC32) + size_trailer(data)
    if codec == "zstd":
        zstandard = pytest.importorskip("zstandard")
        return zstandard.ZstdCompressor(level=19).compress(data) + size_trailer(data)
    if codec == "lz4":
        lz4_block = pytest.importorskip("lz4.block")
        blocks = b"\x02\x21\x4c\x18"
        for start in range(0, len(data), 8 << 20):
            block = lz4_block.compress(data[start : start + (8 << 20)], store_size=False)
            blocks += struct.pack("<I", len(block)) + block
        return blocks + size_trailer(data)
    raise AssertionError(codec)


def make_bzimage(
    payload: bytes, setup_sects: int = 3, version: int = 0x020F, with_version: bool = True
) -> bytes:
    """Setup sectors with a header, then decompressor bytes, then the payload."""
    setup = bytearray(((setup_sects or 4) + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x1FE:0x200] = b"\x55\xaa"
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    if with_version:
        setup[0x400 : 0x400 + len(VERSION_STRING) + 1] = VERSION_STRING + b"\0"
        struct.pack_into("<H", setup, 0x20E, 0x400 - 0x200)
    decompressor = b"\xcc" * 300
    struct.pack_into("<II", setup, 0x248, len(decompressor), len(payload))
    return bytes(setup) + decompressor + payload + b"\x00" * 16  # and some tail padding


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "lzma", "xz", "zstd", "lz4"])
def test_every_compression_gives_the_elf_back(codec: str) -> None:
    payload = compress(codec, LINUX_ELF + RELOCS)
    image = make_bzimage(payload)
    assert find_payload(image) == payload
    assert detect_compression(payload) == codec
    extracted = extract_vmlinux(image)
    assert extracted.compression == codec
    assert extracted.vmlinux == LINUX_ELF  # the relocations cut off
    assert extracted.uncompressed_size == len(LINUX_ELF + RELOCS)
    assert extracted.elf.entry == 0x1000000
    assert extracted.elf.pvh_entry == 0x1000850
    assert extracted.header.kernel_version == VERSION_STRING.decode()


def test_lz4_payload_of_several_blocks() -> None:
    data = LINUX_ELF + bytes(range(256)) * (40 << 10)  # 10 MiB: two legacy blocks
    assert extract_vmlinux(make_bzimage(compress("lz4", data))).uncompressed_size == len(data)


def test_setup_sects_zero_means_four() -> None:
    image = make_bzimage(compress("gzip", LINUX_ELF), setup_sects=0)
    header = read_setup_header(image)
    assert header.protected_mode_offset == 5 * 512
    assert extract_vmlinux(image).vmlinux == LINUX_ELF


def test_no_kernel_version_string() -> None:
    image = make_bzimage(compress("gzip", LINUX_ELF), with_version=False)
    assert read_setup_header(image).kernel_version is None


def test_not_a_bzimage() -> None:
    image = bytearray(make_bzimage(compress("gzip", LINUX_ELF)))
    image[0x202:0x206] = b"HdrX"
    with pytest.raises(NotABzImage, match="HdrS"):
        read_setup_header(bytes(image))
    with pytest.raises(NotABzImage, match="too short"):
        read_setup_header(b"\0" * 0x100)


def test_protocol_before_2_08_has_no_payload_fields() -> None:
    with pytest.raises(BzImageTooOld, match=r"2\.07"):
        read_setup_header(make_bzimage(compress("gzip", LINUX_ELF), version=0x0207))


def test_payload_past_the_end() -> None:
    image = make_bzimage(compress("gzip", LINUX_ELF))
    with pytest.raises(NotABzImage, match="does not fit"):
        read_setup_header(image[: len(image) - 100])


def test_unknown_and_unsupported_compressions() -> None:
    with pytest.raises(UnknownCompression, match="no known compression"):
        extract_vmlinux(make_bzimage(b"\x00\x01\x02\x03" * 8))
    with pytest.raises(UnknownCompression, match="lzo"):
        extract_vmlinux(make_bzimage(b"\x89LZO\x00" + bytes(20)))


def test_size_trailer_must_match() -> None:
    payload = compress("xz", LINUX_ELF)
    bad = payload[:-4] + struct.pack("<I", len(LINUX_ELF) + 1)
    with pytest.raises(KernelImageError, match="size trailer"):
        extract_vmlinux(make_bzimage(bad))


def test_corrupt_payload() -> None:
    payload = bytearray(compress("xz", LINUX_ELF))
    payload[40:60] = b"\xff" * 20
    with pytest.raises(KernelImageError, match="does not decompress"):
        extract_vmlinux(make_bzimage(bytes(payload)))


@pytest.mark.parametrize(
    ("elf", "message"),
    [
        (make_elf(note(b"GNU", 3, b"id")), "no Linux ELF note"),
        (make_elf(note(b"Linux", 0x100, b"")), None),
        (make_elf(note(b"Linux", 0x100, b""), machine=3), "machine 3"),
        (make_elf(note(b"Linux", 0x100, b""), elf_class=1), "ELF64"),
        (b"MZ" + bytes(100), "not an ELF"),
        (make_elf(note(b"Linux", 0x100, b""))[:150], "past the"),
    ],
    ids=["no-linux-note", "good", "i386", "elf32", "pe", "truncated"],
)
def test_linux_elf_check(elf: bytes, message: str | None) -> None:
    if message is None:
        assert check_linux_elf(elf).entry == 0x1000000
    else:
        with pytest.raises(KernelImageError, match=message):
            check_linux_elf(elf)
