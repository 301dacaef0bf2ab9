"""Trace formatting, kind filters and exit statistics, without KVM."""

from __future__ import annotations

import re

import pytest

from pyvmm.arch.x86_64.instruction import disassemble_one
from pyvmm.errors import UsageError
from pyvmm.kvm.exits import Hlt, IoOut, MmioWrite
from pyvmm.observe.exit_stats import ExitStatistics
from pyvmm.observe.trace import CATEGORIES, exit_details, format_record, parse_categories


def test_categories() -> None:
    assert parse_categories(None) == frozenset(CATEGORIES)
    assert parse_categories("io,hlt") == {"io", "hlt"}
    with pytest.raises(UsageError, match="unknown exit kind 'nope'"):
        parse_categories("io,nope")


def test_details_of_string_io_are_units() -> None:
    details = exit_details(IoOut(port=0x3F8, size=2, count=2, data=b"\x01\x02\x03\x04"))
    assert details == {
        "port": 0x3F8,
        "size": 2,
        "direction": "out",
        "count": 2,
        "data": [0x0201, 0x0403],
    }


def test_format_record_shows_the_instruction_address_in_cs_ip_form() -> None:
    record = {
        "time": 0.5,
        "vcpu": 0,
        "reason": "KVM_EXIT_IO",
        "bits": 16,
        "cs": 0x07C0,
        "cs_base": 0x7C00,
        "rip": 0x000C,
        "insn_address": 0x7C0B,
        "insn": "out dx, al",
        "insn_bytes": "ee",
        **exit_details(IoOut(0x3F8, 1, 1, b"H")),
    }
    line = format_record(record)
    assert "07c0:000b  16-bit  out dx, al" in line
    assert "port=0x3f8 size=1 out data=0x48" in line


@pytest.mark.parametrize(
    ("code", "bits", "text"),
    [
        (b"\xee", 16, "out dx, al"),
        (b"\xf3\x6e", 16, "rep outsb dx, byte ptr [si]"),
        (b"\xe6\xf4", 64, "out 0xf4, al"),
        (b"\xf4", 32, "hlt"),
    ],
)
def test_disassembly_follows_the_mode(code: bytes, bits: int, text: str) -> None:
    found = disassemble_one(code, bits, 0x1000)
    assert found is not None and (found.text, found.size) == (text, len(code))


def test_statistics_count_and_time() -> None:
    stats = ExitStatistics()
    for _ in range(3):
        stats.on_exit(IoOut(0x3F8, 1, 1, b"x"), 8_000, 2_000)
    stats.on_exit(MmioWrite(0xD0000000, 4, b"\0" * 4), 9_000, 3_000)
    stats.on_interrupted(1_000)
    stats.on_exit(Hlt(), 1_000, 100)
    assert stats.exits == 5
    assert stats.by_port == {0x3F8: 3} and stats.by_mmio == {0xD0000000: 1}
    summary = stats.summary()
    assert "exits: 5 (1 KVM_RUN calls interrupted by signals)" in summary
    assert re.search(r"^  KVM_EXIT_IO +3$", summary, re.M)
    assert "0.000035 s inside KVM_RUN" in summary  # 8*3 + 9 + 1 + 1 (interrupted) us
    assert "0.000009 s in pyvmm" in summary  # 2*3 + 3 + 0.1 us
    assert "mean 1.82 us, p99 3.00 us" in summary
    assert re.search(r"^  MMIO 0xd0000000 +1$", summary, re.M)
    assert re.search(r"^  port 0x03f8 +3$", summary, re.M)
