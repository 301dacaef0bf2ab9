"""Checks that an image a loader placed can be entered with pyvmm's own CPU set-up.

Loaders know formats, not the VMM: the GDT, page tables, TSS and boot stack
pyvmm writes into guest memory, or how far its page tables reach, are
checked here, after loading and before anything runs.
"""

from __future__ import annotations

from pyvmm.arch.x86_64 import layout
from pyvmm.arch.x86_64.cpu import needs_vmm_tables
from pyvmm.errors import BadEntryPoint, LoaderError
from pyvmm.loaders.entry import CpuMode, EntryPoint


def check_entry_placement(entry: EntryPoint) -> None:
    """Raise a LoaderError (exit status 2) when pyvmm could not start `entry`."""
    check_clear_of_vmm(entry)
    check_entry_mapped(entry)


def check_entry_mapped(entry: EntryPoint) -> None:
    """Refuse an entry point the VMM's identity-mapped page tables do not reach.

    The image may go on above 4 GiB (the guest can map that itself), but its
    first instruction has to be fetched through pyvmm's tables.
    """
    if entry.mode in (CpuMode.LONG, CpuMode.USER) and entry.entry >= layout.IDENTITY_MAP_END:
        raise BadEntryPoint(
            f"entry point 0x{entry.entry:x} is above 4 GiB: pyvmm's {entry.mode.value}-mode "
            "page tables map only the low 4 GiB (load the image lower or enter it below 4 GiB)"
        )


def check_clear_of_vmm(entry: EntryPoint) -> None:
    """Refuse an image that the VMM's own GDT, page tables or stack would overwrite."""
    for start, end, what in layout.reserved_ranges(needs_vmm_tables(entry.mode)):
        if entry.image_start < end and start < entry.image_end:
            raise LoaderError(
                f"image at 0x{entry.image_start:x}..0x{entry.image_end:x} overlaps {what} "
                f"at 0x{start:x}..0x{end:x}; load it elsewhere (--load-addr)"
            )
