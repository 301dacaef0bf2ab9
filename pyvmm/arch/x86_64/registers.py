"""Control-register and MSR bits the entry states use (Intel SDM vol. 3A, 2.5)."""

from __future__ import annotations

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
