"""The firmware tables in guest RAM and the ACPI power-management device behind them.

`firmware_ranges` says, before the image is placed, which RAM the tables
will take (the image must stay clear of it); `attach_firmware`, once the
devices are on the bus, builds the tables for what the machine has
(pyvmm.firmware.tables), writes them, and with ACPI puts the PM1a and PM
timer blocks (pyvmm.devices.acpi_pm) on the port bus, where the guest's
ACPI soft-off ends the run as a system-event shutdown, status 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pyvmm.devices import acpi_pm
from pyvmm.devices.bus import Bus
from pyvmm.errors import Log
from pyvmm.firmware import tables
from pyvmm.firmware.acpi.fadt import RESET_CONTROL_PORT
from pyvmm.firmware.mptable import CpuIdentity
from pyvmm.kvm.system import Kvm
from pyvmm.machine.outcome import RunOutcome, powered_off
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

log = Log(__name__)

CPUID_VERSION_INFORMATION = 1  # leaf 1: EAX the signature, EDX the feature flags
RTC_PORT = 0x70
I8042_DATA_PORT = 0x60


def firmware_ranges(*, interrupt_controllers: bool, acpi: bool) -> list[tuple[int, int, str]]:
    """(start, end, what) of the RAM `attach_firmware` will write (see tables.firmware_ranges)."""
    return tables.firmware_ranges(interrupt_controllers=interrupt_controllers, acpi=acpi)


def cpu_identity(kvm: Kvm, cpuid: Any = None) -> CpuIdentity:
    """CPUID leaf 1's EAX and EDX as every vCPU sees them: from `cpuid`, the table the
    vCPUs were given, or KVM_GET_SUPPORTED_CPUID's (KVM API doc 4.46) when None."""
    if cpuid is None:
        from pyvmm.arch.x86_64.cpu import supported_cpuid

        cpuid = supported_cpuid(kvm)
    for index in range(cpuid.nent):  # type: ignore[attr-defined]
        entry = cpuid.entries[index]  # type: ignore[attr-defined]
        if entry.function == CPUID_VERSION_INFORMATION:
            return CpuIdentity(int(entry.eax), int(entry.edx))
    return CpuIdentity(0, 0)


def power_off_outcome() -> RunOutcome:
    """How the run ends when the guest enters S5 through PM1a_CNT."""
    return powered_off(
        "ACPI soft-off (S5: SLP_EN with SLP_TYP "
        f"{acpi_pm.S5_SLP_TYP} written to PM1a_CNT, port 0x{acpi_pm.PM1A_CNT_BLK:x})"
    )


def attach_firmware(
    kvm: Kvm,
    memory: GuestMemory,
    pio_bus: Bus,
    stop: Callable[[RunOutcome], None],
    *,
    cpus: int,
    interrupt_controllers: bool,
    acpi: bool,
    clock: Callable[[], int] = time.monotonic_ns,
    virtio: tuple[tuple[int, int], ...] = (),
    cpuid: Any = None,
) -> tables.FirmwareTables:
    """Write the MP and ACPI tables for this machine; with `acpi`, attach the PM device.

    Call it after the other devices are on `pio_bus`: the FADT and DSDT
    describe the RTC, the keyboard controller and port 0xcf9 only when they
    are there, and the virtio-mmio transports `virtio` lists as (base, GSI).
    A soft-off calls `stop` with `power_off_outcome()`.
    """
    config = tables.FirmwareConfig(
        cpus=cpus,
        cpu=cpu_identity(kvm, cpuid),
        interrupt_controllers=interrupt_controllers,
        acpi=acpi,
        rtc=pio_bus.find(RTC_PORT) is not None,
        i8042=pio_bus.find(I8042_DATA_PORT) is not None,
        reset_register=pio_bus.find(RESET_CONTROL_PORT) is not None,
        virtio=virtio,
    )
    firmware = tables.build_firmware(config)
    tables.write_firmware(memory, firmware)
    for item in firmware.placed:
        log.info("firmware: 0x%x..0x%x %s", item.gpa, item.end, item.what)
    if acpi:
        device = acpi_pm.AcpiPm(clock, lambda: stop(power_off_outcome()))
        pio_bus.insert(
            device, acpi_pm.PM_BASE_PORT, acpi_pm.PM_PORT_SIZE, "ACPI PM1a_EVT/PM1a_CNT/PM_TMR"
        )
    return firmware
