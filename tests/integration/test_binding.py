"""The thin binding against the real /dev/kvm."""

from __future__ import annotations

import pytest

from pyvmm._kvm import lib
from pyvmm.errors import KvmError
from pyvmm.kvm.system import open_kvm


def test_api_version_and_capabilities() -> None:
    with open_kvm() as kvm:
        assert kvm.get_api_version() == 12
        assert kvm.check_extension(lib.KVM_CAP_USER_MEMORY) > 0
        assert kvm.get_vcpu_mmap_size() >= 4096


def test_failed_ioctl_names_itself_and_its_errno() -> None:
    with open_kvm() as kvm, kvm.create_vm() as vm:
        # Memory regions must be page-aligned: KVM answers EINVAL.
        with pytest.raises(KvmError) as raised:
            vm.set_user_memory_region(0, 0, 0x123, 0x1000, 0x1000)
        assert str(raised.value) == "KVM_SET_USER_MEMORY_REGION failed: EINVAL (Invalid argument)"


def test_fds_are_closed_deterministically() -> None:
    with open_kvm() as kvm:
        vm = kvm.create_vm()
        with vm:
            vcpu = vm.create_vcpu(0)
            with vcpu:
                assert vcpu.run_struct is not None
            assert vcpu.fd == -1 and vcpu.run_struct is None
        assert vm.fd == -1
