"""Anonymous host memory that backs guest RAM."""

from __future__ import annotations

from pyvmm._kvm import ffi, lib
from pyvmm.closing import ClosesOnExit
from pyvmm.errors import PyvmmError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any


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

    @property
    def closed(self) -> bool:
        return self._pointer is None

    def close(self) -> None:
        if self._pointer is not None:
            self.view.release()
            lib.munmap(self._pointer, self.size)
            self._pointer = None
