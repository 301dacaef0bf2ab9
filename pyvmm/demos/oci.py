"""An OCI container for the containers demo: the runtime, the bundle, a run, its cgroup.

An OCI runtime (crun or runc, as Debian packages them) starts a container
from a bundle: a directory with `config.json` and a root file system
(OCI runtime spec, "Filesystem Bundle" and "Configuration"). This module
finds the runtimes on PATH, writes a bundle whose root holds one static
executable, starts it with `RUNTIME run`, always deletes it afterwards, and
reads back from the host's cgroup file system the limits the runtime applied.

Nothing here decides what the demo proves: pyvmm.demos.containers does. Every
failure is an OciError whose message is one line saying what is missing or
what the runtime said, for the demo to turn into DemoCannotRun.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Looked for on PATH in this order (Debian: apt-get install crun / runc).
RUNTIME_NAMES = ("crun", "runc")
INSTALL_HINT = "apt-get install crun (or runc)"
# Any runtime command that takes longer than this has hung.
RUNTIME_TIMEOUT = 30.0
# The namespaces the demo's container gets (OCI config "linux.namespaces").
NAMESPACES = ("pid", "mount", "uts", "ipc", "network")
# Where the workload sits in the container's root file system.
WORKLOAD_IN_ROOTFS = "/workload"
# Lines of a runtime's stderr kept for an error message.
MESSAGE_LIMIT = 240

_container_numbers = itertools.count(1)


class OciError(Exception):
    """An OCI runtime is missing or failed; the message is one line saying which and why."""


@dataclass(frozen=True)
class Runtime:
    """An OCI runtime found on PATH: its name (crun, runc) and its absolute path."""

    name: str
    path: str

    def command(self, state_dir: Path, *args: str) -> list[str]:
        """`RUNTIME --root STATE_DIR ARGS`: the demo keeps its containers' state to itself."""
        return [self.path, "--root", str(state_dir), *args]


@dataclass(frozen=True)
class Limits:
    """The cgroup limits of a container (OCI config "linux.resources").

    `memory` in bytes, `pids` a process count, the CPU as `cpu_quota`
    microseconds of CPU time per `cpu_period` microseconds.
    """

    memory: int
    pids: int
    cpu_quota: int
    cpu_period: int


def find_runtimes(path: str | None = None) -> list[Runtime]:
    """The OCI runtimes on `path` (default: $PATH), in RUNTIME_NAMES order."""
    found = []
    for name in RUNTIME_NAMES:
        location = shutil.which(name, path=path)
        if location is not None:
            found.append(Runtime(name, os.path.abspath(location)))
    return found


def no_runtime_message(path: str | None = None) -> str:
    """The one line for a host with no OCI runtime on PATH (`path`: the PATH searched)."""
    where = "PATH is empty" if path == "" else "none on PATH"
    return f"no OCI runtime: {where} (looked for {' and '.join(RUNTIME_NAMES)}): {INSTALL_HINT}"


def failing_runtimes_message(rejected: Sequence[str], found: Sequence[Runtime]) -> str:
    """The one line for a host whose runtimes all failed: why each did, what else to install."""
    missing = [name for name in RUNTIME_NAMES if name not in {runtime.name for runtime in found}]
    hint = (
        f"try the other runtime: apt-get install {missing[0]}"
        if missing
        else "no runtime here supports this host's cgroups and namespaces"
    )
    return f"no OCI runtime could start a container here ({'; '.join(rejected)}): {hint}"


def last_line(text: str) -> str:
    """The last non-empty line of a runtime's stderr, its msg="..." alone when it logs that way."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "nothing on stderr"
    line = lines[-1]
    logged = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
    if logged:
        line = logged.group(1).replace('\\"', '"')
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 3] + "..."


def generated_spec(runtime: Runtime, scratch: Path) -> dict[str, Any]:
    """The config.json `RUNTIME spec` writes, read back (raises OciError)."""
    directory = scratch / f"spec-{runtime.name}"
    directory.mkdir()
    try:
        done = subprocess.run(
            [runtime.path, "spec"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=RUNTIME_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OciError(f"{runtime.name} spec failed: {error}") from None
    if done.returncode != 0:
        raise OciError(f"{runtime.name} spec failed: {last_line(done.stderr)}")
    try:
        spec: dict[str, Any] = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise OciError(f"{runtime.name} spec wrote no readable config.json: {error}") from None
    return spec


def make_config(
    spec: dict[str, Any], args: Sequence[str], hostname: str, limits: Limits
) -> dict[str, Any]:
    """A copy of `spec` (as `RUNTIME spec` makes it) set up for the demo's workload.

    The process runs `args` without a terminal (its stdio are the caller's
    pipes), as root with no capabilities beyond the spec's; the root file
    system is read-only; the container gets its own pid, mount, uts, ipc
    and network namespaces, `hostname`, and the cgroup `limits`.
    """
    config: dict[str, Any] = json.loads(json.dumps(spec))  # a deep copy
    process = config.setdefault("process", {})
    process["terminal"] = False
    process["args"] = list(args)
    process["env"] = ["PATH=/"]
    process["cwd"] = "/"
    config["root"] = {"path": "rootfs", "readonly": True}
    config["hostname"] = hostname
    linux = config.setdefault("linux", {})
    namespaces = [entry for entry in linux.get("namespaces", []) if entry.get("type") != "user"]
    present = {entry.get("type") for entry in namespaces}
    namespaces += [{"type": kind} for kind in NAMESPACES if kind not in present]
    linux["namespaces"] = namespaces
    resources = linux.setdefault("resources", {})
    resources["memory"] = {"limit": limits.memory}
    resources["pids"] = {"limit": limits.pids}
    resources["cpu"] = {"quota": limits.cpu_quota, "period": limits.cpu_period}
    return config


def write_bundle(directory: Path, workload: Path, config: dict[str, Any]) -> Path:
    """An OCI bundle in `directory`: config.json and rootfs/ holding only the workload."""
    rootfs = directory / "rootfs"
    rootfs.mkdir(parents=True)
    target = rootfs / WORKLOAD_IN_ROOTFS.lstrip("/")
    shutil.copyfile(workload, target)
    target.chmod(0o755)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def container_id(label: str) -> str:
    """A container name no other run of the demo uses at the same time."""
    return f"pyvmm-demo-{os.getpid()}-{next(_container_numbers)}-{label}"


@contextlib.contextmanager
def deleted_afterwards(runtime: Runtime, state_dir: Path, name: str) -> Iterator[None]:
    """Run the body, then `RUNTIME delete -f NAME` whatever happened (errors ignored)."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                runtime.command(state_dir, "delete", "-f", name),
                capture_output=True,
                timeout=RUNTIME_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )


def run_command(
    runtime: Runtime,
    state_dir: Path,
    bundle: Path,
    name: str,
    pid_file: Path | None = None,
    detach: bool = False,
) -> list[str]:
    """`RUNTIME run [--detach] [--pid-file F] --bundle B NAME` (with the demo's --root)."""
    args = ["run"]
    if detach:
        args.append("--detach")
    if pid_file is not None:
        args += ["--pid-file", str(pid_file)]
    return runtime.command(state_dir, *args, "--bundle", str(bundle), name)


# ----------------------------------------------------------------------------
# cgroups: where the container's are, and what their limit files say.


@dataclass(frozen=True)
class CgroupLine:
    """One line of /proc/PID/cgroup: hierarchy ID, its v1 controllers (none for v2), path."""

    hierarchy: int
    controllers: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class CgroupMount:
    """A cgroup (v1) or cgroup2 file system in /proc/self/mountinfo."""

    mount_point: str
    root: str  # the cgroup the mount shows at its mount point
    version: int  # 1 or 2
    controllers: tuple[str, ...]  # v1: from the super options; v2: none listed


def parse_proc_cgroup(text: str) -> list[CgroupLine]:
    """/proc/PID/cgroup: `ID:CONTROLLERS:PATH` lines (v2's is `0::PATH`)."""
    lines = []
    for raw in text.splitlines():
        parts = raw.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        controllers = tuple(name for name in parts[1].split(",") if name)
        lines.append(CgroupLine(int(parts[0]), controllers, parts[2]))
    return lines


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts of a /proc/PID/mountinfo (proc(5))."""
    mounts = []
    for raw in text.splitlines():
        before, separator, after = raw.partition(" - ")
        fields, tail = before.split(), after.split()
        if not separator or len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        if fstype == "cgroup2":
            mounts.append(CgroupMount(_unescape(fields[4]), _unescape(fields[3]), 2, ()))
            continue
        controllers = tuple(
            option
            for option in super_options.split(",")
            if option not in ("rw", "ro") and "=" not in option
        )
        names = tuple(option for option in super_options.split(",") if option.startswith("name="))
        mounts.append(
            CgroupMount(_unescape(fields[4]), _unescape(fields[3]), 1, controllers + names)
        )
    return mounts


def _unescape(path: str) -> str:
    """mountinfo's octal escapes (\\040 for a space) undone."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), path)


def cgroup_mode(mounts: Sequence[CgroupMount]) -> str:
    """ "unified" (cgroup v2 alone), "hybrid" (v1 controllers beside a cgroup2) or "legacy"."""
    v1 = any(mount.version == 1 and _real_controllers(mount) for mount in mounts)
    v2 = any(mount.version == 2 for mount in mounts)
    if v2 and not v1:
        return "unified"
    return "hybrid" if v2 else "legacy"


def _real_controllers(mount: CgroupMount) -> tuple[str, ...]:
    return tuple(name for name in mount.controllers if not name.startswith("name="))


def cgroup_directory(
    lines: Sequence[CgroupLine], mounts: Sequence[CgroupMount], controller: str
) -> tuple[int, Path] | None:
    """(cgroup version, directory on the host) of the cgroup that holds `controller`.

    A v1 hierarchy that lists the controller wins; else the v2 cgroup. None
    when no mount shows it (a cgroup namespace or mount that hides it).
    """
    for line in lines:
        if controller in line.controllers:
            mount = next(
                (m for m in mounts if m.version == 1 and controller in m.controllers), None
            )
            if mount is not None:
                found = _below(mount, line.path)
                if found is not None:
                    return 1, found
    for line in lines:
        if line.hierarchy == 0 and not line.controllers:
            for mount in mounts:
                if mount.version == 2:
                    found = _below(mount, line.path)
                    if found is not None:
                        return 2, found
    return None


def _below(mount: CgroupMount, path: str) -> Path | None:
    """Where cgroup `path` is under `mount`, if the mount shows it."""
    root = mount.root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    relative = path[len(root) :].lstrip("/")
    return Path(mount.mount_point, relative) if relative else Path(mount.mount_point)


# The files that hold each limit, by cgroup version (the kernel's cgroup-v1/ and cgroup-v2 docs).
LIMIT_FILES = {
    1: {
        "memory": ("memory", "memory.limit_in_bytes"),
        "pids": ("pids", "pids.max"),
        "cpu": ("cpu", "cpu.cfs_quota_us"),
        "cpu period": ("cpu", "cpu.cfs_period_us"),
    },
    2: {
        "memory": ("memory", "memory.max"),
        "pids": ("pids", "pids.max"),
        "cpu": ("cpu", "cpu.max"),
    },
}


@dataclass(frozen=True)
class LimitReading:
    """One limit file of a running container's cgroup, as read on the host."""

    what: str  # "memory", "pids", "cpu", "cpu period"
    version: int
    path: Path
    value: str | None  # None: could not be read
    mount_point: str = ""  # the cgroup file system `path` is under

    @property
    def short_path(self) -> str:
        """`path` with the cgroups between its mount point and its own cgroup left out."""
        relative = self.path.relative_to(self.mount_point) if self.mount_point else self.path
        if len(relative.parts) <= 2:
            return str(self.path)
        return f"{self.mount_point}/.../{relative.parts[-2]}/{relative.parts[-1]}"


@dataclass
class CgroupView:
    """Where a process's cgroups are on the host, found from its /proc/PID/cgroup."""

    lines: list[CgroupLine]
    mounts: list[CgroupMount]
    directories: dict[str, tuple[int, Path]] = field(default_factory=dict)

    @classmethod
    def of(cls, pid: int, proc: Path = Path("/proc")) -> CgroupView:
        """Read /proc/PID/cgroup and this process's mountinfo (OSError if PID is gone)."""
        lines = parse_proc_cgroup((proc / str(pid) / "cgroup").read_text())
        mounts = parse_mountinfo((proc / "self" / "mountinfo").read_text())
        view = cls(lines, mounts)
        for controller in ("memory", "pids", "cpu"):
            found = cgroup_directory(lines, mounts, controller)
            if found is not None:
                view.directories[controller] = found
        return view

    @property
    def memory_version(self) -> int | None:
        found = self.directories.get("memory")
        return found[0] if found else None

    def limits(self) -> list[LimitReading]:
        """The limit files of memory, pids and cpu, read now (a value None: unreadable)."""
        readings = []
        version = self.memory_version
        if version is None:
            return readings
        for what, (controller, name) in LIMIT_FILES[version].items():
            found = self.directories.get(controller)
            if found is None:
                continue
            path = found[1] / name
            mount = next(
                (
                    m.mount_point
                    for m in self.mounts
                    if m.version == found[0]
                    and path.is_relative_to(m.mount_point)
                    and (found[0] == 2 or controller in m.controllers)
                ),
                "",
            )
            readings.append(LimitReading(what, found[0], path, read_value(path), mount))
        return readings

    def memory_file(self, name: str) -> Path | None:
        found = self.directories.get("memory")
        return found[1] / name if found else None


def read_value(path: Path) -> str | None:
    """A cgroup file's content, stripped (None when it cannot be read)."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def parse_keyed(text: str) -> dict[str, int]:
    """A flat keyed cgroup file (`key value` lines: memory.events, memory.oom_control)."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


@dataclass(frozen=True)
class OomEvidence:
    """What the memory cgroup says about an OOM kill: `oom_kill` count and the files read."""

    oom_kills: int | None
    details: tuple[tuple[str, str], ...]  # (file, what it said), in the order read


def read_oom_evidence(view: CgroupView) -> OomEvidence:
    """The OOM killer's count from memory.events (v2) or memory.oom_control (v1), and more.

    v1 also gives memory.failcnt (how often usage hit the limit) and
    memory.max_usage_in_bytes; v2 memory.peak where the kernel has it.
    """
    version = view.memory_version
    if version is None:
        return OomEvidence(None, ())
    names = (
        ("memory.oom_control", "memory.failcnt", "memory.max_usage_in_bytes")
        if version == 1
        else ("memory.events", "memory.peak")
    )
    kills = None
    details = []
    for name in names:
        path = view.memory_file(name)
        text = read_value(path) if path is not None else None
        if text is None:
            continue
        if name in ("memory.oom_control", "memory.events"):
            keyed = parse_keyed(text)
            kills = keyed.get("oom_kill", kills)
            text = f"oom_kill {keyed['oom_kill']}" if "oom_kill" in keyed else text
        details.append((name, " ".join(text.split())))
    return OomEvidence(kills, tuple(details))
