"""`/dev/kvm` itself: API version, capabilities, VM creation."""

from __future__ import annotations

import errno
import os
import stat

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


def permission_hint(path: str, groups: list[int] | None = None, user: str | None = None) -> str:
    """What a user refused `path` (EACCES) can do on this host, from the node's owner and mode.

    Only a group that exists and owns the node with read-write access is worth
    joining; hosts differ (a `kvm` group, no such group, root:root 0600).
    `groups` defaults to this process's groups, `user` to its user's name.
    """
    import grp  # only to explain a refusal

    try:
        node = os.stat(path)
    except OSError:
        return "run as root"
    try:
        group: grp.struct_group | None = grp.getgrgid(node.st_gid)
    except KeyError:
        group = None
    mine = set([*os.getgroups(), os.getegid()] if groups is None else groups)
    user = _user_name(os.getuid()) if user is None else user
    mode = f"mode {stat.S_IMODE(node.st_mode):04o}"
    group_rw = node.st_mode & (stat.S_IRGRP | stat.S_IWGRP) == stat.S_IRGRP | stat.S_IWGRP
    if group is None or not group_rw or node.st_gid == 0:
        owner = f"{_user_name(node.st_uid)}:{group.gr_name if group else node.st_gid}"
        return (
            f"it is {owner}, {mode}: run as root, or ask an administrator to give {path} "
            "to a group you are in"
        )
    name = group.gr_name
    if node.st_gid in mine:
        return (
            f"it belongs to group '{name}' ({mode}), which this process is in: an ACL or a "
            "security module refuses it; ask an administrator, or run as root"
        )
    if user in group.gr_mem:
        return (
            f"it belongs to group '{name}' ({mode}), which you joined after this session "
            f"began: log in again (or run newgrp {name}), or run as root"
        )
    return (
        f"it belongs to group '{name}' ({mode}): ask an administrator to add you to it "
        f"(usermod -aG {name} {user}, then log in again), or run as root"
    )


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def open_kvm(path: str = DEFAULT_KVM_PATH) -> Kvm:
    """Open `path`, check the API version and the required capabilities.

    Raises KvmUnavailable with a message a user can act on.
    """
    fd = lib.open(path.encode(), lib.O_RDWR | lib.O_CLOEXEC)
    if fd < 0:
        err = ffi.errno
        hint = {
            errno.ENOENT: "is the kvm module loaded? (modprobe kvm_intel or kvm_amd)",
            errno.EACCES: permission_hint(path),
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
