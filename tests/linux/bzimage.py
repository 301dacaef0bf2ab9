"""The vmlinux ELF inside a bzImage, taken out in Python.

A bzImage is the real-mode setup (setup_sects + 1 sectors of 512 bytes) and
then the protected-mode code: the decompressor, with the compressed kernel as
its payload. The setup header at 0x1f1 says where the payload is: since boot
protocol 2.08, `payload_offset` (from the start of the protected-mode code)
and `payload_length` (Documentation/arch/x86/boot.rst, "Details of header
fields"). The payload's first bytes say how it is compressed (the magics of
lib/decompress.c and scripts/extract-vmlinux), and its last four bytes are the
uncompressed size, little-endian (scripts/Makefile.lib `size_append`; gzip's
own ISIZE trailer). The uncompressed payload is vmlinux.bin: the kernel's
ELF, stripped, followed by its relocation table when the kernel is
relocatable (arch/x86/boot/compressed/Makefile); the ELF is cut from it.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

# Documentation/arch/x86/boot.rst, "The real-mode kernel header".
SETUP_HEADER_OFFSET = 0x1F1
SETUP_SECTS_OFFSET = 0x1F1
HEADER_MAGIC_OFFSET = 0x202
HEADER_MAGIC = b"HdrS"
VERSION_OFFSET = 0x206
KERNEL_VERSION_OFFSET = 0x20E
PAYLOAD_OFFSET_OFFSET = 0x248
PAYLOAD_LENGTH_OFFSET = 0x24C
MIN_PAYLOAD_PROTOCOL = 0x0208  # payload_offset/payload_length appeared in 2.08
SECTOR_SIZE = 512

# ELF (System V gABI): class, data, the PT_NOTE program header type.
ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_X86_64 = 62
PT_NOTE = 4
SHT_NOBITS = 8
# include/linux/elfnote.h, include/linux/build-salt.h: every vmlinux carries
# a note named "Linux" (LINUX_ELFNOTE_BUILD_SALT, 0x100), from init/version.c.
LINUX_NOTE_NAME = "Linux"
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point (include/xen/interface/elfnote.h)


class KernelImageError(Exception):
    """A bzImage or vmlinux is not what we need."""


class NotABzImage(KernelImageError):
    pass


class BzImageTooOld(KernelImageError):
    pass


class UnknownCompression(KernelImageError):
    pass


@dataclass(frozen=True)
class SetupHeader:
    """The fields of the setup header this module uses."""

    setup_sects: int  # as the image says it (0 means 4)
    version: int  # boot protocol, 0x020f for 2.15
    payload_offset: int
    payload_length: int
    kernel_version: str | None  # the string kernel_version points at

    @property
    def protected_mode_offset(self) -> int:
        """Where the protected-mode code starts in the file."""
        return ((self.setup_sects or 4) + 1) * SECTOR_SIZE

    @property
    def payload_range(self) -> tuple[int, int]:
        """(start, end) of the compressed kernel in the file."""
        start = self.protected_mode_offset + self.payload_offset
        return start, start + self.payload_length


def read_setup_header(image: bytes) -> SetupHeader:
    """The setup header of a bzImage, checked against the image's size."""
    if len(image) < PAYLOAD_LENGTH_OFFSET + 4:
        raise NotABzImage(f"{len(image)} bytes: too short for a setup header")
    if image[HEADER_MAGIC_OFFSET : HEADER_MAGIC_OFFSET + 4] != HEADER_MAGIC:
        raise NotABzImage("no HdrS magic at 0x202")
    (version,) = struct.unpack_from("<H", image, VERSION_OFFSET)
    if version < MIN_PAYLOAD_PROTOCOL:
        raise BzImageTooOld(
            f"boot protocol {version >> 8}.{version & 0xFF:02d}: payload_offset needs 2.08 or later"
        )
    (kernel_version_ptr,) = struct.unpack_from("<H", image, KERNEL_VERSION_OFFSET)
    header = SetupHeader(
        setup_sects=image[SETUP_SECTS_OFFSET],
        version=version,
        payload_offset=struct.unpack_from("<I", image, PAYLOAD_OFFSET_OFFSET)[0],
        payload_length=struct.unpack_from("<I", image, PAYLOAD_LENGTH_OFFSET)[0],
        kernel_version=_c_string(image, kernel_version_ptr + 0x200) if kernel_version_ptr else None,
    )
    start, end = header.payload_range
    if header.payload_length < 4 or end > len(image):
        raise NotABzImage(
            f"payload {start:#x}..{end:#x} does not fit the image's {len(image):#x} bytes"
        )
    return header


def _c_string(image: bytes, offset: int) -> str | None:
    end = image.find(b"\0", offset, offset + 256)
    if offset >= len(image) or end < 0:
        return None
    return image[offset:end].decode("ascii", "replace")


def find_payload(image: bytes) -> bytes:
    """The compressed kernel of a bzImage (size trailer included)."""
    start, end = read_setup_header(image).payload_range
    return image[start:end]


# ------------------------------------------------------------ decompression


def _gunzip(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=31).decompress(data)


def _bunzip2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data)


def _unxz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _unlzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)


def _unzstd(data: bytes) -> bytes:
    try:
        import zstandard
    except ImportError as error:  # pragma: no cover - a test dependency
        raise UnknownCompression("zstd payload: pip install zstandard") from error
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


LZ4_LEGACY_BLOCK = 8 << 20  # the legacy frame's blocks hold 8 MiB uncompressed


def _unlz4(data: bytes) -> bytes:
    """The lz4 legacy frame (`lz4 -l`): magic, then (LE32 size, block)*."""
    try:
        import lz4.block
    except ImportError as error:
        raise UnknownCompression("lz4 payload: pip install lz4") from error
    out, offset = [], 4
    while offset + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        if size == 0x184C2102:  # a second frame's magic
            offset += 4
            continue
        if offset + 4 + size > len(data):
            break  # the size trailer, not a block
        block = data[offset + 4 : offset + 4 + size]
        out.append(lz4.block.decompress(block, uncompressed_size=LZ4_LEGACY_BLOCK))
        offset += 4 + size
    return b"".join(out)


# (name, magic, decompressor): lib/decompress.c `compressed_formats`.
CODECS: tuple[tuple[str, bytes, Callable[[bytes], bytes] | None], ...] = (
    ("gzip", b"\x1f\x8b\x08", _gunzip),
    ("bzip2", b"BZh", _bunzip2),
    ("lzma", b"\x5d\x00\x00", _unlzma),
    ("xz", b"\xfd7zXZ\x00", _unxz),
    ("lzo", b"\x89LZO", None),
    ("lz4", b"\x02\x21\x4c\x18", _unlz4),
    ("zstd", b"\x28\xb5\x2f\xfd", _unzstd),
)


def detect_compression(payload: bytes) -> str:
    for name, magic, _ in CODECS:
        if payload.startswith(magic):
            return name
    raise UnknownCompression(f"payload starts {payload[:6].hex()}: no known compression magic")


def decompress_payload(payload: bytes) -> tuple[str, bytes]:
    """(compression name, uncompressed bytes), checked against the size trailer."""
    name = detect_compression(payload)
    decompress = dict((codec, function) for codec, _, function in CODECS)[name]
    if decompress is None:
        raise UnknownCompression(f"{name} payload: no Python decompressor here")
    try:
        data = decompress(payload)
    except KernelImageError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as error:
        raise KernelImageError(f"{name} payload does not decompress: {error}") from error
    except Exception as error:  # zstandard.ZstdError, lz4's LZ4BlockError
        raise KernelImageError(f"{name} payload does not decompress: {error}") from error
    (expected,) = struct.unpack_from("<I", payload, len(payload) - 4)
    if len(data) & 0xFFFFFFFF != expected:
        raise KernelImageError(
            f"{name} payload gave {len(data)} bytes; its size trailer says {expected}"
        )
    return name, data


# --------------------------------------------------------------------- ELF


@dataclass(frozen=True)
class ElfNote:
    name: str
    type: int
    desc: bytes


@dataclass(frozen=True)
class ElfInfo:
    entry: int
    machine: int
    size: int  # bytes up to the end of the last header, segment or section
    notes: tuple[ElfNote, ...]

    @property
    def pvh_entry(self) -> int | None:
        """The 32-bit PVH entry point from the Xen note, if the kernel has one."""
        for note in self.notes:
            if note.name == "Xen" and note.type == XEN_ELFNOTE_PHYS32_ENTRY:
                return int.from_bytes(note.desc[:4], "little")
        return None


def parse_elf64(data: bytes) -> ElfInfo:
    """The entry, machine, extent and PT_NOTE notes of a little-endian ELF64."""
    if not data.startswith(ELF_MAGIC):
        raise KernelImageError(f"not an ELF: starts {data[:4].hex()}")
    if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        raise KernelImageError(f"not a little-endian ELF64 (class {data[4]}, data {data[5]})")
    if len(data) < 64:
        raise KernelImageError("truncated ELF header")
    (machine,) = struct.unpack_from("<H", data, 18)
    (entry, phoff, shoff) = struct.unpack_from("<QQQ", data, 24)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 54)
    end = max(64, phoff + phnum * phentsize, shoff + shnum * shentsize)
    if end > len(data):
        raise KernelImageError(f"ELF headers end at {end:#x}, past the {len(data):#x} bytes")
    notes: list[ElfNote] = []
    for index in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + index * phentsize
        )
        end = max(end, p_offset + p_filesz)
        if p_type == PT_NOTE:
            notes.extend(parse_notes(data[p_offset : p_offset + p_filesz]))
    for index in range(shnum):
        sh_type, _, _, sh_offset, sh_size = struct.unpack_from(
            "<IQQQQ", data, shoff + index * shentsize + 4
        )
        if sh_type != SHT_NOBITS:
            end = max(end, sh_offset + sh_size)
    if end > len(data):
        raise KernelImageError(f"ELF contents end at {end:#x}, past the {len(data):#x} bytes")
    return ElfInfo(entry=entry, machine=machine, size=end, notes=tuple(notes))


def parse_notes(blob: bytes) -> list[ElfNote]:
    """Elf64_Nhdr records: namesz, descsz, type, then name and desc, 4-aligned."""
    notes, offset = [], 0
    while offset + 12 <= len(blob):
        namesz, descsz, note_type = struct.unpack_from("<III", blob, offset)
        offset += 12
        name = blob[offset : offset + namesz].rstrip(b"\0").decode("ascii", "replace")
        offset += (namesz + 3) & ~3
        desc = blob[offset : offset + descsz]
        offset += (descsz + 3) & ~3
        notes.append(ElfNote(name, note_type, desc))
    return notes


def check_linux_elf(data: bytes) -> ElfInfo:
    """An x86-64 ELF64 with the "Linux" note, or KernelImageError."""
    info = parse_elf64(data)
    if info.machine != EM_X86_64:
        raise KernelImageError(f"ELF machine {info.machine}, not x86-64 ({EM_X86_64})")
    if not any(note.name == LINUX_NOTE_NAME for note in info.notes):
        names = sorted({note.name for note in info.notes}) or ["none"]
        raise KernelImageError(f"no Linux ELF note (notes: {', '.join(names)})")
    return info


@dataclass(frozen=True)
class Extracted:
    header: SetupHeader
    compression: str
    payload_size: int
    uncompressed_size: int  # vmlinux.bin, relocations included
    vmlinux: bytes  # the ELF alone
    elf: ElfInfo


def extract_vmlinux(image: bytes) -> Extracted:
    """The vmlinux ELF of a bzImage, checked to be Linux's."""
    header = read_setup_header(image)
    start, end = header.payload_range
    payload = image[start:end]
    compression, data = decompress_payload(payload)
    info = check_linux_elf(data)
    return Extracted(
        header=header,
        compression=compression,
        payload_size=len(payload),
        uncompressed_size=len(data),
        vmlinux=data[: info.size],
        elf=info,
    )
