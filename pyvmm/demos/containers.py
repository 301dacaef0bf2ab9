"""Containers and VMs: one workload as a plain process, as an OCI container and in a pyvmm VM.

guests/container/workload.elf, a static executable with no C library, runs
as a child process, then as the only process of an OCI container that a
real runtime (crun or runc, the first on PATH that can start one here)
starts from a bundle this demo writes; its int_loop kernel, the same machine
code, runs in a pyvmm guest at CPL3. For each the demo measures the start-up
to the workload's first instruction, the peak memory, the compute speed
against native and the cost of one crossing to what serves the workload (a
getpid system call; a VM exit). Then it gathers what each shares with the
host: the container's process, seen from the host's /proc, with the host's
kernel; the guest's own descriptor tables and page tables, and a host that
sees only pyvmm's threads. Each breaches a limit: the container its cgroup's
memory limit (the OOM killer), the guest the end of its RAM.

A host without a usable OCI runtime, or where the demo is not root, cannot
run it: one line says what is missing (DemoCannotRun, status 2).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pyvmm.demos import container_guests, kernels, oci
from pyvmm.demos.common import (
    DemoCannotRun,
    Report,
    detect_host,
    format_ratio,
    format_seconds,
    guest_image,
)
from pyvmm.demos.container_runs import (
    HostView,
    OomRun,
    RunFailed,
    Timed,
    look_at_running,
    peak_rss_kib,
    results,
    run_until_oom,
    signal_name,
    time_first_byte,
)
from pyvmm.errors import PyvmmError
from pyvmm.shipped import pyvmm_child, shipped_file

QUOTE = (
    '"A virtual machine is taken to be an efficient, isolated duplicate of the real '
    "machine.\" A container duplicates no machine: it is a process on the host's kernel."
)

WORKLOAD = "guests/container/workload.elf"
FIRST_BYTE_GUEST = "hello.bin"  # real mode; its first console byte a few instructions in
KERNEL = "int_loop"
LOOP_N = 20_000_000
REPEAT = 3
GETPID_COUNT = 200_000
STARTS = 7  # start-ups timed per process and container
VM_STARTS = 3  # ... per VM child (each a Python interpreter)
QUICK_ARGS = ("bench", "1", "1", "1")  # the workload's shortest run
MIB = 1 << 20
CONTAINER_LIMITS = oci.Limits(memory=64 * MIB, pids=16, cpu_quota=100_000, cpu_period=100_000)
OOM_LIMITS = oci.Limits(memory=32 * MIB, pids=16, cpu_quota=100_000, cpu_period=100_000)
TOUCH_LIMIT_MIB = 512  # the toucher gives up here: the limit did not hold
HOSTNAME = "pyvmm-container"
EXIT_COUNTS = (1_000, 11_000)  # two exit-loop runs: the difference is 10,000 exits
SIGKILL = 9


@dataclass(frozen=True)
class Runs:
    """Start-up seconds of each run, and its peak RSS (KiB)."""

    starts: list[float]
    peak_kib: int

    def start_texts(self) -> tuple[str, str]:
        """(the best start-up, the median and the worst): wake-ups on this host may add a tick."""
        median, high = statistics.median(self.starts), max(self.starts)
        return format_seconds(
            min(self.starts)
        ), f"{format_seconds(median)} / {format_seconds(high)}"


@dataclass(frozen=True)
class Bench:
    """int_loop(n): result and best seconds; getpid: best ns per call (None for a VM)."""

    result: int
    seconds: float
    crossing_ns: float


@dataclass(frozen=True)
class Numbers:
    """The measurements the closing paragraphs quote (seconds, ns, time ratios to native)."""

    process_start: float
    container_start: float
    vm_start: float
    process_getpid_ns: float
    container_getpid_ns: float
    vm_exit_ns: float
    container_ratio: float
    vm_ratio: float


@dataclass
class Containers:
    """The chosen runtime and what the demo needs to start containers with it."""

    runtime: oci.Runtime
    version: str
    spec: dict[str, object]
    scratch: Path
    workload: Path
    rejected: list[str]

    @property
    def state(self) -> Path:
        return self.scratch / "state"

    def bundle(self, label: str, args: Sequence[str], limits: oci.Limits) -> Path:
        config = oci.make_config(self.spec, [oci.WORKLOAD_IN_ROOTFS, *args], HOSTNAME, limits)
        directory = self.scratch / f"bundle-{label}"
        return oci.write_bundle(directory, self.workload, config)

    def run_argv(
        self, bundle: Path, name: str, pid_file: Path | None = None, detach: bool = False
    ) -> list[str]:
        """`RUNTIME run` of `bundle` as container `name` (see oci.run_command)."""
        return oci.run_command(self.runtime, self.state, bundle, name, pid_file, detach)


def runtime_version(runtime: oci.Runtime) -> str:
    """The first line of `RUNTIME --version` ("runc version 1.1.5+ds1"), or its name."""
    try:
        done = subprocess.run(
            [runtime.path, "--version"],
            capture_output=True,
            text=True,
            timeout=oci.RUNTIME_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return runtime.name
    lines = done.stdout.strip().splitlines()
    return lines[0] if lines else runtime.name


def choose_runtime(
    runtimes: Sequence[oci.Runtime], probe: Callable[[oci.Runtime], None]
) -> tuple[oci.Runtime, list[str]]:
    """The first runtime `probe` accepts, and one line for each it rejected before.

    `probe` raises OciError or RunFailed to reject; when all are rejected,
    OciError says why for each, in one line.
    """
    rejected = []
    for runtime in runtimes:
        try:
            probe(runtime)
        except (oci.OciError, RunFailed) as error:
            rejected.append(f"{runtime.name}: {error}")
            continue
        return runtime, rejected
    raise oci.OciError(oci.failing_runtimes_message(rejected, runtimes))


def prepare_containers(scratch: Path, workload: Path) -> Containers:
    """Find the runtimes, start a trivial container with each in turn, keep the first that works.

    Raises DemoCannotRun when none is on PATH or none can start one.
    """
    runtimes = oci.find_runtimes()
    if not runtimes:
        raise DemoCannotRun(oci.no_runtime_message(os.environ.get("PATH", "")))
    chosen: dict[str, Containers] = {}

    def probe(runtime: oci.Runtime) -> None:
        directory = scratch / runtime.name
        directory.mkdir()
        spec = oci.generated_spec(runtime, directory)
        containers = Containers(runtime, runtime_version(runtime), spec, directory, workload, [])
        bundle = containers.bundle("probe", QUICK_ARGS, CONTAINER_LIMITS)
        name = oci.container_id("probe")
        with oci.deleted_afterwards(runtime, containers.state, name):
            timed = time_first_byte(
                containers.run_argv(bundle, name), f"{runtime.name} run (a trivial container)"
            )
        if timed.returncode != 0 or "int_loop_result" not in results(timed.stdout):
            raise RunFailed(
                f"{runtime.name} run (a trivial container) failed: "
                f"{oci.last_line(timed.stderr)} (exit status {timed.returncode})"
            )
        chosen[runtime.name] = containers

    try:
        runtime, rejected = choose_runtime(runtimes, probe)
    except oci.OciError as error:
        raise DemoCannotRun(str(error)) from None
    containers = chosen[runtime.name]
    containers.rejected = rejected
    return containers


# ----------------------------------------------------------------------------
# The measurements.


def measure_process(workload: Path) -> tuple[Runs, Bench]:
    argv = [str(workload), *QUICK_ARGS]
    starts = [time_first_byte(argv, "the workload").first_byte for _ in range(STARTS)]
    peak = peak_rss_kib(workload, argv, "the workload")
    bench = parse_bench(
        time_first_byte(
            [str(workload), "bench", str(LOOP_N), str(REPEAT), str(GETPID_COUNT)], "the workload"
        ),
        "the workload",
    )
    return Runs(starts, peak), bench


def measure_container(containers: Containers) -> tuple[Runs, Bench]:
    what = f"{containers.runtime.name} run"
    quick = containers.bundle("quick", QUICK_ARGS, CONTAINER_LIMITS)
    starts = []
    for _ in range(STARTS):
        name = oci.container_id("start")
        with oci.deleted_afterwards(containers.runtime, containers.state, name):
            timed = time_first_byte(containers.run_argv(quick, name), what)
        _check_status(timed.returncode, timed.stderr, what)
        starts.append(timed.first_byte)
    name = oci.container_id("memory")
    with oci.deleted_afterwards(containers.runtime, containers.state, name):
        peak = peak_rss_kib(containers.workload, containers.run_argv(quick, name), what)
    bench_bundle = containers.bundle(
        "bench", ("bench", str(LOOP_N), str(REPEAT), str(GETPID_COUNT)), CONTAINER_LIMITS
    )
    name = oci.container_id("bench")
    with oci.deleted_afterwards(containers.runtime, containers.state, name):
        timed = time_first_byte(containers.run_argv(bench_bundle, name), what)
    return Runs(starts, peak), parse_bench(timed, what)


def _check_status(returncode: int, stderr: str, what: str) -> None:
    if returncode != 0:
        raise RunFailed(f"{what} failed: {oci.last_line(stderr)} (exit status {returncode})")


def parse_bench(timed: Timed, what: str) -> Bench:
    _check_status(timed.returncode, timed.stderr, what)
    found = results(timed.stdout)
    try:
        return Bench(
            result=int(found["int_loop_result"], 16),
            seconds=int(found["int_loop_ns"]) / 1e9,
            crossing_ns=int(found["getpid_ns"]) / int(found["getpid_count"]),
        )
    except (KeyError, ValueError):
        raise RunFailed(f"{what} printed no benchmark results") from None


def measure_vm(scratch: Path, workload: Path) -> tuple[Runs, Bench]:
    hello = guest_image(FIRST_BYTE_GUEST)
    directory = scratch / "vm"
    directory.mkdir()
    child = pyvmm_child("boot", str(hello), cwd=directory)
    what = "pyvmm boot guests/hello.bin (child process)"
    starts = []
    for _ in range(VM_STARTS):
        timed = time_first_byte(child.argv, what, env=child.env, cwd=directory)
        _check_status(timed.returncode, timed.stderr, what)
        starts.append(timed.first_byte)
    peak = peak_rss_kib(workload, child.argv, what, env=child.env, cwd=directory)
    runs = [kernels.run_in_guest(KERNEL, LOOP_N, ring=3) for _ in range(REPEAT)]
    best = min(runs, key=lambda run: run.seconds)
    short = container_guests.run_exit_loop(EXIT_COUNTS[0])
    long = container_guests.run_exit_loop(EXIT_COUNTS[1])
    if long.served != long.count:
        raise RunFailed(f"the exit loop made {long.count} outs, pyvmm served {long.served}")
    return Runs(starts, peak), Bench(
        best.result, best.seconds, container_guests.ns_per_exit(short, long)
    )


# ----------------------------------------------------------------------------
# The report.


def _kib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"


def _ns(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns >= 100 else f"{ns:.1f} ns"


def executable_copy(workload: Path, scratch: Path) -> Path:
    """The shipped workload copied into `scratch`, executable whatever its installed mode."""
    copy = scratch / Path(WORKLOAD).name
    shutil.copyfile(workload, copy)
    copy.chmod(0o755)
    return copy


def run(out: TextIO) -> int:
    host = detect_host()
    report = Report(out)
    shipped_workload = shipped_file(WORKLOAD)
    guest_image(FIRST_BYTE_GUEST)  # missing: cannot run, before any output
    if os.geteuid() != 0:
        raise DemoCannotRun(
            "it needs root: the OCI runtime sets cgroup limits and namespaces "
            "(run it as root, e.g. sudo pyvmm demo containers)"
        )
    with tempfile.TemporaryDirectory(prefix="pyvmm-containers-") as scratch_name:
        scratch = Path(scratch_name)
        workload = executable_copy(shipped_workload, scratch)
        try:
            containers = prepare_containers(scratch, workload)
            report.header("Containers and virtual machines", QUOTE, host)
            return _run(report, containers, scratch, workload)
        except RunFailed as error:
            raise DemoCannotRun(str(error)) from None
        except container_guests.GuestRunError as error:
            raise DemoCannotRun(str(error)) from None
        except PyvmmError:
            raise  # KVM's errors (KvmError is an OSError too): `pyvmm demo` reports them
        except BrokenPipeError:
            raise  # the reader went away (`| head`): pyvmm stops quietly
        except OSError as error:  # the scratch directory, /proc: nothing about the evidence
            raise DemoCannotRun(f"a file it needs could not be used: {error}") from None


def _run(report: Report, containers: Containers, scratch: Path, workload: Path) -> int:
    mounts = oci.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    mode = oci.cgroup_mode(mounts)
    for line in containers.rejected:
        report.out.write(f"skipped {line}\n")
    report.section(
        f"OCI runtime: {containers.version} ({containers.runtime.name}, found on PATH); "
        f"this host's cgroups: {mode}"
    )
    report.out.write("\n")

    report.section(
        f"timing: {STARTS} start-ups each of the workload as a process and as a container, "
        f"{VM_STARTS} of a VM; {KERNEL}({LOOP_N:,}) and {GETPID_COUNT:,} getpid calls, "
        f"best of {REPEAT}"
    )
    native = min(
        (kernels.run_native(KERNEL, LOOP_N) for _ in range(REPEAT)), key=lambda run: run.seconds
    )
    process_runs, process_bench = measure_process(workload)
    container_runs, container_bench = measure_container(containers)
    vm_runs, vm_bench = measure_vm(scratch, workload)
    checks: list[bool] = []
    checks += report_measurements(
        report,
        native,
        [
            ("process", process_runs, process_bench, "getpid syscall"),
            (f"container ({containers.runtime.name})", container_runs, container_bench,
             "getpid syscall"),
            ("pyvmm VM", vm_runs, vm_bench, "VM exit (out, CPL3)"),
        ],
    )  # fmt: skip

    report.section(
        "what the container shares: the workload's `world` mode as a process and in a "
        "container, looked at from the host while it waits"
    )
    process_view = look_at_running([str(workload), "world"], None, "the workload (world mode)")
    world = containers.bundle("world", ("world",), CONTAINER_LIMITS)
    name = oci.container_id("world")
    pid_file = containers.scratch / "world.pid"
    with oci.deleted_afterwards(containers.runtime, containers.state, name):
        view = look_at_running(
            containers.run_argv(world, name, pid_file=pid_file),
            pid_file,
            f"{containers.runtime.name} run (the world mode)",
        )
    checks += report_container(report, process_view, view)

    report.section(
        "what the VM has of its own: a guest that loads its own GDT, IDT and page tables "
        "and writes page after page past the end of its RAM (CPL0, in this process)"
    )
    walk = container_guests.run_walk()
    checks += report_vm(report, walk)

    report.section(
        f"a limit breached: the workload touches memory in a container limited to "
        f"{OOM_LIMITS.memory // MIB} MiB"
    )
    touch = containers.bundle("touch", ("touch", str(TOUCH_LIMIT_MIB)), OOM_LIMITS)
    name = oci.container_id("oom")
    pid_file = containers.scratch / "oom.pid"
    with oci.deleted_afterwards(containers.runtime, containers.state, name):
        oom = run_until_oom(
            containers.run_argv(touch, name, pid_file=pid_file, detach=True),
            pid_file,
            f"{containers.runtime.name} run --detach (the touch mode)",
        )
    checks += report_limits(report, oom, walk)

    numbers = Numbers(
        process_start=min(process_runs.starts),
        container_start=min(container_runs.starts),
        vm_start=min(vm_runs.starts),
        process_getpid_ns=process_bench.crossing_ns,
        container_getpid_ns=container_bench.crossing_ns,
        vm_exit_ns=vm_bench.crossing_ns,
        container_ratio=container_bench.seconds / native.seconds,
        vm_ratio=vm_bench.seconds / native.seconds,
    )
    explain(report, containers, numbers)
    holds = all(checks)
    return report.verdict(
        holds,
        "the container is a process on the host's kernel; the VM is a machine of its own"
        if holds
        else "some evidence does NOT hold (see the tables)",
    )


Row = tuple[str, Runs, Bench, str]


def report_measurements(report: Report, native: kernels.KernelRun, rows: list[Row]) -> list[bool]:
    process_peak = rows[0][1].peak_kib
    report.table(
        [
            "run as",
            "start-up to first instruction",
            "median / worst",
            "peak RSS",
            "over the process",
        ],
        [
            [
                label,
                *runs.start_texts(),
                _kib(runs.peak_kib),
                "-" if index == 0 else f"+{_kib(runs.peak_kib - process_peak)}",
            ]
            for index, (label, runs, _, _) in enumerate(rows)
        ],
    )
    equal = all(bench.result == native.result for _, _, bench, _ in rows)
    report.table(
        [f"{KERNEL}({LOOP_N:,})", "result", "time", "vs native", "one crossing", "costs"],
        [
            [
                "native (this process)",
                f"0x{native.result:016x}",
                format_seconds(native.seconds),
                "1.0x",
                "-",
                "-",
            ],
            *[
                [
                    label,
                    f"0x{bench.result:016x}"
                    + ("" if bench.result == native.result else " DIFFERENT"),
                    format_seconds(bench.seconds),
                    format_ratio(bench.seconds / native.seconds),
                    crossing,
                    _ns(bench.crossing_ns),
                ]
                for label, _, bench, crossing in rows
            ],
        ],
    )
    report.text(
        ("All four results are equal: " if equal else "The results DIFFER: ")
        + f"the same machine code ({KERNEL} of benchmarks/kernels/kernels.c, built with the "
        "same flags into guests/container/workload.elf and kernels.bin) on the same n. "
        "Peak RSS is each child's ru_maxrss: for the container, the largest of the "
        "runtime's own process and the container's; for the VM, the Python interpreter "
        "with pyvmm and the guest's RAM as it touched it. The kernel counts RSS per CPU in "
        "batches, so the process's few pages may read 0 here (its VmHWM is below)."
    )
    return [equal]


def report_container(report: Report, process: HostView, container: HostView) -> list[bool]:
    """The two world-mode runs side by side, as the workload and the host saw each."""
    host_release = platform.release()
    host_node = platform.node()

    def said(view: HostView, key: str) -> str:
        return view.inside.get(key, "nothing printed")

    def in_proc(view: HostView) -> str:
        return f"{view.pid}: Name {view.name}, NSpid {view.nspid}"

    nspid = (container.nspid or "").split()
    visible = (
        len(nspid) >= 2 and nspid[0] == str(container.pid) and nspid[-1] == said(container, "pid")
    )
    same_kernel = said(container, "release") == said(process, "release") == host_release
    rows = [
        ["its pid, as it sees it (getpid)", said(process, "pid"), said(container, "pid")],
        ["its pid in the host's /proc", in_proc(process), in_proc(container)],
        ["kernel release (uname -r)", said(process, "release"), said(container, "release")],
        ["host name (uname -n)", said(process, "nodename"), said(container, "nodename")],
    ]
    process_ns = dict((kind, mine) for kind, mine, _ in process.namespaces)
    shared = []
    for kind, mine, host in container.namespaces:
        shared.append(mine == host)
        rows.append(
            [
                f"/proc/PID/ns/{kind}",
                process_ns.get(kind, "?")
                + (" (the host's)" if process_ns.get(kind) == host else ""),
                mine + (" (SHARED with the host)" if mine == host else " (its own)"),
            ]
        )
    rows.append(["its peak RSS so far (VmHWM)", process.peak or "?", container.peak or "?"])
    report.table(["evidence", "process", "container"], rows)
    report.text(
        f"The host's kernel is {host_release} and its name {host_node}: both runs report "
        + ("that same kernel" if same_kernel else "a DIFFERENT kernel")
        + f"; the container's process is pid {container.pid} in the host's /proc, and "
        f"{said(container, 'pid')} in its own pid namespace."
    )
    if container.limits:
        report.table(
            ["cgroup limit", "file on the host", "value read back while it ran"],
            [
                [
                    limit.what,
                    f"v{limit.version} {limit.short_path}",
                    limit.value if limit.value is not None else "unreadable",
                ]
                for limit in container.limits
            ],
        )
    else:
        report.text(
            "(the container's cgroup is not under a cgroup file system mounted here, "
            "so its limit files could not be read back)"
        )
    limits_ok = all(_limit_matches(limit) for limit in container.limits)
    return [
        said(container, "pid") == "1",
        said(process, "pid") == str(process.pid),
        visible,
        same_kernel,
        not any(shared),
        limits_ok,
    ]


def _limit_matches(limit: oci.LimitReading) -> bool:
    """A limit file read back holds what config.json asked for (unreadable: no evidence)."""
    expected = {
        (1, "memory"): str(CONTAINER_LIMITS.memory),
        (2, "memory"): str(CONTAINER_LIMITS.memory),
        (1, "pids"): str(CONTAINER_LIMITS.pids),
        (2, "pids"): str(CONTAINER_LIMITS.pids),
        (1, "cpu"): str(CONTAINER_LIMITS.cpu_quota),
        (1, "cpu period"): str(CONTAINER_LIMITS.cpu_period),
        (2, "cpu"): f"{CONTAINER_LIMITS.cpu_quota} {CONTAINER_LIMITS.cpu_period}",
    }.get((limit.version, limit.what))
    return limit.value is None or expected is None or limit.value == expected


def _range(table: container_guests.Table) -> str:
    if table.limit is None:
        return f"0x{table.base:x} (a 4 KiB page)"
    if table.limit == 0 and table.base == 0:
        return "none"
    return f"0x{table.base:x}, limit 0x{table.limit:x}"


def report_vm(report: Report, walk: container_guests.WalkRun) -> list[bool]:
    rows = []
    own = []
    for entry, mine in zip(walk.entry_tables, walk.guest_tables, strict=True):
        inside = mine.end <= walk.ram_size
        changed = (entry.base, entry.limit) != (mine.base, mine.limit)
        own.append(inside and changed)
        rows.append(
            [
                entry.name,
                _range(entry),
                _range(mine),
                f"inside its {walk.ram_size // MIB} MiB of RAM" if inside else "NOT inside its RAM",
            ]
        )
    report.table(["register", "pyvmm's entry state", "after the guest's run", "where"], rows)
    names = ", ".join(
        f"{name} x{walk.threads.count(name)}" if walk.threads.count(name) > 1 else name
        for name in dict.fromkeys(walk.threads)
    )
    report.text(
        "Every table is at a guest-physical address the guest chose inside its own RAM: "
        "KVM loads GDTR, IDTR and CR3 into the vCPU, never the host's. Meanwhile the host "
        f"lists {len(walk.threads)} threads in this process ({names}): pyvmm's, and "
        "KVM's worker for the VM; the guest's code runs in the thread that called KVM_RUN, "
        "and nothing the guest runs appears in the host's /proc."
    )
    return own


def report_limits(report: Report, oom: OomRun, walk: container_guests.WalkRun) -> list[bool]:
    killed_by = oom.killed_by
    if oom.wait_status is None:
        ended = "ended (not this process's to wait for: no exit status)"
    elif killed_by is not None:
        ended = f"killed by {signal_name(killed_by)}"
    else:
        ended = f"exited with status {os.waitstatus_to_exitcode(oom.wait_status)}"
    limit_mib = OOM_LIMITS.memory // MIB
    memory_limit = next((limit for limit in oom.limits if limit.what == "memory"), None)
    rows = [
        [
            "container",
            f"memory limit {limit_mib} MiB"
            + (
                f" ({memory_limit.path.name} {memory_limit.value})"
                if memory_limit and memory_limit.value
                else ""
            ),
            f"its process {oom.pid} touched {oom.touched_kib // 1024} MiB, then was {ended}",
        ]
    ]
    for name, text in oom.evidence.details:
        rows.append(["", f"cgroup {name}", text])
    growth = (
        None
        if walk.rss_before is None or walk.rss_after is None
        else walk.rss_after - walk.rss_before
    )
    all_ones = walk.read_back == (1 << 64) - 1
    rows.append(
        [
            "VM",
            f"RAM {walk.ram_size // MIB} MiB",
            f"it wrote {walk.pages_in_ram:,} pages of RAM, then {walk.pages_past_ram} past its "
            f"end: {walk.mmio_writes_dropped} MMIO exits, dropped by pyvmm",
        ]
    )
    rows.append(
        [
            "",
            "read back past RAM",
            "nothing printed"
            if walk.read_back is None
            else f"0x{walk.read_back:016x}" + (" (all ones: no memory there)" if all_ones else ""),
        ]
    )
    rows.append(
        [
            "",
            "this process's RSS",
            "unreadable"
            if growth is None
            else f"grew by {growth / MIB:.1f} MiB while the guest ran (its RAM: "
            f"{walk.ram_size // MIB} MiB); the guest ended: exit status {walk.exit_status}",
        ]
    )
    report.table(["", "limit", "what happened"], rows)
    oom_killed = killed_by == SIGKILL and (
        oom.evidence.oom_kills is None or oom.evidence.oom_kills > 0
    )
    under_limit = oom.touched_kib <= OOM_LIMITS.memory // 1024
    ram_held = (
        walk.mmio_writes_dropped == walk.pages_past_ram
        and all_ones
        and walk.exit_status == container_guests.DEBUG_EXIT_STATUS
        and (growth is None or growth <= walk.ram_size)
    )
    return [oom_killed, under_limit, ram_held]


def explain(report: Report, containers: Containers, numbers: Numbers) -> None:
    report.text(
        "The container's process is an ordinary process of the host: the host's /proc "
        "lists it under its own pid, it runs on the host's kernel (uname -r inside is the "
        "host's release), and its system calls enter that kernel as any process's do: a "
        f"getpid costs {_ns(numbers.container_getpid_ns)} inside, "
        f"{_ns(numbers.process_getpid_ns)} outside. Namespaces give it its own view (pid 1, "
        "its own host name, mounts, IPC and network) and cgroups cap what it may use: "
        f"{containers.runtime.name} wrote the limits into the host's cgroup files, and the "
        "host's kernel killed the process when it went past its memory."
    )
    exit_vs_syscall = numbers.vm_exit_ns / numbers.process_getpid_ns
    report.text(
        "The guest is not a process of anything: it is a CPU state and a range of "
        "guest-physical memory. Its descriptor tables and page tables are its own, in its "
        "own RAM; the host sees pyvmm's threads and one mapping of the guest's RAM, nothing "
        "inside it. What crosses to pyvmm is a VM exit, "
        f"{format_ratio(exit_vs_syscall)} the cost of a getpid on this host, and a guest "
        "that runs out of RAM finds no memory there, not a killer."
    )
    report.text(
        "So: a container is a process that is fooled, by namespaces and cgroups, about "
        "what it sees and what it may use; a VM is a machine that is fooled, by the VMM, "
        "about the hardware it runs on. At best, the process reached its first instruction in "
        f"{format_seconds(numbers.process_start)}, the container in "
        f"{format_seconds(numbers.container_start)} (the runtime's work) and the VM in "
        f"{format_seconds(numbers.vm_start)} (most of it a Python interpreter); once "
        f"running, the container's {KERNEL} took {format_ratio(numbers.container_ratio)} the "
        f"native time, and the guest's {format_ratio(numbers.vm_ratio)}."
    )
