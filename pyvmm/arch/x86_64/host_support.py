"""Probes of what this host's KVM can run, made with the binding on a scratch VM.

pyvmm asks the host instead of assuming: a software KVM backend (kvm_pvm)
cannot run every x86 mode that VT-x and AMD-V can, and says so only by
silently dropping state. Each probe runs once per process, when first needed.
"""

from __future__ import annotations

from pyvmm.arch.x86_64.registers import CR0_PE, CR0_PG, CR4_PSE
from pyvmm.kvm.system import Kvm

_paging32: list[bool] = []  # the answer, once known: one host per process


def keeps_32bit_paging(kvm: Kvm) -> bool:
    """Whether KVM_SET_SREGS keeps CR0.PG for 32-bit paging (no EFER.LME).

    VT-x and AMD-V run 32-bit paging (Intel SDM vol. 3A, 4.3); kvm_pvm clears
    CR0.PG instead of failing, so a scratch vCPU is given PE|PG with CR4.PSE
    and read back (KVM API doc 4.13/4.14, KVM_GET_SREGS/KVM_SET_SREGS).
    Raises KvmError if the scratch VM cannot be made.
    """
    if not _paging32:
        with kvm.create_vm() as vm, vm.create_vcpu(0) as vcpu:
            sregs = vcpu.get_sregs()
            sregs.cr0 |= CR0_PE | CR0_PG
            sregs.cr4 |= CR4_PSE
            sregs.cs.db = 1
            vcpu.set_sregs(sregs)
            _paging32.append(bool(vcpu.get_sregs().cr0 & CR0_PG))
    return _paging32[0]
