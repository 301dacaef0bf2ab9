"""Image fuzzing of the loaders: malformed flat, ELF, multiboot and Linux images never crash pyvmm.

Each case takes a seed image (a committed guest, or a synthetic image with a
structural defect), applies a few random mutations (truncation, bit flips,
boundary values written into header fields, size inflation) and loads it
through `load_image` into a fresh small GuestMemory, as `pyvmm boot` does. The
loader must either load it, with every segment in RAM and the entry inside what
it loaded (checked by an independent parse of the image), or raise a
LoaderError (exit status 2) whose message is one non-empty line. Anything else,
or a case that takes seconds or hundreds of MiB, is a VMM bug, reported with
the seed and case number that reproduce it:

    python -m tests.fuzz.image_fuzz --count 20000 --seed 1
    python -m tests.fuzz.image_fuzz --seed 1 --case 1234   # replay one, traceback included
    python -m tests.fuzz.image_fuzz --real-kernels --count 300  # Debian's and the small kernel

Case N of seed S depends on (S, N) only, so a failure replays alone. The seeds,
mutations, cases and oracle are in image_seeds.py, image_mutations.py,
image_cases.py and image_oracle.py; this module runs the cases and reports.
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.arch.x86_64.placement import Placement, check_entry_placement, plan_placement
from pyvmm.errors import LoaderError
from pyvmm.loaders import EntryPoint, load_image, read_image
from pyvmm.memory.guest_memory import GuestMemory
from tests.fuzz.image_cases import RAM_CONFIGS, Case, make_case
from tests.fuzz.image_oracle import MACHINE_RANGES, check_loaded, check_rejected, note_on
from tests.fuzz.image_seeds import SeedImage

MIB = 1 << 20
# Beyond these a case is a failure: a loader must refuse a huge image before allocating.
SLOW_CASE_SECONDS = 5.0
RSS_GROWTH_LIMIT = 512 * MIB
# Reading an image file may cost the image and a copy, not the 4 GiB cap.
READ_ALLOCATION_LIMIT = 2 * MIB
# Rejected images must leave RAM untouched; checked where RAM is small enough to scan.
UNTOUCHED_CHECK_LIMIT = 8 * MIB


# --- loading ------------------------------------------------------------------------


class OracleProblem(Exception):
    """Something the loaders did wrong without raising: a failure of the case."""


@cache
def _scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="pyvmm-image-fuzz-")


def read_back(image: bytes) -> bytes:
    """`image` written to a file and read with read_image, its allocations watched."""
    path = Path(_scratch().name) / "image"
    path.write_bytes(image)
    tracemalloc.start()
    try:
        data = read_image(str(path))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if peak > 2 * len(image) + READ_ALLOCATION_LIMIT:
        raise OracleProblem(f"read_image allocated {peak >> 20} MiB for {len(image)} bytes")
    if data != image:
        raise OracleProblem("read_image returned other bytes than the file holds")
    return data


def load_case(case: Case, memory: GuestMemory) -> tuple[EntryPoint, Placement]:
    """Load as `pyvmm boot` does (through this module's `load_image`: tests replace it).

    First the placement of pyvmm's own structures and the list of what the
    machine writes (its firmware tables too), then the load with that list.
    """
    image = read_back(case.image) if case.via_file else case.image
    placement = plan_placement(
        image,
        memory,
        mode=case.mode,
        load_gpa=case.load_gpa,
        force_multiboot=case.force_multiboot,
        modules=case.modules,
        append=case.append,
        machine_ranges=MACHINE_RANGES,
        image_format=case.image_format,
    )
    entry = load_image(
        image,
        memory,
        mode=case.mode,
        load_gpa=case.load_gpa,
        default_flat_gpa=default_load_gpa,
        force_multiboot=case.force_multiboot,
        cmdline=case.cmdline,
        modules=case.modules,
        append=case.append,
        reserved=placement.reserved,
        image_format=case.image_format,
    )
    return entry, placement


def blank_numbers(text: str) -> str:
    """`text` with addresses, sizes and quoted strings blanked out: one kind of message."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'...'", text)
    text = re.sub(r"0x[0-9a-f]+", "X", text)
    return re.sub(r"\b\d+(?:\.\d+)?\b", "N", text)


def message_kind(error: BaseException) -> str:
    return f"{type(error).__name__}: {blank_numbers(str(error))}"


# --- running ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    case: Case
    kind: str  # "loaded", "rejected" or "failed"
    detail: str  # the message kind, or what went wrong
    seconds: float
    note: str = ""  # loaded, but worth a look (see note_on)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_case(case: Case) -> Outcome:
    """Load one case into fresh RAM and judge the result."""
    peak = _peak_rss()
    started = time.perf_counter()
    problems: list[str] = []
    kind, detail, note = "failed", "", ""
    with GuestMemory.from_ranges(RAM_CONFIGS[case.ram]) as memory:
        try:
            entry, placement = load_case(case, memory)
        except LoaderError as error:
            kind, detail = "rejected", message_kind(error)
            problems = check_rejected(error)
            low = memory.regions[0]
            if low.size <= UNTOUCHED_CHECK_LIMIT and memory.read(low.gpa, low.size) != bytes(
                low.size
            ):
                problems.append("a rejected image wrote to guest RAM")
        except OracleProblem as problem:
            problems = [str(problem)]
        except Exception as error:  # anything but a LoaderError is a VMM bug
            problems = [f"{type(error).__name__}: {error}"]
        else:
            kind, detail, note = "loaded", entry.protocol, note_on(entry)
            try:
                # As `pyvmm boot` does next: can pyvmm's own CPU set-up start it?
                check_entry_placement(entry, placement.reserved, placement.image.fix)
            except LoaderError as error:  # rejected after loading: the VM is discarded
                kind, detail, note = "rejected", message_kind(error), ""
                problems = check_rejected(error)
        if kind == "loaded":
            try:
                # pyvmm's placement checks refuse these now; one that loads is a regression.
                problems = [note] if note else check_loaded(case, memory, entry, placement)
            except Exception as error:  # the oracle could not read what was loaded
                problems = [f"oracle failed on a loaded image: {type(error).__name__}: {error}"]
    seconds = time.perf_counter() - started
    if seconds > SLOW_CASE_SECONDS:
        problems.append(f"took {seconds:.1f} s")
    grown = _peak_rss() - peak
    if grown > RSS_GROWTH_LIMIT:
        problems.append(f"peak memory grew by {grown >> 20} MiB")
    if problems:
        return Outcome(case, "failed", "; ".join(problems)[:500], seconds)
    return Outcome(case, kind, detail, seconds, note)


@dataclass
class Report:
    seed: int
    count: int = 0
    by_family: dict[str, Counter[str]] = field(default_factory=dict)
    by_image: dict[str, Counter[str]] = field(default_factory=dict)
    rejected_by_class: Counter[str] = field(default_factory=Counter)
    rejected_by_kind: Counter[str] = field(default_factory=Counter)
    loaded_by_protocol: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    failures: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    slowest: tuple[float, int] = (0.0, -1)

    def add(self, outcome: Outcome) -> None:
        case = outcome.case
        self.count += 1
        self.by_family.setdefault(case.source.family, Counter())[outcome.kind] += 1
        self.by_image.setdefault(case.source.name, Counter())[outcome.kind] += 1
        if outcome.kind == "rejected":
            self.rejected_by_class[outcome.detail.split(":", 1)[0]] += 1
            self.rejected_by_kind[outcome.detail] += 1
        elif outcome.kind == "loaded":
            self.loaded_by_protocol[outcome.detail] += 1
            if outcome.note:
                self.notes[outcome.note] += 1
        else:
            self.failures.append(outcome)
        self.slowest = max(self.slowest, (outcome.seconds, case.index))

    def total(self, kind: str) -> int:
        return sum(counter[kind] for counter in self.by_family.values())

    def summary(self, kinds: int = 25, per_image: bool = False) -> str:
        committed = sum(1 for name in self.by_image if name.startswith("guests/"))
        lines = [
            f"image fuzz, seed {self.seed}: {self.count} images from {len(self.by_image)} seed "
            f"images ({committed} committed guests) in {self.seconds:.1f} s "
            f"({1000 * self.seconds / max(self.count, 1):.1f} ms each, slowest "
            f"{self.slowest[0]:.2f} s: case {self.slowest[1]})",
            f"  loaded {self.total('loaded')}, rejected {self.total('rejected')}, "
            f"failed {self.total('failed')}",
            f"  {'family':<12}{'tried':>8}{'loaded':>8}{'rejected':>10}{'failed':>8}",
        ]
        rows = sorted(self.by_image.items()) if per_image else sorted(self.by_family.items())
        for name, counter in rows:
            lines.append(
                f"  {name:<12}{sum(counter.values()):>8}{counter['loaded']:>8}"
                f"{counter['rejected']:>10}{counter['failed']:>8}"
            )
        lines.append("  loaded by protocol: " + ", ".join(
            f"{name} {number}" for name, number in self.loaded_by_protocol.most_common()
        ))  # fmt: skip
        lines.append("  rejected by error class: " + ", ".join(
            f"{name} {number}" for name, number in self.rejected_by_class.most_common()
        ))  # fmt: skip
        lines.append(
            f"  rejected by message kind ({min(kinds, len(self.rejected_by_kind))} most common "
            f"of {len(self.rejected_by_kind)}):"
        )
        lines += [f"    {n:>6}  {kind}" for kind, n in self.rejected_by_kind.most_common(kinds)]
        for note, number in self.notes.most_common():
            lines.append(f"  note: {number} loaded with a {note}")
        lines.append(f"  failures: {len(self.failures)}")
        # One example of each kind of failure, the first found, with its count.
        examples: dict[str, tuple[int, Outcome]] = {}
        for outcome in self.failures:
            number, first = examples.get(blank_numbers(outcome.detail), (0, outcome))
            examples[blank_numbers(outcome.detail)] = (number + 1, first)
        for number, outcome in examples.values():
            lines.append(f"    {number} x, e.g. case {outcome.case.index}: {outcome.detail}")
            lines.append(f"      {outcome.case.describe()}")
            lines.append(
                f"      replay: python -m tests.fuzz.image_fuzz --seed {self.seed} "
                f"--case {outcome.case.index}"
            )
        return "\n".join(lines)


def run_campaign(
    count: int, seed: int, start: int = 0, corpus: Sequence[SeedImage] | None = None
) -> Report:
    """Cases start .. start+count-1 of `seed` (from `corpus` instead of the seeds, if given)."""
    report = Report(seed)
    started = time.perf_counter()
    for index in range(start, start + count):
        report.add(run_case(make_case(seed, index, corpus)))
    report.seconds = time.perf_counter() - started
    return report


def real_kernels() -> tuple[SeedImage, ...]:
    """Debian's stock kernel and the small test kernel, bzImage and vmlinux each (cached by
    tests/linux/kernels.py; made on first use: a download, a build)."""
    from tests.linux.kernels import stock_kernel, tiny_kernel

    seeds = []
    for kernel in (tiny_kernel(), stock_kernel()):
        for kind in ("bzimage", "vmlinux"):
            path = getattr(kernel, kind)
            seeds.append(SeedImage(f"linux/real-{kernel.name}-{kind}", "linux", path.read_bytes()))
    return tuple(seeds)


def replay(seed: int, index: int, corpus: Sequence[SeedImage] | None = None) -> int:
    """Run one case without catching anything, so that a VMM bug shows its traceback."""
    case = make_case(seed, index, corpus)
    print(case.describe())
    with GuestMemory.from_ranges(RAM_CONFIGS[case.ram]) as memory:
        try:
            entry, placement = load_case(case, memory)
        except LoaderError as error:
            print(f"rejected: {type(error).__name__}: {error}")
        else:
            print(f"loaded: {entry}")
            print(f"pyvmm's structures: {placement.places}")
    outcome = run_case(case)
    print(f"verdict: {outcome.kind}: {outcome.detail}")
    return 1 if outcome.kind == "failed" else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz.image_fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=20000, help="images to try (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (default 1)")
    parser.add_argument("--start", type=int, default=0, help="first case number (default 0)")
    parser.add_argument("--case", type=int, help="replay this one case, with its traceback")
    parser.add_argument("--dump", type=Path, help="write each failing image into this directory")
    parser.add_argument("--kinds", type=int, default=25, help="message kinds to list")
    parser.add_argument("--per-image", action="store_true", help="outcomes per seed image")
    parser.add_argument(
        "--real-kernels",
        action="store_true",
        help="mutate real Linux kernels instead (Debian's stock one and the small test "
        "kernel, bzImage and vmlinux; from the cache of tests/linux/kernels.py)",
    )
    args = parser.parse_args(argv)
    corpus = real_kernels() if args.real_kernels else None
    if args.case is not None:
        return replay(args.seed, args.case, corpus)
    report = run_campaign(args.count, args.seed, args.start, corpus)
    print(report.summary(args.kinds, args.per_image))
    if args.dump and report.failures:
        args.dump.mkdir(parents=True, exist_ok=True)
        for outcome in report.failures:
            (args.dump / f"seed{args.seed}-case{outcome.case.index}.img").write_bytes(
                outcome.case.image
            )
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
