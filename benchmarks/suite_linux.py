"""Linux, booted: pyvmm against QEMU's binary translator (TCG), milestone by milestone.

Two kernels from Debian's packages (tests/linux/kernels.py, cached outside
the checkout), each with a busybox initramfs (tests/linux/initramfs.py):

- the small kernel (guests/linux/tiny-x86_64.config), its vmlinux: time
  from the process's start to /init's first line (the marker), then a
  command's output and the power-off;
- Debian's stock `linux-image-cloud-amd64`, its vmlinux under pyvmm (the
  64-bit boot protocol's fast route) and its bzImage under QEMU (`-kernel`
  takes no vmlinux): time to a busybox shell's prompt and a typed command's
  output, then `poweroff -f`.

Each row is A = `qemu-system-x86_64 -accel tcg` (QEMU with KVM stops at the
kernel's int3 self-test on a kvm_pvm host: "emulation failure") and B =
pyvmm with what its host probe adds, timed the same way: from spawn to the
line on the console, as whole seconds of wall time. The notes give every
milestone for both, pyvmm's own boot time (VM creation to /init's
boot-timer write, --stats), its emulation assists and SYSCALL repairs, and
the targets of issue 15 (small kernel to the marker within 60 s, stock to
the shell within 360 s).

    python -m benchmarks.suite_linux [--quick] [--json]

--quick boots the small kernel once on each side; a full run boots it 3
times on each side and the stock kernel once (about 15 minutes here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.comparison import Comparison, Progress, interleave
from benchmarks.suite_exits import run_suite_cli

SUITE = "linux"
APPEND = "console=ttyS0 cryptomgr.notests reboot=k"
MEMORY = "256M"
TINY_TARGET = 60.0
STOCK_TARGET = 360.0
TINY_LIMIT = 300.0  # seconds a boot may take before it counts as failed
STOCK_LIMIT = 1500.0
SHELL_COMMAND = b"echo shell-$((6*7))\n"
SHELL_ANSWER = "shell-42"


class BootFailed(Exception):
    """A boot did not reach a milestone in time; the message says which."""


@dataclass
class Boot:
    """One boot: seconds from spawn to each milestone, and the console and stderr."""

    milestones: dict[str, float] = field(default_factory=dict)
    output: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class Milestone:
    name: str
    pattern: re.Pattern[bytes]
    then_type: bytes = b""  # typed on the console once it is seen


def watch(command: Sequence[str], milestones: Sequence[Milestone], limit: float, what: str) -> Boot:
    """Run `command`, timing each milestone on its stdout in order; end it after the last.

    The process is killed at `limit` seconds or when its output stops matching
    (it ended first): BootFailed names the milestone it did not reach.
    """
    boot = Boot()
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None and process.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    timer = threading.Timer(limit, process.kill)
    timer.start()
    seen = bytearray()
    pending = list(milestones)
    position = 0  # a milestone's text must come after the one before's
    try:
        while pending:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk.replace(b"\r", b"")
            while pending and (found := pending[0].pattern.search(seen, position)):
                step = pending.pop(0)
                boot.milestones[step.name] = time.monotonic() - started
                position = found.end()
                if step.then_type:
                    process.stdin.write(step.then_type)
                    process.stdin.flush()
        if not pending:
            # What is left (a command, the power-off) is not timed: give it a while.
            try:
                process.wait(timeout=min(120.0, limit))
            except subprocess.TimeoutExpired:
                process.kill()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
        seen += process.stdout.read().replace(b"\r", b"")
        process.wait()
        reader.join(10)
    boot.output = bytes(seen).decode(errors="replace")
    boot.stderr = b"".join(errors).decode(errors="replace")
    if pending:
        tail = "\n".join(boot.output.splitlines()[-5:])
        raise BootFailed(
            f"{what}: no {pending[0].name!r} within {limit:.0f} s (status "
            f"{process.returncode}); last lines:\n{tail}\n{boot.stderr[-800:]}"
        )
    return boot


def pyvmm_command(kernel: Path, initramfs: Path) -> list[str]:
    return [
        sys.executable, "-m", "pyvmm", "boot", "-m", MEMORY, "--stats",
        "--timeout", f"{STOCK_LIMIT:.0f}", "--initrd", str(initramfs), "--append", APPEND,
        str(kernel),
    ]  # fmt: skip


def qemu_command(qemu: str, kernel: Path, initramfs: Path) -> list[str]:
    return [
        qemu, "-accel", "tcg", "-m", MEMORY, "-nodefaults", "-display", "none",
        "-serial", "stdio", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initramfs),
        "-append", APPEND,
    ]  # fmt: skip


def milestones(shell: bool) -> list[Milestone]:
    from tests.linux.initramfs import SHELL_LINE, UP_LINE

    steps = [
        Milestone("banner", re.compile(rb"Linux version ")),
        Milestone("Run /init", re.compile(rb"Run /init as init process")),
        Milestone("marker", re.compile(re.escape(UP_LINE.encode()))),
    ]
    if shell:
        steps += [
            Milestone("shell prompt", re.compile(re.escape(SHELL_LINE.encode()) + rb"\n.*?[/~] # ",
                                                 re.S), SHELL_COMMAND),
            Milestone("command output", re.compile(SHELL_ANSWER.encode() + rb"\n"),
                      b"poweroff -f\n"),
        ]  # fmt: skip
    return steps


STATS = {
    "boot_time_s": re.compile(r"^boot time: ([\d.]+) s", re.M),
    "syscall_repairs": re.compile(r"^syscall repairs: (\d+)", re.M),
    "assists": re.compile(r"^emulation assists: (\d+)", re.M),
    "pit_irqs": re.compile(r"^PIT: (\d+) IRQ 0 delivered", re.M),
}


def pyvmm_notes(boot: Boot) -> dict[str, object]:
    notes: dict[str, object] = {}
    for key, pattern in STATS.items():
        match = pattern.search(boot.stderr)
        if match:
            notes[key] = float(match[1]) if "." in match[1] else int(match[1])
    by_instruction = re.findall(
        r"^  (\S[^\n]*?) +(\d+)$", boot.stderr.split("emulation assists:")[-1], re.M
    )
    if "emulation assists:" in boot.stderr:
        notes["assists_by_instruction"] = {name.strip(): int(n) for name, n in by_instruction}
    added = re.search(r"^pyvmm: added to the kernel's command line[^\n]*", boot.stderr, re.M)
    if added:
        notes["host_line"] = added[0]
    return notes


def compare_kernel(
    name: str,
    kernel: object,
    initramfs: Path,
    qemu: str,
    shell: bool,
    pairs: int,
    target: float,
    limit: float,
    progress: Progress | None,
) -> Comparison:
    """One row: QEMU TCG (A) and pyvmm (B), seconds to the last milestone, interleaved."""
    last = "command output" if shell else "marker"
    comparison = Comparison(
        SUITE, f"{name} kernel to {'a shell command' if shell else '/init marker'}",
        "QEMU TCG", "pyvmm", "s",
    )  # fmt: skip
    qemu_boots: list[dict[str, float]] = []
    pyvmm_boots: list[dict[str, object]] = []

    def run_qemu() -> float:
        boot = watch(
            qemu_command(qemu, kernel.bzimage, initramfs),
            milestones(shell),
            limit,  # type: ignore[attr-defined]
            f"QEMU TCG, {name} kernel",
        )
        qemu_boots.append(boot.milestones)
        return boot.milestones[last]

    def run_pyvmm() -> float:
        boot = watch(
            pyvmm_command(kernel.vmlinux, initramfs),
            milestones(shell),
            limit,  # type: ignore[attr-defined]
            f"pyvmm, {name} kernel",
        )
        pyvmm_boots.append({"milestones": boot.milestones, **pyvmm_notes(boot)})
        return boot.milestones[last]

    interleave(comparison, run_qemu, run_pyvmm, pairs, progress)
    comparison.notes.update(
        {
            "kernel": f"{kernel.release} ({kernel.version})",  # type: ignore[attr-defined]
            "append": APPEND,
            "memory": MEMORY,
            "pyvmm_image": "vmlinux",
            "qemu_image": "bzImage",
            "qemu_boots": qemu_boots,
            "pyvmm_boots": pyvmm_boots,
            "target_s": target,
            "met": max(comparison.b) <= target,
        }
    )
    return comparison


def collect(quick: bool, progress: Progress | None = None) -> list[Comparison]:
    from tests.linux import debian
    from tests.linux.initramfs import build_initramfs
    from tests.linux.kernels import KernelError, stock_kernel, tiny_kernel

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise BootFailed("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
    say = progress or (lambda message: None)
    try:
        say(f"{SUITE}: the small kernel (built once, cached)")
        tiny = tiny_kernel()
        plain = build_initramfs(["uname -r"]).path
        rows = [
            compare_kernel("small", tiny, plain, qemu, False, 1 if quick else 3, TINY_TARGET,
                           TINY_LIMIT, progress)
        ]  # fmt: skip
        if not quick:
            say(f"{SUITE}: the stock kernel (downloaded once, cached)")
            stock = stock_kernel()
            shell = build_initramfs(["uname -r"], shell=True).path
            rows.append(
                compare_kernel("stock", stock, shell, qemu, True, 1, STOCK_TARGET, STOCK_LIMIT,
                               progress)
            )  # fmt: skip
    except (debian.PackageUnavailable, KernelError) as error:
        raise BootFailed(f"cannot make the kernels: {error}") from error
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    run_suite_cli(collect, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    main()
