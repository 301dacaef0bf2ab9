"""The firmware tables, byte by byte: MP Specification 1.4 and ACPI 6.3 layouts, lengths,
revisions and checksums, and where build_firmware puts them (no KVM)."""

from __future__ import annotations

import itertools
import struct

import pytest

from pyvmm.devices import acpi_pm
from pyvmm.firmware import area, mptable
from pyvmm.firmware.acpi import aml, dsdt, fadt, madt, rsdp, sdt
from pyvmm.firmware.table import checksum, is_checksummed, set_checksum, text_field
from pyvmm.firmware.tables import (
    CpuIdentity,
    FirmwareConfig,
    FirmwareTables,
    build_firmware,
    firmware_ranges,
)

CPU = CpuIdentity(signature=0x000A0F11, features=0x178BFBFF)


def build(cpus: int = 2, **overrides: object) -> FirmwareTables:
    return build_firmware(FirmwareConfig(cpus, CPU, True, **overrides))  # type: ignore[arg-type]


def header(table: bytes) -> tuple:
    return sdt.HEADER.unpack_from(table)


def entries_of_root(table: bytes, size: int) -> list[int]:
    count = (len(table) - sdt.HEADER_SIZE) // size
    return list(struct.unpack_from(f"<{count}{'I' if size == 4 else 'Q'}", table, 36))


# --- the checksum both specifications use


def test_checksum_makes_the_bytes_sum_to_zero() -> None:
    data = bytearray(b"\x10\x20\x00\xff")
    set_checksum(data, 2)
    assert sum(data) % 256 == 0 and data[2] == checksum(b"\x10\x20\x00\xff")
    assert is_checksummed(data) and not is_checksummed(b"\x01")


def test_text_fields_are_padded_and_refused_when_too_long() -> None:
    assert text_field("ISA", 6) == b"ISA   "
    with pytest.raises(ValueError):
        text_field("TOOLONG", 6)


# --- MP Specification 1.4


def test_mp_floating_pointer() -> None:
    pointer = mptable.floating_pointer(0xF1040)
    assert len(pointer) == 16 and is_checksummed(pointer)
    signature, physical, length, revision, _checksum, features = mptable.FLOATING_POINTER.unpack(
        pointer
    )
    assert (signature, physical, length, revision) == (b"_MP_", 0xF1040, 1, 4)
    assert features == bytes(5)  # a configuration table, no IMCR: virtual wire mode
    with pytest.raises(ValueError):
        mptable.floating_pointer(1 << 32)


def parse_mp(table: bytes) -> tuple[tuple, list[tuple]]:
    fields = mptable.CONFIG_HEADER.unpack_from(table)
    entries, offset = [], mptable.CONFIG_HEADER.size
    for _ in range(fields[8]):
        kind = table[offset]
        layout = mptable.PROCESSOR_ENTRY if kind == 0 else (
            mptable.BUS_ENTRY if kind == 1 else
            mptable.IO_APIC_ENTRY if kind == 2 else mptable.INTERRUPT_ENTRY
        )  # fmt: skip
        entries.append(layout.unpack_from(table, offset))
        offset += layout.size
    assert offset == len(table)
    return fields, entries


@pytest.mark.parametrize("cpus", [1, 2, 255])
def test_mp_configuration_table(cpus: int) -> None:
    table = mptable.config_table(cpus, CPU)
    assert is_checksummed(table)
    fields, entries = parse_mp(table)
    signature, length, revision = fields[:3]
    assert (signature, length, revision) == (b"PCMP", len(table), 4)
    assert fields[9] == area.LOCAL_APIC_GPA and fields[10:12] == (0, 0)  # no extended table
    processors = [entry for entry in entries if entry[0] == 0]
    assert [(entry[1], entry[3]) for entry in processors] == [
        (index, 0x03 if index == 0 else 0x01) for index in range(cpus)
    ]  # APIC ID = vCPU index, all enabled, the BSP flag on vCPU 0 alone
    assert {(entry[2], entry[4], entry[5]) for entry in processors} == {
        (area.LOCAL_APIC_VERSION, CPU.signature, CPU.features)
    }
    rest = entries[cpus:]
    assert rest[0] == (1, 0, b"ISA   ")
    assert rest[1] == (2, 0, 0x11, 1, 0xFEC00000)
    io = [(entry[4], entry[5], entry[6]) for entry in rest if entry[0] == 3]
    # SeaBIOS's list: IRQ 0 on pin 2, no IRQ 2, none of QEMU's PCI IRQs 5, 9, 10, 11.
    assert io == [(irq, 0, 2 if irq == 0 else irq) for irq in (0, 1, 3, 4, 6, 7, 8, 12, 13, 14, 15)]
    assert all(entry[1:4] == (0, 0, 0) for entry in rest if entry[0] == 3)  # INT, ISA bus
    local = [entry for entry in rest if entry[0] == 4]
    assert local == [(4, 3, 0, 0, 0, 0, 0), (4, 1, 0, 0, 0, 0xFF, 1)]  # ExtINT, NMI


@pytest.mark.parametrize("cpus", [0, 256])
def test_mp_table_refuses_counts_xapic_ids_cannot_name(cpus: int) -> None:
    with pytest.raises(ValueError):
        mptable.config_table(cpus, CPU)
    with pytest.raises(ValueError):
        madt.madt(cpus)


# --- ACPI 6.3


def test_rsdp_revision_2_with_both_checksums() -> None:
    pointer = rsdp.rsdp(0xE12B0, 0xE1270)
    assert len(pointer) == 36
    assert is_checksummed(pointer[:20]) and is_checksummed(pointer)
    signature, _, oem, revision, rsdt_gpa, length, xsdt_gpa, _ = rsdp.RSDP.unpack(pointer)
    assert (signature, oem, revision) == (b"RSD PTR ", b"PYVMM ", 2)
    assert (rsdt_gpa, length, xsdt_gpa) == (0xE12B0, 36, 0xE1270)


def test_root_tables() -> None:
    rsdt, xsdt = sdt.rsdt([0xE10E0, 0xE1200]), sdt.xsdt([0xE10E0, 0xE1200])
    for table, signature, size in ((rsdt, b"RSDT", 4), (xsdt, b"XSDT", 8)):
        assert is_checksummed(table)
        fields = header(table)
        assert fields[:3] == (signature, len(table), 1)
        assert fields[4:6] == (b"PYVMM ", b"PYVMM   ")
        assert entries_of_root(table, size) == [0xE10E0, 0xE1200]


def test_madt() -> None:
    table = madt.madt(2)
    assert is_checksummed(table)
    assert header(table)[:3] == (b"APIC", len(table), 5)
    assert struct.unpack_from("<II", table, 36) == (0xFEE00000, 1)  # PCAT_COMPAT
    offset, found = 44, []
    while offset < len(table):
        length = table[offset + 1]
        found.append(table[offset : offset + length])
        offset += length
    assert offset == len(table)
    assert [struct.unpack("<BBBBI", item) for item in found[:2]] == [
        (0, 8, 0, 0, 1),
        (0, 8, 1, 1, 1),
    ]  # UID = APIC ID = vCPU index, enabled
    assert struct.unpack("<BBBBII", found[2]) == (1, 12, 0, 0, 0xFEC00000, 0)
    assert [struct.unpack("<BBBBIH", item) for item in found[3:5]] == [
        (2, 10, 0, 0, 2, 0x0000),  # the PIT on GSI 2, conforming
        (2, 10, 0, 9, 9, 0x000D),  # the SCI: level, active high
    ]
    assert struct.unpack("<BBBHB", found[5]) == (4, 6, 0xFF, 0, 1)  # NMI on every LINT1
    assert len(found) == 6


def test_fadt_revision_6_points_at_the_pm_blocks() -> None:
    table = fadt.fadt(0xE0000, 0xE1000)
    assert len(table) == 276 and is_checksummed(table)
    assert header(table)[:3] == (b"FACP", 276, 6)
    (facs, dsdt_gpa, _, _, sci, smi_cmd) = struct.unpack_from("<IIBBHI", table, 36)
    assert (facs, dsdt_gpa, sci, smi_cmd) == (0xE0000, 0xE1000, 9, 0)
    assert struct.unpack_from("<8I", table, 56) == (0x600, 0, 0x604, 0, 0, 0x608, 0, 0)
    assert struct.unpack_from("<4B", table, 88) == (4, 2, 0, 4)  # PM1_EVT/CNT, PM2, PM_TMR
    flags = struct.unpack_from("<I", table, 112)[0]
    assert flags & fadt.HW_REDUCED_ACPI == 0 and flags & fadt.TMR_VAL_EXT == 0  # 24-bit timer
    assert flags & fadt.RESET_REG_SUP
    assert table[131] == 3  # minor revision: ACPI 6.3
    assert struct.unpack_from("<QQ", table, 132) == (0xE0000, 0xE1000)  # X_FIRMWARE_CTRL, X_DSDT
    gas = [sdt.GAS.unpack_from(table, 148 + 12 * index) for index in range(10)]
    assert gas[0] == (1, 32, 0, sdt.ACCESS_WORD, 0x600)  # X_PM1a_EVT_BLK, system I/O
    assert gas[2] == (1, 16, 0, sdt.ACCESS_WORD, 0x604)  # X_PM1a_CNT_BLK
    assert gas[5] == (1, 32, 0, sdt.ACCESS_DWORD, 0x608)  # X_PM_TMR_BLK
    assert all(gas[index] == (0, 0, 0, 0, 0) for index in (1, 3, 4, 6, 7, 8, 9))
    assert sdt.GAS.unpack_from(table, 116) == (1, 8, 0, sdt.ACCESS_BYTE, 0xCF9)
    assert table[128] == 0x06  # RESET_VALUE
    assert table[108] == 0x32 and struct.unpack_from("<H", table, 109)[0] == 0x3  # legacy, 8042


def test_fadt_without_rtc_i8042_or_reset_register_says_so() -> None:
    table = fadt.fadt(0xE0000, 0xE1000, rtc=False, i8042=False, reset_register=False)
    assert is_checksummed(table)
    boot_arch = struct.unpack_from("<H", table, 109)[0]
    assert table[108] == 0 and boot_arch == fadt.LEGACY_DEVICES | fadt.CMOS_RTC_NOT_PRESENT
    assert struct.unpack_from("<I", table, 112)[0] & fadt.RESET_REG_SUP == 0
    assert table[116:129] == bytes(13)


def test_facs() -> None:
    table = fadt.facs()
    assert len(table) == 64
    assert fadt.FACS.unpack(table) == (b"FACS", 64, 0, 0, 0, 0, 0, 2, 0)


def test_dsdt_holds_s5_and_the_legacy_devices() -> None:
    table = dsdt.dsdt()
    assert is_checksummed(table)
    assert header(table)[:3] == (b"DSDT", len(table), 2)
    body = table[36:]
    # Name (\_S5, Package (4) { Zero, Zero, Zero, Zero }): the bytes a kernel looks for.
    assert body.startswith(b"\x08\\_S5_\x12\x06\x04\x00\x00\x00\x00")
    for hid in ("PNP0501", "PNP0B00", "PNP0303", "PNP0F13"):
        assert aml.eisa_id(hid) in body
    smaller = dsdt.dsdt(rtc=False, i8042=False)
    assert aml.eisa_id("PNP0501") in smaller and aml.eisa_id("PNP0B00") not in smaller


# --- the AML encoder


@pytest.mark.parametrize(
    ("body_size", "encoded"),
    [(0, b"\x01"), (62, b"\x3f"), (63, b"\x41\x04"), (4093, b"\x4f\xff"), (4094, b"\x81\x00\x01")],
)
def test_pkg_length_counts_itself(body_size: int, encoded: bytes) -> None:
    assert aml.pkg_length(body_size) == encoded


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (2, b"\x0a\x02"),
        (0x100, b"\x0b\x00\x01"),
        (0x10000, b"\x0c\x00\x00\x01\x00"),
        (1 << 32, b"\x0e" + (1 << 32).to_bytes(8, "little")),
    ],
)
def test_integers_take_the_shortest_encoding(value: int, encoded: bytes) -> None:
    assert aml.integer(value) == encoded


def test_names_eisa_ids_and_resources() -> None:
    assert aml.name_string("_S5") == b"_S5_"
    assert aml.name_string("\\_SB") == b"\\_SB_"
    assert aml.name_string("\\_SB.COM1") == b"\\\x2e_SB_COM1"
    assert aml.name_string("\\A.B.C") == b"\\\x2f\x03A___B___C___"
    assert aml.eisa_id("PNP0501") == b"\x0c" + struct.pack("<I", 0x0105D041)
    assert aml.io_port(0x3F8, 8) == b"\x47\x01\xf8\x03\xf8\x03\x01\x08"
    assert aml.irq(4) == b"\x22\x10\x00"
    assert aml.resource_template([]) == b"\x11\x05\x0a\x02\x79\x00"
    for bad in (lambda: aml.name_seg("5AB"), lambda: aml.eisa_id("pnp0501"), lambda: aml.irq(16)):
        with pytest.raises(ValueError):
            bad()


# --- where build_firmware puts everything


def test_every_structure_where_a_kernel_looks_and_inside_its_area() -> None:
    tables = build()
    signatures = [item.data[:4] for item in tables.placed]
    assert sorted(signatures) == sorted(
        [b"_MP_", b"PCMP", b"RSD ", b"FACS", b"DSDT", b"FACP", b"APIC", b"XSDT", b"RSDT"]
    )
    pointer, rsdp_item = tables.find(b"_MP_"), tables.find(b"RSD PTR ")
    assert pointer is not None and rsdp_item is not None
    assert 0xF0000 <= pointer.gpa < 0x100000 and pointer.gpa % 16 == 0  # MP 4.1
    assert 0xE0000 <= rsdp_item.gpa < 0x100000 and rsdp_item.gpa % 16 == 0  # ACPI 5.2.5.1
    facs = tables.find(b"FACS")
    assert facs is not None and facs.gpa % 64 == 0
    ranges = firmware_ranges(interrupt_controllers=True, acpi=True)
    spans = sorted((item.gpa, item.end) for item in tables.placed)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start  # no two overlap
    for item in tables.placed:
        assert any(low <= item.gpa and item.end <= high for low, high, _ in ranges), item.what
    # The FACS in the NVS page, the description tables in the reclaimable one.
    assert facs.gpa >= area.ACPI_NVS_GPA and facs.end <= area.ACPI_NVS_END
    for signature in (b"DSDT", b"FACP", b"APIC", b"XSDT", b"RSDT"):
        item = tables.find(signature)
        assert item is not None
        assert item.gpa >= area.ACPI_TABLES_GPA and item.end <= area.ACPI_TABLES_END


def test_pointers_lead_to_the_tables() -> None:
    tables = build()
    by_signature = {item.data[:4]: item for item in tables.placed}
    pointer = mptable.FLOATING_POINTER.unpack(by_signature[b"_MP_"].data)
    assert pointer[1] == by_signature[b"PCMP"].gpa
    _, _, _, _, rsdt_gpa, _, xsdt_gpa, _ = rsdp.RSDP.unpack(by_signature[b"RSD "].data)
    assert (rsdt_gpa, xsdt_gpa) == (by_signature[b"RSDT"].gpa, by_signature[b"XSDT"].gpa)
    listed = [by_signature[b"FACP"].gpa, by_signature[b"APIC"].gpa]
    assert entries_of_root(by_signature[b"RSDT"].data, 4) == listed
    assert entries_of_root(by_signature[b"XSDT"].data, 8) == listed
    fadt_table = by_signature[b"FACP"].data
    assert struct.unpack_from("<II", fadt_table, 36) == (
        by_signature[b"FACS"].gpa,
        by_signature[b"DSDT"].gpa,
    )


def test_255_vcpus_fit() -> None:
    tables = build(255)
    madt_item, mp_item = tables.find(b"APIC"), tables.find(b"PCMP")
    assert madt_item is not None and mp_item is not None
    assert mp_item.end <= area.BIOS_TABLES_END and madt_item.end <= area.ACPI_TABLES_END


def test_acpi_off_leaves_out_every_acpi_structure_but_keeps_the_mp_tables() -> None:
    tables = build(acpi=False)
    assert [item.data[:4] for item in tables.placed] == [b"_MP_", b"PCMP"]
    assert firmware_ranges(interrupt_controllers=True, acpi=False) == [
        (area.BIOS_TABLES_GPA, area.BIOS_TABLES_END, "the firmware's MP tables")
    ]


def test_without_interrupt_controllers_there_is_no_apic_to_describe() -> None:
    tables = build_firmware(FirmwareConfig(1, CPU, interrupt_controllers=False))
    signatures = {item.data[:4] for item in tables.placed}
    assert not signatures & {b"_MP_", b"PCMP", b"APIC"}
    assert {b"RSD ", b"FACP", b"DSDT"} <= signatures
    assert build_firmware(FirmwareConfig(1, CPU, False, acpi=False)).placed == ()
    assert firmware_ranges(interrupt_controllers=False, acpi=False) == []


def test_extra_tables_are_listed_after_the_madt() -> None:
    hpet = sdt.table(b"HPET", 1, bytes(20))
    tables = build(extra_tables=(hpet,))
    placed = tables.find(b"HPET")
    assert placed is not None and placed.data == hpet
    xsdt = tables.find(b"XSDT")
    assert xsdt is not None and entries_of_root(xsdt.data, 8)[-1] == placed.gpa


def test_the_fadt_and_dsdt_describe_only_the_devices_there() -> None:
    tables = build(rtc=False, i8042=False, reset_register=False)
    dsdt_item, fadt_item = tables.find(b"DSDT"), tables.find(b"FACP")
    assert dsdt_item is not None and fadt_item is not None
    assert aml.eisa_id("PNP0B00") not in dsdt_item.data
    assert fadt_item.data == fadt.fadt(
        tables.find(b"FACS").gpa,  # type: ignore[union-attr]
        dsdt_item.gpa,
        rtc=False,
        i8042=False,
        reset_register=False,
    )
    assert acpi_pm.PM_TMR_BLK == 0x608  # what the FADT says is where the device sits


# --- the tables of equal configs are built once


def test_equal_configs_share_their_tables_and_every_field_tells_configs_apart() -> None:
    first = build(2, rtc=False)
    assert build(2, rtc=False) is first  # built once
    fresh = tables_tests_fresh(2, rtc=False)
    assert [(p.gpa, p.data, p.what) for p in first.placed] == [
        (p.gpa, p.data, p.what) for p in fresh.placed
    ]
    base = FirmwareConfig(2, CPU, True)
    changed = {
        "acpi": False,
        "cpu": CpuIdentity(CPU.signature + 1, CPU.features),
        "cpus": 3,
        "extra_tables": (sdt.table(b"HPET", 1, bytes(20)),),
        "i8042": False,
        "interrupt_controllers": False,
        "reset_register": False,
        "rtc": False,
        "virtio": ((0xD000_0000, 5),),
    }
    assert sorted(changed) == sorted(FirmwareConfig.__slots__)  # every field is tried
    for field, value in changed.items():
        other = FirmwareConfig(2, CPU, True)
        setattr(other, field, value)
        assert other.key() != base.key(), field
    identity = CpuIdentity(CPU.signature, CPU.features + 1)
    assert FirmwareConfig(2, identity, True).key() != base.key()
    assert build_firmware(FirmwareConfig(2, identity, True)) is not build_firmware(base)


def tables_tests_fresh(cpus: int, **overrides: object) -> FirmwareTables:
    """Built without the cache: what build_firmware's first call made."""
    from pyvmm.firmware import tables

    return tables._build(FirmwareConfig(cpus, CPU, True, **overrides))  # type: ignore[arg-type]
