"""`/dev/kvm` itself: API version, capabilities, VM creation."""

from __future__ import annotations

import errno
import os

from pyvmm._kvm import ffi, lib
from pyvmm.closing import ClosesOnExit
from pyvmm.errors import KvmError, KvmUnavailable
from pyvmm.kvm._ioctl import close_fd, ioctl_int, ioctl_ptr
from pyvmm.kvm.vm import Vm

DEFAULT_KVM_PATH = "/dev/kvm"

# Capabilities pyvmm cannot work without (KVM API doc, section 4: "Capability").
REQUIRED_CAPABILITIES: tuple[tuple[str, int], ...] = (
    ("KVM_CAP_USER_MEMORY", lib.KVM_CAP_USER_MEMORY),
    ("KVM_CAP_SET_TSS_ADDR", lib.KVM_CAP_SET_TSS_ADDR),
    ("KVM_CAP_EXT_CPUID", lib.KVM_CAP_EXT_CPUID),
)


class Kvm(ClosesOnExit):
    """An open `/dev/kvm`. One method per system ioctl, no policy."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def get_api_version(self) -> int:
        return ioctl_int(self.fd, lib.KVM_GET_API_VERSION, "KVM_GET_API_VERSION")

    def check_extension(self, capability: int) -> int:
        return ioctl_int(self.fd, lib.KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", capability)

    def get_vcpu_mmap_size(self) -> int:
        return ioctl_int(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE")

    def get_supported_cpuid(self, max_entries: int = 256) -> object:
        """Return a `struct kvm_cpuid2 *` holding what this host's KVM can expose."""
        cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": max_entries, "entries": max_entries})
        ioctl_ptr(self.fd, lib.KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", cpuid)
        return cpuid

    def create_vm(self) -> Vm:
        vm_fd = ioctl_int(self.fd, lib.KVM_CREATE_VM, "KVM_CREATE_VM", 0)
        return Vm(vm_fd, self.get_vcpu_mmap_size())

    def close(self) -> None:
        close_fd(self.fd)
        self.fd = -1


def open_kvm(path: str = DEFAULT_KVM_PATH) -> Kvm:
    """Open `path`, check the API version and the required capabilities.

    Raises KvmUnavailable with a message a user can act on.
    """
    fd = lib.open(path.encode(), lib.O_RDWR | lib.O_CLOEXEC)
    if fd < 0:
        err = ffi.errno
        hint = {
            errno.ENOENT: "is the kvm module loaded? (modprobe kvm_intel or kvm_amd)",
            errno.EACCES: "add yourself to the 'kvm' group or run as root",
        }.get(err, "")
        message = f"cannot open {path}: {errno.errorcode.get(err, err)} ({os.strerror(err)})"
        raise KvmUnavailable(f"{message}; {hint}" if hint else message)
    kvm = Kvm(fd)
    try:
        version = kvm.get_api_version()
        if version != lib.KVM_API_VERSION:
            raise KvmUnavailable(
                f"{path} speaks KVM API version {version}, pyvmm needs {lib.KVM_API_VERSION}"
            )
        missing = [name for name, cap in REQUIRED_CAPABILITIES if kvm.check_extension(cap) <= 0]
        if missing:
            raise KvmUnavailable(f"{path} lacks required capabilities: {', '.join(missing)}")
    except (KvmError, KvmUnavailable):
        kvm.close()
        raise
    return kvm
