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

import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.comparison import Comparison, Progress, interleave
from benchmarks.suite_exits import run_suite_cli

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tests.linux.console import Boot

SUITE = "linux"
APPEND = "console=ttyS0 cryptomgr.notests reboot=k"
MEMORY = "128M"  # pyvmm's and QEMU's default, as issue 15's command line has it
TINY_TARGET = 60.0
STOCK_TARGET = 360.0
TINY_LIMIT = 300.0  # seconds a boot may take before it counts as failed
STOCK_LIMIT = 1500.0


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


STATS = {
    "boot_time_s": re.compile(r"^boot time: ([\d.]+) s", re.M),
    "syscall_repairs": re.compile(r"^syscall repairs: (\d+)", re.M),
    "assists": re.compile(r"^emulation assists: (\d+)", re.M),
    "pit_irqs": re.compile(r"^PIT: (\d+) IRQ 0 delivered", re.M),
    "assist_s": re.compile(r"^emulation assists: \d+, ([\d.]+) s", re.M),
    "syscall_repair_s": re.compile(r"^syscall repairs: \d+, ([\d.]+) s", re.M),
    "run_s": re.compile(r"^time: ([\d.]+) s", re.M),
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
    from tests.linux.console import milestones, watch

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


def skipped(name: str, reason: str) -> Comparison:
    comparison = Comparison(SUITE, name, "QEMU TCG", "pyvmm", "s")
    comparison.notes["skipped"] = reason
    return comparison


def collect(quick: bool, progress: Progress | None = None) -> list[Comparison]:
    """The rows; a row that cannot be measured (no checkout, no QEMU, no kernel, a boot
    that failed) is a skipped row whose note says why, in one line."""
    names = ["small kernel to /init marker"] + (
        [] if quick else ["stock kernel to a shell command"]
    )
    try:
        from tests.linux import debian
        from tests.linux.console import BootFailed
    except ImportError:  # an installed pyvmm: its kernels come from the checkout's tests/linux
        reason = (
            "needs a checkout of pyvmm (tests/linux makes its kernels): run `python -m "
            "benchmarks --suite linux` in the checkout"
        )
        return [skipped(name, reason) for name in names]
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return [skipped(name, "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
                for name in names]  # fmt: skip
    from tests.linux.initramfs import build_initramfs
    from tests.linux.kernels import KernelError, stock_kernel, tiny_kernel

    say = progress or (lambda message: None)
    rows: list[Comparison] = []
    plans = [("small", tiny_kernel, False, 1 if quick else 3, TINY_TARGET, TINY_LIMIT)]
    if not quick:
        plans.append(("stock", stock_kernel, True, 1, STOCK_TARGET, STOCK_LIMIT))
    for (name, make, shell, pairs, target, limit), row_name in zip(plans, names, strict=True):
        try:
            say(f"{SUITE}: the {name} kernel (made once, cached)")
            kernel = make()
            initramfs = build_initramfs(["uname -r"], shell=shell).path
            rows.append(
                compare_kernel(name, kernel, initramfs, qemu, shell, pairs, target, limit,
                               progress)
            )  # fmt: skip
        except (debian.PackageUnavailable, KernelError, BootFailed) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            rows.append(skipped(row_name, f"{type(error).__name__}: {first}"))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    run_suite_cli(collect, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    main()
