"""`python -m pyvmm` is the same as the `pyvmm` command."""

from pyvmm.cli import console_main
from pyvmm.shipped import run_installed_if_shadowed

# Inside an unbuilt checkout after `pip install .`, run the installed pyvmm instead.
run_installed_if_shadowed("pyvmm")
console_main()
