"""`create_machine`: a Machine from what a script has at hand.

`MachineConfig` + `build_machine` take exactly what the VMM needs (the image
as bytes, the RAM size in bytes, a console callback). `create_machine` takes
what a script usually has instead, and converts it the way `pyvmm boot`
does: a path or bytes, a size such as "64M", a mode name, a file to print
the console to. Everything else (`Machine`, its methods, `RunOutcome`) is
the same objects either way.
"""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Callable, Sequence
from typing import BinaryIO, TextIO

from pyvmm.console.input import InputBuffer
from pyvmm.errors import LoaderError, UsageError
from pyvmm.kvm.system import DEFAULT_KVM_PATH
from pyvmm.loaders import read_image
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import Machine, MachineConfig, build_machine, check_ram_size
from pyvmm.memory.size import RAM_GRANULE, parse_ram_size
from pyvmm.shipped import resolve_image

DEFAULT_RAM_SIZE = "128M"  # as `pyvmm boot` without -m


def create_machine(
    image: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    ram_size: int | str = DEFAULT_RAM_SIZE,
    console: Callable[[bytes], None] | BinaryIO | TextIO | None = None,
    console_input: bytes = b"",
    mode: CpuMode | str | None = None,
    load_gpa: int | None = None,
    cpus: int = 1,
    max_exits: int | None = None,
    cmdline: str = "",
    modules: Sequence[str | os.PathLike[str] | tuple[str, bytes]] = (),
    append: str | None = None,
    image_format: str | None = None,
    irqchip: bool | None = None,
    acpi: bool = True,
    testdev: bool = False,
    kvm_path: str = DEFAULT_KVM_PATH,
) -> Machine:
    """Build a VM for `image`, ready to `run`; use it in a `with` block (or `close` it).

    - `image`: a path (str or os.PathLike; `guests/NAME` also names a guest
      that ships with pyvmm, as on the command line) or the image's bytes, in any
      format `pyvmm boot` boots, found by its magic: multiboot v1 kernel,
      Linux bzImage or vmlinux (the boot protocol's 64-bit entry), ELF32
      (entered in protected mode), ELF64 (long mode), else a flat
      binary (real mode at 0x7c00 unless `mode`/`load_gpa` say otherwise;
      flat images in the other modes default to 1 MiB).
    - `ram_size`: bytes as an int, or a string as `-m` takes it ("64M",
      "1G"; a bare number is MiB, as in QEMU), rounded up to whole 4 KiB
      pages. Guest RAM is one KVM memory slot per range around the MMIO
      hole at 0xd0000000 (KVM API doc 4.35, KVM_SET_USER_MEMORY_REGION).
    - `console`: where the bytes the guest writes to COM1 (a 16550A UART at
      port 0x3f8) go. A callable gets each chunk of bytes; a text stream
      (`sys.stdout`, `io.StringIO`) gets them decoded as UTF-8 (invalid
      bytes as U+FFFD), so they interleave with the script's own `print`s;
      a binary file (`io.BytesIO`, a file opened "wb") gets the bytes as
      they are. None discards them: the library prints nothing by itself.
    - `console_input`: bytes the guest can read from COM1, in order.
    - `mode`: the CPU state to enter a flat image in, a CpuMode or its
      value ("real", "protected", "paged", "long", "user").
    - `load_gpa`: where a flat image goes (guest-physical address).
    - `cpus`: vCPUs.
    - `max_exits`: each vCPU's run ends with OutcomeKind.EXIT_LIMIT after
      this many VM exits (`--max-exits`); None for no limit.
    - `cmdline`, `modules`: a multiboot kernel's whole command line (QEMU
      passes "<kernel path> <-append text>") and its modules, each a path
      (its string is the path) or a (string, bytes) pair. A Linux kernel
      (bzImage or vmlinux, booted through the x86 boot protocol) takes one
      module, its initrd, and its command line from `append` (`--append`).
    - `image_format`: "linux", "multiboot", "elf" or "flat" insists on a
      format (`--format`); None finds it by the image's contents.
    - `irqchip`: KVM's in-kernel PIC/IOAPIC/LAPIC/PIT; None or True: on (the
      run ends as OutcomeKind.HALTED once every vCPU is halted with IF=0 or
      waits for INIT/SIPI); False: off, one vCPU only, and its first `hlt`
      ends the run.
    - `acpi`: the ACPI tables and PM ports (`--acpi`); the MP tables come
      with the irqchip. `testdev`: QEMU's pc-testdev (`--testdev`).

    Raises UsageError (a bad size, mode or vCPU count; the message quotes
    `ram_size` as given), LoaderError and its subclasses (unreadable, empty,
    malformed image or module; a path that is not a regular file; an image
    that does not fit in RAM, refused before it is read when it is copied
    whole), KvmUnavailable (no usable `kvm_path`), KvmError (a KVM ioctl
    failed), TypeError for a `console` that is none of the above.
    """
    size = _ram_size(ram_size)
    config = MachineConfig(
        image=_image_bytes(image, size),
        ram_size=size,
        console=console_callback(console),
        mode=_cpu_mode(mode),
        load_gpa=load_gpa,
        kvm_path=kvm_path,
        cpus=cpus,
        cmdline=cmdline,
        modules=tuple(_module(entry, size) for entry in modules),
        append=append,
        image_format=image_format,
        max_exits=max_exits,
        console_input=_input_buffer(console_input),
        irqchip=irqchip,
        acpi=acpi,
        testdev=testdev,
    )
    return build_machine(config)


def console_callback(
    console: Callable[[bytes], None] | BinaryIO | TextIO | None,
) -> Callable[[bytes], None]:
    """The `MachineConfig.console` callback for what `create_machine` accepts as `console`."""
    if console is None:
        return _discard
    if callable(console):
        return console
    # A text stream says its encoding; a binary one has none.
    if isinstance(console, io.TextIOBase) or isinstance(getattr(console, "encoding", None), str):
        return TextConsole(console)  # type: ignore[arg-type]
    write = getattr(console, "write", None)
    if callable(write):
        return write  # type: ignore[no-any-return]
    raise TypeError(
        f"console must be a callable taking bytes, a text or binary file, or None; "
        f"got {type(console).__name__}"
    )


class TextConsole:
    """Guest bytes onto a text stream, decoded as UTF-8 across chunk boundaries."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def __call__(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self.stream.write(text)


def _discard(data: bytes) -> None:
    pass


def _ram_size(ram_size: int | str) -> int:
    """`ram_size` in bytes, whole pages; refused (quoted as given) before any file is read."""
    if isinstance(ram_size, str):
        size = parse_ram_size(ram_size)
    else:
        size = -(-ram_size // RAM_GRANULE) * RAM_GRANULE  # up to whole pages, as a string is
    check_ram_size(size, repr(ram_size), option="ram_size")
    return size


def _image_bytes(
    image: str | os.PathLike[str] | bytes | bytearray | memoryview, ram_size: int
) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise LoaderError("the image is empty")
        return data
    return read_image(resolve_image(os.fspath(image)), ram_size)


def _cpu_mode(mode: CpuMode | str | None) -> CpuMode | None:
    if mode is None or isinstance(mode, CpuMode):
        return mode
    try:
        return CpuMode(mode)
    except ValueError:
        names = ", ".join(each.value for each in CpuMode)
        raise UsageError(f"unknown CPU mode {mode!r}: use one of {names}") from None


def _module(entry: str | os.PathLike[str] | tuple[str, bytes], ram_size: int) -> tuple[str, bytes]:
    if isinstance(entry, tuple):
        string, data = entry
        return str(string), bytes(data)
    path = os.fspath(entry)
    return path, read_image(resolve_image(path), ram_size, what="module")


def _input_buffer(data: bytes) -> InputBuffer | None:
    if not data:
        return None
    buffer = InputBuffer(len(data))
    buffer.put(bytes(data))
    buffer.eof = True  # nothing more will come: as a closed stdin
    return buffer
