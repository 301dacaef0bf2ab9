"""A vCPU file descriptor and its shared `struct kvm_run` page."""

from __future__ import annotations

import errno
from collections.abc import Callable

from pyvmm._kvm import ffi, lib
from pyvmm.closing import ClosesOnExit
from pyvmm.errors import KvmError
from pyvmm.kvm._ioctl import close_fd, ioctl_ptr

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any

# KVM_RUN returning one of these means "a signal arrived, look and run again".
_INTERRUPTED = (-errno.EINTR, -errno.EAGAIN)


class Vcpu(ClosesOnExit):
    """One method per vCPU ioctl. `run_struct` is the mmapped `struct kvm_run`."""

    def __init__(self, fd: int, vcpu_id: int, mmap_size: int) -> None:
        self.fd = fd
        self.vcpu_id = vcpu_id
        self._mmap_size = mmap_size
        pointer = lib.pyvmm_mmap(mmap_size, lib.PROT_READ | lib.PROT_WRITE, lib.MAP_SHARED, fd, 0)
        if pointer == ffi.NULL:
            raise KvmError("mmap of the vCPU's kvm_run", ffi.errno)
        self._run_pointer = pointer
        self.run_struct: Any = ffi.cast("struct kvm_run *", pointer)

    def run(self) -> bool:
        """KVM_RUN once. True when the guest exited; False when a signal interrupted it."""
        ret = lib.pyvmm_kvm_run(self.fd)
        if ret >= 0:
            return True
        if ret in _INTERRUPTED:
            return False
        raise KvmError("KVM_RUN", -ret)

    def fast_run_call(self) -> tuple[Callable[[int, Any, int, int, Any], int], int, Any]:
        """(function, fd, run_struct) for the exit loop's fast path.

        The function is `lib.pyvmm_run_fast(fd, run_struct, complete, value,
        out)` (see _kvm_build.py): KVM_RUN with the previous read completed,
        the common exits decoded into one integer, -errno on failure.
        """
        return lib.pyvmm_run_fast, self.fd, self.run_struct

    def get_regs(self) -> Any:
        regs = ffi.new("struct kvm_regs *")
        ioctl_ptr(self.fd, lib.KVM_GET_REGS, "KVM_GET_REGS", regs)
        return regs

    def set_regs(self, regs: Any) -> None:
        ioctl_ptr(self.fd, lib.KVM_SET_REGS, "KVM_SET_REGS", regs)

    def get_sregs(self) -> Any:
        sregs = ffi.new("struct kvm_sregs *")
        ioctl_ptr(self.fd, lib.KVM_GET_SREGS, "KVM_GET_SREGS", sregs)
        return sregs

    def set_sregs(self, sregs: Any) -> None:
        ioctl_ptr(self.fd, lib.KVM_SET_SREGS, "KVM_SET_SREGS", sregs)

    def get_fpu(self) -> Any:
        fpu = ffi.new("struct kvm_fpu *")
        ioctl_ptr(self.fd, lib.KVM_GET_FPU, "KVM_GET_FPU", fpu)
        return fpu

    def set_fpu(self, fpu: Any) -> None:
        ioctl_ptr(self.fd, lib.KVM_SET_FPU, "KVM_SET_FPU", fpu)

    def get_vcpu_events(self) -> Any:
        """KVM_GET_VCPU_EVENTS (KVM API doc 4.31): pending and injected events."""
        events = ffi.new("struct kvm_vcpu_events *")
        ioctl_ptr(self.fd, lib.KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", events)
        return events

    def set_vcpu_events(self, events: Any) -> None:
        """KVM_SET_VCPU_EVENTS (KVM API doc 4.32)."""
        ioctl_ptr(self.fd, lib.KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", events)

    def get_xsave(self) -> Any:
        """KVM_GET_XSAVE (KVM API doc 4.42): the x87, SSE and AVX state in XSAVE format."""
        xsave = ffi.new("struct kvm_xsave *")
        ioctl_ptr(self.fd, lib.KVM_GET_XSAVE, "KVM_GET_XSAVE", xsave)
        return xsave

    def set_xsave(self, xsave: Any) -> None:
        """KVM_SET_XSAVE (KVM API doc 4.43)."""
        ioctl_ptr(self.fd, lib.KVM_SET_XSAVE, "KVM_SET_XSAVE", xsave)

    def get_msrs(self, msrs: Any) -> int:
        """KVM_GET_MSRS (KVM API doc 4.18): fills `msrs` (a `struct kvm_msrs *`) in place;
        the number of MSRs read."""
        return ioctl_ptr(self.fd, lib.KVM_GET_MSRS, "KVM_GET_MSRS", msrs)

    def set_cpuid2(self, cpuid: Any) -> None:
        ioctl_ptr(self.fd, lib.KVM_SET_CPUID2, "KVM_SET_CPUID2", cpuid)

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT (KVM API doc 4.16): queue external interrupt `vector` (the PIC's).

        With the split irqchip KVM holds one such vector and injects it when
        the guest can take it; ask when the last exit said
        `ready_for_interrupt_injection`. Raises KvmError (EEXIST: one is
        still queued; ENXIO: the PIC is KVM's own).
        """
        request = ffi.new("struct kvm_interrupt *", {"irq": vector})
        ioctl_ptr(self.fd, lib.KVM_INTERRUPT, "KVM_INTERRUPT", request)

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE (KVM API doc 4.38): a KVM_MP_STATE_* value (RUNNABLE, HALTED...)."""
        state = ffi.new("struct kvm_mp_state *")
        ioctl_ptr(self.fd, lib.KVM_GET_MP_STATE, "KVM_GET_MP_STATE", state)
        return int(state.mp_state)

    def set_guest_debug(self, control: int, debugregs: tuple[int, ...] = ()) -> None:
        """KVM_SET_GUEST_DEBUG: `control` is KVM_GUESTDBG_* flags, debugregs DR0..DR7."""
        debug = ffi.new("struct kvm_guest_debug *", {"control": control})
        for index, value in enumerate(debugregs[:8]):
            debug.arch.debugreg[index] = value
        ioctl_ptr(self.fd, lib.KVM_SET_GUEST_DEBUG, "KVM_SET_GUEST_DEBUG", debug)

    def translate(self, gva: int) -> Any:
        translation = ffi.new("struct kvm_translation *", {"linear_address": gva})
        ioctl_ptr(self.fd, lib.KVM_TRANSLATE, "KVM_TRANSLATE", translation)
        return translation

    def close(self) -> None:
        if self._run_pointer is not None:
            lib.munmap(self._run_pointer, self._mmap_size)
            self._run_pointer = None
            self.run_struct = None
        close_fd(self.fd)
        self.fd = -1
