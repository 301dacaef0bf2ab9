"""Put a vCPU in the state an EntryPoint asks for.

The loader said *what* (entry address and mode); this module writes the
GDT and page tables into guest memory and loads registers accordingly.
"""

from __future__ import annotations

import os

from pyvmm._kvm import ffi
from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.registers import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_PSE,
    EFER_LMA,
    EFER_LME,
    RFLAGS_IOPL3,
    RFLAGS_RESERVED,
)
from pyvmm.errors import PyvmmError
from pyvmm.kvm.host import kvm_backend
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.memory.addr import GuestPhysAddr

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from pyvmm.arch.x86_64.gdt import Segment
    from pyvmm.kvm.system import Kvm
    from pyvmm.kvm.vcpu import Vcpu
    from pyvmm.memory.guest_memory import GuestMemory

# The GDT and page-table builders (gdt.py, paging.py) are imported for the modes
# that need them: real mode, a boot sector's, needs neither.


class UnsupportedEntryState(PyvmmError):
    """The host's KVM cannot put a vCPU in the requested mode."""


# x87 control word and MXCSR as after FNINIT / at reset (SDM 9.1.1, 10.2.3.1).
FPU_CONTROL_WORD = 0x37F
MXCSR_DEFAULT = 0x1F80


def default_load_gpa(mode: CpuMode) -> int:
    """Where a flat binary goes when the user does not say: boot sector or 1 MiB."""
    return layout.BOOT_SECTOR_GPA if mode is CpuMode.REAL else layout.HIGH_LOAD_GPA


def needs_vmm_tables(mode: CpuMode) -> bool:
    return mode is not CpuMode.REAL


# CPUID leaf giving the physical and linear address widths (SDM vol. 2A, CPUID).
CPUID_ADDRESS_SIZES = 0x8000_0008
DEFAULT_PHYSICAL_ADDRESS_BITS = 36  # what the SDM says to assume without the leaf


# KVM_GET_SUPPORTED_CPUID's answer by the KVM device's number (st_rdev): what a
# loaded kvm module supports does not change, so a process asks once per device,
# as QEMU does (target/i386/kvm/kvm.c: get_supported_cpuid's cpuid_cache).
_supported_by_device: dict[int, Any] = {}


def supported_cpuid(kvm: Kvm) -> Any:
    """A new `struct kvm_cpuid2 *` with what this host's KVM supports (KVM API doc
    4.46, KVM_GET_SUPPORTED_CPUID), the caller's to rewrite; the ioctl runs once
    per KVM device per process."""
    device = os.fstat(kvm.fd).st_rdev
    cached = _supported_by_device.get(device)
    if cached is None:
        cached = _supported_by_device[device] = kvm.get_supported_cpuid()
    copy = ffi.new("struct kvm_cpuid2 *", {"nent": cached.nent, "entries": cached.nent})
    ffi.memmove(copy.entries, cached.entries, cached.nent * ffi.sizeof("struct kvm_cpuid_entry2"))
    return copy


def setup_cpuid(
    kvm: Kvm,
    vcpu: Vcpu,
    apic_id: int = 0,
    cpus: int = 1,
    hidden: tuple[str, ...] = (),
    supported: Any = None,
) -> int:
    """Expose what the host's KVM supports, with this vCPU's APIC ID. Returns MAXPHYADDR.

    `hidden`: features cleared from the table, by Linux's names
    (host_findings.FEATURE_BITS), for a host whose KVM cannot run their
    instructions (machine/linux_host.py). `supported`: the table
    KVM_GET_SUPPORTED_CPUID gave, to reuse for every vCPU (it is rewritten
    for this one); None takes `supported_cpuid(kvm)`.
    """
    cpuid = supported_cpuid(kvm) if supported is None else supported
    for index in range(cpuid.nent):
        set_topology(cpuid.entries[index], apic_id, cpus)
    if hidden:
        from pyvmm.arch.x86_64.host_probe import clear_features

        clear_features(cpuid, hidden)
    vcpu.set_cpuid2(cpuid)
    return physical_address_bits(cpuid)


def set_topology(entry: Any, apic_id: int, cpus: int) -> None:
    """Per-vCPU APIC IDs: CPUID.1:EBX[31:24] and the x2APIC ID of leaves 0xB/0x1F (EDX).

    The topology is one package of `cpus` cores, one thread each.
    """
    if entry.function == 1:
        logical = min(cpus, 0xFF) << 16
        entry.ebx = (entry.ebx & 0x0000_FFFF) | logical | (apic_id & 0xFF) << 24
    elif entry.function in (0xB, 0x1F):
        entry.edx = apic_id


def physical_address_bits(cpuid: Any) -> int:
    """MAXPHYADDR as the guest sees it: bits 7:0 of CPUID.80000008H:EAX."""
    for index in range(cpuid.nent):
        entry = cpuid.entries[index]
        if entry.function == CPUID_ADDRESS_SIZES:
            return entry.eax & 0xFF or DEFAULT_PHYSICAL_ADDRESS_BITS
    return DEFAULT_PHYSICAL_ADDRESS_BITS


def setup_vcpu(
    vcpu: Vcpu,
    entry: EntryPoint,
    memory: GuestMemory,
    places: layout.VmmPlaces = layout.DEFAULT_PLACES,
) -> None:
    """Build the tables `entry.mode` needs in guest memory, then load the registers.

    `places` says where the GDT, page tables, TSS and boot stack go (their
    defaults, or where `placement.place_vmm_structures` moved them): GDTR,
    CR3, TR's base, the TSS's RSP0 and RSP point there.
    """
    sregs = vcpu.get_sregs()
    regs = vcpu.get_regs()
    # kvm_regs is zeroed except what we set: a clean, reproducible start.
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp"):
        setattr(regs, name, 0)
    regs.rflags = RFLAGS_RESERVED
    regs.rip = entry.entry
    for name, value in entry.registers:
        setattr(regs, name, value)

    if entry.mode is CpuMode.REAL:
        _enter_real_mode(sregs)
        regs.rsp = layout.REAL_MODE_STACK_TOP
    else:
        from pyvmm.arch.x86_64.paging import build_identity_map_32, build_identity_map_64

        linux = entry.protocol == "linux"  # the boot protocol's selectors (gdt.py)
        _enter_protected_mode(sregs, memory, places.gdt, entry.mode.is_64bit, linux)
        if entry.mode is CpuMode.PAGED:
            sregs.cr3 = build_identity_map_32(memory, GuestPhysAddr(places.page_tables))
            sregs.cr4 |= CR4_PSE
            sregs.cr0 |= CR0_PG
        elif entry.mode.is_64bit:
            user = entry.mode is CpuMode.USER
            tables = GuestPhysAddr(places.page_tables)
            sregs.cr3 = build_identity_map_64(memory, tables, user=user)
            sregs.cr4 |= CR4_PAE
            sregs.efer |= EFER_LME | EFER_LMA
            sregs.cr0 |= CR0_PG
            if user:
                _drop_to_user_mode(sregs, memory, places)
                regs.rflags |= RFLAGS_IOPL3
        regs.rsp = places.stack_top
        _reset_fpu(vcpu)

    vcpu.set_sregs(sregs)
    vcpu.set_regs(regs)
    _check_state_accepted(vcpu, sregs, entry.mode)


def _check_state_accepted(vcpu: Vcpu, wanted: Any, mode: CpuMode) -> None:
    """Fail clearly when KVM silently drops part of the entry state.

    Some KVM backends cannot run every mode: kvm_pvm, for one, clears CR0.PG
    for 32-bit paging instead of failing KVM_SET_SREGS, and the guest would
    then triple-fault on its first instruction with no explanation.
    """
    actual = vcpu.get_sregs()
    for name, bits in (("CR0", CR0_PE | CR0_PG), ("CR4", CR4_PSE | CR4_PAE), ("EFER", EFER_LME)):
        field = name.lower()
        lost = getattr(wanted, field) & bits & ~getattr(actual, field)
        if lost:
            raise UnsupportedEntryState(
                f"this host's KVM, {kvm_backend()}, cannot enter {mode.value} mode: "
                f"KVM_SET_SREGS dropped {name} bits 0x{lost:x}"
            )


def _enter_real_mode(sregs: Any) -> None:
    # Flat real mode at CS=0, the state a BIOS leaves before jumping to 0x7c00.
    for segment in (sregs.cs, sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        segment.base = 0
        segment.selector = 0
    sregs.cr0 &= ~(CR0_PE | CR0_PG)


def _enter_protected_mode(
    sregs: Any, memory: GuestMemory, gdt_gpa: int, long_mode: bool, linux: bool = False
) -> None:
    """Flat segments from pyvmm's GDT at `gdt_gpa`; `linux`: the boot protocol's selectors."""
    from pyvmm.arch.x86_64.gdt import (
        CODE_SELECTOR,
        DATA_SELECTOR,
        LINUX_BOOT_CS,
        LINUX_BOOT_DS,
        decode_descriptor,
        flat_gdt,
        gdt_bytes,
        linux_boot_gdt,
    )

    entries = linux_boot_gdt() if linux else flat_gdt(long_mode)
    code_selector, data_selector = (
        (LINUX_BOOT_CS, LINUX_BOOT_DS) if linux else (CODE_SELECTOR, DATA_SELECTOR)
    )
    memory.write(gdt_gpa, gdt_bytes(entries))
    sregs.gdt.base = gdt_gpa
    sregs.gdt.limit = 8 * len(entries) - 1
    # No IDT: an exception before the guest installs its own ends in a triple
    # fault, which the VMM reports with registers (kvm-hello-world does the same).
    sregs.idt.base = 0
    sregs.idt.limit = 0

    code = decode_descriptor(entries[code_selector >> 3], code_selector)
    data = decode_descriptor(entries[data_selector >> 3], data_selector)
    _load_segment(sregs.cs, code)
    for register in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _load_segment(register, data)
    sregs.cr0 |= CR0_PE | CR0_ET


def _drop_to_user_mode(sregs: Any, memory: GuestMemory, places: layout.VmmPlaces) -> None:
    """CPL3 segments, a TSS for ring-0 entries, and the GDT that holds them both."""
    from pyvmm.arch.x86_64.gdt import (
        TSS_SELECTOR,
        USER_CODE_SELECTOR,
        USER_DATA_SELECTOR,
        decode_descriptor,
        gdt_bytes,
        tss_bytes,
        user_mode_gdt,
    )

    entries = user_mode_gdt(places.tss)
    memory.write(places.gdt, gdt_bytes(entries))
    memory.write(places.tss, tss_bytes(rsp0=places.kernel_stack_top))
    sregs.gdt.limit = 8 * len(entries) - 1
    code = decode_descriptor(entries[USER_CODE_SELECTOR >> 3], USER_CODE_SELECTOR)
    data = decode_descriptor(entries[USER_DATA_SELECTOR >> 3], USER_DATA_SELECTOR)
    _load_segment(sregs.cs, code)
    for register in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _load_segment(register, data)
    _load_segment(sregs.tr, decode_descriptor(entries[TSS_SELECTOR >> 3], TSS_SELECTOR))


def _load_segment(register: Any, segment: Segment) -> None:
    register.selector = segment.selector
    register.base = segment.base
    register.limit = segment.limit
    register.type = segment.type
    register.present = segment.present
    register.dpl = segment.dpl
    register.db = segment.db
    register.s = segment.s
    register.l = segment.long
    register.g = segment.g
    register.unusable = 0


def _reset_fpu(vcpu: Vcpu) -> None:
    fpu = vcpu.get_fpu()
    fpu.fcw = FPU_CONTROL_WORD
    fpu.mxcsr = MXCSR_DEFAULT
    vcpu.set_fpu(fpu)
