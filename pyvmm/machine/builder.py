"""The recipe: Kvm -> VM -> memory -> devices -> image -> vCPU -> Machine.

One readable function plus small `attach_*` helpers; nothing happens at
import time and there is no global device table.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace

from pyvmm._kvm import lib
from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import (
    DEFAULT_PHYSICAL_ADDRESS_BITS,
    default_load_gpa,
    setup_cpuid,
    setup_vcpu,
)
from pyvmm.arch.x86_64.host_support import keeps_32bit_paging
from pyvmm.arch.x86_64.page_walk import Mapping, PagingRegisters, list_mappings
from pyvmm.arch.x86_64.placement import check_entry_placement
from pyvmm.closing import ClosesOnExit
from pyvmm.console.input import InputBuffer, SerialWithInput
from pyvmm.devices.bus import Bus, Shifted
from pyvmm.devices.debug_exit import DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, DebugExit, debug_exit_status
from pyvmm.devices.fw_cfg import FW_CFG_PORT_SEL, FW_CFG_PORT_SIZE, FwCfg
from pyvmm.devices.pci_absent import PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_DATA_PORT, PciAbsent
from pyvmm.devices.serial import Serial16550
from pyvmm.devices.sink import POST_PORT, IgnoredPort
from pyvmm.errors import PyvmmError, UsageError
from pyvmm.kvm.system import DEFAULT_KVM_PATH, Kvm, open_kvm
from pyvmm.kvm.vcpu import Vcpu
from pyvmm.kvm.vm import Vm
from pyvmm.loaders import describe_format, load_image
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.machine.outcome import OutcomeKind, RunOutcome
from pyvmm.machine.run_signals import stop_on_signals
from pyvmm.machine.vcpu_group import VcpuGroup
from pyvmm.machine.vcpu_loop import ExitObserver, VcpuLoop
from pyvmm.memory.guest_memory import GuestMemory
from pyvmm.memory.size import RAM_GRANULE
from pyvmm.observe.translation import Translation, paging_registers, translate

log = logging.getLogger(__name__)

COM1_PORT = 0x3F8
COM1_SIZE = 8


@dataclass(frozen=True)
class MachineConfig:
    image: bytes
    ram_size: int
    console: Callable[[bytes], None]
    mode: CpuMode | None = None
    load_gpa: int | None = None
    kvm_path: str = DEFAULT_KVM_PATH
    cpus: int = 1
    # Multiboot: the command line as QEMU passes it, and the modules (--initrd).
    cmdline: str = ""
    modules: tuple[tuple[str, bytes], ...] = ()
    force_multiboot: bool = False
    # --max-exits: each vCPU stops after this many exits.
    max_exits: int | None = None
    # Host input for COM1 (see console_input.py); None: the guest gets none.
    console_input: InputBuffer | None = None
    # In-kernel PIC/IOAPIC/LAPICs and PIT. None: only with several vCPUs, so that
    # a single-vCPU guest's `hlt` still reaches pyvmm and ends the run.
    irqchip: bool | None = None

    @property
    def wants_irqchip(self) -> bool:
        return self.cpus > 1 if self.irqchip is None else self.irqchip


class Machine(ClosesOnExit):
    """A built VM, ready to run once. Closing releases every fd and mapping."""

    def __init__(
        self,
        kvm: Kvm,
        vm: Vm,
        memory: GuestMemory,
        vcpu: Vcpu,
        pio_bus: Bus,
        mmio_bus: Bus,
        serial: Serial16550,
        entry: EntryPoint,
        loop: VcpuLoop,
        resources: ExitStack,
        max_phys_bits: int = DEFAULT_PHYSICAL_ADDRESS_BITS,
        group: VcpuGroup | None = None,
    ) -> None:
        self.kvm = kvm
        self.vm = vm
        self.memory = memory
        self.vcpu = vcpu
        self.pio_bus = pio_bus
        self.mmio_bus = mmio_bus
        self.serial = serial
        self.entry = entry
        self.loop = loop
        self._resources = resources
        self.max_phys_bits = max_phys_bits  # the guest's MAXPHYADDR, for page walks
        self.group = group or VcpuGroup([loop])  # every vCPU; `vcpu`/`loop` are vCPU 0
        self.console: Callable[[bytes], None] | None = None  # set by build_machine

    def run(self, timeout: float | None = None, observer: ExitObserver | None = None) -> RunOutcome:
        with stop_on_signals(self.group.request_stop, timeout):
            outcome = self.group.run(observer)
        if outcome.kind.is_abnormal and outcome.registers is None:
            # Stopped from outside (timeout, signal): show where vCPU 0 was.
            outcome = replace(outcome, registers=self._registers_or_none())
        return outcome

    def _registers_or_none(self) -> str | None:
        try:
            return self.loop.register_dump()
        except PyvmmError:
            return None

    def translate(self, gva: int) -> Translation:
        """The chain GVA -> GPA -> HVA -> HPA for `gva`, with the vCPU's current paging."""
        return translate(self.memory, self.vcpu, gva, self.max_phys_bits)

    def paging_registers(self) -> PagingRegisters:
        return paging_registers(self.vcpu)

    def mappings(self) -> list[Mapping]:
        """Every virtual range the guest's current page tables map."""
        return list_mappings(self.memory, self.paging_registers(), self.max_phys_bits)

    def close(self) -> None:
        self._resources.close()


def check_ram_size(ram_size: int) -> None:
    if ram_size % RAM_GRANULE:
        raise UsageError(
            f"memory size {ram_size} bytes is not a whole number of 4 KiB pages "
            "(KVM maps guest RAM in pages)"
        )
    if ram_size < layout.MIN_RAM_SIZE:
        raise UsageError(
            f"memory size {ram_size >> 10} KiB is too small: pyvmm needs at least "
            f"{layout.MIN_RAM_SIZE >> 20} MiB"
        )
    host = host_memory_size()
    if host is not None and ram_size > host:
        raise UsageError(
            f"memory size {ram_size >> 20} MiB is more than this host has ({host >> 20} MiB)"
        )


def host_memory_size() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def build_machine(config: MachineConfig) -> Machine:
    check_ram_size(config.ram_size)
    with ExitStack() as resources:
        # Memory first, so that it is unmapped only after the VM that uses it is gone.
        memory = resources.enter_context(
            GuestMemory.from_ranges(layout.ram_ranges(config.ram_size))
        )
        kvm = resources.enter_context(open_kvm(config.kvm_path))
        check_vcpu_count(kvm, config.cpus)
        vm = resources.enter_context(kvm.create_vm())
        # Needed by Intel VT-x to run real mode; harmless elsewhere.
        vm.set_tss_addr(layout.KVM_TSS_GPA)
        vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_GPA)
        attach_memory(vm, memory)

        entry = load_image(
            config.image,
            memory,
            mode=config.mode,
            load_gpa=config.load_gpa,
            default_flat_gpa=default_load_gpa,
            force_multiboot=config.force_multiboot,
            cmdline=config.cmdline,
            modules=config.modules,
            reserved=layout.reserved_ranges(True),
        )
        check_entry_placement(entry)
        log.info(
            "loaded %s: 0x%x..0x%x, entry 0x%x in %s mode",
            describe_format(config.image),
            entry.image_start,
            entry.image_end,
            entry.entry,
            entry.mode.value,
        )

        if config.cpus > 1 and config.irqchip is False:
            raise UsageError("-smp needs the in-kernel irqchip: INIT/SIPI go through the LAPICs")
        if config.wants_irqchip:
            # INIT/SIPI and IPIs need the in-kernel LAPICs; the PIT comes with them.
            vm.create_irqchip()
            vm.create_pit2(lib.KVM_PIT_SPEAKER_DUMMY)
        vcpus = [resources.enter_context(vm.create_vcpu(index)) for index in range(config.cpus)]
        for index, each in enumerate(vcpus):
            max_phys_bits = setup_cpuid(kvm, each, apic_id=index, cpus=config.cpus)
        vcpu = vcpus[0]
        # Only the boot CPU starts at the entry point; the others wait for INIT/SIPI.
        setup_vcpu(vcpu, entry, memory)

        pio_bus = Bus("port I/O bus")
        mmio_bus = Bus("MMIO bus")
        device_lock = threading.Lock() if config.cpus > 1 else None
        loops = [
            VcpuLoop(
                each,
                pio_bus,
                mmio_bus,
                device_lock,
                max_exits=config.max_exits,
                memory=memory,
                max_phys_bits=max_phys_bits,
                keeps_32bit_paging=functools.partial(keeps_32bit_paging, kvm),
            )
            for each in vcpus
        ]
        loop = loops[0]
        group = VcpuGroup(loops)
        serial = attach_serial(pio_bus, config.console, config.console_input)
        attach_debug_exit(pio_bus, group.request_stop)
        pio_bus.insert(IgnoredPort(), POST_PORT, 1, "POST port")
        attach_qemu_board(pio_bus, config)

        machine = Machine(
            kvm,
            vm,
            memory,
            vcpu,
            pio_bus,
            mmio_bus,
            serial,
            entry,
            loop,
            resources.pop_all(),
            max_phys_bits,
            group,
        )
        machine.console = config.console
    return machine


def attach_memory(vm: Vm, memory: GuestMemory) -> None:
    for region in memory:
        vm.set_user_memory_region(
            region.slot, 0, region.gpa, region.size, memory.mapping.hva + region.host_offset
        )
        log.info(
            "slot %d: guest 0x%x..0x%x -> host 0x%x",
            region.slot,
            region.gpa,
            region.end,
            memory.mapping.hva + region.host_offset,
        )


def attach_serial(
    pio_bus: Bus, console: Callable[[bytes], None], host_input: InputBuffer | None = None
) -> Serial16550:
    serial = Serial16550(console)
    device = serial if host_input is None else SerialWithInput(serial, host_input)
    pio_bus.insert(device, COM1_PORT, COM1_SIZE, "COM1 16550A")
    return serial


def attach_debug_exit(pio_bus: Bus, stop: Callable[[RunOutcome], None]) -> DebugExit:
    def on_exit(value: int) -> None:
        status = debug_exit_status(value)
        stop(
            RunOutcome(
                OutcomeKind.DEBUG_EXIT,
                status,
                f"guest wrote 0x{value:x} to the debug-exit port: exit status {status}",
            )
        )

    device = DebugExit(on_exit)
    pio_bus.insert(device, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, "debug-exit")
    return device


def attach_qemu_board(pio_bus: Bus, config: MachineConfig) -> None:
    """The small QEMU devices kernels written for `qemu -kernel` probe for."""
    fw_cfg = FwCfg(ram_size=config.ram_size, nb_cpus=config.cpus, max_cpus=config.cpus)
    pio_bus.insert(fw_cfg, FW_CFG_PORT_SEL, FW_CFG_PORT_SIZE, "fw_cfg")
    pci = PciAbsent()
    # CONFIG_ADDRESS is a dword register at 0xcf8 (a byte at 0xcf9 is reset control,
    # left unassigned); CONFIG_DATA is 0xcfc-0xcff.
    pio_bus.insert(pci, PCI_CONFIG_ADDRESS_PORT, 1, "PCI CONFIG_ADDRESS (empty bus)")
    pio_bus.insert(Shifted(pci, 4), PCI_CONFIG_DATA_PORT, 4, "PCI CONFIG_DATA (empty bus)")


def check_vcpu_count(kvm: Kvm, cpus: int) -> None:
    limit = kvm.check_extension(lib.KVM_CAP_MAX_VCPUS) or kvm.check_extension(lib.KVM_CAP_NR_VCPUS)
    if not 1 <= cpus <= max(limit, 1):
        raise UsageError(f"-smp {cpus}: this host's KVM supports 1 to {limit} vCPUs")
