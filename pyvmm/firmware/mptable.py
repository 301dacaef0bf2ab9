"""The MP floating pointer and MP configuration table (Intel MultiProcessor Specification 1.4).

A kernel that does not read ACPI finds the processors and the I/O APIC
here: it scans for the floating pointer's "_MP_" on 16-byte boundaries
(4.1), follows it to the configuration table (4.2), and reads its entries
(4.3): one per processor, the bus, the I/O APIC, each interrupt's route to
an I/O APIC pin, and the local APICs' LINT0/LINT1 wiring.

The entries are those QEMU's firmware (SeaBIOS, src/fw/mptable.c) leaves
for `qemu-system-x86_64 -kernel`, for a machine without PCI devices: the
ISA bus; KVM's I/O APIC; ISA IRQ n on pin n, except IRQ 0 on pin 2 (the
in-kernel PIT's IRQ 0 override) and IRQs 5, 9, 10 and 11, which QEMU keeps
for PCI interrupts; ExtINT (the 8259 PIC) on the BSP's LINT0 and NMI on
every LINT1 (virtual wire mode, 3.6.2.2). Unlike SeaBIOS, which lists only
the first logical CPU of each package, every vCPU gets a processor entry, as
Firecracker's mptable.rs does: pyvmm's vCPUs are cores of one package and a
kernel must start each of them.
"""

from __future__ import annotations

import struct

from pyvmm.firmware import area
from pyvmm.firmware.table import set_checksum, text_field

# 4.1 "MP Floating Pointer Structure": 16 bytes, on a 16-byte boundary.
FLOATING_POINTER_SIGNATURE = b"_MP_"
FLOATING_POINTER = struct.Struct("<4sIBBB5s")
SPEC_REVISION = 4  # version 1.4
# 4.2 "MP Configuration Table Header": 44 bytes.
CONFIG_SIGNATURE = b"PCMP"
CONFIG_HEADER = struct.Struct("<4sHBB8s12sIHHIHBx")
OEM_ID = "PYVMM"
PRODUCT_ID = "PYVMM MP"

# 4.3 "MP Configuration Table Entries": entry types and their layouts.
ENTRY_PROCESSOR = 0
ENTRY_BUS = 1
ENTRY_IO_APIC = 2
ENTRY_IO_INTERRUPT = 3
ENTRY_LOCAL_INTERRUPT = 4
PROCESSOR_ENTRY = struct.Struct("<BBBBII8x")  # 20 bytes
BUS_ENTRY = struct.Struct("<BB6s")
IO_APIC_ENTRY = struct.Struct("<BBBBI")
INTERRUPT_ENTRY = struct.Struct("<BBHBBBB")  # I/O and local interrupt assignments

# Processor entry flags (4.3.1, Table 4-5).
CPU_EN = 0x01
CPU_BP = 0x02
# I/O APIC entry flags (4.3.3): the I/O APIC is usable.
IO_APIC_EN = 0x01
# Interrupt types (4.3.4, Table 4-10).
INT_TYPE_INT = 0  # vectored, from the I/O APIC redirection table
INT_TYPE_NMI = 1
INT_TYPE_SMI = 2
INT_TYPE_EXTINT = 3  # vectored, from an 8259A-compatible PIC
# Interrupt flags: 0 means "conforms to the bus's polarity and trigger mode" (Table 4-11).
CONFORMS_TO_BUS = 0
ALL_LOCAL_APICS = 0xFF  # a local interrupt entry's destination: every processor

ISA_BUS_ID = 0
ISA_BUS_TYPE = "ISA"
ISA_IRQS = 16
# QEMU routes PCI INTx to these ISA IRQs, and SeaBIOS leaves them out of the
# ISA list (BUILD_PCI_IRQS); pyvmm keeps QEMU's list so that a kernel sees the same.
PCI_IRQS = frozenset({5, 9, 10, 11})
# The PIT's IRQ 0 drives I/O APIC pin 2, as on QEMU and KVM (the "IRQ 0 override").
TIMER_IRQ = 0
TIMER_PIN = 2
LINT0 = 0
LINT1 = 1


class CpuIdentity:
    """What the processor entries say about every vCPU: CPUID.1's EAX and EDX.

    `signature` is CPUID.1:EAX (stepping, model, family; copied whole, as
    SeaBIOS does) and `features` CPUID.1:EDX (MP Specification 4.3.1, Table 4-6).
    Read-only once made.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("features", "signature")

    def __init__(self, signature: int, features: int) -> None:
        self.signature = signature
        self.features = features


def isa_interrupt_routes() -> list[tuple[int, int]]:
    """(ISA IRQ, I/O APIC pin) for each I/O interrupt assignment entry, in IRQ order."""
    routes = []
    for irq in range(ISA_IRQS):
        if irq in PCI_IRQS or irq == TIMER_PIN:  # pin 2 belongs to IRQ 0
            continue
        routes.append((irq, TIMER_PIN if irq == TIMER_IRQ else irq))
    return routes


def config_table(cpus: int, cpu: CpuIdentity) -> bytes:
    """The MP configuration table for `cpus` vCPUs, APIC IDs 0..cpus-1, vCPU 0 the BSP.

    Raises ValueError for a count outside 1..255 (xAPIC IDs are 8 bits and
    0xff is the broadcast ID).
    """
    if not 1 <= cpus <= 0xFF:
        raise ValueError(f"{cpus} vCPUs: the MP table holds 1 to 255 processors")
    entries = []
    for apic_id in range(cpus):
        flags = CPU_EN | (CPU_BP if apic_id == 0 else 0)
        entries.append(
            PROCESSOR_ENTRY.pack(
                ENTRY_PROCESSOR,
                apic_id,
                area.LOCAL_APIC_VERSION,
                flags,
                cpu.signature & 0xFFFF_FFFF,
                cpu.features & 0xFFFF_FFFF,
            )
        )
    entries.append(BUS_ENTRY.pack(ENTRY_BUS, ISA_BUS_ID, text_field(ISA_BUS_TYPE, 6)))
    entries.append(
        IO_APIC_ENTRY.pack(
            ENTRY_IO_APIC, area.IO_APIC_ID, area.IO_APIC_VERSION, IO_APIC_EN, area.IO_APIC_GPA
        )
    )
    for irq, pin in isa_interrupt_routes():
        entries.append(
            INTERRUPT_ENTRY.pack(
                ENTRY_IO_INTERRUPT, INT_TYPE_INT, CONFORMS_TO_BUS, ISA_BUS_ID, irq,
                area.IO_APIC_ID, pin,
            )
        )  # fmt: skip
    # Virtual wire mode (3.6.2.2): the PIC's INTR reaches the BSP's LINT0, NMI every LINT1.
    entries.append(
        INTERRUPT_ENTRY.pack(
            ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, CONFORMS_TO_BUS, ISA_BUS_ID, 0, 0, LINT0
        )
    )
    entries.append(
        INTERRUPT_ENTRY.pack(
            ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, CONFORMS_TO_BUS, ISA_BUS_ID, 0,
            ALL_LOCAL_APICS, LINT1,
        )
    )  # fmt: skip
    body = b"".join(entries)
    length = CONFIG_HEADER.size + len(body)
    header = CONFIG_HEADER.pack(
        CONFIG_SIGNATURE,
        length,
        SPEC_REVISION,
        0,  # checksum, set below
        text_field(OEM_ID, 8),
        text_field(PRODUCT_ID, 12),
        0,  # no OEM table
        0,
        len(entries),
        area.LOCAL_APIC_GPA,
        0,  # no extended entries
        0,
    )
    table = bytearray(header + body)
    set_checksum(table, 7)
    return bytes(table)


def floating_pointer(config_table_gpa: int) -> bytes:
    """The 16-byte floating pointer to a configuration table at `config_table_gpa`.

    Feature byte 1 is 0 (a configuration table is present, no default
    configuration); byte 2 is 0: no IMCR, virtual wire mode (4.1, Table 4-1).
    """
    if not 0 <= config_table_gpa < 1 << 32:
        raise ValueError(f"configuration table at 0x{config_table_gpa:x} is not below 4 GiB")
    data = bytearray(
        FLOATING_POINTER.pack(
            FLOATING_POINTER_SIGNATURE, config_table_gpa, 1, SPEC_REVISION, 0, bytes(5)
        )
    )
    set_checksum(data, 10)
    return bytes(data)
