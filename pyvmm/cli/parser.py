"""The command line's grammar: argparse, the value parsers and the --help texts."""

from __future__ import annotations

import argparse

from pyvmm import __version__
from pyvmm.errors import UsageError
from pyvmm.loaders.entry import CpuMode
from pyvmm.memory.size import format_size, parse_byte_count, parse_ram_size

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

DEFAULT_MEMORY = "128M"  # QEMU's default
UNWRAPPED_WIDTH = 80  # the width of formatters that wrap no text (see _Parser)

# Both commands that build a machine read IMAGE the same way: both --help texts say how.
IMAGE_FORMATS = """\
image formats, found by their contents: a multiboot (v1) kernel, the format
qemu -kernel boots (a multiboot header in the first 8 KiB; --multiboot insists
on one), is entered as QEMU enters it, in 32-bit protected mode with the
multiboot information (--append, --initrd); a Linux kernel (a bzImage, by its
"HdrS" setup header, or an ELF64 vmlinux, by Linux's ELF notes) is entered
through the boot protocol's 64-bit entry with a zero page, --append as its
command line and --initrd as its initrd; else an ELF32 file starts in
protected mode and an ELF64 file in long mode, at their own addresses; anything
else is a flat binary (real mode at 0x7c00 by default, like a boot sector;
--mode and --load-addr choose, 0x100000 in the other modes). IMAGE is a file
(not a pipe or a device). A flat binary and each --initrd module are copied
whole into guest RAM, so neither can be larger than -m; an ELF file can (only
its segments are loaded).
"""

BOOT_EPILOG = """\
how a run ends (outcome: exit status); odd statuses belong to debug-exit alone:
  halted          0     no vCPU can run again: each executed HLT with
                        interrupts off (IF=0) or waits for INIT/SIPI (with
                        --kernel-irqchip off: the guest executed HLT)
  power-off       0     the guest turned the machine off (ACPI S5 through
                        PM1a_CNT, or KVM's shutdown event), as QEMU exits 0
  system-event    10    the guest reported a crash to KVM
                        (KVM_EXIT_SYSTEM_EVENT)
  reset           0     the guest reset the machine: keyboard controller (0xfe
                        to port 0x64), port 0x92 or port 0xcf9 (0, as qemu
                        -no-reboot exits; --reboot restarts the machine)
  debug-exit      N     the guest wrote v to the debug-exit port 0xf4:
                        N = (v << 1) | 1, as QEMU's isa-debug-exit (always odd;
                        a write of 0 gives 1, which harnesses read as PASS)
  triple-fault    4     the guest faulted while delivering a double fault
  internal-error  6     KVM could not go on, e.g. it could not emulate an
                        instruction (named, with where it was)
  fail-entry      8     KVM could not enter the guest (the reason is printed)
  unhandled-exception
                  12    a real-mode guest took a CPU exception (e.g. #UD) at a
                        vector it never set: pyvmm has no BIOS, and a BIOS's
                        bare iret would run the faulting instruction forever
  quit            0     the monitor's quit command ended the run (--monitor), as
                        QEMU's quit exits 0
  timeout         124   --timeout expired (as timeout(1) reports it)
  exit-limit      126   --max-exits reached
  interrupted     -     Ctrl-C, SIGTERM or SIGHUP: pyvmm cleans up, then ends
                        by the same signal (a shell shows 128+N: 130, 143, 129)
  vmm-error       70    pyvmm itself failed (no usable /dev/kvm, a KVM call
                        failed, an exit it cannot handle)
  bad input       2     bad usage or input (unreadable or malformed image,
                        bad -m, ...): nothing ran
An abnormal end prints its reason, the guest's registers and the last lines
of its console on stderr (-v: more lines).

no BIOS: in real mode every IVT vector the guest did not set points at a
pyvmm stub, so `int 0x10` returns at once and the guest runs on; at the end
pyvmm names each BIOS service called (vector, AH, where, how often) on stderr.
VGA: --vga auto shows the 80x25 VGA text screen (0xb8000) on stderr at the
end when the guest wrote to it, --vga text always, --vga none never.

monitor: --monitor unix:PATH listens on PATH (QEMU's -monitor
unix:PATH,server,nowait; pyvmm is the server and never waits) for one client
at a time, e.g. socat - UNIX-CONNECT:PATH, with QEMU's HMP commands:
  balloon N       ask the guest to keep N MiB (the balloon's num_pages becomes
                  (RAM - N MiB) / 4 KiB; needs --balloon)
  info balloon    balloon: actual=<MiB>, the guest's memory less its balloon
  info pic        the PICs' registers, and the IOAPIC's redirection table when
                  it is pyvmm's (the default split irqchip)
  help            the commands
  quit            end the run (outcome quit, status 0)
The socket file is removed when the run ends.

console: COM1 is this terminal. Output goes to stdout (--console-rate caps
it); keystrokes go to the guest unechoed, one by one, through a buffer of
--input-buffer bytes (pyvmm stops reading stdin while it is full); with
--console virtio they go to the virtio-console instead, and COM1 gets none.
Ctrl-C still ends the run, and the terminal is restored on every end.

{image_formats}
QEMU options: pyvmm accepts those whose meaning is already its behaviour,
translates a few, and refuses the rest with a one-line hint (status 2):
{qemu_options}
"""


MEMMAP_EPILOG = """\
exit status: 0 when the report was printed (the guest's own ending is its
first line), 70 when pyvmm failed, 2 for bad usage or input.

The machine options and QEMU's spellings are those of pyvmm boot (see
pyvmm boot --help); the gdb stub, the trace and the statistics are boot's only.

{image_formats}
example:
  pyvmm memmap --mode long guests/vmem64.bin --translate 0xffff800012345010
"""

HOST_EPILOG = """\
exit status: 0 when the findings were printed, 70 when the probe could not run
(no usable /dev/kvm). The probe takes well under a few seconds, each guest
with a deadline; a file in the cache that does not parse, or another host's,
is ignored and written anew.
"""

DEMO_EPILOG = """\
exit status: 0 when the evidence supports the property, 4 when it does not,
2 when the demo cannot run (no usable /dev/kvm, a guest that did not start,
something it needs is missing), as for a mistyped command line.
The demos' guests and kernels ship with pyvmm: they run from any directory.
What two of them need beyond pyvmm:
  binary-translation  the unicorn package: pip install unicorn
                      (pyvmm's extra: pip install '.[demos]' in a checkout)
  containers          root, and an OCI runtime: apt-get install crun, or runc
                      where crun refuses the host's cgroups (hybrid mode)
"""

# pyvmm.demos.DEMOS's names, in its order (a unit test keeps them equal); listed
# here so that parsing a command line does not import the demos.
DEMO_NAMES = [
    "equivalence",
    "efficiency",
    "isolation",
    "paravirtualization",
    "binary-translation",
    "sensitive-instructions",
    "containers",
]


def _boot_epilog() -> str:
    from pyvmm.cli.qemu_options import describe as describe_qemu_options

    return BOOT_EPILOG.replace("{image_formats}", IMAGE_FORMATS).replace(
        "{qemu_options}", describe_qemu_options()
    )


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 2, and no abbreviations.

    An abbreviation would make `-s` (gdb) mean `-smp` where a command has no `-s`,
    and make a new option change what an old abbreviation means. `commands` maps
    each command name to its parser (`pyvmm.cli.arguments` reads their options).
    `epilog` may be a function that returns the text: it is called for --help only
    (pyvmm boot's renders the QEMU options' table, which a run does not need).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def format_help(self) -> str:
        epilog: str | Callable[[], str] | None = self.epilog
        if callable(epilog):
            self.epilog = epilog()
        return super().format_help()

    # argparse makes a formatter for each add_argument (to check the metavar) and
    # for add_subparsers (to name the commands' prog); a formatter asks shutil for
    # the terminal's width, and shutil imports the compression modules. No text
    # is wrapped there: those formatters get a fixed width, the others (--help,
    # --version) the terminal's.
    _unwrapped = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        if self._unwrapped:
            return self.formatter_class(prog=self.prog, width=UNWRAPPED_WIDTH)
        return super()._get_formatter()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        self._unwrapped = True
        try:
            return super().add_argument(*args, **kwargs)
        finally:
            self._unwrapped = False

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._unwrapped = True
        try:
            return super().add_subparsers(**kwargs)
        finally:
            self._unwrapped = False

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse's, but an argument left over is the command's error, under its name.

        argparse reports leftovers from the top-level parser (`pyvmm: unrecognized
        arguments`), although the command's parser is the one that had no place for them.
        """
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self.commands.get(getattr(parsed, "command", None) or "")
            if command is None:
                self.error(f"unexpected argument {' '.join(extras)}")
            positionals = [
                action for action in command._actions if not action.option_strings
            ]  # argparse keeps them private; option_strings, dest and metavar are stable
            taken = ", ".join(
                f"{action.metavar} is {getattr(parsed, action.dest)!r}"
                for action in positionals
                if getattr(parsed, action.dest, None) is not None
            )
            wants = (
                " and ".join(f"one {action.metavar}" for action in positionals) or "no arguments"
            )
            plural = "s" if len(extras) > 1 else ""
            command.error(
                f"unexpected argument{plural} {' '.join(extras)}: {command.prog} takes {wants}"
                + (f" ({taken})" if taken else "")
            )
        return parsed


def build_parser() -> _Parser:
    parser = _Parser(
        prog="pyvmm",
        description="A small, readable VMM on Linux KVM.",
        epilog="pyvmm COMMAND --help tells more; pyvmm boot IMAGE boots a guest.",
    )
    parser.add_argument("--version", action="version", version=f"pyvmm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    boot = commands.add_parser(
        "boot",
        help="boot a guest image",
        description="Boot IMAGE in a new VM with one vCPU (-smp N: N vCPUs); its serial\n"
        "port, COM1, is this terminal.",
        epilog=_boot_epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_machine_arguments(boot)
    boot.add_argument(
        "--input-buffer",
        type=_parse_buffer_size,
        default="64K",
        metavar="BYTES",
        help="most stdin bytes held for the guest, K/M suffixes allowed (default %(default)s; "
        "0: the guest gets no input)",
    )
    boot.add_argument(
        "--trace",
        nargs="?",
        const="all",
        metavar="KINDS",
        help="print one line per VM exit on stderr; --trace KINDS or --trace=KINDS keeps only "
        "those (comma-separated: io, mmio, hlt, shutdown, fail-entry, internal-error, "
        "system-event, irq, unknown)",
    )
    boot.add_argument(
        "--trace-file",
        metavar="FILE",
        help="write the trace to FILE, not stderr (implies --trace when it is not given)",
    )
    boot.add_argument(
        "--trace-format",
        choices=["text", "json"],
        help="trace line format (default text); needs --trace or --trace-file",
    )
    boot.add_argument(
        "--stats", action="store_true", help="print exit statistics and timings at the end"
    )
    boot.add_argument(
        "--vga",
        choices=["auto", "text", "none"],
        default="auto",
        help="show the guest's VGA text screen (0xb8000) on stderr when the run ends: auto "
        "(default) if the guest wrote to it, text always, none never (and not watched)",
    )
    boot.add_argument(
        "--reboot",
        action="store_true",
        help="when the guest resets the machine, start it again (a new machine, RAM zeroed, "
        "as at power-on) instead of ending the run: the opposite of qemu -no-reboot; "
        "--timeout and --max-exits count the whole session",
    )
    boot.add_argument(
        "--monitor",
        action="append",
        metavar="unix:PATH",
        help="a human monitor on the UNIX socket PATH, as QEMU's -monitor "
        "unix:PATH,server,nowait (those words are taken and change nothing): balloon N "
        "(the guest's memory target, MiB), info balloon, info pic, help, quit (see monitor "
        "below)",
    )
    boot.add_argument(
        "--gdb",
        metavar="tcp::PORT",
        help="let gdb attach on 127.0.0.1:PORT (tcp:HOST:PORT: on HOST) and drive the guest "
        "(gdb: target remote :PORT); the guest starts at once unless -S",
    )
    boot.add_argument(
        "-s", dest="gdb_default", action="store_true", help="shorthand for --gdb tcp::1234"
    )
    boot.add_argument(
        "-S",
        dest="gdb_stop",
        action="store_true",
        help="with --gdb or -s: wait for gdb before the first guest instruction (an error "
        "without them)",
    )

    memmap = commands.add_parser(
        "memmap",
        help="run a guest, then show its memory at every level",
        description="Run IMAGE until it ends, then print the machine's memory map, the\n"
        "guest's page-table mappings (guest virtual -> guest physical -> host virtual),\n"
        "and the whole chain down to host physical for each --translate address.\n"
        "The guest's serial output goes to stderr (-q: nowhere).",
        epilog=MEMMAP_EPILOG.replace("{image_formats}", IMAGE_FORMATS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_machine_arguments(memmap)
    memmap.add_argument(
        "--translate",
        action="append",
        default=[],
        type=_parse_address,
        metavar="GVA",
        help="show the full translation chain of this guest-virtual address (repeatable)",
    )
    memmap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    memmap.add_argument(
        "-q", "--quiet", action="store_true", help="discard the guest's serial output"
    )

    demo = commands.add_parser(
        "demo",
        help="show Popek & Goldberg's VMM properties and the rest of the course on real guests",
        description="Run a teaching demo; without NAME, list them. Popek and Goldberg's\n"
        "three properties: equivalence, efficiency, isolation (resource control).\n"
        "Then: paravirtualization (virtio against the emulated UART),\n"
        "binary-translation (native, direct execution, unicorn, emulated ring 0),\n"
        "sensitive-instructions (x86's virtualization holes, UMIP, a translator),\n"
        "containers (one workload as a process, an OCI container and a VM).",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "name",
        nargs="?",
        choices=DEMO_NAMES,
        metavar="NAME",
        help="the demo to run (the names above)",
    )
    demo.set_defaults(verbose=0)
    host = commands.add_parser(
        "host",
        help="probe what this host's KVM runs, and what pyvmm derives from it",
        description="Run tiny guests under KVM (once per host kernel; the findings are kept\n"
        "in $XDG_CACHE_HOME/pyvmm or ~/.cache/pyvmm) and say what this host's KVM does:\n"
        "whether KVM_SET_CPUID2 takes effect, which CPL0 instructions it cannot emulate,\n"
        "whether a CPL3 syscall reaches CPL0, whether RFLAGS.RF is honoured, how long a\n"
        "timer tick takes; then what pyvmm derives (the Linux command-line additions\n"
        "that hide what CPUID cannot, the SYSCALL repair, the timer scale).",
        epilog=HOST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    host.add_argument("--json", action="store_true", help="print the findings as JSON")
    host.add_argument(
        "--refresh", action="store_true", help="probe again, whatever the cache holds"
    )
    host.set_defaults(verbose=0)
    parser.commands = {"boot": boot, "memmap": memmap, "demo": demo, "host": host}
    return parser


def add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that describe a VM, shared by every command that builds one."""
    parser.add_argument(
        "image",
        metavar="IMAGE",
        help="multiboot kernel, Linux bzImage or vmlinux, ELF32 or ELF64 executable, or flat "
        "binary (see image formats "
        "below)",
    )
    parser.add_argument(
        "-m",
        "--memory",
        default=DEFAULT_MEMORY,
        metavar="MEM",
        help="guest RAM: plain MiB or with a K/M/G/T suffix (default %(default)s; at least "
        "2 MiB, at most the host's RAM)",
    )
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in CpuMode],
        help="CPU state at entry (default: real for flat binaries, from the ELF class for ELF "
        "files; a multiboot kernel takes protected only)",
    )
    parser.add_argument(
        "--load-addr",
        type=_parse_address,
        metavar="ADDR",
        help="guest-physical load address of a flat binary (default 0x7c00 in real mode, "
        "0x100000 otherwise; an error for ELF and multiboot images)",
    )
    parser.add_argument(
        "--timeout",
        type=_parse_timeout,
        metavar="SECONDS",
        help="stop the guest after this many seconds (exit status 124)",
    )
    parser.add_argument(
        "--max-exits",
        type=_parse_count,
        metavar="N",
        help="stop the guest after N VM exits of any one vCPU (exit status 126)",
    )
    parser.add_argument(
        "--console-rate",
        type=_parse_rate,
        metavar="BYTES",
        help="most console output per second, K/M suffixes allowed (default: no limit); "
        "output over it is dropped and counted",
    )
    parser.add_argument(
        "--append",
        "-append",
        metavar="ARGS",
        help="kernel command line: a multiboot kernel sees '<IMAGE> ARGS', a Linux kernel "
        "ARGS, as with QEMU (an error for other images)",
    )
    parser.add_argument(
        "--no-auto-append",
        action="store_true",
        help="boot a Linux kernel as given: without the options that hide, on this host, CPU "
        "features its KVM cannot run (noxsave clearcpuid=..., from the findings `pyvmm host` "
        "prints), added after --append by default, without hiding them in CPUID, and "
        "without the slowed PIT and the options that put the kernel's tick on it "
        "(noapictimer, tsc_deadline_timer cleared)",
    )
    parser.add_argument(
        "--initrd",
        "-initrd",
        metavar="FILES",
        help="a Linux kernel's initrd, or comma-separated files loaded as multiboot modules "
        "('FILE args' passes args; "
        "an error for other images)",
    )
    parser.add_argument(
        "--multiboot",
        action="store_true",
        help="boot IMAGE with the multiboot protocol (found by its header otherwise)",
    )
    parser.add_argument(
        "--format",
        choices=["linux", "multiboot", "elf", "flat"],
        help="insist on an image format instead of finding it by the contents: linux (the "
        "boot protocol, for a bzImage or an ELF64 vmlinux without Linux's notes), multiboot "
        "(as --multiboot), elf (a vmlinux as a plain ELF file), flat (any file as raw bytes)",
    )
    parser.add_argument(
        "-smp",
        dest="smp",
        type=_parse_cpus,
        default=1,
        metavar="N",
        help="number of vCPUs (default 1; 1 to 255, the xAPIC limit, and at most what "
        "this host's KVM allows, KVM_CAP_MAX_VCPUS; more than one needs KVM's LAPICs, "
        "so not --kernel-irqchip off)",
    )
    parser.add_argument(
        "--kernel-irqchip",
        choices=["on", "split", "off"],
        help="where the interrupt controllers are, as QEMU's -accel kvm,kernel-irqchip=: "
        "split (the default) puts the LAPICs in KVM and pyvmm's own PIC pair and IOAPIC in "
        "the VMM; on puts all of them in KVM (the default with --pit kernel, --ioeventfd "
        "on or virtio devices, whose PIT or irqfds need it). Either way hlt waits for an "
        "interrupt, and the run ends as halted once no vCPU can run again: each halted "
        "with IF=0 or waiting for INIT/SIPI. off: no interrupts at all, hlt ends the run "
        "at once; one vCPU only",
    )
    parser.add_argument(
        "--pit",
        choices=["user", "kernel"],
        help="the 8254 PIT at ports 0x40-0x43 and 0x61 (default: user, pyvmm's own, whose "
        "accesses exit and whose IRQ 0 a timer thread raises once the guest programs it; a "
        "tick the guest missed is dropped). kernel: KVM's in-kernel PIT (KVM_CREATE_PIT2, as "
        "QEMU and Firecracker use it), whose accesses do not exit and whose missed ticks "
        "KVM delivers later; needs KVM's whole irqchip, which it brings unless "
        "--kernel-irqchip says otherwise",
    )
    parser.add_argument(
        "--pit-scale",
        type=_parse_pit_scale,
        metavar="N",
        help="run the user PIT's clock N times slower than the host's, in its counts and "
        "its interrupts (1 to 1000; default 1; for a Linux kernel, what `pyvmm host` derives: on a "
        "host where one emulated timer tick costs more than a period, a kernel makes "
        "progress between slower ticks)",
    )
    parser.add_argument(
        "--testdev",
        action="store_true",
        help="add QEMU's pc-testdev (qemu -device pc-testdev), the test device of "
        "kvm-unit-tests: a scratch register at port 0xe0, a page flush at 0xe4, GSI 0-23 "
        "levels at ports 0x2000-0x2017, 64 KiB of MMIO memory at 0xff000000",
    )
    parser.add_argument(
        "--acpi",
        choices=["on", "off"],
        default="on",
        help="ACPI tables (RSDP, XSDT, FADT, MADT, DSDT...) and the PM timer and PM1 ports at "
        "0x600 (default on, as QEMU's; off: none, as -machine acpi=off; the MP tables stay)",
    )
    parser.add_argument(
        "--emulate",
        choices=["assist", "none"],
        default="assist",
        help="assist (default): pyvmm performs the few instructions KVM's emulator gives up "
        "on (int3, clac/stac, popcnt, fwait, fnstsw, fnclex, crc32, ldmxcsr/stmxcsr, "
        "movd/movq, pxor, cmpxchg16b: a host without VT-x/AMD-V emulates kernel code) and the "
        "guest goes on, and where `pyvmm host` finds a CPL3 syscall left at CPL3, pyvmm "
        "completes it (the SYSCALL repair); none: such a failure ends the run as "
        "internal-error, and no repair",
    )
    parser.add_argument(
        "--drive",
        action="append",
        metavar="file=PATH[,readonly=on]",
        help="a raw disk image as a virtio-blk disk (QEMU's -drive spelling; format=raw and "
        "if=virtio are the only choices): virtio-mmio at 0xfeb00200, IRQ 6",
    )
    parser.add_argument(
        "--console",
        choices=["serial", "virtio"],
        default="serial",
        help="virtio: also give the guest a virtio-console (virtio-mmio at 0xfeb00000, IRQ 5) "
        "whose output goes to this terminal like COM1's, and which gets the terminal's "
        "input instead of COM1 (default serial: COM1 only)",
    )
    parser.add_argument(
        "--virtio-rng",
        action="store_true",
        help="a virtio entropy device fed by the host's entropy, os.urandom "
        "(qemu -device virtio-rng-device): "
        "virtio-mmio at 0xfeb00400, IRQ 7",
    )
    parser.add_argument(
        "--balloon",
        action="store_true",
        help="a virtio memory balloon (qemu -device virtio-balloon-device): pages the guest "
        "inflates or reports free go back to the host; virtio-mmio at 0xfeb00600, IRQ 10",
    )
    parser.add_argument(
        "--ioeventfd",
        choices=["on", "off"],
        help="virtio notifications through ioeventfds and interrupts through irqfds, served by "
        "an I/O thread (QEMU's ioeventfd=on|off device property; default: on where KVM has "
        "them and the machine its irqchip); off: each notification is an MMIO exit served "
        "by the vCPU, each interrupt a KVM_IRQ_LINE",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say what the VMM does (-vv: more)"
    )


def check_combinations(args: argparse.Namespace) -> None:
    """Refuse options that would have no effect with the others given; settle the implied ones.

    An option that is accepted and then ignored misleads: each one here is
    either made to take effect or refused with a one-line UsageError (status 2).
    """
    prog = f"pyvmm {args.command}"
    if getattr(args, "memory", None) is not None:
        # Before the command runs, so that a refused -m is the command's usage error.
        from pyvmm.machine.ram_size import check_ram_size

        try:
            check_ram_size(parse_ram_size(args.memory), args.memory)
        except UsageError as error:
            raise UsageError(f"{prog}: {error}") from None
    if args.command == "boot":
        if args.gdb_stop and not (args.gdb or args.gdb_default):
            raise UsageError(
                f"{prog}: -S stops the guest for gdb: give --gdb tcp::PORT or -s with it"
            )
        if args.gdb and args.gdb_default:
            raise UsageError(f"{prog}: -s means --gdb tcp::1234: give one of -s and --gdb")
        if (args.gdb or args.gdb_default) and args.smp > 1:
            # The stub drives vCPU 0 alone (no gdb threads): the others would run unseen.
            raise UsageError(f"{prog}: the gdb stub debugs one vCPU: drop -smp {args.smp}")
        if (args.gdb or args.gdb_default) and args.reboot:
            # A reboot builds a new machine; the stub holds the first one's vCPU.
            raise UsageError(
                f"{prog}: the gdb stub debugs one machine, and --reboot builds a new one at "
                "each reset: give one of --reboot and --gdb"
            )
        # --monitor's PATH (None: no monitor), checked before anything runs.
        args.monitor_path = _monitor_path(prog, args.monitor) if args.monitor else None
        if args.trace is None and args.trace_file is not None:
            args.trace = "all"  # a trace file asks for a trace
        if args.trace_format is not None and args.trace is None:
            # A format alone is no request for a trace: with --stats it could be read as
            # the statistics' format, and a trace of every exit is too costly to start
            # on a guess.
            raise UsageError(
                f"{prog}: --trace-format is the format of the exit trace: "
                "add --trace (or --trace-file FILE)"
            )
        if args.trace_format is None:
            args.trace_format = "text"
    if args.command == "memmap" and args.quiet and args.console_rate is not None:
        raise UsageError(
            f"{prog}: -q discards the guest's output, so --console-rate has nothing to limit"
        )


def _monitor_path(prog: str, specs: list[str]) -> str | None:
    """--monitor's PATH (None: `none`), read before anything runs; one monitor only."""
    if len(specs) > 1:
        raise UsageError(f"{prog}: --monitor: pyvmm has one monitor, not {len(specs)}")
    from pyvmm.machine.monitor import parse_monitor

    try:
        return parse_monitor(specs[0])
    except UsageError as error:
        raise UsageError(f"{prog}: {error}") from None


def _parse_address(text: str) -> int:
    for base in (0, 10):  # 0x7c00 and 31744; also 0100, which int(..., 0) refuses
        try:
            value = int(text, base)
            break
        except ValueError:
            continue
    else:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an address: give a number (0x for hexadecimal)"
        )
    if value < 0:
        raise argparse.ArgumentTypeError(f"address '{text}' is negative")
    if value >= 1 << 64:
        raise argparse.ArgumentTypeError(f"address '{text}' is outside the 64-bit space")
    return value


def _parse_cpus(text: str) -> int:
    # QEMU also accepts "-smp cpus=N"; the plain count is what every guide uses.
    value = text.removeprefix("cpus=")
    if "," in value or "=" in value:
        raise argparse.ArgumentTypeError(
            f"'{text}': pyvmm's -smp takes a number of vCPUs only (no sockets, cores, "
            "threads or maxcpus: the vCPUs are one package of single-thread cores)"
        )
    return _positive_integer(value, text, "vCPUs", "a machine needs at least one vCPU")


def _parse_pit_scale(text: str) -> int:
    from pyvmm.machine.pit import MAX_PIT_SCALE

    value = _positive_integer(text, text, "times", "1 is a PIT at its programmed rate")
    if value > MAX_PIT_SCALE:
        raise argparse.ArgumentTypeError(f"{text} is more than {MAX_PIT_SCALE}")
    return value


def _parse_count(text: str) -> int:
    return _positive_integer(text, text, "exits", "the guest could not run at all")


def _positive_integer(value: str, text: str, unit: str, why_not_zero: str) -> int:
    if not value.isascii() or not value.removeprefix("-").isdecimal():
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of {unit}")
    if int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not positive: {why_not_zero}")
    return int(value)


def _byte_count(text: str) -> int:
    # Plain numbers are bytes here (not MiB as for -m): "1000" means 1000 bytes.
    try:
        return parse_byte_count(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parse_rate(text: str) -> int:
    value = _byte_count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text} is not positive: the rate is at least 1 byte/s (leave --console-rate "
            "out for no limit)"
        )
    return value


MAX_INPUT_BUFFER = 1 << 30  # the buffer is pyvmm's own memory, held for the whole run


def _parse_buffer_size(text: str) -> int:
    value = _byte_count(text)
    if value > MAX_INPUT_BUFFER:
        raise argparse.ArgumentTypeError(
            f"{text} is more than {format_size(MAX_INPUT_BUFFER)}, the most stdin pyvmm holds "
            "for the guest (in its own memory)"
        )
    return value


# setitimer(2) through Python: Python holds the time as 64-bit nanoseconds, so 2**63 ns
# (about 292 years) is the longest alarm it can set; a longer one raises OverflowError.
MAX_TIMEOUT = 2**63 // 10**9


def _parse_timeout(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds")
    negative = value < 0 or text.strip().startswith("-")
    if negative or (value == 0 and not any(digit in "123456789" for digit in text)):
        raise argparse.ArgumentTypeError(
            f"{text} is not positive: give the seconds the guest may run "
            "(leave --timeout out for no limit)"
        )
    if value == 0:  # 1e-400: a positive number that a float holds as 0
        raise argparse.ArgumentTypeError(f"{text} is too short: it is 0 seconds as a float")
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text} is too long: at most {MAX_TIMEOUT} seconds (about 292 years), the "
            "longest alarm the run's timer can hold (setitimer, counted in 64-bit "
            "nanoseconds); leave --timeout out for no limit"
        )
    return value
