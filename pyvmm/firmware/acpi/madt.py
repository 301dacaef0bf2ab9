"""The Multiple APIC Description Table (ACPI 6.3, 5.2.12 "Multiple APIC Description Table").

Where the local APICs are, one Processor Local APIC structure per vCPU
(ACPI processor UID and APIC ID both the vCPU index), KVM's I/O APIC with
its 24 pins from GSI 0, and the interrupt source overrides QEMU gives: ISA
IRQ 0 (the PIT) on GSI 2, and IRQ 9, the SCI, level-triggered and active
high; then NMI on every local APIC's LINT1, as QEMU's MADT has it
(hw/i386/acpi-common.c). PCAT_COMPAT: the two 8259 PICs are there too.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pyvmm.firmware import area
from pyvmm.firmware.acpi.sdt import table

REVISION = 5  # ACPI 6.3
# 5.2.12, Table 5-43: local interrupt controller address, flags.
MADT_FIELDS = struct.Struct("<II")
PCAT_COMPAT = 1 << 0

# Interrupt controller structure types (Table 5-45) and their layouts.
PROCESSOR_LOCAL_APIC = 0
IO_APIC = 1
INTERRUPT_SOURCE_OVERRIDE = 2
LOCAL_APIC_NMI = 4
LOCAL_APIC_ENTRY = struct.Struct("<BBBBI")  # 5.2.12.2, Table 5-46
IO_APIC_ENTRY = struct.Struct("<BBBBII")  # 5.2.12.3, Table 5-48
OVERRIDE_ENTRY = struct.Struct("<BBBBIH")  # 5.2.12.5, Table 5-50
LOCAL_APIC_NMI_ENTRY = struct.Struct("<BBBHB")  # 5.2.12.7, Table 5-53

LOCAL_APIC_ENABLED = 1 << 0  # Table 5-47
ISA_BUS = 0
ALL_PROCESSORS = 0xFF  # a Local APIC NMI structure for every processor
LINT1 = 1

# MPS INTI flags (Table 5-51): polarity in bits 1:0, trigger mode in bits 3:2.
CONFORMS = 0x0
ACTIVE_HIGH = 0x1
ACTIVE_LOW = 0x3
EDGE = 0x1 << 2
LEVEL = 0x3 << 2

SCI_IRQ = 9  # the SCI's ISA IRQ on a PIIX4 or ICH9, and its GSI


class SourceOverride:
    """ISA IRQ `source` arrives on `gsi`, with MPS INTI `flags` (Table 5-51)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("flags", "gsi", "source")

    def __init__(self, source: int, gsi: int, flags: int) -> None:
        self.source = source
        self.gsi = gsi
        self.flags = flags


OVERRIDES = (
    SourceOverride(0, 2, CONFORMS),  # the PIT on I/O APIC pin 2
    SourceOverride(SCI_IRQ, SCI_IRQ, ACTIVE_HIGH | LEVEL),  # the SCI, as QEMU declares it
)


def madt(cpus: int, overrides: Sequence[SourceOverride] = OVERRIDES) -> bytes:
    """The MADT for `cpus` vCPUs with APIC IDs 0..cpus-1 (ValueError outside 1..255)."""
    if not 1 <= cpus <= 0xFF:
        raise ValueError(f"{cpus} vCPUs: xAPIC IDs give 1 to 255 processors")
    parts = [MADT_FIELDS.pack(area.LOCAL_APIC_GPA, PCAT_COMPAT)]
    for index in range(cpus):
        parts.append(
            LOCAL_APIC_ENTRY.pack(
                PROCESSOR_LOCAL_APIC, LOCAL_APIC_ENTRY.size, index, index, LOCAL_APIC_ENABLED
            )
        )
    parts.append(
        IO_APIC_ENTRY.pack(IO_APIC, IO_APIC_ENTRY.size, area.IO_APIC_ID, 0, area.IO_APIC_GPA, 0)
    )
    for override in overrides:
        parts.append(
            OVERRIDE_ENTRY.pack(
                INTERRUPT_SOURCE_OVERRIDE,
                OVERRIDE_ENTRY.size,
                ISA_BUS,
                override.source,
                override.gsi,
                override.flags,
            )
        )
    parts.append(
        LOCAL_APIC_NMI_ENTRY.pack(
            LOCAL_APIC_NMI, LOCAL_APIC_NMI_ENTRY.size, ALL_PROCESSORS, CONFORMS, LINT1
        )
    )
    return table(b"APIC", REVISION, b"".join(parts))
