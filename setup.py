"""Only the cffi extension lives here: setuptools reads the rest from pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["pyvmm/_kvm_build.py:ffibuilder"])
