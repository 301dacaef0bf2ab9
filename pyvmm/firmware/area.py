"""Where the firmware tables live in guest-physical memory, and the PC's fixed APIC addresses.

Everything sits in the legacy BIOS window below 1 MiB, which no memory map
offers as RAM, so the tables cost the guest nothing and do not move with -m:

    0xe0000-0xe0fff  ACPI NVS: the FACS (ACPI 6.3, 5.2.10: "in ACPI NVS memory")
    0xe1000-0xe1fff  ACPI reclaimable: XSDT, RSDT, FADT, MADT, DSDT
    0xf1000-0xf2fff  the BIOS area (0xf0000-0xfffff, reserved): the MP floating
                     pointer, the RSDP, the MP configuration table

The floating pointer must lie in the BIOS ROM area, the EBDA's first KiB or
the last KiB of base memory (MP Specification 1.4, 4.1), the RSDP on a
16-byte boundary in 0xe0000-0xfffff or the EBDA (ACPI 6.3, 5.2.5.1). The
first KiB of the BIOS area holds pyvmm's no-BIOS stubs for real-mode
entries (pyvmm.arch.x86_64.no_bios): the tables start a page above.
"""

from __future__ import annotations

# Re-exported for the tables (the device owns them; see below).
from pyvmm.devices.ioapic import IO_APIC_GPA as IO_APIC_GPA
from pyvmm.devices.ioapic import IO_APIC_ID as IO_APIC_ID
from pyvmm.devices.ioapic import IO_APIC_PINS as IO_APIC_PINS
from pyvmm.devices.ioapic import IO_APIC_VERSION as IO_APIC_VERSION

KIB = 1 << 10

# ACPI NVS: the FACS, which the OS may write (the global lock, its waking vector).
ACPI_NVS_GPA = 0xE_0000
ACPI_NVS_END = 0xE_1000
# ACPI reclaimable: the description tables, which the OS may reuse once it has read them.
ACPI_TABLES_GPA = 0xE_1000
ACPI_TABLES_END = 0xE_2000
# In the BIOS area: what a kernel finds by scanning it, and the MP configuration table.
BIOS_TABLES_GPA = 0xF_1000
BIOS_TABLES_END = 0xF_3000

# The PC's interrupt controllers at their power-on addresses, where KVM's in-kernel
# irqchip puts them (Intel SDM vol. 3A, 11.4.1 "The Local APIC Block Diagram"). The
# I/O APIC's address, ID, version and pins are the device's (pyvmm's own with the
# split irqchip, made to match KVM's): the tables describe what it is.
LOCAL_APIC_GPA = 0xFEE0_0000
# KVM's local APIC version register, bits 7:0 (linux arch/x86/kvm/lapic.c, APIC_VERSION).
LOCAL_APIC_VERSION = 0x14
