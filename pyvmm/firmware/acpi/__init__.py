"""ACPI 6.3 tables, one module each, as bytes (Advanced Configuration and Power Interface
Specification 6.3, chapter 5 "ACPI Software Programming Model").

`sdt` has the common header, the Generic Address Structure and the root
tables (RSDT, XSDT); `rsdp`, `madt`, `fadt` (with the FACS) and `dsdt`
build one table each; `aml` encodes the few AML terms the DSDT needs.
"""
