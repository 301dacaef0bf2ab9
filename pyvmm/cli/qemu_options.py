"""QEMU's options, as people who run `qemu-system-x86_64 -kernel` type them: the one table.

pyvmm's command line reads like QEMU's where it can (`-m`, `-smp`, `-append`,
`-initrd`, `-s`, `-S`, `--gdb tcp::PORT`, the debug-exit port). Everything else
a QEMU user types out of habit is in `QEMU_OPTIONS`, and each entry does one of
three things, decided by its value:

- **accepted**: its meaning is already what pyvmm does (`-enable-kvm`,
  `-serial stdio`, `-no-reboot`...): it is dropped, silently;
- **translated**: it becomes the pyvmm option that means the same
  (`-gdb DEV` is `--gdb DEV`, `-machine acpi=off` is `--acpi off`;
  `-nographic` and `-display none` are `--vga none`, no screen, and
  `-display curses` is `--vga text`: the VGA text screen, shown at the end of
  the run);
- **refused**: one line says what to do instead, or that pyvmm lacks it, and
  the command ends with status 2 before anything runs (`-kernel IMAGE`,
  `-hda`, `-bios`...).

QEMU also takes every option with two dashes (`--nographic`); so does pyvmm,
unless the double-dash name is a pyvmm option of its own (`--trace` is
pyvmm's exit trace, `-trace` QEMU's trace events).

The table is data: `describe()` renders it for `pyvmm boot --help`, and the
README's table of QEMU options is the same list.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pyvmm.errors import UsageError


@dataclass(frozen=True)
class CommandContext:
    """What a handler needs to know about the command it translates for.

    `prog` names it in messages ("pyvmm boot"); `options` holds every option
    string the command accepts, so that a translation is only made to an option
    the command has (`-gdb` becomes `--gdb` for `pyvmm boot`, not for `memmap`).
    """

    prog: str
    options: frozenset[str]


Handler = Callable[[str, str | None, CommandContext], list[str]]


@dataclass(frozen=True)
class QemuOption:
    """One QEMU option: its names, its value's metavar (None: it takes none), what pyvmm does.

    `handle(name, value, context)` (name: which of `names` was typed) returns the
    pyvmm arguments that replace it (empty: accepted and dropped) or raises
    UsageError with the one-line hint. For the documentation, `accepts` lists
    the forms dropped silently ("FORM (note); FORM"), `becomes` the translations
    ("QEMU -> pyvmm; QEMU -> pyvmm"), and `otherwise` why anything else is refused.
    """

    names: tuple[str, ...]
    value: str | None
    handle: Handler
    accepts: str = ""
    becomes: str = ""
    otherwise: str = ""


def refuse(context: CommandContext, what: str, why: str) -> UsageError:
    """The one-line refusal: `pyvmm boot: cannot use -hda disk.img: pyvmm has no disks: ...`.

    It says "cannot use" first: the status is 2 and nothing runs, so the line
    must not read like a note on an option that was taken.
    """
    return UsageError(f"{context.prog}: cannot use {what}: {why}")


def accepted(name: str, value: str | None, context: CommandContext) -> list[str]:
    return []


def refused(why: str) -> Handler:
    """Always a refusal; `why` may name the option itself as `{name}` (else `refuse` words it).

    A `why` that names the option must itself read as a refusal ("{name} is
    not a pyvmm option: ..."). The value may be None: the option is refused
    whatever it would have been given.
    """

    def handle(name: str, value: str | None, context: CommandContext) -> list[str]:
        if "{name}" in why:
            raise UsageError(f"{context.prog}: {why.format(name=name)}")
        raise refuse(context, name if value is None else f"{name} {value}", why)

    return handle


def accepted_values(values: Iterable[str], otherwise: str) -> Handler:
    """Accept `NAME VALUE` for the listed values; refuse any other with `otherwise`."""
    allowed = frozenset(values)

    def handle(name: str, value: str | None, context: CommandContext) -> list[str]:
        if value in allowed:
            return []
        raise refuse(context, f"{name} {value}", otherwise)

    return handle


def translated(name: str, option: str, value: str | None, context: CommandContext) -> list[str]:
    """`[option, value]` when the command has that option, else a one-line refusal."""
    if option not in context.options:
        raise refuse(context, name, f"{context.prog} has no {option} (pyvmm boot has)")
    return [option] if value is None else [option, value]


def split_properties(text: str) -> tuple[str | None, dict[str, str]]:
    """QEMU's `TYPE,PROP=VALUE,...` -> (TYPE or None when the first item is a property, props)."""
    items = [item for item in text.split(",") if item]
    kind = items.pop(0) if items and "=" not in items[0] else None
    properties: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        properties[key.replace("_", "-")] = value
    return kind, properties


NO_DISPLAY = "pyvmm has no graphical display: the guest's console is COM1 on this terminal"
KVM_ONLY = "pyvmm runs on KVM only"


def _irqchip(name: str, value: str, context: CommandContext) -> list[str]:
    if value in ("on", "split"):
        return translated(name, "--kernel-irqchip", value, context)
    if value == "off":
        # QEMU's `off` moves the LAPICs into QEMU too: the guest still has all of
        # them. pyvmm's --kernel-irqchip off removes them: translating would change
        # the machine.
        raise refuse(
            context,
            name,
            "kernel-irqchip=off gives the guest QEMU's userspace PIC, IOAPIC and LAPICs; "
            "pyvmm's LAPICs are KVM's: use kernel-irqchip=split (pyvmm's default: its own "
            "PIC and IOAPIC) or on; pyvmm's own --kernel-irqchip off removes them altogether",
        )
    raise refuse(context, name, f"kernel-irqchip={value} is not available: pyvmm takes on or split")


def _acpi(name: str, value: str, context: CommandContext) -> list[str]:
    if value not in ("on", "off"):
        raise refuse(context, name, f"acpi={value} is not available: pyvmm takes on or off")
    # Every command that takes QEMU's options builds a machine, and has --acpi.
    return ["--acpi", value]


def _no_acpi(name: str, value: str | None, context: CommandContext) -> list[str]:
    return ["--acpi", "off"]


def _machine(name: str, value: str | None, context: CommandContext) -> list[str]:
    assert value is not None
    kind, properties = split_properties(value)
    if kind is not None and not _is_pc(kind):
        raise refuse(
            context,
            f"{name} {kind}",
            "pyvmm has one machine, a PC (QEMU's pc or q35, as a kernel sees them: the same "
            "legacy ports, MP and ACPI tables) with no BIOS, PCI devices or disks: "
            "leave out the machine type, or give pc or q35",
        )
    result: list[str] = []
    for key, setting in properties.items():
        if key == "accel":
            if setting != "kvm":
                raise refuse(context, f"{name} accel={setting}", KVM_ONLY)
        elif key == "kernel-irqchip":
            result += _irqchip(f"{name} {value}", setting, context)
        elif key == "acpi":
            result += _acpi(f"{name} {value}", setting, context)
        else:
            raise refuse(context, f"{name} {value}", f"pyvmm's machine has no property '{key}'")
    return result


def _is_pc(kind: str) -> bool:
    """QEMU's x86 PC machine types: pc, q35 and their versioned names (pc-i440fx-7.2...)."""
    return kind in ("pc", "q35") or kind.startswith(("pc-i440fx-", "pc-q35-"))


def _accel(name: str, value: str | None, context: CommandContext) -> list[str]:
    assert value is not None
    kind, properties = split_properties(value)
    if kind != "kvm":
        raise refuse(context, f"-accel {value}", f"{KVM_ONLY}: -accel kvm or nothing")
    result: list[str] = []
    for key, setting in properties.items():
        if key != "kernel-irqchip":
            raise refuse(context, f"-accel {value}", f"pyvmm has no KVM property '{key}'")
        result += _irqchip(f"-accel {value}", setting, context)
    return result


def _no_display(context: CommandContext) -> list[str]:
    # QEMU shows no screen then, so neither does pyvmm at the end (--vga's default would).
    return ["--vga", "none"] if "--vga" in context.options else []


def _nographic(name: str, value: str | None, context: CommandContext) -> list[str]:
    return _no_display(context)


def _display(name: str, value: str | None, context: CommandContext) -> list[str]:
    kind, _ = split_properties(value or "")
    if kind == "none":
        return _no_display(context)
    if kind == "curses":
        # --vga text draws the guest's VGA text screen on this terminal at the end of the run.
        if "--vga" in context.options:
            return ["--vga", "text"]
        raise refuse(context, f"{name} {value}", NO_DISPLAY)
    raise refuse(context, f"{name} {value}", NO_DISPLAY)


def _curses(name: str, value: str | None, context: CommandContext) -> list[str]:
    return _display(name, "curses", context)


def _vga(name: str, value: str | None, context: CommandContext) -> list[str]:
    if value == "none":
        return _no_display(context)
    raise refuse(
        context,
        f"{name} {value}",
        "pyvmm has no graphics card to choose (-vga none is the only choice)",
    )


DEBUG_EXIT_IOBASE = 0xF4  # pyvmm.devices.debug_exit: fixed port and size
DEBUG_EXIT_IOSIZE = 4
DEBUG_EXIT_DEVICE = "isa-debug-exit,iobase=0xf4,iosize=0x04"
TESTDEV_DEVICE = "pc-testdev"  # pyvmm.devices.testdev, at QEMU's fixed places
# QEMU's virtio-mmio devices pyvmm has (machine/virtio.py): the option each becomes, and
# the properties taken with the value pyvmm's device has (None: any value; id names it).
VIRTIO_DEVICES: dict[str, tuple[str, dict[str, str | None]]] = {
    "virtio-rng-device": ("--virtio-rng", {"id": None}),
    "virtio-balloon-device": (
        "--balloon",
        {"id": None, "free-page-reporting": "on", "deflate-on-oom": "off"},
    ),
}
# The other virtio spellings a QEMU user may bring, and the pyvmm option for each.
VIRTIO_HINTS = {
    "virtio-blk-device": "--drive file=PATH[,readonly=on] (QEMU: -drive file=PATH,if=virtio)",
    "virtio-serial-device": "--console virtio (one virtconsole port on this terminal)",
    "virtconsole": "--console virtio (one virtconsole port on this terminal)",
}


def _number(text: str) -> int | None:
    for base in (0, 10):  # 0xf4 and 244; also 004, which int(..., 0) refuses
        try:
            return int(text, base)
        except ValueError:
            continue
    return None


def _drive(name: str, value: str | None, context: CommandContext) -> list[str]:
    """-drive file=PATH,if=virtio[,format=raw][,readonly=on] is pyvmm's --drive."""
    assert value is not None
    _, properties = split_properties(value)
    if properties.get("if") != "virtio":
        raise refuse(context, f"{name} {value}", NO_DISKS)
    return ["--drive", value]


def _device(name: str, value: str | None, context: CommandContext) -> list[str]:
    assert value is not None
    driver, properties = split_properties(value)
    if driver == TESTDEV_DEVICE:
        unknown = sorted(set(properties) - {"id"})  # id= names any -device in QEMU
        if unknown:
            raise refuse(context, f"{name} {value}", f"pc-testdev has no property '{unknown[0]}'")
        # Every command that takes QEMU's options builds a machine, and has --testdev.
        return ["--testdev"]
    if driver in VIRTIO_DEVICES:
        return _virtio_device(name, value, driver, properties, context)
    if driver.startswith("virtio-") or driver in VIRTIO_HINTS:
        raise refuse(context, f"{name} {value}", _virtio_hint(driver, properties))
    if driver != "isa-debug-exit":
        raise refuse(
            context,
            f"{name} {driver or value}",
            f"pyvmm's devices are fixed; the only -device it takes is {DEBUG_EXIT_DEVICE} "
            f"or {TESTDEV_DEVICE}",
        )
    fixed = "pyvmm's isa-debug-exit is fixed at iobase=0xf4, iosize=0x04"
    for key in properties:
        if key not in ("iobase", "iosize"):
            raise refuse(context, f"-device {value}", f"{fixed}; it has no property '{key}'")
    iobase = properties.get("iobase")
    if iobase is None:
        raise refuse(context, f"-device {value}", f"{fixed}, not at QEMU's default iobase 0x501")
    if _number(iobase) != DEBUG_EXIT_IOBASE:
        raise refuse(context, f"-device {value}", f"{fixed}: iobase={iobase} is not available")
    iosize = properties.get("iosize")
    if iosize is None or _number(iosize) != DEBUG_EXIT_IOSIZE:
        raise refuse(
            context,
            f"-device {value}",
            f"{fixed}: {'QEMU default iosize 2' if iosize is None else f'iosize={iosize}'} "
            "is not available",
        )
    return []


def _virtio_hint(driver: str, properties: dict[str, str]) -> str:
    """Why a virtio -device is refused, and the pyvmm option to use instead, if any."""
    base = driver if driver in VIRTIO_HINTS else driver.removesuffix("-pci")
    base = base if base in VIRTIO_HINTS else base.removesuffix("-device") + "-device"
    hint = VIRTIO_HINTS.get(base) or (VIRTIO_DEVICES[base][0] if base in VIRTIO_DEVICES else None)
    if hint is None:
        return (
            f"pyvmm has no {driver}: its virtio devices are console, block, entropy and "
            "balloon (--console virtio, --drive, --virtio-rng, --balloon)"
        )
    if properties.get("ioeventfd") in ("on", "off"):
        hint += f" and --ioeventfd {properties['ioeventfd']}"
    return f"pyvmm's virtio devices are virtio-mmio, each made by its own option: use {hint}"


def _virtio_device(
    name: str, value: str, driver: str, properties: dict[str, str], context: CommandContext
) -> list[str]:
    """-device virtio-rng-device and virtio-balloon-device: pyvmm's --virtio-rng and
    --balloon; ioeventfd=on|off is pyvmm's --ioeventfd (for every virtio device)."""
    option, taken = VIRTIO_DEVICES[driver]
    arguments = [option]
    for key, given in properties.items():
        if key == "ioeventfd" and given in ("on", "off"):
            arguments += ["--ioeventfd", given]
            continue
        if key not in taken:
            raise refuse(context, f"{name} {value}", f"pyvmm's {driver} has no property '{key}'")
        wanted = taken[key]
        if wanted is not None and given != wanted:
            raise refuse(context, f"{name} {value}", f"pyvmm's {driver} has {key}={wanted}, fixed")
    return arguments


def _gdb(name: str, value: str | None, context: CommandContext) -> list[str]:
    return translated(name, "--gdb", value, context)


# QEMU's defaults, which are what pyvmm's RTC does (pyvmm.devices.rtc): the
# host's clock, in UTC, periodic ticks a guest misses are not made up.
RTC_PROPERTIES = {"base": "utc", "clock": "host", "driftfix": "none"}
RTC_IS = "pyvmm's RTC keeps the host's time in UTC (base=utc,clock=host,driftfix=none)"


def _rtc(name: str, value: str | None, context: CommandContext) -> list[str]:
    assert value is not None
    kind, properties = split_properties(value)
    if kind is not None:
        raise refuse(context, f"{name} {value}", f"{RTC_IS}; -rtc takes only those properties")
    for key, setting in properties.items():
        if key not in RTC_PROPERTIES:
            raise refuse(context, f"{name} {value}", f"{RTC_IS}; -rtc has no property '{key}'")
        if setting != RTC_PROPERTIES[key]:
            why = RTC_IS
            if key == "base":  # localtime, or a start date
                why += ": a guest that wants another time sets the clock itself (register B's SET)"
            raise refuse(context, f"{name} {value}", why)
    return []


NO_DISKS = (
    "pyvmm has no disks but one virtio-blk: --drive file=PATH[,readonly=on] "
    "(QEMU: -drive file=PATH,if=virtio)"
)
NO_FIRMWARE = (
    "pyvmm has no firmware (no BIOS, no UEFI): it loads IMAGE itself and enters it "
    "in the mode --mode names"
)
MONITOR_IS = (
    "pyvmm's monitor is a human monitor (HMP) on a UNIX socket: "
    "-monitor unix:PATH[,server][,nowait], or --monitor unix:PATH"
)


def _monitor(name: str, value: str | None, context: CommandContext) -> list[str]:
    """-monitor none (none) and -monitor unix:PATH[,server,nowait] (pyvmm's --monitor)."""
    if value == "none":
        return []
    if value is not None and value.startswith("unix:"):
        return translated(name, "--monitor", value, context)
    raise refuse(context, f"{name} {value}", f"{MONITOR_IS}; no other backend")


def _entry(
    names: str,
    value: str | None,
    handle: Handler,
    *,
    accepts: str = "",
    becomes: str = "",
    otherwise: str = "",
) -> QemuOption:
    return QemuOption(tuple(names.split()), value, handle, accepts, becomes, otherwise)


TABLE: tuple[QemuOption, ...] = (
    _entry(
        "-kernel",
        "IMAGE",
        refused(
            "{name} is not a pyvmm option: give the image as the first argument "
            "(pyvmm boot [OPTIONS] IMAGE)"
        ),
        otherwise="give the image as the first argument",
    ),
    _entry("-nographic", None, _nographic, becomes="-nographic -> --vga none"),
    _entry("-enable-kvm", None, accepted, accepts="-enable-kvm (pyvmm always runs on KVM)"),
    _entry(
        "-accel",
        "ACCEL[,PROP=VALUE...]",
        _accel,
        accepts="-accel kvm",
        becomes="-accel kvm,kernel-irqchip=on -> --kernel-irqchip on; "
        "-accel kvm,kernel-irqchip=split -> --kernel-irqchip split",
        otherwise="another accelerator (pyvmm runs on KVM only), kernel-irqchip=off "
        "(QEMU's userspace LAPICs: pyvmm's are KVM's)",
    ),
    _entry("-no-kvm", None, refused(KVM_ONLY), otherwise="pyvmm runs on KVM only"),
    _entry(
        "-machine -M",
        "[TYPE][,PROP=VALUE...]",
        _machine,
        accepts="-machine pc; -machine q35 (and their versions: pyvmm's PC has what a kernel "
        "finds on both); -machine accel=kvm",
        becomes="-machine kernel_irqchip=on -> --kernel-irqchip on; "
        "-machine kernel_irqchip=split -> --kernel-irqchip split; "
        "-machine acpi=on|off -> --acpi on|off",
        otherwise="another machine type, kernel_irqchip=off (QEMU's userspace LAPICs: "
        "pyvmm's are KVM's) or another property: pyvmm has one machine",
    ),
    _entry("-no-acpi", None, _no_acpi, becomes="-no-acpi -> --acpi off"),
    _entry(
        "-cpu",
        "MODEL",
        accepted_values(
            ["host", "max"],
            "pyvmm has no CPU models: the guest sees this host's CPU as KVM supports it "
            "(-cpu host)",
        ),
        accepts="-cpu host; -cpu max",
        otherwise="other models: the guest sees this host's CPU, as KVM supports it",
    ),
    _entry(
        "-serial",
        "DEV",
        accepted_values(
            ["stdio", "mon:stdio"],
            "pyvmm's COM1 is always this terminal (stdout and stdin): redirect it with the "
            "shell instead (> FILE)",
        ),
        accepts="-serial stdio; -serial mon:stdio",
        otherwise="other backends: COM1 is always this terminal",
    ),
    _entry(
        "-monitor",
        "DEV",
        _monitor,
        accepts="-monitor none",
        becomes="-monitor unix:PATH[,server][,nowait] -> --monitor unix:PATH[,server][,nowait]",
        otherwise="other backends: pyvmm's monitor is on a UNIX socket",
    ),
    _entry(
        "-qmp -mon",
        "DEV",
        refused(f"pyvmm has no QMP and no -mon chardevs; {MONITOR_IS}"),
        otherwise="pyvmm has no QMP; its monitor is -monitor unix:PATH",
    ),
    _entry("-no-reboot", None, accepted, accepts="-no-reboot (a reset ends the run, status 0)"),
    _entry(
        "-no-shutdown",
        None,
        refused(
            "pyvmm's monitor cannot keep a stopped guest (it has no stop or cont); "
            "a guest's shutdown ends the run (status 0)"
        ),
        otherwise="a guest's shutdown always ends the run",
    ),
    _entry(
        "-display",
        "TYPE",
        _display,
        becomes="-display none -> --vga none; -display curses -> --vga text",
        otherwise="other displays: pyvmm has no graphical display",
    ),
    _entry("-curses", None, _curses, becomes="-curses -> --vga text"),
    _entry(
        "-vga",
        "TYPE",
        _vga,
        becomes="-vga none -> --vga none",
        otherwise="graphics cards: pyvmm has none to choose",
    ),
    _entry("-sdl", None, refused(NO_DISPLAY), otherwise="no graphical display"),
    _entry("-vnc -spice", "DISPLAY", refused(NO_DISPLAY), otherwise="no graphical display"),
    _entry(
        "-device",
        "DRIVER[,PROP=VALUE...]",
        _device,
        accepts=f"-device {DEBUG_EXIT_DEVICE}",
        becomes=(
            f"-device {TESTDEV_DEVICE} -> --testdev; "
            "-device virtio-rng-device -> --virtio-rng; "
            "-device virtio-balloon-device -> --balloon; "
            "-device virtio-balloon-device,ioeventfd=on|off -> --balloon --ioeventfd on|off"
        ),
        otherwise=(
            "other devices, or isa-debug-exit elsewhere: pyvmm's devices are fixed; the "
            "other virtio spellings name the pyvmm option to use"
        ),
    ),
    _entry(
        "-drive",
        "file=PATH,if=virtio[,...]",
        _drive,
        becomes="-drive file=PATH,if=virtio -> --drive file=PATH,if=virtio",
        otherwise="other interfaces: pyvmm's one disk is virtio-blk",
    ),
    _entry(
        "-hda -hdb -hdc -hdd -cdrom -fda -fdb -blockdev -sd -mtdblock",
        "FILE",
        refused(NO_DISKS),
        otherwise="pyvmm's one disk is virtio-blk (--drive)",
    ),
    _entry("-snapshot", None, refused(NO_DISKS), otherwise="no snapshot disks"),
    _entry("-bios -pflash -L", "FILE", refused(NO_FIRMWARE), otherwise="pyvmm has no firmware"),
    _entry(
        "-boot",
        "ORDER",
        refused("pyvmm has no firmware to choose a boot device: it starts IMAGE itself"),
        otherwise="pyvmm has no firmware",
    ),
    _entry(
        "-d",
        "ITEMS",
        refused(
            "pyvmm has no QEMU log; --trace[=KINDS] prints one line per VM exit, "
            "-v what the VMM does"
        ),
        otherwise="see --trace and -v",
    ),
    _entry(
        "-D",
        "FILE",
        refused("pyvmm has no QEMU log; --trace-file FILE writes its exit trace to FILE"),
        otherwise="see --trace-file",
    ),
    _entry(
        "-trace",
        "EVENTS",
        refused(
            "pyvmm has no QEMU trace events; --trace[=KINDS] (two dashes) "
            "prints one line per VM exit"
        ),
        otherwise="see --trace",
    ),
    _entry("-gdb", "DEV", _gdb, becomes="-gdb DEV -> --gdb DEV"),
    _entry(
        "-rtc",
        "[base=utc][,clock=host][,driftfix=none]",
        _rtc,
        accepts="-rtc base=utc,clock=host,driftfix=none (QEMU's defaults: pyvmm's RTC)",
        otherwise="base=localtime or a date, clock=rt|vm, driftfix=slew: pyvmm's RTC "
        "keeps the host's time in UTC",
    ),
    _entry(
        "-net -nic",
        "SPEC",
        accepted_values(["none"], "pyvmm has no network devices"),
        accepts="-net none; -nic none",
        otherwise="pyvmm has no network devices",
    ),
    _entry(
        "-netdev",
        "SPEC",
        refused("pyvmm has no network devices"),
        otherwise="pyvmm has no network devices",
    ),
    # QEMU's defaults are a VGA card, a network card, drives and a monitor: pyvmm has only
    # the VGA text screen to leave out.
    _entry("-nodefaults", None, _nographic, becomes="-nodefaults -> --vga none"),
    _entry("-usb", None, refused("pyvmm has no USB"), otherwise="pyvmm has no USB"),
    _entry("-usbdevice", "DEV", refused("pyvmm has no USB"), otherwise="pyvmm has no USB"),
    _entry(
        "-chardev",
        "SPEC",
        refused("pyvmm has no character devices to configure: COM1 is this terminal"),
        otherwise="COM1 is this terminal",
    ),
    _entry(
        "-daemonize",
        None,
        refused("pyvmm runs in the foreground: use the shell (&, nohup) to background it"),
        otherwise="use the shell (&, nohup)",
    ),
)

QEMU_OPTIONS: Mapping[str, QemuOption] = {name: entry for entry in TABLE for name in entry.names}


def describe(width: int = 79) -> str:
    """The table in short, for `pyvmm boot --help`: what is accepted, translated, refused."""

    def paragraph(title: str, items: Iterable[str]) -> str:
        return textwrap.fill(
            "; ".join(items),
            width,
            initial_indent=f"  {title}: ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )

    accepted_forms = [
        form.partition(" (")[0] for e in TABLE if e.accepts for form in e.accepts.split("; ")
    ]
    refused = [name for e in TABLE if e.otherwise and not e.accepts + e.becomes for name in e.names]
    documented = " ".join(e.accepts + " " + e.becomes for e in TABLE).split()
    aliases = [
        f"{name} is {e.names[0]}"
        for e in TABLE
        if e.accepts or e.becomes
        for name in e.names[1:]
        if name not in documented
    ]
    return "\n".join(
        [
            paragraph("accepted (what pyvmm does anyway)", accepted_forms),
            paragraph("translated", (e.becomes for e in TABLE if e.becomes)),
            paragraph(
                "refused with a one-line hint",
                [", ".join(refused), "other values of the options above"],
            ),
            paragraph(
                "also",
                [*aliases, "each takes two dashes too, as in QEMU (but --trace is pyvmm's own)"],
            ),
        ]
    )


def markdown_table() -> str:
    """The whole table as markdown, for the README: every name, what pyvmm does with it."""

    def code(text: str) -> str:
        form, _, note = text.partition(" (")
        return f"`{form}`" + (f" ({note}" if note else "")

    rows = ["| QEMU option | what pyvmm does |", "|---|---|"]
    for entry in TABLE:
        value = f" {entry.value}" if entry.value else ""
        names = ", ".join(f"`{name}{value}`" for name in entry.names)
        done = [f"accepts {', '.join(code(form) for form in entry.accepts.split('; '))}"]
        done = done if entry.accepts else []
        for translation in entry.becomes.split("; ") if entry.becomes else []:
            qemu, _, pyvmm = translation.partition(" -> ")
            done.append(f"turns `{qemu}` into `{pyvmm}`")
        if entry.otherwise:
            done.append(f"refuses {'anything else' if done else 'it'}: {entry.otherwise}")
        cells = [names, "; ".join(done)]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)
