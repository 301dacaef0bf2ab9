"""The whole chain for one guest-virtual address: GVA -> GPA -> HVA -> HPA.

GVA -> GPA is the software walk of the guest's own page tables, cross-checked
against KVM_TRANSLATE (KVM's own walk); GPA -> HVA comes from the memory
slots; HVA -> HPA from the host kernel's pagemap.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.arch.x86_64.page_walk import PageFlags, PagingRegisters, Walk, walk
from pyvmm.kvm.vcpu import Vcpu
from pyvmm.memory.guest_memory import GuestMemory
from pyvmm.memory.host_pagemap import HostFrame, host_frame
from pyvmm.observe.machine_map import describe_not_ram


@dataclass(frozen=True)
class KvmTranslation:
    """What KVM_TRANSLATE (KVM API doc 4.15) answered for the same address."""

    valid: bool
    gpa: int
    writeable: bool
    usermode: bool


@dataclass(frozen=True)
class Translation:
    """One guest-virtual address followed through every level (`Machine.translate`).

    `walk` is the software walk of the guest's page tables (each entry read,
    Intel SDM vol. 3A, 4.3 to 4.5), `kvm` KVM's own walk, `slot` and `hva`
    the KVM memory slot and host-virtual address of the guest-physical
    address, `host` the host frame (HostFrame: `pfn`, `hpa`, or a `note`
    saying why the host hides it). Fields past the point where the chain
    stops are None, and `problem` says why it stopped; `not_ram` names the
    range of the machine's memory map a GPA outside RAM lies in.
    """

    gva: int
    walk: Walk
    kvm: KvmTranslation
    slot: int | None = None
    hva: int | None = None
    host: HostFrame | None = None
    not_ram: str | None = None

    @property
    def gpa(self) -> int | None:
        return self.walk.gpa

    @property
    def hpa(self) -> int | None:
        return None if self.host is None else self.host.hpa

    @property
    def page_size(self) -> int:
        return self.walk.page_size

    @property
    def flags(self) -> PageFlags | None:
        return self.walk.flags

    @property
    def agrees_with_kvm(self) -> bool:
        """Both walks found the same GPA, or both found nothing."""
        if self.walk.gpa is None:
            return not self.kvm.valid
        return self.kvm.valid and self.kvm.gpa == self.walk.gpa

    @property
    def problem(self) -> str | None:
        """Why the chain stops early, if it does."""
        if self.walk.fault is not None:
            return self.walk.fault
        if self.hva is None:
            return self.not_ram or f"GPA 0x{self.walk.gpa:x} is not RAM"
        return None if self.host is None else self.host.note


def paging_registers(vcpu: Vcpu) -> PagingRegisters:
    sregs = vcpu.get_sregs()
    return PagingRegisters(cr0=sregs.cr0, cr3=sregs.cr3, cr4=sregs.cr4, efer=sregs.efer)


def translate(memory: GuestMemory, vcpu: Vcpu, gva: int, max_phys_bits: int = 52) -> Translation:
    """Follow `gva` through every level, as far as it goes."""
    regs = paging_registers(vcpu)
    software = walk(memory, regs, gva, max_phys_bits)
    raw = vcpu.translate(gva)
    kvm = KvmTranslation(
        bool(raw.valid), int(raw.physical_address), bool(raw.writeable), bool(raw.usermode)
    )
    if software.gpa is None:
        return Translation(gva, software, kvm)
    region = memory.find_region(software.gpa)
    if region is None:
        return Translation(gva, software, kvm, not_ram=describe_not_ram(memory, software.gpa))
    hva = memory.host_address(software.gpa)
    return Translation(gva, software, kvm, region.slot, hva, host_frame(hva))
