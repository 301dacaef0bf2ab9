"""`pyvmm demo paravirtualization`: the emulated UART against virtio, virtio-blk, the balloon."""

from __future__ import annotations

import re

from tests.integration.helpers import run_pyvmm

DEMO_TIMEOUT = 120
TRANSFER = 1024 * 1024  # pyvmm.demos.paravirtualization.TRANSFER_KIB: 1 MiB


def test_paravirtualization_batches_and_gives_memory_back() -> None:
    result = run_pyvmm("demo", "paravirtualization", timeout=DEMO_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    text = " ".join(out.split())  # sentences are wrapped
    assert f"1024 KiB of 'x' ({TRANSFER:,} bytes), the same data both ways" in text
    rows = {}
    for device in ("serial (COM1, emulated UART)", "virtio-console"):
        row = re.search(rf"^{re.escape(device)}\s+([\d,]+)\s+([\d,.]+)\s+\S+ m?s\s+", out, re.M)
        assert row, out
        exits, per_exit = int(row.group(1).replace(",", "")), float(row.group(2).replace(",", ""))
        assert per_exit == round(TRANSFER / exits, 1)
        rows[device] = exits, per_exit
    serial_exits, serial_per_exit = rows["serial (COM1, emulated UART)"]
    assert serial_exits > TRANSFER  # one exit per byte, and the status lines
    assert rows["virtio-console"][1] >= 100 * serial_per_exit
    assert re.search(r"^write sector 1\s+the image file now holds b'pyvmm virtio-blk", out, re.M)
    assert re.search(r"^flush, read back, GET_ID\s+the driver printed 'blk: ok'$", out, re.M)
    control = re.search(r"^touch=64 \(control\)\s+([\d.]+) MiB", out, re.M)
    ballooned = re.search(r"^touch=64 balloon=64\s+([\d.]+) MiB\s+[\d,]+ pages$", out, re.M)
    assert control and ballooned, out
    assert float(control.group(1)) - float(ballooned.group(1)) >= 0.8 * 64
    assert re.search(r"^difference\s+[\d.]+ MiB\s+(\d+)% of the 64 MiB", out, re.M), out
    assert "verdict: virtio: " in out
