"""Anonymous host memory that backs guest RAM."""

from __future__ import annotations

from pyvmm._kvm import ffi, lib
from pyvmm.closing import ClosesOnExit
from pyvmm.errors import PyvmmError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any


PAGE_SIZE = 4096


class HostMapping(ClosesOnExit):
    """An anonymous, private, lazily committed mmap of `size` bytes.

    MAP_NORESERVE: the host commits a page only when the guest (or the VMM)
    first touches it, so a large `-m` costs nothing until used.
    """

    def __init__(self, size: int) -> None:
        pointer = lib.pyvmm_mmap(
            size,
            lib.PROT_READ | lib.PROT_WRITE,
            lib.MAP_PRIVATE | lib.MAP_ANONYMOUS | lib.MAP_NORESERVE,
            -1,
            0,
        )
        if pointer == ffi.NULL:
            raise PyvmmError(f"cannot map {size} bytes of host memory for guest RAM")
        self.size = size
        self._pointer: Any = pointer
        self.hva = int(ffi.cast("uintptr_t", pointer))
        # A writable buffer over the whole mapping; slicing it copies nothing.
        self.view = memoryview(ffi.buffer(pointer, size))

    def discard(self, offset: int, size: int) -> None:
        """Give [offset, offset + size) back to the host (madvise MADV_DONTNEED, madvise(2)).

        The host frees the pages; the next read of them gives zeros, as in a
        fresh page. `offset` and `size` are in whole pages, inside the
        mapping (ValueError otherwise); an OSError carries madvise's errno.
        """
        if offset < 0 or size < 0 or offset + size > self.size or (offset | size) % PAGE_SIZE:
            raise ValueError(f"cannot discard {size} bytes at offset 0x{offset:x}")
        if size and lib.madvise(self._pointer + offset, size, lib.MADV_DONTNEED) < 0:
            raise OSError(ffi.errno, "madvise(MADV_DONTNEED)")

    @property
    def closed(self) -> bool:
        return self._pointer is None

    def close(self) -> None:
        if self._pointer is not None:
            self.view.release()
            lib.munmap(self._pointer, self.size)
            self._pointer = None
