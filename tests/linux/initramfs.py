"""A busybox initramfs for the Linux tests: /init says it is up, runs commands, powers off.

The busybox is Debian's `busybox-static` (one static binary, no libraries
needed); the archive is written by cpio.py, so /dev/console goes in without
root and the same inputs give the same bytes, cached under their hash.

What /init prints on the console, in order (the tests read these lines):

    pyvmm-initramfs: up                  once /proc, /sys and /dev are mounted
    pyvmm-initramfs: $ <command>         before each command the caller gave,
    <its output>                         its stdout and stderr,
    pyvmm-initramfs: exit <status>       and its exit status
    pyvmm-initramfs: power-off           then `poweroff -f`
    pyvmm-initramfs: shell               (or, when asked, a shell instead)

Right after the "up" line it writes the boot timer's byte: 123 to I/O port
0x3f0. Firecracker's boot timer uses the same port and value on x86 (its
resources/tests/init.c: `outb_p(123, 0x03f0)` after `iopl(3)`; newer versions
moved to MMIO at 0xd0000000), so a pyvmm boot timer on 0x3f0 reads
Firecracker's guests too. Port 0x3f0 is the primary floppy controller's first
register, which pyvmm does not have and neither test kernel probes. A shell
cannot write a port, and Debian's kernel has no /dev/port (CONFIG_DEVPORT is
off), so the write is a 169-byte static program written here,
/bin/pyvmm-boot-timer: ioperm(0x3f0, 1, 1), outb, exit (CONFIG_X86_IOPL_IOPERM,
on in both kernels).
"""

from __future__ import annotations

import gzip
import hashlib
import shlex
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.linux import debian
from tests.linux.cache import QUIET, Progress, cache_root, locked, write_atomic
from tests.linux.cpio import Entry, write_newc

MARKER = "pyvmm-initramfs"
UP_LINE = f"{MARKER}: up"
POWER_OFF_LINE = f"{MARKER}: power-off"
SHELL_LINE = f"{MARKER}: shell"
BOOT_TIMER_PORT = 0x3F0  # Firecracker's MAGIC_IOPORT_SIGNAL_GUEST_BOOT_COMPLETE
BOOT_TIMER_VALUE = 123  # Firecracker's MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE
BUSYBOX_PACKAGE = "busybox-static"
BOOT_TIMER_PATH = "/bin/pyvmm-boot-timer"
DEFAULT_COMMANDS = ("uname -r", "head -n 8 /proc/cpuinfo")
FORMAT_VERSION = 2  # bump when the layout of the archive changes

# Enough for /init and the default commands if `busybox --list-full` cannot
# run here (another architecture): the usual applets in their usual places.
FALLBACK_APPLETS = [
    "bin/sh",
    "bin/cat",
    "bin/dd",
    "bin/echo",
    "bin/ls",
    "bin/mkdir",
    "bin/mount",
    "bin/uname",
    "bin/dmesg",
    "bin/sleep",
    "bin/printf",
    "sbin/poweroff",
    "sbin/reboot",
    "usr/bin/head",
    "usr/bin/setsid",
    "bin/cttyhack",
]


# The boot timer's program, x86-64 machine code (Intel SDM vol. 2; Linux's
# x86-64 syscall ABI: number in eax, arguments in rdi, rsi, rdx).
SYS_IOPERM = 173
SYS_EXIT = 60
BOOT_TIMER_CODE = (
    b"\xb8"
    + SYS_IOPERM.to_bytes(4, "little")  # mov eax, SYS_ioperm
    + b"\xbf"
    + BOOT_TIMER_PORT.to_bytes(4, "little")  # mov edi, port (from)
    + b"\xbe\x01\x00\x00\x00"  # mov esi, 1 (num)
    + b"\xba\x01\x00\x00\x00"  # mov edx, 1 (turn_on)
    + b"\x0f\x05"  # syscall
    + b"\x85\xc0"  # test eax, eax
    + b"\x75\x0b"  # jnz refused (11 bytes on)
    + b"\x66\xba"
    + BOOT_TIMER_PORT.to_bytes(2, "little")  # mov dx, port
    + b"\xb0"
    + bytes([BOOT_TIMER_VALUE])  # mov al, value
    + b"\xee"  # out dx, al
    + b"\x31\xff"  # xor edi, edi (status 0)
    + b"\xeb\x05"  # jmp exit
    + b"\xbf\x01\x00\x00\x00"  # refused: mov edi, 1 (status 1)
    + b"\xb8"
    + SYS_EXIT.to_bytes(4, "little")  # exit: mov eax, SYS_exit
    + b"\x0f\x05"  # syscall
)
ELF_LOAD_ADDRESS = 0x400000


def boot_timer_program() -> bytes:
    """A static ELF64 executable: one PT_LOAD of the whole file, code after the headers."""
    code_offset = 64 + 56  # the ELF header, one program header
    size = code_offset + len(BOOT_TIMER_CODE)
    elf_header = (
        b"\x7fELF\x02\x01\x01\x00"
        + bytes(8)  # ELF64, little-endian, version 1, SysV
        + struct.pack(
            "<HHIQQQIHHHHHH",
            2,  # ET_EXEC
            62,  # EM_X86_64
            1,  # EV_CURRENT
            ELF_LOAD_ADDRESS + code_offset,  # e_entry
            64,  # e_phoff
            0,  # e_shoff: no sections
            0,  # e_flags
            64,  # e_ehsize
            56,  # e_phentsize
            1,  # e_phnum
            64,  # e_shentsize
            0,  # e_shnum
            0,  # e_shstrndx
        )
    )
    load = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # PF_R | PF_X
        0,  # p_offset
        ELF_LOAD_ADDRESS,  # p_vaddr
        ELF_LOAD_ADDRESS,  # p_paddr
        size,  # p_filesz
        size,  # p_memsz
        0x1000,  # p_align
    )
    return elf_header + load + BOOT_TIMER_CODE


def command_lines(command: str) -> str:
    return (
        f"echo {shlex.quote(f'{MARKER}: $ {command}')}\n"
        f"/bin/sh -c {shlex.quote(command)}\n"
        f'echo "{MARKER}: exit $?"\n'
    )


def init_script(commands: Sequence[str] = (), shell: bool = False) -> str:
    """The text of /init."""
    end = (
        f'echo "{SHELL_LINE}"\nexec setsid cttyhack /bin/sh\n'
        if shell
        else f'echo "{POWER_OFF_LINE}"\npoweroff -f\necho "{MARKER}: poweroff -f failed"\n'
    )
    return (
        "#!/bin/sh\n"
        "# /init of pyvmm's test initramfs, written by tests/linux/initramfs.py.\n"
        "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n"
        "mount -t proc proc /proc\n"
        "mount -t sysfs sysfs /sys\n"
        "mount -t devtmpfs devtmpfs /dev\n"
        f'echo "{UP_LINE}"\n'
        f"# The boot timer: {BOOT_TIMER_VALUE} to port {BOOT_TIMER_PORT:#x}, as Firecracker's.\n"
        f'{BOOT_TIMER_PATH} || echo "{MARKER}: no boot timer (ioperm refused)"\n'
        + "".join(command_lines(command) for command in commands)
        + end
    )


@dataclass(frozen=True)
class Busybox:
    version: str
    path: Path


def fetch_busybox(progress: Progress = QUIET, root: Path | None = None) -> Busybox:
    """Debian's static busybox, downloaded once and kept by version."""
    root = root or cache_root()
    info = debian.show_package(BUSYBOX_PACKAGE)
    path = root / "busybox" / info.version.replace(":", "_") / "busybox"
    if path.exists():
        return Busybox(info.version, path)
    with locked(root / "busybox.lock"):
        if not path.exists():
            progress.say(f"downloading {info.name} {info.version}")
            deb = debian.download(info, root / "debs", echo=progress.echo_commands)
            files = debian.extract_files(deb, lambda name: name == "bin/busybox")
            if "bin/busybox" not in files:
                raise debian.DebianError(f"{deb.name} has no bin/busybox")
            write_atomic(path, files["bin/busybox"], mode=0o755)
    return Busybox(info.version, path)


def busybox_applets(busybox: Path) -> list[str]:
    """Where each applet goes ("bin/sh", "usr/bin/head"), from busybox itself."""
    try:
        result = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return list(FALLBACK_APPLETS)
    return sorted(line.strip() for line in result.stdout.splitlines() if line.strip())


def initramfs_entries(busybox: bytes, applets: Sequence[str], init: str) -> list[Entry]:
    """The archive's files: directories, /dev/console, busybox, its applets, /init."""
    directories = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp"]
    entries = [Entry.directory(name) for name in directories]
    # The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
    entries.append(Entry.char_device("dev/console", 5, 1))
    entries.append(Entry.file("bin/busybox", busybox, 0o755))
    timer = BOOT_TIMER_PATH.lstrip("/")
    entries.append(Entry.file(timer, boot_timer_program(), 0o755))
    known = {"bin/busybox", timer, *directories}
    for applet in applets:
        if applet not in known and "/" in applet and applet.rsplit("/", 1)[0] in directories:
            entries.append(Entry.symlink(applet, "/bin/busybox"))
            known.add(applet)
    entries.append(Entry.file("init", init.encode(), 0o755))
    return entries


@dataclass(frozen=True)
class Initramfs:
    path: Path
    key: str
    size: int
    busybox_version: str
    commands: tuple[str, ...]
    shell: bool


def build_initramfs(
    commands: Sequence[str] = (),
    shell: bool = False,
    compress: bool = False,
    progress: Progress = QUIET,
    root: Path | None = None,
) -> Initramfs:
    """The initramfs for these commands, from the cache when it was made before.

    Uncompressed by default: both test kernels take a plain cpio, and a
    kernel whose code is emulated is slow to gunzip. `compress=True` gives
    a gzip one (CONFIG_RD_GZIP, in the small kernel's configuration).
    """
    root = root or cache_root()
    busybox = fetch_busybox(progress, root)
    binary = busybox.path.read_bytes()
    applets = busybox_applets(busybox.path)
    init = init_script(commands, shell)
    digest = hashlib.sha256()
    for part in (str(FORMAT_VERSION), hashlib.sha256(binary).hexdigest(), init, *applets):
        digest.update(part.encode() + b"\0")
    digest.update(b"gzip" if compress else b"plain")
    key = digest.hexdigest()[:16]
    path = root / "initramfs" / f"initramfs-{key}.cpio{'.gz' if compress else ''}"
    if not path.exists():
        archive = write_newc(initramfs_entries(binary, applets, init))
        if compress:
            archive = gzip.compress(archive, compresslevel=9, mtime=0)
        write_atomic(path, archive)
        write_atomic(path.with_name(path.name + ".init"), init.encode())
        progress.say(f"initramfs {path.name}: {len(archive)} bytes, {len(applets)} applets")
    return Initramfs(
        path=path,
        key=key,
        size=path.stat().st_size,
        busybox_version=busybox.version,
        commands=tuple(commands),
        shell=shell,
    )


def read_init(initramfs: Path) -> str | None:
    """The /init a cached initramfs was made with (kept beside it), if known."""
    sidecar = initramfs.with_name(initramfs.name + ".init")
    return sidecar.read_text() if sidecar.exists() else None
