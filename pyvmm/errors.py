"""The exception tree. The library raises; only the CLI prints and exits.

`exit_status` is what the CLI returns for an error of that class: 2 for bad
usage or bad input (the user can fix the command line or the image), 70
(EX_SOFTWARE) when pyvmm itself could not go on: no usable /dev/kvm, a KVM
call that failed, an exit it cannot handle.

What the library says without raising goes to `logging`, through `Log`
(below), which imports logging only when a record can go somewhere.
"""

from __future__ import annotations

import errno as errno_module
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


class PyvmmError(Exception):
    """Root of every error pyvmm raises on purpose."""

    exit_status = 70


class UsageError(PyvmmError):
    """A command-line value that cannot be used (bad -m, bad address...)."""

    exit_status = 2


class KvmUnavailable(PyvmmError):
    """/dev/kvm is missing, not accessible, or too old for pyvmm."""


class KvmError(PyvmmError, OSError):
    """An ioctl on a KVM file descriptor failed.

    The message names the ioctl and the errno, e.g.
    ``KVM_CREATE_VM failed: EACCES (Permission denied)``.
    """

    def __init__(self, ioctl: str, err: int) -> None:
        name = errno_module.errorcode.get(err, f"errno {err}")
        message = f"{ioctl} failed: {name} ({os.strerror(err)})"
        OSError.__init__(self, err, message)
        self.ioctl = ioctl
        self.errno = err
        self.message = message

    def __str__(self) -> str:
        return self.message


class GuestMemoryError(PyvmmError):
    """An access to guest-physical memory outside every RAM slot."""

    def __init__(self, gpa: int, size: int, reason: str = "is not guest RAM") -> None:
        super().__init__(f"guest-physical range 0x{gpa:x}..0x{gpa + size:x} {reason}")
        self.gpa = gpa
        self.size = size


class BusError(PyvmmError):
    """A device range that cannot be inserted on a bus."""


class DeviceError(PyvmmError):
    """A device broke the bus's contract (see devices.bus.BusDevice): the run ends as vmm-error."""


class BusOverlap(BusError):
    """The new range overlaps a device already on the bus."""


class LoaderError(PyvmmError):
    """The guest image cannot be loaded. Subclasses name the format's problem."""

    exit_status = 2


class ImageTooLarge(LoaderError):
    """The image (or a segment of it) does not fit in guest RAM."""


class BadElf(LoaderError):
    """A truncated or inconsistent ELF file."""


class UnsupportedElf(LoaderError):
    """A well-formed ELF file pyvmm cannot boot (wrong machine, type...)."""


class BadEntryPoint(LoaderError):
    """The entry point lies outside the memory the image was loaded into."""


class GuestPageFault(PyvmmError):
    """A guest-virtual (linear) address the guest's page tables do not translate.

    Raised by the VMM's own accesses through the guest's paging (e.g.
    `Machine.read_virtual`) when the walk the MMU would make faults (Intel
    SDM vol. 3A, 4.7 "Page-Fault Exceptions": an entry not present, reserved
    bits set, a table outside RAM, a non-canonical address). Nothing is
    injected into the guest. `gva` and `size` are the access, `address` the
    first byte that does not translate, `reason` what the walk found.
    """

    def __init__(self, gva: int, size: int, address: int, reason: str) -> None:
        super().__init__(
            f"guest-virtual range 0x{gva:x}..0x{gva + size:x} does not translate "
            f"at 0x{address:x}: {reason}"
        )
        self.gva = gva
        self.size = size
        self.address = address
        self.reason = reason


# logging's levels (the same numbers as logging.DEBUG... without importing it).
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class Log:
    """`logging.getLogger(name)` for pyvmm's modules, with logging imported only when needed.

    Until something imports logging, nothing can have configured it: every
    logger is at the root's default level, WARNING, so a debug or an info
    record would be dropped. Here such a record is dropped without importing
    logging (which, with the traceback module it needs, costs milliseconds at
    start-up). A warning or an error imports it, and once anything has
    imported logging (a program that configures it, pytest) every record goes
    through `logging.getLogger(name)` as if pyvmm called it directly: the
    record names the caller's file, line and function.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Log({self.name!r})"

    def isEnabledFor(self, level: int) -> bool:
        if level < WARNING and "logging" not in sys.modules:
            return False
        return _logging().getLogger(self.name).isEnabledFor(level)

    def debug(self, message: str, *args: object, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            _logging().getLogger(self.name).debug(message, *args, **_caller(kwargs))

    def info(self, message: str, *args: object, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            _logging().getLogger(self.name).info(message, *args, **_caller(kwargs))

    def warning(self, message: str, *args: object, **kwargs: Any) -> None:
        _logging().getLogger(self.name).warning(message, *args, **_caller(kwargs))

    def error(self, message: str, *args: object, **kwargs: Any) -> None:
        _logging().getLogger(self.name).error(message, *args, **_caller(kwargs))


def _caller(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The record names the frame that called `Log`'s method, not the method."""
    return {**kwargs, "stacklevel": kwargs.get("stacklevel", 1) + 1}


# basicConfig's arguments, for the first time `Log` imports logging (see `configure_logging`).
_pending_config: dict[str, Any] | None = None


def configure_logging(**config: Any) -> None:
    """`logging.basicConfig(**config)`, once something is logged through `Log`.

    The CLI configures logging on every run; when nothing is ever logged
    (the usual run, without -v), logging is never imported. With a level
    below WARNING (-v), configure at once: `Log` drops debug and info
    records until logging is imported.
    """
    global _pending_config
    level = config.get("level", WARNING)
    if isinstance(level, int) and level >= WARNING and "logging" not in sys.modules:
        _pending_config = config
        return
    _pending_config = None
    _logging().basicConfig(**config)


def _logging() -> ModuleType:
    import logging

    global _pending_config
    config = _pending_config
    if config is not None:
        # Under logging's lock: a thread that comes second waits, then finds it done.
        logging.basicConfig(**config)
        _pending_config = None
    return logging
