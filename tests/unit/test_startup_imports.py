"""What `pyvmm boot` has imported by the time it opens KVM: only what a run uses.

The same checks as tests/integration/test_startup_imports.py (which records the
modules when the guest starts, and needs /dev/kvm), made where a run first
needs KVM: PYVMM_KVM_PATH names a device that does not exist, the command
ends with status 70, and nothing opens /dev/kvm. pyvmm opens KVM early (the
VM is made before the builder is imported, see machine/early_vm.py), so this
sees the command line's modules; the integration test sees the rest.
"""

from __future__ import annotations

import ast
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_startup_imports import ABSENT, ABSENT_PACKAGES, under

REPO = Path(__file__).resolve().parents[2]

# Runs `python -m pyvmm ARGS` in-process; writes the modules imported when the
# machine's build opens KVM, and the exit status, to the file named by argv[1].
CHILD = """\
import os
import runpy
import sys


def exit_here(status):  # pyvmm ends with os._exit: come back to write the report
    raise SystemExit(status)


os._exit = exit_here

out, site_dirs, *args = sys.argv[1:]
sys.path.extend(site_dirs.split("\\0"))

from pyvmm.machine import early_vm

at_open = []
open_kvm = early_vm.open_kvm


def recording_open_kvm(*args, **kwargs):
    at_open.append(sorted(sys.modules))
    return open_kvm(*args, **kwargs)


early_vm.open_kvm = recording_open_kvm
sys.argv = ["pyvmm", *args]
status = None
try:
    runpy.run_module("pyvmm", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    status = exit.code
with open(out, "w") as file:
    file.write(repr((status, at_open)))
"""


def modules_when_kvm_opens(tmp_path: Path, *args: str) -> list[str]:
    """`python -S -m pyvmm ARGS` with no KVM device: the modules imported when it opened one."""
    out = tmp_path / "modules"
    result = subprocess.run(
        [sys.executable, "-S", "-c", CHILD, str(out), "\0".join(site.getsitepackages()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYVMM_KVM_PATH": str(tmp_path / "no-kvm")},
        stdin=subprocess.DEVNULL,
    )
    status, at_open = ast.literal_eval(out.read_text())
    assert status == 70, result.stderr  # KvmUnavailable: pyvmm could not go on
    assert "no-kvm" in result.stderr
    assert len(at_open) == 1
    return at_open[0]


def test_a_boot_has_imported_only_what_a_run_uses_when_it_opens_kvm(tmp_path: Path) -> None:
    modules = modules_when_kvm_opens(tmp_path, "boot", "guests/hello.bin")
    assert sorted(name for name in modules if under(name, ABSENT)) == []
    assert sorted(name for name in modules if under(name, ABSENT_PACKAGES)) == []


@pytest.mark.parametrize(
    ("args", "imported"),
    [
        (["-enable-kvm", "guests/hello.bin"], "pyvmm.cli.qemu_options"),
        (["--trace", "guests/hello.bin"], "pyvmm.observe.trace"),
        (["--gdb", "tcp::1234", "guests/hello.bin"], "pyvmm.gdb.server"),
    ],
)
def test_what_a_run_uses_is_imported(tmp_path: Path, args: list[str], imported: str) -> None:
    """The checks above would see such a module: an option or an image that needs one brings it."""
    modules = modules_when_kvm_opens(tmp_path, "boot", *args)
    assert imported in modules
    assert under(imported, ABSENT_PACKAGES)
