"""A VM file descriptor: memory slots, vCPU creation, x86 setup ioctls."""

from __future__ import annotations

from pyvmm._kvm import ffi, lib
from pyvmm.closing import ClosesOnExit
from pyvmm.kvm._ioctl import close_fd, ioctl_int, ioctl_ptr
from pyvmm.kvm.vcpu import Vcpu

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


class Vm(ClosesOnExit):
    """One method per VM ioctl. Owns its fd; vCPUs own theirs."""

    def __init__(self, fd: int, vcpu_mmap_size: int) -> None:
        self.fd = fd
        self.vcpu_mmap_size = vcpu_mmap_size

    def check_extension(self, capability: int) -> int:
        return ioctl_int(self.fd, lib.KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", capability)

    def set_user_memory_region(
        self, slot: int, flags: int, guest_phys_addr: int, memory_size: int, userspace_addr: int
    ) -> None:
        region = ffi.new(
            "struct kvm_userspace_memory_region *",
            {
                "slot": slot,
                "flags": flags,
                "guest_phys_addr": guest_phys_addr,
                "memory_size": memory_size,
                "userspace_addr": userspace_addr,
            },
        )
        ioctl_ptr(self.fd, lib.KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", region)

    def get_dirty_log(self, slot: int, dirty_bitmap: Any) -> None:
        """KVM_GET_DIRTY_LOG (KVM API doc 4.8): fill `dirty_bitmap`, one bit per page.

        `dirty_bitmap` is a cffi buffer of at least one bit per page of the slot,
        rounded up to 64 bits; the slot needs KVM_MEM_LOG_DIRTY_PAGES. The call
        also clears the log. Raises KvmError (ENOENT: no such slot or no logging).
        """
        log = ffi.new("struct kvm_dirty_log *", {"slot": slot, "dirty_bitmap": dirty_bitmap})
        ioctl_ptr(self.fd, lib.KVM_GET_DIRTY_LOG, "KVM_GET_DIRTY_LOG", log)

    def set_tss_addr(self, gpa: int) -> None:
        ioctl_int(self.fd, lib.KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", gpa)

    def set_identity_map_addr(self, gpa: int) -> None:
        address = ffi.new("uint64_t *", gpa)
        ioctl_ptr(self.fd, lib.KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", address)

    def create_irqchip(self) -> None:
        """In-kernel PIC, IOAPIC and a LAPIC per vCPU (before any vCPU exists)."""
        ioctl_int(self.fd, lib.KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP")

    def enable_split_irqchip(self, ioapic_pins: int) -> None:
        """KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) (KVM API doc 7.8): LAPICs in the kernel only.

        The PIC and the IOAPIC are then the VMM's: it delivers the IOAPIC's
        interrupts as MSIs (`signal_msi`), the PIC's with KVM_INTERRUPT, and
        gets KVM_EXIT_IOAPIC_EOI for the level-triggered vectors named by the
        MSI routes of GSIs below `ioapic_pins` (`set_msi_routing`). Before
        any vCPU exists; raises KvmError (EINVAL: an irqchip exists already).
        """
        cap = ffi.new(
            "struct kvm_enable_cap *",
            {"cap": lib.KVM_CAP_SPLIT_IRQCHIP, "args": [ioapic_pins, 0, 0, 0]},
        )
        ioctl_ptr(self.fd, lib.KVM_ENABLE_CAP, "KVM_ENABLE_CAP", cap)

    def signal_msi(self, address: int, data: int) -> None:
        """KVM_SIGNAL_MSI (KVM API doc 4.71): send the MSI (`address`, `data`) to the LAPICs.

        Address and data as Intel SDM vol. 3A 11.11.1-11.11.2 lay them out.
        From any thread; KVM wakes a halted destination itself. Raises KvmError.
        """
        msi = ffi.new(
            "struct kvm_msi *",
            {"address_lo": address & 0xFFFF_FFFF, "address_hi": address >> 32, "data": data},
        )
        ioctl_ptr(self.fd, lib.KVM_SIGNAL_MSI, "KVM_SIGNAL_MSI", msi)

    def set_msi_routing(self, messages: Sequence[tuple[int, int]]) -> None:
        """KVM_SET_GSI_ROUTING (KVM API doc 4.52) with MSI routes: GSI n sends `messages[n]`.

        Each message is (address, data). With the split irqchip KVM reads
        these routes to learn which vectors are level-triggered IOAPIC
        interrupts, whose EOIs come back as KVM_EXIT_IOAPIC_EOI. Raises KvmError.
        """
        table = ffi.new("struct kvm_irq_routing *", {"nr": len(messages), "entries": len(messages)})
        for gsi, (address, data) in enumerate(messages):
            entry = table.entries[gsi]
            entry.gsi = gsi
            entry.type = lib.KVM_IRQ_ROUTING_MSI
            entry.u.msi.address_lo = address & 0xFFFF_FFFF
            entry.u.msi.address_hi = address >> 32
            entry.u.msi.data = data
        ioctl_ptr(self.fd, lib.KVM_SET_GSI_ROUTING, "KVM_SET_GSI_ROUTING", table)

    def irq_line(self, gsi: int, level: int) -> None:
        """KVM_IRQ_LINE (KVM API doc 4.25): set the level of input `gsi` of the irqchip.

        GSIs 0-15 reach the PIC and the IOAPIC, 16-23 the IOAPIC alone.
        Needs KVM_CREATE_IRQCHIP first; raises KvmError otherwise.
        """
        request = ffi.new("struct kvm_irq_level *", {"irq": gsi, "level": level})
        ioctl_ptr(self.fd, lib.KVM_IRQ_LINE, "KVM_IRQ_LINE", request)

    def set_gsi_routing(self, routes: Sequence[tuple[int, int, int]]) -> None:
        """KVM_SET_GSI_ROUTING (KVM API doc 4.52): replace the GSI routing with `routes`.

        Each route is (gsi, irqchip, pin): input `gsi` drives `pin` of
        `irqchip` (KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE or _IOAPIC); a GSI may
        have several routes, and a GSI with none drives nothing. Needs
        KVM_CREATE_IRQCHIP first; raises KvmError otherwise.
        """
        table = ffi.new("struct kvm_irq_routing *", {"nr": len(routes), "entries": len(routes)})
        for index, (gsi, irqchip, pin) in enumerate(routes):
            entry = table.entries[index]
            entry.gsi = gsi
            entry.type = lib.KVM_IRQ_ROUTING_IRQCHIP
            entry.u.irqchip.irqchip = irqchip
            entry.u.irqchip.pin = pin
        ioctl_ptr(self.fd, lib.KVM_SET_GSI_ROUTING, "KVM_SET_GSI_ROUTING", table)

    def get_irqchip(self, chip_id: int) -> Any:
        """KVM_GET_IRQCHIP (KVM API doc 4.26): a `struct kvm_irqchip *` holding chip `chip_id`.

        `chip_id` is KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE or
        KVM_IRQCHIP_IOAPIC; `.chip.pic` is a `struct kvm_pic_state` for the PICs.
        Raises KvmError (ENXIO: no in-kernel irqchip).
        """
        chip = ffi.new("struct kvm_irqchip *", {"chip_id": chip_id})
        ioctl_ptr(self.fd, lib.KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", chip)
        return chip

    def set_irqchip(self, chip: Any) -> None:
        """KVM_SET_IRQCHIP (KVM API doc 4.27): load `chip` (as `get_irqchip` returns it).

        Raises KvmError (ENXIO: no in-kernel irqchip; EINVAL: a bad chip_id).
        """
        ioctl_ptr(self.fd, lib.KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", chip)

    def irqfd(self, fd: int, gsi: int, flags: int = 0, resamplefd: int = 0) -> None:
        """KVM_IRQFD (KVM API doc 4.75): an eventfd `fd` whose writes raise irqchip input `gsi`.

        `flags` are KVM_IRQFD_FLAG_* bits: DEASSIGN removes the binding,
        RESAMPLE makes the line level-triggered, held until the guest's EOI,
        after which KVM lowers it and signals the eventfd `resamplefd`. Needs
        KVM_CAP_IRQFD (KVM_CAP_IRQFD_RESAMPLE for RESAMPLE) and an irqchip;
        raises KvmError otherwise.
        """
        request = ffi.new(
            "struct kvm_irqfd *",
            {"fd": fd, "gsi": gsi, "flags": flags, "resamplefd": resamplefd},
        )
        ioctl_ptr(self.fd, lib.KVM_IRQFD, "KVM_IRQFD", request)

    def ioeventfd(
        self, fd: int, addr: int, length: int, datamatch: int | None = None, flags: int = 0
    ) -> None:
        """KVM_IOEVENTFD (KVM API doc 4.59): a guest write of `length` bytes (0, 1, 2, 4
        or 8) at guest-physical `addr` signals the eventfd `fd` instead of exiting.

        With `datamatch` only a write of that value does; other writes exit
        as before. `flags` adds KVM_IOEVENTFD_FLAG_PIO (a port, not MMIO) or
        _DEASSIGN (remove the binding). Needs KVM_CAP_IOEVENTFD; raises
        KvmError (EEXIST: the same binding twice, ENOSPC: too many).
        """
        if datamatch is not None:
            flags |= lib.KVM_IOEVENTFD_FLAG_DATAMATCH
        request = ffi.new(
            "struct kvm_ioeventfd *",
            {
                "datamatch": datamatch or 0,
                "addr": addr,
                "len": length,
                "fd": fd,
                "flags": flags,
            },
        )
        ioctl_ptr(self.fd, lib.KVM_IOEVENTFD, "KVM_IOEVENTFD", request)

    def create_pit2(self, flags: int) -> None:
        config = ffi.new("struct kvm_pit_config *", {"flags": flags})
        ioctl_ptr(self.fd, lib.KVM_CREATE_PIT2, "KVM_CREATE_PIT2", config)

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        vcpu_fd = ioctl_int(self.fd, lib.KVM_CREATE_VCPU, "KVM_CREATE_VCPU", vcpu_id)
        try:
            return Vcpu(vcpu_fd, vcpu_id, self.vcpu_mmap_size)
        except BaseException:
            close_fd(vcpu_fd)
            raise

    def close(self) -> None:
        close_fd(self.fd)
        self.fd = -1
