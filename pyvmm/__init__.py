"""pyvmm: a small, readable virtual machine monitor on Linux KVM, usable as a library.

    import sys
    import pyvmm

    with pyvmm.create_machine("hello.bin", ram_size="64M", console=sys.stdout) as machine:
        outcome = machine.run(timeout=10)       # a RunOutcome, never an exception
        registers = machine.registers()         # a frozen Registers snapshot
        data = machine.read_physical(0x7C00, 16)
    print(outcome.kind, outcome.exit_status)    # OutcomeKind.HALTED 0

Build: `create_machine` (a path or bytes, "64M", a file for the console) or
`MachineConfig` + `build_machine` (the VMM's own units). Run: `Machine.run`
-> `RunOutcome`, whose `kind` is an `OutcomeKind` and `exit_status` the
status `pyvmm boot` would exit with (`EXIT_*`, `debug_exit_status`). Look:
`Machine.registers`, `read_physical`/`write_physical` (guest-physical),
`read_virtual`/`write_virtual` (through the guest's page tables),
`translate` (GVA -> GPA -> HVA -> HPA, a `Translation`). Extend:
`Machine.attach_pio_device`/`attach_mmio_device` with any `BusDevice`.
Errors: the `pyvmm.errors` tree, rooted at `PyvmmError`.

Every name is imported on first use (PEP 562 module `__getattr__`), so
`import pyvmm`, which each `pyvmm` command starts with, imports nothing
else of the package.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# typing.TYPE_CHECKING without importing typing (about 2 ms): type checkers
# (mypy, pyright) treat any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, `__getattr__` below
    from pyvmm import errors as errors
    from pyvmm.arch.x86_64.register_snapshot import Registers as Registers
    from pyvmm.devices.bus import BusDevice as BusDevice
    from pyvmm.devices.debug_exit import debug_exit_status as debug_exit_status
    from pyvmm.errors import BusError as BusError
    from pyvmm.errors import BusOverlap as BusOverlap
    from pyvmm.errors import GuestMemoryError as GuestMemoryError
    from pyvmm.errors import GuestPageFault as GuestPageFault
    from pyvmm.errors import KvmError as KvmError
    from pyvmm.errors import KvmUnavailable as KvmUnavailable
    from pyvmm.errors import LoaderError as LoaderError
    from pyvmm.errors import PyvmmError as PyvmmError
    from pyvmm.errors import UsageError as UsageError
    from pyvmm.loaders.entry import CpuMode as CpuMode
    from pyvmm.loaders.entry import EntryPoint as EntryPoint
    from pyvmm.machine.builder import Machine as Machine
    from pyvmm.machine.builder import MachineConfig as MachineConfig
    from pyvmm.machine.builder import build_machine as build_machine
    from pyvmm.machine.facade import create_machine as create_machine
    from pyvmm.machine.outcome import EXIT_FAIL_ENTRY as EXIT_FAIL_ENTRY
    from pyvmm.machine.outcome import EXIT_GUEST_CRASH as EXIT_GUEST_CRASH
    from pyvmm.machine.outcome import EXIT_HALTED as EXIT_HALTED
    from pyvmm.machine.outcome import EXIT_INTERNAL_ERROR as EXIT_INTERNAL_ERROR
    from pyvmm.machine.outcome import EXIT_LIMIT as EXIT_LIMIT
    from pyvmm.machine.outcome import EXIT_SIGNAL_BASE as EXIT_SIGNAL_BASE
    from pyvmm.machine.outcome import EXIT_TIMEOUT as EXIT_TIMEOUT
    from pyvmm.machine.outcome import EXIT_TRIPLE_FAULT as EXIT_TRIPLE_FAULT
    from pyvmm.machine.outcome import EXIT_UNHANDLED_EXCEPTION as EXIT_UNHANDLED_EXCEPTION
    from pyvmm.machine.outcome import EXIT_USAGE as EXIT_USAGE
    from pyvmm.machine.outcome import EXIT_VMM_ERROR as EXIT_VMM_ERROR
    from pyvmm.machine.outcome import OutcomeKind as OutcomeKind
    from pyvmm.machine.outcome import RunOutcome as RunOutcome
    from pyvmm.observe.translation import Translation as Translation

# Each public name and the module that defines it (a module's own name: the module).
_EXPORTS: dict[str, str] = {
    # building a machine
    "create_machine": "pyvmm.machine.facade",
    "MachineConfig": "pyvmm.machine.builder",
    "build_machine": "pyvmm.machine.builder",
    "Machine": "pyvmm.machine.builder",
    "CpuMode": "pyvmm.loaders.entry",
    "EntryPoint": "pyvmm.loaders.entry",
    # how a run ends
    "RunOutcome": "pyvmm.machine.outcome",
    "OutcomeKind": "pyvmm.machine.outcome",
    "EXIT_HALTED": "pyvmm.machine.outcome",
    "EXIT_USAGE": "pyvmm.machine.outcome",
    "EXIT_TRIPLE_FAULT": "pyvmm.machine.outcome",
    "EXIT_INTERNAL_ERROR": "pyvmm.machine.outcome",
    "EXIT_FAIL_ENTRY": "pyvmm.machine.outcome",
    "EXIT_GUEST_CRASH": "pyvmm.machine.outcome",
    "EXIT_UNHANDLED_EXCEPTION": "pyvmm.machine.outcome",
    "EXIT_VMM_ERROR": "pyvmm.machine.outcome",
    "EXIT_TIMEOUT": "pyvmm.machine.outcome",
    "EXIT_LIMIT": "pyvmm.machine.outcome",
    "EXIT_SIGNAL_BASE": "pyvmm.machine.outcome",
    "debug_exit_status": "pyvmm.devices.debug_exit",
    # looking inside
    "Registers": "pyvmm.arch.x86_64.register_snapshot",
    "Translation": "pyvmm.observe.translation",
    # devices
    "BusDevice": "pyvmm.devices.bus",
    # errors
    "errors": "pyvmm.errors",
    "PyvmmError": "pyvmm.errors",
    "UsageError": "pyvmm.errors",
    "LoaderError": "pyvmm.errors",
    "KvmUnavailable": "pyvmm.errors",
    "KvmError": "pyvmm.errors",
    "GuestMemoryError": "pyvmm.errors",
    "GuestPageFault": "pyvmm.errors",
    "BusError": "pyvmm.errors",
    "BusOverlap": "pyvmm.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    """Import a public name's module on first use, then keep the name here (PEP 562)."""
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pyvmm' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
