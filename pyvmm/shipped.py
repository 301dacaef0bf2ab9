"""What an installed pyvmm carries with it, and how to start that same pyvmm again.

The guests (`guests/`) and the benchmark kernels (`benchmarks/kernels/`) are
files of the repository, not Python modules. A wheel carries copies of them
in `pyvmm/_shipped/`, at their repository-relative paths (setup.py's build
step copies them there); a checkout, or an editable install of one, has no
`_shipped/` and uses the repository's own files beside the package.
`shipped_file("guests/hello.bin")` finds the file either way, the way QEMU
finds its firmware in its data directory.

A child process that runs pyvmm again must import the pyvmm its parent
imported. `python -m pyvmm` puts the current directory first on sys.path, so
a child started inside a checkout would import the checkout, which after a
non-editable install has no compiled `pyvmm._kvm`. `pyvmm_child` builds the
command and environment for a child that imports this very package, to be run
in a directory that holds no `pyvmm` (a fresh temporary directory).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

from pyvmm.errors import PyvmmError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from pathlib import Path

SHIPPED_DIR_NAME = "_shipped"
# The repository directories a wheel carries. setup.py copies the same ones.
SHIPPED_DIRECTORIES = ("guests", "benchmarks/kernels")
GUESTS_DIRECTORY = "guests"


class ShippedFileMissing(PyvmmError):
    """A file pyvmm ships (a guest, the benchmark kernels) is not where it belongs."""


# PACKAGE_DIR, the package's directory, is computed on first use (the module's
# `__getattr__`): `pyvmm boot IMAGE` with IMAGE in the current directory needs no pathlib.
@functools.cache
def _package_dir() -> Path:
    """PACKAGE_DIR: the directory of this package, with symbolic links resolved."""
    from pathlib import Path

    return Path(__file__).resolve().parent


def __getattr__(name: str) -> object:
    if name == "PACKAGE_DIR":
        return _package_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "PACKAGE_DIR"})


def data_root(package_dir: Path | None = None) -> Path:
    """The directory that holds the shipped files at their repository-relative paths.

    `package_dir/_shipped` in an installed wheel, else the directory above
    the package: the checkout, whether pyvmm runs from it directly or
    through an editable install.
    """
    package_dir = _package_dir() if package_dir is None else package_dir
    shipped = package_dir / SHIPPED_DIR_NAME
    return shipped if shipped.is_dir() else package_dir.parent


def shipped_file(name: str, package_dir: Path | None = None) -> Path:
    """The path of the shipped file `name`, given as in the repository ("guests/hello.bin").

    Only files under SHIPPED_DIRECTORIES are shipped. Raises
    ShippedFileMissing when `name` is not one of them or is not there
    (a partial installation).
    """
    from pathlib import PurePosixPath

    parts = PurePosixPath(name).parts
    relative = "/".join(parts)
    if (
        not parts
        or PurePosixPath(name).is_absolute()
        or ".." in parts
        or not any(relative.startswith(f"{directory}/") for directory in SHIPPED_DIRECTORIES)
    ):
        raise ShippedFileMissing(
            f"{name} is not a file pyvmm ships (it ships {', '.join(SHIPPED_DIRECTORIES)})"
        )
    root = data_root(package_dir)
    path = root.joinpath(*parts)
    if not path.is_file():
        raise ShippedFileMissing(f"{name} is missing from this pyvmm installation ({root})")
    return path


def resolve_image(path: str, package_dir: Path | None = None) -> str:
    """`path` itself, unless it does not exist here but names a shipped guest.

    `pyvmm boot guests/hello.bin` then boots the shipped hello.bin from any
    directory, while a file of that name in the current directory still
    wins. Anything else (an absolute path, `..`, a name outside guests/, a
    guest pyvmm does not ship) comes back unchanged, for the caller to
    report as it reports any missing file.
    """
    if os.path.lexists(path):
        return path
    name = os.path.normpath(path)
    if not name.startswith(f"{GUESTS_DIRECTORY}{os.sep}"):
        return path
    try:
        return str(shipped_file(name, package_dir))
    except ShippedFileMissing:
        return path


# Sources a Makefile builds a guest from when it names the guest without its extension.
SOURCE_SUFFIXES = (".s", ".S", ".c")


class BuildHint:
    """How to build a missing file: the `make` command to run, and where its sources are.

    Read-only once made; equal when both fields are.
    """

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("command", "sources")

    def __init__(self, command: str, sources: str) -> None:
        self.command = command
        self.sources = sources

    def __eq__(self, other: object) -> bool:
        if type(other) is not BuildHint:
            return NotImplemented
        return (self.command, self.sources) == (other.command, other.sources)

    def __repr__(self) -> str:
        return f"BuildHint(command={self.command!r}, sources={self.sources!r})"


def build_hint(path: str, package_dir: Path | None = None) -> BuildHint | None:
    """How to build the missing file `path` from sources that lie beside it, or None.

    `path` is buildable when the Makefile in its directory, or in the
    directory above, names it: by its name (`boot.bin`, `tests/spin.bin`),
    or by its name without the extension when a source of that name lies
    beside it (`tests/spin` with `tests/spin.s`). The sources are looked for
    where `path` points, then, for a name under guests/, among the files
    pyvmm ships (a wheel ships guests/template's sources, not its binaries).
    Sources here are built with `make -C DIR`; shipped ones with `make -f
    SHIPPED/Makefile OUT=DIR` (GNU make keeps the current directory with -f, so
    the file is built where `path` names it, and the installation is not
    written to).
    """
    from pathlib import Path

    local = _makefile_naming(Path(path))
    if local is not None:
        directory = os.path.normpath(local)
        command = "make" if directory == "." else f"make -C {directory}"
        return BuildHint(command, directory)
    name = os.path.normpath(path)
    if os.path.isabs(name) or not name.startswith(f"{GUESTS_DIRECTORY}{os.sep}"):
        return None
    root = data_root(package_dir)
    shipped = _makefile_naming(root / name)
    if shipped is None:
        return None
    out = os.path.relpath(shipped, root)
    return BuildHint(f"make -f {shipped / 'Makefile'} OUT={out}", str(shipped))


def _makefile_naming(target: Path) -> Path | None:
    """The directory, target's own or the one above, whose Makefile names `target`."""
    import re

    for directory in dict.fromkeys((target.parent, target.parent.parent)):
        makefile = directory / "Makefile"
        try:
            text = makefile.read_text(errors="replace")
        except OSError:  # none there (or unreadable): not a build pyvmm can point at
            continue
        relative = target.relative_to(directory)
        names = [relative.as_posix()]
        stem = relative.with_suffix("")
        if any(target.with_suffix(suffix).is_file() for suffix in SOURCE_SUFFIXES):
            names.append(stem.as_posix())
        if any(re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", text) for name in names):
            return directory
    return None


class PyvmmChild:
    """`python -m pyvmm ARGS` for a child that imports the parent's pyvmm package (read-only)."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("argv", "env")

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env


def pyvmm_child(*args: str, cwd: Path) -> PyvmmChild:
    """The command and environment to run `python -m pyvmm *args` in directory `cwd`.

    The child runs the parent's interpreter. When the parent's pyvmm does
    not come from a site directory (a checkout on sys.path or PYTHONPATH),
    PYTHONPATH leads with the directory above it, so the child imports the
    same tree. `cwd` must hold no `pyvmm` of its own (ValueError): `-m` puts
    it first on the child's sys.path.
    """
    if (cwd / "pyvmm").exists():
        raise ValueError(f"a child started in {cwd} would import {cwd / 'pyvmm'}")
    env = dict(os.environ)
    parent = _package_dir().parent
    if parent not in _site_directories():
        env["PYTHONPATH"] = os.pathsep.join(
            entry for entry in (str(parent), env.get("PYTHONPATH")) if entry
        )
    return PyvmmChild([sys.executable, "-m", "pyvmm", *args], env)


def _site_directories() -> set[Path]:
    import site
    from pathlib import Path

    directories = [*site.getsitepackages(), site.getusersitepackages()]
    return {Path(directory).resolve() for directory in directories}


def run_installed_if_shadowed(module: str) -> None:
    """Re-run `python -m module` from the installation if an unbuilt checkout shadows it.

    `python -m benchmarks` in a checkout imports the checkout (the current
    directory comes first on sys.path); after a non-editable install its
    pyvmm has no compiled `pyvmm._kvm`, while the installed one does. Then
    this replaces the process with `python -I -m module ARGS` (isolated
    mode: the current directory is not on sys.path, on Python 3.10 too).
    Returns when there is nothing better to run.
    """
    if sys.flags.isolated or importlib.util.find_spec("pyvmm._kvm") is not None:
        return
    import site
    from importlib.machinery import PathFinder

    installed = PathFinder.find_spec("pyvmm", site.getsitepackages())
    locations = installed.submodule_search_locations if installed else None
    if not locations or PathFinder.find_spec("pyvmm._kvm", list(locations)) is None:
        return
    os.execv(sys.executable, [sys.executable, "-I", "-m", module, *sys.argv[1:]])
