"""Guest image loaders: read an image, detect its format, copy it into guest RAM.

A loader describes how to start the guest (an EntryPoint) and never touches
vCPU registers. Formats are detected by magic: a multiboot header in the first
8 KiB (checked first, as QEMU's -kernel does), then ELF, else a flat binary.
Nothing here knows the architecture's addresses; the caller passes defaults.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

from pyvmm.errors import ImageTooLarge, LoaderError
from pyvmm.loaders.elf import EI_CLASS, ELFCLASS32, ELFCLASS64, is_elf, load_elf
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.loaders.flat import format_size, load_flat
from pyvmm.loaders.multiboot import find_header, load_multiboot

if TYPE_CHECKING:  # only for hints: importing the loaders needs no compiled _kvm module
    from pyvmm.memory.guest_memory import GuestMemory

__all__ = [
    "MAX_IMAGE_SIZE",
    "CpuMode",
    "EntryPoint",
    "describe_format",
    "find_header",
    "is_elf",
    "load_elf",
    "load_flat",
    "load_image",
    "load_multiboot",
    "read_image",
]

# A sanity cap on image files, checked before reading so a huge file costs nothing.
MAX_IMAGE_SIZE = 4 << 30
_READ_CHUNK = 1 << 20


def _read_capped(image_file: BinaryIO, size: int) -> bytes:
    """At most MAX_IMAGE_SIZE + 1 bytes: the announced size, then chunks until EOF.

    read(n) allocates n bytes up front, so asking for the cap at once would cost
    4 GiB of address space for any image. A pipe or device announces size 0.
    """
    want = min(size, MAX_IMAGE_SIZE) + 1  # +1: see a file that grew, or a device
    parts: list[bytes] = []
    total = 0
    while True:
        part = image_file.read(want)
        parts.append(part)
        total += len(part)
        if len(part) < want or total > MAX_IMAGE_SIZE:  # a short read is the end of the file
            break
        want = min(_READ_CHUNK, MAX_IMAGE_SIZE + 1 - total)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_image(path: str) -> bytes:
    """The whole image file, or a one-line LoaderError saying why it cannot be used."""
    try:
        with open(path, "rb") as image_file:
            size = os.fstat(image_file.fileno()).st_size
            if size > MAX_IMAGE_SIZE:
                raise ImageTooLarge(
                    f"image {path!r} is {format_size(size)}, "
                    f"more than the {format_size(MAX_IMAGE_SIZE)} limit"
                )
            try:
                image = _read_capped(image_file, size)
            except MemoryError:  # a big image on a small host (or under ulimit -v): bad input
                known = f" ({format_size(size)})" if size else ""
                raise ImageTooLarge(
                    f"image {path!r}{known} does not fit in this host's memory"
                ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise LoaderError(f"cannot read image {path!r}: {reason}") from error
    except ValueError as error:  # e.g. an embedded NUL byte in the path
        raise LoaderError(f"cannot read image {path!r}: {error}") from error
    if len(image) > MAX_IMAGE_SIZE:
        raise ImageTooLarge(
            f"image {path!r} is larger than the {format_size(MAX_IMAGE_SIZE)} limit"
        )
    if not image:
        raise LoaderError(f"image {path!r} is empty")
    return image


def describe_format(image: bytes) -> str:
    """The format name for -v: ELF64, ELF32 or flat binary (ELF if the class byte is bad)."""
    if not is_elf(image):
        return "flat binary"
    elf_class = image[EI_CLASS] if len(image) > EI_CLASS else None
    return {ELFCLASS32: "ELF32", ELFCLASS64: "ELF64"}.get(elf_class, "ELF")


def load_image(
    image: bytes,
    memory: GuestMemory,
    *,
    mode: CpuMode | None,
    load_gpa: int | None,
    default_flat_gpa: Callable[[CpuMode], int],
    force_multiboot: bool = False,
    cmdline: str = "",
    modules: Sequence[tuple[str, bytes]] = (),
    reserved: Sequence[tuple[int, int, str]] = (),
    append: str | None = None,
) -> EntryPoint:
    """Load `image` by its format; `mode`/`load_gpa` None means the format's default.

    `cmdline` (the whole string, e.g. "<kernel path> <append>") and `modules`
    ((string, contents) pairs) go to a multiboot kernel; `force_multiboot`
    refuses any image without a multiboot header. `append` is what the user
    asked to append to the command line (--append), None when nothing: like
    `modules`, it is a LoaderError for an image that is not a multiboot kernel,
    which has no command line to receive it. `reserved` lists the (start, end,
    what) ranges the VMM writes for a 32-bit entry; a multiboot kernel, its
    modules and its information must stay clear of them.
    """
    if force_multiboot or find_header(image) is not None:
        if load_gpa is not None:
            raise LoaderError(
                "--load-addr applies to flat binaries only; "
                "a multiboot kernel is loaded where its header or ELF program headers say"
            )
        if mode is not None and mode is not CpuMode.PROTECTED:
            raise LoaderError(
                f"a multiboot kernel starts in 32-bit protected mode, not in {mode.value} mode"
            )
        return load_multiboot(image, memory, cmdline, modules, reserved=reserved)
    if modules:
        raise LoaderError(
            "modules (--initrd) need a multiboot kernel: "
            "the image has no multiboot header in its first 8 KiB"
        )
    if append:
        raise LoaderError(
            "a kernel command line (--append) needs a multiboot kernel: "
            "the image has no multiboot header in its first 8 KiB"
        )
    if is_elf(image):
        if load_gpa is not None:
            raise LoaderError(
                "--load-addr applies to flat binaries only; "
                "an ELF image is loaded at its own addresses"
            )
        return load_elf(image, memory, mode)
    flat_mode = CpuMode.REAL if mode is None else mode
    flat_gpa = default_flat_gpa(flat_mode) if load_gpa is None else load_gpa
    return load_flat(image, memory, flat_mode, flat_gpa)
