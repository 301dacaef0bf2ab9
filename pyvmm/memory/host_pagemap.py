"""Host virtual -> host physical, from /proc/self/pagemap.

Each 8-byte pagemap entry describes one host page of this process
(Documentation/admin-guide/mm/pagemap.rst): bit 63 present, bit 62 swapped,
bits 0-54 the page frame number. Without CAP_SYS_ADMIN the kernel reports
the frame number as zero; that is said plainly rather than shown as 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PAGEMAP_PATH = "/proc/self/pagemap"
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_SWAPPED = 1 << 62
PAGEMAP_PFN_MASK = (1 << 55) - 1
HOST_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class HostFrame:
    hva: int
    hpa: int | None  # None when unknown; `note` says why
    note: str | None = None

    @property
    def pfn(self) -> int | None:
        return None if self.hpa is None else self.hpa // HOST_PAGE_SIZE


def host_frame(hva: int, pagemap_path: str = PAGEMAP_PATH) -> HostFrame:
    """Where host virtual address `hva` of this process lives in host RAM."""
    page, offset = divmod(hva, HOST_PAGE_SIZE)
    try:
        fd = os.open(pagemap_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        return HostFrame(hva, None, f"cannot read {pagemap_path}: {error.strerror}")
    try:
        raw = os.pread(fd, 8, page * 8)
    except OSError as error:
        return HostFrame(hva, None, f"cannot read {pagemap_path}: {error.strerror}")
    finally:
        os.close(fd)
    if len(raw) != 8:
        return HostFrame(hva, None, f"{pagemap_path} has no entry for this address")
    entry = int.from_bytes(raw, "little")
    if entry & PAGEMAP_SWAPPED:
        return HostFrame(hva, None, "swapped out by the host")
    if not entry & PAGEMAP_PRESENT:
        return HostFrame(hva, None, "not resident: the host has not backed this page yet")
    pfn = entry & PAGEMAP_PFN_MASK
    if pfn == 0:
        return HostFrame(
            hva, None, "hidden: the host kernel shows frame numbers only to CAP_SYS_ADMIN"
        )
    return HostFrame(hva, pfn * HOST_PAGE_SIZE + offset)
