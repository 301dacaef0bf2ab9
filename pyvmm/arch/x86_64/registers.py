"""Control-register and MSR bits the entry states use (Intel SDM vol. 3A, 2.5),
and `Registers`, a plain snapshot of one vCPU's registers (register_snapshot.py).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from pyvmm.arch.x86_64.register_snapshot import Registers as Registers

CR0_PE = 1 << 0  # protection enable
CR0_MP = 1 << 1
CR0_ET = 1 << 4  # extension type: hard-wired to 1 on every CPU since the 486
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_PG = 1 << 31

CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12  # 5-level paging

EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

RFLAGS_RESERVED = 1 << 1  # bit 1 always reads as 1
RFLAGS_IF = 1 << 9
RFLAGS_IOPL3 = 3 << 12  # I/O privilege level 3: `in`/`out` allowed at CPL3


# `Registers` lives in register_snapshot.py, a dataclass imported on first use:
# `pyvmm boot` reads no snapshot, and needs only the bits above.
def __getattr__(name: str) -> object:
    if name == "Registers":
        from pyvmm.arch.x86_64.register_snapshot import Registers

        return Registers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
