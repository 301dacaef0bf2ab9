"""Create the VM and its in-kernel irqchip first, while Python is still importing.

Creating the in-kernel irqchip (KVM_CREATE_IRQCHIP) leaves the host kernel a
grace period to wait out, and closing the VM before it has passed waits for
it: measured here, closing a VM 0 ms after its irqchip was made takes about
15 ms, 20 ms after about 0.2 ms. A whole `pyvmm boot` of a small guest is
over in less than that, so `pyvmm boot` makes the VM and its irqchip before
it imports the machine builder, the devices and the firmware tables, and the
wait passes during the imports instead of at the end (see
benchmarks/suite_startup.py for the whole-process figures). `build_machine`
takes the VM over; everything else is built as always.
"""

from __future__ import annotations

from pyvmm._kvm import lib
from pyvmm.kvm.system import Kvm, open_kvm
from pyvmm.kvm.vm import Vm


class EarlyVm:
    """An open /dev/kvm and a new VM, with its irqchip and PIT when `irqchip` is True.

    Made by `start_vm`; `build_machine(config, early=...)` takes ownership
    (and closes it when the machine closes). `close` releases it otherwise.
    """

    __slots__ = ("irqchip", "kvm", "kvm_path", "vm")

    def __init__(self, kvm: Kvm, vm: Vm, irqchip: bool, kvm_path: str) -> None:
        self.kvm = kvm
        self.vm = vm
        self.irqchip = irqchip
        self.kvm_path = kvm_path

    def close(self) -> None:
        self.vm.close()
        self.kvm.close()


def start_vm(kvm_path: str, irqchip: bool) -> EarlyVm:
    """Open `kvm_path`, create a VM, and with `irqchip` its PIC/IOAPIC/LAPICs and PIT.

    KVM_CREATE_VM, KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 (KVM API doc 4.2,
    4.24, 4.71), as `build_machine` would make them. Raises KvmUnavailable
    or KvmError as `build_machine` does; nothing stays open then.
    """
    kvm = open_kvm(kvm_path)
    try:
        vm = kvm.create_vm()
        try:
            if irqchip:
                vm.create_irqchip()
                vm.create_pit2(lib.KVM_PIT_SPEAKER_DUMMY)
        except BaseException:
            vm.close()
            raise
    except BaseException:
        kvm.close()
        raise
    return EarlyVm(kvm, vm, irqchip, kvm_path)
