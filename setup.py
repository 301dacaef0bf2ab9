"""The cffi extension and the shipped files: setuptools reads the rest from pyproject.toml.

A wheel carries the guests and the benchmark kernels in pyvmm/_shipped/, at
their repository-relative paths, where pyvmm.shipped.shipped_file finds
them. An editable install needs no copy: it finds them in the checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# The same list as pyvmm.shipped.SHIPPED_DIRECTORIES (setup.py must not import pyvmm).
SHIPPED_DIRECTORIES = ("guests", "benchmarks/kernels")
# Binaries and what builds them; never build leftovers (*.o, *.tmp).
SHIPPED_PATTERNS = ("*.bin", "*.elf", "*.s", "*.inc", "*.ld", "*.c", "Makefile")


def shipped_files() -> list[Path]:
    files: set[Path] = set()
    for directory in SHIPPED_DIRECTORIES:
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"{directory}/ is missing: pyvmm's wheel must ship it")
        for pattern in SHIPPED_PATTERNS:
            files.update(path for path in Path(directory).rglob(pattern) if path.is_file())
    return sorted(files)


class BuildPyWithShippedFiles(build_py):
    """build_py, plus a copy of the shipped files into pyvmm/_shipped/ (wheels only)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        shipped = Path(self.build_lib, "pyvmm", "_shipped")
        shutil.rmtree(shipped, ignore_errors=True)  # no file left over from an older build
        for source in shipped_files():
            target = shipped / source
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))


setup(
    cffi_modules=["pyvmm/_kvm_build.py:ffibuilder"],
    cmdclass={"build_py": BuildPyWithShippedFiles},
)
