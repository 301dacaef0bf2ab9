"""The recipe: Kvm -> VM -> memory -> devices -> image -> vCPU -> Machine.

One readable function plus small `attach_*` helpers; nothing happens at
import time and there is no global device table.
"""

from __future__ import annotations

import functools
import threading
from contextlib import ExitStack

from pyvmm._kvm import lib
from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import (
    DEFAULT_PHYSICAL_ADDRESS_BITS,
    default_load_gpa,
    setup_cpuid,
    setup_vcpu,
    supported_cpuid,
)
from pyvmm.arch.x86_64.host_support import keeps_32bit_paging
from pyvmm.arch.x86_64.placement import check_entry_placement, plan_placement
from pyvmm.closing import ClosesOnExit
from pyvmm.devices.boot_timer import BOOT_TIMER_PORT, BOOT_TIMER_SIZE, BootTimer
from pyvmm.devices.bus import Bus, BusDevice, Shifted
from pyvmm.devices.debug_exit import DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, DebugExit, debug_exit_status
from pyvmm.devices.fw_cfg import FW_CFG_PORT_SEL, FW_CFG_PORT_SIZE, FwCfg
from pyvmm.devices.i8254 import I8254
from pyvmm.devices.pci_absent import PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_DATA_PORT, PciAbsent
from pyvmm.devices.rtc import Mc146818Rtc
from pyvmm.devices.serial import Serial16550
from pyvmm.devices.sink import POST_PORT, IgnoredPort
from pyvmm.errors import Log, PyvmmError, UsageError
from pyvmm.kvm.system import DEFAULT_KVM_PATH, Kvm
from pyvmm.loaders import describe_format, load_image
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.machine.firmware import attach_firmware, firmware_ranges
from pyvmm.machine.interrupts import InterruptLines
from pyvmm.machine.legacy_pc import VgaTextWatch, attach_no_bios
from pyvmm.machine.outcome import OutcomeKind, RunOutcome, vmm_error
from pyvmm.machine.pit import attach_pit, check_pit
from pyvmm.machine.ram_size import check_ram_size, host_memory_size  # noqa: F401 (re-exported)
from pyvmm.machine.reset import attach_reset_sources
from pyvmm.machine.rtc_timer import attach_rtc
from pyvmm.machine.run_signals import stop_on_signals, stop_signals_raise
from pyvmm.machine.vcpu_group import VcpuGroup
from pyvmm.machine.vcpu_loop import VcpuLoop
from pyvmm.memory.guest_memory import GuestMemory
from pyvmm.startup_gc import resume_collection

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    # What a run does not need is imported where it is used: the exit trace, the
    # page walks, the test device (see tests/integration/test_startup_imports.py).
    from collections.abc import Callable

    from pyvmm.arch.x86_64.no_bios import NoBiosTrap
    from pyvmm.arch.x86_64.page_walk import Mapping, PagingRegisters
    from pyvmm.arch.x86_64.registers import Registers
    from pyvmm.console.input import InputBuffer
    from pyvmm.devices.irq import IrqLine
    from pyvmm.devices.rtc import CmosContents
    from pyvmm.firmware.tables import FirmwareTables
    from pyvmm.kvm.vcpu import Vcpu
    from pyvmm.kvm.vm import Vm
    from pyvmm.machine.early_vm import EarlyVm
    from pyvmm.machine.io_thread import IoThread
    from pyvmm.machine.split_irqchip import SplitIrqchip
    from pyvmm.machine.vcpu_loop import ExitObserver
    from pyvmm.machine.virtio import Drive, VirtioSlot
    from pyvmm.observe.translation import Translation

log = Log(__name__)

COM1_PORT = 0x3F8
COM1_SIZE = 8
COM1_GSI = 4  # ISA IRQ 4, as on every PC


class MachineConfig:
    """Everything `build_machine` needs, in the VMM's own units (read-only once made).

    `image` is the whole image file (bytes; its format is found by its
    magic), `ram_size` guest RAM in bytes (a whole number of 4 KiB pages, at
    least 2 MiB), `console` the callback that receives each chunk of bytes
    the guest writes to COM1. `pyvmm.create_machine` builds one from paths,
    size strings and files. The other fields:

    - `mode`, `load_gpa`: the entry mode and a flat image's load address (None: the default);
    - `kvm_path`: the KVM device node; `cpus`: the vCPU count;
    - `cmdline`, `modules`: multiboot's command line as QEMU passes it, and
      the modules (--initrd) as (command line, bytes); `append`: what
      --append added to cmdline (None: nothing), refused for other images;
    - `force_multiboot`: --multiboot; `image_format`: --format (None: found by
      its contents; see `pyvmm.loaders.plan_image`);
    - `max_exits`: each vCPU stops after this many exits;
    - `console_input`: host input for COM1, or for the virtio-console with
      `virtio_console` (console/input.py); None: none;
    - `irqchip`: where the interrupt controllers are (QEMU's kernel_irqchip=):
      "split" (KVM's LAPICs, pyvmm's PIC pair and IOAPIC: machine/split_irqchip.py),
      "on" or True (KVM's PIC, IOAPIC and LAPICs, as Firecracker has them),
      "off" or False (none, and `hlt` exits to pyvmm; one vCPU only: INIT/SIPI
      need the LAPICs); None: split, or on where KVM's PIT or irqfds need it
      (early_vm.irqchip_mode);
    - `pit`: "user" (pyvmm's 8254, machine/pit.py) or "kernel" (KVM's PIT2,
      which needs the irqchip); `pit_scale`: the user PIT's clock runs this
      many times slower than the host's (1: as programmed);
    - `vga_text`: watch the VGA text buffer with KVM's dirty-page log (legacy_pc.py);
    - `testdev`: QEMU's pc-testdev (--testdev); `acpi`: ACPI tables and the
      PM blocks (--acpi on|off; QEMU's -machine acpi=);
    - `cmos`: the RTC's battery-backed CMOS and clock from the machine a
      guest reset (`pyvmm boot --reboot`); None: a power-on;
    - virtio devices (machine/virtio.py): `virtio_console` (the console's
      output goes to `console` too), `drive` (a virtio-blk disk, a
      machine.virtio.Drive), `virtio_rng` (host entropy), `balloon`;
      `ioeventfd`: their notifications through ioeventfds and interrupts
      through irqfds, served by an I/O thread (None: where the host has
      them and the machine an irqchip; False: MMIO exits and KVM_IRQ_LINE;
      True: required, UsageError without);
    - `emulate`: pyvmm performs the instructions KVM's emulator gives up on
      when its table has them (arch/x86_64/assist; False: --emulate none);
    - `hide_cpuid`: CPU features cleared in every vCPU's CPUID, by Linux's
      names (host_findings.FEATURE_BITS; machine/linux_host.py chooses them).

    A plain class, not a dataclass: creating a dataclass costs more at
    start-up than the whole exit path (tests/integration/test_startup_imports.py).
    """

    __slots__ = (
        "acpi",
        "append",
        "balloon",
        "cmdline",
        "cmos",
        "console",
        "console_input",
        "cpus",
        "drive",
        "emulate",
        "force_multiboot",
        "hide_cpuid",
        "image",
        "image_format",
        "ioeventfd",
        "irqchip",
        "kvm_path",
        "load_gpa",
        "max_exits",
        "mode",
        "modules",
        "pit",
        "pit_scale",
        "ram_size",
        "testdev",
        "vga_text",
        "virtio_console",
        "virtio_rng",
    )

    def __init__(
        self,
        image: bytes,
        ram_size: int,
        console: Callable[[bytes], None],
        mode: CpuMode | None = None,
        load_gpa: int | None = None,
        kvm_path: str = DEFAULT_KVM_PATH,
        cpus: int = 1,
        cmdline: str = "",
        modules: tuple[tuple[str, bytes], ...] = (),
        append: str | None = None,
        force_multiboot: bool = False,
        image_format: str | None = None,
        max_exits: int | None = None,
        console_input: InputBuffer | None = None,
        irqchip: bool | str | None = None,
        vga_text: bool = False,
        testdev: bool = False,
        acpi: bool = True,
        cmos: CmosContents | None = None,
        virtio_console: bool = False,
        drive: Drive | None = None,
        virtio_rng: bool = False,
        balloon: bool = False,
        ioeventfd: bool | None = None,
        emulate: bool = True,
        hide_cpuid: tuple[str, ...] = (),
        pit: str = "user",
        pit_scale: int = 1,
    ) -> None:
        self.image = image
        self.ram_size = ram_size
        self.console = console
        self.mode = mode
        self.load_gpa = load_gpa
        self.kvm_path = kvm_path
        self.cpus = cpus
        self.cmdline = cmdline
        self.modules = modules
        self.append = append
        self.force_multiboot = force_multiboot
        self.image_format = image_format
        self.max_exits = max_exits
        self.console_input = console_input
        self.irqchip = irqchip
        self.vga_text = vga_text
        self.testdev = testdev
        self.acpi = acpi
        self.cmos = cmos
        self.virtio_console = virtio_console
        self.drive = drive
        self.virtio_rng = virtio_rng
        self.balloon = balloon
        self.ioeventfd = ioeventfd
        self.emulate = emulate
        self.hide_cpuid = hide_cpuid
        self.pit = pit
        self.pit_scale = pit_scale

    def replace(self, **changes: object) -> MachineConfig:
        """A copy with `changes` (field=value) applied, as dataclasses.replace."""
        values = {name: getattr(self, name) for name in self.__slots__}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"MachineConfig has no field {', '.join(sorted(unknown))}")
        values.update(changes)
        return MachineConfig(**values)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MachineConfig):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # equal configs need not hash alike

    def __repr__(self) -> str:
        shown = (
            f"{name}={getattr(self, name)!r}"
            if name != "image"
            else f"image=<{len(self.image)} bytes>"
            for name in self.__slots__
        )
        return f"MachineConfig({', '.join(shown)})"

    @property
    def irqchip_mode(self) -> str:
        """The mode: on, split or off (early_vm.irqchip_mode); ValueError for a bad `irqchip`."""
        from pyvmm.machine.early_vm import irqchip_mode

        virtio = bool(self.virtio_console or self.drive or self.virtio_rng or self.balloon)
        return irqchip_mode(self.irqchip, self.pit == "kernel", self.ioeventfd, virtio)

    @property
    def wants_irqchip(self) -> bool:
        return self.irqchip_mode != "off"

    @property
    def wants_split_irqchip(self) -> bool:
        return self.irqchip_mode == "split"

    @property
    def wants_kernel_pit(self) -> bool:
        return self.pit == "kernel"


class Machine(ClosesOnExit):
    """A built VM, ready to run once. Closing releases every fd and mapping.

    Made by `build_machine` (or `pyvmm.create_machine`); use it in a `with`
    block. Its parts stay reachable for scripts that need them: `memory`
    (GuestMemory, guest RAM), `pio_bus` and `mmio_bus` (the Bus each exit is
    dispatched on), `entry` (the EntryPoint the loader returned), `vcpu` and
    `loop` (vCPU 0's KVM fd and exit loop; `loop.exit_count` counts its VM
    exits), `group` (every vCPU). Methods that read the vCPU's state call
    vCPU ioctls: call them before or after `run`, not from another thread
    during it.
    """

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
        # Set by build_machine: the no-BIOS trap (real-mode entries), the VGA text watch.
        self.no_bios: NoBiosTrap | None = None
        self.vga_text: VgaTextWatch | None = None
        # Set by build_machine: which device drives which GSI (see interrupts.py).
        self.interrupts: InterruptLines | None = None
        self.split_irqchip: SplitIrqchip | None = None
        # Set by build_machine: what it was built from (`pyvmm boot --reboot` builds it again).
        self.config: MachineConfig | None = None
        # Set by build_machine: the MP and ACPI tables written into RAM (see firmware.py).
        self.firmware: FirmwareTables | None = None
        # Set by build_machine: the virtio transports and their devices (machine/virtio.py).
        self.virtio: list[VirtioSlot] = []
        # Set by build_machine: the RTC and CMOS (a reboot carries its contents over).
        self.rtc: Mc146818Rtc | None = None
        # Set by build_machine: pyvmm's 8254 (None: KVM's PIT, --pit kernel).
        self.pit: I8254 | None = None
        # Set by build_machine: where pyvmm put its GDT, page tables, TSS and stack.
        self.vmm_places = layout.DEFAULT_PLACES
        # Set by build_machine: the boot timer at port 0x3f0 (devices/boot_timer.py).
        self.boot_timer: BootTimer | None = None

    def run(self, timeout: float | None = None, observer: ExitObserver | None = None) -> RunOutcome:
        """Run every vCPU (KVM_RUN, KVM API doc 4.10) until the run ends; how it ended.

        Always returns a RunOutcome, whatever the guest does: an error while
        serving an exit becomes OutcomeKind.VMM_ERROR, never an exception.
        `timeout` is in seconds (OutcomeKind.TIMEOUT when it expires); the
        exit limit is `MachineConfig.max_exits` (OutcomeKind.EXIT_LIMIT).
        `observer` sees every exit with its timing (the --trace and --stats
        machinery). For the run, SIGALRM (the timeout), SIGINT, SIGTERM and
        SIGHUP (OutcomeKind.INTERRUPTED) get pyvmm's handlers, and the old
        ones come back after; that needs the main thread: from another
        thread no handler is installed and `timeout` has no effect.
        """
        resume_collection()  # paused by the pyvmm program while it started up
        with stop_on_signals(self.group.request_stop, timeout):
            outcome = self.group.run(observer)
        if outcome.kind.is_abnormal and outcome.registers is None:
            # Stopped from outside (timeout, signal): show where vCPU 0 was.
            outcome = outcome.replace(registers=self._registers_or_none())
        return outcome

    def _registers_or_none(self) -> str | None:
        try:
            return self.loop.register_dump()
        except PyvmmError:
            return None

    def translate(self, gva: int) -> Translation:
        """The chain GVA -> GPA -> HVA -> HPA for `gva`, with vCPU 0's current paging.

        GVA -> GPA is the software walk of the guest's page tables (Intel SDM
        vol. 3A, 4.3 to 4.5), cross-checked with KVM_TRANSLATE (KVM API doc
        4.15); GPA -> HVA comes from the memory slots (4.35); HVA -> HPA from
        the host's /proc/self/pagemap (frame numbers need root). A chain
        that stops early says why in `Translation.problem`: no exception for
        an unmapped address. Raises KvmError if KVM refuses the ioctls.
        """
        from pyvmm.observe.translation import translate

        return translate(self.memory, self.vcpu, gva, self.max_phys_bits)

    def paging_registers(self) -> PagingRegisters:
        """vCPU 0's CR0, CR3, CR4 and EFER: what decides its paging (KVM_GET_SREGS, 4.13)."""
        from pyvmm.observe.translation import paging_registers

        return paging_registers(self.vcpu)

    def mappings(self) -> list[Mapping]:
        """Every virtual range the guest's current page tables map."""
        from pyvmm.arch.x86_64.page_walk import list_mappings

        return list_mappings(self.memory, self.paging_registers(), self.max_phys_bits)

    def registers(self, cpu: int = 0) -> Registers:
        """vCPU `cpu`'s registers now, as a plain, frozen `Registers` snapshot.

        KVM_GET_REGS and KVM_GET_SREGS (KVM API doc 4.11, 4.13). Raises
        ValueError for a vCPU the machine does not have, KvmError if KVM
        refuses.
        """
        vcpu = self._vcpu(cpu)
        from pyvmm.arch.x86_64.registers import Registers

        return Registers.from_kvm(vcpu.get_regs(), vcpu.get_sregs())

    def read_physical(self, gpa: int, size: int) -> bytes:
        """`size` bytes of guest RAM at guest-physical address `gpa`.

        Guest RAM is host memory behind the KVM memory slots (KVM API doc
        4.35, KVM_SET_USER_MEMORY_REGION): this reads it directly, without an
        ioctl. Raises GuestMemoryError if any byte is not RAM (a hole, MMIO).
        """
        return self.memory.read(gpa, size)

    def write_physical(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` into guest RAM at guest-physical `gpa` (as `read_physical`).

        Raises GuestMemoryError, and writes nothing, if any byte is not RAM.
        """
        self.memory.write(gpa, data)

    def read_virtual(self, gva: int, size: int, cpu: int = 0) -> bytes:
        """`size` bytes at guest-virtual (linear) address `gva`, through vCPU `cpu`'s paging.

        Each page is translated by the software walk of the guest's own page
        tables from its current CR0/CR3/CR4/EFER (Intel SDM vol. 3A, 4.3 to
        4.5; linear addresses: 3.4), then read as `read_physical` does; with
        paging off, linear is physical. Raises GuestPageFault when a page does
        not translate, GuestMemoryError when it maps onto something that is
        not RAM, ValueError for a negative size or an address outside 64 bits.
        """
        from pyvmm.arch.x86_64.virtual_memory import read_virtual
        from pyvmm.observe.translation import paging_registers

        paging = paging_registers(self._vcpu(cpu))
        return read_virtual(self.memory, paging, gva, size, self.max_phys_bits)

    def write_virtual(self, gva: int, data: bytes | bytearray | memoryview, cpu: int = 0) -> None:
        """Write `data` at guest-virtual `gva`, through vCPU `cpu`'s paging (as `read_virtual`).

        Every page is translated before the first byte is written: a fault
        writes nothing. The pages' permissions are not checked: the VMM
        writes, not the guest, as a debugger does.
        """
        from pyvmm.arch.x86_64.virtual_memory import write_virtual
        from pyvmm.observe.translation import paging_registers

        paging = paging_registers(self._vcpu(cpu))
        write_virtual(self.memory, paging, gva, data, self.max_phys_bits)

    def attach_pio_device(
        self, device: BusDevice, port: int, length: int, name: str | None = None
    ) -> None:
        """Put `device` on the port I/O bus at ports [port, port + length), before `run`.

        A guest `in`/`out` there (KVM_EXIT_IO, KVM API doc 5) calls
        `device.read(offset, size) -> int` or `device.write(offset, size,
        value)` with `offset` from `port` and `size` 1, 2 or 4 bytes. With
        several vCPUs one device access runs at a time. Raises BusError for a
        range outside the 64 KiB I/O space or an empty one, BusOverlap for a
        range another device has (COM1 0x3f8-0x3ff, debug-exit 0xf4-0xf7,
        POST 0x80, fw_cfg 0x510-0x511, PCI 0xcf8 and 0xcfc-0xcff, the keyboard
        controller 0x60 and 0x64, reset controls 0x92 and 0xcf9).
        """
        from pyvmm.machine.device_ranges import check_pio_range

        label = name or type(device).__name__
        check_pio_range(port, length, label)
        self.pio_bus.insert(device, port, length, label)

    def attach_mmio_device(
        self, device: BusDevice, gpa: int, length: int, name: str | None = None
    ) -> None:
        """Put `device` on the MMIO bus at guest-physical [gpa, gpa + length), before `run`.

        A guest access there (KVM_EXIT_MMIO, KVM API doc 5) calls
        `device.read(offset, size)` or `device.write(offset, size, value)`
        with `size` 1, 2, 4 or 8 bytes, little-endian values. Only addresses
        outside guest RAM exit to the VMM: use the MMIO hole at 0xd0000000
        (below 0xfec00000, where an in-kernel IOAPIC and LAPICs answer
        themselves) or addresses above RAM. Raises BusError for a range over
        RAM, over the pages given to KVM or beyond MAXPHYADDR, BusOverlap for
        a range another device has.
        """
        from pyvmm.machine.device_ranges import check_mmio_range

        label = name or type(device).__name__
        check_mmio_range(self.memory, gpa, length, self.max_phys_bits, label)
        self.mmio_bus.insert(device, gpa, length, label)

    def _vcpu(self, cpu: int) -> Vcpu:
        loops = self.group.loops
        if not 0 <= cpu < len(loops):
            raise ValueError(f"no vCPU {cpu}: this machine has vCPUs 0..{len(loops) - 1}")
        return loops[cpu].vcpu

    def close(self) -> None:
        """Release the vCPUs, the VM, /dev/kvm and guest RAM, in that order (idempotent)."""
        self._resources.close()


@stop_signals_raise()  # a SIGTERM while building unwinds what was built
def build_machine(config: MachineConfig, early: EarlyVm | None = None) -> Machine:
    """Open KVM, create the VM, its RAM, devices and vCPUs, load the image: a Machine.

    Nothing runs yet. The image is loaded by its format (see
    `pyvmm.loaders.load_image`) and vCPU 0 is set to its entry state.
    The VM, its RAM and its irqchip come from `start_vm`
    (machine/early_vm.py); `early` is one made beforehand for this config,
    which the machine takes over. Raises UsageError (RAM
    size, vCPU count), LoaderError (an image that cannot be loaded or
    placed), KvmUnavailable (no usable KVM device), KvmError (a KVM ioctl
    failed), ValueError (an `early` VM that does not match the config);
    whatever was built by then is released, `early` included.
    """
    check_ram_size(config.ram_size)
    if early is None:
        from pyvmm.machine.early_vm import start_vm

        early = start_vm(
            config.kvm_path, config.wants_irqchip, config.ram_size, config.vga_text,
            config.wants_kernel_pit, config.wants_split_irqchip,
        )  # fmt: skip
    with ExitStack() as resources:
        resources.callback(early.close)  # the VM, then its memory
        check_pit(config)
        wanted = (config.wants_irqchip, config.kvm_path, config.ram_size, config.vga_text)
        made = (early.irqchip, early.kvm_path, early.ram_size, early.watches_vga)
        wanted += (config.wants_irqchip and config.wants_kernel_pit, config.wants_split_irqchip)
        made += (early.kernel_pit, early.split)
        if wanted != made:
            raise ValueError("the early VM does not match the machine's configuration")
        memory, kvm, vm, vga_text = early.memory, early.kvm, early.vm, early.vga_text
        check_vcpu_count(kvm, config.cpus)

        # What the machine writes into RAM besides pyvmm's entry-state structures
        # (start, end, what), e.g. firmware tables: the image and those structures
        # stay clear of it. The placement composes the one list every writer is in.
        machine_ranges: list[tuple[int, int, str]] = []
        machine_ranges += firmware_ranges(
            interrupt_controllers=config.wants_irqchip, acpi=config.acpi
        )
        placement = plan_placement(
            config.image,
            memory,
            mode=config.mode,
            load_gpa=config.load_gpa,
            force_multiboot=config.force_multiboot,
            modules=config.modules,
            append=config.append,
            machine_ranges=machine_ranges,
            image_format=config.image_format,
        )
        for what, default, moved_to in placement.moved():
            log.info("moved %s from 0x%x to 0x%x: the image occupies it", what, default, moved_to)
        entry = load_image(
            config.image,
            memory,
            mode=config.mode,
            load_gpa=config.load_gpa,
            default_flat_gpa=default_load_gpa,
            force_multiboot=config.force_multiboot,
            cmdline=config.cmdline,
            modules=config.modules,
            append=config.append,
            reserved=placement.reserved,
            image_format=config.image_format,
        )
        check_entry_placement(entry, placement.reserved, placement.image.fix)
        log.info(
            "loaded %s: 0x%x..0x%x, entry 0x%x in %s mode",
            describe_format(config.image),
            entry.image_start,
            entry.image_end,
            entry.entry,
            entry.mode.value,
        )

        mode = config.irqchip_mode
        log.info(
            "interrupt controllers: %s (--kernel-irqchip %s)", IRQCHIP_DESCRIPTIONS[mode], mode
        )
        if config.cpus > 1 and not config.wants_irqchip:
            raise UsageError(
                "-smp needs KVM's LAPICs (INIT/SIPI go through them): --kernel-irqchip split "
                "(the default) or on, not off"
            )
        # start_vm made the irqchip (the LAPICs INIT/SIPI and IPIs need), and KVM's PIT.
        split = None
        if config.wants_split_irqchip:
            from pyvmm.machine.split_irqchip import SplitIrqchip

            split = SplitIrqchip(vm)
            if entry.mode is CpuMode.REAL:
                split.initialize_pic()  # vector bases 0x08/0x70, as a BIOS leaves them
        elif config.wants_irqchip and entry.mode is CpuMode.REAL:
            from pyvmm.arch.x86_64.pic import set_bios_pic_state  # KVM's PICs

            set_bios_pic_state(vm)  # vector bases 0x08/0x70, as a BIOS leaves them
        vcpus = [resources.enter_context(vm.create_vcpu(index)) for index in range(config.cpus)]
        cpuid = supported_cpuid(kvm)  # once: each vCPU's is this one, rewritten
        for index, each in enumerate(vcpus):
            max_phys_bits = setup_cpuid(
                kvm, each, apic_id=index, cpus=config.cpus, hidden=config.hide_cpuid,
                supported=cpuid,
            )  # fmt: skip
        vcpu = vcpus[0]
        # Only the boot CPU starts at the entry point; the others wait for INIT/SIPI.
        setup_vcpu(vcpu, entry, memory, placement.places)

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
        assists: dict[str, int] | None = {} if config.emulate else None
        for each_loop in loops:
            each_loop.assists = assists
        loop = loops[0]
        group = VcpuGroup(loops, watch_halts=config.wants_irqchip)
        if config.emulate and entry.mode is CpuMode.LONG:
            from pyvmm.arch.x86_64.syscall_repair import attach_syscall_repair

            attach_syscall_repair(loops, group.post, resources, config.kvm_path)
        if split is not None:
            split.attach(pio_bus, mmio_bus)
            split.connect(loop, group.post)
            for each_loop in loops:  # any vCPU's LAPIC may end an IOAPIC interrupt
                each_loop.split_irqchip = split
        interrupts = InterruptLines(vm, config.wants_irqchip, split)
        serial = attach_serial(
            pio_bus,
            config.console,
            None if config.virtio_console else config.console_input,  # the terminal feeds one
            interrupts.line(COM1_GSI, "COM1"),
            group.post,
        )
        attach_debug_exit(pio_bus, group.request_stop)
        boot_timer = BootTimer(early.created_at)
        pio_bus.insert(boot_timer, BOOT_TIMER_PORT, BOOT_TIMER_SIZE, "boot timer")
        pio_bus.insert(IgnoredPort(), POST_PORT, 1, "POST port")
        attach_qemu_board(pio_bus, config)
        attach_reset_sources(pio_bus, interrupts, group.request_stop)  # 0x60/0x64, 0x92, 0xcf9
        rtc = attach_rtc(
            pio_bus, interrupts, config.ram_size, config.cpus, group.post, resources, config.cmos
        )
        pit = None
        if not config.wants_kernel_pit:
            pit = attach_pit(pio_bus, interrupts, group.post, resources, config.pit_scale)
        no_bios = None
        if entry.mode is CpuMode.REAL:
            no_bios = attach_no_bios(
                pio_bus, memory, group.request_stop, acknowledge_irq=bios_eoi(config, vm, split)
            )
        if config.testdev:  # after the no-BIOS trap, which keeps port 0xe5
            from pyvmm.devices.testdev import attach_pc_testdev

            attach_pc_testdev(pio_bus, mmio_bus, memory, interrupts)
        virtio: list[VirtioSlot] = []
        if config.virtio_console or config.drive or config.virtio_rng or config.balloon:
            from pyvmm.machine.virtio import attach_virtio

            io_thread = virtio_io_thread(config, vm, group)
            if io_thread is not None:
                # Closed first at the end (below); this one is for a failure on the way.
                resources.callback(io_thread.close)
            virtio = attach_virtio(
                mmio_bus, memory, interrupts,
                console=config.console if config.virtio_console else None,
                drive=config.drive, entropy=config.virtio_rng, balloon=config.balloon,
                close_later=resources.callback,
                console_input=config.console_input if config.virtio_console else None,
                post=group.post, io_thread=io_thread, vm=vm,
            )  # fmt: skip
            if io_thread is not None:
                io_thread.start()
                resources.callback(io_thread.close)  # before the devices and RAM go
            stop_devices = functools.partial(stop_virtio, virtio)
            group.on_stop.append(stop_devices)  # a device's long work ends with the run,
            resources.callback(stop_devices)  # and before the I/O thread is joined
            for slot in virtio:
                path = "ioeventfd and irqfd" if slot.eventfds else PLAIN_PATHS[mode]
                log.info("virtio-mmio %s at 0x%x, GSI %d (%s)", slot.kind, slot.gpa, slot.gsi, path)
                if slot.kind == "block" and config.drive is not None:
                    log.info(
                        "virtio-blk: %s, %d sectors of 512 bytes%s",
                        config.drive.path,
                        slot.device.capacity,  # type: ignore[attr-defined]
                        ", read-only" if config.drive.read_only else "",
                    )
        # After the devices: the tables describe what is on the bus.
        firmware = attach_firmware(
            kvm, memory, pio_bus, group.request_stop,
            cpus=config.cpus, interrupt_controllers=config.wants_irqchip, acpi=config.acpi,
            virtio=tuple((slot.gpa, slot.gsi) for slot in virtio), cpuid=cpuid,
        )  # fmt: skip
        if vga_text is not None:
            vga_text.mark_start()

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
        machine.config = config
        machine.vmm_places = placement.places
        machine.interrupts = interrupts
        machine.split_irqchip = split
        machine.firmware = firmware
        machine.rtc = rtc
        machine.pit = pit
        machine.virtio = virtio
        machine.no_bios, machine.vga_text = no_bios, vga_text
        machine.boot_timer = boot_timer
    return machine


# What `-v` says of each --kernel-irqchip mode, and of a virtio device's interrupt without irqfds.
IRQCHIP_DESCRIPTIONS = {
    "split": "KVM's LAPICs, pyvmm's PICs and IOAPIC",
    "on": "KVM's PICs, IOAPIC and LAPICs",
    "off": "none",
}
PLAIN_PATHS = {
    "split": "MMIO exit and pyvmm's IOAPIC",
    "on": "MMIO exit and KVM_IRQ_LINE",
    "off": "MMIO exit, no interrupt controller",
}


def bios_eoi(
    config: MachineConfig, vm: Vm, split: SplitIrqchip | None
) -> Callable[[int], int | None] | None:
    """What ends a PIC interrupt the no-BIOS trap's default handler gets: pyvmm's PICs,
    KVM's (arch/x86_64/pic.py), or None without interrupt controllers."""
    if split is not None:
        return split.end_of_interrupt_for_vector
    if not config.wants_irqchip:
        return None
    from pyvmm.arch.x86_64.pic import acknowledge_irq_vector

    return functools.partial(acknowledge_irq_vector, vm)


def stop_virtio(slots: list[VirtioSlot]) -> None:
    """Tell each virtio transport the run is over: its device cuts long work short."""
    for slot in slots:
        slot.transport.stopping = True


def virtio_io_thread(config: MachineConfig, vm: Vm, group: VcpuGroup) -> IoThread | None:
    """The I/O thread that serves virtio notifications through eventfds, or None for the
    plain path (MMIO exits and KVM_IRQ_LINE): `config.ioeventfd` False, no
    irqchip, or a host without KVM_CAP_IOEVENTFD/IRQFD/IRQFD_RESAMPLE when
    it is None. UsageError when it is True and the machine cannot have it."""
    from pyvmm.machine.virtio import eventfds_available

    if config.ioeventfd is False:
        return None
    if config.irqchip_mode != "on":  # refuses --ioeventfd on without KVM's irqchip
        return None
    if not eventfds_available(vm):
        if config.ioeventfd:
            raise UsageError(
                "--ioeventfd on: this host's KVM lacks KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD or "
                "KVM_CAP_IRQFD_RESAMPLE; use --ioeventfd off"
            )
        return None
    from pyvmm.machine.io_thread import IoThread

    return IoThread(lambda message: group.request_stop(vmm_error(message)))


def attach_serial(
    pio_bus: Bus,
    console: Callable[[bytes], None],
    host_input: InputBuffer | None = None,
    irq: IrqLine | None = None,
    post: Callable[[Callable[[], None]], None] | None = None,
) -> Serial16550:
    """COM1: a 16550A at 0x3f8, its INTR on `irq` (ISA IRQ 4 on a PC).

    `post` runs device work in a vCPU thread (VcpuGroup.post): host input is
    pushed into the UART through it as it arrives, so that its receive
    interrupt reaches a guest waiting in `hlt`.
    """
    serial = Serial16550(console, irq)
    device: BusDevice = serial
    if host_input is not None:
        from pyvmm.console.input import SerialWithInput

        device = SerialWithInput(serial, host_input, post)
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
    # see pyvmm.machine.reset); CONFIG_DATA is 0xcfc-0xcff.
    pio_bus.insert(pci, PCI_CONFIG_ADDRESS_PORT, 1, "PCI CONFIG_ADDRESS (empty bus)")
    pio_bus.insert(Shifted(pci, 4), PCI_CONFIG_DATA_PORT, 4, "PCI CONFIG_DATA (empty bus)")


# The most vCPUs pyvmm gives a guest. Each vCPU's LAPIC has the vCPU id as its
# xAPIC ID, and xAPIC IDs are 8 bits with 0xff the broadcast destination (Intel
# SDM vol. 3A, APIC chapter, "Physical Destination Mode": single destinations
# 00H-FEH; CPUID.1:EBX[31:24] is 8 bits too): IDs 0..254. More needs x2APIC IDs
# and KVM_CAP_X2APIC_API, which pyvmm does not enable; QEMU refuses an APIC ID
# of 255 or more without them (hw/i386/x86-common.c, x86_cpus_init).
MAX_CPUS = 255
# KVM API doc 4.7 (KVM_CREATE_VCPU): without KVM_CAP_NR_VCPUS, assume 4.
DEFAULT_RECOMMENDED_VCPUS = 4


def check_vcpu_count(kvm: Kvm, cpus: int) -> None:
    """Refuse a vCPU count this host's KVM or pyvmm cannot run (UsageError, one line).

    KVM API doc 4.7 (KVM_CREATE_VCPU): KVM_CAP_MAX_VCPUS is the most vCPUs a VM
    may have, KVM_CAP_NR_VCPUS the recommended most (on x86, the host's CPU
    count). Above the recommendation the vCPUs share host CPUs: that is allowed
    and logged (seen with -v), as QEMU warns. Ids 0..cpus-1 are below
    KVM_CAP_MAX_VCPU_ID, which is never less than KVM_CAP_MAX_VCPUS.
    """
    recommended = kvm.check_extension(lib.KVM_CAP_NR_VCPUS) or DEFAULT_RECOMMENDED_VCPUS
    limit = kvm.check_extension(lib.KVM_CAP_MAX_VCPUS) or recommended
    if cpus < 1:
        raise UsageError(f"-smp {cpus}: a machine needs at least one vCPU")
    if cpus > limit and limit < MAX_CPUS:
        raise UsageError(
            f"-smp {cpus}: more than the {limit} vCPUs this host's KVM allows (KVM_CAP_MAX_VCPUS)"
        )
    if cpus > MAX_CPUS:
        raise UsageError(
            f"-smp {cpus}: more than the {MAX_CPUS} vCPUs pyvmm supports (xAPIC IDs are 8 "
            "bits, 0xff is the broadcast ID, and pyvmm has no x2APIC)"
        )
    if cpus > recommended:
        log.info(
            "-smp %d: more vCPUs than this host's KVM recommends (KVM_CAP_NR_VCPUS = %d): "
            "they share its CPUs",
            cpus,
            recommended,
        )
