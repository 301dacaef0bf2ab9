"""Linux kernels through the x86 boot protocol's 64-bit entry (Documentation/arch/x86/boot.rst).

Two kinds of image, both entered in 64-bit mode as boot.rst, "64-bit Boot
Protocol" says, with RSI pointing at the zero page (struct boot_params):

- a **bzImage**, found by the setup header's "HdrS" magic at 0x202
  ("The Real-Mode Kernel Header"). It must speak boot protocol 2.12 or later
  and set XLF_KERNEL_64 in xloadflags: the 64-bit entry point is then 0x200
  bytes into the protected-mode kernel, which is everything after the
  (setup_sects + 1) real-mode sectors ("Loading The Rest of The Kernel").
  It is copied to its pref_address (a relocatable kernel that does not fit
  there goes to the lowest kernel_alignment boundary above 1 MiB) and given
  init_size bytes from there, its decompression buffer.
- an uncompressed **vmlinux**: an x86-64 ELF executable that carries the
  notes Linux puts in every kernel (a PT_NOTE segment with a note named
  "Linux", e.g. LINUX_ELFNOTE_BUILD_SALT from include/linux/build-salt.h, or
  "Xen", the PVH and Xen notes of arch/x86/xen/xen-head.S). Its PT_LOAD
  segments go to their p_paddr as any ELF file's (loaders/elf.py), it is
  entered at e_entry (startup_64's physical address), and its zero page gets
  the setup header a bzImage of the same kernel would have carried
  (linux_header.vmlinux_header). Firecracker boots vmlinux the same way.

The zero page ("64-bit Boot Protocol": setup header copied from the image,
then the loader's fields), the command line (at most the header's
cmdline_size bytes, "Details of Header Fields") and the initrd (as high as
RAM allows below initrd_addr_max, clear of the kernel, "Details of Header
Fields", initrd_addr_max; QEMU places it the same way) are planned with the
kernel before anything is written. The e820 table is the memory map pyvmm
gives multiboot kernels (loaders/multiboot_info.py). The GDT (__BOOT_CS 0x10,
__BOOT_DS 0x18), the identity map and interrupts off are the CPU state
arch/x86_64/cpu.py sets for an EntryPoint of protocol "linux".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pyvmm.errors import BadEntryPoint, ImageTooLarge, LoaderError
from pyvmm.loaders import linux_header as hdr
from pyvmm.loaders.entry import CpuMode, EntryPoint, ImageSegment
from pyvmm.loaders.flat import check_clear, describe_ram_at
from pyvmm.loaders.magic import EI_CLASS, ELFCLASS64, is_elf
from pyvmm.memory.addr import PAGE_SIZE, GuestPhysAddr, align_down, align_up
from pyvmm.memory.size import format_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from pyvmm.memory.guest_memory import GuestMemory

# How to move a piece of a Linux kernel: pyvmm decides where the zero page, the
# command line and the initrd go; the kernel goes where its header or p_paddr says.
LINUX_FIX = (
    "link the kernel elsewhere (its pref_address or p_paddr): pyvmm places the zero page, "
    "command line and initrd itself"
)

# Where pyvmm puts the zero page and the command line when the kernel leaves the
# place free: Firecracker's choices (arch/x86_64/layout.rs, ZERO_PAGE_START and
# CMDLINE_START), in conventional memory, clear of pyvmm's own GDT, page tables
# (0x500, 0x1000..0x7000) and boot stack (0x70000..0x80000).
ZERO_PAGE_GPA = 0x7000
CMDLINE_GPA = 0x2_0000
LOW_MEMORY_END = 0x9_FC00  # conventional memory ends at the EBDA
HIGH_MEMORY_GPA = 0x10_0000
ADDRESS_LIMIT_32 = 1 << 32

# ELF, for telling a vmlinux (System V ABI, elf(5)): program header types and the
# note header (namesz, descsz, type), each part padded to 4 bytes.
PT_NOTE = 4
EM_X86_64 = 62
ELF64_HEADER = struct.Struct("<HHIQQQIHHHHHH")  # e_type .. e_shstrndx, at 16
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
NOTE_HEADER = struct.Struct("<III")
LINUX_NOTE_NAMES = (b"Linux", b"Xen")
MAX_NOTES_READ = 1 << 20  # a vmlinux's notes are a few hundred bytes


class BadBzImage(LoaderError):
    """A truncated or inconsistent bzImage setup header (boot.rst)."""


class BzImageTooOld(LoaderError):
    """A bzImage whose boot protocol has no 64-bit entry (older than 2.12)."""


class NoKernel64(LoaderError):
    """A bzImage without XLF_KERNEL_64: no 64-bit entry point to enter."""


class CommandLineTooLong(LoaderError):
    """--append is longer than the kernel's cmdline_size."""


class BadCommandLine(LoaderError):
    """--append holds what a C string cannot (a NUL, a non-UTF-8 argument)."""


class BadInitrd(LoaderError):
    """More than one initrd, or one with arguments."""


# --- telling the formats ---------------------------------------------------------------


def is_bzimage(image: bytes) -> bool:
    """Whether `image` carries a setup header: "HdrS" at 0x202 (boot.rst, protocol 2.00+)."""
    return image[0x202:0x206] == hdr.HDRS_MAGIC


def is_vmlinux(image: bytes) -> bool:
    """Whether `image` is an x86-64 ELF executable carrying Linux's notes.

    True when a PT_NOTE segment holds a note named "Linux" or "Xen" (see the
    module's docstring). Any ELF file that is malformed on the way is not a
    vmlinux: the ELF loader then says what is wrong with it.
    """
    if not is_elf(image) or len(image) < 16 + ELF64_HEADER.size or image[EI_CLASS] != ELFCLASS64:
        return False
    fields = ELF64_HEADER.unpack_from(image, 16)
    machine, phoff, phentsize, phnum = fields[1], fields[4], fields[8], fields[9]
    if machine != EM_X86_64 or phentsize < ELF64_PHDR.size:
        return False
    for index in range(phnum):
        start = phoff + index * phentsize
        if start + ELF64_PHDR.size > len(image):
            return False
        p_type, _flags, offset, _vaddr, _paddr, filesz, _memsz, _align = ELF64_PHDR.unpack_from(
            image, start
        )
        if p_type == PT_NOTE and note_names(image, offset, filesz) & set(LINUX_NOTE_NAMES):
            return True
    return False


def note_names(image: bytes, offset: int, size: int) -> set[bytes]:
    """The names of the ELF notes in image[offset:offset + size] (elf(5), "Notes")."""
    names: set[bytes] = set()
    end = min(offset + min(size, MAX_NOTES_READ), len(image))
    while offset + NOTE_HEADER.size <= end:
        namesz, descsz, _type = NOTE_HEADER.unpack_from(image, offset)
        name_start = offset + NOTE_HEADER.size
        if name_start + namesz > end:
            break
        names.add(image[name_start : name_start + namesz].rstrip(b"\0"))
        offset = name_start + align_up(namesz, 4) + align_up(descsz, 4)
    return names


def is_linux(image: bytes) -> bool:
    """A bzImage or a vmlinux: an image `plan_linux` boots through the boot protocol."""
    return is_bzimage(image) or is_vmlinux(image)


def describe_linux(image: bytes) -> str | None:
    """The format's name for -v ("Linux bzImage, boot protocol 2.15"), None if not Linux."""
    if is_bzimage(image):
        if len(image) < hdr.SETUP_FIELDS["version"][0] + 2:
            return "Linux bzImage"
        version = hdr.read_field(image, "version")
        return f"Linux bzImage, boot protocol {version >> 8}.{version & 0xFF:02d}"
    if is_vmlinux(image):
        return "Linux vmlinux (ELF64)"
    return None


# --- the plan ------------------------------------------------------------------------


class SetupHeader:
    """What pyvmm reads of a kernel's setup header (boot.rst, "Details of Header Fields").

    `data` is the header as the zero page receives it (file offsets 0x1f1 to
    its end). Read-only once made.
    """

    __slots__ = (
        "cmdline_size",
        "data",
        "init_size",
        "initrd_addr_max",
        "kernel_alignment",
        "pref_address",
        "relocatable",
        "version",
    )

    def __init__(self, data: bytes) -> None:
        page = bytes(hdr.SETUP_HEADER_OFFSET) + data
        self.data = data
        self.version = hdr.read_field(page, "version")
        self.cmdline_size = hdr.read_field(page, "cmdline_size")
        self.initrd_addr_max = hdr.read_field(page, "initrd_addr_max")
        self.kernel_alignment = hdr.read_field(page, "kernel_alignment")
        self.relocatable = bool(hdr.read_field(page, "relocatable_kernel"))
        self.pref_address = hdr.read_field(page, "pref_address")
        self.init_size = hdr.read_field(page, "init_size")


def parse_setup_header(image: bytes) -> tuple[SetupHeader, int]:
    """Check a bzImage's setup header for the 64-bit entry: the header, the kernel's file offset.

    boot.rst: the header ends at 0x202 + the byte at 0x201 ("64-bit Boot
    Protocol"), protocol 2.12 is the first with xloadflags, XLF_KERNEL_64
    says the 64-bit entry exists, and the protected-mode kernel follows
    (setup_sects + 1) sectors of real-mode code, setup_sects 0 meaning 4
    ("Loading The Rest of The Kernel").
    """
    size = len(image)
    if size < hdr.JUMP_OFFSET + 2:
        raise BadBzImage(f"truncated bzImage: the {size}-byte file ends inside its setup header")
    end = hdr.header_end(image)
    if end > size:
        raise BadBzImage(
            f"truncated bzImage: its setup header runs to 0x{end:x} (the jump at 0x200 says so), "
            f"past the end of the {size}-byte file"
        )
    version_end = sum(hdr.SETUP_FIELDS["version"])
    if end < version_end:
        raise BadBzImage(
            f"bzImage setup header ends at 0x{end:x} (the jump at 0x200), before its version field"
        )
    version = hdr.read_field(image, "version")
    if version < hdr.MIN_PROTOCOL:
        raise BzImageTooOld(
            f"bzImage speaks boot protocol {version >> 8}.{version & 0xFF:02d}: pyvmm needs "
            f"{hdr.PROTOCOL_NAMES} or later, the first with a 64-bit entry point (Linux 3.8+)"
        )
    if end < hdr.HEADER_END_2_12:
        raise BadBzImage(
            f"bzImage setup header ends at 0x{end:x} (the jump at 0x200), before the fields of "
            f"boot protocol {version >> 8}.{version & 0xFF:02d} (through 0x{hdr.HEADER_END_2_12:x})"
        )
    if not hdr.read_field(image, "xloadflags") & hdr.XLF_KERNEL_64:
        raise NoKernel64(
            "bzImage has no 64-bit entry point (XLF_KERNEL_64 is clear in xloadflags): "
            "it is a 32-bit kernel, which pyvmm does not boot"
        )
    if not hdr.read_field(image, "loadflags") & hdr.LOADED_HIGH:
        raise BadBzImage("the image is a zImage (LOADED_HIGH clear in loadflags), not a bzImage")
    sectors = hdr.read_field(image, "setup_sects") or hdr.DEFAULT_SETUP_SECTS
    kernel_offset = (sectors + 1) * hdr.SECTOR_SIZE
    if kernel_offset + hdr.ENTRY_64_OFFSET >= size:
        raise BadBzImage(
            f"truncated bzImage: the {size}-byte file ends before its 64-bit entry point "
            f"(0x{hdr.ENTRY_64_OFFSET:x} into the kernel after {sectors} setup "
            f"sector{'s' if sectors > 1 else ''}, at "
            f"file offset 0x{kernel_offset:x})"
        )
    return SetupHeader(image[hdr.SETUP_HEADER_OFFSET : end]), kernel_offset


class LinuxPlan:
    """Where everything of a Linux boot goes, checked; `load_linux` only writes it.

    `kernel` are (file offset, gpa, file size, memory size) pieces; `entry`
    is the 64-bit entry point; `segments` names every range written, the
    kernel's first. Read-only once made.
    """

    __slots__ = (
        "cmdline",
        "cmdline_gpa",
        "entry",
        "initrd",
        "initrd_gpa",
        "kernel",
        "load_gpa",
        "segments",
        "zero_page",
        "zero_page_gpa",
    )

    def __init__(
        self,
        entry: int,
        load_gpa: int,
        kernel: tuple[tuple[int, int, int, int], ...],
        zero_page_gpa: int,
        zero_page: bytes,
        cmdline_gpa: int,
        cmdline: bytes,
        initrd_gpa: int | None,
        initrd: bytes,
        segments: tuple[ImageSegment, ...],
    ) -> None:
        self.entry = entry
        self.load_gpa = load_gpa
        self.kernel = kernel
        self.zero_page_gpa = zero_page_gpa
        self.zero_page = zero_page
        self.cmdline_gpa = cmdline_gpa
        self.cmdline = cmdline
        self.initrd_gpa = initrd_gpa
        self.initrd = initrd
        self.segments = segments


def _command_line(append: str, limit: int) -> bytes:
    """--append as the C string the kernel reads, at most `limit` bytes before its NUL."""
    if "\0" in append:
        raise BadCommandLine(f"the kernel command line {append!r} contains a NUL character")
    try:
        data = append.encode("utf-8")
    except UnicodeEncodeError:
        raise BadCommandLine(
            f"the kernel command line {append!r} is not valid UTF-8 "
            "(an argument in another encoding?)"
        ) from None
    if len(data) > limit:
        raise CommandLineTooLong(
            f"the kernel command line (--append) is {len(data)} bytes, more than the "
            f"{limit} the kernel takes (cmdline_size in its setup header)"
        )
    return data + b"\0"


def _bzimage_kernel(
    image: bytes, memory: GuestMemory
) -> tuple[SetupHeader, int, tuple[int, int, int, int], int]:
    """The header, the load address, the kernel piece and the 64-bit entry of a bzImage.

    boot.rst, "Details of Header Fields": a relocatable kernel (2.05+) may
    go to any kernel_alignment boundary and prefers pref_address (2.10+); a
    kernel that is not relocatable runs at pref_address (or 0x100000 without
    one). It needs init_size bytes from there (2.10+), at least its file.
    """
    header, offset = parse_setup_header(image)
    file_size = len(image) - offset
    need = max(header.init_size, file_size)
    preferred = header.pref_address or HIGH_MEMORY_GPA
    candidates = [preferred]
    if header.relocatable:
        alignment = header.kernel_alignment if header.kernel_alignment > 0 else PAGE_SIZE
        if alignment & (alignment - 1) == 0 and alignment <= 1 << 30:
            lowest = align_up(HIGH_MEMORY_GPA, alignment)
            if lowest != preferred:
                candidates.append(lowest)
    for load_gpa in candidates:
        if load_gpa + need <= ADDRESS_LIMIT_32 and memory.contains(load_gpa, need):
            entry = load_gpa + hdr.ENTRY_64_OFFSET
            return header, load_gpa, (offset, load_gpa, file_size, need), entry
    where = " or ".join(f"0x{gpa:x}" for gpa in candidates)
    raise ImageTooLarge(
        f"the kernel needs {format_size(need)} from {where} (init_size 0x{header.init_size:x}, "
        f"{format_size(file_size)} in the file) below 4 GiB, and guest RAM cannot hold it there "
        f"({describe_ram_at(memory, preferred)}): give the guest more RAM (-m)"
    )


def _vmlinux_kernel(
    image: bytes, memory: GuestMemory
) -> tuple[SetupHeader, int, tuple[tuple[int, int, int, int], ...], int]:
    """The default header, the lowest p_paddr, the PT_LOAD pieces and e_entry of a vmlinux."""
    from pyvmm.loaders.elf import _ELF64, BadElf, parse_executable

    elf_class, segments, entry = parse_executable(image, memory)
    if elf_class is not _ELF64:
        raise BadElf("a vmlinux for the 64-bit boot protocol is ELF64, not ELF32")
    pieces = tuple((s.offset, s.paddr, s.filesz, s.memsz) for s in segments)
    start = min(piece[1] for piece in pieces)
    if max(piece[1] + piece[3] for piece in pieces) > ADDRESS_LIMIT_32 or entry >= ADDRESS_LIMIT_32:
        raise BadEntryPoint(
            "the vmlinux is linked above 4 GiB: pyvmm's identity map reaches the low 4 GiB only"
        )
    return SetupHeader(hdr.vmlinux_header()), start, pieces, entry


def _free_below(
    size: int,
    low: int,
    high: int,
    taken: Sequence[tuple[int, int]],
    preferred: int | None = None,
    top_down: bool = False,
) -> int | None:
    """A page-aligned gpa in [low, high) for `size` bytes clear of `taken`, or None."""

    def clear(gpa: int) -> bool:
        return all(gpa + size <= start or end <= gpa for start, end in taken)

    if preferred is not None and low <= preferred and preferred + size <= high and clear(preferred):
        return preferred
    if top_down:
        gpa = align_down(high - size, PAGE_SIZE)
        while gpa >= low:
            blockers = [start for start, end in taken if gpa < end and start < gpa + size]
            if not blockers:
                return gpa
            gpa = align_down(min(blockers) - size, PAGE_SIZE)
        return None
    gpa = align_up(low, PAGE_SIZE)
    while gpa + size <= high:
        blockers = [end for start, end in taken if gpa < end and start < gpa + size]
        if not blockers:
            return gpa
        gpa = align_up(max(blockers), PAGE_SIZE)
    return None


def plan_linux(
    image: bytes,
    memory: GuestMemory,
    append: str = "",
    initrd: bytes | None = None,
    reserved: Sequence[tuple[int, int, str]] = (),
) -> LinuxPlan:
    """Check a bzImage or vmlinux and decide where everything goes; nothing is written.

    `append` is the whole command line (as `qemu -kernel -append` passes it),
    `initrd` the initrd's contents (`qemu -initrd`), `reserved` the (start,
    end, what) ranges the machine writes itself: the initrd, zero page and
    command line stay clear of them. LoaderError (status 2) for a malformed
    image, a command line over cmdline_size, a kernel or initrd that does
    not fit.
    """
    from pyvmm.loaders.multiboot_info import memory_map, usable_ranges

    if is_bzimage(image):
        header, load_gpa, piece, entry = _bzimage_kernel(image, memory)
        pieces: tuple[tuple[int, int, int, int], ...] = (piece,)
        code32_start: int | None = load_gpa
        names = ["kernel"]
    else:
        header, load_gpa, pieces, entry = _vmlinux_kernel(image, memory)
        code32_start = None
        names = [f"kernel segment {index}" for index in range(len(pieces))]
    cmdline = _command_line(append, header.cmdline_size)

    ram = [(region.gpa, region.size) for region in memory.regions]
    taken = [(start, end) for start, end, _ in reserved]
    taken += [(gpa, gpa + memsz) for _offset, gpa, _filesz, memsz in pieces]
    zero_page_gpa = _free_below(hdr.ZERO_PAGE_SIZE, PAGE_SIZE, LOW_MEMORY_END, taken, ZERO_PAGE_GPA)
    if zero_page_gpa is None or not memory.contains(zero_page_gpa, hdr.ZERO_PAGE_SIZE):
        raise ImageTooLarge("no free page below 640 KiB for the zero page (struct boot_params)")
    taken.append((zero_page_gpa, zero_page_gpa + hdr.ZERO_PAGE_SIZE))
    cmdline_gpa = _free_below(len(cmdline), PAGE_SIZE, LOW_MEMORY_END, taken, CMDLINE_GPA)
    if cmdline_gpa is None or not memory.contains(cmdline_gpa, len(cmdline)):
        raise ImageTooLarge(
            f"no free RAM below 640 KiB for the {len(cmdline)}-byte kernel command line"
        )
    taken.append((cmdline_gpa, cmdline_gpa + len(cmdline)))

    initrd_gpa = None
    if initrd is not None:
        limit = min(header.initrd_addr_max + 1, ADDRESS_LIMIT_32)
        for low, high in reversed(usable_ranges(ram)):
            low, high = max(low, HIGH_MEMORY_GPA), min(high, limit)
            need = max(len(initrd), 1)  # an empty initrd still gets an address inside RAM
            if high - low >= need:
                initrd_gpa = _free_below(need, low, high, taken, top_down=True)
                if initrd_gpa is not None:
                    break
        if initrd_gpa is None:
            raise ImageTooLarge(
                f"the initrd ({format_size(len(initrd))}) does not fit in guest RAM between "
                f"1 MiB and initrd_addr_max 0x{header.initrd_addr_max:x} clear of the kernel "
                f"(0x{load_gpa:x}..0x{max(gpa + memsz for _, gpa, _, memsz in pieces):x}): "
                "give the guest more RAM (-m), or a smaller initrd"
            )

    e820 = [(entry.base, entry.length, entry.type) for entry in memory_map(ram)]
    zero_page = hdr.build_zero_page(
        header.data,
        cmdline_gpa=cmdline_gpa,
        initrd=None if initrd is None or initrd_gpa is None else (initrd_gpa, len(initrd)),
        e820=e820,
        code32_start=code32_start,
    )
    segments = [
        ImageSegment(gpa, gpa + memsz, name)
        for (_offset, gpa, _filesz, memsz), name in zip(pieces, names, strict=True)
    ]
    segments.append(ImageSegment(zero_page_gpa, zero_page_gpa + hdr.ZERO_PAGE_SIZE, "zero page"))
    segments.append(ImageSegment(cmdline_gpa, cmdline_gpa + len(cmdline), "command line"))
    if initrd is not None and initrd_gpa is not None:
        segments.append(ImageSegment(initrd_gpa, initrd_gpa + len(initrd), "initrd"))
    return LinuxPlan(
        entry=entry,
        load_gpa=load_gpa,
        kernel=pieces,
        zero_page_gpa=zero_page_gpa,
        zero_page=zero_page,
        cmdline_gpa=cmdline_gpa,
        cmdline=cmdline,
        initrd_gpa=initrd_gpa,
        initrd=initrd or b"",
        segments=tuple(segments),
    )


def command_line_limit(image: bytes) -> int:
    """The most command-line bytes the kernel takes: cmdline_size (a vmlinux: the default).

    Raises LoaderError for a bzImage whose setup header `plan_linux` would refuse.
    """
    if is_bzimage(image):
        return parse_setup_header(image)[0].cmdline_size
    return SetupHeader(hdr.vmlinux_header()).cmdline_size


def initrd_of(modules: Sequence[tuple[str, bytes]]) -> bytes | None:
    """The one initrd --initrd gave (as `qemu -initrd` for a Linux kernel), or None."""
    if not modules:
        return None
    if len(modules) > 1:
        raise BadInitrd(
            f"--initrd names {len(modules)} files: a Linux kernel takes one initrd "
            "(concatenate cpio archives into one file)"
        )
    string, data = modules[0]
    if len(string.split()) > 1:
        raise BadInitrd(
            f"--initrd {string!r}: an initrd takes no arguments (that is multiboot's module "
            "string); put kernel arguments in --append"
        )
    return data


def load_linux(
    image: bytes,
    memory: GuestMemory,
    append: str = "",
    initrd: bytes | None = None,
    reserved: Sequence[tuple[int, int, str]] = (),
) -> EntryPoint:
    """Write the kernel, the initrd, the command line and the zero page; describe the entry.

    The EntryPoint is 64-bit (CpuMode.LONG) with RSI = the zero page's
    address, protocol "linux" (boot.rst, "64-bit Boot Protocol").
    """
    plan = plan_linux(image, memory, append, initrd, reserved)
    check_clear(plan.segments, reserved, LINUX_FIX)
    from pyvmm.loaders.elf import _Segment, _write_segment

    for index, (offset, gpa, filesz, memsz) in enumerate(plan.kernel):
        _write_segment(image, memory, _Segment(index, offset, gpa, filesz, memsz))
    if plan.initrd_gpa is not None:
        memory.write(plan.initrd_gpa, plan.initrd)
    memory.write(plan.cmdline_gpa, plan.cmdline)
    memory.write(plan.zero_page_gpa, plan.zero_page)
    kernel = [segment for segment in plan.segments if segment.name.startswith("kernel")]
    return EntryPoint(
        entry=GuestPhysAddr(plan.entry),
        mode=CpuMode.LONG,
        protocol="linux",
        image_start=GuestPhysAddr(min(segment.start for segment in kernel)),
        image_end=GuestPhysAddr(max(segment.end for segment in kernel)),
        registers=(("rsi", plan.zero_page_gpa),),
        segments=plan.segments,
    )
