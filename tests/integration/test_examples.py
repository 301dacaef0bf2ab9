"""Each script in examples/ runs as a new user runs it: a subprocess, from another directory.

The examples build their guests in memory, so they need nothing but an
importable pyvmm; each checks its own results and exits 1 if they are
wrong, and the tests below check what it prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyvmm
from tests.integration.helpers import REPO

EXAMPLES = REPO / "examples"


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python examples/NAME` with this test run's interpreter and pyvmm, in `cwd`."""
    env = dict(os.environ)
    # The pyvmm under test, also when it is a checkout that is not installed.
    package_parent = str(Path(pyvmm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        entry for entry in (package_parent, env.get("PYTHONPATH")) if entry
    )
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def lines_of(name: str, tmp_path: Path) -> list[str]:
    result = run_example(name, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


TESTED = {"library.py", "custom_device.py", "page_tables.py"}


def test_every_example_is_tested() -> None:
    assert {path.name for path in EXAMPLES.glob("*.py")} == TESTED


def test_library_example(tmp_path: Path) -> None:
    lines = lines_of("library.py", tmp_path)
    assert re.fullmatch(
        r"outcome: halted, exit status 0 \(guest halted\) after \d+ exits", lines[0]
    )
    assert lines[1] == "guest console: 'Hello from the host, through guest memory\\n'"
    assert lines[2].startswith("registers: RIP=0x10001e RCX=42 CR0=0x")
    assert lines[3] == "  protected mode True, paging True, long mode True"
    assert lines[4] == (
        "count at 0x201000: 42 read guest-physically, 42 through the guest's page tables "
        "(42 bytes sent)"
    )
    # pyvmm's own 4-level tables: PML4 at 0x1000, a 2 MiB page for 0x200000.
    assert lines[5] == "translate(0x200006): 3 table entries read"
    assert lines[6].startswith("  PML4E [  0] at GPA 0x1000 = ")
    assert lines[8].startswith("  PDE   [  1] at GPA ")
    assert re.fullmatch(
        r"  GVA 0x200006 -> GPA 0x200006 \(2 MiB page, rwx kernel\) -> HVA 0x[0-9a-f]+ -> "
        r"(HPA 0x[0-9a-f]+|HPA unknown: .+)",
        lines[9],
    )
    assert lines[10] == "  KVM_TRANSLATE agrees: True; bytes there: b'from'"
    assert lines[11].startswith("read_virtual(0x100000000): GuestPageFault: ")
    assert "PDPTE 4 is not present" in lines[11]
    assert lines[12] == "with max_exits=3: exit-limit, exit status 126"
    assert lines[13].startswith("ram_size='1K': UsageError: ")
    assert len(lines) == 14


def test_custom_device_example(tmp_path: Path) -> None:
    lines = lines_of("custom_device.py", tmp_path)
    assert lines[:7] == [
        "adder on port 0x700:",
        *(f"  out 4 bytes at +0: {value}" for value in range(1, 6)),
        "  in  4 bytes at +0: 15",
    ]
    assert lines[7:10] == [
        "mailbox at guest-physical 0xd0000000:",
        "  write 4 bytes at +0: 15",
        "  read  4 bytes at +0: 15",
    ]
    assert re.fullmatch(r"outcome: debug-exit, exit status 31, after \d+ exits", lines[10])
    assert lines[11:] == ["the guest ended with the mailbox's value 15: status (15 << 1) | 1"]


def test_page_tables_example(tmp_path: Path) -> None:
    lines = lines_of("page_tables.py", tmp_path)
    assert lines[:4] == [
        "host wrote b'host-hi!' at GVA 0xffff800000000000; at GPA 0x300000: b'host-hi!'",
        "outcome: halted, exit status 0",
        "guest read b'host-hi!' into RBX",
        "guest wrote b'PYVMM-HI' at GVA 0xffff800000000008, found at GPA 0x300008: b'PYVMM-HI'",
    ]
    # The walk of the mapping the script added, with A (and D) set by the guest's MMU.
    assert lines[4] == "  PML4E [256] at GPA 0x1800 = 0x0000000000400023"
    assert lines[5] == "  PDPTE [  0] at GPA 0x400000 = 0x0000000000401023"
    assert lines[6] == "  PDE   [  0] at GPA 0x401000 = 0x0000000000402023"
    assert lines[7] == "  PTE   [  0] at GPA 0x402000 = 0x0000000000300063"
    assert lines[8:] == [
        "  GVA 0xffff800000000008 -> GPA 0x300008 (4 KiB page, rwx kernel); "
        "KVM_TRANSLATE agrees: True"
    ]


@pytest.mark.parametrize("name", sorted(TESTED))
def test_examples_run_from_their_own_directory_too(name: str) -> None:
    assert run_example(name, EXAMPLES).returncode == 0
