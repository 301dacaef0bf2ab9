"""After the README's first command, every documented command works from any directory.

The README installs with `python3 -m venv .venv && .venv/bin/pip install .`: a
non-editable install, so a checkout in the current directory holds pyvmm's
sources without the compiled `pyvmm._kvm`. These tests do exactly that into
a temporary venv, from a copy of this checkout as a fresh clone has it (no
compiled extension, no build directory), then run the demos and the
benchmarks from that checkout and from an unrelated directory.

pip builds pyvmm as it does for a user (build isolation: setuptools and cffi
come from PyPI or pip's cache), so this takes 30-60 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 600
DEMO_TIMEOUT = 180
# What a fresh clone does not have: build products, caches, the venv of the editable install.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.so",
    "_kvm.c",
    "*.o",
    "benchmark-results.*",
)


def user_environment() -> dict[str, str]:
    """This environment, less what would point Python at this checkout or its venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@dataclass(frozen=True)
class Installation:
    checkout: Path  # the copy pip installed from, as a user's clone
    elsewhere: Path  # an empty directory outside it
    bin: Path  # the venv's bin/

    def run(self, where: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`command` (its first word from the venv's bin/) with `where` as current directory."""
        environment = {
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        return subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            cwd=where,
            env={**environment, **env},
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )


def files_under(directory: Path) -> set[str]:
    """Every file's path relative to `directory`, bytecode caches left out."""
    return {
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    base = tmp_path_factory.mktemp("install")
    checkout = base / "pyvmm"
    shutil.copytree(REPO, checkout, ignore=NOT_IN_A_CLONE)
    venv = base / "venv"
    # The README's first command, with this test's Python as `python3`.
    result = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "."],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env=user_environment(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not list((checkout / "pyvmm").glob("_kvm*.so")), "a non-editable install built in place"
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return Installation(checkout, elsewhere, venv / "bin")


def installed_package(installation: Installation) -> Path:
    result = installation.run(
        installation.elsewhere, "python", "-c", "import pyvmm; print(pyvmm.__file__)"
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip()).parent


def test_the_wheel_ships_every_guest_and_the_kernels(installed: Installation) -> None:
    package = installed_package(installed)
    assert installed.bin.parent in package.parents  # site-packages, not the checkout
    shipped = files_under(package / "_shipped")
    guests = {
        f"guests/{name}"
        for name in files_under(REPO / "guests")
        if name.endswith((".bin", ".elf", ".s", ".inc", ".ld")) or name.endswith("Makefile")
    }
    assert guests <= shipped
    assert "benchmarks/kernels/kernels.bin" in shipped
    benchmarks = files_under(package.parent / "benchmarks")
    assert {"__main__.py", "exit_guest.bin", "hello_exit.bin", "ref_vmm.c"} <= benchmarks


DEMO_EVIDENCE = {
    "isolation": [
        "20,000 bytes captured",
        "year 0x99: its own, in pyvmm (8 of 8 accesses exited)",
        "0xcf9 <- 0x06 (Reset Control Register) reset, status 0",
        "verdict: every attempt was contained in its own VM, and the other VMs were unaffected",
    ],
    "equivalence": ["verdict: every result is bit-identical; only timing and CPUID differ"],
    "efficiency": ["2,000,000 instructions", "benchmark kernel int_loop", "verdict: "],
    # capstone is one of pyvmm's own dependencies: this demo needs no extra.
    "sensitive-instructions": [
        "The monitor took 19 traps, one per rewrite",
        "translated, the guest sees only its own CPU",
    ],
}


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
@pytest.mark.parametrize("demo", list(DEMO_EVIDENCE))
def test_demos_run_from_any_directory(installed: Installation, demo: str, where: str) -> None:
    result = installed.run(getattr(installed, where), "pyvmm", "demo", demo)
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())  # tables and sentences are wrapped
    for evidence in DEMO_EVIDENCE[demo]:
        assert evidence in text, result.stdout
    for failure in ("NOT CONTAINED", "DIFFERENT", "WRONG", "does NOT show"):
        assert failure not in result.stdout


def test_containers_demo_runs_from_elsewhere(installed: Installation, tmp_path: Path) -> None:
    """The workload ships with pyvmm; the OCI runtime is the host's (skipped without one)."""
    from tests.integration.test_demo_containers import require_oci_runtime

    runtime = require_oci_runtime(tmp_path)
    result = installed.run(installed.elsewhere, "pyvmm", "demo", "containers")
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert f"container ({runtime})" in text
    assert "verdict: the container is a process on the host's kernel" in text


def test_binary_translation_wants_its_extra_then_runs(installed: Installation) -> None:
    """`pip install .` has no unicorn: one line naming the extra; with `.[demos]` the demo runs."""
    missing = installed.run(installed.elsewhere, "pyvmm", "demo", "binary-translation")
    if "unicorn package is not installed" in missing.stderr:
        assert missing.returncode == 2 and missing.stdout == "", missing.stdout + missing.stderr
        assert len(missing.stderr.splitlines()) == 1, missing.stderr
        assert "pip install '.[demos]'" in missing.stderr
        # The documented extra, from the checkout (pip may take unicorn from its cache).
        extra = installed.run(installed.checkout, "pip", "install", "-q", ".[demos]")
        assert extra.returncode == 0, extra.stderr
    result = installed.run(installed.elsewhere, "pyvmm", "demo", "binary-translation")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: identical results four ways; the ladder holds" in result.stdout


def test_benchmarks_help_from_elsewhere(installed: Installation) -> None:
    result = installed.run(installed.elsewhere, "python", "-m", "benchmarks", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m benchmarks")


def test_benchmarks_in_the_checkout_run_the_installed_pyvmm_and_write_nothing_there(
    installed: Installation, tmp_path: Path
) -> None:
    before = files_under(installed.checkout)
    state = tmp_path / "state"
    result = installed.run(
        installed.checkout,
        "python",
        "-m",
        "benchmarks",
        "--quick",
        "--suite",
        "kernels",
        XDG_STATE_HOME=str(state),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr  # not a terminal
    assert "kernels: int_loop CPL3 (3 pairs)" in result.stderr.splitlines()
    written = list((state / "pyvmm" / "benchmarks").glob("*-quick.json"))
    assert len(written) == 1
    results = json.loads(written[0].read_text())
    assert results["quick"] is True
    assert {item["suite"] for item in results["comparisons"]} == {"kernels"}
    assert f"results: {written[0]}" in result.stdout.splitlines()
    assert files_under(installed.checkout) == before


def test_an_unbuilt_template_guest_says_how_to_build_it_from_anywhere(
    installed: Installation,
) -> None:
    """The wheel ships guests/template's sources only; `pyvmm boot` used to say "No such file"."""
    template = installed_package(installed) / "_shipped" / "guests" / "template"
    if (template / "boot.bin").exists():
        pytest.skip("this checkout's template was built before the wheel, which ships it then")
    result = installed.run(installed.elsewhere, "pyvmm", "boot", "guests/template/boot.bin")
    command = f"make -f {template / 'Makefile'} OUT=guests/template"
    assert (result.returncode, result.stderr) == (
        2,
        f"pyvmm: image 'guests/template/boot.bin' is not built: run `{command}` "
        f"(its sources are in {template})\n",
    )
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("the build the hint names needs make and gcc")
    built = subprocess.run(
        command.split(), cwd=installed.elsewhere, capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    result = installed.run(installed.elsewhere, "pyvmm", "boot", "guests/template/boot.bin")
    assert result.returncode == 33, result.stderr  # the template's debug-exit status
