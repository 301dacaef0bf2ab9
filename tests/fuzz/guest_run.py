"""One guest fuzz case, run and judged: in-process through `build_machine`, or as `pyvmm boot`.

A run must end in a named outcome with a one-line message and the exit status
that goes with it, within its limits, and never raise.
"""

from __future__ import annotations

import faulthandler
import io
import os
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pyvmm.console.input import InputBuffer
from pyvmm.console.output import ConsoleWriter
from pyvmm.errors import PyvmmError
from pyvmm.machine.builder import Machine, MachineConfig, build_machine
from pyvmm.machine.outcome import (
    EXIT_FAIL_ENTRY,
    EXIT_GUEST_CRASH,
    EXIT_HALTED,
    EXIT_INTERNAL_ERROR,
    EXIT_LIMIT,
    EXIT_TIMEOUT,
    EXIT_TRIPLE_FAULT,
    EXIT_UNHANDLED_EXCEPTION,
    OutcomeKind,
    RunOutcome,
    interrupted,
)
from pyvmm.machine.run_signals import StoppedBySignal
from pyvmm.machine.vcpu_states import read_vcpu_states
from pyvmm.machine.virtio import Drive
from pyvmm.observe.exit_stats import ExitStatistics, FanOut
from pyvmm.observe.trace import ExitTracer
from tests.fuzz.guest_cases import GuestCase, apply_tweaks
from tests.fuzz.guest_virtio import Mmio, quiet_refusals
from tests.fuzz.guest_virtio_watch import (
    DeviceWatch,
    device_counts,
    disk_problems,
    ram_ranges,
    watch_devices,
    write_disk,
)

# Every kind a fuzzed guest may end in. DEBUG needs a debugger and INTERRUPTED a
# signal from outside: neither may happen here, and VMM_ERROR is pyvmm failing.
ALLOWED_KINDS = frozenset(OutcomeKind) - {
    OutcomeKind.VMM_ERROR,
    OutcomeKind.DEBUG,
    OutcomeKind.INTERRUPTED,
}
STATUS_OF_KIND: dict[OutcomeKind, Callable[[int], bool]] = {
    OutcomeKind.HALTED: lambda status: status == EXIT_HALTED,
    OutcomeKind.DEBUG_EXIT: lambda status: status % 2 == 1,
    OutcomeKind.SYSTEM_EVENT: lambda status: status == EXIT_GUEST_CRASH,
    OutcomeKind.POWER_OFF: lambda status: status == EXIT_HALTED,
    OutcomeKind.RESET: lambda status: status == EXIT_HALTED,
    OutcomeKind.QUIT: lambda status: status == EXIT_HALTED,  # the monitor's quit: status 0
    OutcomeKind.TRIPLE_FAULT: lambda status: status == EXIT_TRIPLE_FAULT,
    OutcomeKind.FAIL_ENTRY: lambda status: status == EXIT_FAIL_ENTRY,
    OutcomeKind.INTERNAL_ERROR: lambda status: status == EXIT_INTERNAL_ERROR,
    OutcomeKind.UNHANDLED_EXCEPTION: lambda status: status == EXIT_UNHANDLED_EXCEPTION,
    OutcomeKind.TIMEOUT: lambda status: status == EXIT_TIMEOUT,
    OutcomeKind.EXIT_LIMIT: lambda status: status == EXIT_LIMIT,
}


# A virtio case's guest ends by itself in milliseconds: a longer timeout than the
# code kind's, and room for the exits of each of its accesses.
VIRTIO_TIMEOUT = 2.0
VIRTIO_SPARE_EXITS = 200
# What a `pyvmm boot` run may take beyond its timeout and slack: a Python start-up.
CLI_START_UP = 2.0
# Of `pyvmm boot`'s stderr, what is kept for the report (a line per refusal, at most).
STDERR_KEPT = 1 << 20


@dataclass(frozen=True)
class Limits:
    """How long one guest may run: short, since ring-0 code is emulated on some hosts."""

    timeout: float = 0.5
    max_exits: int = 2000
    # A run that takes this much longer than `timeout` to return counts as a hang;
    # the watchdog kills the process outright if one never returns.
    hang_slack: float = 5.0
    watchdog: float = 60.0


@dataclass
class CaseResult:
    case: GuestCase
    outcome: RunOutcome | None = None
    rejected: str | None = None  # KVM refused the registers (a PyvmmError): fine
    failure: str | None = None  # pyvmm misbehaved
    detail: str = ""  # a traceback or register dump, for -v
    seconds: float = 0.0
    exits: int = 0  # VM exits served, every vCPU together: how far the guest got
    cli_end: str | None = None  # how `pyvmm boot` ended, for CLI cases
    # Virtio cases run in this process: what the devices did, and what they counted.
    watch: DeviceWatch | None = None
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def kind(self) -> str:
        """How the case ended, in one word or so."""
        if self.outcome is not None:
            return self.outcome.kind.value
        if self.cli_end is not None:
            return f"pyvmm boot: {self.cli_end}"
        return "rejected" if self.rejected is not None else "failed"


def run_case(case: GuestCase, limits: Limits) -> CaseResult:
    """Build, set the registers, run, close; never raises."""
    if case.virtio is not None:
        return run_virtio_case(case, limits)
    if case.via_cli:
        return run_cli_case(case, limits)
    return run_machine(case, limits)


def run_virtio_case(case: GuestCase, limits: Limits) -> CaseResult:
    """A case of the virtio kind, on a disk image of its own; then the disk is checked.

    Its guest ends by itself within milliseconds, so it gets a longer timeout
    than the code kind's (a guest stopped by one would prove nothing) and
    room for each of its MMIO accesses.
    """
    setup = case.virtio
    assert setup is not None
    accesses = sum(isinstance(op, Mmio) for op in setup.script)
    limits = replace(
        limits,
        timeout=max(limits.timeout, VIRTIO_TIMEOUT),
        max_exits=max(limits.max_exits, accesses + VIRTIO_SPARE_EXITS),
    )
    with tempfile.TemporaryDirectory() as directory, quiet_refusals():
        disk = write_disk(directory, setup)
        if case.via_cli:
            result = run_cli_case(case, limits, disk)
            watched = None
        else:
            result = run_machine(case, limits, disk)
            watched = result.watch.disk_writes if result.watch is not None else None
        if "block" in setup.devices and result.failure is None:
            problems = disk_problems(setup.disk, disk, setup.read_only, watched)
            if problems:
                result.failure = "; ".join(problems)
    return result


def virtio_options(case: GuestCase, disk: str | None) -> dict[str, Any]:
    """The MachineConfig fields that give the machine the case's virtio devices."""
    devices = case.virtio.devices if case.virtio is not None else ()
    drive = Drive(disk, case.virtio.read_only) if case.virtio and "block" in devices else None
    return {
        "virtio_console": "console" in devices,
        "drive": drive if disk is not None else None,
        "virtio_rng": "entropy" in devices,
        "balloon": "balloon" in devices,
        "ioeventfd": None if case.virtio is None or case.virtio.eventfds else False,
    }


def run_machine(case: GuestCase, limits: Limits, disk: str | None = None) -> CaseResult:
    """The case in this process, through build_machine (a virtio case's disk at `disk`)."""
    result = CaseResult(case)
    host_input = None
    if case.console_input is not None:
        host_input = InputBuffer(max(len(case.console_input), 1))
        host_input.put(case.console_input)
    config = MachineConfig(
        image=case.image,
        ram_size=case.ram_size,
        console=ConsoleWriter(-1),
        mode=case.mode,
        max_exits=limits.max_exits,
        cpus=case.cpus,
        irqchip=case.irqchip,
        console_input=host_input,
        **virtio_options(case, disk),
    )
    started = time.perf_counter()
    faulthandler.dump_traceback_later(limits.watchdog, exit=True)
    try:
        with build_machine(config) as machine:
            try:
                set_registers(machine.vcpu, case)
            except PyvmmError as error:
                result.rejected = str(error)
                return result
            observer, statistics = make_observer(case.observer, machine)
            if case.virtio is not None:
                result.watch = DeviceWatch(ram_ranges(case.ram_size))
                watch_devices(machine.virtio, result.watch)
            run_started = time.perf_counter()
            result.outcome = machine.run(timeout=limits.timeout, observer=observer)
            ran = time.perf_counter() - run_started
            result.exits = sum(loop.exit_count for loop in machine.group.loops)
            if statistics is not None:
                statistics.summary()  # what --stats prints: must format any run
            check_halted(result, machine, irqchip=case.irqchip is not False)
        # The machine is closed: its threads (an I/O thread serving notifications) are
        # joined, and what they did is done.
        closed = time.perf_counter() - run_started
        if case.virtio is not None:
            result.counts = device_counts(machine.virtio, result.watch)
        check_outcome(result, ran, limits, closed)
        if case.virtio is not None:
            check_virtio_run(result)
    except StoppedBySignal as stop:  # SIGTERM for the fuzzer itself, while building
        result.outcome = interrupted(signal.Signals(stop.signal).name, stop.signal)
    except Exception as error:  # pyvmm must never let one escape: that is the finding
        result.failure = f"raised {type(error).__name__}: {error}"
        result.detail = traceback.format_exc()
    finally:
        faulthandler.cancel_dump_traceback_later()
        result.seconds = time.perf_counter() - started
    return result


# `pyvmm boot` statuses a guest may cause (see its --help): halted, a guest fault,
# timeout, exit limit, or a debug-exit status (odd). Not 2 (usage: the command
# line is valid), nor 70 (pyvmm failed), nor a signal.
GUEST_FAULT_STATUSES = (
    EXIT_TRIPLE_FAULT,
    EXIT_INTERNAL_ERROR,
    EXIT_FAIL_ENTRY,
    EXIT_GUEST_CRASH,
    EXIT_UNHANDLED_EXCEPTION,
)
CLI_STATUSES = {
    EXIT_HALTED: "halted",
    **{status: "guest fault" for status in GUEST_FAULT_STATUSES},
    EXIT_TIMEOUT: "timeout",
    EXIT_LIMIT: "exit-limit",
}


def run_cli_case(case: GuestCase, limits: Limits, disk: str | None = None) -> CaseResult:
    """`pyvmm boot` on the case's image with a pseudo-terminal for stdin.

    pyvmm puts a terminal stdin in raw mode and reads it from a thread: the run
    must end with a documented status, no traceback, and the terminal's mode
    as it was.
    """
    from tests.integration.helpers import REPO

    result = CaseResult(case)
    started = time.perf_counter()
    master, slave = os.openpty()
    try:
        with tempfile.TemporaryDirectory() as directory:
            image = os.path.join(directory, "guest.bin")
            with open(image, "wb") as file:
                file.write(case.image)
            if case.console_input:
                os.write(master, case.console_input)  # typed ahead
            before = termios.tcgetattr(slave)
            ran_from = time.perf_counter()
            status, stderr, output = run_draining(
                cli_command(case, limits, image, disk),
                stdin=slave,
                timeout=limits.timeout + limits.hang_slack + 10,  # a Python start-up, too
                cwd=str(REPO),
            )
            ran = time.perf_counter() - ran_from
            after = termios.tcgetattr(slave)
        result.detail = stderr
        result.cli_end, result.failure = classify_cli_end(status, stderr)
        if result.failure is None and before != after:
            result.failure = f"pyvmm boot left the terminal mode changed: {before} -> {after}"
        if result.failure is None and ran > limits.timeout + limits.hang_slack + CLI_START_UP:
            result.failure = (
                f"pyvmm boot took {ran:.1f} s with a {limits.timeout} s timeout "
                f"({output} bytes of console output)"
            )
    except subprocess.TimeoutExpired:
        result.failure = "pyvmm boot did not end (killed)"
    finally:
        os.close(master)
        os.close(slave)
        result.seconds = time.perf_counter() - started
    return result


def run_draining(command: list[str], stdin: int, timeout: float, cwd: str) -> tuple[int, str, int]:
    """Run `command`; (its status, its stderr, how many bytes it wrote to stdout).

    Its stdout is read as fast as it comes and only counted: a guest may print
    gigabytes. Kills it and raises subprocess.TimeoutExpired after `timeout`.
    """
    process = subprocess.Popen(
        command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd
    )
    written = [0]
    errors: list[bytes] = []

    def count_output() -> None:
        assert process.stdout is not None
        while chunk := process.stdout.read(1 << 16):
            written[0] += len(chunk)

    def keep_errors() -> None:
        assert process.stderr is not None
        while chunk := process.stderr.read(1 << 16):
            if sum(map(len, errors)) < STDERR_KEPT:
                errors.append(chunk)

    readers = [threading.Thread(target=count_output), threading.Thread(target=keep_errors)]
    for reader in readers:
        reader.start()
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        for reader in readers:
            reader.join()
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    return status, b"".join(errors).decode(errors="replace"), written[0]


def classify_cli_end(status: int, stderr: str) -> tuple[str, str | None]:
    """How `pyvmm boot` ended, from its status and stderr; and what is wrong with that.

    An abnormal end says why on the first line of stderr; a debug-exit says
    nothing. Odd statuses are debug-exits alone: no guest fault may give one.
    """
    says_why = stderr.startswith("pyvmm: ")
    if "Traceback" in stderr:
        return str(status), "pyvmm boot printed a traceback"
    if status in (EXIT_TIMEOUT, EXIT_LIMIT, *GUEST_FAULT_STATUSES) and not says_why:
        return CLI_STATUSES[status], f"pyvmm boot ended with status {status} but did not say why"
    if status in CLI_STATUSES:
        return CLI_STATUSES[status], None
    if status % 2 == 1:
        return "debug-exit", None
    return str(status), f"pyvmm boot exited with status {status}: {stderr[:200]!r}"


def cli_command(case: GuestCase, limits: Limits, image: str, disk: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "pyvmm", "boot", "--mode", case.mode.value]
    options = virtio_options(case, disk)
    if options["virtio_console"]:
        command += ["--console", "virtio"]
    if options["drive"] is not None:
        drive = options["drive"]
        command += ["--drive", f"file={drive.path}" + (",readonly=on" if drive.read_only else "")]
    command += ["--virtio-rng"] if options["virtio_rng"] else []
    command += ["--balloon"] if options["balloon"] else []
    command += ["--ioeventfd", "off"] if options["ioeventfd"] is False else []
    command += ["-m", f"{case.ram_size >> 10}K", "--timeout", str(limits.timeout)]
    command += ["--max-exits", str(limits.max_exits), "-smp", str(case.cpus)]
    if case.irqchip is False:
        command += ["--kernel-irqchip", "off"]
    elif case.irqchip == "on":
        command += ["--kernel-irqchip", "on"]
    if case.observer in ("text", "json", "both"):
        style = "json" if case.observer == "json" else "text"
        command += ["--trace=all", "--trace-format", style, "--trace-file", os.devnull]
    if case.observer in ("stats", "both"):
        command.append("--stats")
    return [*command, image]


def make_observer(kind: str, machine: Machine) -> tuple[Any, ExitStatistics | None]:
    """The observer `pyvmm boot --trace/--stats` would attach (tracing into memory)."""
    if not kind:
        return None, None
    tracer = ExitTracer(
        machine.vcpu,
        machine.memory,
        io.StringIO(),
        json_lines=kind == "json",
        max_phys_bits=machine.max_phys_bits,
    )
    statistics = ExitStatistics()
    if kind == "both":
        return FanOut(tracer, statistics), statistics
    return (statistics, statistics) if kind == "stats" else (tracer, None)


def set_registers(vcpu: Any, case: GuestCase) -> None:
    if case.sregs:
        sregs = vcpu.get_sregs()
        apply_tweaks(sregs, case.sregs)
        vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    apply_tweaks(regs, case.regs)
    vcpu.set_regs(regs)


def check_halted(result: CaseResult, machine: Machine, irqchip: bool) -> None:
    """With the LAPICs in KVM (split or on), halted means no vCPU can ever run again: each is
    halted with IF=0 or waits for INIT/SIPI (KVM_GET_MP_STATE, RFLAGS.IF)."""
    outcome = result.outcome
    if not irqchip or outcome is None or outcome.kind is not OutcomeKind.HALTED:
        return
    states = read_vcpu_states(loop.vcpu for loop in machine.group.loops)
    if states is None or not all(state.stuck for state in states):
        result.failure = f"ended as halted while a vCPU could still run: {states}"


def check_virtio_run(result: CaseResult) -> None:
    """What a virtio case adds to the property: the devices touched guest RAM only, and
    the guest reached the end of its script unless a device wrote into or released its
    own memory (pyvmm's tables, its code and data)."""
    watch, setup, outcome = result.watch, result.case.virtio, result.outcome
    if watch is None or setup is None or outcome is None:
        return  # rejected
    if outcome.kind is OutcomeKind.INTERRUPTED or result.failure is not None:
        return  # Ctrl-C or SIGTERM for the fuzzer itself, or already a finding
    if watch.outside:
        result.failure = watch.outside[0]
        return
    expected = (setup.end_value << 1) | 1
    if outcome.kind is OutcomeKind.DEBUG_EXIT and outcome.exit_status == expected:
        result.counts["guest reached its end"] += 1
    elif watch.private:
        result.counts["guest's own memory hit by a device"] += 1
    else:
        result.failure = (
            f"the guest did not reach the end of its script (debug-exit, status {expected}): "
            f"{outcome.kind.value}, status {outcome.exit_status}: {outcome.message}"
        )


def check_outcome(
    result: CaseResult, ran: float, limits: Limits, closed: float | None = None
) -> None:
    """The outcome is a named one with its status and a one-line message, and the run
    (`ran` seconds), then the machine's close (`closed` seconds from the run's start),
    ended in time."""
    outcome = result.outcome
    assert outcome is not None
    result.detail = outcome.registers or ""
    message = outcome.message
    if outcome.kind is OutcomeKind.INTERRUPTED:
        return  # Ctrl-C or SIGTERM for the fuzzer itself: the campaign stops (not a finding)
    if outcome.kind not in ALLOWED_KINDS:
        result.failure = f"outcome {outcome.kind.value}: {message}"
    elif not message.strip() or "\n" in message:
        result.failure = f"{outcome.kind.value} outcome with a bad message: {message!r}"
    elif not STATUS_OF_KIND[outcome.kind](outcome.exit_status):
        result.failure = f"{outcome.kind.value} outcome with exit status {outcome.exit_status}"
    elif ran > limits.timeout + limits.hang_slack:
        result.failure = f"run took {ran:.1f} s with a {limits.timeout} s timeout ({message})"
    elif closed is not None and closed > limits.timeout + limits.hang_slack:
        result.failure = (
            f"the run and the machine's close took {closed:.1f} s with a {limits.timeout} s "
            f"timeout ({message})"
        )
