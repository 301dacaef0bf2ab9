"""Teaching demos: Popek & Goldberg's three properties of a VMM, and paravirtualization,
shown on real guests.

Popek and Goldberg (1974) define a virtual machine monitor by three
properties: equivalence, efficiency and resource control. Each of those demos
runs real guests under pyvmm, prints the evidence as a table and says in a
few sentences what it shows, on this host, about one property. The
paravirtualization demo measures full virtualization (an emulated UART)
against a guest that cooperates through virtio.

`pyvmm demo` lists them; `pyvmm demo NAME` runs one. A demo exits 0 when the
evidence supports the property, 4 when it does not, 2 when it cannot run:
something failed that says nothing about the property (KVM cannot be used, a
shipped guest is missing, the hostile VM's process did not start), and
stderr says what in one line. The guests and kernels ship with pyvmm
(pyvmm.shipped), so the demos run from any directory.
"""

from __future__ import annotations

import importlib
import sys
from typing import TextIO

from pyvmm.demos.common import CANNOT_RUN, DemoCannotRun
from pyvmm.errors import PyvmmError

# name -> (module, one line for the list)
DEMOS: dict[str, tuple[str, str]] = {
    "equivalence": (
        "pyvmm.demos.equivalence",
        "the same kernels natively and in a guest at CPL3 and CPL0: bit-identical results",
    ),
    "efficiency": (
        "pyvmm.demos.efficiency",
        "2,000,000 guest instructions, a few dozen VM exits; ring-3 vs ring-0 speed",
    ),
    "isolation": (
        "pyvmm.demos.isolation",
        "a hostile guest attacks memory, ports and the console while another VM runs",
    ),
    "paravirtualization": (
        "pyvmm.demos.paravirtualization",
        "the same bytes through an emulated UART and virtio; virtio-blk; the balloon",
    ),
    "binary-translation": (
        "pyvmm.demos.translation",
        "the same kernels natively, at CPL3, translated by unicorn, at CPL0: the ladder",
    ),
    "sensitive-instructions": (
        "pyvmm.demos.sensitive",
        "x86's holes: sensitive unprivileged instructions at CPL3, UMIP, a tiny translator",
    ),
    "containers": (
        "pyvmm.demos.containers",
        "one workload as a process, an OCI container and a VM: start-up, memory, crossings",
    ),
}


def list_demos() -> str:
    width = max(len(name) for name in DEMOS)
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in DEMOS.items()]
    return "demos (run one with: pyvmm demo NAME):\n" + "\n".join(lines) + "\n"


def run_demo(name: str, out: TextIO) -> int:
    """Run demo `name`, printing its report on `out`; return its exit status (see above)."""
    module = importlib.import_module(DEMOS[name][0])
    try:
        status: int = module.run(out)
    except (DemoCannotRun, PyvmmError) as error:
        # PyvmmError: no usable KVM, a missing shipped file, a VM that could not be built.
        out.flush()
        print(f"pyvmm demo {name} cannot run: {error}", file=sys.stderr)
        return CANNOT_RUN
    return status
