"""Resource control: a hostile guest cannot reach what the VMM did not give it.

guests/hostile.bin runs under `pyvmm boot` in a child process (64 MiB of RAM,
long mode at CPL0, --timeout 5, -v and --stats; the same pyvmm as this
process, run in a scratch directory so that no checkout in the current
directory can shadow it): it writes beyond its RAM, reads addresses with
nothing behind them, reprograms its PC's legacy devices (PIC, PIT, RTC),
floods the console and never halts. Once it spins, this process boots three
fresh VMs that reset their machines (guests/hostile_reset.elf, one reset
register each) and then a fourth with guests/user.bin, and checks that each
ended as it should while the hostile VM ran on. Then the demo matches each
attempt, as the hostile guest announced it, with what the VMM recorded: the
-v summary and the --stats exit counts per port. A hostile VM whose process
ends (or stays silent) before the guest's first line did not start: the demo
cannot run, and says why, rather than count every attempt as not contained.
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
from pyvmm.machine.outcome import EXIT_HALTED, EXIT_TIMEOUT, OutcomeKind
from pyvmm.shipped import pyvmm_child

QUOTE = (
    '"the VMM is in complete control of system resources": a program running under '
    "it cannot access any resource not explicitly allocated to it, and the VMM can "
    "regain control of resources already allocated."
)

HOSTILE_TIMEOUT = 5.0
# How long to wait for the hostile guest to reach its endless loop before giving up.
HOSTILE_START_LIMIT = 30.0
HOSTILE_MEMORY = f"{DEMO_RAM_SIZE >> 20}M"
# The hostile guest's console lines (guests/hostile.s).
HOSTILE_PREFIX = b"hostile: "
FLOOD_START = b"hostile: (d) flood the console with 20000 bytes\n"
FLOOD_END = b"hostile: (d) flood done\n"
FLOOD_BYTES = 20000
SPINNING = b"hostile: (e) jmp . forever, no hlt"
# Guest-physical accesses outside RAM: (a) a write and a read, (b) two reads.
MEMORY_ATTEMPTS = 4
# An attempt (c) line: "hostile: (c) PIC 0x20/0x21: ... (5 writes, 1 read): mask 0xfe".
DEVICE_LINE = re.compile(
    rb"^hostile: \(c\) (\w+) ((?:0x[0-9a-f]+/?)+): .*"
    rb"\((\d+) writes?(?:, (\d+) reads?)?\): (\w+) 0x([0-9a-f]+)$",
    re.M,
)
# Where a PC's legacy devices live under pyvmm: the PIC and the PIT are KVM's
# models, in the kernel (the KVM API doc's KVM_CREATE_IRQCHIP and
# KVM_CREATE_PIT2), so the guest's accesses to them never exit to pyvmm; the
# RTC/CMOS is pyvmm's (pyvmm/devices/rtc.py), so each access is one exit.
IN_KERNEL_DEVICES = frozenset({"PIC", "PIT"})
PYVMM_DEVICES = frozenset({"CMOS"})
PIT_HZ = 1_193_182
PIT_DIVISOR = 2  # guests/hostile.s
# KVM runs a guest's periodic PIT no faster than this (arch/x86/kvm/i8254.c).
KVM_MIN_TIMER_PERIOD = Path("/sys/module/kvm/parameters/min_timer_period_us")
# The -v summary and --stats (pyvmm/cli/report.py, pyvmm/observe/exit_stats.py).
LOG_PORTS = re.compile(r"unassigned port accesses: (\d+) reads, (\d+) writes")
LOG_EXITS = re.compile(r"(\S+) after (\d+) exits")
STATS_EXITS = re.compile(r"^exits: (\d+) \((\d+) KVM_RUN calls interrupted by signals\)$", re.M)
STATS_PORT = re.compile(r"^  port 0x([0-9a-f]+) +(\d+)$", re.M)
STATS_REASON = re.compile(r"^  (KVM_EXIT_\w+) +(\d+)$", re.M)
COM1_DATA = 0x3F8

# guests/hostile_reset.elf: one fresh VM per reset register, named on its command line.
RESETS = (
    ("kbd", "0x64 <- 0xfe (keyboard controller)"),
    ("port92", "0x92 <- 0x01 (System Control Port A)"),
    ("cf9", "0xcf9 <- 0x06 (Reset Control Register)"),
)
RESET_YEAR = re.compile(rb"its clock's year: 0x([0-9a-f]+)")
RESET_IGNORED = b"still running after the reset"

USER_LOOP_COUNT = 1_000_000
USER_SUM = USER_LOOP_COUNT * (USER_LOOP_COUNT + 1) // 2
USER_SUM_LINE = re.compile(rb"sum=0x([0-9a-f]+)")
USER_EXIT_STATUS = 85


@dataclass(frozen=True)
class DeviceAttempt:
    """What the hostile guest says it did to one device in attempt (c), over all its lines."""

    device: str  # as the guest names it: "PIC", "PIT", "CMOS"
    ports: frozenset[int]
    writes: int
    reads: int
    read_back: tuple[tuple[str, str], ...]  # (what, hex value) in the order printed

    @property
    def accesses(self) -> int:
        return self.writes + self.reads

    def value(self, what: str) -> str | None:
        return next((value for name, value in self.read_back if name == what), None)


@dataclass(frozen=True)
class HostileRun:
    console: bytes
    log: str  # pyvmm's stderr (-v, --stats)
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
    def device_attempts(self) -> dict[str, DeviceAttempt]:
        """The guest's own account of attempt (c), by device, in the order it named them."""
        attempts: dict[str, DeviceAttempt] = {}
        for found in DEVICE_LINE.finditer(self.console):
            device = found.group(1).decode()
            ports = frozenset(int(port, 16) for port in found.group(2).split(b"/"))
            before = attempts.get(device, DeviceAttempt(device, frozenset(), 0, 0, ()))
            attempts[device] = DeviceAttempt(
                device,
                before.ports | ports,
                before.writes + int(found.group(3)),
                before.reads + int(found.group(4) or 0),
                (*before.read_back, (found.group(5).decode(), found.group(6).decode())),
            )
        return attempts

    @property
    def unassigned_port_accesses(self) -> tuple[int, int] | None:
        """(writes, reads) the VMM found no device for, from its -v summary line."""
        match = LOG_PORTS.search(self.log)
        return (int(match.group(2)), int(match.group(1))) if match else None

    @property
    def ending(self) -> tuple[str, int] | None:
        """(outcome, exits) from the -v summary line."""
        match = LOG_EXITS.search(self.log)
        return (match.group(1), int(match.group(2))) if match else None

    @property
    def exits_by_port(self) -> dict[int, int]:
        """--stats: the port I/O exits at each port (a port with none is not listed)."""
        return {int(port, 16): int(count) for port, count in STATS_PORT.findall(self.log)}

    @property
    def exits_by_reason(self) -> dict[str, int]:
        return {reason: int(count) for reason, count in STATS_REASON.findall(self.log)}

    @property
    def interrupted_runs(self) -> int | None:
        """--stats: KVM_RUN calls a signal cut short (the halt watch, the timeout): no exits."""
        match = STATS_EXITS.search(self.log)
        return int(match.group(2)) if match else None

    def exits_at(self, ports: frozenset[int]) -> int:
        by_port = self.exits_by_port
        return sum(by_port.get(port, 0) for port in ports)


@dataclass(frozen=True)
class ResetRun:
    """One fresh VM that reset its machine, run in this process while the hostile VM ran."""

    method: str  # hostile_reset.elf's argument
    register: str  # what it wrote where
    run: GuestRun
    hostile_running: bool  # the hostile VM's process had not ended when this run had

    @property
    def year(self) -> str | None:
        match = RESET_YEAR.search(self.run.console)
        return match.group(1).decode() if match else None

    @property
    def reset_only_its_vm(self) -> bool:
        outcome = self.run.outcome
        return (
            outcome.kind is OutcomeKind.RESET
            and outcome.exit_status == EXIT_HALTED
            and RESET_IGNORED not in self.run.console
            and self.hostile_running
        )


def kvm_min_timer_period_us(path: Path = KVM_MIN_TIMER_PERIOD) -> int | None:
    """KVM's floor for a guest's periodic timer, in microseconds (None: not readable)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


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
        "--pit",
        "kernel",  # the demo's PIT is KVM's, as its PIC is: their accesses never exit
        "--timeout",
        f"{HOSTILE_TIMEOUT:g}",
        "-v",
        "--stats",
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


def run_resets(image: bytes, hostile: subprocess.Popen[bytes]) -> list[ResetRun]:
    """hostile_reset.elf in one fresh VM per reset register, one after the other."""
    runs = []
    for method, register in RESETS:
        run, _ = run_guest(image, None, cmdline=f"guests/hostile_reset.elf {method}", append=method)
        runs.append(ResetRun(method, register, run, hostile.poll() is None))
    return runs


def run_all(
    hostile_image: Path, reset_image: bytes, user_image: bytes
) -> tuple[HostileRun, list[ResetRun], GuestRun, bool]:
    """The hostile VM in a child process and, while it spins, the other VMs in this one.

    Returns the hostile run, the resets, user.bin's run, and whether the
    hostile VM was still running when user.bin finished. Raises DemoCannotRun
    when the hostile guest never printed its first line.
    """
    with tempfile.TemporaryDirectory(prefix="pyvmm-demo-") as scratch:
        directory = Path(scratch)
        console_path = directory / "console"
        log_path = directory / "log"
        with console_path.open("wb") as console, log_path.open("w") as log:
            start = time.monotonic()
            child = start_hostile(hostile_image, directory, console, log)
            try:
                spinning = wait_for(console_path, SPINNING, child)
                if HOSTILE_PREFIX not in console_path.read_bytes():
                    raise did_not_start(child.poll(), log_path.read_text(errors="replace"))
                resets = run_resets(reset_image, child)
                user, _ = run_guest(user_image, CpuMode.USER)
                concurrent = spinning and child.poll() is None
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
    return hostile, resets, user, concurrent


def run(out: TextIO) -> int:
    host = detect_host()
    report = Report(out)
    hostile_image = guest_image("hostile.bin")
    reset_image = guest_image("hostile_reset.elf").read_bytes()
    user_image = guest_image("user.bin").read_bytes()
    report.header("Resource control (isolation)", QUOTE, host)
    hostile, resets, user, concurrent = run_all(hostile_image, reset_image, user_image)
    checks = report_hostile(report, hostile)
    checks += report_resets(report, resets, hostile)
    checks += report_neighbour(report, user, concurrent, hostile)
    explain(report, host)
    holds = all(checks)
    return report.verdict(
        holds,
        "every attempt was contained in its own VM, and the other VMs were unaffected"
        if holds
        else "some attempt was not contained as expected (see the tables)",
    )


def _accesses(number: int) -> str:
    return f"{number:,} access" + ("" if number == 1 else "es")


def device_rows(hostile: HostileRun) -> list[tuple[str, str, str, bool]]:
    """Attempt (c): each device the guest reprogrammed, what it read back, where it was served.

    A device in the kernel must show no exit at its ports in --stats; one of
    pyvmm's, exactly one exit per access the guest announced.
    """
    attempts = hostile.device_attempts
    rows: list[tuple[str, str, str, bool]] = []

    def where(attempt: DeviceAttempt) -> tuple[str, bool]:
        exits = hostile.exits_at(attempt.ports)
        counted = f"{exits:,} of {_accesses(attempt.accesses)} exited"
        if attempt.device in IN_KERNEL_DEVICES:
            return f"its own, in KVM ({counted})", exits == 0
        return f"its own, in pyvmm ({counted})", exits == attempt.accesses

    pic = attempts.get("PIC")
    if pic is None:
        rows.append(("", "PIC 0x20/0x21", "nothing printed", False))
    else:
        text, served = where(pic)
        mask, irr = pic.value("mask"), pic.value("IRR")
        rows.append(
            (
                "",
                "PIC: unmask IRQ 0 alone, wait for it",
                f"mask 0x{mask}, IRR 0x{irr}: {text}",
                served and mask == "fe" and irr == "01",
            )
        )
    pit = attempts.get("PIT")
    if pit is None:
        rows.append(("", "PIT 0x43/0x40", "nothing printed", False))
    else:
        text, served = where(pit)
        floor = kvm_min_timer_period_us()
        limit = "" if floor is None else f", one tick per {floor} us at most"
        status = pit.value("status")
        rows.append(
            (
                "",
                f"PIT: {PIT_HZ // PIT_DIVISOR:,} Hz, its fastest",
                f"status 0x{status}: {text}{limit}",
                served and status == "34",
            )
        )
    cmos = attempts.get("CMOS")
    if cmos is None:
        rows.append(("", "CMOS 0x70/0x71", "nothing printed", False))
    else:
        text, served = where(cmos)
        year = cmos.value("year")
        rows.append(
            (
                "",
                "RTC: set its clock's year to 99",
                f"year 0x{year}: {text}",
                served and year == "99",
            )
        )
    counted = hostile.unassigned_port_accesses
    rows.append(
        (
            "",
            "any other port",
            "no -v summary"
            if counted is None
            else f"pyvmm counted {_accesses(sum(counted))} to ports with no device",
            counted == (0, 0),
        )
    )
    rows[0] = ("(c) its PC's devices", *rows[0][1:])
    return rows


def report_hostile(report: Report, hostile: HostileRun) -> list[bool]:
    ones32, ones64 = "f" * 8, "f" * 16
    read_back = hostile.value_after(b"(a) read back ")
    top = hostile.value_after(b"(b) read GPA 0xfffff000: ")
    high = hostile.value_after(b"(b) map GPA 0x100000000 in its own page tables, read: ")
    attempts = hostile.device_attempts.values()
    flood = hostile.flood
    ending = hostile.ending
    timed_out = (
        hostile.returncode == EXIT_TIMEOUT
        and ending is not None
        and ending[0] == "timeout"
        and "did not finish within" in hostile.log
    )
    memory_ok = top == ones64 and high == ones64

    def show(value: str | None) -> str:
        return "nothing printed" if value is None else f"0x{value}"

    # Every exit is a console byte, an access to a device of pyvmm's or an
    # access outside RAM: what the guest's account leaves are the last.
    console = len(hostile.console)
    to_pyvmm = sum(each.accesses for each in attempts if each.device in PYVMM_DEVICES)
    in_kernel = sum(each.accesses for each in attempts if each.device in IN_KERNEL_DEVICES)
    exits = "?" if ending is None else f"{ending[1]:,}"
    memory_exits = -1 if ending is None else ending[1] - console - to_pyvmm
    stats = hostile.exits_by_reason
    stats_agree = (
        hostile.exits_by_port.get(COM1_DATA) == console
        and stats.get("KVM_EXIT_MMIO") == memory_exits
        and sum(stats.values()) == (None if ending is None else ending[1])
    )
    interrupted = hostile.interrupted_runs
    not_exits = f"not exits: {in_kernel:,} PIC and PIT accesses" + (
        "" if interrupted is None else f", {interrupted} KVM_RUN calls cut short by signals"
    )
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
        *device_rows(hostile),
        (
            "(d) console flood",
            f"{FLOOD_BYTES:,} bytes",
            f"{len(flood):,} bytes captured (of {console:,} in all), one exit each",
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
            f"= {console:,} console bytes + {to_pyvmm} RTC accesses + "
            f"{memory_exits} accesses outside RAM"
            + ("" if stats_agree else " (--stats does NOT agree)"),
            memory_exits == MEMORY_ATTEMPTS and stats_agree,
        ),
        ("", "", not_exits, True),
    ]
    report.section(
        f"hostile VM: pyvmm boot -m {HOSTILE_MEMORY} --mode long --pit kernel --timeout "
        f"{HOSTILE_TIMEOUT:g} -v --stats guests/hostile.bin (child process, "
        f"{format_seconds(hostile.seconds)})"
    )
    report.table(
        ["attempt", "what the guest did", "what it got / how the VMM contained it"],
        [[attempt, did, ("" if ok else "NOT CONTAINED: ") + got] for attempt, did, got, ok in rows],
    )
    return [ok for *_, ok in rows]


def report_resets(report: Report, resets: list[ResetRun], hostile: HostileRun) -> list[bool]:
    """Each reset ended its own VM alone; each fresh VM's clock is the host's, not the 99 set."""
    host_year = time.gmtime().tm_year
    expected_year = f"{host_year % 100:02d}"  # BCD, as the guest prints it in hex
    hostile_year = hostile.device_attempts.get("CMOS")
    rows = []
    checks = []
    for each in resets:
        outcome = each.run.outcome
        ended = f"{outcome.kind.value}, status {outcome.exit_status}"
        if outcome.kind is not OutcomeKind.RESET:
            ended += f" ({outcome.message})"
        elif RESET_IGNORED in each.run.console:
            ended += " (but it printed that it was still running)"
        year = each.year
        year_ok = year == expected_year
        rows.append(
            [
                each.register,
                ("" if each.reset_only_its_vm else "NOT CONTAINED: ") + ended,
                ("0x" + year if year else "nothing printed")
                + (f" (the host's: {host_year})" if year_ok else f" (NOT {host_year})"),
                "still running" if each.hostile_running else "NOT running any more",
            ]
        )
        checks += [each.reset_only_its_vm, year_ok]
    report.section(
        "meanwhile, in this process: a fresh VM per reset register, each running "
        "guests/hostile_reset.elf (-append kbd, port92, cf9): it reads its clock's year, "
        "then resets its machine"
    )
    report.table(["reset through", "its run ended", "its clock's year", "the hostile VM"], rows)
    if hostile_year is not None and hostile_year.value("year") is not None:
        report.text(
            f"The hostile VM set its own clock's year to 0x{hostile_year.value('year')}; "
            f"each fresh VM's clock started from the host's, which still says {host_year}."
        )
    return checks


def report_neighbour(
    report: Report, user: GuestRun, concurrent: bool, hostile: HostileRun
) -> list[bool]:
    match = USER_SUM_LINE.search(user.console)
    printed = int(match.group(1), 16) if match else None
    right = printed == USER_SUM
    status_ok = user.outcome.exit_status == USER_EXIT_STATUS
    shown = "nothing printed" if printed is None else f"0x{printed:x} = {printed:,}"
    report.section("then, in this process: guests/user.bin (--mode user)")
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
                "this one carried on after three of its VMs reset; the hostile VM's "
                f"pyvmm ended by itself, status {hostile.returncode}",
            ],
        ],
    )
    return [right, status_ok, concurrent]


def explain(report: Report, host: HostFacts) -> None:
    report.text(
        "Every address the hostile guest can name, even through page tables it writes "
        "itself, is a guest-physical address, and KVM resolves those only through the RAM "
        "slots pyvmm registered: anything else is an MMIO exit that pyvmm answers with "
        "all ones, so host memory is not even addressable."
    )
    report.text(
        "A PC kernel expects a PIC, a PIT, a real-time clock and reset registers at fixed "
        "ports, and each VM has a set of its own, all virtual: the PIC and PIT are KVM's "
        "models in the kernel, so their accesses do not even exit to pyvmm (--stats shows "
        "none at their ports), and the RTC/CMOS and the reset registers are pyvmm's "
        "devices, one exit per access. Reprogramming them changes that VM's copies and "
        "nothing else: its PIC keeps the mask it was given; its PIT, set to the fastest "
        "rate of its mode, ticks into that PIC, where the IRQ waits while IF=0 (and "
        "KVM never runs a guest's periodic timer faster than its floor); its clock says "
        "99 while the host's clock, and every fresh VM's, do not. A reset pulls the reset "
        "line of its own machine: pyvmm ends that VM's run (status 0, as qemu -no-reboot) "
        "and nothing else. No access reached the host's hardware: pyvmm never opens the "
        "host's ports (no ioperm, no /dev/port)."
    )
    report.text(
        "The console is a device pyvmm emulates, so the flood arrived as ordinary bytes, "
        "and a guest that never gives the CPU back was stopped anyway (a timer signal "
        "kicks the vCPU out of KVM_RUN, as the halt watch's signals do now and then, "
        "without an exit): the VMM regains what it allocated. Meanwhile "
        "other VMs reset and computed their answers undisturbed."
        + (
            " On this kvm_pvm host the hostile ring-0 code is emulated, but containment "
            "does not depend on that: on VT-x/AMD-V the same accesses exit to the same "
            "pyvmm code, or stay in the same KVM devices."
            if host.ring0_is_emulated
            else ""
        )
    )
