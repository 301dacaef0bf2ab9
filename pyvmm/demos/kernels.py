"""Run one benchmark kernel natively (in this process) or in a pyvmm guest.

Both run the same bytes: `benchmarks/kernels/kernels.bin` of the repository
(built by the Makefile beside it), shipped with pyvmm (see pyvmm.shipped).
The equivalence and efficiency demos and the benchmarks' kernels suite use
it. The image starts with a guest entry stub, then a table of kernels, each
`uint64_t k(uint64_t n, uint64_t base)`:

- natively, the image is copied into an anonymous mapping that is then made
  read+exec, and a kernel is called through ctypes at its table offset, with
  `base` the address of a fresh anonymous buffer in this process;
- in a guest, pyvmm loads the image at 1 MiB in 64-bit long mode (ring 0) or
  user mode (ring 3), the runner writes the parameter block at PARAMS_GPA,
  and the stub calls the kernel, writes the result to RESULT_PORT and ends
  the run through the debug-exit port. `base` is then BUFFER_GPA.

Both buffers are fresh, lazily committed mappings, so both runs pay for
first-touching their pages. A guest run's `seconds` cover `machine.run()`
only: building the machine is not timed.

The kernels in EQUIVALENT_KERNELS compute the same result on host and guest;
`run_in_guest` checks its result against the native one (computing it if no
native run of that n was made yet) and raises KernelMismatch otherwise.
`cpuid_loop` returns n on both sides (what CPUID reports legitimately
differs between host and guest, so the kernel does not return it);
`cpuid_leaf` is not a benchmark: it returns EAX | EBX << 32 of CPUID leaf n,
to show whose CPUID the code sees.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pyvmm.arch.x86_64 import layout
from pyvmm.demos.common import stop_if_interrupted
from pyvmm.errors import PyvmmError
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind
from pyvmm.shipped import shipped_file

# The image's repository-relative name, as pyvmm.shipped knows it.
KERNELS_IMAGE = "benchmarks/kernels/kernels.bin"

# The guest-side protocol; entry.s holds the same values.
PARAMS_GPA = 0x9_0000  # u64 kernel index, u64 n, u64 base (clear of the VMM's 0x500..0x80000)
RESULT_PORT = 0xE00  # two 32-bit `out`s at +0 (low half), +4 (high): clear of ACPI PM at 0x600
RESULT_PORT_SIZE = 8
RESULT_STATUS = 1  # the stub writes 0 to the debug-exit port: status (0 << 1) | 1
BAD_INDEX_STATUS = 3  # ... and 1 (status 3) for a kernel index past the table
BUFFER_GPA = 0x100_0000  # 16 MiB: clear of the image at 1 MiB

# The kernel table (see entry.s).
TABLE_OFFSET = 0x80
TABLE_MAGIC = b"PYVMMKRN"
TABLE_VERSION = 1
TABLE_HEADER = struct.Struct("<8sII")
TABLE_ENTRY = struct.Struct("<16sQ")

KERNELS = ("int_loop", "mem_checksum", "sieve", "cpuid_loop", "cpuid_leaf")
EQUIVALENT_KERNELS = frozenset({"int_loop", "mem_checksum", "sieve"})

RINGS = {0: CpuMode.LONG, 3: CpuMode.USER}
PAGE_SIZE = mmap.PAGESIZE
DEFAULT_GUEST_TIMEOUT = 600.0

KernelFunction = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64)


class KernelRunError(PyvmmError):
    """A kernel could not be run, or its guest run ended other than as the stub ends it."""


class KernelsUnavailable(KernelRunError):
    """No kernel can run: kernels.bin is not a kernel image, or code cannot be mapped executable."""


class KernelMismatch(KernelRunError):
    """Host and guest ran the same bytes on the same input and disagree."""


@dataclass(frozen=True)
class KernelRun:
    """One call of a kernel: its result and the seconds it took.

    `exits` is the number of VM exits of a guest run (None for a native run).
    """

    result: int
    seconds: float
    exits: int | None = None


@dataclass(frozen=True)
class KernelImage:
    """kernels.bin and where each kernel starts in it (offsets from byte 0)."""

    data: bytes
    offsets: dict[str, int]

    @classmethod
    def parse(cls, data: bytes) -> KernelImage:
        if len(data) < TABLE_OFFSET + TABLE_HEADER.size:
            raise KernelsUnavailable(f"kernel image of {len(data)} bytes has no table")
        magic, version, count = TABLE_HEADER.unpack_from(data, TABLE_OFFSET)
        if magic != TABLE_MAGIC or version != TABLE_VERSION:
            raise KernelsUnavailable(f"kernel image has no version {TABLE_VERSION} table")
        offsets: dict[str, int] = {}
        position = TABLE_OFFSET + TABLE_HEADER.size
        for _ in range(count):
            if position + TABLE_ENTRY.size > len(data):
                raise KernelsUnavailable("kernel table runs past the end of the image")
            raw_name, offset = TABLE_ENTRY.unpack_from(data, position)
            if offset >= len(data):
                raise KernelsUnavailable(f"kernel offset 0x{offset:x} is past the end of the image")
            offsets[raw_name.rstrip(b"\0").decode("ascii")] = offset
            position += TABLE_ENTRY.size
        return cls(data, offsets)

    def index(self, kernel: str) -> int:
        """The kernel's position in the table: what the guest stub reads."""
        try:
            return list(self.offsets).index(kernel)
        except ValueError:
            raise KernelRunError(
                f"no kernel {kernel!r} in the image (it has {', '.join(self.offsets)})"
            ) from None


@cache
def load_kernel_image(path: Path | None = None) -> KernelImage:
    """kernels.bin, parsed (the shipped one unless `path` names another).

    Raises ShippedFileMissing when pyvmm does not carry it, KernelRunError
    when it is not a kernel image.
    """
    return KernelImage.parse((path or shipped_file(KERNELS_IMAGE)).read_bytes())


def buffer_size(kernel: str, n: int) -> int:
    """Bytes of buffer a kernel touches at `base` for this n."""
    if kernel == "mem_checksum":
        return n
    if kernel == "sieve":
        return n + 1
    return 0


# Every native result, by (kernel, n): the reference the guest results must equal.
_native_results: dict[tuple[str, int], int] = {}


class _NativeCode:
    """kernels.bin in an anonymous mapping of this process, made read+exec after the copy."""

    def __init__(self, image: KernelImage) -> None:
        size = -(-len(image.data) // PAGE_SIZE) * PAGE_SIZE
        self._mapping = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._mapping[: len(image.data)] = image.data
        self._anchor = ctypes.c_char.from_buffer(self._mapping)  # lives as long as we do
        self.address = ctypes.addressof(self._anchor)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.mprotect(self.address, size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            reason = os.strerror(ctypes.get_errno())
            raise KernelsUnavailable(f"cannot make the kernels executable (mprotect): {reason}")
        self.functions = {
            name: KernelFunction(self.address + offset) for name, offset in image.offsets.items()
        }


@cache
def _native_code() -> _NativeCode:
    return _NativeCode(load_kernel_image())


def run_native(kernel: str, n: int) -> KernelRun:
    """Call `kernel(n, base)` in this process; `seconds` times the call alone."""
    _check_n(n)
    load_kernel_image().index(kernel)  # raises for an unknown kernel, naming the known ones
    function = _native_code().functions[kernel]
    # A fresh, lazily committed buffer, as guest RAM is: both sides first-touch their pages.
    with mmap.mmap(-1, max(buffer_size(kernel, n), PAGE_SIZE)) as buffer:
        anchor = ctypes.c_char.from_buffer(buffer)
        try:
            base = ctypes.addressof(anchor)
            started = time.perf_counter()
            result = function(n, base)
            seconds = time.perf_counter() - started
        finally:
            del anchor  # release the buffer export so the mapping can close
    _check_count(kernel, n, result, "native")
    _native_results[(kernel, n)] = result
    return KernelRun(result, seconds)


class ResultPort:
    """The stub's result device: 32-bit writes of the low (+0) and high (+4) halves."""

    def __init__(self) -> None:
        self.halves: dict[int, int] = {}

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.halves[offset] = value & 0xFFFF_FFFF

    @property
    def result(self) -> int | None:
        if set(self.halves) != {0, 4}:
            return None
        return self.halves[0] | self.halves[4] << 32


def guest_ram_size(kernel: str, n: int) -> int:
    """RAM for a guest running `kernel` on n: up to the end of its buffer, in whole MiB."""
    end = BUFFER_GPA + max(buffer_size(kernel, n), 1)
    size = -(-end // layout.MIB) * layout.MIB
    if size > layout.MMIO_GAP_START:
        raise KernelRunError(f"{kernel}({n}) needs a buffer past the 32-bit MMIO hole")
    return size


def run_in_guest(
    kernel: str,
    n: int,
    ring: int,
    timeout: float = DEFAULT_GUEST_TIMEOUT,
    check: bool = True,
) -> KernelRun:
    """Run `kernel(n, BUFFER_GPA)` in a fresh guest at CPL `ring` (0 or 3).

    `seconds` times `machine.run()` alone. Raises KernelMismatch when the
    result differs from the native one (see the module docstring), unless
    `check` is false (a caller that compares and records results itself).
    """
    _check_n(n)
    if ring not in RINGS:
        raise KernelRunError(f"ring {ring}: only 0 (long mode) and 3 (user mode) exist here")
    image = load_kernel_image()
    index = image.index(kernel)
    config = MachineConfig(
        image=image.data,
        ram_size=guest_ram_size(kernel, n),
        console=lambda data: None,
        mode=RINGS[ring],
        load_gpa=layout.HIGH_LOAD_GPA,
    )
    port = ResultPort()
    with build_machine(config) as machine:
        machine.pio_bus.insert(port, RESULT_PORT, RESULT_PORT_SIZE, "kernel result")
        machine.memory.write(PARAMS_GPA, struct.pack("<QQQ", index, n, BUFFER_GPA))
        started = time.perf_counter()
        outcome = machine.run(timeout)
        stop_if_interrupted(outcome)
        seconds = time.perf_counter() - started
        exits = machine.loop.exit_count
    where = f"{kernel}({n}) at CPL{ring}"
    if outcome.kind is not OutcomeKind.DEBUG_EXIT or outcome.exit_status != RESULT_STATUS:
        details = f"\n{outcome.registers}" if outcome.registers else ""
        raise KernelRunError(f"{where}: {outcome.message}{details}")
    result = port.result
    if result is None:
        raise KernelRunError(f"{where}: the guest ended without writing its result")
    if not check:
        return KernelRun(result, seconds, exits)
    _check_count(kernel, n, result, f"guest CPL{ring}")
    if kernel in EQUIVALENT_KERNELS:
        expected = _native_results.get((kernel, n))
        if expected is None:
            expected = run_native(kernel, n).result
        if result != expected:
            raise KernelMismatch(
                f"{where} returned 0x{result:016x}, natively 0x{expected:016x}: "
                "the same bytes on the same input must agree"
            )
    return KernelRun(result, seconds, exits)


def _check_n(n: int) -> None:
    if not 0 <= n < 1 << 64:
        raise KernelRunError(f"n={n} is not a u64")


def _check_count(kernel: str, n: int, result: int, where: str) -> None:
    if kernel == "cpuid_loop" and result != n:
        raise KernelMismatch(f"cpuid_loop({n}) {where} ran {result} CPUIDs")
