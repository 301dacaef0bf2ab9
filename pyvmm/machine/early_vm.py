"""Create the VM, its RAM and its in-kernel irqchip first, while Python is still importing.

Creating the in-kernel irqchip (KVM_CREATE_IRQCHIP) leaves the host kernel a
grace period to wait out, and the next memory-slot change or the VM's close
waits for what is left of it: measured here, the first
KVM_SET_USER_MEMORY_REGION after the irqchip takes about 7 ms, and closing a
VM 0 ms after its irqchip was made about 15 ms, 20 ms after 0.2 ms. A whole
`pyvmm boot` of a small guest is over in less than that. So `pyvmm boot`
maps guest RAM, registers its slots and then makes the irqchip before it
imports the machine builder, the devices and the firmware tables: no slot
change comes after the irqchip, and the wait passes during the imports
instead of at the end (see benchmarks/suite_startup.py for the
whole-process figures). `build_machine` takes all of it over; everything
else is built as always.
"""

from __future__ import annotations

import time

from pyvmm._kvm import lib
from pyvmm.arch.x86_64 import layout
from pyvmm.devices.ioapic import IO_APIC_PINS
from pyvmm.errors import UsageError
from pyvmm.kvm.system import Kvm, open_kvm
from pyvmm.kvm.vm import Vm
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from pyvmm.machine.legacy_pc import VgaTextWatch


IRQCHIP_MODES = ("on", "split", "off")


def irqchip_mode(
    requested: bool | str | None, kernel_pit: bool, ioeventfd: bool | None, virtio: bool
) -> str:
    """Where the machine's interrupt controllers are: "on", "split" or "off".

    `requested`: "on" or True (KVM's PIC, IOAPIC and LAPICs:
    KVM_CREATE_IRQCHIP), "split" (KVM's LAPICs, pyvmm's PIC and IOAPIC:
    KVM_CAP_SPLIT_IRQCHIP, machine/split_irqchip.py), "off" or False (none);
    None chooses split unless something needs KVM's whole irqchip: KVM's PIT
    (`kernel_pit`) or virtio's irqfds (`ioeventfd` True, or None with
    `virtio` devices), whose level-triggered resampling needs KVM's IOAPIC.
    Raises ValueError for another `requested`, UsageError when KVM's PIT or
    irqfds are asked for with a mode that lacks KVM's PIC and IOAPIC.
    """
    if requested is True:
        requested = "on"
    elif requested is False:
        requested = "off"
    elif requested is None:
        wants_kernel = kernel_pit or ioeventfd or (ioeventfd is None and virtio)
        return "on" if wants_kernel else "split"
    elif requested not in IRQCHIP_MODES:
        raise ValueError(f"irqchip: one of {', '.join(IRQCHIP_MODES)}, not {requested!r}")
    if requested != "on" and kernel_pit:
        raise UsageError(
            f"--pit kernel needs KVM's whole irqchip: --kernel-irqchip on, not {requested}"
        )
    if requested != "on" and ioeventfd:
        raise UsageError(
            "--ioeventfd on needs KVM's whole irqchip (an irqfd raises one of its "
            f"inputs): --kernel-irqchip on, not {requested}; or --ioeventfd off"
        )
    return requested


class EarlyVm:
    """Guest RAM, an open /dev/kvm and a VM with the RAM in its slots, with
    its irqchip when `irqchip` is True, and KVM's PIT as well when `kernel_pit`.

    `split`: the irqchip is KVM's LAPICs only (KVM_CAP_SPLIT_IRQCHIP), the
    PIC and IOAPIC being pyvmm's.

    Made by `start_vm`; `build_machine(config, early=...)` takes ownership
    (and closes it when the machine closes). `close` releases it otherwise:
    the VM first, then its RAM. `watches_vga` says whether the slots were
    made for a VGA text watch, `vga_text` is that watch (`attach_guest_memory`).
    `created_at` is when KVM_CREATE_VM returned (time.monotonic): the boot
    timer (devices/boot_timer.py) counts from it, as Firecracker's does.
    """

    __slots__ = (
        "created_at",
        "irqchip",
        "kernel_pit",
        "kvm",
        "kvm_path",
        "memory",
        "ram_size",
        "split",
        "vga_text",
        "vm",
        "watches_vga",
    )

    def __init__(
        self,
        kvm: Kvm,
        vm: Vm,
        memory: GuestMemory,
        irqchip: bool,
        kvm_path: str,
        ram_size: int,
        watches_vga: bool,
        vga_text: VgaTextWatch | None,
        kernel_pit: bool = False,
        split: bool = False,
    ) -> None:
        self.kvm = kvm
        self.vm = vm
        self.memory = memory
        self.irqchip = irqchip
        self.kvm_path = kvm_path
        self.ram_size = ram_size
        self.watches_vga = watches_vga
        self.vga_text = vga_text
        self.kernel_pit = kernel_pit
        self.split = split
        self.created_at = time.monotonic()  # start_vm sets the VM's own time

    def close(self) -> None:
        self.vm.close()
        self.kvm.close()
        self.memory.close()


def start_vm(
    kvm_path: str,
    irqchip: bool,
    ram_size: int,
    vga_text: bool,
    kernel_pit: bool = False,
    split: bool = False,
) -> EarlyVm:
    """Map `ram_size` bytes of guest RAM, open `kvm_path`, create a VM holding the RAM,
    and with `irqchip` its PIC/IOAPIC/LAPICs, last (and KVM's PIT with `kernel_pit`);
    with `split` too, only the LAPICs (KVM_ENABLE_CAP, KVM_CAP_SPLIT_IRQCHIP: KVM API
    doc 7.8), which leaves no wait at the close.

    What `build_machine` would do first: KVM_CREATE_VM, KVM_SET_TSS_ADDR,
    KVM_SET_IDENTITY_MAP_ADDR, KVM_SET_USER_MEMORY_REGION (with the VGA text
    page's logged slot when `vga_text`), KVM_CREATE_IRQCHIP, KVM_SET_GSI_ROUTING,
    KVM_CREATE_PIT2 (KVM API doc 4.2, 4.35, 4.24, 4.52, 4.71). Raises KvmUnavailable or KvmError
    as `build_machine` does (OSError if the RAM cannot be mapped); nothing
    stays open then.
    """
    from contextlib import ExitStack

    from pyvmm.machine.legacy_pc import attach_guest_memory

    with ExitStack() as resources:
        memory = resources.enter_context(GuestMemory.from_ranges(layout.ram_ranges(ram_size)))
        kvm = resources.enter_context(open_kvm(kvm_path))
        vm = resources.enter_context(kvm.create_vm())
        created_at = time.monotonic()
        # Needed by Intel VT-x to run real mode; harmless elsewhere.
        vm.set_tss_addr(layout.KVM_TSS_GPA)
        vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_GPA)
        watch = attach_guest_memory(vm, memory, vga_text)
        if irqchip and split:
            vm.enable_split_irqchip(IO_APIC_PINS)
        elif irqchip:
            from pyvmm.arch.x86_64.gsi_routes import pc_gsi_routes

            vm.create_irqchip()
            # IRQ 0 on IOAPIC pin 2, as the firmware tables say (gsi_routes.py).
            vm.set_gsi_routing(pc_gsi_routes())
            if kernel_pit:  # else pyvmm's 8254 (machine/pit.py)
                vm.create_pit2(lib.KVM_PIT_SPEAKER_DUMMY)
        resources.pop_all()
    early = EarlyVm(
        kvm, vm, memory, irqchip, kvm_path, ram_size, vga_text, watch,
        irqchip and kernel_pit and not split, irqchip and split,
    )  # fmt: skip
    early.created_at = created_at
    return early
