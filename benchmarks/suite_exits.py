"""What one VM exit costs in pyvmm, against a minimal C VMM running the same guest.

`exit_guest.bin` makes `count` exits of one kind (port write, MMIO write,
port read) in a tight loop, at CPL0 (`--mode long`) or CPL3 (`--mode user`),
then writes to the debug-exit port. pyvmm runs it with `Machine.run()`; the
reference VMM (`ref_vmm.c`, compiled here with `cc -O2`) runs the very same
entry state: pyvmm builds the machine, and this module hands the C program
pyvmm's own sregs, regs, FPU state and the non-zero pages of low memory in a
state file (`write_state_file`). Each sample is the run loop's time divided by
its exit count; samples are interleaved pairs (C, pyvmm, C, pyvmm ...), and
the ratio pyvmm/C is the price of Python per exit. Each row's notes add
ref_vmm's loop run inside a Python process (ref_vmm.c built as a shared
library, called through ctypes from an interpreter that imported pyvmm's
machine): a Python VMM's floor, apart from any Python run per exit.

One more row runs several vCPUs at once: `smp_exit_guest.bin` with
SMP_CPUS vCPUs (`-smp 4`), the boot CPU waking the others with INIT/SIPI,
every vCPU making `count / SMP_CPUS` port writes after a barrier. pyvmm runs
each vCPU in a thread and serves every exit under its device lock (and the
GIL); ref_vmm runs one thread per vCPU with no lock at all. The sample is
the wall time of the whole run (AP start-up included, a few hundred
instructions) divided by the exits of all vCPUs: the ratio pyvmm/C is what
concurrency costs pyvmm beyond the single-vCPU rows. Both VMMs build the
same machine: the in-kernel irqchip (and no PIT in the kernel), as pyvmm's default.

    python -m benchmarks.suite_exits [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.comparison import Comparison, Progress, interleave, timed
from pyvmm._kvm import ffi
from pyvmm.arch.x86_64 import layout
from pyvmm.kvm.host import kvm_backend
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import Machine, MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind

BENCHMARKS = Path(__file__).resolve().parent
EXIT_GUEST = BENCHMARKS / "exit_guest.bin"
SMP_EXIT_GUEST = BENCHMARKS / "smp_exit_guest.bin"
REF_VMM_SOURCE = BENCHMARKS / "ref_vmm.c"

# The guest's parameter block and exit targets (documented in exit_guest.s).
PARAMS_GPA = 0x9_0000
BENCH_PORT = 0x700
BENCH_PORT_SIZE = 4
BENCH_MMIO_GPA = layout.MMIO_GAP_START
BENCH_MMIO_SIZE = 0x1000
# The value exit_guest writes to the debug-exit port when its loop ran.
GUEST_DONE = 0
# smp_exit_guest: its vCPU count, and the port each vCPU but the last writes once at its end.
SMP_CPUS = 4
SMP_DONE_PORT = BENCH_PORT + 1

RAM_SIZE = 128 * layout.MIB  # pyvmm's (and QEMU's) default -m
# The state file carries the non-zero pages below this: every table, stack,
# parameter and image pyvmm writes for these guests lies there.
SNAPSHOT_LIMIT = 2 * layout.MIB
PAGE_SIZE = 4096
STATE_MAGIC = b"PYVMMREF"
# The state file's flags word: the machine has KVM's in-kernel irqchip; and KVM's PIT.
STATE_IRQCHIP = 1
STATE_KERNEL_PIT = 2
STATE_SPLIT_IRQCHIP = 4

C_LABEL = "C reference VMM"
PYVMM_LABEL = "pyvmm"
GUIDE_CLAIM = "a Python exit loop adds 7-22 % to the ~8 us exit"

# (count, pairs) per comparison.
QUICK = (4_000, 5)
FULL = (20_000, 15)


class ExitKind(enum.IntEnum):
    """The `kind` word of exit_guest's parameter block."""

    PORT_OUT = 0
    MMIO_WRITE = 1
    PORT_IN = 2


@dataclass(frozen=True)
class Case:
    name: str
    mode: CpuMode
    kind: ExitKind


CASES = (
    Case("port I/O out, CPL0", CpuMode.LONG, ExitKind.PORT_OUT),
    Case("port I/O out, CPL3", CpuMode.USER, ExitKind.PORT_OUT),
    Case("MMIO write, CPL0", CpuMode.LONG, ExitKind.MMIO_WRITE),
    Case("MMIO write, CPL3", CpuMode.USER, ExitKind.MMIO_WRITE),
    Case("port I/O in, CPL0", CpuMode.LONG, ExitKind.PORT_IN),
    Case("port I/O in, CPL3", CpuMode.USER, ExitKind.PORT_IN),
)


def smp_name(cpus: int) -> str:
    return f"port I/O out, {cpus} vCPUs at once, CPL0"


SMP_NAME = smp_name(SMP_CPUS)


class RefVmmError(Exception):
    """The reference VMM could not be built or did not run the guest as expected."""


# --- running a process and measuring it -------------------------------------


@dataclass(frozen=True)
class ProcessResult:
    seconds: float  # wall clock, spawn to exit
    returncode: int
    stdout: bytes
    stderr: bytes
    max_rss_kib: int | None  # the command's peak resident set, when asked for and measurable


@functools.cache
def gnu_time() -> str | None:
    """GNU time (`time -f %M`), or None: the only clean per-command peak RSS here.

    A child's own ru_maxrss (wait4) is useless for this: Python spawns it with
    vfork, and exec() records the *parent's* high-water RSS in the child's
    maxrss, so every child would report at least this benchmark's own size.
    GNU time forks from its own small process.
    """
    path = shutil.which("time")
    if path is None:
        return None
    result = subprocess.run([path, "--version"], capture_output=True, text=True)
    return path if "GNU" in result.stdout + result.stderr else None


NO_GNU_TIME = "GNU time not found, peak RSS not measured: install with: apt-get install time"


def kill_session(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of the session `process` leads, then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def run_measured(
    command: Sequence[str],
    timeout: float,
    cwd: Path | None = None,
    *,
    peak_rss: bool = False,
    env: Mapping[str, str] | None = None,
) -> ProcessResult:
    """Run `command` to its end, in its own session; with `peak_rss`, under GNU time.

    `env` replaces the environment (default: this process's).

    Raises TimeoutError after killing the whole session (QEMU under GNU time
    included) when it outlives `timeout` seconds.
    """
    wrapper = gnu_time() if peak_rss else None
    with tempfile.NamedTemporaryFile(prefix="pyvmm-rss-") as rss_file:
        argv = list(command)
        if wrapper is not None:
            argv = [wrapper, "-f", "%M", "-o", rss_file.name, *argv]
        started = time.perf_counter()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(process)
            raise TimeoutError(f"{command[0]} did not finish within {timeout:g} s") from None
        except BaseException:  # Ctrl-C: the session does not get the terminal's SIGINT
            kill_session(process)
            raise
        seconds = time.perf_counter() - started
        max_rss_kib = None
        if wrapper is not None:
            # GNU time may write "Command exited with non-zero status N" first.
            lines = Path(rss_file.name).read_text().split()
            max_rss_kib = int(lines[-1]) if lines and lines[-1].isdigit() else None
    return ProcessResult(seconds, process.returncode, stdout, stderr, max_rss_kib)


# --- the reference VMM --------------------------------------------------------


def find_compiler() -> str | None:
    """The C compiler to use: $CC, else cc, gcc or clang on PATH."""
    candidates = [os.environ["CC"]] if os.environ.get("CC") else []
    for name in [*candidates, "cc", "gcc", "clang"]:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


NO_COMPILER = (
    "no C compiler found (cc, gcc, clang or $CC): the reference VMM cannot be built; "
    "install with: apt-get install gcc linux-libc-dev"
)


def compile_c(source: Path, output: Path, *flags: str) -> Path:
    """`cc -O2 FLAGS -o output source`; returns `output`, raises RefVmmError."""
    compiler = find_compiler()
    if compiler is None:
        raise RefVmmError(NO_COMPILER)
    command = [compiler, "-O2", *flags, "-o", str(output), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RefVmmError(f"cannot build {source.name}:\n{result.stderr.strip()}")
    return output


def build_ref_vmm(directory: Path) -> Path:
    """Compile ref_vmm.c with `cc -O2` into `directory`; raises RefVmmError."""
    return compile_c(REF_VMM_SOURCE, directory / "ref_vmm", "-pthread")


# ref_vmm called through ctypes from a Python interpreter that has imported what
# the suites import (pyvmm's machine among it): what being a Python process, not
# Python's work, costs the kernel's calls. The library's path is its first argument.
C_IN_PYTHON_CHILD = """\
import ctypes, sys
import benchmarks.suite_startup
library = ctypes.CDLL(sys.argv[1])
argv = [b"ref_vmm", *(argument.encode() for argument in sys.argv[2:])]
sys.exit(library.ref_vmm_main(len(argv), (ctypes.c_char_p * len(argv))(*argv)))
"""


def build_ref_vmm_library(directory: Path) -> Path:
    """ref_vmm.c as a shared library whose `ref_vmm_main` is its main; raises RefVmmError."""
    flags = ("-pthread", "-shared", "-fPIC", "-Dmain=ref_vmm_main")
    return compile_c(REF_VMM_SOURCE, directory / "ref_vmm.so", *flags)


IN_PYTHON = (sys.executable, "-c", C_IN_PYTHON_CHILD)
IN_PYTHON_LABEL = "C reference VMM inside Python"


def write_state_file(
    machine: Machine, path: Path, limit: int = SNAPSHOT_LIMIT, *, irqchip: bool | None = None
) -> int:
    """Write pyvmm's vCPU entry state and low memory for ref_vmm; returns the page count.

    Layout (little-endian, read by ref_vmm.c's load_state): b"PYVMMREF", the
    sizes of struct kvm_sregs, kvm_regs and kvm_fpu as u32, a u32 of flags
    (STATE_IRQCHIP when the machine has the in-kernel irqchip, STATE_KERNEL_PIT
    when it has KVM's PIT too, STATE_SPLIT_IRQCHIP when that irqchip is split,
    so that ref_vmm creates the same), the
    three structs' raw bytes, then one record per non-zero page below
    `limit`: u64 gpa, u64 size, the bytes. `irqchip` overrides what the
    machine has (None: what it has).
    """
    structs = [
        bytes(ffi.buffer(machine.vcpu.get_sregs())),
        bytes(ffi.buffer(machine.vcpu.get_regs())),
        bytes(ffi.buffer(machine.vcpu.get_fpu())),
    ]
    if irqchip is None:
        irqchip = machine.config is None or machine.config.wants_irqchip
    flags = STATE_IRQCHIP if irqchip else 0
    if irqchip and machine.config is not None and machine.config.wants_kernel_pit:
        flags |= STATE_KERNEL_PIT
    if irqchip and machine.split_irqchip is not None:
        flags |= STATE_SPLIT_IRQCHIP
    parts = [STATE_MAGIC, struct.pack("<4I", *(len(raw) for raw in structs), flags), *structs]
    pages = 0
    zero = bytes(PAGE_SIZE)
    for gpa in range(0, min(limit, machine.memory.size), PAGE_SIZE):
        page = machine.memory.read(gpa, PAGE_SIZE)
        if page != zero:
            parts += [struct.pack("<QQ", gpa, PAGE_SIZE), page]
            pages += 1
    path.write_bytes(b"".join(parts))
    return pages


@dataclass(frozen=True)
class RefRun:
    """What ref_vmm reported (counters are summed over its cycles and vCPUs)."""

    cycles: int
    cpus: int
    exits: int
    io_out: int
    io_in: int
    mmio_write: int
    mmio_read: int
    debug_exit: int  # the value last written to the debug-exit port
    debug_exits: int  # writes to the debug-exit port
    done: int  # writes to SMP_DONE_PORT
    run_ns: int
    total_ns: int
    console: bytes
    max_rss_kib: int | None


def run_ref_vmm(
    binary: Path,
    state: Path,
    *,
    cycles: int = 1,
    cpus: int = 1,
    ram_size: int = RAM_SIZE,
    timeout: float = 120,
    peak_rss: bool = False,
    env: Mapping[str, str] | None = None,
    launcher: Sequence[str] = (),
) -> RefRun:
    """Run ref_vmm (`launcher` first, when given: it gets the binary's path as its
    first argument) and read its report; raises RefVmmError."""
    command = [*launcher, str(binary), "--state", str(state), "--ram-size", str(ram_size)]
    command += ["--cycles", str(cycles), "--cpus", str(cpus)]
    result = run_measured(command, timeout, peak_rss=peak_rss, env=env)
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    if result.returncode != 0 or not lines or not lines[-1].startswith("ref_vmm: cycles="):
        raise RefVmmError(
            f"ref_vmm failed (status {result.returncode}): " + (lines[-1] if lines else "no output")
        )
    fields = {
        key: int(value) for key, value in (item.split("=", 1) for item in lines[-1].split()[1:])
    }
    try:
        return RefRun(
            cycles=fields["cycles"],
            cpus=fields["cpus"],
            exits=fields["exits"],
            io_out=fields["io_out"],
            io_in=fields["io_in"],
            mmio_write=fields["mmio_write"],
            mmio_read=fields["mmio_read"],
            debug_exit=fields["debug_exit"],
            debug_exits=fields["debug_exits"],
            done=fields["done"],
            run_ns=fields["run_ns"],
            total_ns=fields["total_ns"],
            console=result.stdout,
            max_rss_kib=result.max_rss_kib,
        )
    except KeyError as missing:
        raise RefVmmError(f"ref_vmm's report lacks {missing}: {lines[-1]}") from None


# --- pyvmm's side ---------------------------------------------------------------


class CountingDevice:
    """The benchmark's device: counts accesses, reads zeros (what ref_vmm does too)."""

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        self.reads += 1
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes += 1


def build_exit_machine(case: Case, count: int) -> tuple[Machine, CountingDevice]:
    """exit_guest in `case.mode` with its parameters written and its device attached."""
    machine = build_machine(
        MachineConfig(
            image=EXIT_GUEST.read_bytes(),
            ram_size=RAM_SIZE,
            console=lambda data: None,
            mode=case.mode,
        )
    )
    device = CountingDevice()
    machine.pio_bus.insert(device, BENCH_PORT, BENCH_PORT_SIZE, "benchmark port")
    machine.mmio_bus.insert(device, BENCH_MMIO_GPA, BENCH_MMIO_SIZE, "benchmark MMIO")
    machine.memory.write(PARAMS_GPA, struct.pack("<QQ", count, case.kind))
    return machine, device


def expected_exits(count: int) -> int:
    """Exits per run: `count` loop exits and the final debug-exit write."""
    return count + 1


def kind_counts(case: Case, count: int) -> dict[str, int]:
    """ref_vmm's per-kind counters for one run of `case` (the debug exit is an `out`)."""
    counts = {"io_out": 1, "io_in": 0, "mmio_write": 0, "mmio_read": 0}
    key = {ExitKind.PORT_OUT: "io_out", ExitKind.MMIO_WRITE: "mmio_write"}.get(case.kind, "io_in")
    counts[key] += count
    return counts


def measure_pyvmm(case: Case, count: int) -> tuple[float, int]:
    """(seconds of `Machine.run()`, exits) for one fresh machine."""
    machine, device = build_exit_machine(case, count)
    with machine:
        outcomes = []
        seconds = timed(lambda: outcomes.append(machine.run()))
        outcome = outcomes[0]
        if outcome.kind is not OutcomeKind.DEBUG_EXIT or outcome.exit_status != 1:
            raise RefVmmError(f"pyvmm: exit_guest ended with {outcome.message}")
        accesses = device.writes if case.kind is not ExitKind.PORT_IN else device.reads
        if accesses != count:
            raise RefVmmError(f"pyvmm: the device saw {accesses} accesses, not {count}")
        return seconds, machine.loop.exit_count


def measure_c(
    binary: Path, state: Path, case: Case, count: int, launcher: Sequence[str] = ()
) -> tuple[float, int]:
    """(seconds of ref_vmm's KVM_RUN loop, exits) for one run (of the library, through
    ctypes, with `launcher` IN_PYTHON)."""
    run = run_ref_vmm(binary, state, launcher=launcher)
    counts = {name: getattr(run, name) for name in kind_counts(case, count)}
    if run.debug_exit != GUEST_DONE or counts != kind_counts(case, count):
        raise RefVmmError(f"ref_vmm: unexpected exits {counts}, debug exit {run.debug_exit}")
    return run.run_ns / 1e9, run.exits


# --- several vCPUs at once ---------------------------------------------------------


class PortWrites:
    """smp_exit_guest's device: counts the writes at each offset (0: the loop, 1: done).

    pyvmm calls it under its device lock (the machine has several vCPUs), so
    the counts need no lock of their own.
    """

    def __init__(self, size: int) -> None:
        self.writes = [0] * size

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes[offset] += 1


def smp_exits(per_cpu: int, cpus: int) -> int:
    """Exits per run of smp_exit_guest: each vCPU's loop, then its done or debug-exit write."""
    return cpus * (per_cpu + 1)


def build_smp_machine(per_cpu: int, cpus: int) -> tuple[Machine, PortWrites]:
    """smp_exit_guest on `cpus` vCPUs (-smp), `per_cpu` port writes each, device attached."""
    machine = build_machine(
        MachineConfig(
            image=SMP_EXIT_GUEST.read_bytes(),
            ram_size=RAM_SIZE,
            console=lambda data: None,
            mode=CpuMode.PROTECTED,
            cpus=cpus,
        )
    )
    device = PortWrites(BENCH_PORT_SIZE)
    machine.pio_bus.insert(device, BENCH_PORT, BENCH_PORT_SIZE, "benchmark port")
    machine.memory.write(PARAMS_GPA, struct.pack("<II", per_cpu, cpus))
    return machine, device


def measure_pyvmm_smp(per_cpu: int, cpus: int) -> tuple[float, int]:
    """(seconds of `Machine.run()`, exits of all vCPUs) for one fresh machine."""
    machine, device = build_smp_machine(per_cpu, cpus)
    with machine:
        outcomes = []
        seconds = timed(lambda: outcomes.append(machine.run()))
        outcome = outcomes[0]
        if outcome.kind is not OutcomeKind.DEBUG_EXIT or outcome.exit_status != 1:
            raise RefVmmError(f"pyvmm: smp_exit_guest ended with {outcome.message}")
        done = SMP_DONE_PORT - BENCH_PORT
        if (device.writes[0], device.writes[done]) != (cpus * per_cpu, cpus - 1):
            raise RefVmmError(
                f"pyvmm: the device saw {device.writes[0]} loop writes and "
                f"{device.writes[done]} done writes, not {cpus * per_cpu} and {cpus - 1}"
            )
        return seconds, sum(loop.exit_count for loop in machine.group.loops)


def measure_c_smp(binary: Path, state: Path, per_cpu: int, cpus: int) -> tuple[float, int]:
    """(seconds from starting ref_vmm's vCPU threads to joining them all, exits) for one run."""
    run = run_ref_vmm(binary, state, cpus=cpus)
    seen = (run.cpus, run.io_out, run.done, run.debug_exits, run.debug_exit)
    wanted = (cpus, cpus * (per_cpu + 1), cpus - 1, 1, GUEST_DONE)
    if seen != wanted or run.io_in or run.mmio_write or run.mmio_read:
        raise RefVmmError(
            f"ref_vmm: (cpus, io_out, done, debug exits, debug exit) {seen}, not {wanted}"
        )
    return run.run_ns / 1e9, run.exits


def compare_smp(
    binary: Path,
    workdir: Path,
    count: int,
    pairs: int,
    progress: Progress | None,
    cpus: int = SMP_CPUS,
) -> Comparison:
    """`cpus` vCPUs making `count // cpus` port writes each, at once, in both VMMs."""
    comparison = Comparison("exits", smp_name(cpus), C_LABEL, PYVMM_LABEL, "us/exit")
    per_cpu = max(1, count // cpus)
    state = workdir / f"state-smp{cpus}.bin"
    machine, _ = build_smp_machine(per_cpu, cpus)
    with machine:
        state_pages = write_state_file(machine, state)
    exit_counts: dict[str, list[int]] = {C_LABEL: [], PYVMM_LABEL: []}
    seconds: dict[str, list[float]] = {C_LABEL: [], PYVMM_LABEL: []}
    exits = smp_exits(per_cpu, cpus)

    def sample(label: str, run_seconds: float, counted: int) -> float:
        exit_counts[label].append(counted)
        seconds[label].append(run_seconds)
        return run_seconds * 1e6 / exits

    interleave(
        comparison,
        lambda: sample(C_LABEL, *measure_c_smp(binary, state, per_cpu, cpus)),
        lambda: sample(PYVMM_LABEL, *measure_pyvmm_smp(per_cpu, cpus)),
        pairs,
        progress,
    )
    comparison.notes.update(
        {
            "mode": CpuMode.PROTECTED.value,
            "cpl": 0,
            "exit_kind": "port_out",
            "cpus": cpus,
            "count_per_cpu": per_cpu,
            "exits_per_run": exits,
            "exit_counts": exit_counts,
            "state_file_pages": state_pages,
            "exits_per_second": {
                label: exits / statistics.median(values) for label, values in seconds.items()
            },
            "host_cpus": os.cpu_count(),
            "timed": "pyvmm: Machine.run() (threads started, INIT/SIPI, the loops, every "
            "thread joined); C: from starting its vCPU threads to joining them all; both "
            "divided by the exits of all vCPUs",
            "locks": "pyvmm serves each exit under its device lock and the GIL; "
            "ref_vmm's threads share nothing",
            "host_kvm": kvm_backend(),
        }
    )
    return comparison


# --- the suite --------------------------------------------------------------------


def skipped(case: Case, reason: str) -> Comparison:
    return skipped_row(case.name, reason)


def skipped_row(name: str, reason: str) -> Comparison:
    comparison = Comparison("exits", name, C_LABEL, PYVMM_LABEL, "us/exit")
    comparison.notes["skipped"] = reason
    return comparison


# Runs of ref_vmm's loop inside a Python process, for each row's notes.
IN_PYTHON_SAMPLES = 3


def compare_case(
    binary: Path,
    workdir: Path,
    case: Case,
    count: int,
    pairs: int,
    progress: Progress | None,
    library: Path | None = None,
) -> Comparison:
    """ref_vmm against pyvmm on one case; with `library` (ref_vmm as a shared library),
    the notes also give ref_vmm's loop run inside a Python process."""
    comparison = Comparison("exits", case.name, C_LABEL, PYVMM_LABEL, "us/exit")
    state = workdir / f"state-{case.mode.value}-{case.kind.name.lower()}.bin"
    machine, _ = build_exit_machine(case, count)
    with machine:
        state_pages = write_state_file(machine, state)
    exit_counts: dict[str, list[int]] = {C_LABEL: [], PYVMM_LABEL: []}

    def sample(label: str, seconds: float, exits: int) -> float:
        exit_counts.setdefault(label, []).append(exits)
        return seconds * 1e6 / exits

    interleave(
        comparison,
        lambda: sample(C_LABEL, *measure_c(binary, state, case, count)),
        lambda: sample(PYVMM_LABEL, *measure_pyvmm(case, count)),
        pairs,
        progress,
    )
    overheads = [b - a for a, b in zip(comparison.a, comparison.b, strict=True)]
    ratio = comparison.ratio
    if library is not None:
        inside = [
            sample(IN_PYTHON_LABEL, *measure_c(library, state, case, count, IN_PYTHON))
            for _ in range(IN_PYTHON_SAMPLES)
        ]
        # The loop is C either way: this is what the Python process alone costs it.
        comparison.notes["c_us_per_exit_inside_python"] = statistics.median(inside)
    comparison.notes.update(
        {
            "mode": case.mode.value,
            "cpl": 3 if case.mode is CpuMode.USER else 0,
            "exit_kind": case.kind.name.lower(),
            "count": count,
            "exits_per_run": expected_exits(count),
            "exit_counts": exit_counts,
            "state_file_pages": state_pages,
            "python_overhead_us_per_exit": statistics.median(overheads),
            "python_overhead_percent": None if ratio is None else (ratio - 1) * 100,
            "guide_claim": GUIDE_CLAIM,
            "timed": "pyvmm: Machine.run(); C: its KVM_RUN loop (CLOCK_MONOTONIC); "
            "both divided by their own exit count, which includes the final debug exit",
            "host_kvm": kvm_backend(),
        }
    )
    return comparison


def collect(
    quick: bool,
    progress: Progress | None = None,
    *,
    count: int | None = None,
    pairs: int | None = None,
    cases: Sequence[Case] = CASES,
    smp_cpus: int | None = SMP_CPUS,
) -> list[Comparison]:
    """One Comparison per case, then the `smp_cpus` vCPUs row (None: no such row).

    `count` (exits per run, shared by the vCPUs of the SMP row) and `pairs`
    override the quick/full defaults.
    """
    default_count, default_pairs = QUICK if quick else FULL
    count = default_count if count is None else count
    pairs = default_pairs if pairs is None else pairs
    with tempfile.TemporaryDirectory(prefix="pyvmm-bench-") as directory:
        workdir = Path(directory)
        try:
            binary = build_ref_vmm(workdir)
            library = build_ref_vmm_library(workdir)
        except RefVmmError as error:
            if progress is not None:
                progress(f"exits: skipped: {error}")
            rows = [skipped(case, str(error)) for case in cases]
            return rows + ([skipped_row(smp_name(smp_cpus), str(error))] if smp_cpus else [])
        rows = [
            compare_case(binary, workdir, case, count, pairs, progress, library) for case in cases
        ]
        if smp_cpus:
            rows.append(compare_smp(binary, workdir, count, pairs, progress, smp_cpus))
        return rows


def format_comparison(comparison: Comparison) -> str:
    """One line: medians of A and B, the median pair ratio, and any skip reason."""
    summary = comparison.to_json()
    head = f"{comparison.suite}: {comparison.name}"
    if summary["a"] is None or summary["b"] is None:
        return f"{head}: skipped: {comparison.notes.get('skipped', 'no samples')}"
    ratio = comparison.ratio
    return (
        f"{head}: {comparison.a_label} {summary['a']['median']:.4g} {comparison.unit}, "
        f"{comparison.b_label} {summary['b']['median']:.4g} {comparison.unit}, "
        f"ratio {comparison.b_label}/{comparison.a_label} "
        + ("n/a" if ratio is None else f"{ratio:.3f}")
        + f" ({summary['pairs']} pairs)"
    )


Collect = Callable[[bool, "Progress | None"], list[Comparison]]


def run_suite_cli(collect_suite: Collect, description: str, argv: Sequence[str] | None) -> None:
    """`--quick` and `--json` for a suite module's `python -m` entry point."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few samples (< 20 s)")
    parser.add_argument("--json", action="store_true", help="print every sample as JSON")
    args = parser.parse_args(argv)
    comparisons = collect_suite(args.quick, lambda message: print(message, file=sys.stderr))
    if args.json:
        print(json.dumps([comparison.to_json() for comparison in comparisons], indent=2))
        return
    for comparison in comparisons:
        print(format_comparison(comparison))


def main(argv: Sequence[str] | None = None) -> None:
    run_suite_cli(collect, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    main()
