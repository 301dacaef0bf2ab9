"""The Differentiated System Description Table: pyvmm's ACPI namespace, in AML.

ACPI 6.3, 5.2.11.1 "Differentiated System Description Table (DSDT)". It
holds, as ASL would say it:

    DefinitionBlock ("", "DSDT", 2, "PYVMM", "PYVMM", 1) {
        Name (\\_S5, Package (4) { 0, 0, 0, 0 })  // soft-off: SLP_TYPa, SLP_TYPb, reserved
        Scope (\\_SB) {
            Device (COM1) {                     // the 16550A at 0x3f8, ISA IRQ 4
                Name (_HID, EisaId ("PNP0501"))
                Name (_UID, 1)
                Name (_CRS, ResourceTemplate () {
                    IO (Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags () {4} })
            }
            Device (RTC) {                      // the MC146818 RTC at 0x70, ISA IRQ 8
                Name (_HID, EisaId ("PNP0B00"))
                Name (_CRS, ResourceTemplate () {
                    IO (Decode16, 0x70, 0x70, 1, 2) IRQNoFlags () {8} })
            }
            Device (KBD) {                      // the i8042: keyboard at 0x60/0x64, IRQ 1
                Name (_HID, EisaId ("PNP0303"))
                Name (_CRS, ResourceTemplate () {
                    IO (Decode16, 0x60, 0x60, 1, 1) IO (Decode16, 0x64, 0x64, 1, 1)
                    IRQNoFlags () {1} })
            }
            Device (MOU) {                      // and its auxiliary (mouse) port, IRQ 12
                Name (_HID, EisaId ("PNP0F13"))
                Name (_CRS, ResourceTemplate () { IRQNoFlags () {12} })
            }
        }
    }

\\_S5's sleep type 0 is QEMU's too (7.4.2 "\\_Sx (System States)"): the
PM1a_CNT write that powers QEMU off powers pyvmm off. The RTC and the
i8042 are described only when the machine has them. Revision 2: integers
are 64 bits (5.2.11.1).
"""

from __future__ import annotations

from pyvmm.devices.acpi_pm import S5_SLP_TYP
from pyvmm.firmware.acpi import aml
from pyvmm.firmware.acpi.sdt import table

REVISION = 2


class LegacyDevice:
    """An ISA device the OS cannot enumerate: its ACPI name, EISA ID, ports and IRQs."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("hid", "irqs", "name", "ports", "uid")

    def __init__(
        self,
        name: str,
        hid: str,
        ports: tuple[tuple[int, int], ...],
        irqs: tuple[int, ...],
        uid: int | None = None,
    ) -> None:
        self.name = name
        self.hid = hid
        self.ports = ports  # (first port, count)
        self.irqs = irqs
        self.uid = uid

    def aml(self) -> bytes:
        terms = [aml.name("_HID", aml.eisa_id(self.hid))]
        if self.uid is not None:
            terms.append(aml.name("_UID", aml.integer(self.uid)))
        resources = [aml.io_port(base, count) for base, count in self.ports]
        resources += [aml.irq(number) for number in self.irqs]
        terms.append(aml.name("_CRS", aml.resource_template(resources)))
        return aml.device(self.name, terms)


COM1 = LegacyDevice("COM1", "PNP0501", ((0x3F8, 8),), (4,), uid=1)
RTC = LegacyDevice("RTC", "PNP0B00", ((0x70, 2),), (8,))
# The i8042's two functions, as ACPI names them: the keyboard owns the ports.
KEYBOARD = LegacyDevice("KBD", "PNP0303", ((0x60, 1), (0x64, 1)), (1,))
MOUSE = LegacyDevice("MOU", "PNP0F13", (), (12,))


# Linux's drivers/virtio/virtio_mmio.c matches this ACPI ID (as Firecracker announces it).
VIRTIO_MMIO_HID = "LNRO0005"
VIRTIO_MMIO_WINDOW = 0x200


def virtio_mmio_device(index: int, base: int, gsi: int) -> bytes:
    """Device (VRnn): a virtio-mmio transport, its window and its level-triggered interrupt."""
    resources = [
        aml.memory32_fixed(base, VIRTIO_MMIO_WINDOW),
        aml.extended_interrupt(gsi, level=True, active_low=False),
    ]
    terms = [
        aml.name("_HID", aml.string(VIRTIO_MMIO_HID)),
        aml.name("_UID", aml.integer(index)),
        aml.name("_CRS", aml.resource_template(resources)),
    ]
    return aml.device(f"VR{index:02d}", terms)


def dsdt(
    *, rtc: bool = True, i8042: bool = True, virtio: tuple[tuple[int, int], ...] = ()
) -> bytes:
    """The DSDT: \\_S5, COM1, the RTC when `rtc`, the keyboard and mouse when `i8042`,
    a virtio-mmio device per (base, GSI) in `virtio`."""
    devices = [COM1.aml()]
    if rtc:
        devices.append(RTC.aml())
    if i8042:
        devices += [KEYBOARD.aml(), MOUSE.aml()]
    devices += [virtio_mmio_device(index, base, gsi) for index, (base, gsi) in enumerate(virtio)]
    s5 = aml.package(
        [aml.integer(S5_SLP_TYP), aml.integer(S5_SLP_TYP), aml.integer(0), aml.integer(0)]
    )
    body = aml.name("\\_S5", s5) + aml.scope("\\_SB", devices)
    return table(b"DSDT", REVISION, body)
