"""The Fixed ACPI Description Table and the Firmware ACPI Control Structure.

ACPI 6.3, 5.2.9 "Fixed ACPI Description Table (FADT)" (revision 6, minor
revision 3: 276 bytes) and 5.2.10 "Firmware ACPI Control Structure (FACS)".
The FADT says where the fixed hardware is (pyvmm.devices.acpi_pm: PM1a
event and control blocks, the 24-bit PM timer at QEMU's ports), which IRQ
the SCI uses (9, as on QEMU's PIIX4 and ICH9), and points at the FACS and
the DSDT, with both their 32-bit and 64-bit (X_) fields. It describes a
legacy PC, not a hardware-reduced one: there are fixed-feature registers.
SMI_CMD is 0: the hardware is always in ACPI mode, so OSPM has no switch to
make (5.2.9, SMI_CMD; 4.8.3.2.1, SCI_EN).
"""

from __future__ import annotations

import struct

from pyvmm.devices import acpi_pm
from pyvmm.firmware.acpi.madt import SCI_IRQ
from pyvmm.firmware.acpi.sdt import (
    ACCESS_BYTE,
    ACCESS_DWORD,
    ACCESS_WORD,
    HEADER_SIZE,
    SYSTEM_IO,
    generic_address,
    table,
)

REVISION = 6
MINOR_REVISION = 3  # ACPI 6.3
FADT_SIZE = 276

# 5.2.9, Table 5-33: the fields from FIRMWARE_CTRL up to Flags (76 bytes).
FIXED_FIELDS = struct.Struct(
    "<II"  # FIRMWARE_CTRL, DSDT
    "BBH"  # reserved, Preferred_PM_Profile, SCI_INT
    "IBBBB"  # SMI_CMD, ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    "IIIIIIII"  # PM1a/b_EVT_BLK, PM1a/b_CNT_BLK, PM2_CNT_BLK, PM_TMR_BLK, GPE0/1_BLK
    "BBBBBBBB"  # PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN, GPE0/1_BLK_LEN, GPE1_BASE,
    # CST_CNT
    "HHHH"  # P_LVL2_LAT, P_LVL3_LAT, FLUSH_SIZE, FLUSH_STRIDE
    "BBBBB"  # DUTY_OFFSET, DUTY_WIDTH, DAY_ALRM, MON_ALRM, CENTURY
    "HxI"  # IAPC_BOOT_ARCH, reserved, Flags
)
# RESET_REG (12), RESET_VALUE, ARM_BOOT_ARCH, FADT Minor Version, X_FIRMWARE_CTRL, X_DSDT.
EXTENDED_FIELDS = struct.Struct("<12sBHBQQ")

PM_PROFILE_UNSPECIFIED = 0
# P_LVL2_LAT > 100 and P_LVL3_LAT > 1000: no C2 or C3 state (5.2.9).
NO_C2 = 0x0FFF
NO_C3 = 0x0FFF

# IAPC_BOOT_ARCH (5.2.9.3, Table 5-35).
LEGACY_DEVICES = 1 << 0  # devices on an ISA/LPC bus the OS cannot enumerate (COM1)
I8042 = 1 << 1
VGA_NOT_PRESENT = 1 << 2
CMOS_RTC_NOT_PRESENT = 1 << 5

# Fixed feature flags (5.2.9, Table 5-34).
WBINVD = 1 << 0  # WBINVD works (KVM runs it)
PROC_C1 = 1 << 2  # C1 (hlt) on every processor
PWR_BUTTON = 1 << 4  # set: no fixed-feature power button
SLP_BUTTON = 1 << 5  # set: no fixed-feature sleep button
TMR_VAL_EXT = 1 << 8  # clear: the PM timer is 24 bits
RESET_REG_SUP = 1 << 10  # RESET_REG and RESET_VALUE are valid
HW_REDUCED_ACPI = 1 << 20
FLAGS = WBINVD | PROC_C1 | PWR_BUTTON | SLP_BUTTON

# The Reset Control Register of PIIX4 and ICH9 (port 0xcf9, 8 bits) and the value that
# resets the system: SYS_RST | RST_CPU, a hard reset (pyvmm.devices.reset_control).
RESET_CONTROL_PORT = 0xCF9
RESET_VALUE = 0x06

# The CMOS byte holding the century (QEMU's and SeaBIOS's 0x32), when there is an RTC.
RTC_CENTURY_INDEX = 0x32

FACS_SIZE = 64
FACS_VERSION = 2  # ACPI 6.3, Table 5-37
FACS_ALIGNMENT = 64
# 5.2.10, Table 5-37: signature, length, hardware signature, firmware waking vector,
# global lock, flags, X_firmware waking vector, version, 3 reserved, OSPM flags, 24 reserved.
FACS = struct.Struct("<4sIIIIIQB3xI24x")


def fadt(
    facs_gpa: int,
    dsdt_gpa: int,
    *,
    rtc: bool = True,
    i8042: bool = True,
    reset_register: bool = True,
) -> bytes:
    """The 276-byte FADT.

    `rtc`: the CMOS RTC (and its century byte) is there; `i8042`: the
    keyboard controller at 0x60/0x64; `reset_register`: port 0xcf9 resets.
    """
    for name, gpa in (("FACS", facs_gpa), ("DSDT", dsdt_gpa)):
        if not 0 < gpa < 1 << 32:
            raise ValueError(f"{name} at 0x{gpa:x} is not a 32-bit address")
    fixed = FIXED_FIELDS.pack(
        facs_gpa,
        dsdt_gpa,
        0,
        PM_PROFILE_UNSPECIFIED,
        SCI_IRQ,
        0,  # SMI_CMD: no SMM; always in ACPI mode
        0,
        0,
        0,
        0,
        acpi_pm.PM1A_EVT_BLK,
        0,
        acpi_pm.PM1A_CNT_BLK,
        0,
        0,  # no PM2 control block
        acpi_pm.PM_TMR_BLK,
        0,  # no general-purpose event blocks
        0,
        acpi_pm.PM1_EVT_LEN,
        acpi_pm.PM1_CNT_LEN,
        0,
        acpi_pm.PM_TMR_LEN,
        0,
        0,
        0,
        0,
        NO_C2,
        NO_C3,
        0,
        0,
        0,
        0,
        0,
        0,
        RTC_CENTURY_INDEX if rtc else 0,
        LEGACY_DEVICES | (I8042 if i8042 else 0) | (0 if rtc else CMOS_RTC_NOT_PRESENT),
        FLAGS | (RESET_REG_SUP if reset_register else 0),
    )
    reset = generic_address(SYSTEM_IO, 8, RESET_CONTROL_PORT, ACCESS_BYTE)
    extended = EXTENDED_FIELDS.pack(
        reset if reset_register else generic_address(0, 0, 0),
        RESET_VALUE if reset_register else 0,
        0,
        MINOR_REVISION,
        facs_gpa,
        dsdt_gpa,
    )
    blocks = [
        generic_address(SYSTEM_IO, 8 * acpi_pm.PM1_EVT_LEN, acpi_pm.PM1A_EVT_BLK, ACCESS_WORD),
        generic_address(0, 0, 0),  # X_PM1b_EVT_BLK
        generic_address(SYSTEM_IO, 8 * acpi_pm.PM1_CNT_LEN, acpi_pm.PM1A_CNT_BLK, ACCESS_WORD),
        generic_address(0, 0, 0),  # X_PM1b_CNT_BLK
        generic_address(0, 0, 0),  # X_PM2_CNT_BLK
        generic_address(SYSTEM_IO, 8 * acpi_pm.PM_TMR_LEN, acpi_pm.PM_TMR_BLK, ACCESS_DWORD),
        generic_address(0, 0, 0),  # X_GPE0_BLK
        generic_address(0, 0, 0),  # X_GPE1_BLK
        generic_address(0, 0, 0),  # SLEEP_CONTROL_REG: hardware-reduced systems only
        generic_address(0, 0, 0),  # SLEEP_STATUS_REG
    ]
    hypervisor_vendor = struct.pack("<Q", 0)
    body = fixed + extended + b"".join(blocks) + hypervisor_vendor
    assert HEADER_SIZE + len(body) == FADT_SIZE
    return table(b"FACP", REVISION, body)


def facs() -> bytes:
    """The 64-byte FACS: no waking vector (pyvmm does not resume), the global lock free."""
    return FACS.pack(b"FACS", FACS_SIZE, 0, 0, 0, 0, 0, FACS_VERSION, 0)
