"""Run `pyvmm` as a user does: a subprocess, with its real exit status and streams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUESTS = REPO / "guests"


def run_pyvmm(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyvmm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def guest(name: str) -> str:
    path = GUESTS / name
    assert path.is_file(), f"missing guest {path}"
    return str(path.relative_to(REPO))
