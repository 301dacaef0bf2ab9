"""`pyvmm boot`: build the machine the options describe, run it, report how it ended."""

from __future__ import annotations

import contextlib
import os
import sys

from pyvmm.cli.report import (
    closed_console_outcome,
    collect_legacy_pc,
    finish_guest_line,
    log_memory_map,
    log_run_summary,
    report_end,
    report_legacy_pc,
    stop_notes,
)
from pyvmm.errors import Log, UsageError
from pyvmm.loaders.entry import CpuMode
from pyvmm.memory.size import parse_ram_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any, TextIO

    from pyvmm.console.input import InputBuffer
    from pyvmm.console.output import ConsoleWriter
    from pyvmm.machine.builder import Machine
    from pyvmm.machine.early_vm import EarlyVm
    from pyvmm.machine.monitor import MachineControl, Monitor
    from pyvmm.machine.outcome import RunOutcome
    from pyvmm.machine.virtio import Drive


def build_from_args(
    args: argparse.Namespace, console: TextIO | None, console_input: InputBuffer | None = None
) -> Machine:
    """Build the machine the shared options describe; console None discards output.

    When the console's reader goes away (EPIPE), the run ends as `interrupted`
    by SIGPIPE, as a program writing to a closed pipe ends.
    """
    from pyvmm.kvm.system import DEFAULT_KVM_PATH
    from pyvmm.loaders import boots_as_linux, read_image
    from pyvmm.machine.early_vm import irqchip_mode, start_vm
    from pyvmm.machine.ram_size import check_ram_size
    from pyvmm.shipped import resolve_image

    ram_size = parse_ram_size(args.memory)
    check_ram_size(ram_size, args.memory)  # before anything else: the message quotes -m
    image = read_image(resolve_image(args.image), ram_size)
    cmdline = args.image if args.append is None else f"{args.image} {args.append}"
    modules = tuple(
        (entry, read_image(resolve_image(entry.split()[0]), ram_size, what="module"))
        for entry in (args.initrd.split(",") if args.initrd else [])
        if entry.strip()
    )
    # Lets tests (and odd hosts) point pyvmm at another KVM device node.
    kvm_path = os.environ.get("PYVMM_KVM_PATH", DEFAULT_KVM_PATH)
    append, hide_cpuid, host_line, pit_scale = args.append, (), None, args.pit_scale
    if not getattr(args, "no_auto_append", False) and boots_as_linux(
        image, getattr(args, "format", None), args.multiboot
    ):
        # Before the VM: the boot timer counts from its creation, not from the probe.
        append, hide_cpuid, host_line, pit_scale = adapt_linux_to_host(
            image, args.append, kvm_path, args.pit, args.pit_scale
        )
    pit = args.pit or "user"
    ioeventfd = None if getattr(args, "ioeventfd", None) is None else args.ioeventfd == "on"
    virtio = bool(
        getattr(args, "console", "serial") == "virtio"
        or getattr(args, "drive", None)
        or getattr(args, "virtio_rng", False)
        or getattr(args, "balloon", False)
    )
    mode = irqchip_mode(args.kernel_irqchip, pit == "kernel", ioeventfd, virtio)
    # The VM and its irqchip first: the host's wait after making the irqchip
    # then passes while the rest of pyvmm is imported (see early_vm.py).
    vga_text = getattr(args, "vga", "none") != "none"  # only `boot` shows the screen
    kernel_pit = pit == "kernel" and mode == "on"
    early = start_vm(kvm_path, mode != "off", ram_size, vga_text, kernel_pit, mode == "split")
    try:
        machine = _build(
            args, console, console_input, ram_size, image, cmdline, modules, early,
            append, hide_cpuid, pit, pit_scale or 1,
        )  # fmt: skip
    except BaseException:
        early.close()  # idempotent: build_machine may have closed it already
        raise
    if host_line is not None and console is not None:  # said once the loader took the kernel
        print(host_line, file=sys.stderr)
    return machine


def _build(
    args: argparse.Namespace,
    console: TextIO | None,
    console_input: InputBuffer | None,
    ram_size: int,
    image: bytes,
    cmdline: str,
    modules: tuple[tuple[str, bytes], ...],
    early: EarlyVm,
    append: str | None,
    hide_cpuid: tuple[str, ...],
    pit: str,
    pit_scale: int,
) -> Machine:
    from pyvmm.console.output import ConsoleWriter
    from pyvmm.machine.builder import MachineConfig, build_machine

    writer = ConsoleWriter(
        -1 if console is None else console.fileno(),
        rate_limit=args.console_rate,
        name=None if console is None else _stream_name(console),
    )
    config = MachineConfig(
        image=image,
        ram_size=ram_size,
        console=writer,
        console_input=console_input,
        max_exits=args.max_exits,
        mode=CpuMode(args.mode) if args.mode else None,
        load_gpa=args.load_addr,
        cpus=args.smp,
        cmdline=cmdline,
        modules=modules,
        append=append,
        force_multiboot=args.multiboot,
        image_format=getattr(args, "format", None),
        irqchip=args.kernel_irqchip,
        vga_text=early.watches_vga,
        acpi=args.acpi == "on",
        emulate=getattr(args, "emulate", "assist") != "none",
        testdev=args.testdev,
        virtio_console=getattr(args, "console", "serial") == "virtio",
        drive=_drive(args),
        virtio_rng=getattr(args, "virtio_rng", False),
        balloon=getattr(args, "balloon", False),
        ioeventfd=None if getattr(args, "ioeventfd", None) is None else args.ioeventfd == "on",
        kvm_path=early.kvm_path,
        hide_cpuid=hide_cpuid,
        pit=pit,
        pit_scale=pit_scale,
    )
    machine = build_machine(config, early)
    # The write fails inside a vCPU's exit dispatch, maybe in a vCPU thread:
    # request_stop is made for that (debug-exit ends runs the same way).
    writer.on_reader_gone = lambda: machine.group.request_stop(closed_console_outcome(writer))
    return machine


def adapt_linux_to_host(
    image: bytes,
    append: str | None,
    kvm_path: str,
    pit: str | None = None,
    pit_scale: int | None = None,
) -> tuple[str | None, tuple[str, ...], str | None, int]:
    """A Linux kernel's command line, hidden CPUID features and PIT scale for this
    host (linux_host.py), and the line that says what changed (None: nothing).
    A probe that fails is said in that line, and the kernel boots as given.
    `pit_scale` (--pit-scale) wins over the probe's; with `pit` "kernel"
    (KVM's PIT, which cannot be slowed) the scale is 1."""
    from pyvmm.arch.x86_64.host_probe import ProbeError
    from pyvmm.errors import KvmError
    from pyvmm.machine.linux_host import adapt_to_host, describe_adaptation

    if pit == "kernel":
        pit_scale = 1
    try:
        adaptation = adapt_to_host(image, append, kvm_path, pit_scale)
    except (ProbeError, KvmError) as error:
        line = f"pyvmm: the host probe failed ({error}): nothing added"
        return append, (), line, pit_scale or 1
    return (
        adaptation.append,
        adaptation.hidden,
        describe_adaptation(adaptation),
        adaptation.pit_scale,
    )


def _drive(args: argparse.Namespace) -> Drive | None:
    drives = getattr(args, "drive", None) or []
    if not drives:
        return None
    if len(drives) > 1:
        raise UsageError(f"--drive: pyvmm has one virtio-blk disk, not {len(drives)}")
    from pyvmm.machine.virtio import Drive

    return Drive.parse(drives[0])


def _stream_name(stream: TextIO) -> str:
    for name in ("stdout", "stderr"):
        if stream is getattr(sys, name):
            return name
    return getattr(stream, "name", None) or f"fd {stream.fileno()}"


def run_boot(args: argparse.Namespace) -> RunOutcome:
    categories = None
    if args.trace:
        from pyvmm.observe.trace import parse_categories

        categories = parse_categories(args.trace)
    gdb_spec = args.gdb or ("tcp::1234" if args.gdb_default else None)
    gdb_address: tuple[str, int] | None = None
    if gdb_spec is not None:
        from pyvmm.gdb.server import parse_gdb_address

        gdb_address = parse_gdb_address(gdb_spec)  # a bad address, before the VM is built
    with contextlib.ExitStack() as files:
        monitor = open_monitor(files, args)  # a PATH it cannot take, before anything runs
        console_input = open_console_input(files, args.input_buffer)
        machine = files.enter_context(build_from_args(args, sys.stdout, console_input))
        if monitor is not None:
            monitor.attach(monitor_control(machine))
            files.callback(monitor.close)  # its thread ends before the machine is closed
        log_memory_map(machine)
        observers: list[Any] = []
        if categories is not None:
            from pyvmm.observe.trace import ExitTracer

            stream = files.enter_context(open_trace_file(args.trace_file))
            observers.append(
                ExitTracer(
                    machine.vcpu,
                    machine.memory,
                    stream,
                    categories,
                    json_lines=args.trace_format == "json",
                    max_phys_bits=machine.max_phys_bits,
                )
            )
        statistics = None
        if args.stats:
            from pyvmm.observe.exit_stats import ExitStatistics

            statistics = ExitStatistics()
            observers.append(statistics)
        observer = fan_out(observers)
        if gdb_address is not None:
            from pyvmm.gdb.server import GdbServer
            from pyvmm.kvm.system import DEFAULT_KVM_PATH

            kvm_path = os.environ.get("PYVMM_KVM_PATH", DEFAULT_KVM_PATH)
            server = GdbServer(machine, gdb_address, kvm_path)
            outcome = server.serve(
                stop_at_start=args.gdb_stop, timeout=args.timeout, observer=observer
            )
        elif args.reboot:
            machine, outcome = run_rebooting(
                machine, args, observer, lambda new: retarget(observers, monitor, new)
            )
            files.callback(machine.close)  # the last machine; run_rebooting closed the others
        else:
            outcome = machine.run(timeout=args.timeout, observer=observer)
        notes = stop_notes(machine, outcome)
        log_run_summary(machine, outcome)
        legacy_pc = collect_legacy_pc(machine, args.vga)
    report_end(outcome, machine.console, args.verbose, notes)
    report_reset(outcome, machine.console)
    report_legacy_pc(legacy_pc, console=machine.console)
    if statistics is not None:
        finish_guest_line(machine.console)
        print(statistics.summary(), file=sys.stderr)
        run_seconds = statistics.run_seconds
        assists = machine.loop.assists
        if assists:
            seconds = sum(loop.assist_ns for loop in machine.group.loops) / 1e9
            print(format_assists(assists, seconds, run_seconds), file=sys.stderr)
        repairs = [loop.syscall_repair for loop in machine.group.loops if loop.syscall_repair]
        if repairs:  # this host needs them (pyvmm host)
            seconds = sum(each.ns for each in repairs) / 1e9
            count = sum(each.count for each in repairs)
            print(f"syscall repairs: {count}{_share(seconds, run_seconds)}", file=sys.stderr)
        split = machine.split_irqchip
        if split is not None and (split.msis or split.extints or split.undelivered):
            print(split.describe(), file=sys.stderr)
        if machine.pit is not None and machine.pit.interrupts:
            from pyvmm.machine.pit import describe_pit

            print(describe_pit(machine.pit, machine.config), file=sys.stderr)
        if machine.boot_timer is not None:
            from pyvmm.devices.boot_timer import describe_boot_time

            boot_time = describe_boot_time(machine.boot_timer)
            if boot_time is not None:
                print(boot_time, file=sys.stderr)
    return outcome


def _share(seconds: float, run_seconds: float | None) -> str:
    """ ", 0.012 s, 0.03 % of the run": what part of the run a piece of pyvmm's work took."""
    if run_seconds is None or run_seconds <= 0:
        return f", {seconds:.3f} s"
    return f", {seconds:.3f} s, {100 * seconds / run_seconds:.2f} % of the run"


def format_assists(
    assists: dict[str, int], seconds: float | None = None, run_seconds: float | None = None
) -> str:
    """--stats: the instructions pyvmm performed for KVM's emulator, by mnemonic, and the
    time they took (`seconds`) as a part of the run's (`run_seconds`)."""
    total = f"emulation assists: {sum(assists.values())}"
    if seconds is not None:
        total += _share(seconds, run_seconds)
    lines = [total]
    for mnemonic, count in sorted(assists.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {mnemonic:<26} {count:>10}")
    return "\n".join(lines)


def fan_out(observers: list[Any]) -> Any:
    """The one observer that shows each exit to every one of `observers` (None: no one)."""
    if len(observers) <= 1:
        return observers[0] if observers else None
    from pyvmm.observe.exit_stats import FanOut

    return FanOut(*observers)


def run_rebooting(
    machine: Machine,
    args: argparse.Namespace,
    observer: Any,
    on_reboot: Callable[[Machine], None],
) -> tuple[Machine, RunOutcome]:
    """--reboot: run `machine`; each time the guest resets it, build it again and run the new one.

    A reboot is a reset: a new machine from the same MachineConfig (the
    image as read at the start, the same console and input), RAM zeroed and
    every device at its power-on state, vCPU 0 at the entry point again,
    except what a PC's battery keeps: the CMOS and the RTC's time, which
    carry over as the guest left them.
    The limits hold for the whole session, not for each boot: --timeout
    counts from the first boot, --max-exits counts each vCPU's exits over
    every boot, so a guest that resets in a loop still ends by them (or by
    Ctrl-C). Returns the last machine, open, and how the session ended; the
    machines before it are closed. `on_reboot(new)` is called before a new
    machine runs.
    """
    import time

    from pyvmm.console.output import ConsoleWriter
    from pyvmm.machine.builder import build_machine
    from pyvmm.machine.outcome import OutcomeKind, exit_limit_reached, timed_out

    log = Log("pyvmm")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    exits = [0] * len(machine.group.loops)  # each vCPU's exits in the boots so far
    boots = 1
    left = args.timeout
    while True:
        outcome = machine.run(timeout=left, observer=observer)
        if outcome.kind is not OutcomeKind.RESET:
            break
        for index, loop in enumerate(machine.group.loops):
            exits[index] += loop.exit_count
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            outcome = timed_out(args.timeout)
            break
        config = machine.config
        assert config is not None  # set by build_machine
        if machine.rtc is not None:  # the battery keeps the CMOS and the clock
            config = config.replace(cmos=machine.rtc.battery_backed())
        log.info("%s: rebooting (--reboot), boot %d", outcome.message, boots + 1)
        machine.close()
        machine = build_machine(config)
        try:
            writer = config.console
            if isinstance(writer, ConsoleWriter):
                writer.on_reader_gone = _stop_on_closed_console(machine, writer)
            if args.max_exits is not None:
                for index, loop in enumerate(machine.group.loops):
                    loop.max_exits = args.max_exits - exits[index]
            on_reboot(machine)
        except BaseException:
            machine.close()
            raise
        boots += 1
    if boots > 1:
        message = outcome.message
        if outcome.kind is OutcomeKind.TIMEOUT:
            message = timed_out(args.timeout).message  # the session's, not the last boot's
        elif outcome.kind is OutcomeKind.EXIT_LIMIT and args.max_exits is not None:
            message = exit_limit_reached(args.max_exits).message
        times = "once" if boots == 2 else f"{boots - 1} times"
        restarted = f"boot {boots}: --reboot restarted the machine {times}"
        outcome = outcome.with_message(f"{message} ({restarted})")
    return machine, outcome


def _stop_on_closed_console(machine: Machine, writer: ConsoleWriter) -> Callable[[], None]:
    return lambda: machine.group.request_stop(closed_console_outcome(writer))


def open_monitor(resources: contextlib.ExitStack, args: argparse.Namespace) -> Monitor | None:
    """--monitor unix:PATH: the socket, bound and listening (served once a machine is attached)."""
    path = getattr(args, "monitor_path", None)
    if path is None:
        return None
    from pyvmm.machine.monitor import Monitor  # imported with --monitor only

    return resources.enter_context(Monitor.listen(path, args.monitor[0]))


def monitor_control(machine: Machine) -> MachineControl:
    from pyvmm.machine.monitor import MachineControl

    return MachineControl(machine)


def retarget(observers: list[Any], monitor: Monitor | None, machine: Machine) -> None:
    """After a reboot, the trace and the monitor work on the new machine."""
    retarget_tracers(observers, machine)
    if monitor is not None:
        monitor.attach(monitor_control(machine))


def retarget_tracers(observers: list[Any], machine: Machine) -> None:
    """After a reboot, the exit trace reads the new machine's vCPU and memory."""
    from pyvmm.observe.trace import ExitTracer

    for each in observers:
        if isinstance(each, ExitTracer):
            each.vcpu, each.memory = machine.vcpu, machine.memory
            each.max_phys_bits = machine.max_phys_bits


def report_reset(outcome: RunOutcome, console: object) -> None:
    """A reset (no --reboot), a power-off, a quit or a hopeless `hlt` ended the run: say so, once.

    They are normal ends (no register dump), but not silent ones like `hlt`:
    the line says which register the guest used, or that the monitor's quit
    (--monitor) ended the run.
    """
    from pyvmm.machine.outcome import HALTED_WAITING, OutcomeKind

    if outcome.kind is OutcomeKind.RESET:
        ending = ": the run ends, as with qemu -no-reboot (--reboot restarts the machine)"
    elif outcome.kind is OutcomeKind.POWER_OFF:
        ending = ": the run ends, as QEMU exits when its guest powers off"
    elif outcome.kind is OutcomeKind.QUIT:
        ending = " (status 0, as QEMU exits on quit)"
    elif outcome.kind is OutcomeKind.HALTED and outcome.message == HALTED_WAITING:
        ending = ""  # a normal end, but not what a guest that enabled interrupts wanted
    else:
        return
    finish_guest_line(console)
    print(f"pyvmm: {outcome.message}{ending}", file=sys.stderr)


def open_console_input(resources: contextlib.ExitStack, capacity: int) -> InputBuffer | None:
    """stdin feeds COM1 for the run; the terminal mode and the reader end with it."""
    from pyvmm.console.input import InputBuffer, StdinReader, guest_terminal, readable_input

    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return None
    if capacity == 0 or not readable_input(fd):
        return None
    buffer = InputBuffer(capacity)
    resources.enter_context(guest_terminal(fd))
    resources.enter_context(StdinReader(fd, buffer))
    return buffer


def open_trace_file(path: str | None) -> TextIO:
    """The trace goes to stderr by default: stdout is the guest's console."""
    if path is None:
        return contextlib.nullcontext(sys.stderr)  # type: ignore[return-value]
    try:
        return open(path, "w", buffering=1)
    except OSError as error:
        raise UsageError(f"cannot write trace file '{path}': {error.strerror}") from None
