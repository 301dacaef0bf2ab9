"""A small encoder for the AML terms pyvmm's DSDT uses (ACPI 6.3, 20 "ACPI Machine Language
(AML) Specification"; resource descriptors: 6.4 "Resource Data Types for ACPI").

Each function returns the bytes of one term; terms nest by concatenation, as
in rust-vmm's acpi_tables crate (src/aml.rs) and Cloud Hypervisor. Only what
the DSDT needs is here: names, integers, strings, packages, scopes, devices,
buffers, EISA IDs, and the I/O port, IRQ and end-tag resource descriptors.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

# 20.2.3 "Data Objects Encoding" and 20.2.5 "Term Objects Encoding".
ZERO_OP = 0x00
ONE_OP = 0x01
NAME_OP = 0x08
BYTE_PREFIX = 0x0A
WORD_PREFIX = 0x0B
DWORD_PREFIX = 0x0C
STRING_PREFIX = 0x0D
QWORD_PREFIX = 0x0E
SCOPE_OP = 0x10
BUFFER_OP = 0x11
PACKAGE_OP = 0x12
ONES_OP = 0xFF
EXT_OP_PREFIX = 0x5B
DEVICE_OP = 0x82  # after EXT_OP_PREFIX
ROOT_CHAR = 0x5C  # '\'
DUAL_NAME_PREFIX = 0x2E
MULTI_NAME_PREFIX = 0x2F

# 20.2.2 "Name Objects Encoding": a NameSeg is a lead character (A-Z or _) and
# three of A-Z, 0-9 or _; shorter segments are padded with '_'.
_NAME_SEG = re.compile(r"[A-Z_][A-Z0-9_]{0,3}")

# 6.4.2 "Small Resource Data Type": tag byte = item name << 3 | length.
SMALL_IRQ = 0x04
SMALL_IO = 0x08
SMALL_END_TAG = 0x0F
IO_DECODE_16 = 0x01  # 6.4.2.5: the device decodes 16 address bits


def name_seg(segment: str) -> bytes:
    """One 4-byte NameSeg (ValueError for a name AML cannot hold)."""
    if not _NAME_SEG.fullmatch(segment):
        raise ValueError(f"{segment!r} is not an AML name segment")
    return segment.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    """A NameString: `_S5`, `\\_SB`, `\\_SB.COM1` (root prefix, dual or multi-name path)."""
    prefix = b"\\" if path.startswith("\\") else b""
    segments = [name_seg(part) for part in path.lstrip("\\").split(".") if part]
    if not segments:
        return prefix + b"\0"  # NullName: the root itself
    if len(segments) == 1:
        return prefix + segments[0]
    if len(segments) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segments)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segments)]) + b"".join(segments)


def pkg_length(body_size: int) -> bytes:
    """The PkgLength of a term whose contents after it are `body_size` bytes (20.2.4).

    The length counts its own bytes: one byte up to 63, else 2 to 4 bytes
    whose first holds the count of bytes that follow and the low 4 bits.
    """
    for size in (1, 2, 3, 4):
        total = body_size + size
        if size == 1 and total < 1 << 6:
            return bytes([total])
        if size > 1 and total < 1 << (4 + 8 * (size - 1)):
            rest = (total >> 4).to_bytes(size - 1, "little")
            return bytes([(size - 1) << 6 | (total & 0xF)]) + rest
    raise ValueError(f"{body_size} bytes do not fit a PkgLength (at most 2**28 - 1)")


def integer(value: int) -> bytes:
    """The shortest integer encoding: ZeroOp, OneOp, or a Byte/Word/DWord/QWord constant."""
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    for prefix, fmt, limit in (
        (BYTE_PREFIX, "<B", 1 << 8),
        (WORD_PREFIX, "<H", 1 << 16),
        (DWORD_PREFIX, "<I", 1 << 32),
        (QWORD_PREFIX, "<Q", 1 << 64),
    ):
        if 0 <= value < limit:
            return bytes([prefix]) + struct.pack(fmt, value)
    raise ValueError(f"{value} is not a 64-bit unsigned integer")


def string(text: str) -> bytes:
    """A String constant: ASCII characters 0x01-0x7f and a NUL."""
    data = text.encode("ascii")
    if b"\0" in data:
        raise ValueError(f"{text!r} contains a NUL")
    return bytes([STRING_PREFIX]) + data + b"\0"


def eisa_id(text: str) -> bytes:
    """A compressed EISA ID such as `PNP0501` as a DWord constant (ASL's EisaId)."""
    if not re.fullmatch(r"[A-Z]{3}[0-9A-F]{4}", text):
        raise ValueError(f"{text!r} is not an EISA ID (three letters, four hex digits)")
    letters = [ord(char) - ord("@") for char in text[:3]]
    vendor = letters[0] << 10 | letters[1] << 5 | letters[2]
    product = int(text[3:], 16)
    # Stored big-endian: the vendor's two bytes, then the product number's.
    value = int.from_bytes(vendor.to_bytes(2, "big") + product.to_bytes(2, "big"), "little")
    return bytes([DWORD_PREFIX]) + struct.pack("<I", value)


def name(path: str, value: bytes) -> bytes:
    """DefName: Name (path, value)."""
    return bytes([NAME_OP]) + name_string(path) + value


def package(elements: Iterable[bytes]) -> bytes:
    """DefPackage of already-encoded elements (at most 255)."""
    items = list(elements)
    if len(items) > 0xFF:
        raise ValueError(f"a Package holds at most 255 elements, not {len(items)}")
    body = bytes([len(items)]) + b"".join(items)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def scope(path: str, terms: Iterable[bytes]) -> bytes:
    """DefScope: Scope (path) { terms }."""
    body = name_string(path) + b"".join(terms)
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def device(path: str, terms: Iterable[bytes]) -> bytes:
    """DefDevice: Device (path) { terms }."""
    body = name_string(path) + b"".join(terms)
    return bytes([EXT_OP_PREFIX, DEVICE_OP]) + pkg_length(len(body)) + body


def buffer(data: bytes) -> bytes:
    """DefBuffer holding `data`, its size given as an integer."""
    body = integer(len(data)) + data
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def io_port(base: int, length: int) -> bytes:
    """An I/O port descriptor (6.4.2.5): `length` ports fixed at `base`, 16-bit decode."""
    if not 0 <= base <= 0xFFFF or not 0 < length <= 0xFF:
        raise ValueError(f"ports 0x{base:x} (+{length}) do not fit an I/O port descriptor")
    return bytes([SMALL_IO << 3 | 7, IO_DECODE_16]) + struct.pack("<HHBB", base, base, 1, length)


def irq(*irqs: int) -> bytes:
    """An IRQ descriptor without flags (6.4.2.1): edge-triggered, active high, exclusive."""
    if not irqs or not all(0 <= number < 16 for number in irqs):
        raise ValueError(f"IRQs {irqs} are not ISA IRQs 0-15")
    mask = sum(1 << number for number in set(irqs))
    return bytes([SMALL_IRQ << 3 | 2]) + struct.pack("<H", mask)


# Large resource items (6.4.3): the tag byte has bit 7 set, then a 16-bit length.
LARGE_MEMORY32_FIXED = 0x86
LARGE_EXTENDED_INTERRUPT = 0x89


def memory32_fixed(base: int, length: int, *, writable: bool = True) -> bytes:
    """A 32-bit fixed memory range descriptor (6.4.3.4): [base, base + length)."""
    if not 0 <= base <= 0xFFFF_FFFF or not 0 < length <= 0x1_0000_0000 - base:
        raise ValueError(f"memory 0x{base:x} (+0x{length:x}) does not fit 32 bits")
    return bytes([LARGE_MEMORY32_FIXED]) + struct.pack("<HBII", 9, int(writable), base, length)


def extended_interrupt(gsi: int, *, level: bool, active_low: bool) -> bytes:
    """An extended interrupt descriptor (6.4.3.6): one GSI, consumed, exclusive.

    Flags: bit 0 consumer, bit 1 edge (0: level), bit 2 active low.
    """
    if not 0 <= gsi <= 0xFFFF_FFFF:
        raise ValueError(f"interrupt {gsi} does not fit 32 bits")
    flags = 1 | (0 if level else 2) | (4 if active_low else 0)
    return bytes([LARGE_EXTENDED_INTERRUPT]) + struct.pack("<HBBI", 6, flags, 1, gsi)


def resource_template(descriptors: Iterable[bytes]) -> bytes:
    """A Buffer of resource descriptors closed by an end tag (6.4.2.9) with checksum 0.

    A checksum of 0 means "the buffer sums to zero", which OSPM accepts
    without checking (6.4.2.9).
    """
    data = b"".join(descriptors) + bytes([SMALL_END_TAG << 3 | 1, 0])
    return buffer(data)
