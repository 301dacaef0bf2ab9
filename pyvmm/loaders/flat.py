"""Flat binaries: raw bytes copied to one guest-physical address and entered at its start.

Also home of the small checks every loader shares: does a range fit in guest RAM,
can the chosen CPU mode reach it, and is each piece clear of what the machine
writes itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyvmm.errors import ImageTooLarge, LoaderError
from pyvmm.loaders.entry import CpuMode, EntryPoint, ImageSegment
from pyvmm.memory.addr import GuestPhysAddr
from pyvmm.memory.size import format_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:  # only for hints: importing the loaders needs no compiled _kvm module
    from pyvmm.memory.guest_memory import GuestMemory

# Real mode addresses 1 MiB (segment << 4 + offset, ignoring the A20 wrap), and
# the VMM enters with CS=0, so IP (16 bits) is the entry's whole address.
REAL_MODE_LIMIT = 0x10_0000
REAL_MODE_MAX_ENTRY = 0xFFFF
# 32-bit protected mode (paged or not) reaches the low 4 GiB only.
PROTECTED_MODE_LIMIT = 1 << 32


# How to move a flat binary: the one format whose address the command line sets.
FLAT_FIX = "load it elsewhere with --load-addr"


class UnreachableImage(LoaderError):
    """The image lies where the chosen CPU mode cannot address it."""


class ReservedOverlap(LoaderError):
    """A piece of the image lies where the machine writes something of its own."""


def check_clear(
    segments: Sequence[ImageSegment], reserved: Sequence[tuple[int, int, str]], fix: str
) -> None:
    """Refuse the first segment that overlaps a (start, end, what) of `reserved`.

    The message names the segment, the structure and `fix`, the way to move
    the segment in the image's own format (its p_paddr, its load_addr, or
    --load-addr for a flat binary).
    """
    for start, end, name in segments:
        for reserved_start, reserved_end, what in reserved:
            if start < reserved_end and reserved_start < end:
                raise ReservedOverlap(
                    f"{name} at 0x{start:x}..0x{end:x} overlaps {what} at "
                    f"0x{reserved_start:x}..0x{reserved_end:x}; {fix}"
                )


def describe_ram_at(memory: GuestMemory, gpa: int) -> str:
    """Why a range starting at `gpa` cannot fit: where its RAM region ends, or the hole."""
    regions = memory.regions
    if not regions:
        return "the guest has no RAM"
    region = memory.find_region(gpa)
    if region is not None:
        return f"RAM ends at 0x{region.end:x}"
    if gpa >= regions[-1].end:
        return f"RAM ends at 0x{regions[-1].end:x}"
    following = next(r for r in regions if r.gpa > gpa)
    hole_start = max((r.end for r in regions if r.end <= gpa), default=0)
    return f"0x{gpa:x} lies in the hole 0x{hole_start:x}..0x{following.gpa:x}"


def check_reachable(mode: CpuMode, start: int, end: int, what: str) -> None:
    """Reject [start, end) when `mode` cannot address all of it (`what` names it)."""
    if mode is CpuMode.REAL and end > REAL_MODE_LIMIT:
        raise UnreachableImage(
            f"{what} at 0x{start:x}..0x{end:x} runs past 1 MiB (0x{REAL_MODE_LIMIT:x}), "
            "the real-mode limit"
        )
    if mode in (CpuMode.PROTECTED, CpuMode.PAGED) and end > PROTECTED_MODE_LIMIT:
        raise UnreachableImage(
            f"{what} at 0x{start:x}..0x{end:x} runs past 4 GiB, "
            f"beyond what 32-bit {mode.value} mode can address"
        )


def plan_flat(image: bytes, memory: GuestMemory, mode: CpuMode, load_gpa: int) -> ImageSegment:
    """Check that `image` can go to `load_gpa` and be entered there: the range it takes."""
    if not image:
        raise LoaderError("image is empty")
    if load_gpa < 0:
        raise LoaderError(f"load address {load_gpa} is negative")
    size = len(image)
    end = load_gpa + size
    if not memory.contains(load_gpa, size):
        raise ImageTooLarge(
            f"image of {format_size(size)} at 0x{load_gpa:x} does not fit in guest RAM "
            f"(needs 0x{load_gpa:x}..0x{end:x}, {describe_ram_at(memory, load_gpa)})"
        )
    check_reachable(mode, load_gpa, end, "image")
    if mode is CpuMode.REAL and load_gpa > REAL_MODE_MAX_ENTRY:
        raise UnreachableImage(
            f"real-mode entry 0x{load_gpa:x} is not reachable with CS=0 "
            f"(the load address must be at most 0x{REAL_MODE_MAX_ENTRY:x})"
        )
    return ImageSegment(load_gpa, end, "image")


def load_flat(
    image: bytes,
    memory: GuestMemory,
    mode: CpuMode,
    load_gpa: int,
    reserved: Sequence[tuple[int, int, str]] = (),
) -> EntryPoint:
    """Copy `image` to `load_gpa` and describe an entry at its first byte.

    `reserved`: (start, end, what) the image must stay clear of (ReservedOverlap).
    """
    segment = plan_flat(image, memory, mode, load_gpa)
    check_clear([segment], reserved, FLAT_FIX)
    memory.write(load_gpa, image)
    return EntryPoint(
        entry=GuestPhysAddr(load_gpa),
        mode=mode,
        protocol="flat",
        image_start=GuestPhysAddr(load_gpa),
        image_end=GuestPhysAddr(segment.end),
        segments=(segment,),
    )
