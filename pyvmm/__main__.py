"""`python -m pyvmm` is the same as the `pyvmm` command."""

from pyvmm.cli import console_main

console_main()
