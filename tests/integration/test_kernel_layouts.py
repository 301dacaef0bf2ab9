"""Kernels laid out as real ones are boot as under QEMU's -kernel.

guests/tests/mb_*.elf are multiboot kernels with ELF headers in a PT_LOAD at
0, a trampoline segment at 0x8000 or 0x10000, a higher-half link (p_vaddr
0xc0100000, p_paddr 0x100000, e_entry virtual), or the whole kernel at
0x8000. pyvmm refused every one (it compared the span of the segments with
its structures, reserved 0x500-0x9100 whole, and looked for e_entry in the
physical ranges only); QEMU boots them. Each prints where it was entered and
what another segment put in memory (mb_layout.inc), and the same lines and
status under both are the test. guests/tests/low_elf64.elf lies over
pyvmm's default page tables and boot stack: pyvmm moves them and says where.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.integration.helpers import GUESTS, guest, run_pyvmm
from tests.integration.qemu import run_qemu

STATUS = 33  # debug-exit 0x10
LAYOUTS = {
    "mb_headers_at_0": ["entered at 0x0002000c", "0x00000000 holds 0x464c457f: ok"],
    "mb_trampoline_8000": ["entered at 0x0002000c", "0x00008000 holds 0xebf4fcfa: ok"],
    "mb_trampoline_10000": ["entered at 0x0008000c", "0x00010000 holds 0xebf4fcfa: ok"],
    "mb_higher_half": ["entered at 0x0010000c", "0x00100000 holds 0x1badb002: ok"],
    "mb_low_kernel": ["entered at 0x0000800c"],
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_kernel_laid_out_like_a_real_one_boots_as_under_qemu(name: str) -> None:
    image = f"tests/{name}.elf"
    qemu = run_qemu(GUESTS / image)
    pyvmm = run_pyvmm("boot", guest(image))
    assert qemu.returncode == STATUS, qemu.stdout + qemu.stderr
    assert pyvmm.returncode == STATUS, pyvmm.stdout + pyvmm.stderr
    assert pyvmm.stdout == qemu.stdout.decode()
    lines = pyvmm.stdout.splitlines()
    assert lines[0] == f"{name}: multiboot magic ok"
    assert [f"{name}: {line}" for line in LAYOUTS[name]] == lines[1 : 1 + len(LAYOUTS[name])]


@pytest.mark.parametrize("name", ["mb_higher_half", "mb_trampoline_10000"])
def test_mem_lower_and_the_first_memory_map_entry_are_qemus(name: str) -> None:
    """639 KiB, and available RAM up to the EBDA at 0x9fc00: what QEMU's option ROM reports.

    The other layout guests cannot check it under QEMU: QEMU copies their
    kernel over its own multiboot information at 0x9000 (hw/i386/multiboot.c).
    """
    pyvmm = run_pyvmm("boot", guest(f"tests/{name}.elf"))
    assert pyvmm.returncode == STATUS, pyvmm.stderr
    assert pyvmm.stdout.splitlines()[-1] == (
        f"{name}: mem_lower=639KiB mmap[0]: base=0x00000000 len=0x0009fc00 type=1"
    )
    assert run_qemu(GUESTS / f"tests/{name}.elf").stdout.decode() == pyvmm.stdout


def test_structures_an_image_occupies_are_moved_and_shown() -> None:
    """The guest prints CR3 and RSP as it finds them; `pyvmm memmap` says the same places."""
    image = guest("tests/low_elf64.elf")
    booted = run_pyvmm("boot", image)
    assert booted.returncode == STATUS, booted.stderr
    found = re.fullmatch(
        r"low_elf64: CR3=([0-9a-f]{16}) RSP=([0-9a-f]{16}) GDTR.BASE=([0-9a-f]{16})\n"
        r"low_elf64: stack ok\n",
        booted.stdout,
    )
    assert found, booted.stdout
    cr3, rsp, gdt = (int(value, 16) for value in found.groups())
    mapped = run_pyvmm("memmap", "-q", "--json", image)
    assert mapped.returncode == 0, mapped.stderr
    rows = json.loads(mapped.stdout)["memory_map"]
    image_row = next(row for row in rows if row["kind"] == "image")
    assert (image_row["start"], image_row["end"]) == (0x1000, 0x8_0000)
    moved = {row["description"].split(":")[0].split(" (")[0]: row for row in rows
             if row["kind"] == "vmm" and "(moved:" in row["description"]}  # fmt: skip
    assert set(moved) == {"PML4, PDPT, 4 PDs", "boot stack"}
    assert moved["PML4, PDPT, 4 PDs"]["start"] == cr3
    assert moved["boot stack"]["end"] == rsp
    for value in (cr3, rsp - 1):
        assert not 0x1000 <= value < 0x8_0000  # clear of the image
    assert gdt == 0x500  # the GDT's place was free: it stays
    verbose = run_pyvmm("boot", "-v", image)
    assert f"moved pyvmm's page tables from 0x1000 to 0x{cr3:x}" in verbose.stderr
