"""What a loader tells the VMM: where to start and in which CPU state."""

from __future__ import annotations

import enum

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


class ImageSegment(tuple[int, int, str]):
    """One guest-physical range a loader writes: [start, end), and its name in messages.

    The name says where the range comes from in the image's own terms:
    "image" (a flat binary), "segment 1" (an ELF program header, numbered as
    `readelf -l` does), "kernel segment 0" (a multiboot kernel). A tuple
    (start, end, name), as a (start, end, what) range is elsewhere.
    """

    # Not a NamedTuple, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ()

    def __new__(cls, start: int, end: int, name: str) -> ImageSegment:
        return tuple.__new__(cls, (start, end, name))

    @property
    def start(self) -> int:
        return self[0]

    @property
    def end(self) -> int:
        return self[1]

    @property
    def name(self) -> str:
        return self[2]


class EntryPoint:
    """The result of loading an image: the loader describes, the arch code executes.

    `entry` is the first instruction's address (an offset within CS=0 in real
    mode; a linear address otherwise, identity-mapped by the VMM).
    `image_start`/`image_end` bound what the loader wrote (guest-physical);
    `segments` are the pieces themselves, which may lie far apart (an ELF
    segment of headers at 0 and the kernel at 1 MiB): what lies between them
    is not the image's. Read-only once made.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("entry", "image_end", "image_start", "mode", "protocol", "registers", "segments")

    def __init__(
        self,
        entry: GuestPhysAddr,
        mode: CpuMode,
        protocol: str,
        image_start: GuestPhysAddr,
        image_end: GuestPhysAddr,
        registers: tuple[tuple[str, int], ...] = (),
        segments: tuple[ImageSegment, ...] = (),
    ) -> None:
        self.entry = entry
        self.mode = mode
        self.protocol = protocol  # "flat", "elf32", "elf64", "multiboot"
        self.image_start = image_start
        self.image_end = image_end
        # General registers the boot protocol defines at entry, e.g. multiboot's
        # (("rax", 0x2BADB002), ("rbx", info_gpa)); everything else starts at zero.
        self.registers = registers
        self.segments = segments
