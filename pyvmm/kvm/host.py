"""Which KVM backend this host runs: hardware VT-x/AMD-V or a software one."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from pathlib import Path

# Modules that provide KVM, most specific first; kvm_pvm runs guests without
# hardware virtualization (ring-0 guest code is emulated).
_BACKENDS = (
    ("kvm_pvm", "kvm_pvm (software, no VT-x/AMD-V)"),
    ("kvm_intel", "kvm_intel (Intel VT-x)"),
    ("kvm_amd", "kvm_amd (AMD-V)"),
)


def kvm_backend(sys_module: Path | str = "/sys/module") -> str:
    """A short description of the loaded KVM backend, or 'unknown'."""
    for module, description in _BACKENDS:
        if os.path.exists(os.path.join(sys_module, module)):
            return description
    return "unknown"
