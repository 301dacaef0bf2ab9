"""`pyvmm demo binary-translation`: four ways to run the same kernels, bit-identical, a ladder."""

from __future__ import annotations

import re
from pathlib import Path

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
