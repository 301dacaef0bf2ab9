"""How many vCPUs this host's KVM, and pyvmm, allow: for the tests with many vCPUs."""

from __future__ import annotations

import functools

from pyvmm.machine.builder import DEFAULT_RECOMMENDED_VCPUS, MAX_CPUS


@functools.cache
def host_vcpu_limits() -> tuple[int, int]:
    """(recommended, maximum) vCPUs of this host's KVM: KVM_CAP_NR_VCPUS, KVM_CAP_MAX_VCPUS,
    with the KVM API doc's defaults when a capability is missing (4.7, KVM_CREATE_VCPU)."""
    from pyvmm._kvm import lib
    from pyvmm.kvm.system import open_kvm

    with open_kvm() as kvm:
        recommended = kvm.check_extension(lib.KVM_CAP_NR_VCPUS) or DEFAULT_RECOMMENDED_VCPUS
        return recommended, kvm.check_extension(lib.KVM_CAP_MAX_VCPUS) or recommended


def most_vcpus() -> int:
    """The largest -smp pyvmm accepts on this host."""
    return min(MAX_CPUS, host_vcpu_limits()[1])
