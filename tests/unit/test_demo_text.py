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
from pyvmm.machine.outcome import OutcomeKind, RunOutcome

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
    b"hostile: (c) PIC 0x20/0x21: initialise it, unmask IRQ 0 only (5 writes, 1 read): mask 0xfe\n"
    b"hostile: (c) PIT 0x43/0x40: channel 0 at divisor 2, its fastest rate "
    b"(4 writes, 1 read): status 0x34\n"
    b"hostile: (c) PIC 0x20: wait for IRQ 0 from the PIT (1 write, 12 reads): IRR 0x01\n"
    b"hostile: (c) CMOS 0x70/0x71: set its clock's year to 99 (7 writes, 1 read): year 0x99\n"
    b"hostile: (d) flood the console with 20000 bytes\n"
    + b"#" * 20000
    + b"hostile: (d) flood done\n"
)
HOSTILE_LOG = (
    "pyvmm: timeout after 20692 exits; unassigned port accesses: 1 reads, 8 writes\n"
    "pyvmm: guest did not finish within 5.0 s\n"
    "exits: 20692 (45 KVM_RUN calls interrupted by signals)\n"
    "  KVM_EXIT_IO                     20688\n"
    "  KVM_EXIT_MMIO                       4\n"
    "  port 0x0070                         4\n"
    "  port 0x0071                         4\n"
    "  port 0x03f8                     20680\n"
    "  MMIO 0xc0000000                     2\n"
    "time: 4.97 s, 4.77 s inside KVM_RUN (96.1 %), 0.19 s in pyvmm (3.9 %)\n"
)


def test_hostile_run_parsing() -> None:
    run = HostileRun(HOSTILE_CONSOLE, HOSTILE_LOG, 1, 5.0)
    assert run.value_after(b"(a) read back ") == "ffffffff"
    assert run.value_after(b"(b) nothing ") is None
    attempts = run.device_attempts
    assert list(attempts) == ["PIC", "PIT", "CMOS"]
    pic = attempts["PIC"]
    assert (pic.ports, pic.writes, pic.reads, pic.accesses) == ({0x20, 0x21}, 6, 13, 19)
    assert (pic.value("mask"), pic.value("IRR"), pic.value("year")) == ("fe", "01", None)
    assert attempts["PIT"].ports == {0x40, 0x43}
    assert attempts["CMOS"].read_back == (("year", "99"),)
    assert run.unassigned_port_accesses == (8, 1)
    assert run.ending == ("timeout", 20692)
    assert run.exits_by_port == {0x70: 4, 0x71: 4, 0x3F8: 20680}
    assert run.exits_by_reason == {"KVM_EXIT_IO": 20688, "KVM_EXIT_MMIO": 4}
    assert run.exits_at(frozenset({0x20, 0x21})) == 0
    assert run.exits_at(attempts["CMOS"].ports) == 8
    assert run.interrupted_runs == 45
    assert len(run.flood) == 20000
    empty = HostileRun(b"", "", 1, 0.0)
    assert empty.unassigned_port_accesses is None and empty.interrupted_runs is None
    assert empty.device_attempts == {}


def device_report(console: bytes, log: str) -> dict[str, tuple[str, bool]]:
    rows = isolation.device_rows(HostileRun(console, log, 124, 5.0))
    return {did.split(":")[0]: (got, ok) for _, did, got, ok in rows}


def test_device_rows_want_the_pic_and_pit_in_kvm_and_the_rtc_in_pyvmm() -> None:
    clean = HOSTILE_LOG.replace("1 reads, 8 writes", "0 reads, 0 writes")
    rows = device_report(HOSTILE_CONSOLE, clean)
    assert all(ok for _, ok in rows.values()), rows
    assert rows["PIC"][0] == "mask 0xfe, IRR 0x01: its own, in KVM (0 of 19 accesses exited)"
    assert rows["RTC"][0] == "year 0x99: its own, in pyvmm (8 of 8 accesses exited)"
    # A PIC access that exited to pyvmm, an RTC access that did not, an unassigned port.
    exited = clean.replace("  port 0x0070                         4\n", "  port 0x0021    1\n")
    rows = device_report(HOSTILE_CONSOLE, exited)
    assert not rows["PIC"][1] and not rows["RTC"][1] and rows["PIT"][1]
    assert not device_report(HOSTILE_CONSOLE, HOSTILE_LOG)["any other port"][1]
    # What the guest read back must be what it wrote.
    wrong = HOSTILE_CONSOLE.replace(b"year 0x99", b"year 0xff")
    assert not device_report(wrong, clean)["RTC"][1]
    # A device line that never came.
    missing = HOSTILE_CONSOLE.replace(b"(c) PIT", b"(c) XYZ")
    assert device_report(missing, clean)["PIT 0x43/0x40"] == ("nothing printed", False)


def reset_run(kind: OutcomeKind, console: bytes, hostile_running: bool) -> isolation.ResetRun:
    outcome = RunOutcome(kind, 0 if kind is OutcomeKind.RESET else 3, "guest reset the machine")
    run = common.GuestRun(console, outcome, 2, 0.01, 0, 0, 0, 0)
    return isolation.ResetRun("kbd", "0x64 <- 0xfe", run, hostile_running)


def test_a_reset_must_end_its_own_vm_alone() -> None:
    said = b"hostile_reset: its clock's year: 0x26\nhostile_reset: reset its machine: ...\n"
    assert reset_run(OutcomeKind.RESET, said, True).reset_only_its_vm
    assert reset_run(OutcomeKind.RESET, said, True).year == "26"
    assert not reset_run(OutcomeKind.RESET, said, False).reset_only_its_vm  # the other VM ended
    assert not reset_run(OutcomeKind.DEBUG_EXIT, said, True).reset_only_its_vm
    ignored = said + b"hostile_reset: still running after the reset\n"
    assert not reset_run(OutcomeKind.RESET, ignored, True).reset_only_its_vm
    assert reset_run(OutcomeKind.RESET, b"", True).year is None


def port_accesses(source: str) -> tuple[int, int]:
    """The `out` and `in` instructions of a guest's source, without its comments."""
    code = [line.split("#")[0].split() for line in source.splitlines()]
    return (
        sum(1 for words in code if words[:1] == ["out"]),
        sum(1 for words in code if words[:1] == ["in"]),
    )


def test_hostile_source_announces_every_port_access() -> None:
    """The counts in hostile.s's (c) messages match its own `out` and `in` instructions.

    One `in` is the IRR wait's, which the guest counts as it goes: its message
    leaves the count to the run ("(1 write, " ... " reads)").
    """
    source = (GUESTS / "hostile.s").read_text()
    # Console output goes through print64.inc, so every out/in here is an attempt (c).
    outs, ins = port_accesses(source)
    messages = dict(re.findall(r'^(msg_\w+):\s+\.asciz "(.*)"$', source, re.M))
    # Each (c) line as printed, with a count of 1 for the wait and a value after "0x".
    irr_wait = messages.pop("msg_c_irr") + "1" + messages.pop("msg_c_irr_value")
    del messages["msg_c_irr_value1"]  # the same line, for a count of 1
    lines = [text for text in messages.values() if text.startswith("hostile: (c)")]
    printed = "".join(f"{line}00\n" for line in [*lines, irr_wait]).encode()
    announced = HostileRun(printed, "", 0, 0.0).device_attempts.values()
    assert len(lines) == 3
    assert (sum(a.writes for a in announced), sum(a.reads for a in announced)) == (outs, ins)
    assert (outs, ins) == (17, 4)


def test_hostile_reset_source_offers_the_demos_resets() -> None:
    source = (GUESTS / "hostile_reset.s").read_text()
    words = re.findall(r'^w_\w+:\s+\.asciz\s+"(\w+)"', source, re.M)
    assert words == [method for method, _ in isolation.RESETS]
    for _, register in isolation.RESETS:
        port, value = register.split()[0], register.split()[2]
        assert f"{value} to " in source and port in source


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
