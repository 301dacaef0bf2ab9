"""The MP and ACPI tables on a real guest: found by kernels as under QEMU, checked by iasl.

guests/tests/mp_tables.elf finds the processors through the MP floating
pointer, guests/tests/acpi_tables.elf through RSDP -> XSDT/RSDT -> MADT,
with the PM timer through the FADT (and its rate against PIT channel 2),
guests/tests/acpi_s5.elf powers off through PM1a_CNT. Each runs under QEMU
(TCG) and pyvmm, and prints the same lines and ends with the same status.
The tables are also read back from a guest's memory after its run, as a
kernel finds them, and disassembled with ACPICA's iasl, which must report
no error and show what pyvmm put there.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import pyvmm
from pyvmm.machine.builder import Machine
from tests.integration.helpers import GUESTS, guest, run_pyvmm
from tests.integration.qemu import run_qemu

IASL = "iasl"
PASS = 1  # debug-exit 0
FAIL = 3  # debug-exit 1


def require_iasl() -> str:
    """iasl, or skip (fail with PYVMM_REQUIRE_TOOLS=1) when it is missing."""
    path = shutil.which(IASL)
    if path is None:
        message = f"{IASL} is not installed (apt-get install acpica-tools)"
        if os.environ.get("PYVMM_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def compare_with_qemu(image: str, qemu_args: list[str], pyvmm_args: list[str]) -> str:
    """Run `image` under both; assert the same console and status; the console."""
    qemu = run_qemu(GUESTS / image, *qemu_args)
    ours = run_pyvmm("boot", *pyvmm_args, guest(image), "--timeout", "60")
    assert ours.stdout == qemu.stdout.decode(), ours.stderr
    assert ours.returncode == qemu.returncode, ours.stderr
    return ours.stdout


def test_mp_tables_list_both_processors_as_under_qemu() -> None:
    # sockets=2: SeaBIOS lists one processor per package (see mp_tables.s).
    output = compare_with_qemu("tests/mp_tables.elf", ["-smp", "2,sockets=2"], ["-smp", "2"])
    lines = output.splitlines()
    assert lines[0] == "mp: floating pointer ok, spec 1.4, config table ok"
    assert "cpu: apic 0 version 14 enabled bsp" in lines
    assert "cpu: apic 1 version 14 enabled" in lines
    assert "ioapic: id 0 version 11 at fec00000" in lines
    assert "isa irq 0 -> ioapic 0 pin 2" in lines
    assert lines[-1] == "mp: 2 processors"


def test_acpi_tables_list_processors_ioapic_overrides_and_pm_timer_as_under_qemu() -> None:
    output = compare_with_qemu("tests/acpi_tables.elf", ["-smp", "2"], ["-smp", "2"])
    assert output.splitlines() == [
        "acpi: rsdp ok, root table and every table it lists checksum ok",
        "fadt: sci irq 9, pm1a_evt 0600 pm1a_cnt 0604 pm_tmr 0608 (4 bytes, 24-bit)",
        "madt: local apic at fee00000, pcat_compat 1",
        "madt: processor 0 apic 0 enabled",
        "madt: processor 1 apic 1 enabled",
        "madt: ioapic 0 at fec00000, gsi base 0",
        "madt: isa irq 0 -> gsi 2 flags 0000",
        "madt: isa irq 9 -> gsi 9 flags 000d",
        "pmtimer: counting",
        "pmtimer: 3 ticks per PIT tick, 3.58 MHz",
        "acpi: 2 processors",
    ]


def test_acpi_off_leaves_no_rsdp_as_qemu_acpi_off_does() -> None:
    output = compare_with_qemu(
        "tests/acpi_tables.elf", ["-smp", "2", "-machine", "acpi=off"], ["-smp", "2", "-no-acpi"]
    )
    assert output == "acpi: no rsdp\n"


def test_mp_tables_stay_with_acpi_off() -> None:
    result = run_pyvmm("boot", "-smp", "2", "--acpi", "off", guest("tests/mp_tables.elf"))
    assert result.returncode == PASS, result.stderr
    assert result.stdout.splitlines()[-1] == "mp: 2 processors"


def test_acpi_soft_off_ends_the_run_with_status_0_as_qemu_powers_off() -> None:
    output = compare_with_qemu("tests/acpi_s5.elf", [], [])
    assert output == "s5: slp_typ 0, pm1a_cnt 0604\n"
    result = run_pyvmm("boot", guest("tests/acpi_s5.elf"))
    assert result.returncode == 0
    assert result.stderr.startswith("pyvmm: guest powered the machine off: ACPI soft-off (S5")
    assert "RIP=" not in result.stderr  # a normal end: no register dump


def test_acpi_soft_off_without_acpi_is_not_there() -> None:
    result = run_pyvmm("boot", "--acpi", "off", guest("tests/acpi_s5.elf"))
    assert (result.returncode, result.stdout) == (FAIL, "s5: none\n")


def test_memmap_shows_the_tables() -> None:
    result = run_pyvmm("memmap", "-q", "-smp", "2", guest("tests/acpi_tables.elf"))
    assert result.returncode == 0, result.stderr
    rows = {line.split(None, 2)[2] for line in result.stdout.splitlines() if "  vmm  " in line}
    assert any(row.startswith("MP floating pointer") for row in rows)
    assert any(row.startswith("ACPI RSDP (revision 2)") for row in rows)
    assert any(row.startswith("ACPI MADT: 2 local APICs") for row in rows)
    assert any(row.startswith("ACPI FADT: PM1a_EVT 0x600") for row in rows)


# --- the tables as a kernel finds them in memory, disassembled by iasl


def find_tables(machine: Machine) -> dict[str, bytes]:
    """Every ACPI table reachable from the RSDP, read from guest memory, by signature."""
    bios = machine.read_physical(0xE0000, 0x20000)
    offset = next((at for at in range(0, len(bios), 16) if bios[at : at + 8] == b"RSD PTR "), None)
    assert offset is not None, "no RSDP in 0xe0000-0xfffff"
    pointer = bios[offset : offset + 36]
    xsdt_gpa = struct.unpack_from("<Q", pointer, 24)[0]
    found = {"RSDP": pointer}

    def table_at(gpa: int) -> bytes:
        length = struct.unpack("<I", machine.read_physical(gpa + 4, 4))[0]
        return machine.read_physical(gpa, length)

    xsdt = table_at(xsdt_gpa)
    found["XSDT"] = xsdt
    found["RSDT"] = table_at(struct.unpack_from("<I", pointer, 16)[0])
    for (gpa,) in struct.iter_unpack("<Q", xsdt[36:]):
        table = table_at(gpa)
        found[table[:4].decode()] = table
    facs_gpa, dsdt_gpa = struct.unpack_from("<QQ", found["FACP"], 132)
    found["FACS"] = machine.read_physical(facs_gpa, 64)
    found["DSDT"] = table_at(dsdt_gpa)
    return found


def disassemble(iasl: str, directory: Path, name: str, data: bytes) -> str:
    path = directory / f"{name}.dat"
    path.write_bytes(data)
    result = subprocess.run(
        [iasl, "-d", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"\b(error|warning)", output, re.IGNORECASE), output
    return path.with_suffix(".dsl").read_text()


def test_the_tables_in_guest_memory_disassemble_cleanly(tmp_path: Path) -> None:
    iasl = require_iasl()
    with pyvmm.create_machine(
        guest("tests/acpi_tables.elf"), cpus=2, console=io.BytesIO()
    ) as machine:
        outcome = machine.run(timeout=60)
        assert outcome.exit_status == PASS, outcome.message
        tables = find_tables(machine)
    assert set(tables) == {"RSDP", "XSDT", "RSDT", "FACP", "APIC", "FACS", "DSDT"}
    # iasl -d reads tables with a standard header, and the FACS; the RSDP has neither.
    pointer = tables.pop("RSDP")
    assert pointer[15] == 2 and sum(pointer[:20]) % 256 == 0 and sum(pointer) % 256 == 0
    text = {name: disassemble(iasl, tmp_path, name, data) for name, data in tables.items()}

    assert re.search(r"Revision : 06", text["FACP"])
    assert re.search(r"PM Timer Block Address : 00000608", text["FACP"])
    assert re.search(r"PM1A Control Block Address : 00000604", text["FACP"])
    assert re.search(r"SCI Interrupt : 0009", text["FACP"])
    assert re.search(r"Hardware Reduced \(V5\) : 0", text["FACP"])
    madt = text["APIC"]
    assert len(re.findall(r"Subtable Type : 00 \[Processor Local APIC\]", madt)) == 2
    assert re.search(r"Local Apic ID : 01", madt)
    assert re.search(r"Subtable Type : 01 \[I/O APIC\]", madt)
    assert re.search(r"Address : FEC00000", madt)
    overrides = re.findall(r"Source : (\w\w)\s+\[\w+ \d+ +\d\]\s+Interrupt : (\w+)", madt)
    assert overrides == [("00", "00000002"), ("09", "00000009")]
    assert re.search(r"Name \(\\_S5, Package \(0x04\)", text["DSDT"])
    assert 'EisaId ("PNP0501")' in text["DSDT"]
    assert re.search(r"Signature : \"FACS\"", text["FACS"])
