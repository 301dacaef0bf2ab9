"""`pyvmm demo binary-translation`: four ways to run the same kernels, bit-identical, a ladder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.kvm.host import kvm_backend
from tests.integration.test_demos import run_demo_in

ROW = re.compile(
    r"^(native|guest CPL3|unicorn \(TCG\)|guest CPL0)\s+([\d,]+)\s+(0x[0-9a-f]{16})\s+(\S+)"
    r"\s+([\d,.]+)\s+([\d,.]+)x$",
    re.M,
)


def test_binary_translation_ladder(tmp_path: Path) -> None:
    result = run_demo_in(tmp_path, "binary-translation")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    tables = out.split("best of 3 interleaved rounds")[1:]
    assert len(tables) == 3, out
    ratios: dict[str, list[float]] = {}
    for table in tables:
        rows = {match[0]: match for match in ROW.findall(table)}
        assert list(rows) == ["native", "guest CPL3", "unicorn (TCG)", "guest CPL0"], table
        # The same n gives the same result every way: bit-identical to native.
        native_n, native_result = rows["native"][1], rows["native"][2]
        for way, n, value, same, _, ratio in rows.values():
            assert same == "yes", table
            if n == native_n:
                assert value == native_result, table
            ratios.setdefault(way, []).append(float(ratio.replace(",", "")))
    direct, translated, ring0 = ratios["guest CPL3"], ratios["unicorn (TCG)"], ratios["guest CPL0"]
    assert max(direct) < 5
    assert max(translated) > max(direct)
    if kvm_backend().startswith("kvm_pvm"):
        # Interpreted kernel-mode code: at least a hundred times native, every kernel.
        assert min(ring0) > 100 and min(ring0) > 10 * max(translated), out
        assert "the ladder holds: direct < translated < interpreted" in out
    else:
        assert "CPL0 row is therefore direct execution too" in " ".join(out.split())


@pytest.mark.parametrize("demo", ["binary-translation", "sensitive-instructions"])
def test_ctrl_c_stops_a_demo_as_it_stops_pyvmm(tmp_path: Path, demo: str) -> None:
    """SIGINT to the demo's process group mid-run: no verdict, `stopped by SIGINT`, death by it.

    A guest run turns the signal into its outcome; a demo must not report that
    outcome as evidence (it once ended 'the evidence does not hold', status 4).
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "demo", demo],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Once the first table's heading is out, guests are running.
    assert child.stdout is not None
    while "host:" not in child.stdout.readline():
        pass
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGINT, out + err
    assert err.splitlines() == ["pyvmm: stopped by SIGINT"], err
    assert "verdict" not in out
