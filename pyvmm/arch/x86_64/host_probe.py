"""Ask this host's KVM, with tiny guests, what it runs as a CPU would (issue 15, item 2).

A software KVM backend (kvm_pvm) emulates all CPL0 guest code, and its
emulator gives up on some instructions, ignores part of KVM_SET_CPUID2 and
leaves a CPL3 `syscall` half done. pyvmm does not guess which host it is on:
`measure_host` runs one scratch VM per question, each a few instructions
long, and `HostFindings` (host_findings.py) holds the answers:

- CPUID: leaves 1, 7 and 0x80000001 with features cleared through
  KVM_SET_CPUID2, read back by a CPL0 guest (`cpuid; hlt`); leaf 0x40000000,
  given a signature of pyvmm's, is the control;
- each instruction of `INSTRUCTIONS`, run at CPL0 and followed by `hlt`: it
  works (the `hlt` after it exits), faults (an IDT stub of its vector
  halts), KVM exits with KVM_INTERNAL_ERROR_EMULATION, or it never completes
  (kvm_pvm runs a CPL0 hypercall, `vmcall` or `vmmcall`, again and again);
- a CPL3 `syscall` (STAR/LSTAR/SFMASK written by the guest, `sysretq` to
  CPL3): is the CPU at CPL0 when it reaches LSTAR (an `out` there exits)?
- an execute breakpoint (KVM_SET_GUEST_DEBUG, DR0): resumed with RFLAGS.RF
  set, does the vCPU trap on the same instruction again?
- the in-kernel PIT at its fastest, with a CPL0 handler that counts ticks
  and runs TICK_WORK instructions (about a Linux tick's): how many ticks a
  fixed window holds; and a counted loop: how long one CPL0 instruction takes.

Every KVM_RUN has a deadline: SIGALRM at the deadline, then every
KICK_INTERVAL, sets `immediate_exit` and interrupts the ioctl (as
machine/run_signals.py does for --timeout), so the probe runs in the main
thread. The guests are machine code written here, each instruction with its
assembly beside it (checked against capstone in tests/unit/test_host_probe.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyvmm._kvm import lib
from pyvmm.arch.x86_64.gdt import (
    CODE_SELECTOR,
    DATA_SELECTOR,
    TSS_SELECTOR,
    USER_DATA_SELECTOR,
    decode_descriptor,
    gdt_bytes,
    interrupt_gate,
    tss_bytes,
    user_mode_gdt,
)
from pyvmm.arch.x86_64.host_findings import (
    EMULATION_FAILURE,
    EXCEPTION,
    FEATURE_BITS,
    NOT_RUN,
    OTHER,
    TIMEOUT,
    WORKS,
    CpuidFinding,
    HostFindings,
    HostKey,
    InstructionFinding,
    ResumeFlagFinding,
    SyscallFinding,
    TimerFinding,
)
from pyvmm.arch.x86_64.host_support import keeps_32bit_paging
from pyvmm.arch.x86_64.registers import EFER_SCE
from pyvmm.errors import KvmError, PyvmmError
from pyvmm.kvm import exits
from pyvmm.kvm.host import kvm_backend
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.memory.addr import GuestPhysAddr
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    from pyvmm.kvm.system import Kvm
    from pyvmm.kvm.vcpu import Vcpu
    from pyvmm.kvm.vm import Vm


class ProbeError(PyvmmError):
    """The probe could not run (not in the main thread, no VM)."""


# -- the scratch guests' memory (2 MiB of RAM at 0) ------------------------------
RAM_SIZE = 2 << 20
# setup_vcpu's defaults: GDT at 0x500, page tables at 0x1000, TSS at 0x7000, stack 0x80000.
IDT_GPA = 0xA000  # 256 16-byte gates (Intel SDM vol. 3A, 6.14.1)
STUBS_GPA = 0xB000  # one `hlt` per vector, STUB_SIZE apart: where a guest halts tells the vector
STUB_SIZE = 4
CODE_GPA = 0x10000
DATA_GPA = 0x20000  # operands (an XSAVE area, MXCSR, a cmpxchg16b target), zeroed
COUNTER_GPA = 0x30000  # the timer guest's tick count
STACK_TOP = 0x80000

GUEST_TIMEOUT = 1.0  # seconds any one guest may run (a few instructions each)
KICK_INTERVAL = 0.01
TIMER_WINDOW = 0.3  # seconds the timer guest is given

CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_FSGSBASE = 1 << 16
CR4_OSXSAVE = 1 << 18
CR4_PKE = 1 << 22
RFLAGS_RF = 1 << 16
DR7_L0 = 1 << 0  # DR0 enabled, R/W 00 (execute), LEN 00 (Intel SDM vol. 3B, 18.2.4)

EXCEPTION_NAMES = {
    0: "#DE", 1: "#DB", 3: "#BP", 6: "#UD", 7: "#NM", 8: "#DF", 13: "#GP", 14: "#PF",
    16: "#MF", 17: "#AC", 19: "#XM",
}  # fmt: skip

# -- machine code ----------------------------------------------------------------


def _imm32(value: int) -> bytes:
    return (value & 0xFFFF_FFFF).to_bytes(4, "little")


def mov_r32(register: int, value: int) -> bytes:
    """`mov $value, %e<register>` (B8+r id); eax 0, ecx 1, edx 2, esp 4, edi 7."""
    return bytes([0xB8 + register]) + _imm32(value)


EAX, ECX, EDX, ESP, EDI = 0, 1, 2, 4, 7
HLT = b"\xf4"


def out_al(port: int) -> bytes:
    return bytes([0xE6, port])  # out %al, $port


def mov_al(value: int) -> bytes:
    return bytes([0xB0, value])  # mov $value, %al


def jmp_absolute(gva: int) -> bytes:
    return mov_r32(EAX, gva) + b"\xff\xe0"  # mov $gva, %eax; jmp *%rax


def wrmsr(msr: int, value: int) -> bytes:
    """`mov $msr, %ecx; mov $lo, %eax; mov $hi, %edx; wrmsr`."""
    return mov_r32(ECX, msr) + mov_r32(EAX, value) + mov_r32(EDX, value >> 32) + b"\x0f\x30"


@dataclass(frozen=True)
class InstructionProbe:
    """One CPL0 instruction: `code` runs from CODE_GPA, `hlt` follows it.

    `cr4`: bits the instruction needs (OSFXSR for SSE...); `vector`: the
    exception it raises when it works (int3: #BP); `mode`: the entry state.
    """

    name: str
    code: bytes
    cr4: int = 0
    vector: int | None = None
    mode: CpuMode = CpuMode.LONG


SET_EDI_DATA = mov_r32(EDI, DATA_GPA)  # mov $DATA_GPA, %edi
UNKNOWN_HYPERCALL = 0x7FFF_FFFF  # no KVM hypercall has this number
INSTRUCTIONS: tuple[InstructionProbe, ...] = (
    InstructionProbe("int3", b"\xcc", vector=3),
    InstructionProbe("clac", b"\x0f\x01\xca"),
    InstructionProbe("stac", b"\x0f\x01\xcb"),
    InstructionProbe("popcnt", b"\xf3\x48\x0f\xb8\xc0"),  # popcnt %rax, %rax
    InstructionProbe("fwait", b"\x9b"),
    InstructionProbe("fninit", b"\xdb\xe3"),
    # ldmxcsr (%rdi): MXCSR 0 (DATA is zeroed) is valid.
    InstructionProbe("ldmxcsr", SET_EDI_DATA + b"\x0f\xae\x17", cr4=CR4_OSFXSR | CR4_OSXMMEXCPT),
    InstructionProbe("movd xmm", b"\x66\x0f\x6e\xc0", cr4=CR4_OSFXSR),  # movd %eax, %xmm0
    InstructionProbe("fxsave", SET_EDI_DATA + b"\x48\x0f\xae\x07", cr4=CR4_OSFXSR),
    # xrstor64 (%rdi) with EDX:EAX = 1 (x87): a zeroed header initialises it.
    InstructionProbe(
        "xrstor",
        SET_EDI_DATA + mov_r32(EAX, 1) + mov_r32(EDX, 0) + b"\x48\x0f\xae\x2f",
        cr4=CR4_OSXSAVE,
    ),
    InstructionProbe(
        "xsetbv",
        mov_r32(ECX, 0) + mov_r32(EAX, 1) + mov_r32(EDX, 0) + b"\x0f\x01\xd1",
        cr4=CR4_OSXSAVE,
    ),  # XCR0 = 1 (x87 only)
    # lock cmpxchg16b (%rdi): 16 zero bytes against RDX:RAX = 0.
    InstructionProbe(
        "lock cmpxchg16b",
        SET_EDI_DATA + mov_r32(EAX, 0) + mov_r32(EDX, 0) + b"\xf0\x48\x0f\xc7\x0f",
    ),
    InstructionProbe("rdfsbase", b"\xf3\x48\x0f\xae\xc0", cr4=CR4_FSGSBASE),  # rdfsbase %rax
    InstructionProbe(  # xsave64 (%rdi), x87 only
        "xsave",
        SET_EDI_DATA + mov_r32(EAX, 1) + mov_r32(EDX, 0) + b"\x48\x0f\xae\x27",
        cr4=CR4_OSXSAVE,
    ),
    InstructionProbe(  # xsaveopt64 (%rdi), x87 only
        "xsaveopt",
        SET_EDI_DATA + mov_r32(EAX, 1) + mov_r32(EDX, 0) + b"\x48\x0f\xae\x37",
        cr4=CR4_OSXSAVE,
    ),
    InstructionProbe("xgetbv", mov_r32(ECX, 0) + b"\x0f\x01\xd0", cr4=CR4_OSXSAVE),  # XCR0
    # vzeroupper needs AVX state on in XCR0: xsetbv XCR0 = 7 (x87, SSE, AVX) first.
    InstructionProbe(
        "vzeroupper",
        mov_r32(ECX, 0) + mov_r32(EAX, 7) + mov_r32(EDX, 0) + b"\x0f\x01\xd1\xc5\xf8\x77",
        cr4=CR4_OSXSAVE | CR4_OSFXSR,
    ),
    InstructionProbe("pxor xmm", b"\x66\x0f\xef\xc0", cr4=CR4_OSFXSR),  # pxor %xmm0, %xmm0
    InstructionProbe("crc32", b"\xf2\x48\x0f\x38\xf1\xc0"),  # crc32q %rax, %rax (SSE4.2)
    InstructionProbe("fnstsw", b"\xdf\xe0"),  # fnstsw %ax
    InstructionProbe("fnclex", b"\xdb\xe2"),
    InstructionProbe("rdtscp", b"\x0f\x01\xf9"),
    InstructionProbe("rdpkru", mov_r32(ECX, 0) + b"\x0f\x01\xee", cr4=CR4_PKE),
    InstructionProbe("swapgs", b"\x0f\x01\xf8"),
    # A same-privilege iretq to the next instruction: push SS, RSP, RFLAGS, CS, RIP.
    InstructionProbe(
        "iretq",
        b"\x48\x89\xe0"  # mov %rsp, %rax
        + bytes([0x6A, DATA_SELECTOR])  # push $DATA_SELECTOR (SS)
        + b"\x50\x9c"  # push %rax (RSP); pushfq
        + bytes([0x6A, CODE_SELECTOR])  # push $CODE_SELECTOR (CS)
        + b"\x48\x8d\x05\x03\x00\x00\x00"  # lea 3(%rip), %rax: past the iretq below
        + b"\x50\x48\xcf",  # push %rax; iretq
    ),
    # A hypercall KVM does not know, which it answers -KVM_ENOSYS in RAX
    # (Documentation/virt/kvm/x86/hypercalls.rst): Intel's instruction and AMD's
    # (KVM takes either on either vendor's CPU).
    InstructionProbe("vmcall", mov_r32(EAX, UNKNOWN_HYPERCALL) + b"\x0f\x01\xc1"),
    InstructionProbe("vmmcall", mov_r32(EAX, UNKNOWN_HYPERCALL) + b"\x0f\x01\xd9"),
    # The 32-bit protected-mode kernel's iret (flat segments, paging off).
    InstructionProbe(
        "iret (protected mode)",
        b"\x9c\x0e\x68" + _imm32(CODE_GPA + 8) + b"\xcf",  # pushf; push %cs; push $next; iret
        mode=CpuMode.PROTECTED,
    ),
)

# CPUID: `cpuid; hlt`, run once per leaf with EAX and ECX set by the VMM.
CPUID_CODE = b"\x0f\xa2" + HLT
HYPERVISOR_LEAF = 0x4000_0000
CONTROL_SIGNATURE = b"pyvmm-probe!"  # EBX, ECX, EDX of leaf 0x40000000 (KVM's: KVMKVMKVM)

# syscall: the CPL0 part writes the MSRs and sysretq's to USER; USER says "CPL3" on
# PORT_USER and makes a syscall; LSTAR says where it arrived on PORT_ENTRY.
PORT_USER = 0xE0
PORT_ENTRY = 0xE1
MSR_STAR = 0xC000_0081
MSR_LSTAR = 0xC000_0082
MSR_SFMASK = 0xC000_0084
# SYSCALL loads CS = STAR[47:32] and SS = +8; SYSRET CS = STAR[63:48] + 16, SS = +8
# (Intel SDM vol. 2B, SYSCALL/SYSRET): the user-mode GDT's order (gdt.py).
STAR = (USER_DATA_SELECTOR - 8 & ~3) << 48 | CODE_SELECTOR << 32
SFMASK = 0x4700  # NT, DF, IF, TF cleared on entry, as Linux does
USER_RFLAGS = 0x3002  # IOPL 3 (and the TSS's bitmap) lets CPL3 use `out`


def syscall_guest() -> tuple[bytes, int, int]:
    """(code at CODE_GPA, the user part's address, LSTAR)."""

    def kernel_part(user: int, lstar: int) -> bytes:
        return (
            wrmsr(MSR_STAR, STAR)
            + wrmsr(MSR_LSTAR, lstar)
            + wrmsr(MSR_SFMASK, SFMASK)
            + mov_r32(ECX, user)  # RCX: where sysretq goes
            + b"\x41\xbb"  # mov $USER_RFLAGS, %r11d
            + _imm32(USER_RFLAGS)
            + b"\x48\x0f\x07"  # sysretq
        )

    user = CODE_GPA + len(kernel_part(0, 0))  # every piece has a fixed size
    lstar = user + 4
    code = kernel_part(user, lstar)
    code += out_al(PORT_USER) + b"\x0f\x05"  # user: out %al, $PORT_USER; syscall
    code += out_al(PORT_ENTRY) + HLT  # lstar: out %al, $PORT_ENTRY; hlt
    return code, user, lstar


# The resume flag: a breakpoint on the second `nop`.
RF_CODE = b"\x90\x90\x90" + HLT
RF_BREAKPOINT = CODE_GPA + 1

# The timer: the 8259s get vectors 0x20/0x28 (ICW1-4), only IRQ 0 unmasked; PIT
# channel 0 runs mode 2 (rate generator) at divisor PIT_DIVISOR; then `sti; hlt` for ever.
# The handler counts the tick, does a tick's work (a loop of TICK_WORK instructions),
# acknowledges (EOI) and goes back to the idle loop on a fresh stack: no iret (which
# this host's emulator may not run). A Linux tick (timekeeping, the scheduler, RCU)
# runs some thousands of instructions: the prototype of issue 15 measured 5-7 ms per
# tick on a host where the probe measures about 0.8 us per CPL0 instruction.
PIT_HZ = 1_193_182
PIT_DIVISOR = 239  # 4992 Hz, 200 us: KVM's shortest PIT period (min_timer_period_us)
TIMER_VECTOR = 0x20
TICK_WORK = 7000  # instructions: `dec %ecx; jnz` TICK_WORK / 2 times
LOOP = b"\xff\xc9\x75\xfc"  # 1: dec %ecx; jnz 1b


def timer_guest() -> tuple[bytes, int]:
    """(code at CODE_GPA, the handler's address)."""
    program = b"".join(
        mov_al(value) + out_al(port)
        for port, value in (
            (0x20, 0x11), (0x21, TIMER_VECTOR), (0x21, 0x04), (0x21, 0x01),  # master 8259
            (0xA0, 0x11), (0xA1, TIMER_VECTOR + 8), (0xA1, 0x02), (0xA1, 0x01),  # slave
            (0xA1, 0xFF), (0x21, 0xFE),  # masks: IRQ 0 only
            (0x43, 0x34), (0x40, PIT_DIVISOR & 0xFF), (0x40, PIT_DIVISOR >> 8),  # PIT ch. 0
        )
    )  # fmt: skip
    idle = CODE_GPA + len(program)
    code = program + b"\xfb\xf4\xeb\xfc"  # idle: sti; hlt; jmp idle
    handler = CODE_GPA + len(code)
    code += (
        b"\x48\xff\x04\x25" + _imm32(COUNTER_GPA)  # incq COUNTER_GPA
        + mov_r32(ECX, TICK_WORK // 2) + LOOP  # the tick's work
        + mov_al(0x20) + out_al(0x20)  # EOI to the master 8259
        + mov_r32(ESP, STACK_TOP)
        + jmp_absolute(idle)
    )  # fmt: skip
    return code, handler


# The speed of CPL0 code: a loop of LOOP_INSTRUCTIONS, timed against an empty run.
LOOP_INSTRUCTIONS = 20_000


def idt_bytes(handlers: dict[int, int] | None = None) -> bytes:
    """256 64-bit interrupt gates (DPL 0, CODE_SELECTOR): each vector to its stub,
    or to `handlers[vector]`."""
    return b"".join(
        interrupt_gate((handlers or {}).get(vector, STUBS_GPA + STUB_SIZE * vector))
        for vector in range(256)
    )


def stub_vector(rip: int) -> int | None:
    """The vector whose stub's `hlt` leaves RIP at `rip`, or None."""
    offset = rip - 1 - STUBS_GPA
    if 0 <= offset < 256 * STUB_SIZE and offset % STUB_SIZE == 0:
        return offset // STUB_SIZE
    return None


def exception_name(vector: int) -> str:
    name = EXCEPTION_NAMES.get(vector)
    return f"{name} (vector {vector})" if name else f"vector {vector}"


# -- running guests with a deadline ----------------------------------------------


class Deadlines:
    """SIGALRM ends any KVM_RUN that outlives its deadline.

    On the way out the old SIGALRM handler comes back, and so does an interval
    timer that was running (a run's --timeout), less the time spent here.
    """

    def __init__(self) -> None:
        self._run: Any = None
        self._previous: Any = None
        self._previous_timer = (0.0, 0.0)
        self._entered = 0.0

    def __enter__(self) -> Deadlines:
        if threading.current_thread() is not threading.main_thread():
            raise ProbeError("the host probe runs in the main thread (its deadlines are SIGALRM)")
        self._previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)
        self._entered = time.monotonic()
        self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        remaining, interval = self._previous_timer
        if remaining:
            left = remaining - (time.monotonic() - self._entered)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), interval)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._run is not None:
            self._run.immediate_exit = 1

    def run(self, vcpu: Vcpu, seconds: float) -> exits.VcpuExit | None:
        """KVM_RUN until an exit, at most `seconds`: the exit, or None at the deadline."""
        run = vcpu.run_struct
        deadline = time.monotonic() + seconds
        self._run = run
        run.immediate_exit = 0
        signal.setitimer(signal.ITIMER_REAL, seconds, KICK_INTERVAL)
        try:
            while True:
                if vcpu.run():
                    return exits.decode(run)
                if time.monotonic() >= deadline:
                    return None
                run.immediate_exit = 0  # a late alarm of an earlier run: go on
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._run = None
            run.immediate_exit = 0


class ScratchGuest:
    """A VM with RAM_SIZE of RAM and one vCPU in `mode` at CODE_GPA, at CPL0.

    Long mode gets the user-mode GDT and TSS and user-accessible page tables
    (for the syscall guest), and an IDT whose every vector halts in its stub.
    """

    def __init__(self, kvm: Kvm, mode: CpuMode = CpuMode.LONG, irqchip: bool = False) -> None:
        from pyvmm.arch.x86_64 import layout
        from pyvmm.arch.x86_64.cpu import setup_cpuid, setup_vcpu

        self.memory = GuestMemory.from_ranges([(0, RAM_SIZE)])
        self.vm: Vm | None = None
        self.vcpu: Vcpu | None = None
        try:
            self.vm = vm = kvm.create_vm()
            vm.set_user_memory_region(0, 0, 0, RAM_SIZE, self.memory.mapping.hva)
            vm.set_tss_addr(layout.KVM_TSS_GPA)
            if irqchip:
                vm.create_irqchip()
                vm.create_pit2(lib.KVM_PIT_SPEAKER_DUMMY)
            self.vcpu = vm.create_vcpu(0)
            setup_cpuid(kvm, self.vcpu)
            entry = EntryPoint(
                GuestPhysAddr(CODE_GPA), mode, "flat", GuestPhysAddr(CODE_GPA),
                GuestPhysAddr(CODE_GPA + 0x1000),
            )  # fmt: skip
            setup_vcpu(self.vcpu, entry, self.memory)
            if mode is CpuMode.LONG:
                self._add_user_mode_and_idt()
        except BaseException:
            self.close()
            raise

    def _add_user_mode_and_idt(self) -> None:
        from pyvmm.arch.x86_64 import layout
        from pyvmm.arch.x86_64.paging import build_identity_map_64

        assert self.vcpu is not None
        memory = self.memory
        build_identity_map_64(memory, layout.PAGE_TABLES_GPA, user=True)
        entries = user_mode_gdt(layout.TSS_GPA)
        memory.write(layout.GDT_GPA, gdt_bytes(entries))
        memory.write(layout.TSS_GPA, tss_bytes(rsp0=layout.KERNEL_STACK_TOP))
        memory.write(IDT_GPA, idt_bytes())
        memory.write(STUBS_GPA, (HLT + b"\x90" * (STUB_SIZE - 1)) * 256)
        sregs = self.vcpu.get_sregs()
        sregs.gdt.limit = 8 * len(entries) - 1
        sregs.idt.base = IDT_GPA
        sregs.idt.limit = 256 * 16 - 1
        tss = decode_descriptor(entries[TSS_SELECTOR >> 3], TSS_SELECTOR)
        sregs.tr.selector, sregs.tr.base, sregs.tr.limit = tss.selector, tss.base, tss.limit
        sregs.tr.type, sregs.tr.present, sregs.tr.s = tss.type, tss.present, tss.s
        sregs.tr.unusable = 0
        self.vcpu.set_sregs(sregs)

    def load(self, code: bytes) -> None:
        self.memory.write(CODE_GPA, code)

    def close(self) -> None:
        for each in (self.vcpu, self.vm):
            if each is not None:
                each.close()
        self.vcpu = self.vm = None
        self.memory.close()

    def __enter__(self) -> ScratchGuest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- the questions -----------------------------------------------------------------


def read_cpuid(
    kvm: Kvm, deadlines: Deadlines, leaves: tuple[tuple[int, int], ...], edit: Callable | None
) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """What a CPL0 guest's `cpuid` returns for each (leaf, subleaf), after `edit(cpuid2)`
    changed pyvmm's usual KVM_SET_CPUID2 table (None: unchanged)."""
    from pyvmm.arch.x86_64.cpu import setup_cpuid

    answers = {}
    with ScratchGuest(kvm) as guest:
        assert guest.vcpu is not None
        if edit is not None:
            table = kvm.get_supported_cpuid()
            edit(table)
            guest.vcpu.set_cpuid2(table)
        else:
            setup_cpuid(kvm, guest.vcpu)
        guest.load(CPUID_CODE)
        for leaf, subleaf in leaves:
            regs = guest.vcpu.get_regs()
            regs.rip, regs.rax, regs.rcx = CODE_GPA, leaf, subleaf
            guest.vcpu.set_regs(regs)
            exit = deadlines.run(guest.vcpu, GUEST_TIMEOUT)
            regs = guest.vcpu.get_regs()
            if not isinstance(exit, exits.Hlt) or regs.rip != CODE_GPA + len(CPUID_CODE):
                raise ProbeError(f"the CPUID guest did not halt after cpuid: {describe(exit)}")
            answers[(leaf, subleaf)] = (regs.rax, regs.rbx, regs.rcx, regs.rdx)
    return answers


def clear_features(table: Any, names: tuple[str, ...] = tuple(FEATURE_BITS)) -> None:
    """Clear the FEATURE_BITS `names` in a `struct kvm_cpuid2` (what pyvmm hides through CPUID)."""
    for index in range(table.nent):
        entry = table.entries[index]
        for name in names:
            leaf, subleaf, register, bit = FEATURE_BITS[name]
            if entry.function == leaf and entry.index == subleaf:
                setattr(entry, register, getattr(entry, register) & ~(1 << bit))


def mark_control_leaf(table: Any) -> None:
    """Give leaf 0x40000000 CONTROL_SIGNATURE (the probe's control; a guest must keep KVM's)."""
    for index in range(table.nent):
        entry = table.entries[index]
        if entry.function == HYPERVISOR_LEAF:
            words = [int.from_bytes(CONTROL_SIGNATURE[i : i + 4], "little") for i in (0, 4, 8)]
            entry.ebx, entry.ecx, entry.edx = words


def clear_features_and_mark(table: Any) -> None:
    clear_features(table)
    mark_control_leaf(table)


def features_seen(answers: dict[tuple[int, int], tuple[int, int, int, int]]) -> tuple[str, ...]:
    """The FEATURE_BITS set in a guest's CPUID answers."""
    registers = ("eax", "ebx", "ecx", "edx")
    return tuple(
        name
        for name, (leaf, subleaf, register, bit) in FEATURE_BITS.items()
        if answers[(leaf, subleaf)][registers.index(register)] >> bit & 1
    )


def signature(answer: tuple[int, int, int, int]) -> bytes:
    return b"".join((value & 0xFFFF_FFFF).to_bytes(4, "little") for value in answer[1:])


# Every (leaf, subleaf) FEATURE_BITS reads, and the control.
CPUID_LEAVES = (*sorted({bits[:2] for bits in FEATURE_BITS.values()}), (HYPERVISOR_LEAF, 0))


def probe_cpuid(kvm: Kvm, deadlines: Deadlines) -> CpuidFinding:
    usual = read_cpuid(kvm, deadlines, CPUID_LEAVES, None)
    cleared = read_cpuid(kvm, deadlines, CPUID_LEAVES, clear_features_and_mark)
    visible = features_seen(usual)
    still = set(features_seen(cleared))
    return CpuidFinding(
        visible=visible,
        hidden=tuple(name for name in visible if name not in still),
        ignored=tuple(name for name in visible if name in still),
        control=signature(cleared[(HYPERVISOR_LEAF, 0)]) == CONTROL_SIGNATURE,
    )


def describe(exit: exits.VcpuExit | None) -> str:
    if exit is None:
        return f"no exit within {GUEST_TIMEOUT:g} s"
    if isinstance(exit, exits.InternalError):
        from pyvmm.arch.x86_64.emulation_failure import suberror_name

        code = f" ({exit.insn_bytes.hex(' ')})" if exit.insn_bytes else ""
        return f"KVM_EXIT_INTERNAL_ERROR, {suberror_name(exit.suberror)}{code}"
    if isinstance(exit, exits.Unknown):
        return exit.name
    return {
        exits.Hlt: "hlt",
        exits.Shutdown: "shutdown (triple fault)",
        exits.IoOut: "port write",
        exits.IoIn: "port read",
        exits.MmioRead: "MMIO read",
        exits.MmioWrite: "MMIO write",
        exits.FailEntry: "KVM_EXIT_FAIL_ENTRY",
        exits.Debug: "KVM_EXIT_DEBUG",
        exits.SystemEvent: "KVM_EXIT_SYSTEM_EVENT",
    }[type(exit)]


def probe_instruction(
    kvm: Kvm, deadlines: Deadlines, probe: InstructionProbe
) -> InstructionFinding:
    """Run `probe` at CPL0 and say how it ended."""
    with ScratchGuest(kvm, probe.mode) as guest:
        vcpu = guest.vcpu
        assert vcpu is not None
        if probe.cr4:
            sregs = vcpu.get_sregs()
            sregs.cr4 |= probe.cr4
            try:
                vcpu.set_sregs(sregs)
            except KvmError as error:
                return InstructionFinding(probe.name, NOT_RUN, f"CR4 0x{probe.cr4:x}: {error}")
        guest.load(probe.code + HLT)
        exit = deadlines.run(vcpu, GUEST_TIMEOUT)
        rip = vcpu.get_regs().rip
        if exit is None:
            return InstructionFinding(probe.name, TIMEOUT, describe(exit))
        if isinstance(exit, exits.InternalError) and exit.is_emulation_failure:
            return InstructionFinding(probe.name, EMULATION_FAILURE, describe(exit))
        if isinstance(exit, exits.Hlt):
            vector = stub_vector(rip)
            if vector is not None and vector == probe.vector:
                return InstructionFinding(probe.name, WORKS, exception_name(vector))
            if vector is not None:
                return InstructionFinding(probe.name, EXCEPTION, exception_name(vector))
            if rip == CODE_GPA + len(probe.code) + 1 and probe.vector is None:
                return InstructionFinding(probe.name, WORKS)
            return InstructionFinding(probe.name, OTHER, f"halted at 0x{rip:x}")
        return InstructionFinding(probe.name, OTHER, f"{describe(exit)} at 0x{rip:x}")


def probe_syscall(kvm: Kvm, deadlines: Deadlines) -> SyscallFinding:
    code, user, lstar = syscall_guest()
    with ScratchGuest(kvm) as guest:
        vcpu = guest.vcpu
        assert vcpu is not None
        sregs = vcpu.get_sregs()
        sregs.efer |= EFER_SCE
        vcpu.set_sregs(sregs)
        guest.load(code)
        exit = deadlines.run(vcpu, GUEST_TIMEOUT)
        cpl = vcpu.get_sregs().cs.selector & 3
        rip = vcpu.get_regs().rip
        at_user = isinstance(exit, exits.IoOut) and exit.port == PORT_USER and rip == user + 2
        if not (at_user and cpl == 3):
            return SyscallFinding(
                None, f"sysretq did not reach CPL3: {describe(exit)} at 0x{rip:x}, CPL {cpl}"
            )
        exit = deadlines.run(vcpu, GUEST_TIMEOUT)
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        if not (
            isinstance(exit, exits.IoOut) and exit.port == PORT_ENTRY and regs.rip == lstar + 2
        ):
            return SyscallFinding(
                None, f"syscall did not reach LSTAR: {describe(exit)} at 0x{regs.rip:x}"
            )
        cpl = sregs.cs.selector & 3
        state = (
            f"at LSTAR with CS 0x{sregs.cs.selector:x} SS 0x{sregs.ss.selector:x} (CPL {cpl}), "
            f"RCX 0x{regs.rcx:x}, R11 0x{regs.r11:x}"
        )
        return SyscallFinding(cpl == 0, state)


def probe_resume_flag(kvm: Kvm, deadlines: Deadlines) -> ResumeFlagFinding:
    control = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
    with ScratchGuest(kvm) as guest:
        vcpu = guest.vcpu
        assert vcpu is not None
        guest.load(RF_CODE)
        vcpu.set_guest_debug(control, (RF_BREAKPOINT, 0, 0, 0, 0, 0, 0, DR7_L0))
        exit = deadlines.run(vcpu, GUEST_TIMEOUT)
        if not (isinstance(exit, exits.Debug) and exit.pc == RF_BREAKPOINT):
            return ResumeFlagFinding(None, f"the breakpoint did not trap: {describe(exit)}")
        regs = vcpu.get_regs()
        regs.rflags |= RFLAGS_RF
        vcpu.set_regs(regs)
        exit = deadlines.run(vcpu, GUEST_TIMEOUT)
        if isinstance(exit, exits.Debug) and exit.pc == RF_BREAKPOINT:
            return ResumeFlagFinding(False, "resumed with RF set, it trapped again on the same one")
        if isinstance(exit, exits.Hlt):
            return ResumeFlagFinding(True, "resumed with RF set, it ran on to the hlt")
        return ResumeFlagFinding(None, f"resumed with RF set: {describe(exit)}")


def probe_timer(kvm: Kvm, deadlines: Deadlines, window: float = TIMER_WINDOW) -> TimerFinding:
    code, handler = timer_guest()
    with ScratchGuest(kvm, irqchip=True) as guest:
        vcpu = guest.vcpu
        assert vcpu is not None
        guest.memory.write(IDT_GPA, idt_bytes({TIMER_VECTOR: handler}))
        guest.load(code)
        started = time.monotonic()
        exit = deadlines.run(vcpu, window)
        elapsed = time.monotonic() - started
        ticks = guest.memory.read_u64(COUNTER_GPA)
    detail = "" if exit is None else f"the guest stopped early: {describe(exit)}"
    return TimerFinding(
        ticks=ticks,
        window=elapsed,
        period=PIT_DIVISOR / PIT_HZ,
        handler_instructions=TICK_WORK + 6,
        instruction_seconds=time_instructions(kvm, deadlines),
        detail=detail,
    )


def time_instructions(kvm: Kvm, deadlines: Deadlines) -> float | None:
    """Seconds per CPL0 instruction: a counted loop, less a run of `hlt` alone."""
    times = []
    for code in (HLT, mov_r32(ECX, LOOP_INSTRUCTIONS // 2) + LOOP + HLT):
        with ScratchGuest(kvm) as guest:
            assert guest.vcpu is not None
            guest.load(code)
            started = time.monotonic()
            exit = deadlines.run(guest.vcpu, GUEST_TIMEOUT)
            times.append(time.monotonic() - started)
            if not isinstance(exit, exits.Hlt):
                return None
    return max(times[1] - times[0], 0.0) / LOOP_INSTRUCTIONS


def host_key() -> HostKey:
    uname = os.uname()
    return HostKey(release=uname.release, version=uname.version, backend=kvm_backend())


def measure_host(kvm: Kvm) -> HostFindings:
    """Run every probe guest on `kvm` (a few seconds at most). Main thread only."""
    started = time.monotonic()
    with Deadlines() as deadlines:
        cpuid = probe_cpuid(kvm, deadlines)
        instructions = tuple(probe_instruction(kvm, deadlines, each) for each in INSTRUCTIONS)
        syscall = probe_syscall(kvm, deadlines)
        resume_flag = probe_resume_flag(kvm, deadlines)
        timer = probe_timer(kvm, deadlines)
    paging = keeps_32bit_paging(kvm)
    return HostFindings(
        key=host_key(),
        cpuid=cpuid,
        instructions=instructions,
        syscall=syscall,
        resume_flag=resume_flag,
        timer=timer,
        seconds=time.monotonic() - started,
        keeps_32bit_paging=paging,
        probed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


# -- once per host kernel ------------------------------------------------------------


@dataclass(frozen=True)
class ProbeReport:
    """The findings, whether they came from the cache, and where they are kept.

    `cache_path` is None when they could not be written (`cache_problem` says why).
    """

    findings: HostFindings
    cached: bool
    cache_path: Path | None
    cache_problem: str = ""


def probe_host(
    refresh: bool = False, directory: Path | None = None, kvm_path: str | None = None
) -> ProbeReport:
    """This host's findings: from the cache when it holds this kernel's, else probed
    now (and kept). `refresh` probes again whatever the cache holds."""
    from pyvmm.arch.x86_64.host_probe_cache import (
        cache_directory,
        cache_file,
        load_findings,
        store_findings,
    )
    from pyvmm.kvm.system import DEFAULT_KVM_PATH, open_kvm

    key = host_key()
    directory = cache_directory() if directory is None else directory
    if not refresh:
        found = load_findings(key, directory)
        if found is not None:
            return ProbeReport(found, cached=True, cache_path=cache_file(key, directory))
    with open_kvm(kvm_path or DEFAULT_KVM_PATH) as kvm:
        findings = measure_host(kvm)
    try:
        path = store_findings(findings, directory)
    except OSError as error:
        problem = f"cannot write to {directory}: {error.strerror or error}"
        return ProbeReport(findings, cached=False, cache_path=None, cache_problem=problem)
    return ProbeReport(findings, cached=False, cache_path=path)
