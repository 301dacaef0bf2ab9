"""The command line a QEMU user meets: habits, options that would be ignored, clear refusals.

Everything here is decided before a VM exists, so no test needs KVM: the
arguments go through `normalize_arguments` and argparse as `pyvmm` sends them.
"""

from __future__ import annotations

import argparse
import errno
import grp
import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pyvmm.gdb.server as gdb_server
import pyvmm.kvm.system as kvm_system
from pyvmm.arch.x86_64 import layout
from pyvmm.cli import main
from pyvmm.cli.arguments import normalize_arguments
from pyvmm.cli.parser import build_parser, check_combinations
from pyvmm.cli.qemu_options import QEMU_OPTIONS, TABLE, CommandContext
from pyvmm.errors import KvmUnavailable, LoaderError, UsageError
from pyvmm.loaders import load_image
from pyvmm.loaders.entry import CpuMode
from pyvmm.memory.guest_memory import GuestMemory
from pyvmm.memory.size import format_size

REPO = Path(__file__).resolve().parents[2]
HELLO = str(REPO / "guests" / "hello.bin")


def parse(*argv: str) -> argparse.Namespace:
    """What `pyvmm` would run: normalized, parsed, combinations checked."""
    parser = build_parser()
    args = parser.parse_args(normalize_arguments(parser.commands, list(argv)))
    check_combinations(args)
    return args


def refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `pyvmm argv` prints when it refuses with status 2."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert "internal error" not in captured.err and "Traceback" not in captured.err
    return captured.err.strip()


# --- QEMU options accepted: the same machine as without them ---------------------------


@pytest.mark.parametrize(
    "habit",
    [
        ["-nographic"],
        ["--nographic"],  # QEMU takes every option with two dashes too
        ["-enable-kvm"],
        ["-accel", "kvm"],
        ["-machine", "accel=kvm"],
        ["-M", "accel=kvm"],
        ["-cpu", "host"],
        ["-cpu", "max"],
        ["-serial", "stdio"],
        ["-serial", "mon:stdio"],
        ["-monitor", "none"],
        ["-no-reboot"],
        ["-display", "none"],
        ["-vga", "none"],
        ["-net", "none"],
        ["-nic", "none"],
        ["-nodefaults"],
        ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
        ["-device", "isa-debug-exit,iosize=4,iobase=244"],
        ["-nographic", "-enable-kvm", "-serial", "stdio", "-no-reboot", "-display", "none"],
    ],
)
def test_qemu_habits_that_mean_what_pyvmm_does_are_accepted(habit: list[str]) -> None:
    plain = vars(parse("boot", HELLO))
    with_habit = vars(parse("boot", *habit, HELLO))
    hides_the_screen = {"-nographic", "--nographic", "-display", "-vga", "-nodefaults"} & set(habit)
    if hides_the_screen and "vga" in plain:  # QEMU shows no screen: nor does pyvmm at the end
        assert with_habit.pop("vga") == "none"
        plain.pop("vga")
    assert with_habit == plain


def test_serial_stdio_is_not_read_as_dash_s() -> None:
    """argparse alone reads `-serial stdio` as `-s erial` (the gdb stub)."""
    args = parse("boot", "-serial", "stdio", HELLO)
    assert (args.gdb_default, args.gdb, args.image) == (False, None, HELLO)


@pytest.mark.parametrize(
    ("habit", "attribute", "value"),
    [
        (["-gdb", "tcp::4321"], "gdb", "tcp::4321"),
        (["-machine", "kernel_irqchip=on"], "kernel_irqchip", "on"),
        (["-M", "accel=kvm,kernel-irqchip=on"], "kernel_irqchip", "on"),
        (["-accel", "kvm,kernel-irqchip=on"], "kernel_irqchip", "on"),
        (["-machine", "kernel_irqchip=split"], "kernel_irqchip", "split"),
        (["-accel", "kvm,kernel-irqchip=split"], "kernel_irqchip", "split"),
        (["-append", "console=ttyS0"], "append", "console=ttyS0"),
        (["-initrd", "a,b"], "initrd", "a,b"),
        (["-smp", "cpus=2"], "smp", 2),
        (["-m", "size=64M"], "memory", "size=64M"),
        (["-device", "virtio-rng-device,id=rng0"], "virtio_rng", True),
        (["-device", "virtio-balloon-device,free-page-reporting=on"], "balloon", True),
        (["-device", "virtio-balloon-device,ioeventfd=off"], "ioeventfd", "off"),
    ],
)
def test_qemu_spellings_become_pyvmm_options(
    habit: list[str], attribute: str, value: object
) -> None:
    assert getattr(parse("boot", *habit, HELLO), attribute) == value


def test_display_curses_becomes_vga_text_where_the_option_exists() -> None:
    display = QEMU_OPTIONS["-display"]
    with_vga = CommandContext("pyvmm boot", frozenset({"--vga"}))
    assert display.handle("-display", "curses", with_vga) == ["--vga", "text"]
    assert QEMU_OPTIONS["-curses"].handle("-curses", None, with_vga) == ["--vga", "text"]
    without = CommandContext("pyvmm boot", frozenset())
    with pytest.raises(UsageError, match="no graphical display"):
        display.handle("-display", "curses", without)


# --- QEMU options refused: one line that says what to do -------------------------------


@pytest.mark.parametrize(
    ("habit", "says"),
    [
        (["-kernel", HELLO], "-kernel is not a pyvmm option: give the image as the first arg"),
        (["--kernel", HELLO], "-kernel is not a pyvmm option"),
        (["-kernel"], "-kernel is not a pyvmm option"),  # not "-kernel expects IMAGE"
        (["-hda", "disk.img", HELLO], "cannot use -hda disk.img: pyvmm has no disks"),
        (["-hda"], "cannot use -hda: pyvmm has no disks"),  # refused whatever its value
        (["-drive", "file=d.img,format=raw", HELLO], "pyvmm has no disks"),
        (["-cdrom", "x.iso", HELLO], "pyvmm has no disks"),
        (["-bios", "bios.bin", HELLO], "pyvmm has no firmware"),
        (["-machine", "isapc", HELLO], "cannot use -machine isapc: pyvmm has one machine"),
        (["-M", "microvm,accel=kvm", HELLO], "cannot use -M microvm: pyvmm has one machine"),
        # QEMU's off moves the LAPICs into QEMU too; pyvmm's --kernel-irqchip off removes them.
        (["-machine", "kernel_irqchip=off", HELLO], "QEMU's userspace PIC, IOAPIC and LAPICs"),
        (["-accel", "kvm,kernel-irqchip=off", HELLO], "--kernel-irqchip off removes them"),
        (["-accel", "tcg", HELLO], "pyvmm runs on KVM only"),
        (["-machine", "accel=tcg", HELLO], "pyvmm runs on KVM only"),
        (["-cpu", "qemu64", HELLO], "pyvmm has no CPU models"),
        (["-serial", "file:out.txt", HELLO], "COM1 is always this terminal"),
        (["-monitor", "stdio", HELLO], "monitor (HMP) on a UNIX socket: -monitor unix:PATH"),
        (["-qmp", "unix:q.sock,server", HELLO], "pyvmm has no QMP"),
        (["-no-shutdown", HELLO], "a guest's shutdown ends the run"),
        (["-display", "gtk", HELLO], "no graphical display"),
        (["-vga", "std", HELLO], "no graphics card"),
        (["-d", "int,cpu_reset", HELLO], "--trace[=KINDS] prints one line per VM exit"),
        (["-D", "log.txt", HELLO], "--trace-file FILE"),
        (["-trace", "kvm_*", HELLO], "--trace[=KINDS] (two dashes)"),
        (["-netdev", "user,id=n0", HELLO], "no network devices"),
        (["-device", "virtio-net-pci", HELLO], "pyvmm has no virtio-net-pci: its virtio devices"),
        (["-device", "e1000", HELLO], "the only -device it takes is isa-debug-exit"),
        (["-device", "virtio-rng-pci", HELLO], "virtio-mmio, each made by its own option: use --v"),
        (
            ["-device", "virtio-blk-device,drive=d0,ioeventfd=off", HELLO],
            "use --drive file=PATH[,readonly=on] (QEMU: -drive file=PATH,if=virtio) and "
            "--ioeventfd off",
        ),
        (["-device", "virtconsole,chardev=c", HELLO], "use --console virtio"),
        (["-device", "virtio-serial-device", HELLO], "use --console virtio"),
        (["-device", "virtio-rng-device,max-bytes=1024", HELLO], "has no property 'max-bytes'"),
        (
            ["-device", "virtio-balloon-device,free-page-reporting=off", HELLO],
            "virtio-balloon-device has free-page-reporting=on, fixed",
        ),
        (["-device", "isa-debug-exit,iobase=0x501,iosize=0x04", HELLO], "fixed at iobase=0xf4"),
        (["-device", "isa-debug-exit,iobase=0xf4,iosize=0x01", HELLO], "iosize=0x01 is not"),
        (["-device", "isa-debug-exit", HELLO], "not at QEMU's default iobase 0x501"),
        (["-serial"], "-serial expects DEV"),
        (["-smp", "2,cores=2", HELLO], "takes a number of vCPUs only"),
        (["-m", "1G,slots=2,maxmem=4G", HELLO], "no memory hotplug"),
    ],
)
def test_qemu_habits_pyvmm_lacks_get_one_line_that_says_so(
    habit: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal(["boot", *habit], capsys)
    assert line.startswith("pyvmm")
    assert says in line


def test_every_qemu_option_in_the_table_is_handled(capsys: pytest.CaptureFixture[str]) -> None:
    """Each name, with a value it refuses, gives the hint naming it, never a traceback.

    The line reads as a refusal (status 2, nothing ran), not as a note on an
    option that was taken: `-kernel is not needed` read like a warning.
    """
    for entry in TABLE:
        for name in entry.names:
            value = ["no-such-value"] if entry.value else []
            if not entry.otherwise:  # accepted or translated whatever its value
                continue
            line = refusal(["boot", name, *value, HELLO], capsys)
            assert line.startswith(
                (f"pyvmm boot: cannot use {name}", f"pyvmm boot: {name} is not a pyvmm option")
            ), line


def test_the_table_documents_every_form_it_accepts() -> None:
    """An accepted or translated form in the docs is one the handlers really take."""
    context = CommandContext(
        "pyvmm boot", frozenset({"--gdb", "--kernel-irqchip", "--vga", "--monitor"})
    )
    no_vga = CommandContext("pyvmm boot", frozenset({"--gdb", "--kernel-irqchip"}))
    for entry in TABLE:
        forms = [f.partition(" (")[0] for f in entry.accepts.split("; ") if entry.accepts]
        for form in forms:
            name, _, value = form.partition(" ")
            assert entry.handle(name, value or None, no_vga) == [], form
        for translation in entry.becomes.split("; ") if entry.becomes else []:
            qemu, _, pyvmm = translation.partition(" -> ")
            name, _, value = qemu.partition(" ")
            value = value.replace("on|off", "on").replace("DEV", "tcp::1")
            expected = pyvmm.replace("on|off", "on").replace("DEV", "tcp::1").split()
            assert entry.handle(name, value or None, context) == expected, qemu
            if pyvmm == "--vga none":  # where pyvmm has no --vga, no screen is what it does
                assert entry.handle(name, value or None, no_vga) == [], qemu


@pytest.mark.parametrize("argv", [["-kernel", HELLO], [HELLO]])
def test_a_command_comes_first(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert "a command comes first: pyvmm boot" in refusal(argv, capsys)


# --- no abbreviations, no option of another command -------------------------------------


def test_memmap_dash_s_is_not_smp(capsys: pytest.CaptureFixture[str]) -> None:
    """`-s` used to prefix-match `-smp` in memmap, and blamed the CPU count."""
    line = refusal(["memmap", "-s", HELLO], capsys)
    assert line == (
        "pyvmm memmap: -s is an option of pyvmm boot, not of this command (see pyvmm memmap --help)"
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["boot", "--time", "5", HELLO], "unknown option --time"),
        (["boot", "--trace-f", "t.txt", HELLO], "unknown option --trace-f"),
        (["boot", "-name", "vm0", HELLO], "unknown option -name"),
        (["boot", "-mem-prealloc", HELLO], "unknown option -mem-prealloc"),
        (["memmap", "--stats", HELLO], "--stats is an option of pyvmm boot"),
        (["memmap", "--gdb", "tcp::1", HELLO], "--gdb is an option of pyvmm boot"),
        (["memmap", "-gdb", "tcp::1", HELLO], "pyvmm memmap has no --gdb"),
        (["boot", "--translate", "0x1000", HELLO], "--translate is an option of pyvmm memmap"),
    ],
)
def test_abbreviations_and_foreign_options_are_refused(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in refusal(argv, capsys)


def test_short_options_still_run_together() -> None:
    args = parse("boot", "-vv", "-m64M", HELLO)
    assert (args.verbose, args.memory) == (2, "64M")
    assert parse("boot", "-vs", HELLO).gdb_default


# --- --trace: the form --help shows works --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "kinds"),
    [
        (["--trace", "io", HELLO], "io"),
        (["--trace", "io,hlt", HELLO], "io,hlt"),
        (["--trace=mmio", HELLO], "mmio"),
        (["--trace", HELLO], "all"),
        ([HELLO, "--trace"], "all"),
        (["--trace", "-v", HELLO], "all"),
    ],
)
def test_trace_kinds_as_help_shows_them(argv: list[str], kinds: str) -> None:
    args = parse("boot", *argv)
    assert (args.trace, args.image) == (kinds, HELLO)


def test_a_misspelt_trace_kind_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown exit kind 'hltt'" in refusal(["boot", "--trace", "io,hltt", HELLO], capsys)


# --- options that would be ignored: they take effect, or they are refused ------------------


def test_trace_file_implies_trace() -> None:
    args = parse("boot", "--trace-file", "t.txt", HELLO)
    assert (args.trace, args.trace_file, args.trace_format) == ("all", "t.txt", "text")


def test_trace_format_goes_with_a_trace() -> None:
    assert parse("boot", "--trace", "--trace-format", "json", HELLO).trace_format == "json"
    assert parse("boot", "--trace-file", "t", "--trace-format", "json", HELLO).trace == "all"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["boot", "-S", HELLO], "-S stops the guest for gdb: give --gdb tcp::PORT or -s"),
        (["boot", "-s", "--gdb", "tcp::4000", HELLO], "give one of -s and --gdb"),
        (["boot", "--trace-format", "json", HELLO], "add --trace (or --trace-file FILE)"),
        (["boot", "--stats", "--trace-format", "json", HELLO], "--trace-format is the format"),
        (["memmap", "-q", "--console-rate", "1K", HELLO], "--console-rate has nothing to limit"),
        (["boot", "-s", "-smp", "2", HELLO], "the gdb stub debugs one vCPU: drop -smp 2"),
        (["boot", "-smp", "\u00b2", HELLO], "'\u00b2' is not a whole number of vCPUs"),
        (["boot", "--max-exits", "\u0663", HELLO], "'\u0663' is not a whole number of exits"),
    ],
)
def test_options_that_would_do_nothing_are_refused(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in refusal(argv, capsys)


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    with GuestMemory.from_ranges([(0, 16 << 20)]) as guest_memory:
        yield guest_memory


@pytest.mark.parametrize("image", ["hello.bin", "elf64.elf", "elf32.elf"])
def test_append_needs_a_multiboot_kernel(image: str, memory: GuestMemory) -> None:
    """Like --initrd, --append on an image that has no command line is an error."""
    data = (REPO / "guests" / image).read_bytes()
    with pytest.raises(LoaderError, match=r"^a kernel command line \(--append\) needs a multiboot"):
        load_image(
            data, memory, mode=None, load_gpa=None, default_flat_gpa=lambda mode: 0x7C00,
            cmdline=f"{image} quiet", append="quiet",
        )  # fmt: skip
    # Without --append, the image path alone is no argument to refuse.
    load_image(
        data, memory, mode=None, load_gpa=None, default_flat_gpa=lambda mode: 0x7C00,
        cmdline=image,
    )  # fmt: skip


def test_append_reaches_a_multiboot_kernel(memory: GuestMemory) -> None:
    data = (REPO / "guests" / "multiboot.elf").read_bytes()
    entry = load_image(
        data, memory, mode=None, load_gpa=None, default_flat_gpa=lambda mode: 0x7C00,
        cmdline="k quiet", append="quiet",
    )  # fmt: skip
    assert entry.protocol == "multiboot" and entry.mode is CpuMode.PROTECTED


# --- errors that looked like bugs ------------------------------------------------------------


def test_ram_too_small_quotes_what_was_typed(capsys: pytest.CaptureFixture[str]) -> None:
    line = refusal(["boot", "-m", "1K", HELLO], capsys)
    assert line == (
        f"pyvmm boot: -m 1K is too small: pyvmm needs at least "
        f"{format_size(layout.MIN_RAM_SIZE)} "
        "of guest RAM"
    )


def test_ram_beyond_the_host_is_said_in_its_own_unit(capsys: pytest.CaptureFixture[str]) -> None:
    line = refusal(["boot", "-m", "100T", HELLO], capsys)
    assert line.startswith("pyvmm boot: -m 100T is more than this host's RAM (")
    assert not re.search(r"\d{5,}", line), line  # no "104857600 MiB"
    line = refusal(["boot", "-m", "100000", HELLO], capsys)
    assert line.startswith("pyvmm boot: -m 100000 (97.6 GiB) is more than this host's RAM (")


def test_gdb_port_in_use_is_a_usage_error(busy_port: int) -> None:
    with pytest.raises(UsageError) as error:
        gdb_server.listen(("127.0.0.1", busy_port))
    assert str(error.value) == (
        f"--gdb tcp:127.0.0.1:{busy_port}: port {busy_port} is in use; "
        "choose another with --gdb tcp::PORT"
    )
    assert error.value.exit_status == 2


def test_gdb_privileged_port_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any, **kwargs: Any) -> socket.socket:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(gdb_server.socket, "create_server", refused)
    monkeypatch.setattr(gdb_server, "first_unprivileged_port", lambda: 1024)
    with pytest.raises(UsageError) as error:
        gdb_server.listen(("127.0.0.1", 80))
    assert str(error.value) == (
        "--gdb tcp:127.0.0.1:80: port 80 is privileged (below 1024): run as root, "
        "or choose a port from 1024 up"
    )


def test_gdb_unknown_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(gdb_server.socket, "getaddrinfo", unknown)
    with pytest.raises(UsageError, match=r"^--gdb tcp:nowhere:1234: unknown host 'nowhere'"):
        gdb_server.listen(("nowhere", 1234))


def test_gdb_address_forms() -> None:
    assert gdb_server.parse_gdb_address("tcp::1234") == ("127.0.0.1", 1234)
    assert gdb_server.parse_gdb_address("tcp:[::1]:1234") == ("::1", 1234)
    with gdb_server.listen(("::1", 0)) as listener:
        assert listener.family == socket.AF_INET6


@pytest.fixture
def node(tmp_path: Path) -> Path:
    path = tmp_path / "device-node"
    path.touch()
    return path


def other_group() -> grp.struct_group:
    return next(group for group in grp.getgrall() if group.gr_gid != 0)


def test_kvm_hint_for_a_root_only_node(node: Path) -> None:
    os.chmod(node, 0o600)
    os.chown(node, 0, 0)
    hint = kvm_system.permission_hint(str(node), groups=[12345], user="someone")
    assert hint == (
        f"it is root:root, mode 0600: run as root, or ask an administrator to give {node} "
        "to a group you are in"
    )
    assert "group '" not in hint  # no group is named: none would help here


def test_kvm_hint_names_the_group_that_owns_the_node(node: Path) -> None:
    group = other_group()
    os.chown(node, 0, group.gr_gid)
    os.chmod(node, 0o660)
    hint = kvm_system.permission_hint(str(node), groups=[], user="someone")
    assert hint == (
        f"it belongs to group '{group.gr_name}' (mode 0660): ask an administrator to add you "
        f"to it (usermod -aG {group.gr_name} someone, then log in again), or run as root"
    )
    member = kvm_system.permission_hint(str(node), groups=[group.gr_gid], user="someone")
    assert "which this process is in" in member
    os.chmod(node, 0o640)  # the group cannot write: joining it would not help
    assert "ask an administrator to give" in kvm_system.permission_hint(str(node), groups=[])


def test_kvm_hint_after_joining_the_group(node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = other_group()
    os.chown(node, 0, group.gr_gid)
    os.chmod(node, 0o660)
    joined = grp.struct_group((group.gr_name, "x", group.gr_gid, ["someone"]))
    monkeypatch.setattr(grp, "getgrgid", lambda gid: joined)  # permission_hint imports grp
    hint = kvm_system.permission_hint(str(node), groups=[], user="someone")
    assert f"log in again (or run newgrp {group.gr_name})" in hint


def test_open_kvm_refused_gives_the_hint(node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.chmod(node, 0o600)
    os.chown(node, 0, 0)
    fake_lib = SimpleNamespace(open=lambda path, flags: -1, O_RDWR=os.O_RDWR, O_CLOEXEC=0)
    monkeypatch.setattr(kvm_system, "lib", fake_lib)
    monkeypatch.setattr(kvm_system, "ffi", SimpleNamespace(errno=errno.EACCES))
    with pytest.raises(KvmUnavailable) as error:
        kvm_system.open_kvm(str(node))
    assert str(error.value).startswith(
        f"cannot open {node}: EACCES (Permission denied); it is root:root, mode 0600: run as root"
    )
    assert stat.S_IMODE(node.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "machine", ["pc", "q35", "pc-i440fx-7.2", "pc-q35-7.2", "pc,accel=kvm", "q35,acpi=off"]
)
def test_qemu_pc_machine_types_are_pyvmm_s_machine(machine: str) -> None:
    """Hobby Makefiles pass -M pc or -machine q35: pyvmm's PC is what a kernel finds on both."""
    args = parse("boot", "-M", machine, HELLO)
    assert args.acpi == ("off" if "acpi=off" in machine else "on")
