"""`--stats`: exits by reason and by address, and where the time went."""

from __future__ import annotations

import statistics
from collections import Counter

from pyvmm.kvm.exits import IoIn, IoOut, MmioRead, MmioWrite, VcpuExit
from pyvmm.observe.trace import exit_reason


class ExitStatistics:
    """An ExitObserver that counts exits and times KVM_RUN and the VMM's handling."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.by_port: Counter[int] = Counter()
        self.by_mmio: Counter[int] = Counter()
        self.run_ns = 0
        self.handle_ns: list[int] = []
        self.interrupts = 0

    @property
    def exits(self) -> int:
        return sum(self.by_reason.values())

    @property
    def run_seconds(self) -> float:
        """KVM_RUN and pyvmm's handling of the exits together: the run's time, in seconds."""
        return (self.run_ns + sum(self.handle_ns)) / 1e9

    def on_interrupted(self, run_ns: int) -> None:
        self.interrupts += 1
        self.run_ns += run_ns

    def on_exit(self, exit: VcpuExit, run_ns: int, handle_ns: int) -> None:
        self.by_reason[exit_reason(exit)] += 1
        if isinstance(exit, IoIn | IoOut):
            self.by_port[exit.port] += 1
        elif isinstance(exit, MmioRead | MmioWrite):
            self.by_mmio[exit.gpa] += 1
        self.run_ns += run_ns
        self.handle_ns.append(handle_ns)

    def summary(self) -> str:
        vmm_ns = sum(self.handle_ns)
        total_ns = self.run_ns + vmm_ns
        lines = [f"exits: {self.exits} ({self.interrupts} KVM_RUN calls interrupted by signals)"]
        for reason, count in self.by_reason.most_common():
            lines.append(f"  {reason:<26} {count:>10}")
        for port, count in sorted(self.by_port.items()):
            lines.append(f"  {f'port 0x{port:04x}':<26} {count:>10}")
        for gpa, count in sorted(self.by_mmio.items()):
            lines.append(f"  {f'MMIO 0x{gpa:x}':<26} {count:>10}")
        if total_ns:
            lines.append(
                f"time: {total_ns / 1e9:.6f} s, {self.run_ns / 1e9:.6f} s inside KVM_RUN "
                f"({100 * self.run_ns / total_ns:.1f} %), {vmm_ns / 1e9:.6f} s in pyvmm "
                f"({100 * vmm_ns / total_ns:.1f} %)"
            )
            lines.append(f"exits per second: {self.exits / (total_ns / 1e9):,.0f}")
        if self.handle_ns:
            ordered = sorted(self.handle_ns)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            lines.append(
                f"VMM handling per exit: mean {statistics.fmean(ordered) / 1e3:.2f} us, "
                f"p99 {p99 / 1e3:.2f} us"
            )
        return "\n".join(lines)


class FanOut:
    """Several observers seen as one."""

    def __init__(self, *observers: object) -> None:
        self.observers = observers

    def on_exit(self, exit: VcpuExit, run_ns: int, handle_ns: int) -> None:
        for observer in self.observers:
            observer.on_exit(exit, run_ns, handle_ns)  # type: ignore[attr-defined]

    def on_interrupted(self, run_ns: int) -> None:
        for observer in self.observers:
            observer.on_interrupted(run_ns)  # type: ignore[attr-defined]
