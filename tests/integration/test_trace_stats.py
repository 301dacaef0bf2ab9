"""--trace and --stats on real guests."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.integration.helpers import GUESTS, guest, run_pyvmm


def test_hello_trace_shows_one_out_per_character_in_16_bit_mode(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    result = run_pyvmm(
        "boot",
        "--trace",
        "--trace-format",
        "json",
        "--trace-file",
        str(trace),
        "--kernel-irqchip",
        "off",  # hlt then exits to pyvmm, and is traced
        guest("hello.bin"),
    )
    assert (result.returncode, result.stdout) == (0, "Hello, world!\n")
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    io = [record for record in records if record["reason"] == "KVM_EXIT_IO"]
    assert [record["insn"] for record in io] == ["out dx, al"] * 14
    assert all(record["bits"] == 16 and record["port"] == 0x3F8 for record in io)
    assert all(record["direction"] == "out" and record["size"] == 1 for record in io)
    assert bytes(record["data"][0] for record in io) == b"Hello, world!\n"
    assert records[-1]["reason"] == "KVM_EXIT_HLT" and records[-1]["insn"] == "hlt"
    # The instruction sits in the boot sector: its bytes are the guest's own.
    image = (GUESTS / "hello.bin").read_bytes()
    offset = io[0]["insn_address"] - 0x7C00
    assert image[offset : offset + 1] == bytes.fromhex(io[0]["insn_bytes"])


def test_long_mode_trace_is_disassembled_in_64_bit_mode() -> None:
    # Without the irqchip the final hlt is an exit, which --trace=io must leave out.
    result = run_pyvmm(
        "boot", "--mode", "long", "--kernel-irqchip", "off", "--trace=io", guest("long.bin")
    )
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines and all(" 64-bit " in line for line in lines)
    assert all(
        re.search(r" IO +00000000001[0-9a-f]{5}  64-bit  out dx, al ", line) for line in lines
    ), lines[:3]
    assert "HLT" not in result.stderr  # filtered out


def test_string_io_and_mmio_are_decoded() -> None:
    result = run_pyvmm("boot", "--trace=io", guest("tests/rep_io.bin"))
    assert "rep outsb" in result.stderr and "rep outsw" in result.stderr
    assert "rep insd" in result.stderr and "port=0x2f0 size=4 in data=0xffffffff" in result.stderr
    result = run_pyvmm("boot", "--mode", "protected", "--trace=mmio", guest("tests/mmio.bin"))
    assert "mov eax, dword ptr [0xd0000000]" in result.stderr
    assert "gpa=0xd0000000 size=4 read data=0xffffffff" in result.stderr
    assert "gpa=0xd0000010 size=4 write data=0x12345678" in result.stderr


def test_stats_totals_equal_the_traced_exits(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    result = run_pyvmm(
        "boot",
        "--trace",
        "--trace-file",
        str(trace),
        "--stats",
        "--mode",
        "user",
        guest("user.bin"),
    )
    assert result.returncode == 85
    traced = trace.read_text().splitlines()
    total = int(re.search(r"^exits: (\d+) ", result.stderr, re.M).group(1))  # type: ignore[union-attr]
    assert total == len(traced) == 41
    assert re.search(r"^  KVM_EXIT_IO +41$", result.stderr, re.M)
    assert re.search(r"^  port 0x03f8 +40$", result.stderr, re.M)
    assert re.search(r"^  port 0x00f4 +1$", result.stderr, re.M)
    assert "inside KVM_RUN" in result.stderr and "p99" in result.stderr


def test_bad_trace_kind_is_a_usage_error() -> None:
    result = run_pyvmm("boot", "--trace=io,bogus", guest("hello.bin"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown exit kind 'bogus'" in result.stderr
