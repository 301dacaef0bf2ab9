"""`python -m benchmarks --compare`: two runs' ratios, row by row (no /dev/kvm)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

import benchmarks.__main__ as bench_main
from benchmarks.compare import (
    CompareError,
    compare_runs,
    load_run,
    quartiles,
    render_comparison,
)
from benchmarks.comparison import Comparison

MACHINE = {"cpu": "AMD EPYC", "kernel": "6.18", "python": "3.11.7", "kvm": "kvm_pvm"}


def row(
    name: str,
    a: list[float],
    b: list[float],
    *,
    suite: str = "exits",
    a_label: str = "C reference VMM",
    b_label: str = "pyvmm",
    unit: str = "us/exit",
) -> dict[str, Any]:
    return Comparison(suite, name, a_label, b_label, unit, list(a), list(b)).to_json()


def run(*rows: dict[str, Any], quick: bool = False, machine: dict[str, str] = MACHINE) -> dict:
    return {"machine": dict(machine), "quick": quick, "seconds": 1.0, "comparisons": list(rows)}


def only_change(old: dict, new: dict):
    changes = compare_runs(old, new).changes
    assert len(changes) == 1
    return changes[0]


def test_a_row_in_both_runs_gives_old_and_new_ratio_and_their_quotient() -> None:
    old = run(row("port I/O out, CPL0", [8.0, 8.0, 8.0], [12.0, 12.4, 11.6]))
    new = run(row("port I/O out, CPL0", [8.0, 8.0, 8.0], [9.6, 9.2, 10.0]))
    change = only_change(old, new)
    assert change.old_ratio == pytest.approx(1.5)
    assert change.new_ratio == pytest.approx(1.2)
    assert change.change == pytest.approx(0.8)
    assert (change.old_pairs, change.new_pairs) == (3, 3)
    assert change.verdict == "B cheaper"


def test_ratios_not_raw_times_are_compared() -> None:
    """The host got 2x slower between runs, for A and B alike: nothing changed."""
    old = run(row("x", [1.0, 1.1, 0.9], [2.0, 2.2, 1.8]))
    new = run(row("x", [2.0, 2.2, 1.8], [4.0, 4.4, 3.6]))
    change = only_change(old, new)
    assert change.change == pytest.approx(1.0)
    assert change.verdict == "within noise"


def test_verdicts() -> None:
    base = row("x", [1, 1, 1, 1], [1.0, 1.1, 1.2, 1.3])
    dearer = row("x", [1, 1, 1, 1], [1.5, 1.6, 1.7, 1.8])
    overlapping = row("x", [1, 1, 1, 1], [1.1, 1.2, 1.3, 1.4])
    assert only_change(run(base), run(dearer)).verdict == "B dearer"
    assert only_change(run(dearer), run(base)).verdict == "B cheaper"
    assert only_change(run(base), run(overlapping)).verdict == "within noise"
    one_pair = row("x", [1], [3.0])
    assert only_change(run(base), run(one_pair)).verdict == "?"


def test_a_skipped_row_has_no_change() -> None:
    skipped = Comparison("startup", "x", "QEMU microvm", "pyvmm", "ms")
    skipped.notes["skipped"] = "qemu-system-x86_64 not found"
    change = only_change(run(row("x", [1], [2], suite="startup")), run(skipped.to_json()))
    assert change.new_ratio is None and change.change is None and change.verdict == "-"


def test_rows_in_one_run_only_are_listed_by_suite_and_name() -> None:
    old = run(row("kept", [1], [2]), row("gone", [1], [2]))
    new = run(row("kept", [1], [2]), row("added", [1], [2], suite="startup"))
    result = compare_runs(old, new)
    assert [change.name for change in result.changes] == ["kept"]
    assert result.only_old == [("exits", "gone")]
    assert result.only_new == [("startup", "added")]
    text = render_comparison(result, "old.json", "new.json")
    assert "only in the old run: exits: gone" in text
    assert "only in the new run: startup: added" in text


def test_a_changed_anchor_is_said() -> None:
    old = run(row("boot", [1], [2], a_label="QEMU + SeaBIOS", unit="ms"))
    new = run(row("boot", [1], [2], a_label="QEMU microvm", unit="ms"))
    change = only_change(old, new)
    assert change.anchor_change == "A was 'QEMU + SeaBIOS'"
    assert "anchor changed: A was 'QEMU + SeaBIOS'" in render_comparison(
        compare_runs(old, new), "a", "b"
    )


def test_other_machine_or_run_size_is_a_warning() -> None:
    other = dict(MACHINE, kvm="kvm_intel")
    result = compare_runs(
        run(row("x", [1], [2])), run(row("x", [1], [2]), quick=True, machine=other)
    )
    assert any("kvm" in warning and "kvm_intel" in warning for warning in result.warnings)
    assert any("a full run against a quick one" in warning for warning in result.warnings)
    assert not compare_runs(run(), run()).warnings


def test_the_table_shows_ratios_quotient_and_verdict() -> None:
    old = run(row("port I/O out, CPL0", [8.0, 8.0, 8.0], [12.0, 12.4, 11.6]))
    new = run(row("port I/O out, CPL0", [8.0, 8.0, 8.0], [9.6, 9.2, 10.0]))
    text = render_comparison(compare_runs(old, new), "old.json", "new.json")
    lines = text.splitlines()
    assert lines[0] == "compared with old.json (old) -> new.json (new)"
    (line,) = [line for line in lines if line.startswith("exits ")]
    assert "port I/O out, CPL0" in line and "pyvmm / C reference VMM" in line
    assert "1.5x" in line and "1.2x" in line
    assert "0.800 (-20.0%)" in line and line.endswith("B cheaper")


def test_large_ratios_are_written_out() -> None:
    old = run(row("int_loop CPL0", [2.0, 2.0], [7600.0, 7700.0], suite="kernels"))
    text = render_comparison(compare_runs(old, old), "a", "b")
    assert "3,825x" in text and "1.000 (+0.0%)" in text


def test_quartiles() -> None:
    assert quartiles([]) is None
    assert quartiles([2.0]) == (2.0, 2.0)
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)


def test_load_run_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(CompareError, match="cannot read"):
        load_run(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(CompareError, match="is not JSON"):
        load_run(tmp_path / "text.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(CompareError, match="not a run of python -m benchmarks"):
        load_run(tmp_path / "list.json")
    (tmp_path / "rows.json").write_text(json.dumps({"comparisons": [{"name": "x"}]}))
    with pytest.raises(CompareError, match="comparison 0 has no suite and name"):
        load_run(tmp_path / "rows.json")


def test_the_committed_full_run_loads() -> None:
    committed = Path(bench_main.__file__).resolve().parent / "results" / "full-run.json"
    result = compare_runs(load_run(committed), load_run(committed))
    assert result.changes and all(change.change in (None, 1.0) for change in result.changes)


# --- the command line ------------------------------------------------------------


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def no_suites(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"a suite was run: {name}")

    monkeypatch.setattr(bench_main, "importlib", types.SimpleNamespace(import_module=refuse))


def test_compare_two_files_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_suites(monkeypatch)
    old = write(tmp_path / "old.json", run(row("x", [1, 1], [2, 2])))
    new = write(tmp_path / "new.json", run(row("x", [1, 1], [3, 3])))
    assert bench_main.main(["--compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert f"compared with {old} (old) -> {new} (new)" in out
    assert "1.500 (+50.0%)" in out


@pytest.mark.parametrize(
    "extra", [["--quick"], ["--suite", "exits"], ["--json", "x.json"], ["--chart", "x.png"]]
)
def test_compare_two_files_takes_no_run_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]
) -> None:
    no_suites(monkeypatch)
    old = write(tmp_path / "old.json", run())
    with pytest.raises(SystemExit) as exited:
        bench_main.main(["--compare", str(old), str(old), *extra])
    assert exited.value.code == 2


def test_a_bad_compare_file_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_suites(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        bench_main.main(["--compare", str(tmp_path / "missing.json")])
    assert exited.value.code == 2
    assert "--compare: cannot read" in capsys.readouterr().err
    old = write(tmp_path / "old.json", run())
    with pytest.raises(SystemExit):
        bench_main.main(["--compare", str(old), str(old), str(old)])


def test_compare_with_one_file_runs_then_compares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def collect(quick: bool, progress: Any = None) -> list[Comparison]:
        return [Comparison("exits", "x", "C reference VMM", "pyvmm", "us/exit", [1, 1], [3, 3])]

    suite = types.SimpleNamespace(collect=collect)
    monkeypatch.setattr(bench_main, "SUITES", {"fake": "fake"})
    monkeypatch.setattr(
        bench_main, "importlib", types.SimpleNamespace(import_module=lambda _: suite)
    )
    monkeypatch.setattr(bench_main, "machine_description", lambda: dict(MACHINE))
    monkeypatch.setattr(bench_main, "draw_chart", lambda comparisons, path: "no chart")
    old = write(tmp_path / "old.json", run(row("x", [1, 1], [2, 2])))
    new_json = tmp_path / "new.json"
    argv = ["--compare", str(old), "--json", str(new_json), "--chart", str(tmp_path / "c.png")]
    assert bench_main.main(argv) == 0
    out = capsys.readouterr().out
    assert f"compared with {old} (old) -> {new_json} (new)" in out
    assert "1.500 (+50.0%)" in out
    assert json.loads(new_json.read_text())["comparisons"][0]["ratio_b_over_a"] == 3.0
