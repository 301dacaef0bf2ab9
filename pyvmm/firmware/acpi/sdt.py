"""The ACPI system description table header, the Generic Address Structure, RSDT and XSDT.

ACPI 6.3: 5.2.6 "System Description Table Header", 5.2.3.2 "Generic Address
Structure (GAS)", 5.2.7 "Root System Description Table (RSDT)" and 5.2.8
"Extended System Description Table (XSDT)".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pyvmm.firmware.table import set_checksum, text_field

# 5.2.6, Table 5-29: signature, length, revision, checksum, OEM ID, OEM table ID,
# OEM revision, creator ID, creator revision.
HEADER = struct.Struct("<4sIBB6s8sI4sI")
HEADER_SIZE = HEADER.size  # 36
CHECKSUM_OFFSET = 9
OEM_ID = "PYVMM"
OEM_TABLE_ID = "PYVMM"
OEM_REVISION = 1
CREATOR_ID = "PYVM"
CREATOR_REVISION = 1

RSDT_REVISION = 1
XSDT_REVISION = 1

# 5.2.3.2, Table 5-25: address space ID, register bit width, bit offset, access size, address.
GAS = struct.Struct("<BBBBQ")
SYSTEM_MEMORY = 0
SYSTEM_IO = 1
ACCESS_UNDEFINED = 0
ACCESS_BYTE = 1
ACCESS_WORD = 2
ACCESS_DWORD = 3


def generic_address(
    space: int, bit_width: int, address: int, access_size: int = ACCESS_UNDEFINED
) -> bytes:
    """A 12-byte Generic Address Structure; all zeros (no register) when `address` is 0."""
    if address == 0:
        return bytes(GAS.size)
    return GAS.pack(space, bit_width, 0, access_size, address)


def table(signature: bytes, revision: int, body: bytes) -> bytes:
    """A whole description table: the 36-byte header (pyvmm's OEM IDs), `body`, checksummed."""
    if len(signature) != 4:
        raise ValueError(f"signature {signature!r} is not 4 bytes")
    header = HEADER.pack(
        signature,
        HEADER_SIZE + len(body),
        revision,
        0,
        text_field(OEM_ID, 6),
        text_field(OEM_TABLE_ID, 8),
        OEM_REVISION,
        text_field(CREATOR_ID, 4),
        CREATOR_REVISION,
    )
    data = bytearray(header + body)
    set_checksum(data, CHECKSUM_OFFSET)
    return bytes(data)


def rsdt(entries: Sequence[int]) -> bytes:
    """The RSDT: the 32-bit guest-physical address of each other table (not FACS, DSDT)."""
    for gpa in entries:
        if not 0 < gpa < 1 << 32:
            raise ValueError(f"an RSDT entry at 0x{gpa:x} is not a 32-bit address")
    return table(b"RSDT", RSDT_REVISION, struct.pack(f"<{len(entries)}I", *entries))


def xsdt(entries: Sequence[int]) -> bytes:
    """The XSDT: the same tables as the RSDT, with 64-bit addresses."""
    return table(b"XSDT", XSDT_REVISION, struct.pack(f"<{len(entries)}Q", *entries))
