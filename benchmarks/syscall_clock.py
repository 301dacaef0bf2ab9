"""Where a create-run-destroy cycle's time goes: inside the kernel's calls, or around them.

`syscall_clock.c`, built here into a shared library and loaded with
LD_PRELOAD, clocks every ioctl (by request), close, mmap and munmap of a
process: the calls that make, run and free a VM, and the memory Python's
allocator maps. Run on ref_vmm and on a child doing pyvmm's cycles, it splits
each VMM's cycle into the time inside those calls and the rest: for the C
VMM the rest is nearly nothing, so the calls pyvmm makes, timed alone, are
the cycle a Python VMM cannot go under.

The split is extra runs of each VMM, for the notes of the cycle row
(`suite_startup.split_cycles`: SPLIT_ROUNDS rounds, each a clocked run of
each VMM and an unclocked run of ref_vmm called from inside Python): the clock
adds two vDSO clock reads a call, and the row's ratio comes from its
interleaved pairs without it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.suite_exits import (
    IN_PYTHON,
    RefRun,
    RefVmmError,
    compile_c,
    run_measured,
    run_ref_vmm,
)
from pyvmm._kvm import lib

CLOCK_SOURCE = Path(__file__).resolve().parent / "syscall_clock.c"
OUTPUT_ENV = "SYSCALL_CLOCK_OUT"
KVMIO = 0xAE

# The child that runs pyvmm's cycles under the clock: one warm-up cycle (imports,
# first-use caches), the clock zeroed, then the cycles; it prints their seconds.
PYVMM_CHILD = """\
import ctypes, sys
from benchmarks.suite_startup import HELLO_EXIT, pyvmm_cycles
image = HELLO_EXIT.read_bytes()
pyvmm_cycles(image, 1)
ctypes.CDLL(None).syscall_clock_reset()
seconds, exits = pyvmm_cycles(image, int(sys.argv[1]))
print(seconds, exits)
"""


def ref_cycles_in_python(library: Path, state: Path, cycles: int) -> RefRun:
    """ref_vmm's `cycles` cycles, called through ctypes in a Python child that has
    imported pyvmm's machine; raises RefVmmError."""
    return run_ref_vmm(library, state, cycles=cycles, launcher=IN_PYTHON)


def build_clock(directory: Path) -> Path:
    """Compile syscall_clock.c into `directory` as a shared library; raises RefVmmError."""
    return compile_c(CLOCK_SOURCE, directory / "syscall_clock.so", "-shared", "-fPIC", "-ldl")


def _ioctl_names() -> dict[int, str]:
    """KVM ioctl request numbers to their names, from the binding's constants."""
    names: dict[int, str] = {}
    for name in dir(lib):
        value = getattr(lib, name) if name.startswith("KVM_") else None
        # An ioctl number carries KVMIO (0xAE) as its type, bits 8-15 (asm-generic/ioctl.h);
        # KVM's other constants (capabilities, exit reasons, flags) are small numbers.
        if isinstance(value, int) and (value >> 8) & 0xFF == KVMIO:
            names.setdefault(value, name)
    return names


@dataclass(frozen=True)
class CallTimes:
    """Calls and nanoseconds per name (KVM ioctls by request name; close, mmap, munmap)."""

    calls: dict[str, int]
    ns: dict[str, int]

    @property
    def total_ns(self) -> int:
        return sum(self.ns.values())

    def per_cycle(self, cycles: int) -> dict[str, list[float]]:
        """{name: [calls, milliseconds]} per cycle, the costliest first."""
        order = sorted(self.ns, key=lambda name: -self.ns[name])
        return {
            name: [round(self.calls[name] / cycles, 2), round(self.ns[name] / 1e6 / cycles, 4)]
            for name in order
        }


def sum_times(runs: list[CallTimes]) -> CallTimes:
    """Several runs' call times added up, name by name."""
    calls: dict[str, int] = defaultdict(int)
    ns: dict[str, int] = defaultdict(int)
    for run in runs:
        for name, count in run.calls.items():
            calls[name] += count
            ns[name] += run.ns[name]
    return CallTimes(dict(calls), dict(ns))


def parse_clock(text: str) -> CallTimes:
    """Read syscall_clock.c's output; raises ValueError on a malformed line."""
    names = _ioctl_names()
    calls: dict[str, int] = defaultdict(int)
    ns: dict[str, int] = defaultdict(int)
    for line in text.splitlines():
        call, request, count, nanoseconds = line.split()
        name = call
        if call == "ioctl":
            number = int(request, 16)
            name = names.get(number, f"ioctl {number:#x}")
        calls[name] += int(count)
        ns[name] += int(nanoseconds)
    return CallTimes(dict(calls), dict(ns))


@contextmanager
def clock_env(library: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """(an environment that preloads the clock, the file it writes), for one process."""
    with tempfile.TemporaryDirectory(prefix="pyvmm-clock-") as directory:
        out = Path(directory) / "calls.txt"
        env = dict(os.environ, LD_PRELOAD=str(library), **{OUTPUT_ENV: str(out)})
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # a child runs as a user's would
        yield env, out


def read_clock(out: Path) -> CallTimes:
    """What the clock wrote; raises RefVmmError when it wrote nothing."""
    if not out.exists():
        raise RefVmmError("syscall_clock wrote nothing: was it preloaded?")
    return parse_clock(out.read_text())


def ref_cycle_calls(
    binary: Path, state: Path, library: Path, cycles: int
) -> tuple[RefRun, CallTimes]:
    """ref_vmm's `cycles` cycles under the clock: (its report, its call times)."""
    with clock_env(library) as (env, out):
        run = run_ref_vmm(binary, state, cycles=cycles, env=env)
        return run, read_clock(out)


def pyvmm_cycle_calls(library: Path, cycles: int, timeout: float = 120) -> tuple[float, CallTimes]:
    """(seconds for `cycles` pyvmm cycles, their call times), in a child under the clock.

    Raises RefVmmError when the child fails.
    """
    with clock_env(library) as (env, out):
        command = [sys.executable, "-c", PYVMM_CHILD, str(cycles)]
        result = run_measured(command, timeout, env=env)
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise RefVmmError(f"pyvmm's cycles under syscall_clock failed: {tail}")
        return float(result.stdout.split()[0]), read_clock(out)
