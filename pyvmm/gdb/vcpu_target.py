"""The gdb `Target` over a real vCPU: registers, memory through the guest's
page tables, and breakpoints and watchpoints on the x86 debug registers."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyvmm._kvm import lib
from pyvmm.arch.x86_64.instruction import code_bits
from pyvmm.arch.x86_64.page_walk import walk
from pyvmm.errors import GuestMemoryError
from pyvmm.gdb import MemoryAccessError, NoFreeDebugRegister
from pyvmm.gdb.registers import CpuView
from pyvmm.gdb.session import (
    Breakpoint,
    BreakpointKind,
    Interrupted,
    Stepped,
    StopReason,
    Watchpoint,
)
from pyvmm.kvm.exits import Debug

if TYPE_CHECKING:
    from pyvmm.machine.builder import Machine

PAGE_SIZE = 0x1000
INT3 = 0xCC
DEBUG_ADDRESS_REGISTERS = 4
# DR7 (SDM 18.2.4): L0..L3 enable bits at 2*i, R/W at 16+4*i, LEN at 18+4*i.
DR7_RW = {
    BreakpointKind.HARDWARE: 0b00,
    BreakpointKind.WRITE_WATCH: 0b01,
    BreakpointKind.ACCESS_WATCH: 0b11,
    BreakpointKind.READ_WATCH: 0b11,
}
DR7_LEN = {1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10}
DR6_HITS = 0xF
WATCH_NAMES = {
    BreakpointKind.WRITE_WATCH: "watch",
    BreakpointKind.READ_WATCH: "rwatch",
    BreakpointKind.ACCESS_WATCH: "awatch",
}

_GPRS = (
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rbp",
    "rsp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
)
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
_CONTROL = ("cr0", "cr2", "cr3", "cr4", "efer")


@dataclass(frozen=True)
class DebugSlot:
    kind: BreakpointKind
    gva: int
    length: int


@functools.cache
def host_reports_int3(kvm_path: str) -> bool:
    """Does this host's KVM report `int3` with KVM_GUESTDBG_USE_SW_BP? Probed once.

    VT-x and AMD-V do; some software backends (kvm_pvm) never report it, and
    the guest then meets its own int3. pyvmm then uses debug registers.
    """
    from pyvmm.loaders.entry import CpuMode
    from pyvmm.machine.builder import MachineConfig, build_machine

    config = MachineConfig(
        image=bytes([INT3, 0xF4]),
        ram_size=4 << 20,
        console=lambda data: None,
        mode=CpuMode.LONG,
        kvm_path=kvm_path,
        irqchip=False,  # the probe ends at its hlt (KVM_EXIT_HLT) if nothing stops it
    )
    with build_machine(config) as probe:
        probe.vcpu.set_guest_debug(lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_SW_BP)
        outcome = probe.loop.run()
    debug = outcome.debug
    return isinstance(debug, Debug) and debug.exception == 3


@functools.cache
def host_reports_data_breakpoints(kvm_path: str) -> bool:
    """Does a write watchpoint in DR0-DR3 stop the guest on this host? Probed once.

    kvm_pvm reports instruction breakpoints and single steps but not data
    breakpoints; there pyvmm emulates write watchpoints by single-stepping.
    """
    from pyvmm.loaders.entry import CpuMode
    from pyvmm.machine.builder import MachineConfig, build_machine

    store = bytes.fromhex("48890425000009 00 f4".replace(" ", ""))  # mov [0x90000], rax; hlt
    config = MachineConfig(
        image=store,
        ram_size=4 << 20,
        console=lambda data: None,
        mode=CpuMode.LONG,
        kvm_path=kvm_path,
        irqchip=False,  # the probe ends at its hlt (KVM_EXIT_HLT) if nothing stops it
    )
    dr7 = 1 | DR7_RW[BreakpointKind.WRITE_WATCH] << 16 | DR7_LEN[8] << 18
    with build_machine(config) as probe:
        probe.vcpu.set_guest_debug(
            lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP, (0x90000, 0, 0, 0, 0, 0, 0, dr7)
        )
        outcome = probe.loop.run()
    debug = outcome.debug
    return isinstance(debug, Debug) and bool(debug.dr6 & 1)


class VcpuTarget:
    """Implements `pyvmm.gdb.session.Target` for vCPU 0 of a Machine.

    It only *schedules* (`resume`, `interrupt`, `detach`, `kill`); the server
    that owns the vCPU thread reads `pending` and runs the guest.
    """

    def __init__(
        self, machine: Machine, software_breakpoints: bool, data_breakpoints: bool = True
    ) -> None:
        self.machine = machine
        self.vcpu = machine.vcpu
        self.software_breakpoints = software_breakpoints
        # Without data breakpoints, write watchpoints are emulated by single-stepping.
        self.data_breakpoints = data_breakpoints
        self.slots: list[DebugSlot | None] = [None] * DEBUG_ADDRESS_REGISTERS
        self.int3s: dict[int, int] = {}  # gva -> the byte int3 replaced
        self.pending: str | None = None  # "continue", "step", "detach", "kill"
        self.stepping = False
        self.on_interrupt: Any = None  # set by the server: kicks the vCPU thread

    # -- registers --

    def registers(self) -> dict[str, int]:
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        values = {name: getattr(regs, name) for name in _GPRS}
        values["eflags"] = regs.rflags
        values.update({name: getattr(sregs, name).selector for name in _SEGMENTS})
        values["fs_base"], values["gs_base"] = sregs.fs.base, sregs.gs.base
        values.update({name: getattr(sregs, name) for name in _CONTROL})
        return values

    def set_register(self, name: str, value: int) -> None:
        if name in _GPRS or name == "eflags":
            regs = self.vcpu.get_regs()
            setattr(regs, "rflags" if name == "eflags" else name, value)
            self.vcpu.set_regs(regs)
            return
        sregs = self.vcpu.get_sregs()
        if name in _CONTROL:
            setattr(sregs, name, value)
        elif name in ("fs_base", "gs_base"):
            getattr(sregs, name[:2]).base = value
        elif name in _SEGMENTS:
            # Only the selector: descriptor caches stay as they are (a debugger edit).
            getattr(sregs, name).selector = value
        else:
            raise MemoryAccessError(0, 0, f"has no register {name}")
        self.vcpu.set_sregs(sregs)

    def cpu_view(self) -> CpuView:
        bits = code_bits(self.vcpu.get_sregs())
        return CpuView({16: "real", 32: "protected", 64: "long"}[bits])

    # -- memory, through the guest's page tables --

    def _pieces(self, gva: int, size: int) -> list[tuple[int, int]]:
        sregs = self.vcpu.get_sregs()
        paging = self.machine.paging_registers()
        linear = gva if code_bits(sregs) == 64 else gva & 0xFFFF_FFFF
        pieces = []
        done = 0
        while done < size:
            address = linear + done
            found = walk(self.machine.memory, paging, address, self.machine.max_phys_bits)
            if found.gpa is None:
                raise MemoryAccessError(gva, size, found.fault or "is not mapped")
            chunk = min(size - done, PAGE_SIZE - address % PAGE_SIZE)
            pieces.append((found.gpa, chunk))
            done += chunk
        return pieces

    def read_memory(self, gva: int, size: int) -> bytes:
        try:
            data = b"".join(self.machine.memory.read(gpa, n) for gpa, n in self._pieces(gva, size))
        except GuestMemoryError as error:
            raise MemoryAccessError(gva, size, "is not guest RAM") from error
        # Hide our own int3s, as gdb expects of a stub that plants them.
        patched = bytearray(data)
        for address, original in self.int3s.items():
            if gva <= address < gva + size:
                patched[address - gva] = original
        return bytes(patched)

    def write_memory(self, gva: int, data: bytes) -> None:
        offset = 0
        try:
            for gpa, n in self._pieces(gva, len(data)):
                self.machine.memory.write(gpa, data[offset : offset + n])
                offset += n
        except GuestMemoryError as error:
            raise MemoryAccessError(gva, len(data), "is not guest RAM") from error

    # -- breakpoints --

    def insert_breakpoint(self, kind: int, gva: int, length: int) -> bool:
        kind = BreakpointKind(kind)
        if kind is BreakpointKind.SOFTWARE and self.software_breakpoints:
            if gva not in self.int3s:
                original = self.read_memory(gva, 1)[0]
                self.write_memory(gva, bytes([INT3]))
                self.int3s[gva] = original
            return True
        if kind is BreakpointKind.SOFTWARE:
            kind = BreakpointKind.HARDWARE  # the host cannot report int3: use DR0-DR3
            length = 1
        if kind is not BreakpointKind.HARDWARE and (length not in DR7_LEN or gva % length):
            return False
        if kind in (BreakpointKind.READ_WATCH, BreakpointKind.ACCESS_WATCH) and not (
            self.data_breakpoints
        ):
            return False  # a read leaves no trace to compare: cannot be emulated
        slot = DebugSlot(kind, gva, 1 if kind is BreakpointKind.HARDWARE else length)
        if slot in self.slots:
            return True
        for index, used in enumerate(self.slots):
            if used is None:
                self.slots[index] = slot
                return True
        raise NoFreeDebugRegister("all four debug registers (DR0-DR3) are in use")

    def remove_breakpoint(self, kind: int, gva: int, length: int) -> bool:
        kind = BreakpointKind(kind)
        if gva in self.int3s and kind is BreakpointKind.SOFTWARE:
            self.write_memory(gva, bytes([self.int3s.pop(gva)]))
            return True
        for index, used in enumerate(self.slots):
            if (
                used is not None
                and used.gva == gva
                and (
                    used.kind is kind
                    or (kind is BreakpointKind.SOFTWARE and used.kind is BreakpointKind.HARDWARE)
                )
            ):
                self.slots[index] = None
                return True
        return False

    # -- execution control: only scheduled here --

    def resume(self, step: bool) -> None:
        self.pending = "step" if step else "continue"

    def interrupt(self) -> None:
        if self.on_interrupt is not None:
            self.on_interrupt()

    def detach(self) -> None:
        self.pending = "detach"

    def kill(self) -> None:
        self.pending = "kill"

    # -- used by the server --

    def remove_all(self) -> None:
        for gva in list(self.int3s):
            self.remove_breakpoint(BreakpointKind.SOFTWARE, gva, 1)
        self.slots = [None] * DEBUG_ADDRESS_REGISTERS

    def apply(self, step: bool) -> None:
        """Program KVM_SET_GUEST_DEBUG for the next run."""
        control = lib.KVM_GUESTDBG_ENABLE
        if step:
            control |= lib.KVM_GUESTDBG_SINGLESTEP
        if self.int3s:
            control |= lib.KVM_GUESTDBG_USE_SW_BP
        debugregs = [0] * 8
        dr7 = 0
        for index, slot in enumerate(self.slots):
            if slot is None or (self.emulates(slot)):
                continue
            debugregs[index] = slot.gva
            dr7 |= 1 << (2 * index)
            dr7 |= DR7_RW[slot.kind] << (16 + 4 * index)
            dr7 |= DR7_LEN[slot.length] << (18 + 4 * index)
        if dr7:
            control |= lib.KVM_GUESTDBG_USE_HW_BP
            debugregs[7] = dr7
        self.stepping = step
        self.vcpu.set_guest_debug(control, tuple(debugregs))

    def emulates(self, slot: DebugSlot) -> bool:
        return slot.kind is not BreakpointKind.HARDWARE and not self.data_breakpoints

    def watch_snapshots(self) -> dict[int, bytes]:
        """The watched bytes of every emulated watchpoint, by slot index."""
        snapshots = {}
        for index, slot in enumerate(self.slots):
            if slot is not None and self.emulates(slot):
                try:
                    snapshots[index] = self.read_memory(slot.gva, slot.length)
                except MemoryAccessError:
                    snapshots[index] = b""  # unmapped now: a change when it appears
        return snapshots

    def disable(self) -> None:
        self.vcpu.set_guest_debug(0)

    def stop_reason(
        self, debug: Debug | None, snapshots: dict[int, bytes], user_step: bool
    ) -> StopReason | None:
        """Why the vCPU stopped, or None to keep single-stepping emulated watchpoints."""
        if debug is None:
            return Interrupted()
        if debug.exception == 3:
            return Breakpoint("sw")
        for index, before in snapshots.items():
            slot = self.slots[index]
            assert slot is not None
            try:
                now = self.read_memory(slot.gva, slot.length)
            except MemoryAccessError:
                now = b""
            if now != before:
                return Watchpoint("watch", slot.gva)
        for index in range(DEBUG_ADDRESS_REGISTERS):
            slot = self.slots[index]
            if slot is None or not debug.dr6 & (1 << index) or self.emulates(slot):
                continue
            if slot.kind is BreakpointKind.HARDWARE:
                return Breakpoint("hw")
            return Watchpoint(WATCH_NAMES[slot.kind], slot.gva)  # type: ignore[arg-type]
        if user_step or not snapshots:
            return Stepped()
        return None
