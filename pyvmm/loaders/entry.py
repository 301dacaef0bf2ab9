"""What a loader tells the VMM: where to start and in which CPU state."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from pyvmm.memory.addr import GuestPhysAddr


class CpuMode(enum.Enum):
    """The CPU state the guest is entered in (the four states of kvm-hello-world)."""

    REAL = "real"  # 16-bit real mode, like a BIOS jumping to a boot sector
    PROTECTED = "protected"  # 32-bit protected mode, flat segments, paging off
    PAGED = "paged"  # 32-bit protected mode with paging (4 MiB pages)
    LONG = "long"  # 64-bit long mode, identity-mapped low 4 GiB
    USER = "user"  # long mode entered at CPL3 with IOPL=3: hot loops run unprivileged

    @property
    def is_64bit(self) -> bool:
        return self in (CpuMode.LONG, CpuMode.USER)


class ImageSegment(NamedTuple):
    """One guest-physical range a loader writes: [start, end), and its name in messages.

    The name says where the range comes from in the image's own terms:
    "image" (a flat binary), "segment 1" (an ELF program header, numbered as
    `readelf -l` does), "kernel segment 0" (a multiboot kernel).
    """

    start: int
    end: int
    name: str


@dataclass(frozen=True)
class EntryPoint:
    """The result of loading an image: the loader describes, the arch code executes.

    `entry` is the first instruction's address (an offset within CS=0 in real
    mode; a linear address otherwise, identity-mapped by the VMM).
    `image_start`/`image_end` bound what the loader wrote (guest-physical);
    `segments` are the pieces themselves, which may lie far apart (an ELF
    segment of headers at 0 and the kernel at 1 MiB): what lies between them
    is not the image's.
    """

    entry: GuestPhysAddr
    mode: CpuMode
    protocol: str  # "flat", "elf32", "elf64", "multiboot"
    image_start: GuestPhysAddr
    image_end: GuestPhysAddr
    # General registers the boot protocol defines at entry, e.g. multiboot's
    # (("rax", 0x2BADB002), ("rbx", info_gpa)); everything else starts at zero.
    registers: tuple[tuple[str, int], ...] = ()
    segments: tuple[ImageSegment, ...] = ()
