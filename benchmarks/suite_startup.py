"""Start-up and footprint: pyvmm against QEMU, a bare interpreter and a minimal C VMM.

Every comparison runs `hello_exit.bin` (a real-mode boot sector, entered at
0000:7c00, that prints "Hello, world!" to COM1 and ends through the
debug-exit port, status 85):

- whole-process time, spawn to reap, against three anchors, each B = `python
  -m pyvmm boot -m 128M hello_exit.bin` (the pyvmm this process imported:
  every command runs in a scratch directory, which no checkout in the
  current directory can shadow):
  - QEMU's PC booting it through SeaBIOS from a 512-byte boot disk (what a
    QEMU user types; SeaBIOS's POST takes seconds here);
  - QEMU in its fastest configuration running the same bytes (below);
  - `python -c pass` on the same interpreter, with the same environment: the
    floor of any start-up written in Python;
- pyvmm with KVM's whole irqchip (`--kernel-irqchip on`) against its
  default split irqchip: what the host's wait at the close costs a boot;
- VM create -> run -> destroy cycles inside one process: the C reference VMM
  (`ref_vmm --cycles N`, with the same irqchip as pyvmm's machine, split by
  default, and KVM's PIT only when pyvmm's has it: `--pit kernel`) against
  pyvmm's `build_machine` + `run` + `close`; then more runs of each under
  `syscall_clock` split each cycle into the time inside the calls that make,
  run and free the VM and the time outside them (Python, for pyvmm), beside
  ref_vmm's cycle called from inside a Python process;
- peak resident memory of one boot with 128 MiB of guest RAM: the C VMM,
  `python -c pass` and the import floor, against `pyvmm boot -m 128M`. Measured with GNU time
  (%M), not with os.wait4 from here: a child spawned by this (large) Python
  process inherits its high-water RSS at exec (see `suite_exits.gnu_time`).

QEMU's fastest configuration (`qemu_microvm_command`), chosen by timing the
candidates in interleaved rounds on the kvm_pvm host this was written on
(QEMU 7.2; two runs of 25 and 15 rounds: medians, and the median of each
round's ratio to the chosen line):

    -M pc, SeaBIOS, IDE boot disk (the row above)          3,324 ms   109x
    -M pc, the 64 KiB jump ROM below                        52-56 ms   1.56-1.75x
    -M microvm (its defaults), jump ROM                     32-36 ms   1.06-1.09x
    -M microvm,x-option-roms=off,pit=off,pic=off,
       isa-serial=on,rtc=off,acpi=off, jump ROM, -m 128M    30-33 ms   1 (chosen)
    ... with -m 2M                                          30-32 ms   0.93-1.03x
    ... and ioapic2=off,pcie=off,smm=off,graphics=off,
        usb=off,mem-merge=off,auto-kernel-cmdline=off       32-33 ms   0.99-1.09x
    ... -cpu host,-arch-capabilities                        31-32 ms   0.99-1.01x
    ... -accel kvm,kernel-irqchip=off (deprecated, warns)   32 ms      0.97-1.06x
    ... -accel kvm,kernel-irqchip=split                     32 ms      1.01-1.06x

Beyond the chosen line no switch moves the time by more than the noise
between the two runs (about 8 %), so it keeps pyvmm's 128 MiB and QEMU's
default CPU model: `-cpu host` (and `-cpu max`) aborts on kvm_pvm, which
refuses MSR 0x10a (IA32_ARCH_CAPABILITIES).

Why a jump ROM: no firmware QEMU ships runs a boot sector on microvm here.
Its default `bios-microvm.bin` is, on Debian, a link to qboot, which boots
only a Linux kernel handed over by fw_cfg and otherwise halts; SeaBIOS's
microvm build (/usr/share/seabios/bios-microvm.bin) cannot read a virtio-blk
boot disk on kvm_pvm ("Boot failed: could not read the boot disk", as SeaBIOS
with q35's AHCI). So `-bios` is a 64 KiB ROM of zeros whose reset vector
(0xfffffff0) holds `ljmp $0, $0x7c00`, and `-device loader` puts
hello_exit.bin at 0x7c00 before the CPU starts: the first instruction after
that jump is the boot sector's, at 0000:7c00, as under pyvmm. What QEMU
still spends (~30 ms) is its own start-up: it loads ~60 shared libraries and
builds the machine before KVM_CREATE_VM (strace).

    python -m benchmarks.suite_startup [--quick] [--json]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
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
    build_ref_vmm_library,
    gnu_time,
    run_measured,
    run_ref_vmm,
    run_suite_cli,
    write_state_file,
)
from benchmarks.syscall_clock import (
    CallTimes,
    build_clock,
    pyvmm_cycle_calls,
    ref_cycle_calls,
    ref_cycles_in_python,
    sum_times,
)
from pyvmm.arch.x86_64 import layout
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
MICROVM_LABEL = "QEMU microvm"
PYTHON_LABEL = "python -c pass"
QEMU_INSTALL = "install with: apt-get install qemu-system-x86"
BOOT_SIGNATURE = b"\x55\xaa"
SECTOR_SIZE = 512
# The jump ROM: QEMU maps a -bios image so that it ends at 4 GiB, in 64 KiB units;
# the CPU's first instruction is at its last 16 bytes (reset vector 0xfffffff0).
ROM_SIZE = 64 * 1024
RESET_VECTOR_OFFSET = ROM_SIZE - 16
JUMP_TO_BOOT_SECTOR = b"\xea\x00\x7c\x00\x00"  # ljmp $0x0000, $0x7c00
JUMP_ROM = "jump-to-7c00.rom"

SUITE = "startup"
BOOT_NAME = "boot to debug exit, whole process"
MICROVM_BOOT_NAME = "boot to debug exit, fastest QEMU"
FASTEST_BOOT_NAME = "boot to debug exit, both without PIT and PIC"
PYTHON_BOOT_NAME = "boot to debug exit, vs bare interpreter"
IRQCHIP_BOOT_NAME = "boot to debug exit, KVM's irqchip vs split"
KVM_IRQCHIP_LABEL = "pyvmm --kernel-irqchip on"
CYCLE_NAME = "create, run, destroy cycle, in one process"
RSS_NAME = f"peak RSS, one boot with -m {RAM_SIZE >> 20}M"
PYTHON_RSS_NAME = "peak RSS, boot vs bare interpreter"
FLOOR_BOOT_NAME = "boot to debug exit, vs its import floor"
FLOOR_RSS_NAME = "peak RSS, boot vs its import floor"
FLOOR_LABEL = "python, import floor"
# The floor's program: import each module named on its command line. A name the
# boot failed to import too (an absent sitecustomize) is passed over, as site does.
FLOOR_PROGRAM = """\
import sys
for name in sys.argv[1:]:
    try:
        __import__(name)
    except ModuleNotFoundError:
        if name == "pyvmm._kvm":
            raise
"""


@dataclass(frozen=True)
class Plan:
    boot_pairs: int  # whole-process boots through SeaBIOS (QEMU takes seconds each)
    cycle_pairs: int
    cycles: int  # create/run/destroy cycles per sample
    rss_pairs: int
    qemu_timeout: float
    fast_boot_pairs: int = 3  # boots against QEMU microvm and against `python -c pass`


QUICK = Plan(
    boot_pairs=1, cycle_pairs=3, cycles=10, rss_pairs=2, qemu_timeout=15, fast_boot_pairs=3
)
FULL = Plan(
    boot_pairs=5, cycle_pairs=10, cycles=50, rss_pairs=5, qemu_timeout=60, fast_boot_pairs=15
)


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


def jump_rom() -> bytes:
    """A 64 KiB firmware whose reset vector jumps to the boot sector at 0000:7c00."""
    rom = bytearray(ROM_SIZE)
    rom[RESET_VECTOR_OFFSET : RESET_VECTOR_OFFSET + len(JUMP_TO_BOOT_SECTOR)] = JUMP_TO_BOOT_SECTOR
    return bytes(rom)


def qemu_microvm_command(qemu: str, rom: Path, image: Path) -> list[str]:
    """QEMU's fastest start for `image`: microvm, the jump ROM, the image at 0x7c00.

    The machine keeps what the guest uses (COM1 on stdout, the debug exit at
    0xf4) and drops the rest: option ROMs, the PIT, the PICs, the RTC and ACPI
    (`-nodefaults -no-user-config` drop every default device and config
    file). `-bios` is the jump ROM (`jump_rom`): microvm's own firmware cannot
    boot a boot sector here (see the module's docstring), and a firmware that
    runs nothing but a jump is the least QEMU can run before the guest.
    `-device loader,...,force-raw=on` copies `image` to 0x7c00 at reset.
    `-m` is pyvmm's RAM size (a smaller one is no faster); the CPU model is
    QEMU's default (`-cpu host` aborts on kvm_pvm).
    """
    return [
        qemu,
        "-accel",
        "kvm",
        "-M",
        "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=off,acpi=off",
        "-m",
        f"{RAM_SIZE >> 20}M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-bios",
        str(rom),
        "-device",
        f"loader,file={image},addr=0x{layout.BOOT_SECTOR_GPA:x},force-raw=on",
    ]


def pyvmm_boot(workdir: Path, *options: str) -> PyvmmChild:
    """`python -m pyvmm boot -m 128M [OPTIONS] hello_exit.bin`, run in `workdir` (with a copy).

    The child writes and reads bytecode caches as on a user's machine: a
    PYTHONDONTWRITEBYTECODE in this environment would have every run compile
    the modules it imports again, which is not what a user waits for.
    """
    child = pyvmm_child("boot", "-m", f"{RAM_SIZE >> 20}M", *options, HELLO_EXIT.name, cwd=workdir)
    child.env.pop("PYTHONDONTWRITEBYTECODE", None)
    return child


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


# --- 1. whole process: QEMU and a bare interpreter against pyvmm -------------------


def boot_seconds(
    what: str,
    command: list[str],
    timeout: float,
    workdir: Path,
    env: dict[str, str] | None = None,
) -> float:
    """Seconds from spawn to reap of one boot that printed the greeting and ended with 85."""
    return check_boot(what, run_measured(command, timeout, workdir, env=env)).seconds


def probe_qemu(
    comparison: Comparison, label: str, command: list[str], timeout: float, workdir: Path
) -> ProcessResult | None:
    """One untimed boot: QEMU must work on this host before it is timed (None: skipped).

    Run under GNU time when there is one, which gives QEMU's peak RSS.
    """
    try:
        return check_boot(label, run_measured(command, timeout, workdir, peak_rss=True))
    except (BootFailed, TimeoutError) as error:
        comparison.notes["skipped"] = f"QEMU cannot boot the guest here: {error}"
        return None


def compare_boot(
    plan: Plan, workdir: Path, qemu: str, progress: Progress | None
) -> tuple[Comparison, int | None]:
    """QEMU + SeaBIOS against pyvmm, and QEMU's peak RSS in KiB (None if not measured)."""
    comparison = Comparison(SUITE, BOOT_NAME, QEMU_LABEL, PYVMM_LABEL, "ms")
    qemu_path = shutil.which(qemu)
    if qemu_path is None:
        comparison.notes["skipped"] = f"{qemu} not found: {QEMU_INSTALL}"
        return comparison, None
    disk = workdir / "hello_exit.img"
    disk.write_bytes(boot_sector(HELLO_EXIT.read_bytes()))
    pyvmm = pyvmm_boot(workdir)
    command = qemu_command(qemu_path, disk)
    comparison.notes.update(
        {
            "qemu_command": " ".join(qemu_command(qemu, Path(disk.name))),
            "qemu_version": version_line(qemu_path),
            "pyvmm_command": " ".join(["python", *pyvmm.argv[1:]]),
            "host_kvm": kvm_backend(),
        }
    )
    return time_against_qemu(
        comparison, QEMU_LABEL, command, pyvmm, plan, plan.boot_pairs, workdir, progress
    )


def compare_boot_microvm(
    plan: Plan,
    workdir: Path,
    qemu: str,
    progress: Progress | None,
    *pyvmm_options: str,
    name: str = MICROVM_BOOT_NAME,
) -> tuple[Comparison, int | None]:
    """QEMU microvm with the jump ROM against pyvmm, and QEMU's peak RSS in KiB (or None).

    `pyvmm_options` choose pyvmm's machine: none is its default PC; the
    fastest row gives `--kernel-irqchip off`, pyvmm's counterpart of
    microvm's pit=off, pic=off (the guest takes no interrupt).
    """
    label = " ".join([PYVMM_LABEL, *pyvmm_options])
    comparison = Comparison(SUITE, name, MICROVM_LABEL, label, "ms")
    qemu_path = shutil.which(qemu)
    if qemu_path is None:
        comparison.notes["skipped"] = f"{qemu} not found: {QEMU_INSTALL}"
        return comparison, None
    rom = workdir / JUMP_ROM
    rom.write_bytes(jump_rom())
    image = workdir / HELLO_EXIT.name
    pyvmm = pyvmm_boot(workdir, *pyvmm_options)
    command = qemu_microvm_command(qemu_path, rom, image)
    comparison.notes.update(
        {
            "qemu_command": " ".join(qemu_microvm_command(qemu, Path(rom.name), Path(image.name))),
            "qemu_version": version_line(qemu_path),
            "firmware": f"{JUMP_ROM}: {ROM_SIZE // 1024} KiB of zeros but "
            f"{JUMP_TO_BOOT_SECTOR.hex(' ')} (ljmp $0, $0x7c00) at the reset vector",
            "pyvmm_command": " ".join(["python", *pyvmm.argv[1:]]),
            "host_kvm": kvm_backend(),
        }
    )
    return time_against_qemu(
        comparison, MICROVM_LABEL, command, pyvmm, plan, plan.fast_boot_pairs, workdir, progress
    )


def time_against_qemu(
    comparison: Comparison,
    label: str,
    command: list[str],
    pyvmm: PyvmmChild,
    plan: Plan,
    pairs: int,
    workdir: Path,
    progress: Progress | None,
) -> tuple[Comparison, int | None]:
    """Probe QEMU's `command`, then time it against pyvmm in `pairs` interleaved pairs.

    Returns the comparison and QEMU's peak RSS in KiB (None when QEMU could
    not boot the guest: the probe noted why in the comparison).
    """
    probe = probe_qemu(comparison, label, command, plan.qemu_timeout, workdir)
    if probe is None:
        return comparison, None
    boot_seconds(PYVMM_LABEL, pyvmm.argv, 60, workdir, pyvmm.env)  # bytecode caches, page cache
    interleave(
        comparison,
        lambda: boot_seconds(label, command, plan.qemu_timeout, workdir) * 1000,
        lambda: boot_seconds(PYVMM_LABEL, pyvmm.argv, 60, workdir, pyvmm.env) * 1000,
        pairs,
        progress,
    )
    comparison.notes.update(
        {
            "qemu_peak_rss_kib": probe.max_rss_kib,
            "timed": "spawn to exit of the whole process; each VMM printed the greeting "
            f"and exited with status {HELLO_EXIT_STATUS}",
        }
    )
    return comparison, probe.max_rss_kib


def bare_python(pyvmm: PyvmmChild) -> list[str]:
    """`python -c pass` on the interpreter that runs pyvmm's child."""
    return [pyvmm.argv[0], "-c", "pass"]


def import_floor(pyvmm: PyvmmChild, workdir: Path) -> list[str]:
    """The interpreter importing what pyvmm's boot imports, pyvmm's own modules excepted,
    and the compiled binding: the modules `python -X importtime` lists for that boot."""
    argv = [pyvmm.argv[0], "-X", "importtime", *pyvmm.argv[1:]]
    result = subprocess.run(
        argv, cwd=workdir, env=pyvmm.env, capture_output=True, timeout=60, check=False
    )
    if result.returncode != HELLO_EXIT_STATUS:
        raise BootFailed(f"pyvmm under -X importtime ended with status {result.returncode}")
    names = []
    for line in result.stderr.decode(errors="replace").splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "imported package" and name.split(".")[0] != "pyvmm":
                names.append(name)
    return [pyvmm.argv[0], "-c", FLOOR_PROGRAM, *names, "pyvmm._kvm"]


def anchor_command(anchor: list[str]) -> str:
    """An anchor's command for the notes: the interpreter as `python`, the module names counted."""
    names = len(anchor) - 3
    return " ".join(["python", *anchor[1:3]]) + (f" ({names} module names)" if names > 0 else "")


def run_anchor(argv: list[str], label: str, workdir: Path, env: Mapping[str, str], *,
               peak_rss: bool = False) -> ProcessResult:  # fmt: skip
    result = run_measured(argv, 60, workdir, peak_rss=peak_rss, env=env)
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise BootFailed(f"{label} ended with status {result.returncode}: {' '.join(tail)}")
    return result


def compare_boot_python(plan: Plan, workdir: Path, progress: Progress | None) -> Comparison:
    """`python -c pass` (same interpreter, same environment) against pyvmm's whole boot."""
    pyvmm = pyvmm_boot(workdir)
    return _compare_boot_anchor(
        plan, workdir, progress, PYTHON_BOOT_NAME, PYTHON_LABEL, bare_python(pyvmm)
    )


def compare_boot_floor(
    plan: Plan, workdir: Path, progress: Progress | None, floor: list[str]
) -> Comparison:
    """pyvmm's import floor (the command `import_floor` made) against pyvmm's whole boot."""
    comparison = _compare_boot_anchor(plan, workdir, progress, FLOOR_BOOT_NAME, FLOOR_LABEL, floor)
    comparison.notes["floor_modules"] = floor[3:]
    return comparison


def _compare_boot_anchor(
    plan: Plan,
    workdir: Path,
    progress: Progress | None,
    name: str,
    label: str,
    anchor: list[str],
) -> Comparison:
    comparison = Comparison(SUITE, name, label, PYVMM_LABEL, "ms")
    pyvmm = pyvmm_boot(workdir)
    comparison.notes.update(
        {
            "python_command": anchor_command(anchor),
            "pyvmm_command": " ".join(["python", *pyvmm.argv[1:]]),
            "python_version": sys.version.split()[0],
            "timed": "spawn to exit of the whole process, both with pyvmm's environment; "
            "B - A is what pyvmm adds to its anchor's start-up",
        }
    )
    run_anchor(anchor, label, workdir, pyvmm.env)
    boot_seconds(PYVMM_LABEL, pyvmm.argv, 60, workdir, pyvmm.env)
    interleave(
        comparison,
        lambda: run_anchor(anchor, label, workdir, pyvmm.env).seconds * 1000,
        lambda: boot_seconds(PYVMM_LABEL, pyvmm.argv, 60, workdir, pyvmm.env) * 1000,
        plan.fast_boot_pairs,
        progress,
    )
    added = [b - a for a, b in zip(comparison.a, comparison.b, strict=True)]
    comparison.notes["pyvmm_added_ms_median"] = statistics.median(added)
    return comparison


def compare_boot_irqchips(plan: Plan, workdir: Path, progress: Progress | None) -> Comparison:
    """pyvmm with KVM's whole irqchip (A) against its default split irqchip (B).

    The same guest and machine but where the PICs and the IOAPIC are: B/A
    below 1 is what the host's wait at the close of a VM made with
    KVM_CREATE_IRQCHIP costs a short run (README, "The price of Python").
    """
    comparison = Comparison(SUITE, IRQCHIP_BOOT_NAME, KVM_IRQCHIP_LABEL, PYVMM_LABEL, "ms")
    kernel = pyvmm_boot(workdir, "--kernel-irqchip", "on")
    split = pyvmm_boot(workdir)
    comparison.notes["commands"] = {
        KVM_IRQCHIP_LABEL: " ".join(["python", *kernel.argv[1:]]),
        PYVMM_LABEL: " ".join(["python", *split.argv[1:]]),
    }
    boot_seconds(KVM_IRQCHIP_LABEL, kernel.argv, 60, workdir, kernel.env)
    boot_seconds(PYVMM_LABEL, split.argv, 60, workdir, split.env)
    interleave(
        comparison,
        lambda: boot_seconds(KVM_IRQCHIP_LABEL, kernel.argv, 60, workdir, kernel.env) * 1000,
        lambda: boot_seconds(PYVMM_LABEL, split.argv, 60, workdir, split.env) * 1000,
        plan.fast_boot_pairs,
        progress,
    )
    return comparison


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


def compare_cycles(
    plan: Plan,
    binary: Path,
    state: Path,
    progress: Progress | None,
    bare_state: Path | None = None,
) -> Comparison:
    """ref_vmm against pyvmm; `bare_state` (the state without the irqchip flag), if given,
    gives one more C sample for the notes: what the in-kernel irqchip costs a cycle."""
    comparison = Comparison(SUITE, CYCLE_NAME, C_LABEL, PYVMM_LABEL, "ms/cycle")
    image = HELLO_EXIT.read_bytes()
    exits: dict[str, list[int]] = {C_LABEL: [], PYVMM_LABEL: []}
    c_run_ms: list[float] = []

    def c_sample() -> float:
        run = run_ref_vmm(binary, state, cycles=plan.cycles)
        ended = (run.debug_exits, run.debug_exit) == (plan.cycles, HELLO_DEBUG_EXIT)
        if run.console != HELLO_OUTPUT * plan.cycles or not ended:
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
    if bare_state is not None:
        bare = run_ref_vmm(binary, bare_state, cycles=plan.cycles)
        comparison.notes["c_ms_per_cycle_without_irqchip"] = bare.total_ns / 1e6 / plan.cycles
    comparison.notes["system_calls"] = split_cycles(binary, state, plan.cycles, progress)
    comparison.notes.update(
        {
            "cycles_per_sample": plan.cycles,
            "exits_per_cycle": exits,
            "ram_size_mib": RAM_SIZE >> 20,
            "cycle": "open /dev/kvm, create VM, map RAM, load image, in-kernel irqchip "
            "with the PICs as a BIOS leaves them (pyvmm's PIT is its own), create vCPU, "
            "CPUID, registers, run to the debug exit, unmap and close everything",
            "c_machine": "the same KVM objects as pyvmm's default machine (ref_vmm reads "
            "the irqchip flag from the state file); pyvmm's devices, firmware tables and "
            "threads are pyvmm's own cost (the tables reach ref_vmm as memory pages)",
            "c_run_loop_ms_per_cycle_median": statistics.median(c_run_ms),
            "cycles_per_second": {
                C_LABEL: 1000 / statistics.median(comparison.a),
                PYVMM_LABEL: 1000 / statistics.median(comparison.b),
            },
        }
    )
    return comparison


SPLIT_ROUNDS = 3  # rounds of the three runs below; the notes give medians
SPLIT_CYCLES_PER_SAMPLE = 6  # times a sample's cycles: one run is one long sample


def split_cycles(binary: Path, state: Path, cycles: int, progress: Progress | None) -> dict:
    """More runs of each VMM, under syscall_clock: each cycle's time inside the calls
    that make, run and free a VM, and outside them (see benchmarks/syscall_clock.py);
    and ref_vmm's cycles called from a Python child, without the clock."""
    cycles *= SPLIT_CYCLES_PER_SAMPLE
    figures: dict[str, list[float]] = {
        name: [] for name in ("c", "c_calls", "pyvmm", "pyvmm_calls", "c_in_python")
    }
    c_calls: list[CallTimes] = []
    pyvmm_calls: list[CallTimes] = []
    try:
        clock = build_clock(binary.parent)
        library = build_ref_vmm_library(binary.parent)
        for _ in range(SPLIT_ROUNDS):
            ref, calls = ref_cycle_calls(binary, state, clock, cycles)
            figures["c"].append(ref.total_ns / 1e6 / cycles)
            figures["c_calls"].append(calls.total_ns / 1e6 / cycles)
            c_calls.append(calls)
            seconds, calls = pyvmm_cycle_calls(clock, cycles)
            figures["pyvmm"].append(seconds * 1000 / cycles)
            figures["pyvmm_calls"].append(calls.total_ns / 1e6 / cycles)
            pyvmm_calls.append(calls)
            in_python = ref_cycles_in_python(library, state, cycles)
            figures["c_in_python"].append(in_python.total_ns / 1e6 / cycles)
    except RefVmmError as error:
        if progress is not None:
            progress(f"{SUITE}: the cycle's system-call split skipped: {error}")
        return {"skipped": str(error)}
    ms = {name: statistics.median(values) for name, values in figures.items()}
    return {
        "clocked": "every ioctl, close, mmap and munmap, by an LD_PRELOAD library "
        f"(syscall_clock.c); {SPLIT_ROUNDS} rounds of one run of each VMM, apart from "
        "the pairs; medians",
        "cycles_per_run": cycles,
        "cycle_ms": {C_LABEL: ms["c"], PYVMM_LABEL: ms["pyvmm"]},
        "inside_calls_ms": {C_LABEL: ms["c_calls"], PYVMM_LABEL: ms["pyvmm_calls"]},
        "outside_calls_ms": {
            C_LABEL: ms["c"] - ms["c_calls"],
            PYVMM_LABEL: ms["pyvmm"] - ms["pyvmm_calls"],
        },
        # pyvmm's calls alone against C's whole cycle: the ratio with no Python at all.
        "pyvmm_calls_over_c_cycle": ms["pyvmm_calls"] / ms["c"],
        # The C cycle called from a Python child that imported pyvmm (no clock):
        # what being a Python process costs the kernel's calls by itself.
        "c_cycle_ms_inside_python": ms["c_in_python"],
        "calls_per_cycle": {
            C_LABEL: sum_times(c_calls).per_cycle(cycles * SPLIT_ROUNDS),
            PYVMM_LABEL: sum_times(pyvmm_calls).per_cycle(cycles * SPLIT_ROUNDS),
        },
    }


# --- 3. peak resident memory ------------------------------------------------------

RSS_GUEST_RAM_NOTE = (
    "mmap'd MAP_NORESERVE by both VMMs: only the pages the VMM or the guest touch are "
    "resident, so these figures are each VMM's own resident memory plus a few guest "
    "pages, not guest RAM"
)
RSS_MEASURED_NOTE = (
    "GNU time's %M (the command's own ru_maxrss, forked from a small process) for one "
    "run each; os.wait4 from this process would report at least this process's own "
    "high-water RSS, which a spawned child inherits at exec"
)


def pyvmm_peak_rss(workdir: Path) -> float:
    """KiB: the peak RSS of one `pyvmm boot -m 128M hello_exit.bin`, under GNU time."""
    pyvmm = pyvmm_boot(workdir)
    result = run_measured(pyvmm.argv, 60, workdir, peak_rss=True, env=pyvmm.env)
    rss = check_boot(PYVMM_LABEL, result).max_rss_kib
    if rss is None:
        raise BootFailed("GNU time reported no peak RSS for pyvmm")
    return float(rss)


def compare_rss(
    plan: Plan,
    binary: Path,
    state: Path,
    workdir: Path,
    qemu_rss: Mapping[str, int | None],
    progress: Progress | None,
) -> Comparison:
    """The C VMM against pyvmm; `qemu_rss` (KiB by QEMU label) goes into the notes."""
    comparison = Comparison(SUITE, RSS_NAME, C_LABEL, PYVMM_LABEL, "KiB")
    if gnu_time() is None:
        comparison.notes["skipped"] = NO_GNU_TIME
        return comparison

    def c_sample() -> float:
        run = run_ref_vmm(binary, state, cycles=1, peak_rss=True)
        if run.console != HELLO_OUTPUT or run.max_rss_kib is None:
            raise RefVmmError(f"ref_vmm printed {run.console[:80]!r}")
        return float(run.max_rss_kib)

    interleave(comparison, c_sample, lambda: pyvmm_peak_rss(workdir), plan.rss_pairs, progress)
    pyvmm = pyvmm_boot(workdir)
    bare = run_anchor(bare_python(pyvmm), PYTHON_LABEL, workdir, pyvmm.env, peak_rss=True)
    comparison.notes.update(
        {
            "guest_ram_kib": RAM_SIZE >> 10,
            "guest_ram": RSS_GUEST_RAM_NOTE,
            "python_c_pass_peak_rss_kib": bare.max_rss_kib,
            "qemu_peak_rss_kib": dict(qemu_rss),
            "measured": RSS_MEASURED_NOTE,
        }
    )
    return comparison


def compare_rss_python(
    plan: Plan, workdir: Path, qemu_rss: Mapping[str, int | None], progress: Progress | None
) -> Comparison:
    """`python -c pass` (same interpreter, same environment) against pyvmm's boot."""
    pyvmm = pyvmm_boot(workdir)
    comparison = _compare_rss_anchor(
        plan, workdir, progress, PYTHON_RSS_NAME, PYTHON_LABEL, bare_python(pyvmm)
    )
    if "skipped" not in comparison.notes:
        comparison.notes["qemu_peak_rss_kib"] = dict(qemu_rss)
    return comparison


def compare_rss_floor(
    plan: Plan, workdir: Path, progress: Progress | None, floor: list[str]
) -> Comparison:
    """pyvmm's import floor (the command `import_floor` made) against pyvmm's boot."""
    comparison = _compare_rss_anchor(plan, workdir, progress, FLOOR_RSS_NAME, FLOOR_LABEL, floor)
    if "skipped" not in comparison.notes:
        comparison.notes["floor_modules"] = floor[3:]
    return comparison


def _compare_rss_anchor(
    plan: Plan,
    workdir: Path,
    progress: Progress | None,
    name: str,
    label: str,
    anchor: list[str],
) -> Comparison:
    comparison = Comparison(SUITE, name, label, PYVMM_LABEL, "KiB")
    if gnu_time() is None:
        comparison.notes["skipped"] = NO_GNU_TIME
        return comparison
    env = pyvmm_boot(workdir).env

    def anchor_sample() -> float:
        rss = run_anchor(anchor, label, workdir, env, peak_rss=True).max_rss_kib
        if rss is None:
            raise BootFailed(f"GNU time reported no peak RSS for {label}")
        return float(rss)

    interleave(comparison, anchor_sample, lambda: pyvmm_peak_rss(workdir), plan.rss_pairs, progress)
    added = [b - a for a, b in zip(comparison.a, comparison.b, strict=True)]
    comparison.notes.update(
        {
            "python_command": anchor_command(anchor),
            "guest_ram_kib": RAM_SIZE >> 10,
            "guest_ram": RSS_GUEST_RAM_NOTE,
            "pyvmm_added_kib_median": statistics.median(added),
            "measured": RSS_MEASURED_NOTE,
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
    """Whole-process boot vs QEMU (SeaBIOS, microvm), a bare interpreter and pyvmm's import
    floor, in-process cycles vs the C VMM, peak RSS vs the C VMM, a bare interpreter and
    the import floor.

    `plan` overrides the quick/full sample counts; `qemu` names the QEMU binary.
    """
    plan = plan or (QUICK if quick else FULL)
    with tempfile.TemporaryDirectory(prefix="pyvmm-bench-") as directory:
        workdir = Path(directory)
        shutil.copyfile(HELLO_EXIT, workdir / HELLO_EXIT.name)  # what `pyvmm boot` boots
        boot, seabios_rss = compare_boot(plan, workdir, qemu, progress)
        microvm, microvm_rss = compare_boot_microvm(plan, workdir, qemu, progress)
        fastest, _ = compare_boot_microvm(
            plan, workdir, qemu, progress, "--kernel-irqchip", "off", name=FASTEST_BOOT_NAME
        )
        for row in (boot, microvm, fastest):
            if progress is not None and "skipped" in row.notes:
                progress(f"{SUITE}: {row.name}: skipped: {row.notes['skipped']}")
        qemu_rss = {QEMU_LABEL: seabios_rss, MICROVM_LABEL: microvm_rss}
        python_boot = compare_boot_python(plan, workdir, progress)
        floor = import_floor(pyvmm_boot(workdir), workdir)
        floor_boot = compare_boot_floor(plan, workdir, progress, floor)
        irqchips = compare_boot_irqchips(plan, workdir, progress)
        python_rss = compare_rss_python(plan, workdir, qemu_rss, progress)
        floor_rss = compare_rss_floor(plan, workdir, progress, floor)
        try:
            binary = build_ref_vmm(workdir)
        except RefVmmError as error:
            if progress is not None:
                progress(f"{SUITE}: C reference VMM skipped: {error}")
            cycle = skipped(CYCLE_NAME, "ms/cycle", str(error))
            rss = skipped(RSS_NAME, "KiB", str(error))
        else:
            state = workdir / "state-hello_exit.bin"
            bare_state = workdir / "state-hello_exit-no-irqchip.bin"
            with build_machine(
                MachineConfig(HELLO_EXIT.read_bytes(), RAM_SIZE, lambda data: None)
            ) as machine:
                write_state_file(machine, state)
                write_state_file(machine, bare_state, irqchip=False)
            cycle = compare_cycles(plan, binary, state, progress, bare_state)
            rss = compare_rss(plan, binary, state, workdir, qemu_rss, progress)
        return [
            boot, microvm, fastest, python_boot, floor_boot, irqchips, cycle, rss, python_rss,
            floor_rss,
        ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    run_suite_cli(collect, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    main()
