"""`python -m benchmarks`: where its results go, and how it shows progress (no /dev/kvm)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from benchmarks.__main__ import ProgressLine, default_outputs, results_directory
from benchmarks.comparison import Comparison, interleave

REPO = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_results_go_to_the_xdg_state_directory(tmp_path: Path) -> None:
    assert results_directory({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "pyvmm" / "benchmarks"


@pytest.mark.parametrize("environ", [{}, {"XDG_STATE_HOME": ""}, {"XDG_STATE_HOME": "rel/dir"}])
def test_without_an_absolute_xdg_state_home_results_go_under_home(
    environ: dict[str, str],
) -> None:
    expected = Path.home() / ".local" / "state" / "pyvmm" / "benchmarks"
    assert results_directory(environ) == expected


def test_default_outputs_are_new_files_outside_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(REPO)
    started = time.strptime("2026-05-09 07:35:25", "%Y-%m-%d %H:%M:%S")
    json_path, chart_path = default_outputs(quick=False, started=started)
    directory = tmp_path / "state" / "pyvmm" / "benchmarks"
    assert (json_path, chart_path) == (
        directory / "20260509-073525-full.json",
        directory / "20260509-073525-full.png",
    )
    assert default_outputs(quick=True, started=started)[0].name == "20260509-073525-quick.json"


def test_progress_off_a_terminal_is_plain_lines_one_per_step() -> None:
    stream = io.StringIO()
    progress = ProgressLine(stream)
    progress("kernels: starting")
    comparison = Comparison("kernels", "int_loop CPL3", "native", "guest CPL3", "ns/iter")
    interleave(comparison, lambda: 1.0, lambda: 2.0, 3, progress)
    progress("kernels: int_loop CPL3: guest and native results DIFFER")
    progress.close()
    assert stream.getvalue() == (
        "kernels: starting\n"
        "kernels: int_loop CPL3 (3 pairs)\n"
        "kernels: int_loop CPL3: guest and native results DIFFER\n"
    )


def test_progress_on_a_terminal_redraws_one_line() -> None:
    stream = Terminal()
    progress = ProgressLine(stream)
    progress("exits: starting")
    progress("exits: port I/O out, CPL0 pair 1/2")
    progress.close()
    assert stream.getvalue() == (
        "\r\x1b[Kexits: starting\r\x1b[Kexits: port I/O out, CPL0 pair 1/2\r\x1b[K"
    )
