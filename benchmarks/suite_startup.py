"""Start-up and footprint: pyvmm against QEMU and against a minimal C VMM.

Three comparisons, all on `hello_exit.bin` (a boot sector that prints
"Hello, world!" and ends through the debug-exit port, status 85):

- whole-process time, fork to reap: `qemu-system-x86_64 -enable-kvm` booting
  it through SeaBIOS from a 512-byte boot disk, against `python -m pyvmm boot`
  (the pyvmm this process imported: both run in a scratch directory, which
  no checkout in the current directory can shadow);
- VM create -> run -> destroy cycles inside one process: the C reference VMM
  (`ref_vmm --cycles N`) against pyvmm's `build_machine` + `run` + `close`;
- peak resident memory of one boot with 128 MiB of guest RAM (the C VMM
  against `pyvmm boot -m 128M`), from each child's own rusage.

    python -m benchmarks.suite_startup [--quick] [--json]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.comparison import Comparison, Progress, interleave
from benchmarks.suite_exits import (
    C_LABEL,
    NO_GNU_TIME,
    PYVMM_LABEL,
    RAM_SIZE,
    ProcessResult,
    RefVmmError,
    build_ref_vmm,
    gnu_time,
    run_measured,
    run_ref_vmm,
    run_suite_cli,
    write_state_file,
)
from pyvmm.kvm.host import kvm_backend
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind
from pyvmm.shipped import PyvmmChild, pyvmm_child

HELLO_EXIT = Path(__file__).resolve().parent / "hello_exit.bin"
HELLO_OUTPUT = b"Hello, world!\n"
HELLO_DEBUG_EXIT = 0x2A
HELLO_EXIT_STATUS = (HELLO_DEBUG_EXIT << 1) | 1  # 85, under pyvmm and QEMU alike
HELLO_EXITS = len(HELLO_OUTPUT) + 1  # one `out` per character, then the debug exit

QEMU = "qemu-system-x86_64"
QEMU_LABEL = "QEMU + SeaBIOS"
QEMU_INSTALL = "install with: apt-get install qemu-system-x86"
BOOT_SIGNATURE = b"\x55\xaa"
SECTOR_SIZE = 512

SUITE = "startup"
BOOT_NAME = "boot to debug exit, whole process"
CYCLE_NAME = "create, run, destroy cycle, in one process"
RSS_NAME = f"peak RSS, one boot with -m {RAM_SIZE >> 20}M"


@dataclass(frozen=True)
class Plan:
    boot_pairs: int  # whole-process boots (QEMU takes seconds each)
    cycle_pairs: int
    cycles: int  # create/run/destroy cycles per sample
    rss_pairs: int
    qemu_timeout: float


QUICK = Plan(boot_pairs=1, cycle_pairs=3, cycles=10, rss_pairs=2, qemu_timeout=15)
FULL = Plan(boot_pairs=5, cycle_pairs=10, cycles=50, rss_pairs=5, qemu_timeout=60)


class BootFailed(Exception):
    """A VMM did not print the greeting and end with status 85."""


def boot_sector(image: bytes) -> bytes:
    """`image` padded to one 512-byte sector, with the BIOS boot signature at 510."""
    room = SECTOR_SIZE - len(BOOT_SIGNATURE)
    if len(image) > room:
        raise ValueError(f"a boot sector holds {room} bytes of code, not {len(image)}")
    return image.ljust(room, b"\0") + BOOT_SIGNATURE


def qemu_command(qemu: str, disk: Path) -> list[str]:
    """QEMU's PC machine booting `disk`; COM1 on stdout, debug-exit at 0xf4.

    `-machine pc`, not q35: on a kvm_pvm host SeaBIOS could not read the boot
    disk through q35's AHCI controller ("Boot failed: could not read the boot
    disk") and QEMU spun until killed; the PIIX IDE disk boots. `-nodefaults`
    drops the VGA card and NIC (and their option ROMs) that pyvmm has no
    equivalent of either.
    """
    return [
        qemu,
        "-enable-kvm",
        "-machine",
        "pc",
        "-m",
        f"{RAM_SIZE >> 20}M",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-drive",
        f"format=raw,file={disk}",
    ]


def pyvmm_boot(workdir: Path) -> PyvmmChild:
    """`python -m pyvmm boot -m 128M hello_exit.bin`, run in `workdir` (which holds a copy)."""
    return pyvmm_child("boot", "-m", f"{RAM_SIZE >> 20}M", HELLO_EXIT.name, cwd=workdir)


def check_boot(what: str, result: ProcessResult) -> ProcessResult:
    if result.returncode != HELLO_EXIT_STATUS or HELLO_OUTPUT not in result.stdout:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BootFailed(
            f"{what} ended with status {result.returncode} and output "
            f"{result.stdout[-80:]!r}" + (f": {' / '.join(tail)}" if tail else "")
        )
    return result


def version_line(command: str) -> str:
    result = subprocess.run([command, "--version"], capture_output=True, text=True)
    return result.stdout.splitlines()[0] if result.stdout else "unknown"


# --- 1. whole process: QEMU against pyvmm ------------------------------------------


def compare_boot(
    plan: Plan, workdir: Path, qemu: str, progress: Progress | None
) -> tuple[Comparison, int | None]:
    """The whole-process comparison, and QEMU's peak RSS in KiB (None if not measured)."""
    comparison = Comparison(SUITE, BOOT_NAME, QEMU_LABEL, PYVMM_LABEL, "ms")
    qemu_path = shutil.which(qemu)
    if qemu_path is None:
        comparison.notes["skipped"] = f"{qemu} not found: {QEMU_INSTALL}"
        return comparison, None
    disk = workdir / "hello_exit.img"
    disk.write_bytes(boot_sector(HELLO_EXIT.read_bytes()))
    pyvmm = pyvmm_boot(workdir)
    comparison.notes.update(
        {
            "qemu_command": " ".join(qemu_command(qemu, Path("hello_exit.img"))),
            "qemu_version": version_line(qemu_path),
            "pyvmm_command": " ".join(["python", *pyvmm.argv[1:]]),
            "host_kvm": kvm_backend(),
        }
    )

    def boot(what: str, command: list[str], timeout: float, env: dict[str, str] | None) -> float:
        return check_boot(what, run_measured(command, timeout, workdir, env=env)).seconds

    # One untimed boot of each first: QEMU must work on this host before it is timed,
    # and this boot (under GNU time, when there is one) gives its peak RSS.
    try:
        probe = check_boot(
            QEMU_LABEL,
            run_measured(qemu_command(qemu_path, disk), plan.qemu_timeout, workdir, peak_rss=True),
        )
    except (BootFailed, TimeoutError) as error:
        comparison.notes["skipped"] = f"QEMU cannot boot the guest here: {error}"
        return comparison, None
    boot(PYVMM_LABEL, pyvmm.argv, 60, pyvmm.env)
    baseline: list[float] = []

    def boot_pyvmm_and_bare_python() -> float:
        baseline.append(run_measured([sys.executable, "-c", "pass"], 60, workdir).seconds * 1000)
        return boot(PYVMM_LABEL, pyvmm.argv, 60, pyvmm.env) * 1000

    interleave(
        comparison,
        lambda: boot(QEMU_LABEL, qemu_command(qemu_path, disk), plan.qemu_timeout, None) * 1000,
        boot_pyvmm_and_bare_python,
        plan.boot_pairs,
        progress,
    )
    comparison.notes.update(
        {
            "qemu_peak_rss_kib": probe.max_rss_kib,
            "python_c_pass_ms_median": statistics.median(baseline),
            "timed": "spawn to exit of the whole process; each VMM printed the greeting "
            f"and exited with status {HELLO_EXIT_STATUS}",
        }
    )
    return comparison, probe.max_rss_kib


# --- 2. create, run, destroy inside one process -------------------------------------


def pyvmm_cycles(image: bytes, cycles: int) -> tuple[float, int]:
    """(seconds for `cycles` build_machine + run + close, exits of the last cycle)."""
    console = bytearray()
    exits = 0
    started = time.perf_counter()
    for _ in range(cycles):
        with build_machine(MachineConfig(image, RAM_SIZE, console.extend)) as machine:
            outcome = machine.run()
            exits = machine.loop.exit_count
        if outcome.kind is not OutcomeKind.DEBUG_EXIT or outcome.exit_status != HELLO_EXIT_STATUS:
            raise BootFailed(f"pyvmm: {outcome.message}")
    seconds = time.perf_counter() - started
    if bytes(console) != HELLO_OUTPUT * cycles:
        raise BootFailed(f"pyvmm printed {bytes(console)[:80]!r}")
    return seconds, exits


def compare_cycles(plan: Plan, binary: Path, state: Path, progress: Progress | None) -> Comparison:
    comparison = Comparison(SUITE, CYCLE_NAME, C_LABEL, PYVMM_LABEL, "ms/cycle")
    image = HELLO_EXIT.read_bytes()
    exits: dict[str, list[int]] = {C_LABEL: [], PYVMM_LABEL: []}
    c_run_ms: list[float] = []

    def c_sample() -> float:
        run = run_ref_vmm(binary, state, cycles=plan.cycles)
        if run.console != HELLO_OUTPUT * plan.cycles or run.debug_exit != HELLO_DEBUG_EXIT:
            raise RefVmmError(f"ref_vmm printed {run.console[:80]!r}, debug exit {run.debug_exit}")
        exits[C_LABEL].append(run.exits // plan.cycles)
        c_run_ms.append(run.run_ns / 1e6 / plan.cycles)
        return run.total_ns / 1e6 / plan.cycles

    def pyvmm_sample() -> float:
        seconds, last_exits = pyvmm_cycles(image, plan.cycles)
        exits[PYVMM_LABEL].append(last_exits)
        return seconds * 1000 / plan.cycles

    pyvmm_cycles(image, 1)  # imports and first-use costs stay out of the samples
    interleave(comparison, c_sample, pyvmm_sample, plan.cycle_pairs, progress)
    comparison.notes.update(
        {
            "cycles_per_sample": plan.cycles,
            "exits_per_cycle": exits,
            "ram_size_mib": RAM_SIZE >> 20,
            "cycle": "open /dev/kvm, create VM, map RAM, load image, create vCPU, CPUID, "
            "registers, run to the debug exit, unmap and close everything",
            "c_run_loop_ms_per_cycle_median": statistics.median(c_run_ms),
            "cycles_per_second": {
                C_LABEL: 1000 / statistics.median(comparison.a),
                PYVMM_LABEL: 1000 / statistics.median(comparison.b),
            },
        }
    )
    return comparison


# --- 3. peak resident memory ------------------------------------------------------


def compare_rss(
    plan: Plan,
    binary: Path,
    state: Path,
    workdir: Path,
    qemu_rss: int | None,
    progress: Progress | None,
) -> Comparison:
    comparison = Comparison(SUITE, RSS_NAME, C_LABEL, PYVMM_LABEL, "KiB")
    if gnu_time() is None:
        comparison.notes["skipped"] = NO_GNU_TIME
        return comparison

    def c_sample() -> float:
        run = run_ref_vmm(binary, state, cycles=1, peak_rss=True)
        if run.console != HELLO_OUTPUT or run.max_rss_kib is None:
            raise RefVmmError(f"ref_vmm printed {run.console[:80]!r}")
        return float(run.max_rss_kib)

    def pyvmm_sample() -> float:
        pyvmm = pyvmm_boot(workdir)
        result = run_measured(pyvmm.argv, 60, workdir, peak_rss=True, env=pyvmm.env)
        rss = check_boot(PYVMM_LABEL, result).max_rss_kib
        if rss is None:
            raise BootFailed("GNU time reported no peak RSS for pyvmm")
        return float(rss)

    interleave(comparison, c_sample, pyvmm_sample, plan.rss_pairs, progress)
    bare = run_measured([sys.executable, "-c", "pass"], 60, peak_rss=True).max_rss_kib
    comparison.notes.update(
        {
            "guest_ram_kib": RAM_SIZE >> 10,
            "guest_ram": "mmap'd MAP_NORESERVE by both VMMs: only the pages the VMM or the "
            "guest touch are resident, so these figures are each VMM's own resident memory "
            "plus a few guest pages, not guest RAM",
            "python_c_pass_peak_rss_kib": bare,
            "qemu_peak_rss_kib": qemu_rss,
            "measured": "GNU time's %M (the command's own ru_maxrss, forked from a small "
            "process) for one boot each",
        }
    )
    return comparison


# --- the suite --------------------------------------------------------------------


def skipped(name: str, unit: str, reason: str) -> Comparison:
    comparison = Comparison(SUITE, name, C_LABEL, PYVMM_LABEL, unit)
    comparison.notes["skipped"] = reason
    return comparison


def collect(
    quick: bool,
    progress: Progress | None = None,
    *,
    plan: Plan | None = None,
    qemu: str = QEMU,
) -> list[Comparison]:
    """Whole-process boot vs QEMU, in-process cycles and peak RSS vs the C VMM.

    `plan` overrides the quick/full sample counts; `qemu` names the QEMU binary.
    """
    plan = plan or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="pyvmm-bench-") as directory:
        workdir = Path(directory)
        shutil.copyfile(HELLO_EXIT, workdir / HELLO_EXIT.name)  # what `pyvmm boot` boots
        boot, qemu_rss = compare_boot(plan, workdir, qemu, progress)
        if progress is not None and "skipped" in boot.notes:
            progress(f"{SUITE}: {boot.name}: skipped: {boot.notes['skipped']}")
        try:
            binary = build_ref_vmm(workdir)
        except RefVmmError as error:
            if progress is not None:
                progress(f"{SUITE}: C reference VMM skipped: {error}")
            return [
                boot,
                skipped(CYCLE_NAME, "ms/cycle", str(error)),
                skipped(RSS_NAME, "KiB", str(error)),
            ]
        state = workdir / "state-hello_exit.bin"
        with build_machine(
            MachineConfig(HELLO_EXIT.read_bytes(), RAM_SIZE, lambda data: None)
        ) as machine:
            write_state_file(machine, state)
        return [
            boot,
            compare_cycles(plan, binary, state, progress),
            compare_rss(plan, binary, state, workdir, qemu_rss, progress),
        ]


def main(argv: Sequence[str] | None = None) -> None:
    run_suite_cli(collect, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    main()
