"""A trap-and-emulate monitor in miniature, around one pyvmm machine whose guest runs at CPL3.

The guest is a kernel the VMM deprivileged: it runs at CPL3 and believes it
runs at CPL0 on the virtual CPU (`virtual_cpu.VirtualCpu`). The monitor
owns the real machine state, as a classic VMM does:

- its own GDT (a copy of the guest's, at MONITOR_GDT): the real GDTR points
  there, the guest's virtual GDTR at the guest's own table;
- its own IDT (MONITOR_IDT): every CPU exception (vectors 0-31) enters a
  ring-0 stub that writes to TRAP_PORT, so each one comes to pyvmm;
- CR0.TS set (lazy FPU switching, as VMMs of the time did), IOPL 0, and,
  when asked and KVM allows it, CR4.UMIP (Intel SDM vol. 3A, 2.5: SGDT,
  SIDT, SLDT, SMSW and STR raise #GP at CPL > 0).

At a trap pyvmm reads the exception frame the CPU pushed on the ring-0 stack
(SDM vol. 3A, 6.14.2), performs the instruction on the virtual CPU when it
is one (the side table of a rewrite, or an instruction UMIP made fault), and
returns to the guest after it by setting the vCPU's registers (KVM_SET_REGS,
KVM_SET_SREGS): pyvmm, not the guest, plays `iretq`. Anything else is
recorded and stepped over.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

from pyvmm.arch.x86_64.gdt import interrupt_gate
from pyvmm.demos.common import stop_if_interrupted
from pyvmm.demos.rewriter import decode_one
from pyvmm.demos.virtual_cpu import GPRS, Memory, NotSensitive, UserState, VirtualCpu
from pyvmm.errors import KvmError, PyvmmError
from pyvmm.machine.outcome import OutcomeKind, RunOutcome

MONITOR_GDT = 0xC000
MONITOR_IDT = 0xD000
MONITOR_STUBS = 0xE000
STUB_SIZE = 16
VECTORS = 32
TRAP_PORT = 0xE0
# `out %al, $TRAP_PORT; jmp .`: the monitor moves RIP before the jmp ever runs.
STUB = bytes([0xE6, TRAP_PORT, 0xEB, 0xFE])
# Traps: the frame's RIP is already past the instruction (#BP, #OF; SDM 3A, 6.5).
TRAP_CLASS_VECTORS = frozenset({3, 4})
# Exceptions that push an error code (SDM 3A, table 6-1).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
VECTOR_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 6: "#UD", 7: "#NM", 13: "#GP", 14: "#PF"}
CR0_TS = 1 << 3
CR4_UMIP = 1 << 11
RFLAGS_IOPL = 3 << 12
RFLAGS_RF = 1 << 16  # set in a fault's frame (SDM 3A, 18.3.1.1); the emulated instruction is done
# UMIP makes these fault at CPL3 (SDM 3A, 2.5).
UMIP_MNEMONICS = frozenset({"sgdt", "sidt", "sldt", "smsw", "str"})
# A guest that keeps trapping is stopped: far more traps than any demo guest takes.
MAX_TRAPS = 1000


class UmipUnavailable(PyvmmError):
    """KVM did not keep CR4.UMIP: this host's KVM does not offer it to guests."""


@dataclass(frozen=True)
class Trap:
    """One exception the monitor received: where, what, and what it did about it."""

    vector: int
    rip: int
    error_code: int | None
    instruction: str  # as decoded at rip ("?" when it did not decode)
    emulated: bool  # performed on the virtual CPU (False: stepped over)

    @property
    def name(self) -> str:
        return VECTOR_NAMES.get(self.vector, f"vector {self.vector}")


@dataclass
class MonitorRun:
    outcome: RunOutcome
    traps: list[Trap] = field(default_factory=list)
    seconds: float = 0.0


class _TrapPort:
    """TRAP_PORT: a stub's write pauses the vCPU loop so the monitor can take over."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.pending = False

    def read(self, offset: int, size: int) -> int:
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        self.pending = True
        self.loop.pause()  # KVM_RUN completes the `out`, then returns: a consistent state


class TrapMonitor:
    """Owns one built machine (pyvmm.machine.builder) in user mode; see the module docstring.

    `side_table` maps addresses rewritten by `rewriter.rewrite` to their
    original instructions; `umip` asks for CR4.UMIP (raises UmipUnavailable
    when KVM drops it).
    """

    def __init__(
        self, machine: Any, side_table: dict[int, Any] | None = None, umip: bool = False
    ) -> None:
        self.machine = machine
        self.side_table = side_table or {}
        self.memory = Memory(machine.memory.read, machine.memory.write)
        vcpu = machine.vcpu
        sregs = vcpu.get_sregs()
        self.virtual = VirtualCpu(
            gdt_base=sregs.gdt.base,
            gdt_limit=sregs.gdt.limit,
            cr0=sregs.cr0,
        )
        gdt = machine.memory.read(sregs.gdt.base, sregs.gdt.limit + 1)
        machine.memory.write(MONITOR_GDT, gdt)
        idt = b"".join(
            interrupt_gate(MONITOR_STUBS + STUB_SIZE * vector) for vector in range(VECTORS)
        )
        machine.memory.write(MONITOR_IDT, idt)
        for vector in range(VECTORS):
            machine.memory.write(MONITOR_STUBS + STUB_SIZE * vector, STUB)
        sregs.gdt.base = MONITOR_GDT
        sregs.idt.base = MONITOR_IDT
        sregs.idt.limit = len(idt) - 1
        sregs.cr0 |= CR0_TS
        if umip:
            sregs.cr4 |= CR4_UMIP
        try:
            vcpu.set_sregs(sregs)
        except KvmError as error:  # a KVM that rejects the CR4 bit instead of dropping it
            if not umip:
                raise
            raise UmipUnavailable(f"this host's KVM refuses CR4.UMIP ({error})") from None
        if umip and not vcpu.get_sregs().cr4 & CR4_UMIP:
            raise UmipUnavailable("this host's KVM does not let a guest set CR4.UMIP")
        regs = vcpu.get_regs()
        regs.rflags &= ~RFLAGS_IOPL  # the TSS's I/O bitmap still allows the ports
        vcpu.set_regs(regs)
        self._user_cs, self._user_ss = _copy_segment(sregs.cs), _copy_segment(sregs.ss)
        self._port = _TrapPort(machine.loop)
        machine.pio_bus.insert(self._port, TRAP_PORT, 1, "trap monitor")

    def run(self, timeout: float) -> MonitorRun:
        """Run the guest to its end, taking its traps; the outcome is the machine's."""
        result = MonitorRun(RunOutcome(OutcomeKind.TIMEOUT, 0, "not run"))
        started = time.perf_counter()
        deadline = started + timeout
        while True:
            remaining = max(deadline - time.perf_counter(), 0.001)
            outcome = self.machine.run(timeout=remaining)
            stop_if_interrupted(outcome)
            if outcome.kind is OutcomeKind.DEBUG and self._port.pending:
                self._port.pending = False
                result.traps.append(self._take_trap())
                if len(result.traps) < MAX_TRAPS:
                    continue
                outcome = RunOutcome(
                    OutcomeKind.EXIT_LIMIT, outcome.exit_status, f"{MAX_TRAPS} traps: stopped"
                )
            result.outcome = outcome
            result.seconds = time.perf_counter() - started
            return result

    def _take_trap(self) -> Trap:
        vcpu = self.machine.vcpu
        regs = vcpu.get_regs()
        vector = (regs.rip - MONITOR_STUBS) // STUB_SIZE
        frame_at = regs.rsp
        error_code = None
        if vector in ERROR_CODE_VECTORS:
            error_code = int.from_bytes(self.memory.read(frame_at, 8), "little")
            frame_at += 8
        rip, _cs, rflags, rsp, _ss = struct.unpack("<5Q", self.memory.read(frame_at, 40))
        instruction = self.side_table.get(rip) or decode_one(self.memory.read(rip, 15), rip)
        state = UserState({name: getattr(regs, name) for name in GPRS}, rip, rflags & ~RFLAGS_RF)
        state.registers["rsp"] = rsp
        emulated = False
        if instruction is not None and self._should_emulate(vector, rip, instruction):
            try:
                self.virtual.execute(instruction, state, self.memory)
                emulated = True
            except NotSensitive:
                pass
        # Return past the instruction: a fault's frame points at it, a trap's after it.
        size = instruction.size if instruction is not None else 1
        if vector in TRAP_CLASS_VECTORS:
            size = 0
        for name in GPRS:
            setattr(regs, name, state.registers[name])
        regs.rip = rip + size
        regs.rflags = state.rflags
        sregs = vcpu.get_sregs()
        _load_segment(sregs.cs, self._user_cs)
        _load_segment(sregs.ss, self._user_ss)
        vcpu.set_sregs(sregs)
        vcpu.set_regs(regs)
        text = f"{instruction.mnemonic} {instruction.op_str}".strip() if instruction else "?"
        return Trap(vector, rip, error_code, text, emulated)

    def _should_emulate(self, vector: int, rip: int, instruction: Any) -> bool:
        if vector != 13:
            return False
        return rip in self.side_table or instruction.mnemonic in UMIP_MNEMONICS


_SEGMENT_FIELDS = (
    "base",
    "limit",
    "selector",
    "type",
    "present",
    "dpl",
    "db",
    "s",
    "l",
    "g",
    "avl",
)


def _copy_segment(segment: Any) -> dict[str, int]:
    return {name: getattr(segment, name) for name in _SEGMENT_FIELDS}


def _load_segment(segment: Any, values: dict[str, int]) -> None:
    for name, value in values.items():
        setattr(segment, name, value)
