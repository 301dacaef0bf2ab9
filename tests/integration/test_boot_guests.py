"""Boot every guest in guests/ under KVM and check what it prints and how it ends."""

from __future__ import annotations

import re

import pytest

from tests.integration.helpers import GUESTS, guest, host_keeps_32bit_paging, run_pyvmm


def test_hello_prints_and_halts() -> None:
    result = run_pyvmm("boot", guest("hello.bin"))
    assert result.stdout == "Hello, world!\n"
    assert result.stderr == ""
    assert result.returncode == 0


def test_protected_mode_guest_sees_pe_without_paging() -> None:
    result = run_pyvmm("boot", "--mode", "protected", guest("protected.bin"))
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"protected mode: CR0=0x([0-9a-f]{8}) PE=1 PG=0\n", result.stdout)
    assert match, result.stdout
    cr0 = int(match.group(1), 16)
    assert cr0 & 1 and not cr0 & (1 << 31)


def test_paged_guest_sees_paging_and_pse() -> None:
    result = run_pyvmm("boot", "--mode", "paged", guest("paged.bin"))
    if not host_keeps_32bit_paging():
        # This host's KVM cannot run 32-bit paging at all: pyvmm must say so, clearly.
        assert result.returncode == 70
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert "cannot enter paged mode: KVM_SET_SREGS dropped CR0 bits 0x80000000" in (
            result.stderr
        )
        return
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(
        r"paged mode: CR0=0x([0-9a-f]{8}) CR4=0x([0-9a-f]{8}) PG=1 PSE=1\n", result.stdout
    )
    assert match, result.stdout
    cr0, cr4 = (int(group, 16) for group in match.groups())
    assert cr0 & (1 << 31) and cr0 & 1
    assert cr4 & (1 << 4)


def test_a_guest_turning_on_32_bit_paging_is_told_why_it_faults() -> None:
    """vmem32 enables 32-bit paging itself; where the host cannot run it, say so."""
    result = run_pyvmm("boot", "--mode", "protected", guest("vmem32.bin"))
    if host_keeps_32bit_paging():
        assert result.returncode == 0, result.stderr
        assert "vmem32: alias 0x80000000 and 0x80001000 share a page: ok" in result.stdout
        return
    assert result.returncode == 4  # triple-fault
    first = result.stderr.splitlines()[0]
    assert first.startswith("pyvmm: guest triple-faulted (KVM_EXIT_SHUTDOWN) at 'mov cr0, eax'")
    assert "cannot run 32-bit paging" in first


def test_long_mode_guest_sees_lma() -> None:
    result = run_pyvmm("boot", "--mode", "long", guest("long.bin"))
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(
        r"long mode: CR0=0x([0-9a-f]{16}) CR4=0x([0-9a-f]{16}) EFER=0x([0-9a-f]{16}) LMA=1\n",
        result.stdout,
    )
    assert match, result.stdout
    cr0, cr4, efer = (int(group, 16) for group in match.groups())
    assert cr0 & (1 << 31)
    assert cr4 & (1 << 5)
    assert efer & (1 << 10) and efer & (1 << 8)


def test_elf64_guest_runs_in_long_mode_and_uses_debug_exit() -> None:
    result = run_pyvmm("boot", guest("elf64.elf"))
    assert result.stdout == "ELF64 guest: long mode, EFER.LMA=1\n"
    # The guest writes 0x2a to port 0xf4: QEMU's rule gives (0x2a << 1) | 1.
    assert result.returncode == 85
    assert result.stderr == ""


def test_elf32_guest_runs_in_protected_mode() -> None:
    result = run_pyvmm("boot", guest("elf32.elf"))
    assert result.stdout == "ELF32 guest: protected mode, CR0.PE=1\n"
    assert result.returncode == 0, result.stderr


def test_string_io_of_every_size() -> None:
    result = run_pyvmm("boot", guest("tests/rep_io.bin"))
    assert result.returncode == 0, result.stderr
    # outsw/outsd units carry a character in their low byte and zeros above it,
    # which land in IER/FCR/LCR: wide writes are split across registers as on ISA.
    assert result.stdout == "outsb\noutsw\noutsd\nins ok\n"


def test_unassigned_mmio_reads_all_ones() -> None:
    result = run_pyvmm("boot", "--mode", "protected", guest("tests/mmio.bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "mmio read=0xffffffff\nmmio read8=0xff read16=0xffff\nmmio reread=0xffffffff\n"
    )


@pytest.mark.parametrize("memory", ["2M", "64M", "1G", "4G", "5000"])
def test_hello_with_various_memory_sizes(memory: str) -> None:
    # 4G and 5000 MiB put RAM on both sides of the PCI hole (two slots).
    result = run_pyvmm("boot", "-m", memory, guest("hello.bin"))
    assert (result.returncode, result.stdout) == (0, "Hello, world!\n"), result.stderr


def test_user_mode_guest_runs_at_cpl3_and_does_port_io() -> None:
    result = run_pyvmm("boot", "--mode", "user", guest("user.bin"))
    # The sum 1..1000000 is computed in ring 3; every character went through `out`.
    assert result.stdout == f"user mode: CPL=3 sum=0x{sum(range(1, 1000001)):016x}\n"
    assert result.returncode == 85, result.stderr


def test_user_mode_entry_state_as_kvm_holds_it() -> None:
    from pyvmm.loaders.entry import CpuMode
    from pyvmm.machine.builder import MachineConfig, build_machine

    image = (GUESTS / "user.bin").read_bytes()
    config = MachineConfig(
        image=image, ram_size=64 << 20, console=lambda data: None, mode=CpuMode.USER
    )
    with build_machine(config) as machine:
        regs, sregs = machine.vcpu.get_regs(), machine.vcpu.get_sregs()
        assert (regs.rflags >> 12) & 3 == 3  # IOPL=3
        assert (sregs.cs.selector, sregs.cs.dpl, sregs.cs.l) == (0x23, 3, 1)
        assert (sregs.ss.selector, sregs.ss.dpl) == (0x1B, 3)
        assert (sregs.tr.selector, sregs.tr.type, sregs.tr.present) == (0x28, 0xB, 1)
        assert sregs.efer & (1 << 10)  # long mode active
        # Every paging level lets CPL3 through.
        walk = machine.translate(0x100000).walk
        assert walk.flags is not None and walk.flags.user
