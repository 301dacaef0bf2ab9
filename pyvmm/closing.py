"""A mixin for objects that own a resource and release it in `close()`."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from types import TracebackType
    from typing import TypeVar

    _T = TypeVar("_T", bound="ClosesOnExit")


class ClosesOnExit:
    """`with obj:` closes it on the way out, exception or not."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
