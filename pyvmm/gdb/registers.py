"""Register layouts gdb expects, and packing VMM register values into them.

gdb numbers registers in the order the target description lists them, and its
``g`` packet is every register in that order, each in target (little-endian)
byte order. So one `RegisterFile` is the single source of truth: the XML in
`target_xml.py` is rendered from it and `g`/`G`/`p`/`P` are packed with it,
and the two cannot drift apart.

The VMM hands over one flat dict named after the 64-bit state
(``{"rax": ..., "rip": ..., "eflags": ..., "cs": selector, "fs_base": ...,
"cr0": ..., "efer": ...}``). Each gdb register names its `source` key in that
dict: the 32-bit layouts show ``eax`` as the low half of ``rax``, and writing
``eax`` keeps the high half. Registers the VMM does not report (the x87 state,
today) read as zero and writes to them are dropped.

Why the x87 registers are listed at all: gdb rejects an
``org.gnu.gdb.i386.core`` feature that lacks st0-st7 and fctrl..fop
(``i386_validate_tdesc_p`` counts them among the core registers). ``fs_base``
and ``gs_base`` go in ``org.gnu.gdb.i386.segments``, where gdb looks for them,
and only in the 64-bit layout: with the i386 GNU/Linux OS ABI (the default of
a Linux-hosted gdb), gdb 13 reserves one register number too few for them and
aborts in ``tdesc_use_registers``. Checked against a real gdb 13.1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pyvmm.gdb import RegisterDataError, UnknownCpuMode

CpuMode = Literal["real", "protected", "long"]
CPU_MODES: tuple[CpuMode, ...] = ("real", "protected", "long")

FEATURE_CORE = "org.gnu.gdb.i386.core"
FEATURE_SEGMENTS = "org.gnu.gdb.i386.segments"
FEATURE_CONTROL = "org.pyvmm.x86.control"

# The register the session moves for `c ADDR` / `s ADDR`.
PC_SOURCE = "rip"


@dataclass(frozen=True)
class CpuView:
    """What the debugger should see of the vCPU: which register layout to use."""

    mode: CpuMode

    def __post_init__(self) -> None:
        if self.mode not in CPU_MODES:
            raise UnknownCpuMode(f"unknown CPU mode {self.mode!r}; expected one of {CPU_MODES}")


@dataclass(frozen=True)
class Register:
    """One gdb register: name, width in bytes, and the VMM dict key it shows.

    `type` and `group` are only for the target description (gdb's predefined
    types such as ``code_ptr`` make ``info registers`` print symbols).
    """

    name: str
    size: int
    source: str
    type: str = "int"
    group: str | None = None

    @property
    def mask(self) -> int:
        return (1 << (8 * self.size)) - 1


@dataclass(frozen=True)
class Feature:
    """A named group of registers, one ``<feature>`` element of target.xml."""

    name: str
    registers: tuple[Register, ...]


class RegisterFile:
    """An ordered register layout; a register's number is its index here."""

    def __init__(self, architecture: str, features: Iterable[Feature]) -> None:
        self.architecture = architecture
        self.features = tuple(features)
        self.registers = tuple(reg for feature in self.features for reg in feature.registers)
        self.size = sum(reg.size for reg in self.registers)
        self._numbers = {reg.name: number for number, reg in enumerate(self.registers)}
        if len(self._numbers) != len(self.registers):
            raise RegisterDataError(f"{architecture}: duplicate register names")

    def __len__(self) -> int:
        return len(self.registers)

    def number(self, name: str) -> int:
        """The gdb register number of `name` (KeyError if not in this layout)."""
        return self._numbers[name]

    def __repr__(self) -> str:
        return f"RegisterFile({self.architecture!r}, {len(self)} registers, {self.size} bytes)"


def _regs(names: str, size: int, type_: str = "int", group: str | None = None) -> list[Register]:
    return [Register(name, size, name, type_, group) for name in names.split()]


def _aliased(pairs: str, size: int, type_: str = "int") -> list[Register]:
    """Registers shown under another name, e.g. "eax:rax" shows rax as eax."""
    out = []
    for pair in pairs.split():
        name, source = pair.split(":")
        out.append(Register(name, size, source, type_))
    return out


def _x87() -> list[Register]:
    return [
        *_regs("st0 st1 st2 st3 st4 st5 st6 st7", 10, "i387_ext"),
        *_regs("fctrl fstat ftag fiseg fioff foseg fooff fop", 4, "int", "float"),
    ]


_SELECTORS = "cs ss ds es fs gs"

_CONTROL = Feature(FEATURE_CONTROL, tuple(_regs("cr0 cr2 cr3 cr4 efer", 8, "int64", "system")))

X86_64 = RegisterFile(
    "i386:x86-64",
    [
        Feature(
            FEATURE_CORE,
            (
                *_regs("rax rbx rcx rdx rsi rdi", 8, "int64"),
                *_regs("rbp rsp", 8, "data_ptr"),
                *_regs("r8 r9 r10 r11 r12 r13 r14 r15", 8, "int64"),
                Register("rip", 8, "rip", "code_ptr"),
                Register("eflags", 4, "eflags", "i386_eflags"),
                *_regs(_SELECTORS, 4, "int32"),
                *_x87(),
            ),
        ),
        Feature(FEATURE_SEGMENTS, tuple(_regs("fs_base gs_base", 8))),
        _CONTROL,
    ],
)

_I386_FEATURES = [
    Feature(
        FEATURE_CORE,
        (
            *_aliased("eax:rax ecx:rcx edx:rdx ebx:rbx", 4, "int32"),
            *_aliased("esp:rsp ebp:rbp", 4, "data_ptr"),
            *_aliased("esi:rsi edi:rdi", 4, "int32"),
            Register("eip", 4, "rip", "code_ptr"),
            Register("eflags", 4, "eflags", "i386_eflags"),
            *_regs(_SELECTORS, 4, "int32"),
            *_x87(),
        ),
    ),
    _CONTROL,
]

I386 = RegisterFile("i386", _I386_FEATURES)

# gdb debugs real mode as "i8086": same registers as i386, 16-bit disassembly.
# gdb does not add CS*16 to eip, so `x/i $pc` is right only when CS base is 0.
I8086 = RegisterFile("i8086", _I386_FEATURES)

_LAYOUTS: dict[str, RegisterFile] = {"long": X86_64, "protected": I386, "real": I8086}


def layout_for(view: CpuView) -> RegisterFile:
    """The layout gdb should use for the vCPU's current mode."""
    return _LAYOUTS[view.mode]


def register_value(values: Mapping[str, int], reg: Register) -> int:
    """The value gdb sees for `reg`: the low `size` bytes of its source, or 0."""
    return values.get(reg.source, 0) & reg.mask


def encode_register(reg: Register, value: int) -> bytes:
    """`value` as gdb expects it on the wire: `size` bytes, little-endian."""
    return (value & reg.mask).to_bytes(reg.size, "little")


def decode_register(reg: Register, data: bytes) -> int:
    """Inverse of `encode_register`; `data` must be exactly `reg.size` bytes."""
    if len(data) != reg.size:
        raise RegisterDataError(f"{reg.name} takes {reg.size} bytes, got {len(data)}")
    return int.from_bytes(data, "little")


def merge_register(reg: Register, source_value: int, value: int) -> int:
    """The new source value after gdb writes `value` to `reg`.

    Only the bytes `reg` covers change: writing eax keeps rax's high half.
    """
    return (source_value & ~reg.mask) | (value & reg.mask)


def pack_registers(values: Mapping[str, int], layout: RegisterFile) -> bytes:
    """Every register of `layout`, in order: the body of a ``g`` reply."""
    return b"".join(encode_register(reg, register_value(values, reg)) for reg in layout.registers)


def unpack_registers(data: bytes, layout: RegisterFile) -> dict[str, int]:
    """A ``G`` body -> {gdb register name: value}; `data` must cover the layout."""
    if len(data) != layout.size:
        raise RegisterDataError(
            f"{layout.architecture} registers take {layout.size} bytes, got {len(data)}"
        )
    values = {}
    offset = 0
    for reg in layout.registers:
        values[reg.name] = int.from_bytes(data[offset : offset + reg.size], "little")
        offset += reg.size
    return values
