"""What a change did to each ratio: two runs of `python -m benchmarks`, row by row.

    python -m benchmarks --compare OLD.json            run now, compare with OLD
    python -m benchmarks --compare OLD.json NEW.json   compare two saved runs

A row is one comparison (suite and name). Its figure is the median of its pair
ratios B/A, measured as interleaved pairs inside one run; comparing runs
compares those ratios, never the raw times, which drift between runs (this
host's clock does). For each row in both runs this prints the old and the new
ratio, their quotient new/old (below 1: B became cheaper relative to A, which
in most rows means pyvmm got faster against its anchor), and a verdict:
"B cheaper" or "B dearer" when the middle halves (interquartile ranges) of
the two runs' pair ratios do not overlap, "within noise" when they do, "?"
with fewer than 2 pairs on a side. A row whose anchor changed (other A or B
label, other unit) is compared all the same but says so.

Nothing here needs KVM: it reads the JSON that `python -m benchmarks` writes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]
Key = tuple[str, str]  # (suite, name)

# Machine fields whose difference makes two runs' ratios hard to compare.
MACHINE_FIELDS = ("cpu", "kernel", "python", "kvm")


class CompareError(Exception):
    """A file that is not a run of `python -m benchmarks`."""


@dataclass(frozen=True)
class RowChange:
    suite: str
    name: str
    unit: str
    a_label: str
    b_label: str
    old_ratio: float | None
    new_ratio: float | None
    old_quartiles: tuple[float, float] | None  # of the pair ratios B/A
    new_quartiles: tuple[float, float] | None
    old_pairs: int
    new_pairs: int
    anchor_change: str | None = None  # what differs in the row's labels or unit

    @property
    def change(self) -> float | None:
        """new ratio / old ratio: below 1, B costs less relative to A than it did."""
        if self.old_ratio is None or self.new_ratio is None or self.old_ratio <= 0:
            return None
        return self.new_ratio / self.old_ratio

    @property
    def verdict(self) -> str:
        change = self.change
        if change is None:
            return "-"
        old, new = self.old_quartiles, self.new_quartiles
        if old is None or new is None or self.old_pairs < 2 or self.new_pairs < 2:
            return "?"
        if new[1] < old[0]:
            return "B cheaper"
        if new[0] > old[1]:
            return "B dearer"
        return "within noise"


@dataclass
class RunComparison:
    changes: list[RowChange] = field(default_factory=list)
    only_old: list[Key] = field(default_factory=list)
    only_new: list[Key] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_run(path: Path) -> dict[str, Any]:
    """The JSON a run wrote; CompareError if it cannot be read or is not one."""
    try:
        run = json.loads(path.read_text())
    except OSError as error:
        raise CompareError(f"cannot read {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CompareError(f"{path} is not JSON: {error}") from None
    check_run(run, str(path))
    return run


def check_run(run: Any, what: str) -> None:
    """CompareError unless `run` has what compare_runs reads of a run."""
    if not isinstance(run, dict) or not isinstance(run.get("comparisons"), list):
        raise CompareError(f"{what} is not a run of python -m benchmarks (no 'comparisons' list)")
    for index, row in enumerate(run["comparisons"]):
        if not isinstance(row, dict) or not all(
            isinstance(row.get(key), str) for key in ("suite", "name")
        ):
            raise CompareError(f"{what}: comparison {index} has no suite and name")


def pair_ratios(row: Row) -> list[float]:
    """The row's pair ratios B/A, from its samples (pairs whose A is not positive left out)."""
    samples = row.get("samples") or {}
    a, b = samples.get("a") or [], samples.get("b") or []
    return [
        y / x
        for x, y in zip(a, b, strict=False)  # a pair is both samples: a lone A is no pair
        if isinstance(x, int | float) and isinstance(y, int | float) and x > 0
    ]


def quartiles(values: Sequence[float]) -> tuple[float, float] | None:
    """(first, third) quartile, or None for no values; one value is its own quartiles."""
    if not values:
        return None
    if len(values) == 1:
        return values[0], values[0]
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return first, third


def row_ratio(row: Row) -> float | None:
    """The ratio the run reported (median of its pair ratios), else one from its samples."""
    ratio = row.get("ratio_b_over_a")
    if isinstance(ratio, int | float):
        return float(ratio)
    ratios = pair_ratios(row)
    return statistics.median(ratios) if ratios else None


def anchor_change(old: Row, new: Row) -> str | None:
    differences = [
        f"{what} was {old.get(key)!r}"
        for key, what in (("a_label", "A"), ("b_label", "B"), ("unit", "unit"))
        if old.get(key) != new.get(key)
    ]
    return ", ".join(differences) or None


def compare_runs(old: Mapping[str, Any], new: Mapping[str, Any]) -> RunComparison:
    """Every row of `new` that `old` has too, in `new`'s order, and what is in one only."""
    check_run(old, "the old run")
    check_run(new, "the new run")
    old_rows = {(row["suite"], row["name"]): row for row in old["comparisons"]}
    new_rows = {(row["suite"], row["name"]): row for row in new["comparisons"]}
    result = RunComparison()
    for key, row in new_rows.items():
        before = old_rows.get(key)
        if before is None:
            result.only_new.append(key)
            continue
        old_ratios, new_ratios = pair_ratios(before), pair_ratios(row)
        result.changes.append(
            RowChange(
                suite=key[0],
                name=key[1],
                unit=str(row.get("unit", "")),
                a_label=str(row.get("a_label", "A")),
                b_label=str(row.get("b_label", "B")),
                old_ratio=row_ratio(before),
                new_ratio=row_ratio(row),
                old_quartiles=quartiles(old_ratios),
                new_quartiles=quartiles(new_ratios),
                old_pairs=len(old_ratios),
                new_pairs=len(new_ratios),
                anchor_change=anchor_change(before, row),
            )
        )
    result.only_old = [key for key in old_rows if key not in new_rows]
    old_machine, new_machine = old.get("machine") or {}, new.get("machine") or {}
    for key in MACHINE_FIELDS:
        if old_machine.get(key) != new_machine.get(key):
            result.warnings.append(
                f"the runs differ in {key}: {old_machine.get(key)!r} then {new_machine.get(key)!r}"
            )
    if old.get("quick") != new.get("quick"):
        kinds = ["quick" if run.get("quick") else "full" for run in (old, new)]
        result.warnings.append(
            f"a {kinds[0]} run against a {kinds[1]} one: other sizes and pair counts"
        )
    return result


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{_number(value)}x"


def _spread(value: tuple[float, float] | None) -> str:
    return "" if value is None else f"{_number(value[0])}-{_number(value[1])}"


def _change(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ({(value - 1) * 100:+.1f}%)"


def render_comparison(result: RunComparison, old_name: str, new_name: str) -> str:
    """The table: one line per row in both runs, then what is in one only, then warnings."""
    header = (
        f"{'suite':<8} {'comparison':<44} {'B / A':<28} {'old B/A (IQR)':<26} "
        f"{'new B/A (IQR)':<26} {'new/old':<18} verdict"
    )
    lines = [f"compared with {old_name} (old) -> {new_name} (new)", header, "-" * len(header)]
    for change in result.changes:
        old = f"{_ratio(change.old_ratio)} ({_spread(change.old_quartiles)})"
        new = f"{_ratio(change.new_ratio)} ({_spread(change.new_quartiles)})"
        lines.append(
            f"{change.suite:<8} {change.name:<44} "
            f"{(change.b_label + ' / ' + change.a_label)[:28]:<28} {old:<26} {new:<26} "
            f"{_change(change.change):<18} {change.verdict}"
        )
        if change.anchor_change:
            lines.append(f"{'':<8} {'':<44} anchor changed: {change.anchor_change}")
    if not result.changes:
        lines.append("(no comparison is in both runs)")
    for label, keys in (
        ("only in the old run", result.only_old),
        ("only in the new run", result.only_new),
    ):
        if keys:
            lines.append(f"{label}: " + "; ".join(f"{suite}: {name}" for suite, name in keys))
    lines += [f"warning: {warning}" for warning in result.warnings]
    return "\n".join(lines)
