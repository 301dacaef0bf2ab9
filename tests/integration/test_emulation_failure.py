"""A guest KVM cannot emulate: pyvmm names the instruction (or says the code is not
in RAM), dumps the registers and stops at once, instead of re-entering the guest.

What KVM reports differs by host, and each documented behaviour is accepted:
newer kernels pass the failing instruction's bytes, older ones none (pyvmm then
reads them from guest memory); code outside RAM never has bytes. kvm_pvm emulates
all CPL0 code, VT-x and AMD-V only the MMIO access: both fail on the same `flds`.
"""

from __future__ import annotations

import re
import time

import pytest

from pyvmm.machine.outcome import EXIT_INTERNAL_ERROR
from tests.integration.helpers import guest, run_pyvmm

HOLE = 0xD0000000  # the guest's MMIO-hole address
# KVM's bytes, or the same bytes read from guest memory: either way the instruction.
FLD_LINE = re.compile(
    r"^pyvmm: KVM could not emulate 'fld dword ptr \[rax\]' \(d9 00(, read from guest memory: "
    r"KVM gave no bytes)?\) at 0008:[0-9a-f]{8} \(linear 0x[0-9a-f]+\) in 64-bit code "
    r"\(KVM_INTERNAL_ERROR_EMULATION\)$"
)
NOT_IN_RAM_LINE = re.compile(
    rf"^pyvmm: KVM could not emulate the instruction at 0008:{HOLE:08x} \(linear 0x{HOLE:x}\) "
    rf"in 64-bit code: the code is not in guest RAM, guest-physical 0x{HOLE:x} has no memory "
    r"slot \(KVM_INTERNAL_ERROR_EMULATION\)$"
)


def boot(*options: str) -> tuple[list[str], list[str], float]:
    started = time.monotonic()
    result = run_pyvmm(
        "boot",
        "--mode",
        "long",
        "--timeout",
        "20",  # a safety net: the run must end long before it
        *options,
        guest("tests/emulation_failure.bin"),
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert "Traceback" not in result.stderr
    assert "did not finish" not in result.stderr, "the run ended by --timeout, not by KVM"
    assert result.returncode == EXIT_INTERNAL_ERROR, result.stderr
    return result.stdout.splitlines(), result.stderr.splitlines(), elapsed


def assert_register_dump(lines: list[str]) -> None:
    assert any(line.startswith("RAX=") for line in lines)
    assert any(line.startswith("RIP=") for line in lines)
    assert any(line.startswith("CS =0008") for line in lines)


@pytest.mark.parametrize(
    ("options", "announced"),
    [
        ((), "emulation_failure: fld from MMIO"),
        (("--load-addr", "0x200000"), "emulation_failure: jump to MMIO"),
    ],
    ids=["fld-from-mmio", "jump-to-mmio"],
)
def test_emulation_failure_is_reported_once_and_promptly(
    options: tuple[str, ...], announced: str
) -> None:
    stdout, stderr, elapsed = boot(*options)
    assert stdout[0] == announced
    first = stderr[0]
    if announced.endswith("fld from MMIO"):
        # A KVM that did emulate `flds` would fall through to the jump.
        assert FLD_LINE.match(first) or NOT_IN_RAM_LINE.match(first), first
    else:
        assert NOT_IN_RAM_LINE.match(first), first
    assert_register_dump(stderr[1:])
    assert elapsed < 15  # ended by the failure, not by --timeout


def test_the_reported_address_is_where_the_guest_stopped() -> None:
    _stdout, stderr, _elapsed = boot()
    first = stderr[0]
    match = re.search(r" at 0008:([0-9a-f]+) ", first)
    assert match, first
    rip = next(line for line in stderr if line.startswith("RIP="))
    assert int(rip.split()[0].removeprefix("RIP="), 16) == int(match.group(1), 16)


def test_kernel_iret_either_runs_or_gets_the_replacement_that_does() -> None:
    """VT-x/AMD-V run a CPL 0 iret; a KVM that emulates kernel code may not. Either
    way the replacement pyvmm suggests runs, and the failure line names it."""
    result = run_pyvmm(
        "boot", "--mode", "protected", "--timeout", "20", guest("tests/kernel_iret.bin")
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "kernel_iret: popf; ret $8: back", result.stderr
    if result.returncode == EXIT_INTERNAL_ERROR:
        first = result.stderr.splitlines()[0]
        assert first.startswith("pyvmm: KVM could not emulate 'iretd' (cf) at 0008:"), first
        assert first.endswith(
            "this host's KVM emulates kernel (CPL 0) code and cannot run iret there; return "
            "to the same privilege level without it: `push 8(%esp); popf; ret $8` (EFLAGS "
            "from the frame, then EIP, dropping CS and EFLAGS)"
        ), first
        assert lines == ["kernel_iret: popf; ret $8: back"]
    else:
        assert (result.returncode, lines[1:]) == (67, ["kernel_iret: iret: back"]), result.stderr
