"""The demos' pure parts: machine code bytes, host facts, parsing, tables (no /dev/kvm)."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from pyvmm import shipped
from pyvmm.cli.parser import build_parser
from pyvmm.demos import DEMOS, common, isolation, list_demos, run_demo
from pyvmm.demos.common import CANNOT_RUN, HostFacts, cpu_flags, paragraph, render_table
from pyvmm.demos.efficiency import loop_count
from pyvmm.demos.equivalence import feature_difference
from pyvmm.demos.isolation import HostileRun
from pyvmm.demos.native import (
    CPUID_RESULTS_GPA,
    CPUID_STORE,
    GUEST_DEBUG_EXIT,
    NATIVE_CPUID,
    NATIVE_SUM_LOOP,
    Cpuid,
    guest_cpuid_image,
    native_cpuid,
    time_native_sum,
)

GUESTS = Path(__file__).resolve().parents[2] / "guests"
BINUTILS = ("as", "objcopy")


def assemble(source: str, tmp_path: Path) -> bytes:
    """64-bit Intel-syntax `source` assembled by GNU as, as raw bytes."""
    (tmp_path / "code.s").write_text(".intel_syntax noprefix\n.code64\n" + source + "\n")
    subprocess.run(
        ["as", "--64", "-o", str(tmp_path / "code.o"), str(tmp_path / "code.s")], check=True
    )
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "code.o"), str(tmp_path / "b")],
        check=True,
    )
    return (tmp_path / "b").read_bytes()


needs_binutils = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in BINUTILS), reason="GNU binutils not installed"
)


@needs_binutils
def test_native_cpuid_bytes_are_their_assembly(tmp_path: Path) -> None:
    source = """
        push rbx
        mov eax, edi
        xor ecx, ecx
        cpuid
        mov [rsi], eax
        mov [rsi+4], ebx
        mov [rsi+8], ecx
        mov [rsi+12], edx
        pop rbx
        ret
    """
    assert assemble(source, tmp_path) == NATIVE_CPUID


@needs_binutils
def test_native_sum_loop_bytes_are_their_assembly(tmp_path: Path) -> None:
    source = """
        xor eax, eax
        mov rcx, rdi
    1:  add rax, rcx
        loop 1b
        ret
    """
    assert assemble(source, tmp_path) == NATIVE_SUM_LOOP


@needs_binutils
def test_guest_cpuid_image_is_its_assembly(tmp_path: Path) -> None:
    source = f"""
        mov eax, 1
        mov esi, {CPUID_RESULTS_GPA}
        xor ecx, ecx
        cpuid
        mov [rsi], eax
        mov [rsi+4], ebx
        mov [rsi+8], ecx
        mov [rsi+12], edx
        mov eax, 0x40000000
        mov esi, {CPUID_RESULTS_GPA + 16}
        xor ecx, ecx
        cpuid
        mov [rsi], eax
        mov [rsi+4], ebx
        mov [rsi+8], ecx
        mov [rsi+12], edx
        mov al, 0x2a
        out 0xf4, al
    """
    assert assemble(source, tmp_path) == guest_cpuid_image([1, 0x40000000])


def test_guest_cpuid_image_layout() -> None:
    image = guest_cpuid_image([7])
    assert image.startswith(b"\xb8" + struct.pack("<I", 7) + b"\xbe")
    assert CPUID_STORE in image
    assert image.endswith(GUEST_DEBUG_EXIT)


def test_native_code_runs_on_this_cpu() -> None:
    assert time_native_sum(10, repeat=1)[0] == 55
    (leaf0,) = native_cpuid([0])
    assert leaf0.eax >= 1  # the highest basic leaf
    assert len(leaf0.vendor_signature) == 12  # "GenuineIntel", "AuthenticAMD", ...


def test_cpuid_fields() -> None:
    kvm = Cpuid.from_bytes(struct.pack("<4I", 0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D))
    assert kvm.vendor_signature == "KVMKVMKVM"
    features = Cpuid(0xA10F11, 0x0102_0800, 0x8000_0001, 0)
    assert features.hypervisor_bit == 1
    assert features.initial_apic_id == 1
    assert Cpuid(0, 0, 0x7FFF_FFFF, 0).hypervisor_bit == 0


def test_feature_difference_names_the_bits() -> None:
    assert feature_difference(0xFFFA3203, 0xF7F83203) == "PCID, OSXSAVE"
    assert feature_difference(5, 5) == "none"
    assert feature_difference(0, 1 << 2) == "bit 2"


def test_loop_count_is_read_from_user_bin() -> None:
    assert loop_count((GUESTS / "user.bin").read_bytes()) == 1_000_000
    assert loop_count(b"\x90" * 16) is None


def test_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu svm hypervisor\n\nflags\t: other\n")
    assert cpu_flags(cpuinfo) == {"fpu", "svm", "hypervisor"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            HostFacts("kvm_pvm (software, no VT-x/AMD-V)", None, True),
            ["neither vmx nor svm", "itself a virtual machine", "at CPL0 is emulated"],
        ),
        (HostFacts("kvm_intel (Intel VT-x)", "vmx", False), ["vmx (Intel VT-x)", "CPL0 and CPL3"]),
        (HostFacts("kvm_amd (AMD-V)", "svm", False), ["svm (AMD-V)", "CPL0 and CPL3"]),
    ],
)
def test_host_facts_explain_the_backend(facts: HostFacts, expected: list[str]) -> None:
    text = facts.describe() + " " + facts.explain_rings()
    for phrase in expected:
        assert phrase in text
    assert facts.ring0_is_emulated == facts.backend.startswith("kvm_pvm")


def test_render_table_aligns_columns() -> None:
    table = render_table(["a", "bb"], [["xxx", "1"], ["y", "22"]])
    assert table.splitlines() == ["a    bb", "---  --", "xxx  1", "y    22"]


def test_paragraph_wraps_and_indents() -> None:
    text = paragraph("word " * 40, indent="  ")
    assert all(len(line) <= 78 and line.startswith("  ") for line in text.splitlines())


HOSTILE_CONSOLE = (
    b"hostile: (a) read back 0xffffffff\n"
    b"hostile: (c) program the PIC 0x20/0x21 (5 writes, 1 read): mask 0xff\n"
    b"hostile: (c) program the PIT 0x43/0x40 to divisor 1 (3 writes)\n"
    b"hostile: (d) flood the console with 20000 bytes\n"
    + b"#" * 20000
    + b"hostile: (d) flood done\n"
)
HOSTILE_LOG = (
    "pyvmm: timeout after 20692 exits; unassigned port accesses: 1 reads, 8 writes\n"
    "pyvmm: guest did not finish within 5.0 s\n"
)


def test_hostile_run_parsing() -> None:
    run = HostileRun(HOSTILE_CONSOLE, HOSTILE_LOG, 1, 5.0)
    assert run.value_after(b"(a) read back ") == "ffffffff"
    assert run.value_after(b"(b) nothing ") is None
    assert run.attempted_port_accesses == (8, 1)
    assert run.unassigned_port_accesses == (8, 1)
    assert run.ending == ("timeout", 20692)
    assert len(run.flood) == 20000
    assert HostileRun(b"", "", 1, 0.0).unassigned_port_accesses is None


def test_hostile_source_announces_every_port_access() -> None:
    """The counts in hostile.s's (c) messages match its own `out` and `in` instructions."""
    source = (GUESTS / "hostile.s").read_text()
    code = [line.split("#")[0].split() for line in source.splitlines()]
    # Console output goes through print64.inc, so every out/in here is an attempt (c).
    outs = sum(1 for words in code if words[:1] == ["out"])
    ins = sum(1 for words in code if words[:1] == ["in"])
    messages = "\n".join(re.findall(r'\.asciz "(.*)"', source)).encode()
    run = HostileRun(messages, "", 0, 0.0)
    assert run.attempted_port_accesses == (outs, ins) == (14, 3)


def test_demo_list_and_cli_choices_agree() -> None:
    listing = list_demos()
    for name in DEMOS:
        assert f"  {name}  " in listing
    assert len(listing.splitlines()) == 1 + len(DEMOS)
    parser = build_parser()
    assert parser.parse_args(["demo"]).name is None
    for name in DEMOS:
        assert parser.parse_args(["demo", name]).name == name


def failing_hostile_vm(
    image: Path, directory: Path, console: IO[bytes], log: IO[str]
) -> subprocess.Popen[bytes]:
    """A hostile VM process that dies before its guest prints a line (as one that cannot
    import pyvmm's extension does)."""
    die = "import sys; print('pyvmm: starting', file=sys.stderr); sys.exit('no module _kvm')"
    return subprocess.Popen([sys.executable, "-c", die], cwd=directory, stdout=console, stderr=log)


def test_isolation_says_the_hostile_vm_did_not_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It fails before any VM is built: this test never opens /dev/kvm.
    monkeypatch.setattr(isolation, "start_hostile", failing_hostile_vm)
    out = io.StringIO()
    assert run_demo("isolation", out) == CANNOT_RUN == 2
    assert capsys.readouterr().err == (
        "pyvmm demo isolation cannot run: the hostile VM did not start: "
        "no module _kvm (exit status 1)\n"
    )
    assert "NOT CONTAINED" not in out.getvalue()
    assert "verdict" not in out.getvalue()


def test_a_missing_shipped_guest_means_the_demo_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(
        common, "shipped_file", lambda name: shipped.shipped_file(name, tmp_path / "pyvmm")
    )
    assert run_demo("efficiency", io.StringIO()) == CANNOT_RUN
    assert capsys.readouterr().err == (
        "pyvmm demo efficiency cannot run: guests/user.bin is missing from this pyvmm "
        f"installation ({tmp_path})\n"
    )
