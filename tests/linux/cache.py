"""Where the kernels and initramfs are kept, and how they are written there.

Everything lives under `$XDG_CACHE_HOME/pyvmm/linux` (`~/.cache/pyvmm/linux`
when XDG_CACHE_HOME is unset), never in the checkout. Results are written to
a temporary name and renamed, and each build holds a lock file, so that two
test runs sharing a cache never see half a kernel or build it twice at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyvmm" / "linux"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.chmod(mode)
    temporary.replace(path)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Progress:
    """Lines of progress on stderr: downloads and builds take minutes."""

    def __init__(self, stream: TextIO | None = sys.stderr, prefix: str = "pyvmm linux") -> None:
        self.stream = stream
        self.prefix = prefix
        self.echo_commands = stream is not None  # let apt print its own progress

    def say(self, message: str) -> None:
        if self.stream is not None:
            print(f"{self.prefix}: {message}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, what: str, times: dict[str, float], key: str) -> Iterator[None]:
        """Say `what...`, run the block, say how long it took, keep it in `times`."""
        self.say(f"{what}...")
        start = time.monotonic()
        yield
        times[key] = round(time.monotonic() - start, 2)
        self.say(f"{what}: {times[key]:.1f} s")


QUIET = Progress(stream=None)


def size_text(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.0f} KiB"
