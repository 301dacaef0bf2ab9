"""`pyvmm boot guests/hello.bin` imports what the run uses, and nothing else, before the guest runs.

Start-up is mostly imports. A fresh interpreter runs the command in-process,
as `python -m pyvmm` does, and records `sys.modules` when `Machine.run` is
called: the moment the guest starts. The pyvmm modules must be exactly
`PYVMM_MODULES`, so that a module that starts (or stops) being imported shows
as a diff of this list; the modules in `ABSENT` must not be there at all.

hello.bin is a flat real-mode boot sector: no ELF or multiboot loader, no GDT
or page tables, no QEMU option, no trace, no gdb, no demo. The ACPI and MP
tables are built on every boot (--acpi on is the default), so their builders
are in the list. stdin is /dev/null (not a terminal: no termios).

The interpreter runs with -S (no site module) and gets the venv's
site-packages (for cffi) on sys.path by hand: no .pth file (an editable
install's finder imports pathlib, re and more) decides what is imported.
"""

from __future__ import annotations

import ast
import site
import subprocess
import sys
from pathlib import Path

from tests.integration.helpers import REPO, guest

# Runs `python -m pyvmm boot IMAGE` in-process and writes, to the file named by
# argv[1], the modules imported when the guest starts and those at the end.
CHILD = """\
import os
import runpy
import sys


def exit_here(status):  # pyvmm ends with os._exit: come back to write the report
    raise SystemExit(status)


os._exit = exit_here

out, image, *site_dirs = sys.argv[1:]
sys.path.extend(site_dirs)

from pyvmm.machine.builder import Machine

at_run = []
collector = []  # (enabled, frozen objects) when the run starts and when it is over
run = Machine.run


def recording_run(self, *args, **kwargs):
    import gc

    at_run.append(sorted(sys.modules))
    collector.append((gc.isenabled(), gc.get_freeze_count()))
    try:
        return run(self, *args, **kwargs)
    finally:
        collector.append((gc.isenabled(), gc.get_freeze_count()))


Machine.run = recording_run
sys.argv = ["pyvmm", "boot", image]
status = None
try:
    runpy.run_module("pyvmm", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    status = exit.code
with open(out, "w") as file:
    file.write(repr((status, at_run, sorted(sys.modules), collector)))
"""

# Every pyvmm module imported when the guest starts. A change here is a change
# of start-up time: add a module only if the run uses it.
PYVMM_MODULES = [
    "pyvmm",
    "pyvmm._kvm",
    "pyvmm._kvm.lib",
    "pyvmm.arch",
    "pyvmm.arch.x86_64",
    "pyvmm.arch.x86_64.cpu",
    "pyvmm.arch.x86_64.gsi_routes",
    "pyvmm.arch.x86_64.host_support",
    "pyvmm.arch.x86_64.layout",
    "pyvmm.arch.x86_64.no_bios",
    "pyvmm.arch.x86_64.placement",
    "pyvmm.arch.x86_64.register_dump",
    "pyvmm.arch.x86_64.registers",
    "pyvmm.cli",
    "pyvmm.cli.arguments",
    "pyvmm.cli.boot",
    "pyvmm.cli.parser",
    "pyvmm.cli.report",
    "pyvmm.closing",
    "pyvmm.console",
    "pyvmm.console.input",
    "pyvmm.console.output",
    "pyvmm.devices",
    "pyvmm.devices.acpi_pm",
    "pyvmm.devices.boot_timer",
    "pyvmm.devices.bus",
    "pyvmm.devices.debug_exit",
    "pyvmm.devices.fw_cfg",
    "pyvmm.devices.i8042",
    "pyvmm.devices.i8254",
    "pyvmm.devices.i8259",
    "pyvmm.devices.ioapic",
    "pyvmm.devices.irq",
    "pyvmm.devices.pci_absent",
    "pyvmm.devices.reset_control",
    "pyvmm.devices.rtc",
    "pyvmm.devices.serial",
    "pyvmm.devices.sink",
    "pyvmm.devices.vga_text",
    "pyvmm.errors",
    "pyvmm.firmware",
    "pyvmm.firmware.acpi",
    "pyvmm.firmware.acpi.aml",
    "pyvmm.firmware.acpi.dsdt",
    "pyvmm.firmware.acpi.fadt",
    "pyvmm.firmware.acpi.madt",
    "pyvmm.firmware.acpi.rsdp",
    "pyvmm.firmware.acpi.sdt",
    "pyvmm.firmware.area",
    "pyvmm.firmware.mptable",
    "pyvmm.firmware.table",
    "pyvmm.firmware.tables",
    "pyvmm.kvm",
    "pyvmm.kvm._ioctl",
    "pyvmm.kvm.host",
    "pyvmm.kvm.system",
    "pyvmm.kvm.vcpu",
    "pyvmm.kvm.vm",
    "pyvmm.loaders",
    "pyvmm.loaders.entry",
    "pyvmm.loaders.flat",
    "pyvmm.loaders.magic",
    "pyvmm.machine",
    "pyvmm.machine.builder",
    "pyvmm.machine.device_timer",
    "pyvmm.machine.early_vm",
    "pyvmm.machine.firmware",
    "pyvmm.machine.interrupts",
    "pyvmm.machine.kick_timer",
    "pyvmm.machine.legacy_pc",
    "pyvmm.machine.outcome",
    "pyvmm.machine.pit",
    "pyvmm.machine.ram_size",
    "pyvmm.machine.reset",
    "pyvmm.machine.rtc_timer",
    "pyvmm.machine.run_signals",
    "pyvmm.machine.split_irqchip",
    "pyvmm.machine.vcpu_group",
    "pyvmm.machine.vcpu_loop",
    "pyvmm.machine.vcpu_states",
    "pyvmm.memory",
    "pyvmm.memory.addr",
    "pyvmm.memory.guest_memory",
    "pyvmm.memory.host_mapping",
    "pyvmm.memory.size",
    "pyvmm.quiet_threads",
    "pyvmm.shipped",
    "pyvmm.startup_gc",
]

# Not imported when the guest starts: what this run does not use.
ABSENT = {
    # error formatting and logging (nothing is logged without -v)
    "logging",
    "traceback",
    "textwrap",
    # what argparse's formatters would import for the terminal's width (shutil)
    "shutil",
    "bz2",
    "lzma",
    # a path library: os.path does (site's .pth files may import it, see -S)
    "pathlib",
    # the trace and the statistics (--trace, --stats), the disassembler
    "json",
    "statistics",
    "capstone",
    # the test device (--testdev), gdb (--gdb, -s), a terminal's mode (stdin is no tty)
    "ctypes",
    "mmap",
    "socket",
    "termios",
    # dataclasses (with inspect, ast, dis and tokenize): the classes made before the
    # guest runs are plain ones, with __slots__ and their own __init__
    "dataclasses",
    "inspect",
    # typing: `TYPE_CHECKING = False` instead (see pyvmm/__init__.py), Protocols and
    # NewTypes for type checkers only
    "typing",
}
# No pyvmm module under these is imported when the guest starts.
ABSENT_PACKAGES = (
    "pyvmm.cli.memmap",
    "pyvmm.cli.qemu_options",  # QEMU's options, for a QEMU option given
    "pyvmm.demos",
    "pyvmm.gdb",
    "pyvmm.loaders.elf",  # ELF and multiboot images
    "pyvmm.loaders.multiboot",
    "pyvmm.loaders.multiboot_info",
    "pyvmm.arch.x86_64.gdt",  # protected, paged, long and user modes
    "pyvmm.arch.x86_64.paging",
    "pyvmm.arch.x86_64.page_walk",  # page walks: memmap, read_virtual, error reports
    "pyvmm.arch.x86_64.instruction",
    "pyvmm.arch.x86_64.virtual_memory",
    "pyvmm.observe",  # trace, statistics, memory maps (-v, memmap)
    "pyvmm.devices.testdev",
    "pyvmm.machine.device_ranges",  # Machine.attach_*_device
    "pyvmm.machine.facade",  # create_machine, the library's entry
    "pyvmm.machine.monitor",  # --monitor
    "pyvmm.arch.x86_64.host_probe",  # the host probe: `pyvmm host`, a Linux kernel's boot
    "pyvmm.arch.x86_64.host_findings",
    "pyvmm.machine.linux_host",
)
# Not imported by the whole command either: the report after the run needs none.
NEVER = {
    "logging",
    "traceback",
    "capstone",
    "dataclasses",
    "inspect",
    "typing",
    "pyvmm.gdb",
    "pyvmm.demos",
    "pyvmm.cli.qemu_options",
    "pyvmm.machine.monitor",
    # hello.bin's exits are all port writes: the decoded exits are never needed
    "pyvmm.kvm.exits",
    "pyvmm.machine.exit_dispatch",
}


def boot_recording_modules(
    tmp_path: Path, image: str
) -> tuple[object, list[str], list[str], list[tuple[bool, int]]]:
    """(exit status, modules when the guest started, modules at the end, the collector's
    (enabled, frozen objects) as Machine.run is called and once it returned)."""
    out = tmp_path / "modules"
    result = subprocess.run(
        [sys.executable, "-S", "-c", CHILD, str(out), image, *site.getsitepackages()],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert result.stdout == "Hello, world!\n", result.stderr
    status, at_run, at_end, collector = ast.literal_eval(out.read_text())
    assert len(at_run) == 1, f"Machine.run was called {len(at_run)} times"
    return status, at_run[0], at_end, collector


def under(name: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(name == package or name.startswith(f"{package}.") for package in packages)


def test_hello_imports_only_what_its_run_uses(tmp_path: Path) -> None:
    status, at_run, at_end, _ = boot_recording_modules(tmp_path, guest("hello.bin"))
    assert status == 0
    assert [name for name in at_run if under(name, ("pyvmm",))] == PYVMM_MODULES
    assert sorted(name for name in at_run if under(name, ABSENT)) == []
    assert sorted(name for name in at_run if under(name, ABSENT_PACKAGES)) == []
    assert sorted(name for name in at_end if under(name, NEVER)) == []


def test_the_collector_is_paused_until_the_guest_runs(tmp_path: Path) -> None:
    """pyvmm/startup_gc.py: off through start-up; on, with start-up's objects frozen, after."""
    status, _, _, collector = boot_recording_modules(tmp_path, guest("hello.bin"))
    assert status == 0
    (enabled_at_start, frozen_at_start), (enabled_after, frozen_after) = collector
    assert (enabled_at_start, frozen_at_start) == (False, 0)
    assert enabled_after and frozen_after > 10_000  # every module's objects, at least


def test_the_lists_name_real_modules() -> None:
    """A misspelt name would make its check pass for nothing."""
    package = REPO / "pyvmm"
    for name in [*PYVMM_MODULES, *ABSENT_PACKAGES]:
        if name in ("pyvmm._kvm", "pyvmm._kvm.lib"):  # the compiled binding
            continue
        path = package.parent.joinpath(*name.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), name
