"""Finish a CPL3 `syscall` that this host's KVM leaves half done (issue 15, item 4).

On a host without VT-x/AMD-V (kvm_pvm) a `syscall` from user mode sets RIP
to LSTAR, RCX and R11, and masks RFLAGS, but leaves the CPU at CPL3: the
fetch at LSTAR, a kernel page, raises #PF, and Linux kills the process
(for /init: a panic). `pyvmm host` finds this ("SYSCALL repair: needed").

The repair: an execute breakpoint (KVM_SET_GUEST_DEBUG, DR0) on the guest's
#PF handler, the target of IDT vector 14. When it fires for a user-mode
instruction fetch at LSTAR (CR2 = LSTAR, the frame's RIP = LSTAR, its CS at
CPL3) with a `syscall` (0f 05) just before RCX, pyvmm does what SYSCALL
should have done (Intel SDM vol. 2B, SYSCALL): CS and SS from STAR[47:32]
at CPL0, RIP = LSTAR, RFLAGS = R11 masked by SFMASK, RSP the user's
(SYSCALL leaves it alone: the #PF frame is dropped). Any other #PF goes on
to the guest's handler: this host ignores RFLAGS.RF, so pyvmm steps over
the handler's first instruction itself (performs it when it is `endbr64`, a
NOP, `cld` or `clac`, else single-steps it with KVM_GUESTDBG_SINGLESTEP)
and puts the breakpoint back. A debugger (--gdb) owns the debug registers:
the repair stops then.

The breakpoint goes in once the guest has set SYSCALL up (EFER.SCE, LSTAR
not 0, an IDT whose vector 14 is present): pyvmm looks at each exit it
serves in Python and every POLL_INTERVAL, and keeps looking (an IDT that
moves its #PF handler moves the breakpoint). Armed only where the host
probe (cached) says the host needs it; `--emulate none` leaves it off.
`complete_syscall` is a pure function of (registers, sregs, MSRs, frame
bytes): tests/unit/test_syscall_repair.py.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from pyvmm._kvm import ffi, lib
from pyvmm.arch.x86_64.registers import EFER_LMA, EFER_SCE, RFLAGS_RESERVED
from pyvmm.errors import GuestMemoryError, GuestPageFault, PyvmmError
from pyvmm.quiet_threads import signals_blocked

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import ExitStack
    from typing import Any

    from pyvmm.kvm.exits import Debug
    from pyvmm.kvm.vcpu import Vcpu
    from pyvmm.machine.vcpu_loop import VcpuLoop
    from pyvmm.memory.guest_memory import GuestMemory

    Post = Callable[[Callable[[], None], int], None]  # VcpuGroup.post(work, vcpu)

log = logging.getLogger(__name__)

# MSRs SYSCALL reads (Intel SDM vol. 4, table 2-2).
MSR_STAR = 0xC000_0081
MSR_LSTAR = 0xC000_0082
MSR_SFMASK = 0xC000_0084
PAGE_FAULT_VECTOR = 14
# #PF error code bits (Intel SDM vol. 3A, 4.7).
PF_PRESENT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_FETCH = 1 << 4
# The frame a 64-bit exception with an error code leaves (Intel SDM vol. 3A, 6.14.2):
# error code, RIP, CS, RFLAGS, RSP, SS, 8 bytes each.
FRAME_SIZE = 48
SYSCALL_OPCODE = bytes.fromhex("0f05")
RFLAGS_DF = 1 << 10
RFLAGS_RF = 1 << 16
RFLAGS_AC = 1 << 18
DR6_BS = 1 << 14  # single step (Intel SDM vol. 3B, 18.2.3)
DR7_L0 = 1 << 0  # DR0 enabled, execute, one byte (Intel SDM vol. 3B, 18.2.4)
IDT_GATE_SIZE = 16
INTERRUPT_GATE, TRAP_GATE = 0xE, 0xF
POLL_INTERVAL = 0.1  # seconds between looks while the guest has not set SYSCALL up
ARMED_POLL_INTERVAL = 1.0  # between looks afterwards (has the #PF handler moved?)

# First instructions of a #PF handler pyvmm performs itself instead of stepping:
# the bytes, and the RFLAGS bits they clear. Linux's start with endbr64 (IBT
# kernels), then ASM_CLAC (a NOP without SMAP) and cld.
STEP_OVER: dict[bytes, int] = {
    bytes.fromhex("f30f1efa"): 0,  # endbr64
    bytes.fromhex("90"): 0,  # nop
    bytes.fromhex("0f1f00"): 0,  # nopl (%rax)
    bytes.fromhex("0f1f4000"): 0,  # nopl 0(%rax)
    bytes.fromhex("0f1f440000"): 0,  # nopl 0(%rax,%rax,1)
    bytes.fromhex("660f1f440000"): 0,  # nopw 0(%rax,%rax,1)
    bytes.fromhex("0f1f8000000000"): 0,  # nopl 0(%rax), disp32
    bytes.fromhex("0f1f840000000000"): 0,  # nopl 0(%rax,%rax,1), disp32
    bytes.fromhex("fc"): RFLAGS_DF,  # cld
    bytes.fromhex("0f01ca"): RFLAGS_AC,  # clac
}


@dataclass(frozen=True)
class SyscallMsrs:
    """STAR, LSTAR and SFMASK (IA32_FMASK), as KVM_GET_MSRS returns them."""

    star: int
    lstar: int
    sfmask: int

    @property
    def kernel_cs(self) -> int:
        return (self.star >> 32) & 0xFFFC

    @property
    def kernel_ss(self) -> int:
        return ((self.star >> 32) + 8) & 0xFFFF


@dataclass(frozen=True)
class ExceptionFrame:
    """What the CPU pushed for an exception with an error code, lowest address first."""

    error_code: int
    rip: int
    cs: int
    rflags: int
    rsp: int
    ss: int

    @classmethod
    def from_bytes(cls, data: bytes) -> ExceptionFrame:
        if len(data) < FRAME_SIZE:
            raise ValueError(f"an exception frame is {FRAME_SIZE} bytes, not {len(data)}")
        words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, FRAME_SIZE, 8)]
        return cls(*words)


def is_half_done_syscall(frame: ExceptionFrame, cr2: int, msrs: SyscallMsrs) -> bool:
    """Is this #PF the fetch at LSTAR of a `syscall` KVM left at CPL3?"""
    return (
        msrs.lstar != 0
        and frame.cs & 3 == 3
        and frame.rip == msrs.lstar
        and cr2 == msrs.lstar
        and frame.error_code & (PF_USER | PF_WRITE) == PF_USER
    )


def complete_syscall(
    regs: Any, sregs: Any, msrs: SyscallMsrs, frame_bytes: bytes, before_rcx: bytes | None
) -> Any:
    """The registers SYSCALL should have left, as new (regs, sregs); None when the #PF
    whose frame `frame_bytes` is (at sregs' RSP) is not a half-done `syscall`.

    `regs` and `sregs` are the vCPU's at the first instruction of the #PF
    handler (`struct kvm_regs`, `struct kvm_sregs`); they are not changed.
    `before_rcx`: the two bytes before RCX, where the `syscall` KVM half did
    must be (None: unreadable); a user `jmp` to LSTAR is no system call, and
    its #PF stays the guest's, as on a CPU. RCX and R11 are kept: KVM set
    them as SYSCALL does. CR2 keeps LSTAR.
    """
    frame = ExceptionFrame.from_bytes(frame_bytes)
    if not is_half_done_syscall(frame, sregs.cr2, msrs) or before_rcx != SYSCALL_OPCODE:
        return None
    new_regs = ffi.new("struct kvm_regs *")
    new_regs[0] = regs[0]
    new_sregs = ffi.new("struct kvm_sregs *")
    new_sregs[0] = sregs[0]
    new_regs.rip = msrs.lstar
    new_regs.rsp = frame.rsp  # the user's: SYSCALL does not switch stacks
    new_regs.rflags = (regs.r11 & ~msrs.sfmask & ~RFLAGS_RF) | RFLAGS_RESERVED
    cs, ss = new_sregs.cs, new_sregs.ss
    # CS: flat 64-bit code at DPL 0; SS: flat writable data at DPL 0 (SDM: SYSCALL).
    cs.selector, cs.base, cs.limit, cs.type = msrs.kernel_cs, 0, 0xFFFF_FFFF, 11
    cs.s, cs.dpl, cs.present, cs.l, cs.db, cs.g, cs.unusable = 1, 0, 1, 1, 0, 1, 0
    ss.selector, ss.base, ss.limit, ss.type = msrs.kernel_ss, 0, 0xFFFF_FFFF, 3
    ss.s, ss.dpl, ss.present, ss.l, ss.db, ss.g, ss.unusable = 1, 0, 1, 0, 1, 1, 0
    return new_regs, new_sregs


def gate_target(gate: bytes) -> int | None:
    """The handler address of a 64-bit IDT gate (Intel SDM vol. 3A, 6.14.1); None when
    it is not a present interrupt or trap gate."""
    type_attributes = gate[5]
    if not type_attributes & 0x80 or type_attributes & 0xF not in (INTERRUPT_GATE, TRAP_GATE):
        return None
    low = int.from_bytes(gate[0:2], "little")
    middle = int.from_bytes(gate[6:8], "little")
    high = int.from_bytes(gate[8:12], "little")
    return low | middle << 16 | high << 32


class SyscallRepair:
    """The repair on one vCPU: the breakpoint's place, the step over, the count."""

    def __init__(self, vcpu: Vcpu, memory: GuestMemory, max_phys_bits: int = 52) -> None:
        self.vcpu = vcpu
        self.memory = memory
        self.max_phys_bits = max_phys_bits
        self.count = 0  # syscalls completed
        self.ns = 0  # time spent on its debug exits, repaired or stepped over (--stats)
        self.handler: int | None = None  # the #PF handler the breakpoint is on
        self.stepping = False  # single-stepping the handler's first instruction
        self.stopped = False  # a debugger owns the debug registers (pyvmm.gdb)
        self._msrs = ffi.new("struct kvm_msrs *", {"nmsrs": 3, "entries": 3})
        for index, msr in enumerate((MSR_STAR, MSR_LSTAR, MSR_SFMASK)):
            self._msrs.entries[index].index = msr

    @property
    def armed(self) -> bool:
        return self.handler is not None

    def read_msrs(self) -> SyscallMsrs:
        self.vcpu.get_msrs(self._msrs)
        entries = self._msrs.entries
        return SyscallMsrs(entries[0].data, entries[1].data, entries[2].data)

    def _read(self, sregs: Any, gva: int, size: int) -> bytes | None:
        from pyvmm.arch.x86_64.page_walk import PagingRegisters
        from pyvmm.arch.x86_64.virtual_memory import read_virtual

        if gva + size > 1 << 64:  # e.g. the 2 bytes before an RCX of 1: nothing to read
            return None
        paging = PagingRegisters(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
        try:
            return read_virtual(self.memory, paging, gva, size, self.max_phys_bits)
        except (GuestPageFault, GuestMemoryError):
            return None

    def look(self) -> None:
        """Put the breakpoint on the guest's #PF handler once the guest has set SYSCALL up,
        or move it where the handler went."""
        if self.stepping or self.stopped:
            return
        try:
            sregs = self.vcpu.get_sregs()
            if sregs.efer & (EFER_SCE | EFER_LMA) != EFER_SCE | EFER_LMA:
                return
            if sregs.idt.limit < (PAGE_FAULT_VECTOR + 1) * IDT_GATE_SIZE - 1:
                return
            if self.read_msrs().lstar == 0:
                return
            gate = self._read(sregs, sregs.idt.base + PAGE_FAULT_VECTOR * IDT_GATE_SIZE, 16)
        except PyvmmError as error:  # a vCPU gone with the machine
            log.debug("SYSCALL repair: cannot look at the vCPU: %s", error)
            return
        handler = None if gate is None else gate_target(gate)
        if handler is None or handler == self.handler:
            return
        log.info("SYSCALL repair: breakpoint on the #PF handler at 0x%x", handler)
        self.handler = handler
        self._arm()

    def stop(self) -> None:
        """Never arm again: a debugger (`pyvmm boot --gdb`) programs KVM_SET_GUEST_DEBUG."""
        self.stopped = True

    def _arm(self) -> None:
        assert self.handler is not None
        control = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
        self.vcpu.set_guest_debug(control, (self.handler, 0, 0, 0, 0, 0, 0, DR7_L0))

    def on_debug(self, debug: Debug) -> bool:
        """Serve a KVM_EXIT_DEBUG of the repair's (True), or leave it (False: not ours)."""
        if self.stepping:
            if not debug.dr6 & DR6_BS:
                return False
            self.stepping = False
            self._arm()
            return True
        if self.handler is None or debug.pc != self.handler:
            return False
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        frame = self._read(sregs, regs.rsp, FRAME_SIZE)
        if frame is not None:
            before_rcx = self._read(sregs, (regs.rcx - 2) % (1 << 64), 2)
            repaired = complete_syscall(regs, sregs, self.read_msrs(), frame, before_rcx)
            if repaired is not None:
                self.vcpu.set_regs(repaired[0])
                self.vcpu.set_sregs(repaired[1])
                self.count += 1
                return True
        self._step_over(regs, sregs)
        return True

    def _step_over(self, regs: Any, sregs: Any) -> None:
        """Past the handler's first instruction: performed when STEP_OVER has it, else one
        single step (this host ignores RFLAGS.RF)."""
        code = self._read(sregs, regs.rip, 8) or b""
        for prefix, cleared in STEP_OVER.items():
            if code.startswith(prefix):
                regs.rip += len(prefix)
                regs.rflags &= ~cleared
                self.vcpu.set_regs(regs)
                return
        self.stepping = True
        self.vcpu.set_guest_debug(lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP)


class RepairWatch:
    """Every POLL_INTERVAL (ARMED_POLL_INTERVAL once armed), asks each repaired vCPU's
    thread to look (`post(work, vcpu)`: the vCPU group runs it between two KVM_RUNs)."""

    def __init__(self, repairs: list[SyscallRepair], post: Post) -> None:
        self.repairs = repairs
        self._post = post
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="syscall-repair", daemon=True)
        # As the vCPU group's threads: process signals (--timeout's SIGALRM, Ctrl-C) must
        # go to the vCPU's thread, where they interrupt KVM_RUN (machine/vcpu_group.py).
        with signals_blocked():
            self._thread.start()

    def _watch(self) -> None:
        while not self._closed.wait(
            ARMED_POLL_INTERVAL if all(each.armed for each in self.repairs) else POLL_INTERVAL
        ):
            for index, repair in enumerate(self.repairs):
                self._post(repair.look, index)

    def close(self) -> None:
        """Stop the thread and wait for it: a post in flight must not outlive the vCPUs
        (it writes to their kvm_run pages, which closing them unmaps)."""
        self._closed.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def host_needs_repair(kvm_path: str | None = None) -> bool:
    """What the host probe says, from its cache (probed once per host kernel, then kept).

    The cache is read without importing the probe (a few ms, not 100: every
    long-mode boot asks); only a host not probed yet is probed now.
    """
    import os

    from pyvmm.arch.x86_64.host_findings import HostKey, needs_syscall_repair
    from pyvmm.arch.x86_64.host_probe_cache import cache_directory, load_findings
    from pyvmm.kvm.host import kvm_backend

    uname = os.uname()
    key = HostKey(release=uname.release, version=uname.version, backend=kvm_backend())
    findings = load_findings(key, cache_directory())
    if findings is None:
        from pyvmm.arch.x86_64.host_probe import probe_host

        try:
            findings = probe_host(kvm_path=kvm_path).findings
        except PyvmmError as error:  # not the main thread, no cache: no repair
            log.info("SYSCALL repair off: the host probe did not run: %s", error)
            return False
    return needs_syscall_repair(findings)


def attach_syscall_repair(
    loops: list[VcpuLoop],
    post: Post,
    resources: ExitStack,
    kvm_path: str | None = None,
) -> list[SyscallRepair]:
    """Give each of `loops` (vCPU i is loops[i]) its repair if this host needs it.

    Each vCPU has its own breakpoint (debug registers are per vCPU) and finds
    its own #PF handler; one thread asks them all to look.
    """
    if not loops or loops[0].memory is None or not host_needs_repair(kvm_path):
        return []
    repairs = []
    for loop in loops:
        assert loop.memory is not None
        repair = SyscallRepair(loop.vcpu, loop.memory, loop.max_phys_bits)
        loop.syscall_repair = repair
        repairs.append(repair)
    watch = RepairWatch(repairs, post)
    resources.callback(watch.close)
    return repairs
