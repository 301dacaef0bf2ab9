"""The image fuzzer's seed corpus: the committed guests, then synthetic images.

The synthetic ELF, multiboot and flat images are built here, most with one
structural defect named in the seed's name; the builders also serve tests that
need a malformed image of their own.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.fuzz.image_formats import (
    ELF_HEADER,
    ELF_PHDR,
    EM_386,
    EM_X86_64,
    ET_DYN,
    ET_EXEC,
    MB_AOUT_KLUDGE,
    MB_MAGIC,
    MB_MEMORY_INFO,
    MB_PAGE_ALIGN,
    MB_SEARCH,
    PT_LOAD,
    PT_NOTE,
)

GUESTS = Path(__file__).resolve().parents[2] / "guests"
COMMITTED_GUESTS = {
    "elf32.elf": "elf32",
    "elf64.elf": "elf64",
    "multiboot.elf": "multiboot",
    "hello.bin": "flat",
}
FAMILIES = ("flat", "elf32", "elf64", "multiboot", "linux")

MIB = 1 << 20
GIB = 1 << 30

# --- image builders -----------------------------------------------------------------

KERNEL_GPA = 0x10_0000
DATA_GPA = 0x10_1000
CODE = bytes.fromhex("b041e6e9f4ebfd").ljust(64, b"\x90")  # out 0xe9, 'A'; hlt; jmp $-1
DATA = bytes(range(256)) * 2


@dataclass(frozen=True)
class Seg:
    """One program header; None fields follow the data (offset: where it lands in the file)."""

    paddr: int
    data: bytes = b""
    memsz: int | None = None
    p_type: int = PT_LOAD
    offset: int | None = None
    filesz: int | None = None
    vaddr: int | None = None  # p_vaddr; None: the same as p_paddr


def build_elf(
    bits: int,
    segments: Sequence[Seg],
    entry: int,
    *,
    e_type: int = ET_EXEC,
    machine: int | None = None,
    phoff: int | None = None,
    phentsize: int | None = None,
    phnum: int | None = None,
) -> bytes:
    """Header, program headers, then each segment's data; overrides patch the header only."""
    header, phdr = ELF_HEADER[bits], ELF_PHDR[bits]
    data_offset = header.size + phdr.size * len(segments)
    body = bytearray()
    entries = []
    for seg in segments:
        offset = data_offset + len(body) if seg.offset is None else seg.offset
        body += seg.data
        filesz = len(seg.data) if seg.filesz is None else seg.filesz
        memsz = filesz if seg.memsz is None else seg.memsz
        vaddr = seg.paddr if seg.vaddr is None else seg.vaddr
        if bits == 64:
            fields = (seg.p_type, 5, offset, vaddr, seg.paddr, filesz, memsz, 0x1000)
        else:
            fields = (seg.p_type, offset, vaddr, seg.paddr, filesz, memsz, 5, 0x1000)
        entries.append(phdr.pack(*fields))
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    head = header.pack(
        ident,
        e_type,
        (EM_386 if bits == 32 else EM_X86_64) if machine is None else machine,
        1,
        entry,
        header.size if phoff is None else phoff,
        0,
        0,
        header.size,
        phdr.size if phentsize is None else phentsize,
        len(segments) if phnum is None else phnum,
        0,
        0,
        0,
    )
    return head + b"".join(entries) + bytes(body)


def multiboot_header(
    flags: int, addresses: Sequence[int] | None = None, checksum: int | None = None
) -> bytes:
    """Magic, flags, checksum (right unless given), then the address fields if any."""
    if checksum is None:
        checksum = -(MB_MAGIC + flags) & 0xFFFF_FFFF
    head = struct.pack("<III", MB_MAGIC, flags, checksum)
    if addresses is None:
        return head
    return head + struct.pack("<5I", *(value & 0xFFFF_FFFF for value in addresses))


def build_aout(
    *,
    load_addr: int = KERNEL_GPA,
    body: bytes = CODE + DATA,
    header_offset: int = 0,
    flags: int = MB_AOUT_KLUDGE | MB_MEMORY_INFO | MB_PAGE_ALIGN,
    header_addr: int | None = None,
    load_end_addr: int = 0,
    bss_end_addr: int = 0,
    entry_addr: int | None = None,
    checksum: int | None = None,
) -> bytes:
    """A multiboot kernel with address fields (the a.out kludge): padding, header, body."""
    header_addr = load_addr + header_offset if header_addr is None else header_addr
    entry_addr = load_addr + header_offset + 32 if entry_addr is None else entry_addr
    fields = (header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr)
    return b"\x90" * header_offset + multiboot_header(flags, fields, checksum) + body


def build_multiboot_elf(bits: int, extra: Sequence[Seg] = (), **elf: int) -> bytes:
    """An ELF kernel whose first segment starts with a multiboot header (no address fields)."""
    head = multiboot_header(MB_MEMORY_INFO | MB_PAGE_ALIGN)
    segments = [Seg(KERNEL_GPA, head + CODE), Seg(DATA_GPA, DATA, memsz=0x2000), *extra]
    return build_elf(bits, segments, elf.pop("entry", KERNEL_GPA + len(head)), **elf)


# --- seed corpus --------------------------------------------------------------------


@dataclass(frozen=True)
class SeedImage:
    name: str
    family: str  # one of FAMILIES: what the image claims to be
    data: bytes

    @property
    def sound(self) -> bool:
        """A well-formed image (it loads as it is, given the RAM), not a defect."""
        from tests.fuzz.image_linux import LINUX_SOUND_SEEDS

        if self.family == "linux":
            return self.name.split("/", 1)[1] in LINUX_SOUND_SEEDS
        return self.name.startswith(("guests/", "flat/")) or self.name in SOUND_SEEDS


SOUND_SEEDS = {
    *(f"elf{bits}/{name}" for bits in (32, 64) for name in
      ("good", "good-note-and-empty-load", "entry-in-bss", "many-segments", "outside-small-ram",
       "low-segment", "headers-at-0", "trampoline-8000", "over-vmm-defaults", "higher-half")),
    *(f"multiboot/{name}" for name in
      ("aout", "aout-bss", "aout-header-offset", "elf32", "elf64", "elf-with-address-fields",
       "aout-low", "aout-on-boot-stack", "elf32-trampoline", "elf32-headers-at-0",
       "elf32-higher-half")),
}  # fmt: skip

# Where a higher-half kernel is linked: p_vaddr - p_paddr.
HIGHER_HALF = {32: 0xC000_0000, 64: 0xFFFF_FFFF_8000_0000}


def headers_segment(bits: int, count: int) -> Seg:
    """A PT_LOAD at 0 holding the file's own ELF and `count` program headers."""
    size = ELF_HEADER[bits].size + ELF_PHDR[bits].size * count
    return Seg(0, offset=0, filesz=size)


def _elf_seeds(bits: int) -> dict[str, bytes]:
    good = [Seg(KERNEL_GPA, CODE), Seg(DATA_GPA, DATA, memsz=0x2000)]
    huge = 1 << 40 if bits == 64 else 0xFFFF_FFFF
    top = (1 << bits) - 1
    seeds = {
        "good": build_elf(bits, good, KERNEL_GPA),
        "good-note-and-empty-load": build_elf(
            bits, [Seg(0, b"NOTE", p_type=PT_NOTE), *good, Seg(0x18_0000)], KERNEL_GPA
        ),
        "entry-in-bss": build_elf(bits, good, DATA_GPA + 0x1800),
        "many-segments": build_elf(
            bits, [Seg(KERNEL_GPA + index * 0x100, CODE[:16]) for index in range(200)], KERNEL_GPA
        ),
        "low-segment": build_elf(bits, [Seg(0x1000, CODE)], 0x1000),
        "headers-at-0": build_elf(bits, [headers_segment(bits, 3), *good], KERNEL_GPA),
        "trampoline-8000": build_elf(bits, [Seg(0x8000, CODE[:16]), *good], KERNEL_GPA),
        # Over the default GDT, page tables and boot stack: pyvmm moves them.
        "over-vmm-defaults": build_elf(bits, [Seg(0x400, CODE, memsz=0x8_0000 - 0x400)], 0x400),
        "higher-half": build_elf(
            bits,
            [Seg(KERNEL_GPA, CODE, vaddr=KERNEL_GPA + HIGHER_HALF[bits]), good[1]],
            KERNEL_GPA + HIGHER_HALF[bits],
        ),
        "higher-half-entry-outside": build_elf(
            bits,
            [Seg(KERNEL_GPA, CODE, vaddr=KERNEL_GPA + HIGHER_HALF[bits]), good[1]],
            KERNEL_GPA + HIGHER_HALF[bits] + 0x1000,
        ),
        "on-firmware-tables": build_elf(bits, [Seg(0xE_1000, CODE)], 0xE_1000),
        # No free conventional memory left for pyvmm's GDT and boot stack.
        "fills-low-memory": build_elf(bits, [Seg(0, CODE, memsz=0x9_FC00)], 0),
        "overlap": build_elf(bits, [Seg(KERNEL_GPA, CODE, memsz=0x2000), good[1]], KERNEL_GPA),
        "overlap-same-start": build_elf(bits, [good[0], Seg(KERNEL_GPA, DATA)], KERNEL_GPA),
        "outside-small-ram": build_elf(bits, [Seg(0x300_0000, CODE)], 0x300_0000),
        "outside-ram": build_elf(bits, [Seg(0xC000_0000, CODE)], 0xC000_0000),
        "in-mmio-hole": build_elf(bits, [Seg(0xE000_0000, CODE)], 0xE000_0000),
        "straddles-ram-end": build_elf(bits, [Seg(0x1F_FFF0, CODE)], 0x1F_FFF0),
        "huge-memsz": build_elf(bits, [good[0], Seg(DATA_GPA, DATA, memsz=huge)], KERNEL_GPA),
        "filesz-over-memsz": build_elf(bits, [Seg(KERNEL_GPA, CODE, memsz=16)], KERNEL_GPA),
        "offset-past-eof": build_elf(bits, [Seg(KERNEL_GPA, CODE, offset=0x10000)], KERNEL_GPA),
        "offset-max": build_elf(bits, [Seg(KERNEL_GPA, CODE, offset=top)], KERNEL_GPA),
        "entry-outside": build_elf(bits, good, 0x20_0000),
        "entry-at-segment-end": build_elf(bits, good, KERNEL_GPA + len(CODE)),
        "entry-in-gap": build_elf(bits, good, KERNEL_GPA + 0x800),
        "phnum-huge": build_elf(bits, good, KERNEL_GPA, phnum=0xFFFF),
        "phentsize-zero": build_elf(bits, good, KERNEL_GPA, phentsize=0),
        "phentsize-small": build_elf(bits, good, KERNEL_GPA, phentsize=16),
        "phentsize-plus-one": build_elf(bits, good, KERNEL_GPA, phentsize=ELF_PHDR[bits].size + 1),
        "phentsize-huge": build_elf(bits, good, KERNEL_GPA, phentsize=0xFFFF),
        "phoff-past-eof": build_elf(bits, good, KERNEL_GPA, phoff=0x10000),
        "phoff-max": build_elf(bits, good, KERNEL_GPA, phoff=top),
        "no-pt-load": build_elf(bits, [Seg(KERNEL_GPA, CODE, p_type=PT_NOTE)], KERNEL_GPA),
        "et-dyn": build_elf(bits, good, KERNEL_GPA, e_type=ET_DYN),
        "wrong-machine": build_elf(
            bits, good, KERNEL_GPA, machine=EM_X86_64 if bits == 32 else EM_386
        ),
        "ident-only": b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]),
    }
    if bits == 64:
        seeds["above-4g"] = build_elf(bits, [Seg(4 * GIB, CODE)], 4 * GIB)
        seeds["address-wrap"] = build_elf(bits, [Seg(top - 0xFFF, CODE, memsz=0x2000)], top - 0xFFF)
        seeds["memsz-2**63"] = build_elf(bits, [Seg(KERNEL_GPA, CODE, memsz=1 << 63)], KERNEL_GPA)
    return seeds


def _elf_with_address_fields() -> bytes:
    """An ELF32 file whose multiboot header has address fields: they win over the ELF headers."""
    header_offset = ELF_HEADER[32].size + ELF_PHDR[32].size  # the segment data starts here
    gpa = 0x18_0000  # not where the program header says
    fields = (gpa, gpa, 0, gpa + 0x1000, gpa + 32)
    data = multiboot_header(MB_AOUT_KLUDGE | MB_MEMORY_INFO, fields) + CODE
    image = build_elf(32, [Seg(KERNEL_GPA, data)], KERNEL_GPA)
    assert image[header_offset : header_offset + 4] == data[:4]
    return image


def _multiboot_higher_half() -> bytes:
    """A multiboot ELF32 kernel linked at 0xc0100000, loaded at 1 MiB, e_entry virtual."""
    head = multiboot_header(MB_MEMORY_INFO | MB_PAGE_ALIGN)
    vaddr = KERNEL_GPA + HIGHER_HALF[32]
    segments = [Seg(KERNEL_GPA, head + CODE, vaddr=vaddr), Seg(DATA_GPA, DATA, memsz=0x2000)]
    return build_elf(32, segments, vaddr + len(head))


def _multiboot_seeds() -> dict[str, bytes]:
    aout = MB_AOUT_KLUDGE | MB_MEMORY_INFO | MB_PAGE_ALIGN
    end = KERNEL_GPA + 32 + len(CODE + DATA)
    padded = b"\x90" * (MB_SEARCH + 64) + multiboot_header(aout, (KERNEL_GPA,) * 5) + CODE
    return {
        "aout": build_aout(),
        "aout-bss": build_aout(bss_end_addr=KERNEL_GPA + 0x10000),
        "aout-header-offset": build_aout(header_offset=0x100, load_end_addr=end + 0x100),
        "aout-bad-checksum": build_aout(checksum=0x1234_5678),
        "aout-load-above-header": build_aout(header_addr=KERNEL_GPA - 0x10),
        "aout-header-before-file": build_aout(header_addr=KERNEL_GPA + 0x800),
        "aout-load-end-below-load": build_aout(load_end_addr=KERNEL_GPA - 0x1000),
        "aout-load-end-past-eof": build_aout(load_end_addr=KERNEL_GPA + MIB),
        "aout-bss-below-load-end": build_aout(bss_end_addr=KERNEL_GPA + 0x10),
        "aout-bss-huge": build_aout(bss_end_addr=0xFFFF_FFFF),
        "aout-bss-fills-2m": build_aout(bss_end_addr=2 * MIB),
        "aout-entry-outside": build_aout(entry_addr=0x20_0000),
        "aout-header-runs-past-8k": build_aout(header_offset=MB_SEARCH - 16),
        "aout-header-beyond-8k": padded,
        "aout-fields-truncated": build_aout(body=b"")[:-8],
        "aout-unknown-required-flag": build_aout(flags=aout | 1 << 5),
        "aout-low": build_aout(load_addr=0x1000),
        "aout-on-boot-stack": build_aout(load_addr=0x7_0000),
        "aout-on-firmware-tables": build_aout(load_addr=0xE_0000),
        "aout-fills-low-memory": build_aout(load_addr=0x500, bss_end_addr=0x9_FC00),
        "aout-crosses-4g": build_aout(load_addr=0xFFFF_FF00),
        "no-address-fields-not-elf": multiboot_header(MB_MEMORY_INFO) + CODE,
        "elf32": build_multiboot_elf(32),
        "elf64": build_multiboot_elf(64),
        "elf64-above-4g": build_multiboot_elf(64, [Seg(4 * GIB, CODE)], entry=4 * GIB),
        "elf32-overlap": build_multiboot_elf(32, [Seg(DATA_GPA + 0x100, CODE)]),
        "elf32-huge-memsz": build_multiboot_elf(32, [Seg(0x20_0000, CODE, memsz=0xFFFF_F000)]),
        "elf32-entry-outside": build_multiboot_elf(32, entry=0x30_0000),
        "elf32-trampoline": build_multiboot_elf(32, [Seg(0x8000, CODE[:16])]),
        "elf32-headers-at-0": build_multiboot_elf(32, [headers_segment(32, 3)]),
        "elf32-higher-half": _multiboot_higher_half(),
        "elf-with-address-fields": _elf_with_address_fields(),
    }  # fmt: skip


def _flat_seeds() -> dict[str, bytes]:
    sector = bytearray(CODE.ljust(512, b"\0"))
    sector[510:512] = b"\x55\xaa"
    return {
        "one-byte": b"\xf4",
        "boot-sector": bytes(sector),
        "1m": bytes(MIB),
        "multiboot-magic-bad-checksum": CODE + struct.pack("<III", MB_MAGIC, 0, 0) + CODE,
        "elf-magic-not-at-start": b"\x90" + b"\x7fELF" + CODE,
    }


@cache
def seed_corpus() -> tuple[SeedImage, ...]:
    """The committed guests first, then the synthetic images (names say the defect)."""
    seeds = [
        SeedImage(f"guests/{name}", family, (GUESTS / name).read_bytes())
        for name, family in COMMITTED_GUESTS.items()
    ]
    for bits in (32, 64):
        seeds += [SeedImage(f"elf{bits}/{n}", f"elf{bits}", d) for n, d in _elf_seeds(bits).items()]
    seeds += [SeedImage(f"multiboot/{n}", "multiboot", d) for n, d in _multiboot_seeds().items()]
    seeds += [SeedImage(f"flat/{n}", "flat", d) for n, d in _flat_seeds().items()]
    from tests.fuzz.image_linux import linux_seeds  # it builds on this module's ELF builder

    seeds += [SeedImage(f"linux/{n}", "linux", d) for n, d in linux_seeds().items()]
    return tuple(seeds)
