"""What the demos share: host facts, the shipped guests, running a guest, printing evidence."""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pyvmm.kvm.host import kvm_backend
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.outcome import RunOutcome
from pyvmm.shipped import shipped_file

MIB = 1 << 20
DEMO_RAM_SIZE = 64 * MIB
TEXT_WIDTH = 78

PAPER = (
    'Popek & Goldberg (1974), "Formal requirements for virtualizable third '
    'generation architectures"'
)

# A guest that must not end at all is stopped after this long.
GUEST_RUN_LIMIT = 60.0

# Exit statuses of `pyvmm demo NAME`.
EVIDENCE_HOLDS = 0
EVIDENCE_FAILS = 4  # even: odd statuses are a debug-exit's alone
CANNOT_RUN = 2


def stop_if_interrupted(outcome: RunOutcome) -> None:
    """End the demo the way the signal that stopped this run ends pyvmm.

    A run turns SIGINT, SIGTERM and SIGHUP into its INTERRUPTED outcome; a
    demo must not report that as evidence for or against anything, so it is
    raised again (KeyboardInterrupt for SIGINT, StoppedBySignal for the
    others) and `pyvmm` prints `pyvmm: stopped by SIGNAME` and ends by it.
    """
    from pyvmm.machine.outcome import OutcomeKind

    if outcome.kind is not OutcomeKind.INTERRUPTED or outcome.signal is None:
        return
    if outcome.signal == signal.SIGINT:
        raise KeyboardInterrupt
    from pyvmm.machine.run_signals import StoppedBySignal

    raise StoppedBySignal(outcome.signal)


class DemoCannotRun(Exception):
    """The demo could not gather its evidence, for a reason that says nothing about the property.

    `pyvmm demo` prints the message and exits CANNOT_RUN.
    """


@dataclass(frozen=True)
class HostFacts:
    """Which KVM runs the guests, and what the CPU tells the host about itself."""

    backend: str  # from pyvmm.kvm.host.kvm_backend()
    hardware_extension: str | None  # "vmx" (VT-x) or "svm" (AMD-V) in /proc/cpuinfo
    host_is_a_guest: bool  # /proc/cpuinfo "hypervisor": the host itself runs in a VM

    @property
    def ring0_is_emulated(self) -> bool:
        """kvm_pvm runs guest ring 0 in software; VT-x and AMD-V run both rings directly."""
        return self.backend.startswith("kvm_pvm")

    def describe(self) -> str:
        extension = {
            "vmx": "vmx (Intel VT-x)",
            "svm": "svm (AMD-V)",
            None: "neither vmx nor svm (no hardware virtualization)",
        }[self.hardware_extension]
        outer = (
            "; 'hypervisor' is set: this host is itself a virtual machine"
            if self.host_is_a_guest
            else ""
        )
        return f"host: KVM backend {self.backend}; CPU flags: {extension}{outer}"

    def explain_rings(self) -> str:
        if self.ring0_is_emulated:
            return (
                "On this host KVM is kvm_pvm, which runs without VT-x/AMD-V: guest code "
                "at CPL3 runs directly on the CPU, but guest code at CPL0 is emulated by "
                "the host kernel one instruction at a time."
            )
        if self.hardware_extension:
            return (
                "On this host KVM uses hardware virtualization: guest code runs directly "
                "on the CPU at CPL0 and CPL3 alike, until an instruction or access that "
                "the VMM must handle traps out."
            )
        return f"This host's KVM backend is {self.backend}; how it runs guest code is not known."


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty if it cannot be read)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def detect_host() -> HostFacts:
    flags = cpu_flags()
    extension = next((name for name in ("vmx", "svm") if name in flags), None)
    return HostFacts(kvm_backend(), extension, "hypervisor" in flags)


def guest_image(name: str) -> Path:
    """guests/NAME as shipped with pyvmm; raises ShippedFileMissing."""
    return shipped_file(f"guests/{name}")


@dataclass(frozen=True)
class GuestRun:
    console: bytes
    outcome: RunOutcome
    exits: int
    seconds: float  # Machine.run only: not building the VM
    unassigned_port_reads: int
    unassigned_port_writes: int
    unassigned_mmio_reads: int
    unassigned_mmio_writes: int


def run_guest(
    image: bytes,
    mode: CpuMode | None,
    ram_size: int = DEMO_RAM_SIZE,
    timeout: float = GUEST_RUN_LIMIT,
    results: Sequence[tuple[int, int]] = (),
    cmdline: str = "",
    append: str | None = None,
) -> tuple[GuestRun, list[bytes]]:
    """Boot `image` in a new VM, run it to its end, return what happened.

    `mode` None: as the image's format says (see pyvmm.loaders). `results`
    lists (gpa, size) ranges of guest RAM to read back after the run.
    `cmdline` and `append` are a multiboot kernel's command line, as
    MachineConfig has them (`append` given: the image must be one).
    """
    from pyvmm.machine.builder import MachineConfig, build_machine

    console = bytearray()
    config = MachineConfig(
        image=image,
        ram_size=ram_size,
        console=console.extend,
        mode=mode,
        cmdline=cmdline,
        append=append,
    )
    with build_machine(config) as machine:
        start = time.perf_counter()
        outcome = machine.run(timeout=timeout)
        stop_if_interrupted(outcome)
        seconds = time.perf_counter() - start
        memory = [machine.memory.read(gpa, size) for gpa, size in results]
        run = GuestRun(
            console=bytes(console),
            outcome=outcome,
            exits=machine.loop.exit_count,
            seconds=seconds,
            unassigned_port_reads=machine.pio_bus.unmapped_reads,
            unassigned_port_writes=machine.pio_bus.unmapped_writes,
            unassigned_mmio_reads=machine.mmio_bus.unmapped_reads,
            unassigned_mmio_writes=machine.mmio_bus.unmapped_writes,
        )
    return run, memory


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: columns as wide as their widest cell, a rule under the header."""
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def paragraph(text: str, indent: str = "") -> str:
    return textwrap.fill(
        " ".join(text.split()),
        TEXT_WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,  # names such as sensitive-instructions stay whole
    )


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def format_ratio(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


@dataclass
class Report:
    """A demo's printed page: header, evidence tables, a few sentences, a verdict."""

    out: TextIO = sys.stdout

    def header(self, title: str, quote: str, host: HostFacts) -> None:
        self.out.write(f"{title}\n{'=' * len(title)}\n")
        self.out.write(paragraph(f"{PAPER}:") + "\n")
        self.out.write(paragraph(quote, indent="  ") + "\n\n")
        self.out.write(paragraph(host.describe()) + "\n\n")

    def section(self, title: str) -> None:
        self.out.write(paragraph(title) + "\n")
        self.out.flush()  # a long step follows: show what it is doing

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.out.write(render_table(header, rows) + "\n\n")

    def text(self, text: str) -> None:
        self.out.write(paragraph(text) + "\n\n")

    def verdict(self, holds: bool, what: str) -> int:
        self.out.write(f"verdict: {what}\n")
        self.out.flush()
        return EVIDENCE_HOLDS if holds else EVIDENCE_FAILS
