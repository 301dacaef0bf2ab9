"""The Root System Description Pointer (ACPI 6.3, 5.2.5 "Root System Description Pointer").

What an OS scans for: "RSD PTR " on a 16-byte boundary in the EBDA's first
KiB or in 0xe0000-0xfffff (5.2.5.1). Revision 2 (ACPI 2.0 and later) is
36 bytes: the first 20 are checksummed as in ACPI 1.0 (RSDT address), all 36
by the extended checksum (XSDT address).
"""

from __future__ import annotations

import struct

from pyvmm.firmware.acpi.sdt import OEM_ID
from pyvmm.firmware.table import set_checksum, text_field

SIGNATURE = b"RSD PTR "
# 5.2.5.3, Table 5-27: signature, checksum, OEM ID, revision, RSDT address,
# length, XSDT address, extended checksum, 3 reserved bytes.
RSDP = struct.Struct("<8sB6sBIIQB3x")
RSDP_SIZE = RSDP.size  # 36
ACPI_1_SIZE = 20  # what the first checksum covers
REVISION = 2
CHECKSUM_OFFSET = 8
EXTENDED_CHECKSUM_OFFSET = 32


def rsdp(rsdt_gpa: int, xsdt_gpa: int) -> bytes:
    """The 36-byte RSDP pointing at both root tables, with both checksums."""
    if not 0 < rsdt_gpa < 1 << 32:
        raise ValueError(f"RSDT at 0x{rsdt_gpa:x} is not a 32-bit address")
    data = bytearray(
        RSDP.pack(SIGNATURE, 0, text_field(OEM_ID, 6), REVISION, rsdt_gpa, RSDP_SIZE, xsdt_gpa, 0)
    )
    set_checksum(data, CHECKSUM_OFFSET, 0, ACPI_1_SIZE)
    set_checksum(data, EXTENDED_CHECKSUM_OFFSET)
    return bytes(data)
