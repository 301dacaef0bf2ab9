"""Guest image loaders: read an image, detect its format, copy it into guest RAM.

A loader describes how to start the guest (an EntryPoint) and never touches
vCPU registers. Formats are detected by magic: a multiboot header in the first
8 KiB (checked first, as QEMU's -kernel does), then a Linux kernel (a bzImage's
setup header, or an ELF64 vmlinux by its notes: loaders/linux.py), then ELF,
else a flat binary; `image_format` insists on one format instead.
Nothing here knows the architecture's addresses; the caller passes defaults.
"""

from __future__ import annotations

import errno
import os
import stat

from pyvmm.errors import ImageTooLarge, LoaderError
from pyvmm.loaders.entry import CpuMode, EntryPoint, ImageSegment
from pyvmm.loaders.flat import FLAT_FIX, load_flat, plan_flat
from pyvmm.loaders.magic import EI_CLASS, ELFCLASS32, ELFCLASS64, MULTIBOOT_SEARCH, is_elf
from pyvmm.loaders.magic import may_be_multiboot as _may_be_multiboot
from pyvmm.memory.size import format_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:  # only for hints: importing the loaders needs no compiled _kvm module
    from collections.abc import Callable, Sequence
    from typing import BinaryIO

    from pyvmm.loaders.elf import load_elf as load_elf
    from pyvmm.loaders.multiboot import MultibootHeader
    from pyvmm.loaders.multiboot import find_header as find_header
    from pyvmm.loaders.multiboot import load_multiboot as load_multiboot
    from pyvmm.memory.guest_memory import GuestMemory

__all__ = [
    "MAX_IMAGE_SIZE",
    "CpuMode",
    "EntryPoint",
    "ImagePlan",
    "ImageSegment",
    "copied_whole",
    "describe_format",
    "find_header",
    "is_elf",
    "load_elf",
    "load_flat",
    "load_image",
    "load_multiboot",
    "plan_image",
    "read_image",
]

# Names of the ELF and multiboot loaders, imported on first use (PEP 562): a flat
# binary needs neither (see loaders/magic.py).
_LAZY = {
    "find_header": "pyvmm.loaders.multiboot",
    "load_elf": "pyvmm.loaders.elf",
    "load_multiboot": "pyvmm.loaders.multiboot",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _multiboot_header(image: bytes) -> MultibootHeader | None:
    """`multiboot.find_header(image)`, with the multiboot loader imported only if needed."""
    if not _may_be_multiboot(image):
        return None
    from pyvmm.loaders.multiboot import find_header

    return find_header(image)


# A sanity cap on image files, checked before reading so a huge file costs nothing.
MAX_IMAGE_SIZE = 4 << 30
_READ_CHUNK = 1 << 20

# What a path names when it is no regular file (stat(2), the S_IFMT bits), in a message.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def read_image(path: str, ram_size: int | None = None, *, what: str = "image") -> bytes:
    """The whole file at `path`: a guest image, or (`what="module"`) a multiboot module.

    Everything that can be judged without reading the file is judged first,
    each with a one-line LoaderError that names the file as `what`:

    - `path` must be a regular file: a directory, a device, a pipe (FIFO) or
      a socket is refused after stat(2), before any open(2) that could block
      (opening a FIFO waits for a writer) or read forever (/dev/zero). A
      missing file whose sources and Makefile lie beside it (here or among
      the files pyvmm ships) is named as not built, with the make command.
    - at most MAX_IMAGE_SIZE bytes (ImageTooLarge);
    - with `ram_size` (guest RAM in bytes): a file the loader copies whole
      into guest RAM (a module; a flat binary, found by its first bytes not
      being ELF; an a.out-kludge multiboot kernel, see `copied_whole`) must
      not be larger than guest RAM (ImageTooLarge, with both sizes). An ELF
      file may be: only its PT_LOAD segments are copied.

    Raises LoaderError for a file that cannot be read or is empty.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        raise _cannot_stat(path, what, error) from None
    except ValueError as error:  # e.g. an embedded NUL byte in the path
        raise LoaderError(f"cannot read {what} {path!r}: {error}") from error
    _refuse_unless_a_file(path, status.st_mode, what)
    _check_size(path, what, status.st_size, MAX_IMAGE_SIZE, None)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, the open does
        # not wait for a writer (the fstat below then refuses it).
        with open(path, "rb", opener=_open_nonblocking) as image_file:
            status = os.fstat(image_file.fileno())
            _refuse_unless_a_file(path, status.st_mode, what)
            size = status.st_size
            limit, whole = MAX_IMAGE_SIZE, None
            if ram_size is not None:
                whole = (
                    ("a module", 0)
                    if what == "module"
                    else copied_whole(os.pread(image_file.fileno(), MULTIBOOT_SEARCH, 0))
                )
                if whole is not None:
                    limit = min(limit, ram_size + whole[1])
            _check_size(path, what, size, limit, _ram_reason(ram_size, whole))
            try:
                image = _read_capped(image_file, size, limit)
            except MemoryError:  # a big image on a small host (or under ulimit -v): bad input
                known = f" ({format_size(size)})" if size else ""
                raise ImageTooLarge(
                    f"{what} {path!r}{known} does not fit in this host's memory"
                ) from None
    except OSError as error:
        raise LoaderError(f"cannot read {what} {path!r}: {error.strerror or error}") from error
    if len(image) > limit:  # it announced no size (procfs), or grew while it was read
        _check_size(path, what, None, limit, _ram_reason(ram_size, whole))
    if not image:
        raise LoaderError(f"{what} {path!r} is empty")
    return image


def copied_whole(head: bytes) -> tuple[str, int] | None:
    """Whether a file that starts with `head` (its first 8 KiB) is copied whole into RAM.

    Returns (what the file is, the number of bytes at its start that are
    not copied) when the loader copies the file from there to its end: a
    flat binary (any file that is not ELF), or a multiboot kernel whose
    a.out-kludge address fields load it to its end (Multiboot Specification
    0.6.96, 3.1.3: load_end_addr 0). None when only parts are copied (an ELF
    file's PT_LOAD segments, an a.out kludge that stops at load_end_addr),
    or when the multiboot header is unusable: the loader says why.
    """
    try:
        header = _multiboot_header(head)
    except LoaderError:
        return None
    if header is not None and header.addresses is not None:
        fields = header.addresses
        if fields.load_end_addr != 0:
            return None
        skipped = header.offset - (fields.header_addr - fields.load_addr)
        return "a multiboot kernel loaded by its a.out-kludge fields", max(0, skipped)
    if header is not None or is_elf(head):
        return None
    if head[0x202:0x206] == b"HdrS":  # a bzImage (loaders/linux.py): copied from its setup
        return "a Linux bzImage", 0  # sectors on, so no larger than RAM either
    return "a flat binary (a file that is not ELF)", 0


def _ram_reason(ram_size: int | None, whole: tuple[str, int] | None) -> tuple[int, str] | None:
    """(guest RAM, what is copied whole) when guest RAM is what limits the file, else None."""
    if ram_size is None or whole is None or ram_size + whole[1] >= MAX_IMAGE_SIZE:
        return None
    return ram_size, whole[0]


def _check_size(
    path: str, what: str, size: int | None, limit: int, ram: tuple[int, str] | None
) -> None:
    """ImageTooLarge when `size` (None: not known, but over `limit`) is over `limit`."""
    if size is not None and size <= limit:
        return
    if ram is not None:
        ram_size, copied = ram
        is_size = "is larger than" if size is None else f"is {format_size(size)}, larger than"
        raise ImageTooLarge(
            f"{what} {path!r} {is_size} the {format_size(ram_size)} of guest RAM: "
            f"{copied} is copied whole into RAM"
        )
    is_size = "is larger than" if size is None else f"is {format_size(size)}, more than"
    raise ImageTooLarge(f"{what} {path!r} {is_size} the {format_size(MAX_IMAGE_SIZE)} limit")


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


def file_kind(mode: int) -> str:
    """What a path whose stat(2) st_mode is `mode` names, for a message ("a directory")."""
    if stat.S_ISREG(mode):
        return "a file"
    return next((name for is_kind, name in _FILE_KINDS if is_kind(mode)), "no regular file")


def _refuse_unless_a_file(path: str, mode: int, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    message = f"{what} {path!r} is {file_kind(mode)}, not a file"
    if stat.S_ISFIFO(mode):  # `pyvmm boot <(gunzip -c kernel.gz)` passes a pipe
        message += ": save what it carries to a file (pyvmm checks a file's size before reading)"
    raise LoaderError(message)


def _cannot_stat(path: str, what: str, error: OSError) -> LoaderError:
    """The line for a path stat(2) could not follow; for a missing one, what it is."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOENT:
        try:
            target = os.readlink(path)
        except OSError:
            target = None
        if target is not None:
            return LoaderError(
                f"cannot read {what} {path!r}: it is a symbolic link to {target!r}, "
                "which does not exist"
            )
        from pyvmm.shipped import build_hint

        hint = build_hint(path)
        if hint is not None:
            return LoaderError(
                f"{what} {path!r} is not built: run `{hint.command}` "
                f"(its sources are in {hint.sources})"
            )
    return LoaderError(f"cannot read {what} {path!r}: {reason}")


def _read_capped(image_file: BinaryIO, size: int, limit: int) -> bytes:
    """At most `limit` + 1 bytes: the announced `size`, then chunks until EOF.

    read(n) allocates n bytes up front, so asking for the limit at once would
    cost 4 GiB of address space for any image. A file may announce size 0
    (procfs) or grow while it is read: the byte past the limit shows it.
    """
    want = min(size, limit) + 1
    parts: list[bytes] = []
    total = 0
    while True:
        part = image_file.read(want)
        parts.append(part)
        total += len(part)
        if len(part) < want or total > limit:  # a short read is the end of the file
            break
        want = min(_READ_CHUNK, limit + 1 - total)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def describe_format(image: bytes) -> str:
    """The format name for -v: Linux, ELF64, ELF32 or flat binary (ELF if the class is bad)."""
    if _is_linux(image):  # imports the Linux loader only for an image that may be a kernel
        from pyvmm.loaders.linux import describe_linux

        return describe_linux(image) or "Linux kernel"
    if not is_elf(image):
        return "flat binary"
    elf_class = image[EI_CLASS] if len(image) > EI_CLASS else None
    return {ELFCLASS32: "ELF32", ELFCLASS64: "ELF64"}.get(elf_class, "ELF")


class ImagePlan:
    """Where an image will go, found before anything is written (see `plan_image`).

    `segments` are the guest-physical ranges the loader will write, each
    named for messages; `fix` says how to move one in the image's own format
    (a flat binary's --load-addr, an ELF segment's p_paddr, a multiboot
    header's load_addr); `entry` is guest-physical. Read-only once made.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("entry", "fix", "mode", "protocol", "segments")

    def __init__(
        self, protocol: str, mode: CpuMode, entry: int, segments: tuple[ImageSegment, ...], fix: str
    ) -> None:
        self.protocol = protocol  # "flat", "elf32", "elf64", "multiboot", "linux"
        self.mode = mode
        self.entry = entry
        self.segments = segments
        self.fix = fix


def plan_image(
    image: bytes,
    memory: GuestMemory,
    *,
    mode: CpuMode | None,
    load_gpa: int | None,
    default_flat_gpa: Callable[[CpuMode], int],
    force_multiboot: bool = False,
    modules: Sequence[tuple[str, bytes]] = (),
    append: str | None = None,
    image_format: str | None = None,
) -> ImagePlan:
    """Check `image` and the options as `load_image` does, and say where it will go.

    Nothing is written: the caller can place what else it writes (pyvmm's GDT,
    stack and page tables) clear of the segments, then load. Raises the same
    LoaderError `load_image` would for the image itself; the modules and the
    command line are judged by `load_image` (a Linux kernel's, here too).
    `image_format` ("multiboot", "linux", "elf", "flat"; None: by its
    contents) insists on a format, for an image detection would misjudge.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r}")
    if force_multiboot:
        image_format = "multiboot"
    if image_format == "multiboot" or (
        image_format is None and _multiboot_header(image) is not None
    ):
        from pyvmm.loaders.multiboot import kernel_segments

        if load_gpa is not None:
            raise LoaderError(
                "--load-addr applies to flat binaries only; "
                "a multiboot kernel is loaded where its header or ELF program headers say"
            )
        if mode is not None and mode is not CpuMode.PROTECTED:
            raise LoaderError(
                f"a multiboot kernel starts in 32-bit protected mode, not in {mode.value} mode"
            )
        kernel, entry, fix = kernel_segments(image, memory)
        segments = tuple(segment.described("kernel segment") for segment in kernel)
        return ImagePlan("multiboot", CpuMode.PROTECTED, entry, segments, fix)
    if image_format == "linux" or (image_format is None and _is_linux(image)):
        return _plan_linux(image, memory, mode, load_gpa, modules, append)
    if modules:
        raise LoaderError(
            "modules (--initrd) need a multiboot or Linux kernel: the image has no "
            "multiboot header in its first 8 KiB and is no bzImage or vmlinux"
        )
    if append:
        raise LoaderError(
            "a kernel command line (--append) needs a multiboot or Linux kernel: the image "
            "has no multiboot header in its first 8 KiB and is no bzImage or vmlinux"
        )
    if image_format == "elf" and not is_elf(image):
        raise LoaderError("--format elf: the image is not ELF (it does not start with \\x7fELF)")
    if is_elf(image) and image_format != "flat":
        from pyvmm.loaders.elf import ELF_FIX, plan_elf

        if load_gpa is not None:
            raise LoaderError(
                "--load-addr applies to flat binaries only; "
                "an ELF image is loaded at its own addresses"
            )
        elf_mode, elf_segments, entry = plan_elf(image, memory, mode)
        protocol = "elf64" if elf_mode.is_64bit else "elf32"
        segments = tuple(segment.described() for segment in elf_segments)
        return ImagePlan(protocol, elf_mode, entry, segments, ELF_FIX)
    flat_mode = CpuMode.REAL if mode is None else mode
    flat_gpa = default_flat_gpa(flat_mode) if load_gpa is None else load_gpa
    segment = plan_flat(image, memory, flat_mode, flat_gpa)
    return ImagePlan("flat", flat_mode, flat_gpa, (segment,), FLAT_FIX)


# What `image_format` may insist on (None: found by the image's contents).
IMAGE_FORMATS = (None, "multiboot", "linux", "elf", "flat")


def boots_as_linux(
    image: bytes, image_format: str | None = None, force_multiboot: bool = False
) -> bool:
    """Whether `plan_image` would boot `image` through Linux's boot protocol (loaders/linux.py)."""
    if force_multiboot or image_format not in (None, "linux"):
        return False
    if image_format == "linux":
        return True
    return _multiboot_header(image) is None and _is_linux(image)


def _is_linux(image: bytes) -> bool:
    """A bzImage or a vmlinux (loaders/linux.py), imported only for an image that may be one."""
    if image[0x202:0x206] != b"HdrS" and not is_elf(image):
        return False
    from pyvmm.loaders.linux import is_linux

    return is_linux(image)


def _plan_linux(
    image: bytes,
    memory: GuestMemory,
    mode: CpuMode | None,
    load_gpa: int | None,
    modules: Sequence[tuple[str, bytes]],
    append: str | None,
) -> ImagePlan:
    from pyvmm.loaders.linux import LINUX_FIX, initrd_of, plan_linux

    if load_gpa is not None:
        raise LoaderError(
            "--load-addr applies to flat binaries only; a Linux kernel is loaded where its "
            "setup header (pref_address) or its program headers say"
        )
    if mode is not None and mode is not CpuMode.LONG:
        raise LoaderError(
            f"a Linux kernel is entered through its 64-bit entry, in long mode, "
            f"not in {mode.value} mode"
        )
    plan = plan_linux(image, memory, append or "", initrd_of(modules))
    return ImagePlan("linux", CpuMode.LONG, plan.entry, plan.segments, LINUX_FIX)


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
    image_format: str | None = None,
) -> EntryPoint:
    """Load `image` by its format; `mode`/`load_gpa` None means the format's default.

    `cmdline` (the whole string, e.g. "<kernel path> <append>") and `modules`
    ((string, contents) pairs) go to a multiboot kernel; `force_multiboot`
    refuses any image without a multiboot header. `append` is what the user
    asked to append to the command line (--append), None when nothing: like
    `modules`, it is a LoaderError for an image that is not a multiboot kernel,
    which has no command line to receive it. `reserved` lists the (start,
    end, what) ranges the machine writes itself (pyvmm's entry-state
    structures where they were placed, firmware tables): each segment of
    the image must stay clear of them (ReservedOverlap names the segment,
    the range and how to move the segment in that format), and a multiboot
    kernel's modules and information are placed clear of them.
    A Linux kernel (loaders/linux.py) gets `append` as its whole command
    line, as `qemu -kernel` passes -append, and the one module as its
    initrd; `image_format` is `plan_image`'s.
    """
    plan = plan_image(
        image,
        memory,
        mode=mode,
        load_gpa=load_gpa,
        default_flat_gpa=default_flat_gpa,
        force_multiboot=force_multiboot,
        modules=modules,
        append=append,
        image_format=image_format,
    )
    if plan.protocol == "linux":
        from pyvmm.loaders.linux import initrd_of, load_linux

        return load_linux(image, memory, append or "", initrd_of(modules), reserved=reserved)
    if plan.protocol == "multiboot":
        from pyvmm.loaders.multiboot import load_multiboot

        return load_multiboot(image, memory, cmdline, modules, reserved=reserved)
    if plan.protocol != "flat":
        from pyvmm.loaders.elf import load_elf

        return load_elf(image, memory, plan.mode, reserved=reserved)
    return load_flat(image, memory, plan.mode, plan.entry, reserved=reserved)
