"""The emulation assist table (pyvmm.arch.x86_64.assist), entry by entry, without KVM.

Where the instruction runs at CPL 3 (popcnt, fwait, and lea for the
effective-address calculator), each case is also executed natively by this
process on the host CPU, through the demos' native runner
(pyvmm.demos.native), from the same random register state, and the
results must be equal: every general-purpose register but rsp, and the
status flags. Where it cannot (int3 traps to the host kernel, clac/stac are
#UD at CPL 3), the cases check the Intel SDM's definition.
"""

from __future__ import annotations

import ctypes
import random
import struct
from dataclasses import replace

import pytest

from pyvmm.arch.x86_64.assist.operands import REGISTERS, Memory, decode, linear_address
from pyvmm.arch.x86_64.assist.state import (
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_TS,
    CR4_OSFXSR,
    GPR_NAMES,
    MASK64,
    RFLAGS_AC,
    RFLAGS_VM,
    RFLAGS_ZF,
    STATUS_FLAGS,
    CpuState,
    NotPerformed,
    OperandFault,
)
from pyvmm.arch.x86_64.assist.table import TABLE, perform
from pyvmm.demos.native import NativeCodeError, open_native_code

SEED = 15
CASES = 200
RSP = GPR_NAMES.index("rsp")
# Flags the harness loads: the status flags and the reserved bit 1 (TF, IF, DF... stay).
LOADED_FLAGS = STATUS_FLAGS | 0x2


def _host_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return any(line.startswith("flags") and flag in line.split() for line in cpuinfo)
    except OSError:
        return False


# ---------------------------------------------------------------------------
# The native harness: load 15 registers and RFLAGS from a block, run the
# instruction, store them back. System V: the block's address in rdi.


def _load(reg: int, disp: int) -> bytes:  # mov reg, [rdi + disp32]
    return bytes([0x48 | (4 if reg >= 8 else 0), 0x8B, 0x87 | ((reg & 7) << 3)]) + struct.pack(
        "<i", disp
    )


def _store(reg: int, disp: int) -> bytes:  # mov [rdi + disp32], reg
    return bytes([0x48 | (4 if reg >= 8 else 0), 0x89, 0x87 | ((reg & 7) << 3)]) + struct.pack(
        "<i", disp
    )


FLAGS_SLOT = 16 * 8
RDI = GPR_NAMES.index("rdi")
RAX = GPR_NAMES.index("rax")
CALLEE_SAVED = (3, 5, 12, 13, 14, 15)  # rbx, rbp, r12-r15


# After the 16 registers and RFLAGS: xmm0..xmm15 (16 bytes each), MXCSR, the host's MXCSR.
XMM_SLOT = 17 * 8
MXCSR_SLOT = XMM_SLOT + 16 * 16
SAVED_MXCSR_SLOT = MXCSR_SLOT + 8
BLOCK_WORDS = SAVED_MXCSR_SLOT // 8 + 1


def _xmm(opcode: int, reg: int, disp: int) -> bytes:  # movdqu xmm, [rdi + disp32] (0x6f) or back
    rex = b"\x44" if reg >= 8 else b""
    return b"\xf3" + rex + bytes([0x0F, opcode, 0x87 | ((reg & 7) << 3)]) + struct.pack("<i", disp)


def _mxcsr(op: int, disp: int) -> bytes:  # ldmxcsr (/2), stmxcsr (/3) [rdi + disp32]
    return bytes([0x0F, 0xAE, 0x87 | (op << 3)]) + struct.pack("<i", disp)


def harness(instruction: bytes) -> bytes:
    code = bytearray()
    for reg in CALLEE_SAVED:
        code += bytes([0x41, 0x50 + reg - 8]) if reg >= 8 else bytes([0x50 + reg])  # push
    code += _mxcsr(3, SAVED_MXCSR_SLOT) + _mxcsr(2, MXCSR_SLOT)
    for reg in range(16):
        code += _xmm(0x6F, reg, XMM_SLOT + 16 * reg)
    code += b"\x57"  # push rdi: the block
    code += _load(RAX, FLAGS_SLOT) + b"\x50\x9d"  # mov rax, flags; push rax; popfq
    for reg in range(16):
        if reg not in (RSP, RDI):
            code += _load(reg, 8 * reg)
    code += _load(RDI, 8 * RDI)
    code += instruction
    code += b"\x9c"  # pushfq: [rsp] flags, [rsp + 8] the block
    code += b"\x48\x87\x7c\x24\x08"  # xchg [rsp + 8], rdi
    for reg in range(16):
        if reg not in (RSP, RDI):
            code += _store(reg, 8 * reg)
    code += b"\x58" + _store(RAX, FLAGS_SLOT)  # pop rax: the flags
    code += b"\x58" + _store(RAX, 8 * RDI)  # pop rax: the instruction's rdi
    for reg in range(16):
        code += _xmm(0x7F, reg, XMM_SLOT + 16 * reg)
    code += _mxcsr(3, MXCSR_SLOT) + _mxcsr(2, SAVED_MXCSR_SLOT)  # the host's MXCSR back
    for reg in reversed(CALLEE_SAVED):
        code += bytes([0x41, 0x58 + reg - 8]) if reg >= 8 else bytes([0x58 + reg])  # pop
    code += b"\xc3"
    return bytes(code)


def run_native(instruction: bytes, gprs: list[int], rflags: int) -> tuple[list[int], int]:
    """The registers and flags after `instruction` ran on the host CPU from this state."""
    after = run_native_sse(instruction, CpuState(tuple(gprs), 0, rflags, 64))
    return list(after.gprs), after.rflags


def run_native_sse(instruction: bytes, state: CpuState) -> CpuState:
    """The general-purpose and XMM registers, RFLAGS and MXCSR after `instruction` ran
    on the host CPU from `state`'s."""
    block = (ctypes.c_uint64 * BLOCK_WORDS)(*state.gprs, state.rflags)
    for index, value in enumerate(state.xmm):
        block[17 + 2 * index] = value & MASK64
        block[18 + 2 * index] = value >> 64
    block[MXCSR_SLOT // 8] = state.mxcsr
    try:
        code = open_native_code(harness(instruction))
    except NativeCodeError as error:
        pytest.skip(str(error))
    with code:
        code.function(None, ctypes.c_void_p)(ctypes.addressof(block))
    after = list(block)
    xmm = tuple(after[17 + 2 * index] | after[18 + 2 * index] << 64 for index in range(16))
    return replace(
        state,
        gprs=tuple(after[:16]),
        rflags=after[16],
        xmm=xmm,
        mxcsr=after[MXCSR_SLOT // 8] & 0xFFFF_FFFF,
    )


def random_state(rng: random.Random) -> tuple[list[int], int]:
    gprs = [rng.choice((0, rng.getrandbits(64), rng.getrandbits(16))) for _ in range(16)]
    gprs[RSP] = 0  # the harness keeps the host's rsp
    rflags = (rng.getrandbits(32) & STATUS_FLAGS) | 0x2
    return gprs, rflags


def model(
    instruction: bytes, gprs: list[int], rflags: int, read=None, rip: int = 0x1000
) -> CpuState:
    decoded = decode(instruction, 64)
    assert decoded is not None
    state = CpuState(tuple(gprs), rip, rflags, 64)
    performed = perform(decoded, state, read or _no_memory)
    assert performed.exception is None
    assert performed.state.rip == rip + len(instruction)
    return performed.state


def _no_memory(linear: int, size: int) -> bytes:
    raise AssertionError("no memory operand expected")


def assert_same(native: tuple[list[int], int], modelled: CpuState) -> None:
    gprs, rflags = native
    for index, name in enumerate(GPR_NAMES):
        if index != RSP:
            assert modelled.gprs[index] == gprs[index], name
    assert modelled.rflags & LOADED_FLAGS == rflags & LOADED_FLAGS


# ---------------------------------------------------------------------------
# popcnt, against the host CPU.

POPCNT_REGISTER_FORMS = {
    "popcnt rax, rdi": bytes.fromhex("f3480fb8c7"),
    "popcnt eax, edi": bytes.fromhex("f30fb8c7"),
    "popcnt ax, di": bytes.fromhex("66f30fb8c7"),
    "popcnt r9, r10": bytes.fromhex("f34d0fb8ca"),
    "popcnt r11d, ebx": bytes.fromhex("f3440fb8db"),
    "popcnt r12w, r13w": bytes.fromhex("66f3450fb8e5"),
}

needs_popcnt = pytest.mark.skipif(not _host_has("popcnt"), reason="the host CPU has no popcnt")


@needs_popcnt
@pytest.mark.parametrize("text", POPCNT_REGISTER_FORMS)
def test_popcnt_register_forms_match_the_host_cpu(text: str) -> None:
    instruction = POPCNT_REGISTER_FORMS[text]
    assert decode(instruction, 64).text == text
    rng = random.Random(f"{SEED} {text}")
    for _ in range(CASES):
        gprs, rflags = random_state(rng)
        assert_same(run_native(instruction, gprs, rflags), model(instruction, gprs, rflags))


# Memory forms: the base (and index) registers point into a buffer of this
# process; the model reads the bytes at the linear address it computed.
POPCNT_MEMORY_FORMS = {
    "popcnt rax, qword ptr [rbx + 8]": bytes.fromhex("f3480fb84308"),
    "popcnt ecx, dword ptr [rsi + rdx*4 - 0x10]": bytes.fromhex("f30fb84c96f0"),
    "popcnt dx, word ptr [rbp + r8*2]": bytes.fromhex("66f3420fb8544500"),
    "popcnt r15, qword ptr [r12]": bytes.fromhex("f34d0fb83c24"),
}


@needs_popcnt
@pytest.mark.parametrize("text", POPCNT_MEMORY_FORMS)
def test_popcnt_memory_forms_match_the_host_cpu(text: str) -> None:
    instruction = POPCNT_MEMORY_FORMS[text]
    decoded = decode(instruction, 64)
    assert decoded.text == text
    memory = decoded.operands[1]
    assert isinstance(memory, Memory)
    rng = random.Random(f"{SEED} {text}")
    buffer = (ctypes.c_uint8 * 4096)()
    start = ctypes.addressof(buffer)
    for _ in range(CASES):
        buffer[:] = list(rng.randbytes(4096))
        gprs, rflags = random_state(rng)
        index = 0
        if memory.index is not None:
            index = rng.randrange(16)
            gprs[REGISTERS[memory.index].index] = index
        # The base lands the operand somewhere inside the buffer.
        gprs[REGISTERS[memory.base].index] = (
            start + 64 + rng.randrange(1024) - memory.disp - index * memory.scale
        )

        def read(linear: int, size: int) -> bytes:
            assert start <= linear and linear + size <= start + len(buffer)
            return bytes(buffer[linear - start : linear - start + size])

        modelled = model(instruction, gprs, rflags, read)
        assert_same(run_native(instruction, gprs, rflags), modelled)


def test_popcnt_flags_by_the_sdm() -> None:
    """ZF only when the source is 0; OF, SF, AF, CF, PF always cleared; other flags kept."""
    instruction = POPCNT_REGISTER_FORMS["popcnt rax, rdi"]
    everything = STATUS_FLAGS | RFLAGS_AC | 0x2 | 0x200
    zero = model(instruction, [0] * 16, everything)
    assert zero.rflags == (everything & ~STATUS_FLAGS) | RFLAGS_ZF
    gprs = [0] * 16
    gprs[RDI] = 0x8000_0000_0000_0001
    assert model(instruction, gprs, everything).rflags == everything & ~STATUS_FLAGS
    assert model(instruction, gprs, everything).gprs[RAX] == 2


def test_popcnt_rip_relative_and_a_fault_on_its_operand() -> None:
    instruction = bytes.fromhex("f3480fb805f0000000")  # popcnt rax, [rip + 0xf0]
    reads: list[tuple[int, int]] = []

    def read(linear: int, size: int) -> bytes:
        reads.append((linear, size))
        return b"\xff" * size

    after = model(instruction, [0] * 16, 0x2, read, rip=0x7000)
    assert reads == [(0x7000 + len(instruction) + 0xF0, 8)]
    assert after.gprs[RAX] == 64

    def fails(linear: int, size: int) -> bytes:
        raise OperandFault("not mapped")

    state = CpuState((0,) * 16, 0x7000, 0x2, 64)
    with pytest.raises(NotPerformed):
        perform(decode(instruction, 64), state, fails)


def test_popcnt_with_lock_is_ud() -> None:
    decoded = decode(bytes.fromhex("f0f3480fb8c7"), 64)
    assert decoded.lock
    state = CpuState((0,) * 16, 0x1000, 0x2, 64)
    performed = perform(decoded, state, _no_memory)
    assert performed.exception.vector == 6 and performed.state == state


# ---------------------------------------------------------------------------
# The effective-address calculator, against the CPU's own: lea.

LEA_FORMS = {
    "lea rax, [rbx + rcx*8 + 0x12345678]": bytes.fromhex("488d84cb78563412"),
    "lea rax, [rsi + rdi*2 - 0x80]": bytes.fromhex("488d447e80"),
    "lea rax, [r13]": bytes.fromhex("498d4500"),
    "lea rax, [r12 + r9*4 + 7]": bytes.fromhex("4b8d448c07"),
    "lea rax, [rdx*4]": bytes.fromhex("488d049500000000"),
    "lea eax, [ebx + ecx + 0x10]": bytes.fromhex("678d440b10"),
    "lea rax, [0xfffffffffffffff0]": bytes.fromhex("488d0425f0ffffff"),
}


@pytest.mark.parametrize("text", LEA_FORMS)
def test_effective_address_matches_lea_on_the_host_cpu(text: str) -> None:
    instruction = LEA_FORMS[text]
    decoded = decode(instruction, 64)
    assert decoded is not None and decoded.text == text
    memory = decoded.operands[1]
    assert isinstance(memory, Memory)
    rng = random.Random(f"{SEED} {text}")
    for _ in range(CASES):
        gprs, rflags = random_state(rng)
        state = CpuState(tuple(gprs), 0x1000, rflags, 64)
        native, _ = run_native(instruction, gprs, rflags)
        # lea's result is the offset at the operand size: 32 bits for eax.
        expected = native[RAX]
        computed = linear_address(memory, state, decoded.size, decoded.address_bits)
        assert computed & ((1 << (8 * decoded.operands[0].size)) - 1) == expected


def test_effective_address_rip_relative_and_segments() -> None:
    # popcnt eax, [rip - 8] at 0x401000: from the next instruction.
    decoded = decode(bytes.fromhex("f30fb805f8ffffff"), 64)
    state = CpuState((0,) * 16, 0x401000, 0x2, 64)
    memory = decoded.operands[1]
    assert linear_address(memory, state, decoded.size, 64) == 0x401000 + 8 - 8
    # In 64-bit mode only FS and GS have a base; DS's is ignored.
    bases = {"es": 0x100, "cs": 0x200, "ss": 0x300, "ds": 0x400, "fs": 0x5000, "gs": 0x6000}
    gprs = [0] * 16
    gprs[REGISTERS["rbx"].index] = 0x10
    plain = decode(bytes.fromhex("f30fb803"), 64)  # popcnt eax, [rbx]
    fs = decode(bytes.fromhex("64f30fb803"), 64)  # popcnt eax, fs:[rbx]
    state = CpuState(tuple(gprs), 0, 0x2, 64, segment_bases=bases)
    assert linear_address(plain.operands[1], state, plain.size, 64) == 0x10
    assert linear_address(fs.operands[1], state, fs.size, 64) == 0x5010
    # In 32-bit code every segment's base counts, SS for an ebp/esp base, and it wraps at 4 GiB.
    state32 = replace(state, bits=32)
    plain32 = decode(bytes.fromhex("f30fb803"), 32)  # popcnt eax, [ebx]
    assert linear_address(plain32.operands[1], state32, plain32.size, 32) == 0x410
    via_ebp = decode(bytes.fromhex("f30fb84500"), 32)  # popcnt eax, [ebp]
    gprs32 = list(gprs)
    gprs32[REGISTERS["rbp"].index] = 0xFFFF_FF00
    state32 = replace(state32, gprs=tuple(gprs32))
    assert linear_address(via_ebp.operands[1], state32, via_ebp.size, 32) == 0x200
    # 16-bit addressing: [bx + si + disp8], wrapping at 64 KiB, plus DS's base.
    decoded16 = decode(bytes.fromhex("f30fb84010"), 16)  # popcnt ax, [bx + si + 0x10]
    gprs16 = [0] * 16
    gprs16[REGISTERS["rbx"].index] = 0xFFF0
    gprs16[REGISTERS["rsi"].index] = 0x8
    state16 = CpuState(tuple(gprs16), 0, 0x2, 16, segment_bases=bases)
    assert linear_address(decoded16.operands[1], state16, decoded16.size, 16) == 0x400 + 0x8


# ---------------------------------------------------------------------------
# wait/fwait: natively a no-op when nothing is pending; #NM and #MF by the SDM.

WAIT = bytes.fromhex("9b")


def test_wait_matches_the_host_cpu() -> None:
    rng = random.Random(f"{SEED} wait")
    for _ in range(CASES):
        gprs, rflags = random_state(rng)
        assert_same(run_native(WAIT, gprs, rflags), model(WAIT, gprs, rflags))


@pytest.mark.parametrize(
    ("cr0", "fcw", "fsw", "vector"),
    [
        (CR0_PE | CR0_NE, 0x37F, 0x0000, None),  # nothing pending
        (CR0_PE | CR0_NE, 0x37F, 0x0001, None),  # invalid-operation flag, masked
        (CR0_PE | CR0_NE, 0x37E, 0x0081, 16),  # ... unmasked: #MF
        (CR0_PE | CR0_NE, 0x37B, 0x0084, 16),  # zero-divide, unmasked: #MF
        (CR0_PE | CR0_NE | CR0_TS, 0x37E, 0x0081, 16),  # TS without MP: no #NM
        (CR0_PE | CR0_MP | CR0_TS, 0x37F, 0x0000, 7),  # MP and TS: #NM
        (CR0_PE | CR0_MP | CR0_TS | CR0_NE, 0x37E, 0x0081, 7),  # #NM first
    ],
)
def test_wait_by_the_sdm(cr0: int, fcw: int, fsw: int, vector: int | None) -> None:
    state = CpuState((1,) * 16, 0x2000, 0x2, 64, cr0=cr0, fcw=fcw, fsw=fsw)
    performed = perform(decode(WAIT, 64), state, _no_memory)
    if vector is None:
        assert performed.exception is None and performed.state == state.advanced(1)
    else:  # a fault: RIP stays at the instruction
        assert performed.exception.vector == vector and performed.state == state


def test_wait_with_a_pending_exception_and_ne_clear_is_not_performed() -> None:
    state = CpuState((0,) * 16, 0x2000, 0x2, 32, cr0=CR0_PE, fcw=0x37E, fsw=0x81)
    with pytest.raises(NotPerformed, match="FERR"):
        perform(decode(WAIT, 32), state, _no_memory)


# ---------------------------------------------------------------------------
# int3, clac, stac: by the SDM (the host cannot run them at CPL 3 to compare).


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_int3_is_a_trap_after_the_instruction(bits: int) -> None:
    rng = random.Random(f"{SEED} int3 {bits}")
    for _ in range(CASES):
        gprs, rflags = random_state(rng)
        rip = rng.getrandbits(bits)
        state = CpuState(tuple(gprs), rip, rflags, bits, cpl=rng.choice((0, 3)))
        performed = perform(decode(b"\xcc", bits), state, _no_memory)
        assert performed.exception.vector == 3
        assert performed.exception.error_code is None
        # Only RIP moves, and IP/EIP wrap at their width.
        assert performed.state == replace(state, rip=(rip + 1) & ((1 << bits) - 1))


@pytest.mark.parametrize(
    ("code", "ac"), [(bytes.fromhex("0f01ca"), 0), (bytes.fromhex("0f01cb"), 1)]
)
def test_clac_stac_set_ac_and_nothing_else(code: bytes, ac: int) -> None:
    rng = random.Random(f"{SEED} {code.hex()}")
    for bits in (16, 32, 64):
        decoded = decode(code, bits)
        assert decoded.mnemonic == ("clac", "stac")[ac]
        for _ in range(CASES // 3):
            gprs, _ = random_state(rng)
            rflags = rng.getrandbits(22) & ~RFLAGS_VM | 0x2
            state = CpuState(tuple(gprs), 0x100, rflags, bits)
            performed = perform(decoded, state, _no_memory)
            assert performed.exception is None
            expected = (rflags & ~RFLAGS_AC) | (RFLAGS_AC if ac else 0)
            assert performed.state == replace(state, rflags=expected, rip=0x103)


@pytest.mark.parametrize("mnemonic", ["clac", "stac"])
def test_clac_stac_are_ud_above_cpl0_and_in_v86(mnemonic: str) -> None:
    decoded = decode(bytes.fromhex({"clac": "0f01ca", "stac": "0f01cb"}[mnemonic]), 32)
    for cpl, rflags in ((3, 0x2), (1, 0x2), (0, RFLAGS_VM | 0x2)):
        state = CpuState((0,) * 16, 0x100, rflags, 32, cpl=cpl)
        performed = perform(decoded, state, _no_memory)
        assert performed.exception.vector == 6 and performed.state == state


def test_lock_clac_is_no_instruction_to_the_decoder() -> None:
    """The CPU raises #UD for it; capstone decodes nothing, so the layer leaves it to the
    internal-error outcome (a guest that runs it is wrong on any host)."""
    assert decode(bytes.fromhex("f00f01ca"), 32) is None


def test_the_table_is_what_the_readme_says() -> None:
    assert set(TABLE) == {
        "int3",
        "clac",
        "stac",
        "popcnt",
        "wait",
        "ldmxcsr",
        "stmxcsr",
        "movd",
        "movq",
        "pxor",
        "fnstsw",
        "fnclex",
        "crc32",
        "cmpxchg16b",
    }


# ---------------------------------------------------------------------------
# SSE: movd/movq, ldmxcsr/stmxcsr against the host CPU (SSE2 is x86-64's baseline).

MOVD_FORMS = {
    "movd xmm0, eax": "660f6ec0",
    "movd xmm9, r10d": "66450f6eca",
    "movq xmm3, rbx": "66480f6edb",
    "movd eax, xmm1": "660f7ec8",
    "movq r11, xmm12": "664d0f7ee3",
    "movq xmm2, xmm7": "f30f7ed7",
    "movq xmm5, xmm14": "66440fd6f5",
    "movd xmm4, dword ptr [rbx + 8]": "660f6e6308",
    "movq xmm1, qword ptr [rbx + 0x10]": "f30f7e4b10",
    "movd dword ptr [rbx], xmm0": "660f7e03",
    "movq qword ptr [rbx + rdx*8], xmm6": "660fd634d3",
    "ldmxcsr dword ptr [rbx]": "0fae13",
    "stmxcsr dword ptr [rbx + 4]": "0fae5b04",
    "pxor xmm0, xmm1": "660fefc1",
    "pxor xmm11, xmm11": "66450fefdb",
    "pxor xmm2, xmmword ptr [rbx + 0x10]": "660fef5310",
    "crc32 eax, cl": "f20f38f0c1",
    "crc32 eax, cx": "66f20f38f1c1",
    "crc32 r9d, dword ptr [rbx]": "f2440f38f10b",
    "crc32 rax, rbx": "f2480f38f1c3",
    "crc32 r15, byte ptr [rbx + rdx*8]": "f24c0f38f03cd3",
}
SSE_ON = CR0_PE | 0x2  # PE, MP


def random_sse_state(rng: random.Random, buffer_start: int) -> CpuState:
    gprs, rflags = random_state(rng)
    gprs[REGISTERS["rbx"].index] = buffer_start + 8 * rng.randrange(64)
    gprs[REGISTERS["rdx"].index] = rng.randrange(32)
    xmm = tuple(rng.getrandbits(128) for _ in range(16))
    mxcsr = rng.getrandbits(16) | 0x1F80  # exceptions stay masked on the host
    return CpuState(
        tuple(gprs), 0x1000, rflags, 64, cr0=SSE_ON, cr4=CR4_OSFXSR, xmm=xmm, mxcsr=mxcsr
    )


needs_sse4_2 = pytest.mark.skipif(not _host_has("sse4_2"), reason="the host CPU has no crc32")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(text, marks=needs_sse4_2) if text.startswith("crc32") else text
        for text in MOVD_FORMS
    ],
)
def test_sse_moves_match_the_host_cpu(text: str) -> None:
    instruction = bytes.fromhex(MOVD_FORMS[text])
    decoded = decode(instruction, 64)
    assert decoded is not None and decoded.text == text
    rng = random.Random(f"{SEED} {text}")
    buffer = (ctypes.c_uint8 * 1024)()
    start = ctypes.addressof(buffer)
    for _ in range(CASES):
        buffer[:] = list(rng.randbytes(1024))
        if decoded.mnemonic == "ldmxcsr":  # a value the host takes: no reserved bit
            value = rng.getrandbits(16) | 0x1F80
            for offset in range(0, 1024, 4):
                buffer[offset : offset + 4] = list(value.to_bytes(4, "little"))
        state = random_sse_state(rng, start)
        if decoded.mnemonic == "pxor":  # a legacy SSE m128 is 16-byte aligned
            rbx = REGISTERS["rbx"].index
            state = state.with_gpr(rbx, state.gprs[rbx] & ~15)
        before = bytes(buffer)

        def read(linear: int, size: int, before: bytes = before) -> bytes:
            assert start <= linear and linear + size <= start + len(before)
            return before[linear - start : linear - start + size]

        performed = perform(decoded, state, read)
        assert performed.exception is None
        native = run_native_sse(instruction, state)
        modelled = performed.state
        assert modelled.rip == state.rip + len(instruction)
        assert (
            modelled.gprs[:RSP] + modelled.gprs[RSP + 1 :]
            == native.gprs[:RSP] + native.gprs[RSP + 1 :]
        )
        assert modelled.xmm == native.xmm
        assert modelled.mxcsr == native.mxcsr
        assert modelled.rflags & LOADED_FLAGS == native.rflags & LOADED_FLAGS
        stored = bytearray(before)
        for linear, data in performed.writes:
            stored[linear - start : linear - start + len(data)] = data
        assert bytes(stored) == bytes(buffer)


@pytest.mark.parametrize(
    "text", ["movd xmm0, eax", "ldmxcsr dword ptr [rbx]", "stmxcsr dword ptr [rbx + 4]"]
)
@pytest.mark.parametrize(
    ("cr0", "cr4", "vector"),
    [
        (CR0_PE | 0x4, CR4_OSFXSR, 6),  # CR0.EM: #UD
        (CR0_PE, 0, 6),  # CR4.OSFXSR clear: #UD
        (CR0_PE | CR0_TS, CR4_OSFXSR, 7),  # CR0.TS: #NM
        (CR0_PE | CR0_TS | 0x4, CR4_OSFXSR, 6),  # #UD before #NM
    ],
)
def test_sse_entries_fault_by_the_sdm(text: str, cr0: int, cr4: int, vector: int) -> None:
    decoded = decode(bytes.fromhex(MOVD_FORMS[text]), 64)
    state = CpuState((0,) * 16, 0x1000, 0x2, 64, cr0=cr0, cr4=cr4)
    performed = perform(decoded, state, lambda linear, size: b"\0" * size)
    assert performed.exception.vector == vector and performed.state == state
    assert performed.writes == ()


def test_ldmxcsr_with_a_reserved_bit_is_gp0() -> None:
    decoded = decode(bytes.fromhex(MOVD_FORMS["ldmxcsr dword ptr [rbx]"]), 64)
    state = CpuState((0,) * 16, 0x1000, 0x2, 64, cr0=SSE_ON, cr4=CR4_OSFXSR)
    for value in (0x1_0000, 0x8000_1F80):
        read = lambda linear, size, value=value: value.to_bytes(4, "little")  # noqa: E731
        performed = perform(decoded, state, read)
        assert performed.exception.vector == 13 and performed.exception.error_code == 0
        assert performed.state == state
    performed = perform(decoded, state, lambda linear, size: (0xFFFF).to_bytes(4, "little"))
    assert performed.exception is None and performed.state.mxcsr == 0xFFFF


def test_the_mmx_forms_are_not_performed() -> None:
    assert decode(bytes.fromhex("0f6ec0"), 64).operands == ()  # movd mm0, eax: no XMM
    decoded = decode(bytes.fromhex("0f6ec0"), 64)
    with pytest.raises(NotPerformed, match="operands pyvmm does not handle"):
        perform(decoded, CpuState((0,) * 16, 0, 2, 64, cr4=CR4_OSFXSR), _no_memory)


def test_pxor_on_memory_not_on_16_bytes_is_gp0() -> None:
    decoded = decode(bytes.fromhex(MOVD_FORMS["pxor xmm2, xmmword ptr [rbx + 0x10]"]), 64)
    gprs = [0] * 16
    gprs[REGISTERS["rbx"].index] = 0x1008
    state = CpuState(tuple(gprs), 0x1000, 0x2, 64, cr0=SSE_ON, cr4=CR4_OSFXSR)
    performed = perform(decoded, state, _no_memory)
    assert performed.exception.vector == 13 and performed.state == state


def test_crc32_is_crc32c() -> None:
    """The check value of CRC-32C ("123456789" -> 0xe3069283) with the usual inversions."""
    from pyvmm.arch.x86_64.assist.table import crc32c

    assert crc32c(0xFFFF_FFFF, b"123456789") ^ 0xFFFF_FFFF == 0xE3069283


@pytest.mark.parametrize(
    ("code", "fsw", "ax", "stored"),
    [
        ("dfe0", 0x3881, 0x3881, None),  # fnstsw ax
        ("dd7b08", 0x4100, None, 0x4100),  # fnstsw [rbx + 8]
    ],
)
def test_fnstsw_by_the_sdm(code: str, fsw: int, ax: int | None, stored: int | None) -> None:
    decoded = decode(bytes.fromhex(code), 64)
    gprs = [0xFFFF_FFFF_FFFF_FFFF] * 16
    gprs[REGISTERS["rbx"].index] = 0x5000
    state = CpuState(tuple(gprs), 0x1000, 0x2, 64, fsw=fsw)
    performed = perform(decoded, state, _no_memory)
    assert performed.exception is None
    if ax is not None:  # AX only: the rest of RAX stays
        assert performed.state.gprs[RAX] == 0xFFFF_FFFF_FFFF_0000 | ax
        assert performed.writes == ()
    else:
        assert performed.state.gprs == state.gprs
        assert performed.writes == ((0x5008, stored.to_bytes(2, "little")),)
    for cr0 in (CR0_PE | 0x4, CR0_PE | CR0_TS):  # CR0.EM, CR0.TS: #NM
        refused = perform(decoded, replace(state, cr0=cr0), _no_memory)
        assert refused.exception.vector == 7 and refused.writes == ()


def test_fnclex_by_the_sdm() -> None:
    decoded = decode(bytes.fromhex("dbe2"), 64)
    state = CpuState((0,) * 16, 0x1000, 0x2, 64, fsw=0xFFFF)
    performed = perform(decoded, state, _no_memory)
    # Exception flags, SF, ES and B cleared; C0-C3 and TOP stay.
    assert performed.state.fsw == 0x7F00 and performed.state.rip == 0x1002
    assert perform(decoded, replace(state, cr0=CR0_PE | CR0_TS), _no_memory).exception.vector == 7


def test_wait_is_an_instruction_of_its_own() -> None:
    """fclex (9b db e2) is WAIT then FNCLEX: the CPU, and KVM, stop at the WAIT first."""
    decoded = decode(bytes.fromhex("9bdbe2"), 64)
    assert decoded.mnemonic == "wait" and decoded.size == 1


# ---------------------------------------------------------------------------
# lock cmpxchg16b: against the host CPU, equal and unequal in turn.

CMPXCHG16B = bytes.fromhex("f0480fc70b")  # lock cmpxchg16b xmmword ptr [rbx]

needs_cx16 = pytest.mark.skipif(not _host_has("cx16"), reason="the host CPU has no cmpxchg16b")


@needs_cx16
def test_cmpxchg16b_matches_the_host_cpu() -> None:
    decoded = decode(CMPXCHG16B, 64)
    assert decoded.text == "lock cmpxchg16b xmmword ptr [rbx]" and decoded.lock
    rng = random.Random(f"{SEED} cmpxchg16b")
    buffer = (ctypes.c_uint8 * 256)()
    start = (ctypes.addressof(buffer) + 15) & ~15
    for case in range(CASES):
        gprs, rflags = random_state(rng)
        offset = 16 * rng.randrange(8)
        gprs[REGISTERS["rbx"].index] = start + offset
        memory = rng.getrandbits(128)
        if case % 2:  # equal: RDX:RAX is what memory holds
            gprs[RAX], gprs[REGISTERS["rdx"].index] = memory & MASK64, memory >> 64
        ctypes.memmove(start + offset, memory.to_bytes(16, "little"), 16)
        before = ctypes.string_at(start, 128)

        def read(linear: int, size: int, before: bytes = before, offset: int = offset) -> bytes:
            assert linear == start + offset and size == 16
            return before[offset : offset + 16]

        performed = perform(decoded, CpuState(tuple(gprs), 0x1000, rflags, 64), read)
        assert performed.atomic and performed.exception is None
        native = run_native(CMPXCHG16B, gprs, rflags)
        assert_same(native, performed.state)
        ((linear, data),) = performed.writes
        assert linear == start + offset
        assert data == ctypes.string_at(start + offset, 16)
        assert bool(performed.state.rflags & RFLAGS_ZF) == bool(case % 2)


def test_cmpxchg16b_off_16_bytes_is_gp0() -> None:
    gprs = [0] * 16
    gprs[REGISTERS["rbx"].index] = 0x1008
    state = CpuState(tuple(gprs), 0x1000, 0x2, 64)
    performed = perform(decode(CMPXCHG16B, 64), state, _no_memory)
    assert performed.exception.vector == 13 and performed.exception.error_code == 0
    assert performed.state == state and performed.writes == ()
