"""Every firmware structure at its address, from what the machine is; and the one writer.

`build_firmware` is pure: a FirmwareConfig (vCPUs, the CPUID identity, whether
there are interrupt controllers, whether ACPI is on) gives a FirmwareTables,
the bytes of each structure and where it goes (see `area` for the map).
`write_firmware` copies them into guest RAM before the guest starts, where
a BIOS would have left them.

What is built:

- with interrupt controllers (KVM's in-kernel irqchip: PICs, I/O APIC, a
  local APIC per vCPU): the MP floating pointer and configuration table, and
  with ACPI the MADT. Without them there is no APIC to describe: no MP
  table (MP Specification 1.4, 3.1: a uniprocessor PC has none) and no MADT;
- with ACPI (`--acpi on`, the default, as QEMU's): RSDP, XSDT, RSDT, FADT,
  FACS, DSDT, then MADT and `extra_tables` (room for an HPET table) in the
  root tables' lists. `--acpi off` leaves every ACPI structure out, as QEMU's
  `-machine acpi=off` does; the MP tables stay, as SeaBIOS leaves them.
"""

from __future__ import annotations

from pyvmm.devices import acpi_pm
from pyvmm.firmware import area, mptable
from pyvmm.firmware.acpi import dsdt, fadt, madt, rsdp, sdt
from pyvmm.firmware.mptable import CpuIdentity

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:  # only for hints: building the tables needs no compiled _kvm module
    from pyvmm.memory.guest_memory import GuestMemory

__all__ = [
    "CpuIdentity",
    "FirmwareConfig",
    "FirmwareTables",
    "Placed",
    "build_firmware",
    "firmware_ranges",
    "write_firmware",
]

# Where each structure starts inside its area (ACPI 6.3 5.2.5.1: the RSDP on a 16-byte
# boundary; MP 4.1: the floating pointer too; 5.2.10: the FACS on a 64-byte one).
TABLE_ALIGNMENT = 16


class FirmwareConfig:
    """What the tables describe.

    `cpus` vCPUs with APIC IDs 0..cpus-1, each with CPUID identity `cpu`;
    `interrupt_controllers`: the in-kernel irqchip is there; `acpi`: build
    the ACPI tables. The legacy devices the FADT and DSDT describe when they
    are on the port bus: `rtc`, the CMOS RTC at 0x70 (century byte, PNP0B00);
    `i8042`, the keyboard controller at 0x60/0x64 (IAPC_BOOT_ARCH 8042,
    PNP0303 and PNP0F13); `reset_register`, port 0xcf9 (RESET_REG).
    `extra_tables`: further whole ACPI description tables (header and
    checksum included, e.g. an HPET table) for the RSDT and XSDT. `virtio`:
    the virtio-mmio transports as (base, GSI), LNRO0005 devices in the
    DSDT. Read-only once made.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = (
        "acpi",
        "cpu",
        "cpus",
        "extra_tables",
        "i8042",
        "interrupt_controllers",
        "reset_register",
        "rtc",
        "virtio",
    )

    def __init__(
        self,
        cpus: int,
        cpu: CpuIdentity,
        interrupt_controllers: bool,
        acpi: bool = True,
        rtc: bool = True,
        i8042: bool = True,
        reset_register: bool = True,
        extra_tables: tuple[bytes, ...] = (),
        virtio: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.cpus = cpus
        self.cpu = cpu
        self.interrupt_controllers = interrupt_controllers
        self.acpi = acpi
        self.rtc = rtc
        self.i8042 = i8042
        self.reset_register = reset_register
        self.extra_tables = extra_tables
        self.virtio = virtio

    def key(self) -> tuple[object, ...]:
        """Every field, as one hashable value: configs with equal keys get equal tables."""
        return (
            self.cpus,
            self.cpu.signature,
            self.cpu.features,
            self.interrupt_controllers,
            self.acpi,
            self.rtc,
            self.i8042,
            self.reset_register,
            self.extra_tables,
            self.virtio,
        )


class Placed:
    """One structure: `data` at guest-physical `gpa`, named by `what` (read-only)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("data", "gpa", "what")

    def __init__(self, gpa: int, data: bytes, what: str) -> None:
        self.gpa = gpa
        self.data = data
        self.what = what

    @property
    def end(self) -> int:
        return self.gpa + len(self.data)


class FirmwareTables:
    """Every structure `build_firmware` made, in address order (read-only)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("placed",)

    def __init__(self, placed: tuple[Placed, ...]) -> None:
        self.placed = placed

    def ranges(self) -> list[tuple[int, int, str]]:
        """(start, end, what) of each structure: what an image must stay clear of."""
        return [(item.gpa, item.end, item.what) for item in self.placed]

    def find(self, signature: bytes) -> Placed | None:
        """The structure whose bytes start with `signature` (b"APIC", b"_MP_"...), if built."""
        return next((item for item in self.placed if item.data.startswith(signature)), None)


class _Area:
    """Hands out aligned room in [start, end), refusing to overflow it."""

    def __init__(self, start: int, end: int, name: str) -> None:
        self.cursor = start
        self.end = end
        self.name = name

    def place(self, data: bytes, what: str, alignment: int = TABLE_ALIGNMENT) -> Placed:
        gpa = -(-self.cursor // alignment) * alignment
        if gpa + len(data) > self.end:
            raise ValueError(
                f"{what} ({len(data)} bytes) does not fit in the {self.name} area, "
                f"which ends at 0x{self.end:x}"
            )
        self.cursor = gpa + len(data)
        return Placed(gpa, data, what)


# The tables are a pure function of the config: a process that builds many alike
# machines (the library's create-run-destroy) builds their bytes once.
_BUILT_LIMIT = 16
_built: dict[tuple[object, ...], FirmwareTables] = {}


def build_firmware(config: FirmwareConfig) -> FirmwareTables:
    """The firmware structures for `config` (ValueError for a vCPU count outside 1..255).

    Equal configs (`FirmwareConfig.key`) give the same, read-only, FirmwareTables.
    """
    key = config.key()
    tables = _built.get(key)
    if tables is None:
        tables = _build(config)
        if len(_built) >= _BUILT_LIMIT:
            _built.pop(next(iter(_built)))  # the oldest
        _built[key] = tables
    return tables


def _build(config: FirmwareConfig) -> FirmwareTables:
    bios = _Area(area.BIOS_TABLES_GPA, area.BIOS_TABLES_END, "BIOS tables")
    # What a scan of the BIOS area looks for comes first: the floating pointer, the RSDP.
    pointer = (
        bios.place(bytes(mptable.FLOATING_POINTER.size), "")
        if config.interrupt_controllers
        else None
    )
    pointer_to_rsdt = bios.place(bytes(rsdp.RSDP_SIZE), "") if config.acpi else None
    placed: list[Placed] = []
    if pointer is not None:
        table = bios.place(mptable.config_table(config.cpus, config.cpu), _mp_what(config.cpus))
        placed.append(
            Placed(pointer.gpa, mptable.floating_pointer(table.gpa), "MP floating pointer")
        )
        placed.append(table)
    if pointer_to_rsdt is not None:
        placed += _acpi_tables(config, pointer_to_rsdt.gpa)
    return FirmwareTables(tuple(sorted(placed, key=lambda item: item.gpa)))


def _mp_what(cpus: int) -> str:
    routes = len(mptable.isa_interrupt_routes())
    return (
        f"MP configuration table: {cpus} processor{'s' if cpus > 1 else ''}, ISA bus, "
        f"I/O APIC, {routes} ISA interrupts, LINT0/LINT1"
    )


def _acpi_tables(config: FirmwareConfig, rsdp_gpa: int) -> list[Placed]:
    nvs = _Area(area.ACPI_NVS_GPA, area.ACPI_NVS_END, "ACPI NVS")
    tables = _Area(area.ACPI_TABLES_GPA, area.ACPI_TABLES_END, "ACPI tables")
    facs = nvs.place(fadt.facs(), "ACPI FACS", fadt.FACS_ALIGNMENT)
    devices = ["COM1", *(["RTC"] if config.rtc else []), *(["i8042"] if config.i8042 else [])]
    dsdt_table = tables.place(
        dsdt.dsdt(rtc=config.rtc, i8042=config.i8042, virtio=config.virtio),
        f"ACPI DSDT: \\_S5, {', '.join(devices)}",
    )
    fadt_table = tables.place(
        fadt.fadt(
            facs.gpa,
            dsdt_table.gpa,
            rtc=config.rtc,
            i8042=config.i8042,
            reset_register=config.reset_register,
        ),
        f"ACPI FADT: PM1a_EVT 0x{acpi_pm.PM1A_EVT_BLK:x}, PM1a_CNT 0x{acpi_pm.PM1A_CNT_BLK:x}, "
        f"PM_TMR 0x{acpi_pm.PM_TMR_BLK:x}, SCI IRQ {madt.SCI_IRQ}",
    )
    listed = [fadt_table]
    if config.interrupt_controllers:
        overrides = ", ".join(f"IRQ {o.source}->GSI {o.gsi}" for o in madt.OVERRIDES)
        listed.append(
            tables.place(
                madt.madt(config.cpus),
                f"ACPI MADT: {config.cpus} local APIC{'s' if config.cpus > 1 else ''}, "
                f"I/O APIC, {overrides}",
            )
        )
    for extra in config.extra_tables:
        listed.append(tables.place(extra, f"ACPI {extra[:4].decode('ascii', 'replace')}"))
    addresses = [item.gpa for item in listed]
    xsdt = tables.place(sdt.xsdt(addresses), "ACPI XSDT")
    rsdt = tables.place(sdt.rsdt(addresses), "ACPI RSDT")
    pointer = Placed(rsdp_gpa, rsdp.rsdp(rsdt.gpa, xsdt.gpa), "ACPI RSDP (revision 2)")
    return [pointer, facs, dsdt_table, *listed, xsdt, rsdt]


def firmware_ranges(*, interrupt_controllers: bool, acpi: bool) -> list[tuple[int, int, str]]:
    """(start, end, what) of the areas `build_firmware` fills for such a machine.

    Known before the machine's devices are (an image is placed first), so
    they are the whole areas of `area`, which hold the tables whatever the
    devices.
    """
    ranges = []
    if acpi:
        ranges.append((area.ACPI_NVS_GPA, area.ACPI_NVS_END, "the firmware's ACPI FACS"))
        ranges.append((area.ACPI_TABLES_GPA, area.ACPI_TABLES_END, "the firmware's ACPI tables"))
    if acpi or interrupt_controllers:
        what = (
            "the firmware's MP tables and ACPI RSDP"
            if acpi and interrupt_controllers
            else ("the firmware's ACPI RSDP" if acpi else "the firmware's MP tables")
        )
        ranges.append((area.BIOS_TABLES_GPA, area.BIOS_TABLES_END, what))
    return ranges


def write_firmware(memory: GuestMemory, tables: FirmwareTables) -> None:
    """Copy every structure into guest RAM (GuestMemoryError if one lies outside it)."""
    for item in tables.placed:
        memory.write(item.gpa, item.data)
