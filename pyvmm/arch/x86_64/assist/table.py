"""The instructions pyvmm performs itself when KVM's emulator gives up on them.

Each entry is a pure function `perform(decoded, state, read) -> Performed`:
the decoded instruction, the CPU state before it, and `read(linear, size)`
for memory operands (raising OperandFault); it returns the state after it
and the exception it raises, if any. The semantics are the Intel SDM's
(vol. 2, each instruction's "Operation" and exception lists); the cases it
leaves to the CPU's CPUID (an instruction the guest's CPUID does not list
raises #UD) are not checked: KVM's emulator gave up on an instruction the
CPU under it has.

- int3: RIP past it, then #BP (a trap: the handler returns after it);
- clac, stac: RFLAGS.AC cleared, set; #UD above CPL 0 or in virtual-8086 mode;
- popcnt r16/32/64, r/m: the bits set in the source; ZF if it is 0, CF, PF, AF,
  SF, OF cleared;
- wait (fwait): nothing, unless CR0.MP and CR0.TS are set (#NM) or an unmasked
  x87 exception is pending (#MF);
- ldmxcsr m32, stmxcsr m32: MXCSR from, to memory; #GP(0) for a reserved bit;
- movd, movq (the SSE2 forms): 32 or 64 bits between an XMM register and a
  general-purpose register, memory or another XMM register, the XMM
  destination's upper bits cleared;
- pxor xmm, xmm/m128: exclusive or (#GP(0) for a memory operand not on 16 bytes);
- fnstsw ax, fnstsw m16: the x87 status word; fnclex: its exception flags,
  ES and B cleared (#NM with CR0.EM or CR0.TS set, SDM vol. 2A, 2.5 type "x87");
- crc32 r32/r64, r/m8/16/32/64: CRC-32C (polynomial 0x11EDC6F41) accumulated
  over the source's bytes;
- (lock) cmpxchg16b m128: RCX:RBX stored if RDX:RAX equals it (ZF), else
  RDX:RAX loaded from it; atomic (#GP(0) off 16 bytes).

The SSE entries raise #UD with CR0.EM set or CR4.OSFXSR clear, #NM with
CR0.TS set (SDM vol. 2A, 2.5 "Exception Classifications", types 4 and 5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pyvmm.arch.x86_64.assist.operands import Decoded, Memory, Register, Xmm, linear_address
from pyvmm.arch.x86_64.assist.state import (
    CR0_EM,
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_TS,
    CR4_OSFXSR,
    MASK64,
    RFLAGS_AC,
    RFLAGS_VM,
    RFLAGS_ZF,
    STATUS_FLAGS,
    VECTOR_BP,
    VECTOR_GP,
    VECTOR_MF,
    VECTOR_NM,
    VECTOR_UD,
    CpuState,
    Exception_,
    NotPerformed,
    Performed,
    fault,
)

ReadMemory = Callable[[int, int], bytes]
Perform = Callable[[Decoded, CpuState, ReadMemory], Performed]


def perform_int3(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """INT3 (SDM vol. 2A, "INT n/INTO/INT3/INT1"): #BP, a trap, delivered with the return
    address after the instruction; the same at every privilege level (no IOPL check)."""
    return Performed(state.advanced(decoded.size), Exception_(VECTOR_BP))


def _smap_check(decoded: Decoded, state: CpuState) -> Performed | None:
    """CLAC/STAC's #UD (SDM vol. 2A, "CLAC", "STAC"): LOCK, CPL above 0, virtual-8086 mode."""
    if decoded.lock or state.cpl > 0 or state.rflags & RFLAGS_VM:
        return fault(state, VECTOR_UD)
    return None


def perform_clac(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """CLAC: EFLAGS.AC := 0."""
    refused = _smap_check(decoded, state)
    if refused is not None:
        return refused
    return Performed(state.with_rflags(state.rflags & ~RFLAGS_AC).advanced(decoded.size))


def perform_stac(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """STAC: EFLAGS.AC := 1."""
    refused = _smap_check(decoded, state)
    if refused is not None:
        return refused
    return Performed(state.with_rflags(state.rflags | RFLAGS_AC).advanced(decoded.size))


def read_operand(
    operand: Register | Xmm | Memory, decoded: Decoded, state: CpuState, read: ReadMemory
) -> int:
    """A source operand's value: a register at its width, or `size` bytes of memory."""
    if isinstance(operand, Register):
        return operand.read(state)
    if isinstance(operand, Xmm):
        return state.xmm[operand.index]
    linear = linear_address(operand, state, decoded.size, decoded.address_bits)
    return int.from_bytes(read(linear, operand.size), "little")


def _two_operands(decoded: Decoded) -> tuple[Register | Xmm | Memory, Register | Xmm | Memory]:
    """Destination and source; NotPerformed for operands the decoder left out (MMX, YMM...)."""
    if len(decoded.operands) != 2:
        raise NotPerformed(f"{decoded.text}: operands pyvmm does not handle")
    return decoded.operands[0], decoded.operands[1]


def perform_popcnt(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """POPCNT r, r/m (SDM vol. 2B, "POPCNT"): the count of bits set in the source;
    OF, SF, ZF, AF, CF, PF := 0, then ZF := 1 if the source is 0."""
    if decoded.lock:
        return fault(state, VECTOR_UD)
    destination, source = _two_operands(decoded)
    if not isinstance(destination, Register):
        raise NotPerformed(f"{decoded.text}: destination is not a register")
    value = read_operand(source, decoded, state, read)
    rflags = state.rflags & ~STATUS_FLAGS
    if value == 0:
        rflags |= RFLAGS_ZF
    after = destination.write(state, value.bit_count()).with_rflags(rflags)
    return Performed(after.advanced(decoded.size))


def perform_wait(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """WAIT/FWAIT (SDM vol. 2B, "WAIT/FWAIT"; vol. 1, 8.7 "Handling x87 FPU Exceptions"):
    #NM when CR0.MP and CR0.TS are both set; #MF when an unmasked x87 exception is
    pending (an exception flag of the status word whose mask bit in the control word
    is clear) and CR0.NE is set; otherwise nothing."""
    if state.cr0 & CR0_MP and state.cr0 & CR0_TS:
        return fault(state, VECTOR_NM)
    if state.fsw & ~state.fcw & 0x3F:
        if state.cr0 & CR0_NE:
            return fault(state, VECTOR_MF)
        # CR0.NE clear: the PC way, FERR# to the interrupt controller (IRQ 13).
        raise NotPerformed("an unmasked x87 exception is pending with CR0.NE clear (FERR#)")
    return Performed(state.advanced(decoded.size))


def _sse_check(decoded: Decoded, state: CpuState) -> Performed | None:
    """#UD: LOCK, CR0.EM set or CR4.OSFXSR clear; then #NM: CR0.TS set."""
    if decoded.lock or state.cr0 & CR0_EM or not state.cr4 & CR4_OSFXSR:
        return fault(state, VECTOR_UD)
    if state.cr0 & CR0_TS:
        return fault(state, VECTOR_NM)
    return None


# The MXCSR bits LDMXCSR may set (MXCSR_MASK, SDM vol. 1, 11.6.6): flags, masks,
# rounding, FZ and DAZ; every CPU since the later Pentium 4 has DAZ.
MXCSR_MASK = 0xFFFF


def _memory_operand(decoded: Decoded) -> Memory:
    operand = decoded.operands[0] if len(decoded.operands) == 1 else None
    if not isinstance(operand, Memory):
        raise NotPerformed(f"{decoded.text}: the operand is not memory")
    return operand


def perform_ldmxcsr(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """LDMXCSR m32 (SDM vol. 2B, "LDMXCSR"): MXCSR := m32; #GP(0) if it sets a reserved bit."""
    refused = _sse_check(decoded, state)
    if refused is not None:
        return refused
    value = read_operand(_memory_operand(decoded), decoded, state, read)
    if value & ~MXCSR_MASK:
        return fault(state, VECTOR_GP, 0 if state.cr0 & CR0_PE else None)
    return Performed(replace(state, mxcsr=value).advanced(decoded.size))


def perform_stmxcsr(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """STMXCSR m32 (SDM vol. 2B, "STMXCSR"): m32 := MXCSR."""
    refused = _sse_check(decoded, state)
    if refused is not None:
        return refused
    operand = _memory_operand(decoded)
    linear = linear_address(operand, state, decoded.size, decoded.address_bits)
    write = (linear, state.mxcsr.to_bytes(4, "little"))
    return Performed(state.advanced(decoded.size), writes=(write,))


def perform_movd(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """MOVD/MOVQ (SDM vol. 2B, "MOVD/MOVQ", "MOVQ"): 32 (movd) or 64 (movq) bits from
    the source; an XMM destination gets them zero-extended to 128 bits, a 32-bit
    general-purpose one zero-extended to 64, memory exactly them."""
    destination, source = _two_operands(decoded)
    if not (isinstance(destination, Xmm) or isinstance(source, Xmm)):
        raise NotPerformed(f"{decoded.text}: no XMM register (the MMX forms are not done)")
    refused = _sse_check(decoded, state)
    if refused is not None:
        return refused
    size = 4 if decoded.mnemonic == "movd" else 8
    mask = (1 << (8 * size)) - 1
    if isinstance(source, Xmm):
        value = state.xmm[source.index] & mask
    else:
        value = read_operand(source, decoded, state, read) & mask
    if isinstance(destination, Xmm):
        return Performed(state.with_xmm(destination.index, value).advanced(decoded.size))
    if isinstance(destination, Register):
        return Performed(destination.write(state, value).advanced(decoded.size))
    linear = linear_address(destination, state, decoded.size, decoded.address_bits)
    write = (linear, value.to_bytes(size, "little"))
    return Performed(state.advanced(decoded.size), writes=(write,))


def perform_pxor(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """PXOR xmm1, xmm2/m128 (SDM vol. 2B, "PXOR"): xmm1 := xmm1 XOR source; a legacy SSE
    memory operand must be 16-byte aligned (#GP(0))."""
    destination, source = _two_operands(decoded)
    if not isinstance(destination, Xmm):
        raise NotPerformed(f"{decoded.text}: no XMM register (the MMX form is not done)")
    refused = _sse_check(decoded, state)
    if refused is not None:
        return refused
    if isinstance(source, Memory):
        linear = linear_address(source, state, decoded.size, decoded.address_bits)
        if linear % 16:
            return fault(state, VECTOR_GP, 0 if state.cr0 & CR0_PE else None)
    value = state.xmm[destination.index] ^ read_operand(source, decoded, state, read)
    return Performed(state.with_xmm(destination.index, value).advanced(decoded.size))


def _x87_check(state: CpuState) -> Performed | None:
    """#NM for an x87 instruction: CR0.EM or CR0.TS set."""
    if state.cr0 & (CR0_EM | CR0_TS):
        return fault(state, VECTOR_NM)
    return None


def perform_fnstsw(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """FNSTSW AX / m16 (SDM vol. 2A, "FSTSW/FNSTSW"): the status word, without checking
    for pending x87 exceptions."""
    refused = _x87_check(state)
    if refused is not None:
        return refused
    destination = decoded.operands[0] if len(decoded.operands) == 1 else None
    if isinstance(destination, Register) and destination.name == "ax":
        return Performed(destination.write(state, state.fsw).advanced(decoded.size))
    if isinstance(destination, Memory):
        linear = linear_address(destination, state, decoded.size, decoded.address_bits)
        write = (linear, state.fsw.to_bytes(2, "little"))
        return Performed(state.advanced(decoded.size), writes=(write,))
    raise NotPerformed(f"{decoded.text}: an operand pyvmm does not handle")


# FNCLEX clears PE, UE, OE, ZE, DE, IE, SF (bits 0-6), ES (7) and B (15).
FSW_CLEARED_BY_FNCLEX = 0x80FF


def perform_fnclex(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """FNCLEX (SDM vol. 2A, "FCLEX/FNCLEX"): the exception flags, ES and B cleared."""
    refused = _x87_check(state)
    if refused is not None:
        return refused
    after = replace(state, fsw=state.fsw & ~FSW_CLEARED_BY_FNCLEX)
    return Performed(after.advanced(decoded.size))


CRC32C_REFLECTED = 0x82F63B78  # 0x1EDC6F41 bit-reversed (SDM vol. 2A, "CRC32")


def crc32c(crc: int, data: bytes) -> int:
    """CRC-32C of `data` onto `crc`, as CRC32 computes it: no inversion before or after."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC32C_REFLECTED if crc & 1 else 0)
    return crc


def perform_crc32(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """CRC32 r32/r64, r/m8/16/32/64 (SDM vol. 2A, "CRC32"): the low 32 bits of the
    destination accumulate the source's bytes; the result is zero-extended to 64
    bits; flags unchanged."""
    if decoded.lock:
        return fault(state, VECTOR_UD)
    destination, source = _two_operands(decoded)
    if not isinstance(destination, Register) or isinstance(source, Xmm):
        raise NotPerformed(f"{decoded.text}: operands pyvmm does not handle")
    size = source.size
    value = read_operand(source, decoded, state, read)
    crc = crc32c(destination.read(state) & 0xFFFF_FFFF, value.to_bytes(size, "little"))
    return Performed(state.with_gpr(destination.index, crc).advanced(decoded.size))


def perform_cmpxchg16b(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """CMPXCHG16B m128 (SDM vol. 2A, "CMPXCHG8B/CMPXCHG16B"): if RDX:RAX equals m128,
    ZF := 1 and m128 := RCX:RBX; else ZF := 0 and RDX:RAX := m128 (the CPU writes m128
    back unchanged); other flags stay. #GP(0) if m128 is not on 16 bytes. The store
    is atomic: the glue makes it only if memory still holds what was read."""
    operand = decoded.operands[0] if len(decoded.operands) == 1 else None
    if not isinstance(operand, Memory) or operand.size != 16:
        raise NotPerformed(f"{decoded.text}: an operand pyvmm does not handle")
    linear = linear_address(operand, state, decoded.size, decoded.address_bits)
    if linear % 16:
        return fault(state, VECTOR_GP, 0)
    old = int.from_bytes(read(linear, 16), "little")
    rax, rcx, rdx, rbx = (state.gprs[index] for index in (0, 1, 2, 3))
    if old == rdx << 64 | rax:
        new = rcx << 64 | rbx
        after = state.with_rflags(state.rflags | RFLAGS_ZF)
    else:
        new = old
        after = state.with_gpr(0, old & MASK64).with_gpr(2, old >> 64)
        after = after.with_rflags(state.rflags & ~RFLAGS_ZF)
    write = (linear, new.to_bytes(16, "little"))
    return Performed(after.advanced(decoded.size), writes=(write,), atomic=True)


# The table: mnemonic (capstone's) -> the function that performs it.
TABLE: dict[str, Perform] = {
    "int3": perform_int3,
    "clac": perform_clac,
    "stac": perform_stac,
    "popcnt": perform_popcnt,
    "wait": perform_wait,
    "ldmxcsr": perform_ldmxcsr,
    "stmxcsr": perform_stmxcsr,
    "movd": perform_movd,
    "movq": perform_movd,
    "pxor": perform_pxor,
    "fnstsw": perform_fnstsw,
    "fnclex": perform_fnclex,
    "crc32": perform_crc32,
    "cmpxchg16b": perform_cmpxchg16b,
}

# Entries that need the x87 and SSE state (KVM_GET_XSAVE; written back with KVM_SET_XSAVE).
NEEDS_FPU = frozenset({"wait", "ldmxcsr", "stmxcsr", "movd", "movq", "pxor", "fnstsw", "fnclex"})


def perform(decoded: Decoded, state: CpuState, read: ReadMemory) -> Performed:
    """Perform `decoded` on `state`; KeyError when it is not in the table."""
    return TABLE[decoded.mnemonic](decoded, state, read)
