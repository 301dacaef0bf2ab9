"""Guest-virtual is not guest-physical: a mapping the script adds, used by both sides.

pyvmm enters a long-mode guest on its own 4-level page tables, which map
the low 4 GiB one to one (CR3 = 0x1000). Before the run, this script adds
one 4 KiB page to them, as a kernel would: guest-virtual 0xffff800000000000
(PML4 entry 256, the usual start of a kernel's half) onto guest-physical
0x300000, with three new tables at 0x400000. It then writes a greeting
through that virtual address with `write_virtual`, which walks the same
tables the guest's MMU will. The 28-byte guest reads the greeting into RBX
and writes "PYVMM-HI" 8 bytes further on, then halts; the script finds it
at both addresses and shows the walk. The entries come back with bit 5
(Accessed) set, and the last one with bit 6 (Dirty): the guest's MMU used
them (Intel SDM vol. 3A, 4.8).

    python examples/page_tables.py
"""

from __future__ import annotations

import sys

import pyvmm

HIGH_GVA = 0xFFFF_8000_0000_0000
PAGE_GPA = 0x30_0000
TABLES_GPA = 0x40_0000  # a PDPT, a page directory and a page table, 4 KiB each
PRESENT_WRITABLE = 0b11  # P and R/W (Intel SDM vol. 3A, 4.5, tables 4-15 to 4-19)
GREETING = b"host-hi!"

# The guest (`as --64`, Intel syntax), as bytes and as the assembly they encode.
# fmt: off
GUEST = bytes.fromhex(
    "48 b8 00 00 00 00 00 80 ff ff"  # movabs rax, 0xffff800000000000
    "48 8b 18"                       # mov    rbx, [rax]      ; the host's greeting
    "48 b9 50 59 56 4d 4d 2d 48 49"  # movabs rcx, "PYVMM-HI"
    "48 89 48 08"                    # mov    [rax + 8], rcx
    "f4"                             # hlt
)
# fmt: on


def index(gva: int, level: int) -> int:
    """The 9-bit table index of `gva` at `level` (4: PML4 ... 1: page table)."""
    return (gva >> (12 + 9 * (level - 1))) & 0x1FF


def map_page(machine: pyvmm.Machine, gva: int, gpa: int) -> None:
    """Add one 4 KiB mapping to the guest's current 4-level tables (new lower tables)."""
    pml4 = machine.registers().cr3 & ~0xFFF
    pdpt, directory, table = TABLES_GPA, TABLES_GPA + 0x1000, TABLES_GPA + 0x2000
    for each in (pdpt, directory, table):
        machine.write_physical(each, bytes(0x1000))
    for parent, level, child in ((pml4, 4, pdpt), (pdpt, 3, directory), (directory, 2, table)):
        entry = (child | PRESENT_WRITABLE).to_bytes(8, "little")
        machine.write_physical(parent + 8 * index(gva, level), entry)
    machine.write_physical(
        table + 8 * index(gva, 1), (gpa | PRESENT_WRITABLE).to_bytes(8, "little")
    )


def main() -> int:
    with pyvmm.create_machine(GUEST, ram_size="16M", mode="long") as machine:
        map_page(machine, HIGH_GVA, PAGE_GPA)
        machine.write_virtual(HIGH_GVA, GREETING)
        print(
            f"host wrote {GREETING!r} at GVA 0x{HIGH_GVA:x}; "
            f"at GPA 0x{PAGE_GPA:x}: {machine.read_physical(PAGE_GPA, 8)!r}"
        )

        outcome = machine.run(timeout=30)
        print(f"outcome: {outcome.kind.value}, exit status {outcome.exit_status}")
        rbx = machine.registers().rbx.to_bytes(8, "little")
        print(f"guest read {rbx!r} into RBX")
        through_virtual = machine.read_virtual(HIGH_GVA + 8, 8)
        through_physical = machine.read_physical(PAGE_GPA + 8, 8)
        print(
            f"guest wrote {through_virtual!r} at GVA 0x{HIGH_GVA + 8:x}, "
            f"found at GPA 0x{PAGE_GPA + 8:x}: {through_physical!r}"
        )

        chain = machine.translate(HIGH_GVA + 8)
        for step in chain.walk.steps:
            print(
                f"  {step.level:<5} [{step.index:3}] at GPA 0x{step.entry_gpa:x} "
                f"= 0x{step.entry:016x}"
            )
        assert chain.gpa is not None
        print(
            f"  GVA 0x{chain.gva:x} -> GPA 0x{chain.gpa:x} ({chain.page_size >> 10} KiB page, "
            f"{chain.flags}); KVM_TRANSLATE agrees: {chain.agrees_with_kvm}"
        )

    ok = (
        outcome.kind is pyvmm.OutcomeKind.HALTED
        and rbx == GREETING
        and through_virtual == through_physical == b"PYVMM-HI"
        and chain.gpa == PAGE_GPA + 8
        and chain.agrees_with_kvm
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
