"""Resource control: a hostile guest cannot reach what the VMM did not give it.

guests/hostile.bin runs under `pyvmm boot` in a child process (64 MiB of RAM,
long mode at CPL0, --timeout 5, -v; the same pyvmm as this process, run in a
scratch directory so that no checkout in the current directory can shadow
it): it writes beyond its RAM, reads
addresses with nothing behind them, reprograms and resets through legacy PC
ports it was never given, floods the console and never halts. While it runs,
this process boots a second VM with guests/user.bin and checks its answer.
Then the demo matches each attempt, as the hostile guest announced it, with
what the VMM recorded. A hostile VM whose process ends (or stays silent)
before the guest's first line did not start: the demo cannot run, and says
why, rather than count every attempt as not contained.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from pyvmm.demos.common import (
    DEMO_RAM_SIZE,
    DemoCannotRun,
    GuestRun,
    HostFacts,
    Report,
    detect_host,
    format_seconds,
    guest_image,
    run_guest,
)
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.outcome import EXIT_TIMEOUT
from pyvmm.shipped import pyvmm_child

QUOTE = (
    '"the VMM is in complete control of system resources": a program running under '
    "it cannot access any resource not explicitly allocated to it, and the VMM can "
    "regain control of resources already allocated."
)

HOSTILE_TIMEOUT = 5.0
# How long to wait for the hostile guest to start attacking before giving up.
HOSTILE_START_LIMIT = 30.0
HOSTILE_MEMORY = f"{DEMO_RAM_SIZE >> 20}M"
# The hostile guest's console lines (guests/hostile.s).
HOSTILE_PREFIX = b"hostile: "
FLOOD_START = b"hostile: (d) flood the console with 20000 bytes\n"
FLOOD_END = b"hostile: (d) flood done\n"
FLOOD_BYTES = 20000
ATTACKS_DONE = b"hostile: (c) still running after the resets"
# Guest-physical accesses outside RAM: (a) a write and a read, (b) two reads.
MEMORY_ATTEMPTS = 4
# Attempt (c) lines end "(N writes)" or "(N writes, M read)".
PORT_COUNTS = re.compile(rb"\((\d+) writes?(?:, (\d+) reads?)?\)")
LOG_PORTS = re.compile(r"unassigned port accesses: (\d+) reads, (\d+) writes")
LOG_EXITS = re.compile(r"(\S+) after (\d+) exits")

USER_LOOP_COUNT = 1_000_000
USER_SUM = USER_LOOP_COUNT * (USER_LOOP_COUNT + 1) // 2
USER_SUM_LINE = re.compile(rb"sum=0x([0-9a-f]+)")
USER_EXIT_STATUS = 85


@dataclass(frozen=True)
class HostileRun:
    console: bytes
    log: str  # pyvmm's stderr (-v)
    returncode: int
    seconds: float

    def value_after(self, prefix: bytes) -> str | None:
        """The hex value the guest printed after `prefix` on one of its lines."""
        match = re.search(re.escape(prefix) + rb"0x([0-9a-f]+)", self.console)
        return match.group(1).decode() if match else None

    @property
    def flood(self) -> bytes:
        start = self.console.find(FLOOD_START)
        end = self.console.find(FLOOD_END)
        if start < 0 or end < 0:
            return b""
        return self.console[start + len(FLOOD_START) : end]

    @property
    def attempted_port_accesses(self) -> tuple[int, int]:
        """(writes, reads) the guest says it made, from its (c) lines."""
        writes = reads = 0
        for line in self.console.splitlines():
            if line.startswith(b"hostile: (c)"):
                for found in PORT_COUNTS.finditer(line):
                    writes += int(found.group(1))
                    reads += int(found.group(2) or 0)
        return writes, reads

    @property
    def unassigned_port_accesses(self) -> tuple[int, int] | None:
        """(writes, reads) the VMM counted, from its -v summary line."""
        match = LOG_PORTS.search(self.log)
        return (int(match.group(2)), int(match.group(1))) if match else None

    @property
    def ending(self) -> tuple[str, int] | None:
        """(outcome, exits) from the -v summary line."""
        match = LOG_EXITS.search(self.log)
        return (match.group(1), int(match.group(2))) if match else None


def start_hostile(
    image: Path, directory: Path, console: IO[bytes], log: IO[str]
) -> subprocess.Popen[bytes]:
    """`pyvmm boot ... hostile.bin` in a child process whose current directory is `directory`."""
    child = pyvmm_child(
        "boot",
        "-m",
        HOSTILE_MEMORY,
        "--mode",
        "long",
        "--timeout",
        f"{HOSTILE_TIMEOUT:g}",
        "-v",
        str(image),
        cwd=directory,
    )
    return subprocess.Popen(
        child.argv,
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=log,
        env=child.env,
    )


def wait_for(path: Path, marker: bytes, child: subprocess.Popen[bytes]) -> bool:
    """Poll the child's console file until `marker` appears (False if it ends first)."""
    deadline = time.monotonic() + HOSTILE_START_LIMIT
    while time.monotonic() < deadline:
        if marker in path.read_bytes():
            return True
        if child.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def did_not_start(returncode: int | None, log: str) -> DemoCannotRun:
    """The error for a hostile VM that printed nothing: its stderr's last line says why."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    why = lines[-1] if lines else "nothing on stderr"
    status = (
        f"still silent after {HOSTILE_START_LIMIT:g} s"
        if returncode is None
        else f"exit status {returncode}"
    )
    return DemoCannotRun(f"the hostile VM did not start: {why} ({status})")


def run_both(hostile_image: Path, user_image: bytes) -> tuple[HostileRun, GuestRun, bool]:
    """The hostile VM in a child process and, while it runs, user.bin in this one.

    Raises DemoCannotRun when the hostile guest never printed its first line.
    """
    with tempfile.TemporaryDirectory(prefix="pyvmm-demo-") as scratch:
        directory = Path(scratch)
        console_path = directory / "console"
        log_path = directory / "log"
        with console_path.open("wb") as console, log_path.open("w") as log:
            start = time.monotonic()
            child = start_hostile(hostile_image, directory, console, log)
            try:
                attacking = wait_for(console_path, ATTACKS_DONE, child)
                if HOSTILE_PREFIX not in console_path.read_bytes():
                    raise did_not_start(child.poll(), log_path.read_text(errors="replace"))
                user, _ = run_guest(user_image, CpuMode.USER)
                concurrent = attacking and child.poll() is None
                # --timeout ends it; if it does not, the table shows the status of the kill.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=HOSTILE_TIMEOUT + HOSTILE_START_LIMIT)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            seconds = time.monotonic() - start
        hostile = HostileRun(
            console=console_path.read_bytes(),
            log=log_path.read_text(errors="replace"),
            returncode=child.returncode,
            seconds=seconds,
        )
    return hostile, user, concurrent


def run(out: TextIO) -> int:
    host = detect_host()
    report = Report(out)
    hostile_image = guest_image("hostile.bin")
    user_image = guest_image("user.bin").read_bytes()
    report.header("Resource control (isolation)", QUOTE, host)
    hostile, user, concurrent = run_both(hostile_image, user_image)
    checks = report_hostile(report, hostile)
    checks += report_neighbour(report, user, concurrent, hostile)
    explain(report, host)
    holds = all(checks)
    return report.verdict(
        holds,
        "every attempt was contained and the other VM was unaffected"
        if holds
        else "some attempt was not contained as expected (see the table)",
    )


def report_hostile(report: Report, hostile: HostileRun) -> list[bool]:
    ones32, ones64 = "f" * 8, "f" * 16
    read_back = hostile.value_after(b"(a) read back ")
    top = hostile.value_after(b"(b) read GPA 0xfffff000: ")
    high = hostile.value_after(b"(b) map GPA 0x100000000 in its own page tables, read: ")
    attempted = hostile.attempted_port_accesses
    counted = hostile.unassigned_port_accesses
    flood = hostile.flood
    ending = hostile.ending
    alive = ATTACKS_DONE in hostile.console
    timed_out = (
        hostile.returncode == EXIT_TIMEOUT
        and ending is not None
        and ending[0] == "timeout"
        and "did not finish within" in hostile.log
    )
    ports_ok = counted == attempted and attempted[0] > 0
    memory_ok = top == ones64 and high == ones64

    def show(value: str | None) -> str:
        return "nothing printed" if value is None else f"0x{value}"

    counted_text = (
        "no -v summary" if counted is None else f"{counted[0]} writes, {counted[1]} reads"
    )
    exits = "?" if ending is None else f"{ending[1]:,}"
    # Each console byte and port access is one exit; what is left are the MMIO exits.
    memory_exits = -1 if ending is None else ending[1] - len(hostile.console) - sum(attempted)
    # (attempt, what the guest did, what it got, contained?)
    rows: list[tuple[str, str, str, bool]] = [
        (
            "(a) write past RAM",
            "0x5a5a5a5a to GPA 0xc0000000",
            f"no RAM slot: MMIO exit, dropped; read back {show(read_back)}",
            read_back == ones32,
        ),
        (
            "(b) probe memory",
            "read GPA 0xfffff000",
            f"no RAM, no host memory behind it: {show(top)}",
            memory_ok,
        ),
        (
            "",
            "own PDE -> GPA 0x100000000",
            f"its page tables only name GPAs: {show(high)}",
            memory_ok,
        ),
        (
            "(c) foreign ports",
            f"{attempted[0]} writes, {attempted[1]} reads",
            f"VMM counted unassigned: {counted_text}; writes dropped, reads 0xff",
            ports_ok,
        ),
        (
            "",
            "resets: 0x64<-0xfe, 0x92, 0xcf9",
            "no reset: the guest " + ("went on running" if alive else "did NOT report back"),
            alive,
        ),
        (
            "(d) console flood",
            f"{FLOOD_BYTES:,} bytes",
            f"{len(flood):,} bytes captured (of {len(hostile.console):,} in all), one exit each",
            len(flood) == FLOOD_BYTES,
        ),
        (
            "(e) never halt",
            "jmp .",
            f"stopped by --timeout {HOSTILE_TIMEOUT:g}: exit status {hostile.returncode}",
            timed_out,
        ),
        (
            "every exit",
            f"{exits} VM exits",
            f"= {len(hostile.console):,} console bytes + {sum(attempted)} port accesses + "
            f"{memory_exits} accesses outside RAM",
            memory_exits == MEMORY_ATTEMPTS,
        ),
    ]
    report.section(
        f"hostile VM: pyvmm boot -m {HOSTILE_MEMORY} --mode long --timeout "
        f"{HOSTILE_TIMEOUT:g} -v guests/hostile.bin (child process, "
        f"{format_seconds(hostile.seconds)})"
    )
    report.table(
        ["attempt", "what the guest did", "what it got / how the VMM contained it"],
        [[attempt, did, ("" if ok else "NOT CONTAINED: ") + got] for attempt, did, got, ok in rows],
    )
    return [ok for *_, ok in rows]


def report_neighbour(
    report: Report, user: GuestRun, concurrent: bool, hostile: HostileRun
) -> list[bool]:
    match = USER_SUM_LINE.search(user.console)
    printed = int(match.group(1), 16) if match else None
    right = printed == USER_SUM
    status_ok = user.outcome.exit_status == USER_EXIT_STATUS
    shown = "nothing printed" if printed is None else f"0x{printed:x} = {printed:,}"
    report.section("meanwhile, in this process: guests/user.bin (--mode user)")
    report.table(
        ["check", "result"],
        [
            [
                "sum of 1..1,000,000 in ring 3",
                f"{shown} ({'correct' if right else f'WRONG, expected {USER_SUM:,}'})",
            ],
            ["exit status", f"{user.outcome.exit_status} ({user.outcome.message})"],
            [
                "hostile VM still running when it finished",
                "yes" if concurrent else "NO (the runs did not overlap)",
            ],
            [
                "host processes",
                "this one carried on; the hostile VM's pyvmm ended by itself, "
                f"status {hostile.returncode}",
            ],
        ],
    )
    return [right, status_ok, concurrent]


def explain(report: Report, host: HostFacts) -> None:
    report.text(
        "Every address the hostile guest can name, even through page tables it writes "
        "itself, is a guest-physical address, and KVM resolves those only through the RAM "
        "slots pyvmm registered: anything else is an MMIO exit that pyvmm answers with "
        "all ones, so host memory is not even addressable. Ports likewise: pyvmm "
        "assigned COM1, debug-exit and POST, and every other port access (PIC, PIT, "
        "CMOS, three ways to reset a PC) reached no hardware and was counted."
    )
    report.text(
        "The console is a device pyvmm emulates, so the flood arrived as ordinary bytes, "
        "and a guest that never gives the CPU back was stopped anyway (a timer signal "
        "kicks the vCPU out of KVM_RUN): the VMM regains what it allocated. Meanwhile a "
        "second VM computed its answer undisturbed."
        + (
            " On this kvm_pvm host the hostile ring-0 code is emulated, but containment "
            "does not depend on that: on VT-x/AMD-V the same accesses exit to the same "
            "pyvmm code."
            if host.ring0_is_emulated
            else ""
        )
    )
