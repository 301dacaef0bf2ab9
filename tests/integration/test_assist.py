"""guests/tests/assist.bin: a CPL 0 guest runs the assist table's instructions, on any host.

On VT-x/AMD-V the CPU runs them; a KVM that emulates CPL 0 code may give up
on some, and pyvmm performs those (pyvmm.arch.x86_64.assist). Nothing here
assumes which: the guest's output and exit status must be the same either
way, and a second run with `--emulate none` shows what this host needed.
Where that run goes through, the first must have made no assist; where it
ends as internal-error, the instruction it names must be one the first run
assisted. --stats never counts more assists of an instruction than the
guest executes.
"""

from __future__ import annotations

import re

from pyvmm.machine.outcome import EXIT_INTERNAL_ERROR
from tests.integration.helpers import guest, run_pyvmm

STATUS = (0x15 << 1) | 1  # the guest's debug-exit value 0x15
# How many times the guest executes each instruction, by capstone's mnemonic.
EXECUTED = {
    "int3": 1,
    "popcnt": 4,
    "stac": 1,
    "clac": 1,
    "wait": 1,
    "ldmxcsr": 1,
    "stmxcsr": 1,
    "movd": 1,
    "movq": 4,
    "pxor": 2,
    "fnstsw": 1,
    "fnclex": 1,
    "crc32": 9,
    "cmpxchg16b": 2,
}
POPCNT_LINES = [
    "popcnt r64: 20 flags 0000",
    "popcnt m32: 02",
    "popcnt r16: 1234567890ab0010",
    "popcnt zero: 00 flags 0040",
]
SMAP_LINES = ["stac: AC=1", "clac: AC=0"]
CMPXCHG16B_LINE = "cmpxchg16b: ZF=1 0000000022222222 ZF=0 0000000022222222"
NOT_EMULATED = re.compile(r"^pyvmm: KVM could not emulate '(\w+)[^']*' \(([0-9a-f ]+)\)")


def boot(*options: str):
    return run_pyvmm(
        "boot", "--mode", "long", "--timeout", "30", *options, guest("tests/assist.bin")
    )


def expected_lines(stdout: list[str]) -> list[str]:
    """The guest's lines, with the variants the guest's CPUID chooses."""
    lines = ["assist: start", "int3: #BP handler ran once, returned after int3"]
    lines += ["popcnt: not in CPUID"] if "popcnt: not in CPUID" in stdout else POPCNT_LINES
    no_smap = "clac/stac: no SMAP in CPUID"
    lines += [no_smap] if no_smap in stdout else SMAP_LINES
    no_crc32 = "crc32: no SSE4.2 in CPUID"
    no_cx16 = "cmpxchg16b: no CX16 in CPUID"
    return [
        *lines,
        "fwait: nothing pending, went on",
        "ldmxcsr/stmxcsr: 7f80",
        "movq/movd: 0000000055667788 1122334455667788",
        "pxor: 00ff00ff00ff00ff",
        "fnstsw after fninit, fnclex: 0000",
        no_crc32 if no_crc32 in stdout else "crc32c of 123456789: e3069283",
        no_cx16 if no_cx16 in stdout else CMPXCHG16B_LINE,
        "assist: done",
    ]


def assist_counts(stderr: str) -> dict[str, int]:
    """--stats' "emulation assists" block: mnemonic -> count (empty when there were none)."""
    counts: dict[str, int] = {}
    lines = stderr.splitlines()
    if "emulation assists:" not in " ".join(lines):
        return counts
    start = next(i for i, line in enumerate(lines) if line.startswith("emulation assists:"))
    for line in lines[start + 1 :]:
        match = re.match(r"^  (\w+) +(\d+)$", line)
        if match is None:
            break
        counts[match.group(1)] = int(match.group(2))
    # "emulation assists: 30, 0.019 s, 0.5 % of the run"
    total = re.match(r"^emulation assists: (\d+), [\d.]+ s", lines[start])
    assert total is not None, lines[start]
    assert sum(counts.values()) == int(total.group(1))
    return counts


def test_the_guest_runs_the_same_with_assists_and_they_are_counted() -> None:
    result = boot("--stats")
    assert "Traceback" not in result.stderr
    assert result.returncode == STATUS, result.stderr
    stdout = result.stdout.splitlines()
    assert stdout == expected_lines(stdout)
    counts = assist_counts(result.stderr)
    for mnemonic, count in counts.items():
        assert 0 < count <= EXECUTED[mnemonic], (mnemonic, count)

    # What did this host need? Ask it without the layer.
    bare = boot("--emulate", "none")
    assert "Traceback" not in bare.stderr
    if bare.returncode == STATUS:
        assert bare.stdout.splitlines() == stdout
        assert counts == {}, "assists counted where the host needed none"
        return
    assert bare.returncode == EXIT_INTERNAL_ERROR, bare.stderr
    match = NOT_EMULATED.search(bare.stderr.splitlines()[0])
    assert match is not None, bare.stderr
    assert match.group(1) in counts, (match.group(1), counts)
    # Without the layer the guest stops at that instruction: its output is a prefix.
    assert stdout[: len(bare.stdout.splitlines())] == bare.stdout.splitlines()


def test_without_stats_nothing_is_counted_on_stderr() -> None:
    result = boot()
    assert result.returncode == STATUS, result.stderr
    assert "emulation assists" not in result.stderr


# popcnt from the MMIO hole: KVM must emulate it on any host, and cannot.
POPCNT_MMIO = (
    r"^pyvmm: KVM could not emulate 'popcnt rax, qword ptr \[rbx\]' \(f3 48 0f b8 03"
    r"(, read from guest memory: KVM gave no bytes)?\) at 0008:[0-9a-f]{8} "
    r"\(linear 0x[0-9a-f]+\) in 64-bit code \(KVM_INTERNAL_ERROR_EMULATION\)"
)


def test_a_table_instruction_on_mmio_still_ends_as_internal_error_saying_why() -> None:
    result = run_pyvmm("boot", "--mode", "long", "--timeout", "30", guest("tests/assist_mmio.bin"))
    assert result.returncode == EXIT_INTERNAL_ERROR, result.stderr
    assert result.stdout == "assist_mmio: popcnt from MMIO\n"
    first = result.stderr.splitlines()[0]
    assert re.match(
        POPCNT_MMIO + r"; pyvmm's assist layer did not perform it: its memory operand: "
        r"guest-physical range 0xd0000000\.\.0xd0000008 is not guest RAM$",
        first,
    ), first
    bare = run_pyvmm(
        "boot",
        "--mode",
        "long",
        "--timeout",
        "30",
        "--emulate",
        "none",
        guest("tests/assist_mmio.bin"),
    )
    assert bare.returncode == EXIT_INTERNAL_ERROR, bare.stderr
    assert re.match(POPCNT_MMIO + "$", bare.stderr.splitlines()[0]), bare.stderr


def test_the_trace_names_each_assisted_instruction_where_it_is() -> None:
    """RIP is past an instruction pyvmm performed: the trace still shows that one, at its
    own address (from the exit's bytes), not the next."""
    result = boot("--trace", "internal-error")
    assert result.returncode == STATUS, result.stderr
    lines = [line for line in result.stderr.splitlines() if "INTERNAL_ERROR" in line]
    for line in lines:
        fields = line.split()
        mnemonic = fields[6] if fields[5] == "lock" else fields[5]
        address, failed = int(fields[3], 16), line.split("failed_bytes=")[1]
        assert mnemonic in EXECUTED, line
        # The shown instruction's bytes start the exit's bytes: the same instruction.
        assert (mnemonic == "int3") == failed.startswith("cc"), line
        assert 0x100000 <= address < 0x100000 + 4096, line
