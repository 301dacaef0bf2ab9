"""Paravirtualization, measured: the same console bytes through the 16550 and virtio-console.

pyvmm's virtio driver (guests/virtio/virtio.elf) sends N KiB of 'x' either
through COM1, one `outb` per byte (`serial=N`: full virtualization, an exit
per byte), or through virtio-console's transmitq in 4 KiB buffers, one
notification per buffer (`console=N`: paravirtualization). The row is the
cost per KiB of console output, interleaved pairs of whole runs (the guest's
setup included, which favours the UART: it has almost none), so B/A below 1
is virtio's advantage; the notes give its inverse, the throughput ratio, and
the exits per 4 KiB request.

Two virtio-blk rows follow, from the driver's `blkread=N` (N MiB of a
read-only disk, sequentially, one 64 KiB IN request at a time, each waited
for before the next; the time is taken between the driver's "blkread: start"
and "blkread: read" lines, so its setup is left out):

- sequential 64 KiB reads of a file in the host's page cache, the guest's
  (B) against the host's own `os.pread` of the same file in 64 KiB pieces
  (A): the notes give the guest's throughput over the host's, against a
  target of at least 0.5;
- the same guest reads, the driver waiting for the used-buffer interrupt
  (`irq`), with each notification an MMIO exit served by the vCPU and the
  interrupt a KVM_IRQ_LINE (A, `--ioeventfd off`), and through an ioeventfd
  served by pyvmm's I/O thread and an irqfd (B): cost per request, and exits
  per request from the exit counts of two run lengths (their difference is
  the requests' alone), polling included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from benchmarks.comparison import Comparison, Progress, interleave
from benchmarks.suite_exits import run_suite_cli

SUITE = "virtio"
NAME = "console output, 4 KiB writes"
A_LABEL = "16550 (COM1)"
B_LABEL = "virtio-console"
QUICK = (32, 2)  # (KiB per run, pairs)
FULL = (256, 5)
REQUEST_KIB = 4  # the driver's buffer size for console=N


def cost_per_kib(
    arguments: str, kib: int, samples: dict[str, list[int]], **devices: object
) -> float:
    """Microseconds per KiB of one whole run of the driver; its exits go in `samples`."""
    from pyvmm.demos.paravirtualization import run_driver

    run = run_driver(arguments, **devices)
    samples.setdefault(arguments.split("=")[0], []).append(run.exits)
    return run.seconds * 1e6 / kib


def collect(quick: bool, progress: Progress | None = None) -> list[Comparison]:
    """One row: µs per KiB of console output, 16550 (A) against virtio-console (B)."""
    kib, pairs = QUICK if quick else FULL
    comparison = Comparison(SUITE, NAME, A_LABEL, B_LABEL, "us/KiB")
    exits: dict[str, list[int]] = {}
    interleave(
        comparison,
        lambda: cost_per_kib(f"serial={kib}", kib, exits),
        lambda: cost_per_kib(f"console={kib}", kib, exits, virtio_console=True),
        pairs,
        progress,
    )
    ratio = comparison.ratio
    comparison.notes.update(
        {
            "kib_per_run": kib,
            "throughput_virtio_over_16550": round(1 / ratio, 1) if ratio else None,
            "exits_per_run": exits,
            "virtio_exits_per_4k_request": round(min(exits["console"]) / (kib / REQUEST_KIB), 2),
            "timed": "Machine.run of the whole guest, setup included (probe, negotiation)",
        }
    )
    return [comparison, *collect_blk(quick, progress)]


BLK_SUITE_NAME = "virtio-blk sequential 64 KiB reads"
BLK_PATH_NAME = "virtio-blk request, notification path"
BLK_REQUEST = 64 * 1024  # the driver's blkread request size
BLK_QUICK = (4, 2)  # (MiB per run, pairs)
BLK_FULL = (16, 5)
MIB = 1 << 20


def make_disk(directory: str, mib: int) -> str:
    """A raw image of `mib` MiB (+ 1 sector) of varied bytes, read once: in the page cache."""
    import os

    path = os.path.join(directory, "blkread.img")
    with open(path, "wb") as disk:
        for index in range(mib):
            disk.write(bytes([index & 0xFF]) * MIB)
        disk.write(bytes(512))
    host_read_seconds(path, mib)
    return path


def host_read_seconds(path: str, mib: int) -> float:
    """Seconds the host takes to read `mib` MiB of `path` with os.pread, 64 KiB at a time."""
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        started = time.perf_counter()
        for offset in range(0, mib * MIB, BLK_REQUEST):
            if len(os.pread(fd, BLK_REQUEST, offset)) != BLK_REQUEST:
                raise RuntimeError(f"{path}: short read")
        return time.perf_counter() - started
    finally:
        os.close(fd)


def guest_read(
    path: str, mib: int, ioeventfd: bool | None, irq: bool = False
) -> tuple[float, int, int]:
    """(seconds of the driver's `blkread=mib` reads, exits of the whole run, interrupts
    the driver took); with `irq` it sleeps until each request's used-buffer interrupt
    instead of polling the used ring."""
    from pyvmm.demos.paravirtualization import run_driver
    from pyvmm.machine.virtio import Drive

    arguments = f"blkread={mib}" + (" irq" if irq else "")
    # KVM's whole irqchip on both sides: A's interrupt is KVM_IRQ_LINE, B's an irqfd.
    drive = Drive(path, read_only=True)
    run = run_driver(arguments, drive=drive, ioeventfd=ioeventfd, irqchip="on")
    taken = re.search(rb"^irq: (\d+) interrupts$", run.console, re.MULTILINE)
    seconds = run.seconds_between(b"blkread: start", b"blkread: read")
    return seconds, run.exits, int(taken.group(1)) if taken else 0


def collect_blk(quick: bool, progress: Progress | None = None) -> list[Comparison]:
    """The two virtio-blk rows: guest against host reads, and the two notification paths."""
    import tempfile

    mib, pairs = BLK_QUICK if quick else BLK_FULL
    requests = mib * MIB // BLK_REQUEST
    reads = Comparison(SUITE, BLK_SUITE_NAME, "host os.pread", "guest virtio-blk", "us/MiB")
    paths = Comparison(
        SUITE, BLK_PATH_NAME, "MMIO exit + KVM_IRQ_LINE", "ioeventfd + irqfd", "us/request"
    )
    with tempfile.TemporaryDirectory(prefix="pyvmm-blk-") as directory:
        path = make_disk(directory, mib)
        interleave(
            reads,
            lambda: host_read_seconds(path, mib) * 1e6 / mib,
            lambda: guest_read(path, mib, None)[0] * 1e6 / mib,
            pairs,
            progress,
        )
        interleave(
            paths,
            lambda: guest_read(path, mib, False, irq=True)[0] * 1e6 / requests,
            lambda: guest_read(path, mib, True, irq=True)[0] * 1e6 / requests,
            pairs,
            progress,
        )
        exits, interrupts = {}, {}
        for label, ioeventfd, irq in (
            ("MMIO exit + KVM_IRQ_LINE", False, True),
            ("ioeventfd + irqfd", True, True),
            ("ioeventfd, polling the used ring", True, False),
        ):
            whole = guest_read(path, mib, ioeventfd, irq)
            half = guest_read(path, mib // 2, ioeventfd, irq)
            exits[label] = round((whole[1] - half[1]) / (requests - requests // 2), 2)
            interrupts[label] = round(whole[2] / requests, 2)
    ratio = reads.ratio
    reads.notes.update(
        {
            "mib_per_run": mib,
            "request_bytes": BLK_REQUEST,
            "throughput_guest_over_host": round(1 / ratio, 3) if ratio else None,
            "target_guest_over_host": 0.5,
            "timed": "between the driver's 'blkread: start' and 'blkread: read' lines; "
            "the host's os.pread loop over the same cached file",
        }
    )
    paths.notes.update(
        {
            "requests_per_run": requests,
            "exits_per_request": exits,
            "interrupts_per_request": interrupts,
            "timed": "as the row above, per 64 KiB request; the driver with `irq`: it "
            "sleeps in hlt until each request's used-buffer interrupt",
        }
    )
    return [reads, paths]


def main(argv: Sequence[str] | None = None) -> None:
    run_suite_cli(collect, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    main()
