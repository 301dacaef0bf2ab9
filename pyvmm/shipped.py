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

import importlib.util
import os
import site
import sys
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path, PurePosixPath

from pyvmm.errors import PyvmmError

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DIR_NAME = "_shipped"
# The repository directories a wheel carries. setup.py copies the same ones.
SHIPPED_DIRECTORIES = ("guests", "benchmarks/kernels")
GUESTS_DIRECTORY = "guests"


class ShippedFileMissing(PyvmmError):
    """A file pyvmm ships (a guest, the benchmark kernels) is not where it belongs."""


def data_root(package_dir: Path = PACKAGE_DIR) -> Path:
    """The directory that holds the shipped files at their repository-relative paths.

    `package_dir/_shipped` in an installed wheel, else the directory above
    the package: the checkout, whether pyvmm runs from it directly or
    through an editable install.
    """
    shipped = package_dir / SHIPPED_DIR_NAME
    return shipped if shipped.is_dir() else package_dir.parent


def shipped_file(name: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The path of the shipped file `name`, given as in the repository ("guests/hello.bin").

    Only files under SHIPPED_DIRECTORIES are shipped. Raises
    ShippedFileMissing when `name` is not one of them or is not there
    (a partial installation).
    """
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


def resolve_image(path: str, package_dir: Path = PACKAGE_DIR) -> str:
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


@dataclass(frozen=True)
class PyvmmChild:
    """`python -m pyvmm ARGS` for a child that imports the parent's pyvmm package."""

    argv: list[str]
    env: dict[str, str]


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
    parent = PACKAGE_DIR.parent
    if parent not in _site_directories():
        env["PYTHONPATH"] = os.pathsep.join(
            entry for entry in (str(parent), env.get("PYTHONPATH")) if entry
        )
    return PyvmmChild([sys.executable, "-m", "pyvmm", *args], env)


def _site_directories() -> set[Path]:
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
    installed = PathFinder.find_spec("pyvmm", site.getsitepackages())
    locations = installed.submodule_search_locations if installed else None
    if not locations or PathFinder.find_spec("pyvmm._kvm", list(locations)) is None:
        return
    os.execv(sys.executable, [sys.executable, "-I", "-m", module, *sys.argv[1:]])
