"""The Linux kernels and initramfs the Linux tests and benchmarks boot.

Made at test time from Debian's packages and cached outside the checkout
(`$XDG_CACHE_HOME/pyvmm/linux`, or `~/.cache/pyvmm/linux`); nothing here is
committed but the recipes. `python -m tests.linux.kernels --all` prepares
everything by hand. See kernels.py for the pieces.
"""
