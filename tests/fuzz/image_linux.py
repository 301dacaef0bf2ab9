"""Synthetic Linux kernels: a bzImage's setup header and a vmlinux's ELF notes, built with struct.

Documentation/arch/x86/boot.rst ("The Real-Mode Kernel Header", "Details of
Header Fields") for the bzImage; the System V ABI's note layout and
include/linux/build-salt.h (a note named "Linux", type 0x100) for the
vmlinux. The offsets are written out here, not imported from pyvmm, so that
the unit tests and the image fuzzer's oracle read the formats independently
of the loader.
"""

from __future__ import annotations

import struct

from tests.fuzz.image_formats import PT_LOAD, PT_NOTE
from tests.fuzz.image_seeds import Seg, build_elf

MIB = 1 << 20

# boot.rst: (offset, width) of the setup header fields the builders and the oracle use.
BZ_FIELDS = {
    "setup_sects": (0x1F1, 1),
    "boot_flag": (0x1FE, 2),
    "jump": (0x200, 2),
    "header": (0x202, 4),
    "version": (0x206, 2),
    "type_of_loader": (0x210, 1),
    "loadflags": (0x211, 1),
    "code32_start": (0x214, 4),
    "ramdisk_image": (0x218, 4),
    "ramdisk_size": (0x21C, 4),
    "cmd_line_ptr": (0x228, 4),
    "initrd_addr_max": (0x22C, 4),
    "kernel_alignment": (0x230, 4),
    "relocatable_kernel": (0x234, 1),
    "xloadflags": (0x236, 2),
    "cmdline_size": (0x238, 4),
    "pref_address": (0x258, 8),
    "init_size": (0x260, 4),
}
# zero-page.rst: fields of struct boot_params outside the setup header.
ZP_EXT_RAMDISK_IMAGE, ZP_EXT_RAMDISK_SIZE, ZP_EXT_CMD_LINE_PTR = 0x0C0, 0x0C4, 0x0C8
ZP_E820_ENTRIES, ZP_E820_TABLE = 0x1E8, 0x2D0
E820_ENTRY = struct.Struct("<QQI")

LOADED_HIGH = 1
XLF_KERNEL_64 = 1
# The 64-bit entry: out 0xe9, 'L'; hlt; jmp back (startup_64 would be here).
ENTRY_CODE = bytes.fromhex("b04ce6e9f4ebfd")
VMLINUX_PADDR = 16 * MIB
VMLINUX_VADDR = 0xFFFF_FFFF_8100_0000


def put(image: bytearray, name: str, value: int) -> None:
    offset, width = BZ_FIELDS[name]
    image[offset : offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


def get(data: bytes | bytearray, name: str, base: int = 0) -> int:
    offset, width = BZ_FIELDS[name]
    return int.from_bytes(data[base + offset : base + offset + width], "little")


def build_bzimage(
    *,
    version: int = 0x020F,
    xloadflags: int = XLF_KERNEL_64,
    loadflags: int = LOADED_HIGH,
    setup_sects: int = 1,
    header_end: int = 0x26C,
    pref_address: int = VMLINUX_PADDR,
    init_size: int = 2 * MIB,
    kernel_alignment: int = 2 * MIB,
    relocatable: bool = True,
    cmdline_size: int = 2047,
    initrd_addr_max: int = 0x7FFF_FFFF,
    kernel: bytes | None = None,
) -> bytes:
    """Setup sectors with a setup header, then the protected-mode kernel (entry at +0x200)."""
    setup = bytearray((setup_sects or 4) * 512 + 512)
    put(setup, "setup_sects", setup_sects)
    put(setup, "boot_flag", 0xAA55)
    setup[0x200] = 0xEB  # jmp short: its byte says where the header ends
    setup[0x201] = header_end - 0x202
    setup[0x202:0x206] = b"HdrS"
    put(setup, "version", version)
    put(setup, "loadflags", loadflags)
    put(setup, "code32_start", 0x10_0000)
    put(setup, "initrd_addr_max", initrd_addr_max)
    put(setup, "kernel_alignment", kernel_alignment)
    put(setup, "relocatable_kernel", int(relocatable))
    put(setup, "xloadflags", xloadflags)
    put(setup, "cmdline_size", cmdline_size)
    put(setup, "pref_address", pref_address)
    put(setup, "init_size", init_size)
    if kernel is None:
        kernel = bytes(0x200) + ENTRY_CODE.ljust(0x200, b"\x90")
    return bytes(setup) + kernel


def elf_note(name: bytes, note_type: int, desc: bytes) -> bytes:
    """One ELF note: namesz, descsz, type, then name and desc, each padded to 4 bytes."""
    named = name + b"\0"
    return (
        struct.pack("<III", len(named), len(desc), note_type)
        + named.ljust(-(-len(named) // 4) * 4, b"\0")
        + desc.ljust(-(-len(desc) // 4) * 4, b"\0")
    )


LINUX_NOTE = elf_note(b"Linux", 0x100, b"6.1.0-test\0")  # LINUX_ELFNOTE_BUILD_SALT
XEN_NOTE = elf_note(b"Xen", 18, struct.pack("<I", VMLINUX_PADDR))  # XEN_ELFNOTE_PHYS32_ENTRY


def build_vmlinux(
    *,
    notes: bytes = LINUX_NOTE,
    paddr: int = VMLINUX_PADDR,
    vaddr: int = VMLINUX_VADDR,
    bss: int = 0x1000,
    bits: int = 64,
    code: bytes = ENTRY_CODE,
) -> bytes:
    """An x86-64 ELF executable laid out as Linux's: text linked high, loaded at `paddr`,
    e_entry physical (phys_startup_64), and a PT_NOTE segment carrying `notes`."""
    if bits == 32:
        vaddr &= 0xFFFF_FFFF
    text = code.ljust(0x1000, b"\x90")
    segments = [Seg(paddr, text, memsz=len(text) + bss, vaddr=vaddr)]
    if notes:
        segments.append(Seg(0, notes, p_type=PT_NOTE))
    assert segments[0].p_type == PT_LOAD
    return build_elf(bits, segments, paddr)


# --- the image fuzzer's Linux seeds and the oracle's own reading --------------------------


def linux_seeds() -> dict[str, bytes]:
    """Sound kernels first (they load unmutated in 64 MiB), then one defect each."""
    small = {"init_size": 0x4_0000}
    good = build_bzimage(**small)
    return {
        "bzimage": good,
        "bzimage-2.12": build_bzimage(version=0x020C, header_end=0x268, **small),
        "bzimage-fixed-low": build_bzimage(pref_address=MIB, relocatable=False, **small),
        "bzimage-setup-sects-0": build_bzimage(setup_sects=0, **small),
        "vmlinux": build_vmlinux(paddr=MIB, vaddr=VMLINUX_VADDR - 15 * MIB),
        "vmlinux-xen-note": build_vmlinux(notes=XEN_NOTE, paddr=2 * MIB),
        "vmlinux-16m": build_vmlinux(),
        # Defects, named.
        "bzimage-2.11": build_bzimage(version=0x020B, **small),
        "bzimage-2.02": build_bzimage(version=0x0202, header_end=0x22C, **small),
        "bzimage-no-kernel-64": build_bzimage(xloadflags=0, **small),
        "bzimage-zimage": build_bzimage(loadflags=0, **small),
        "bzimage-header-truncated": good[:0x230],
        "bzimage-header-short": build_bzimage(header_end=0x240, **small),
        "bzimage-no-kernel": good[:0x300],
        "bzimage-init-size-huge": build_bzimage(init_size=0xFFFF_F000),
        "bzimage-fixed-high": build_bzimage(pref_address=64 * MIB, relocatable=False, **small),
        "vmlinux-on-firmware-tables": build_vmlinux(paddr=0xE_0000, vaddr=0xE_0000),
        "vmlinux-above-4g": build_vmlinux(paddr=1 << 32, vaddr=1 << 32),
    }


LINUX_SOUND_SEEDS = {
    "bzimage", "bzimage-2.12", "bzimage-fixed-low", "bzimage-setup-sects-0", "vmlinux",
    "vmlinux-xen-note", "vmlinux-16m",
}  # fmt: skip


def is_bzimage(image: bytes | bytearray) -> bool:
    return bytes(image[0x202:0x206]) == b"HdrS"


def bzimage_piece(image: bytes) -> tuple[int, int, int, list[int]]:
    """(file offset, file size, memory size, possible load addresses) of a bzImage's kernel."""
    sectors = get(image, "setup_sects") or 4
    offset = (sectors + 1) * 512
    filesz = len(image) - offset
    memsz = max(get(image, "init_size"), filesz)
    preferred = get(image, "pref_address") or MIB
    loads = [preferred]
    alignment = get(image, "kernel_alignment") or 4096
    if get(image, "relocatable_kernel") and alignment & (alignment - 1) == 0:
        loads.append(-(-MIB // alignment) * alignment)
    return offset, filesz, memsz, loads


def protocol_check_code() -> bytes:
    """64-bit code that checks the boot protocol's entry state, then reports on the ports.

    It reads what boot.rst promises at the 64-bit entry: RSI = the zero page
    ("HdrS" at +0x202), CS = __BOOT_CS 0x10 and DS = __BOOT_DS 0x18, the
    command line at cmd_line_ptr (starting "ok=1"), the initrd at
    ramdisk_image (starting "0707", as a newc cpio archive does). It writes
    "L" to COM1 and 0x2a to the debug-exit port (status 85) when all hold,
    else the number of the first check that failed (status 2N+1).
    """
    checks = [
        # mov eax, [rsi+0x202]; cmp eax, "HdrS"
        bytes.fromhex("8b8602020000") + b"\x3d" + b"HdrS",
        # mov eax, cs; cmp eax, 0x10
        bytes.fromhex("8cc883f810"),
        # mov eax, ds; cmp eax, 0x18
        bytes.fromhex("8cd883f818"),
        # mov eax, [rsi+0x228] (cmd_line_ptr); mov eax, [rax]; cmp eax, "ok=1"
        bytes.fromhex("8b86280200008b00") + b"\x3d" + b"ok=1",
        # mov eax, [rsi+0x218] (ramdisk_image); mov eax, [rax]; cmp eax, "0707"
        bytes.fromhex("8b86180200008b00") + b"\x3d" + b"0707",
    ]
    success = bytes.fromhex("66baf803b04ceeb02ae6f4f4ebfd")  # 'L' to COM1; out 0xf4
    failures = b"".join(bytes([0xB0, n + 1, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]) for n in range(5))
    code = b""
    # Each check jumps (jne rel32) to its own failure stub past the success path.
    lengths = [len(check) + 6 for check in checks]
    for index, check in enumerate(checks):
        after = sum(lengths[: index + 1])
        target = sum(lengths) + len(success) + 7 * index
        code += check + b"\x0f\x85" + (target - after).to_bytes(4, "little", signed=True)
    return code + success + failures
