"""The two ioctl shims, wrapped so that every failure becomes a KvmError."""

from __future__ import annotations

from pyvmm._kvm import ffi, lib
from pyvmm.errors import KvmError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any


def ioctl_ptr(fd: int, request: int, name: str, arg: Any) -> int:
    """Issue an ioctl whose argument is a pointer; return its non-negative result."""
    ret = lib.pyvmm_ioctl_ptr(fd, request, arg)
    if ret < 0:
        raise KvmError(name, ffi.errno)
    return ret


def ioctl_int(fd: int, request: int, name: str, arg: int = 0) -> int:
    """Issue an ioctl whose argument is an integer; return its non-negative result."""
    ret = lib.pyvmm_ioctl_int(fd, request, arg)
    if ret < 0:
        raise KvmError(name, ffi.errno)
    return ret


def close_fd(fd: int) -> None:
    """Close a file descriptor; closing can only fail for a bad fd, which is a bug."""
    if fd >= 0:
        lib.close(fd)
