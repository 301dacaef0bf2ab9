"""Paravirtualization, measured: the same console bytes through the 16550 and virtio-console.

pyvmm's virtio driver (guests/virtio/virtio.elf) sends N KiB of 'x' either
through COM1, one `outb` per byte (`serial=N`: full virtualization, an exit
per byte), or through virtio-console's transmitq in 4 KiB buffers, one
notification per buffer (`console=N`: paravirtualization). The row is the
cost per KiB of console output, interleaved pairs of whole runs (the guest's
setup included, which favours the UART: it has almost none), so B/A below 1
is virtio's advantage; the notes give its inverse, the throughput ratio, and
the exits per 4 KiB request.

Not measured here yet: virtio-blk reads against the host's read() of the
same file, and notifications through ioeventfd/irqfd (pyvmm has only the
MMIO exit and KVM_IRQ_LINE so far).
"""

from __future__ import annotations

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
    return [comparison]


def main(argv: Sequence[str] | None = None) -> None:
    run_suite_cli(collect, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    main()
