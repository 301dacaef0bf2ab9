"""The tables a PC's firmware leaves in memory for the kernel to find (pure, plus one writer).

pyvmm has no BIOS, but a kernel looks for its processors, interrupt
controllers and power-management ports where a BIOS leaves their
descriptions: the MP floating pointer in the BIOS area (Intel MultiProcessor
Specification 1.4), and the ACPI RSDP in 0xe0000-0xfffff (ACPI 6.3, 5.2.5).
This package lays those structures out as bytes, with pure functions that
unit tests check without KVM, and `tables.write_firmware` copies them into
guest RAM when the machine is built:

- `area`: where each structure lives, the PC's fixed APIC addresses;
- `table`: the one-byte checksum both specifications use;
- `mptable`: the MP floating pointer and configuration table;
- `acpi`: RSDP, RSDT/XSDT, MADT, FADT, FACS, and a DSDT whose AML
  `acpi.aml` encodes;
- `tables`: what the machine is (vCPUs, irqchip, ACPI on or off) -> every
  structure at its address, and the writer.

The layer sits below the loaders: the multiboot memory map, a loader's
output, lists the firmware's ranges as a BIOS's e820 map does.
"""
