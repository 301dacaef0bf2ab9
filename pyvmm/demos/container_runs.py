"""The containers demo's measurements: the workload as a process, in a container, a VM child.

Every run here is a child process whose stdout is a pipe: the time from just
before it is spawned to the first byte on that pipe is its start-up to the
workload's first instruction (guests/container/workload.elf writes one byte
first thing; guests/hello.bin writes its first console byte a few
instructions in). Peak memory is the child's ru_maxrss, taken by the
workload's own `spawn` mode: a child that a Python process forks or vforks
inherits the parent's RSS as its high mark before its exec, a child of that
tiny static parent does not.

Errors are RunFailed, one line each, for the demo to report as DemoCannotRun.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyvmm.demos import oci

# One run of anything here may take this long before it counts as hung.
RUN_TIMEOUT = 60.0
# The workload writes this byte before anything else.
MARKER = b"+"
# What the workload prints when it waits for stdin (modes world and touch).
WAITING = "waiting stdin"
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


class RunFailed(Exception):
    """A run did not happen as it must; the message says which and why, in one line."""


@dataclass(frozen=True)
class Timed:
    """A finished run: seconds to its first stdout byte, its stdout, stderr and status."""

    first_byte: float
    stdout: bytes
    stderr: str
    returncode: int


def results(output: bytes) -> dict[str, str]:
    """The workload's `key value` lines (the leading marker byte dropped)."""
    text = output.decode(errors="replace")
    text = text.removeprefix(MARKER.decode())
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key and value:
            values[key] = value.strip()
    return values


def _describe(what: str, returncode: int | None, stderr: str) -> str:
    status = "" if returncode is None else f" (exit status {returncode})"
    return f"{what} failed: {oci.last_line(stderr)}{status}"


def time_first_byte(
    argv: list[str],
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Timed:
    """Run `argv` to its end; seconds from before the spawn to its first stdout byte.

    Raises RunFailed when it cannot start, writes nothing, or hangs.
    """
    started = time.perf_counter()
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
    except OSError as error:
        raise RunFailed(f"{what} could not start: {error}") from None
    with _killed_on_error(child):
        assert child.stdout is not None
        fd = child.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], RUN_TIMEOUT)
        first = os.read(fd, 1) if ready else b""
        seconds = time.perf_counter() - started
        try:
            rest, stderr = child.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"{what} did not end within {RUN_TIMEOUT:g} s") from None
    error_text = stderr.decode(errors="replace")
    if not first:
        raise RunFailed(_describe(what, child.returncode, error_text))
    return Timed(seconds, first + rest, error_text, child.returncode)


@contextlib.contextmanager
def _killed_on_error(child: subprocess.Popen[bytes]):  # type: ignore[no-untyped-def]
    try:
        yield
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def peak_rss_kib(
    workload: Path,
    argv: list[str],
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """ru_maxrss (KiB) of `argv` run to its end by the workload's `spawn` mode.

    For a parent that waits for its own children (an OCI runtime's `run`)
    that is the largest high mark of it and them. Raises RunFailed.
    """
    try:
        done = subprocess.run(
            [str(workload), "spawn", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            cwd=cwd,
            timeout=RUN_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RunFailed(f"{what} (peak memory run) failed: {error}") from None
    found = results(done.stdout)
    status = found.get("spawn_status")
    peak = found.get("spawn_maxrss_kib")
    if done.returncode != 0 or status is None or peak is None:
        raise RunFailed(
            _describe(f"{what} (peak memory run)", done.returncode, done.stderr.decode())
        )
    if os.waitstatus_to_exitcode(int(status)) != 0:
        raise RunFailed(
            _describe(f"{what} (peak memory run)", int(status) >> 8, done.stderr.decode())
        )
    return int(peak)


# ----------------------------------------------------------------------------
# A container that waits on stdin while the host looks at it.


@dataclass(frozen=True)
class HostView:
    """What the host sees of a running container's process."""

    pid: int  # its host pid
    name: str | None  # /proc/PID/status Name
    peak: str | None  # /proc/PID/status VmHWM ("12 kB"): its peak RSS so far
    nspid: str | None  # /proc/PID/status NSpid: its pid in each pid namespace, host first
    namespaces: tuple[tuple[str, str, str], ...]  # (kind, its inode link, the host's)
    limits: tuple[oci.LimitReading, ...]
    inside: dict[str, str]  # what the workload printed about itself


NAMESPACE_FILES = ("pid", "mnt", "uts", "ipc", "net")


def status_fields(pid: int, proc: Path = Path("/proc")) -> dict[str, str]:
    """/proc/PID/status as a dict (OSError if the process is gone)."""
    fields = {}
    for line in (proc / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = " ".join(value.split())
    return fields


def namespace_links(pid: int | str) -> dict[str, str]:
    """The /proc/PID/ns/* links of NAMESPACE_FILES, e.g. "pid:[4026531836]"."""
    links = {}
    for kind in NAMESPACE_FILES:
        with contextlib.suppress(OSError):
            links[kind] = os.readlink(f"/proc/{pid}/ns/{kind}")
    return links


def _finish(child: subprocess.Popen[bytes], data: bytes, what: str) -> bytes:
    """Write `data` to the child's stdin, close it, read its stdout to EOF (RunFailed: hung)."""
    try:
        rest, _ = child.communicate(input=data, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{what} did not end within {RUN_TIMEOUT:g} s") from None
    return rest


def _read_until(fd: int, marker: str, deadline: float) -> bytes:
    """Read `fd` until a line equal to `marker` arrives (or EOF, or the deadline)."""
    data = b""
    while marker.encode() + b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _wait_for_file(path: Path, deadline: float) -> str | None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.002)
    return None


@contextlib.contextmanager
def _waiting(
    command: list[str], pid_file: Path | None, what: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, bytes]]:
    """Start `command`; once it prints WAITING, yield (child, the workload's host pid, output).

    The pid is the child's own, or, for a runtime's `run --pid-file`, what
    the runtime writes to `pid_file`. The child is killed if the block
    raises. Raises RunFailed when it cannot start or never waits.
    """
    try:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as error:
        raise RunFailed(f"{what} could not start: {error}") from None
    with _killed_on_error(child):
        assert child.stdout is not None
        deadline = time.monotonic() + RUN_TIMEOUT
        shown = _read_until(child.stdout.fileno(), WAITING, deadline)
        pid_text = None
        if WAITING.encode() in shown:
            pid_text = str(child.pid) if pid_file is None else _wait_for_file(pid_file, deadline)
        if pid_text is None or not pid_text.isdigit():
            child.kill()
            _, stderr = child.communicate()
            raise RunFailed(_describe(what, child.returncode, stderr.decode(errors="replace")))
        yield child, int(pid_text), shown


def look_at_running(command: list[str], pid_file: Path | None, what: str) -> HostView:
    """Start `command` (the world mode), look at its process from the host, let it end.

    The process's host pid is the child's own, or for a runtime's `run
    --pid-file` what the runtime writes to `pid_file`. Raises RunFailed.
    """
    with _waiting(command, pid_file, what) as (child, pid, shown):
        try:
            fields = status_fields(pid)
            inside_links = namespace_links(pid)
            view = oci.CgroupView.of(pid)
        except OSError as error:
            raise RunFailed(f"{what}: its process {pid} is not in /proc: {error}") from None
        limits = tuple(view.limits())
        host_links = namespace_links("self")
        # No input, then EOF: the workload ends.
        rest = _finish(child, b"", what)
    namespaces = tuple(
        (kind, inside_links.get(kind, "?"), host_links.get(kind, "?")) for kind in NAMESPACE_FILES
    )
    return HostView(
        pid=pid,
        name=fields.get("Name"),
        peak=fields.get("VmHWM"),
        nspid=fields.get("NSpid"),
        namespaces=namespaces,
        limits=limits,
        inside=results(shown + rest),
    )


# ----------------------------------------------------------------------------
# The OOM kill: a detached container, so that its cgroup outlives its process.


@dataclass(frozen=True)
class OomRun:
    pid: int
    wait_status: int | None  # None: the process was not this process's to wait for
    touched_kib: int  # the last amount the workload reported
    limits: tuple[oci.LimitReading, ...]
    evidence: oci.OomEvidence

    @property
    def killed_by(self) -> int | None:
        if self.wait_status is None or not os.WIFSIGNALED(self.wait_status):
            return None
        return os.WTERMSIG(self.wait_status)


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (prctl(2)); False if refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def run_until_oom(command: list[str], pid_file: Path, what: str) -> OomRun:
    """`command` is a runtime's `run --detach --pid-file` of the touch mode.

    The runtime returns once the container runs, leaving its process to this
    process, made a subreaper, to wait for; the container's cgroup stays
    until it is deleted, so the OOM killer's count can be read after the kill.
    """
    reaper = become_subreaper()
    with _waiting(command, pid_file, what) as (child, pid, shown):
        try:
            view = oci.CgroupView.of(pid)
        except OSError as error:
            raise RunFailed(f"{what}: its process {pid} is not in /proc: {error}") from None
        limits = tuple(view.limits())
        # Go; then EOF on its stdout: the container's process ended.
        rest = _finish(child, b"g", what)
    wait_status = None
    if reaper:
        with contextlib.suppress(ChildProcessError):
            _, wait_status = os.waitpid(pid, 0)
    else:
        _wait_gone(pid, time.monotonic() + RUN_TIMEOUT)
    touched = [int(value) for key, value in _pairs(shown + rest) if key == "touched_kib"]
    return OomRun(pid, wait_status, max(touched, default=0), limits, oci.read_oom_evidence(view))


def _pairs(output: bytes) -> list[tuple[str, str]]:
    text = output.decode(errors="replace").removeprefix(MARKER.decode())
    return [(key, value) for key, _, value in (line.partition(" ") for line in text.splitlines())]


def _wait_gone(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
