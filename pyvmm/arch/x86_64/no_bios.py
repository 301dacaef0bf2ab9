"""No BIOS: what a real-mode guest finds behind `int n`, and what pyvmm learns from it.

On a PC the BIOS fills the real-mode interrupt vector table (IVT: 256 far
pointers at 0000:0000; Intel SDM vol. 3, "8086 Emulation") with its services: int
0x10 video, int 0x13 disk, int 0x16 keyboard... pyvmm has no BIOS. Left
empty, every vector is 0000:0000, and `int 0x10` runs the IVT itself as code.
So a real-mode entry points every empty vector n at a 4-byte stub at
f000:4n, in the BIOS area:

    out  %al, $0xe5     traps to pyvmm (KVM_EXIT_IO); the value is not used
    iret                back to the guest, which runs on
    nop

On the trap pyvmm knows the vector from CS:IP, the service from AH (or AX),
and where the guest was from the return address the CPU pushed. A vector
the guest installed itself never reaches a stub.

The return address also tells a software interrupt from a CPU exception: an
`int n` (cd n), `int3` (cc), `into` (ce) or `int1` (f1) leaves it right after
the instruction, as does a far call chaining to the vector's old handler
(`pushf; lcall *old`). A fault pushes the address of the faulting
instruction itself, which a BIOS's bare `iret` would run again, forever: that
ends the run instead. (A fault of vector n right after an `int n` is taken
for a second `int n`; the bytes cannot tell them apart.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.register_dump import format_registers
from pyvmm.arch.x86_64.registers import CR0_PE
from pyvmm.errors import GuestMemoryError, Log
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any

log = Log(__name__)

# The trap port: free on a PC and on QEMU's (0xe9 is QEMU's debugcon, 0xed
# Linux's I/O delay port); below 0x100 so that `out %al, $imm8` reaches it
# without touching DX.
NO_BIOS_PORT = 0xE5
STUB_SIZE = 4
VECTORS = 256
OUT_AL_IMM8 = 0xE6
IRET = 0xCF
NOP = 0x90
# The instructions that raise a software interrupt (SDM vol. 2A, "INT n/INTO/INT3/INT1").
INT_IMM8 = 0xCD
INT3 = 0xCC
INTO = 0xCE
INT1 = 0xF1
# Far calls, to tell a chained call from a fault (SDM vol. 2A, "CALL").
CALL_FAR_DIRECT = 0x9A
GROUP5 = 0xFF  # FF /3: call far through a memory operand
SEGMENT_PREFIXES = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs"}
# At most this many distinct services are counted; the rest only in a total.
MAX_KINDS = 64

NO_BIOS = "pyvmm has no BIOS"
README_HINT = "see 'Writing your own guest' in the README"


def stub_table() -> bytes:
    """The 256 stubs, STUB_SIZE bytes each, for NO_BIOS_STUBS_GPA."""
    return bytes([OUT_AL_IMM8, NO_BIOS_PORT, IRET, NOP]) * VECTORS


def stub_offset(vector: int) -> int:
    """The offset of `vector`'s stub in segment NO_BIOS_STUBS_SEGMENT."""
    return vector * STUB_SIZE


def ivt_entry(vector: int) -> bytes:
    """The IVT entry pointing at `vector`'s stub: offset, then segment."""
    return struct.pack("<HH", stub_offset(vector), layout.NO_BIOS_STUBS_SEGMENT)


def full_ivt() -> bytes:
    """Every IVT entry pointing at its vector's stub (made once)."""
    global _full_ivt
    if not _full_ivt:
        _full_ivt = b"".join(ivt_entry(vector) for vector in range(VECTORS))
    return _full_ivt


_full_ivt = b""


def vector_of_stub(segment: int, ip: int) -> int | None:
    """The vector whose stub holds CS:IP (at its `out` or just after), or None."""
    if segment != layout.NO_BIOS_STUBS_SEGMENT or not 0 <= ip < VECTORS * STUB_SIZE:
        return None
    return ip // STUB_SIZE


def install(memory: GuestMemory) -> int:
    """Write the stubs and point every empty IVT vector at its stub; the vectors pointed.

    Only memory the image left all zero is written: an image that brings its
    own bytes to the stub area keeps them (and its IVT stays as loaded), and
    a vector the image set is kept.
    """
    stubs = stub_table()
    area = memory.read(layout.NO_BIOS_STUBS_GPA, len(stubs))
    if any(area) and area != stubs:
        log.info("no-BIOS stubs not installed: the image covers 0x%x", layout.NO_BIOS_STUBS_GPA)
        return 0
    memory.write(layout.NO_BIOS_STUBS_GPA, stubs)
    ivt = bytearray(memory.read(layout.IVT_GPA, layout.IVT_SIZE))
    if not any(ivt):  # the usual case: the image left the IVT alone
        memory.write(layout.IVT_GPA, full_ivt())
        return VECTORS
    pointed = 0
    for vector in range(VECTORS):
        if not any(ivt[vector * 4 : vector * 4 + 4]):
            ivt[vector * 4 : vector * 4 + 4] = ivt_entry(vector)
            pointed += 1
    memory.write(layout.IVT_GPA, bytes(ivt))
    return pointed


# --- Names: CPU exceptions (SDM vol. 3A, Table 6-1) and the PC's BIOS services
# (IBM PC/AT Technical Reference; Ralf Brown's Interrupt List).

EXCEPTIONS = {
    0x00: ("#DE", "divide error"),
    0x01: ("#DB", "debug"),
    0x02: ("NMI", "non-maskable interrupt"),
    0x03: ("#BP", "breakpoint"),
    0x04: ("#OF", "overflow"),
    0x05: ("#BR", "BOUND range exceeded"),
    0x06: ("#UD", "invalid opcode"),
    0x07: ("#NM", "device not available"),
    0x08: ("#DF", "double fault"),
    0x09: ("", "coprocessor segment overrun"),
    0x0A: ("#TS", "invalid TSS"),
    0x0B: ("#NP", "segment not present"),
    0x0C: ("#SS", "stack-segment fault"),
    0x0D: ("#GP", "general protection"),
    0x0E: ("#PF", "page fault"),
    0x10: ("#MF", "x87 floating-point error"),
    0x11: ("#AC", "alignment check"),
    0x12: ("#MC", "machine check"),
    0x13: ("#XM", "SIMD floating-point exception"),
    0x14: ("#VE", "virtualization exception"),
    0x15: ("#CP", "control protection"),
}

# Hardware interrupts where a PC BIOS programs the two 8259A PICs (bases 8 and 0x70).
IRQS = {
    0x08: "IRQ 0, timer",
    0x09: "IRQ 1, keyboard",
    0x0A: "IRQ 2, cascade",
    0x0B: "IRQ 3, COM2",
    0x0C: "IRQ 4, COM1",
    0x0D: "IRQ 5",
    0x0E: "IRQ 6, floppy",
    0x0F: "IRQ 7, LPT1",
    **{0x70 + irq: f"IRQ {8 + irq}" for irq in range(8)},
}

# Vectors whose service is chosen by AH: (what the group is, {AH: service}).
AH_SERVICES: dict[int, tuple[str, dict[int, str]]] = {
    0x10: (
        "video",
        {
            0x00: "set video mode",
            0x01: "set cursor shape",
            0x02: "set cursor position",
            0x03: "get cursor position and shape",
            0x05: "select active display page",
            0x06: "scroll window up",
            0x07: "scroll window down",
            0x08: "read character and attribute at cursor",
            0x09: "write character and attribute at cursor",
            0x0A: "write character at cursor",
            0x0B: "set background/border colour",
            0x0C: "write graphics pixel",
            0x0D: "read graphics pixel",
            0x0E: "video teletype output",
            0x0F: "get current video mode",
            0x10: "set palette registers",
            0x11: "character generator",
            0x12: "video subsystem configuration",
            0x13: "write string",
            0x1A: "get display combination code",
            0x4F: "VESA BIOS extensions",
        },
    ),
    0x13: (
        "disk",
        {
            0x00: "reset disk system",
            0x01: "get status of last disk operation",
            0x02: "read disk sectors by CHS",
            0x03: "write disk sectors by CHS",
            0x04: "verify disk sectors",
            0x08: "get drive parameters",
            0x15: "get disk type",
            0x41: "check for EDD disk extensions",
            0x42: "extended read disk sectors by LBA",
            0x43: "extended write disk sectors by LBA",
            0x48: "extended get drive parameters",
        },
    ),
    0x14: (
        "serial port",
        {
            0x00: "initialize serial port",
            0x01: "send character to serial port",
            0x02: "receive character from serial port",
            0x03: "get serial port status",
        },
    ),
    0x15: (
        "system",
        {
            0x24: "A20 gate",
            0x4F: "keyboard intercept",
            0x53: "APM power management",
            0x86: "wait",
            0x87: "copy extended memory",
            0x88: "get extended memory size",
            0x89: "switch to protected mode",
            0xC0: "get system configuration",
            0xE8: "memory size",
        },
    ),
    0x16: (
        "keyboard",
        {
            0x00: "read keystroke",
            0x01: "check for keystroke",
            0x02: "get shift flags",
            0x03: "set typematic rate",
            0x05: "store keystroke",
            0x10: "read extended keystroke",
            0x11: "check for extended keystroke",
            0x12: "get extended shift flags",
        },
    ),
    0x17: (
        "printer",
        {0x00: "print character", 0x01: "initialize printer", 0x02: "get printer status"},
    ),
    0x1A: (
        "time",
        {
            0x00: "read system clock ticks",
            0x01: "set system clock ticks",
            0x02: "read RTC time",
            0x03: "set RTC time",
            0x04: "read RTC date",
            0x05: "set RTC date",
            0xB1: "PCI BIOS",
        },
    ),
    0x21: (
        "MS-DOS",
        {
            0x00: "MS-DOS terminate program",
            0x01: "MS-DOS read character with echo",
            0x02: "MS-DOS write character",
            0x06: "MS-DOS direct console I/O",
            0x09: "MS-DOS write string",
            0x0A: "MS-DOS buffered keyboard input",
            0x25: "MS-DOS set interrupt vector",
            0x30: "MS-DOS get version",
            0x35: "MS-DOS get interrupt vector",
            0x3C: "MS-DOS create file",
            0x3D: "MS-DOS open file",
            0x3E: "MS-DOS close file",
            0x3F: "MS-DOS read file",
            0x40: "MS-DOS write file",
            0x48: "MS-DOS allocate memory",
            0x4C: "MS-DOS terminate with return code",
        },
    ),
}

# Services whose name depends on AL too: named by AX.
AX_SERVICES: dict[int, dict[int, str]] = {
    0x10: {
        0x4F00: "VESA get controller information",
        0x4F01: "VESA get mode information",
        0x4F02: "VESA set video mode",
        0x4F03: "VESA get current video mode",
    },
    0x15: {
        0x2400: "disable A20 gate",
        0x2401: "enable A20 gate",
        0x2402: "get A20 gate status",
        0x2403: "query A20 gate support",
        0xE801: "get memory size above 16 MiB",
        0xE820: "query system address map",
    },
    0x1A: {
        0xB101: "PCI BIOS installation check",
        0xB102: "find PCI device",
        0xB103: "find PCI class code",
    },
}

# Vectors that are one service, whatever AH says.
PLAIN_SERVICES = {
    0x05: "print screen",
    0x11: "get equipment list",
    0x12: "get conventional memory size",
    0x18: "boot failure, ROM BASIC",
    0x19: "bootstrap loader, reboot",
    0x1B: "Ctrl-Break handler",
    0x1C: "timer tick hook",
    0x20: "MS-DOS terminate program",
    0x33: "mouse driver",
    0x4A: "RTC alarm hook",
}

# What pyvmm offers instead, by vector.
ALTERNATIVES = {
    0x10: "write text to COM1 at port 0x3f8, or to the VGA text buffer at 0xb8000",
    0x13: "pyvmm loads the whole image into RAM before the guest starts: there is no disk",
    0x14: "program COM1, a 16550A UART at port 0x3f8, directly",
    0x15: "RAM is the -m size from address 0 (below 0xd0000000), and A20 is always on",
    0x16: "read COM1 at port 0x3f8: pyvmm feeds it from stdin",
    0x17: "write to COM1 at port 0x3f8",
    0x18: "end the run with hlt or by writing to the debug-exit port 0xf4",
    0x19: "end the run with hlt or by writing to the debug-exit port 0xf4",
    0x20: "pyvmm boots bare images, there is no DOS: end with hlt or the debug-exit port 0xf4",
    0x21: "pyvmm boots bare images, there is no DOS: write to COM1 at port 0x3f8",
}
DEFAULT_ALTERNATIVE = "write to COM1 at port 0x3f8"


def service_name(vector: int, ax: int) -> tuple[str, int | None]:
    """The label of `int vector` with AX=`ax`, and the AH or AX value it depends on.

    e.g. (0x10, 0x0e41) -> ("int 0x10 AH=0x0e (video teletype output)", 0x0e).
    The second item tells two calls of one vector apart (None when the vector
    is one service; AX | 0x10000 for services named by AX).
    """
    base = f"int 0x{vector:02x}"
    by_ax = AX_SERVICES.get(vector, {})
    if ax in by_ax:
        return f"{base} AX=0x{ax:04x} ({by_ax[ax]})", ax | 0x10000
    if vector in AH_SERVICES:
        group, names = AH_SERVICES[vector]
        ah = ax >> 8
        return f"{base} AH=0x{ah:02x} ({names.get(ah, f'{group} service')})", ah
    name = PLAIN_SERVICES.get(vector) or vector_name(vector)
    return (f"{base} ({name})" if name else base), None


def vector_name(vector: int) -> str:
    """What `vector` is on a PC: its BIOS service, CPU exception, IRQ; or ''."""
    names = []
    if vector in PLAIN_SERVICES:
        names.append(PLAIN_SERVICES[vector])
    if vector in AH_SERVICES:
        names.append(f"{AH_SERVICES[vector][0]} services")
    elif vector in EXCEPTIONS:
        mnemonic, name = EXCEPTIONS[vector]
        names.append(f"{mnemonic} {name}".strip())
    if vector in IRQS:
        names.append(f"{IRQS[vector]} on a PC")
    return "; ".join(names)


def exception_name(vector: int) -> str:
    """How an exception report names `vector`, e.g. '#UD (invalid opcode, vector 6)'."""
    if vector in EXCEPTIONS:
        mnemonic, name = EXCEPTIONS[vector]
        also = f"; {IRQS[vector]} on a PC" if vector in IRQS else ""
        return f"{mnemonic} ({name}, vector {vector}{also})".strip()
    name = vector_name(vector)
    return f"vector 0x{vector:02x} ({name})" if name else f"vector 0x{vector:02x}"


def alternative(vector: int) -> str:
    """What pyvmm offers instead of the BIOS services behind `vector`."""
    return ALTERNATIVES.get(vector, DEFAULT_ALTERNATIVE)


# --- Telling an `int n` from an exception (SDM vol. 2A: INT n/INTO/INT3/INT1, CALL).


def software_entry_size(before: bytes, vector: int) -> int:
    """The size of an INT instruction ending where `before` ends that raised `vector`; or 0.

    `before` holds the bytes just before the return address.
    """
    if len(before) >= 2 and before[-2] == INT_IMM8 and before[-1] == vector:
        return 2
    one_byte = {INT3: 3, INTO: 4, INT1: 1}
    if before and one_byte.get(before[-1]) == vector:
        return 1
    return 0


def far_call_size(
    before: bytes,
    target: tuple[int, int],
    regs: Any,
    segment_bases: dict[str, int],
    read: Callable[[int, int], bytes],
) -> int:
    """The size of a far CALL ending where `before` ends, to `target`; or 0.

    `target` is (segment, offset). A direct call (9a) holds its target; an
    indirect one (ff /3 with 16-bit addressing, SDM vol. 2A, Table 2-1)
    finds it in memory, with `read(linear, size)`, at an address made of
    `regs` (as they were at the call: a far call changes only CS, IP, SP)
    and `segment_bases` ("cs" being the caller's).
    """
    if len(before) >= 5 and before[-5] == CALL_FAR_DIRECT:
        offset, segment = struct.unpack("<HH", before[-4:])
        if (segment, offset) == target:
            return 5
    for size in (2, 3, 4):  # ff modrm [disp8 | disp16]
        start = len(before) - size
        if start < 0:
            break
        if before[start] != GROUP5 or (before[start + 1] >> 3) & 7 != 3:
            continue
        operand = effective_address(before[start + 1], before[start + 2 :], regs)
        if operand is None:
            continue
        segment_name, offset = operand
        prefix = before[start - 1] if start else None
        if prefix in SEGMENT_PREFIXES:
            segment_name, size = SEGMENT_PREFIXES[prefix], size + 1
        pointer = read(segment_bases[segment_name] + offset, 4)
        if len(pointer) == 4 and struct.unpack("<HH", pointer)[::-1] == target:
            return size
    return 0


def effective_address(modrm: int, displacement: bytes, regs: Any) -> tuple[str, int] | None:
    """(default segment, offset) of a 16-bit ModRM memory operand whose displacement
    is exactly `displacement`; None for a register operand or another length."""
    mod, rm = modrm >> 6, modrm & 7
    if mod == 3:
        return None
    size = {0: 2 if rm == 6 else 0, 1: 1, 2: 2}[mod]
    if len(displacement) != size:
        return None
    if mod == 0 and rm == 6:
        return "ds", int.from_bytes(displacement, "little")
    bx, bp, si, di = (int(getattr(regs, name)) & 0xFFFF for name in ("rbx", "rbp", "rsi", "rdi"))
    base = (bx + si, bx + di, bp + si, bp + di, si, di, bp, bx)[rm]
    disp = int.from_bytes(displacement, "little", signed=True) if size else 0
    return ("ss" if rm in (2, 3, 6) else "ds"), (base + disp) & 0xFFFF


# --- The trap.


class BiosCall:
    """One kind of call into an empty vector: how often, and the first place."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("count", "label", "vector", "where")

    def __init__(self, label: str, vector: int, where: str, count: int = 0) -> None:
        self.label = label  # e.g. "int 0x10 AH=0x0e (video teletype output)"
        self.vector = vector
        self.where = where  # CS:IP of the first call's instruction, e.g. "0000:7c11"
        self.count = count

    def report_line(self) -> str:
        times = "1 time" if self.count == 1 else f"{self.count} times"
        return (
            f"{self.label} at {self.where}, {times}: {NO_BIOS}, the call did nothing; "
            f"{alternative(self.vector)} ({README_HINT})"
        )


class IrqArrival(BiosCall):
    """A hardware interrupt that reached a stub: unmasked at the PIC, no vector set."""

    __slots__ = ()

    def report_line(self) -> str:
        times = "1 time" if self.count == 1 else f"{self.count} times"
        return (
            f"{self.label} interrupted the guest at {self.where}, {times}: {NO_BIOS}; pyvmm "
            f"sent the PIC its EOI and returned, as a BIOS's default handler does; set "
            f"vector 0x{self.vector:02x} before you unmask the IRQ ({README_HINT})"
        )


class NoBiosTrap:
    """The device on NO_BIOS_PORT: counts calls into empty vectors, ends the run on an exception.

    `current_vcpu()` gives the vCPU whose exit is being served (for its
    registers, KVM_GET_REGS/KVM_GET_SREGS), or None; `on_exception(message,
    registers)` ends the run. `calls` maps (vector, AH or AX) to a BiosCall.
    """

    def __init__(
        self,
        memory: GuestMemory,
        current_vcpu: Callable[[], Any],
        on_exception: Callable[[str, str], None],
        acknowledge_irq: Callable[[int], int | None] | None = None,
    ) -> None:
        self.memory = memory
        self.current_vcpu = current_vcpu
        self.on_exception = on_exception
        # vector -> the ISA IRQ the PICs had in service there, acknowledged; None if none
        # (see pyvmm.arch.x86_64.pic.acknowledge_irq_vector). Without a PIC: no IRQs.
        self.acknowledge_irq = acknowledge_irq
        self.calls: dict[tuple[int, int | None], BiosCall] = {}
        self.uncounted = 0  # calls of kinds past MAX_KINDS

    def read(self, offset: int, size: int) -> int:
        return (1 << 8 * size) - 1  # nothing to read: all ones, as an empty ISA bus

    def write(self, offset: int, size: int, value: int) -> None:
        vcpu = self.current_vcpu()
        if vcpu is None:
            return
        regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
        vector = vector_of_stub(sregs.cs.selector, regs.rip & 0xFFFF)
        if vector is None or sregs.cr0 & CR0_PE:
            log.debug("write to port 0x%x not from pyvmm's stubs: ignored", NO_BIOS_PORT)
            return
        irq = self.acknowledge_irq(vector) if self.acknowledge_irq is not None else None
        if irq is not None:
            # A hardware interrupt, not an exception of the same vector: return to the
            # guest as a BIOS's default handler does, its EOI sent.
            cs, ip, _ = self._frame(regs, sregs)
            self._count_irq(vector, irq, f"{cs:04x}:{ip:04x}")
            return
        try:
            cs, ip, _ = self._frame(regs, sregs)
            return_linear = (cs << 4) + ip
            before = self.memory.read(max(0, return_linear - 6), min(6, return_linear))
        except GuestMemoryError as error:
            self.on_exception(
                f"guest raised {exception_name(vector)} with its stack outside RAM: {error}",
                format_registers(regs, sregs),
            )
            return
        size = software_entry_size(before, vector) or far_call_size(
            before,
            (layout.NO_BIOS_STUBS_SEGMENT, stub_offset(vector)),
            regs,
            {**_segment_bases(sregs), "cs": cs << 4},
            self._read_or_nothing,
        )
        if size:
            self._count(vector, regs.rax & 0xFFFF, f"{cs:04x}:{(ip - size) & 0xFFFF:04x}")
        else:
            self._exception(vector, regs, sregs, cs, ip)

    def _count(self, vector: int, ax: int, where: str) -> None:
        label, service = service_name(vector, ax)
        call = self.calls.get((vector, service))
        if call is None:
            if len(self.calls) >= MAX_KINDS:
                self.uncounted += 1
                return
            call = self.calls[(vector, service)] = BiosCall(label, vector, where)
            log.info("guest called %s at %s: %s, it returned at once", label, where, NO_BIOS)
        call.count += 1

    def _count_irq(self, vector: int, irq: int, where: str) -> None:
        call = self.calls.get((vector, -1 - irq))
        if call is None:
            if len(self.calls) >= MAX_KINDS:
                self.uncounted += 1
                return
            label = f"IRQ {irq} (vector 0x{vector:02x}), with no handler in the IVT,"
            call = self.calls[(vector, -1 - irq)] = IrqArrival(label, vector, where)
            log.info("IRQ %d arrived at vector 0x%02x with no handler (at %s)", irq, vector, where)
        call.count += 1

    def _exception(self, vector: int, regs: Any, sregs: Any, cs: int, ip: int) -> None:
        text = self._instruction_text((cs << 4) + ip)
        at = f"{cs:04x}:{ip:04x}" + (f" ('{text}')" if text else "")
        self.on_exception(
            f"guest raised {exception_name(vector)} at {at} with no handler for it in its "
            f"IVT: {NO_BIOS} (a BIOS's bare iret would run the instruction again, forever)",
            format_registers(*self._unwound(regs, sregs)),
        )

    def _frame(self, regs: Any, sregs: Any) -> tuple[int, int, int]:
        """(CS, IP, FLAGS) that the interrupt pushed at SS:SP (IP at the lowest address)."""
        sp = regs.rsp & 0xFFFF
        frame = b"".join(
            self.memory.read(sregs.ss.base + ((sp + index) & 0xFFFF), 2) for index in (0, 2, 4)
        )
        ip, cs, flags = struct.unpack("<HHH", frame)
        return cs, ip, flags

    def _read_or_nothing(self, linear: int, size: int) -> bytes:
        try:
            return self.memory.read(linear, size)
        except GuestMemoryError:
            return b""

    def _instruction_text(self, linear: int) -> str | None:
        from pyvmm.arch.x86_64.instruction import MAX_INSTRUCTION_SIZE, disassemble_one

        code = self._read_or_nothing(linear, MAX_INSTRUCTION_SIZE)
        instruction = disassemble_one(code, 16, linear) if code else None
        return instruction.text if instruction else None

    def _unwound(self, regs: Any, sregs: Any) -> tuple[Any, Any]:
        """Copies of the registers as they were when the exception came: the frame popped."""
        from pyvmm._kvm import ffi

        cs, ip, flags = self._frame(regs, sregs)
        regs_copy = ffi.new("struct kvm_regs *", regs[0])
        sregs_copy = ffi.new("struct kvm_sregs *", sregs[0])
        regs_copy.rip, regs_copy.rflags = ip, flags
        regs_copy.rsp = (regs.rsp & ~0xFFFF) | ((regs.rsp + 6) & 0xFFFF)
        sregs_copy.cs.selector, sregs_copy.cs.base = cs, cs << 4
        return regs_copy, sregs_copy


def _segment_bases(sregs: Any) -> dict[str, int]:
    return {name: int(getattr(sregs, name).base) for name in ("ds", "es", "ss", "fs", "gs")}
