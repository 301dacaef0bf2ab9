"""Test layers: tests/unit never opens /dev/kvm; tests/integration boots real guests.

Integration tests are marked `kvm` and skipped when /dev/kvm cannot be opened,
unless PYVMM_REQUIRE_KVM=1 (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KVM_PATH = "/dev/kvm"


def kvm_problem() -> str | None:
    """None when /dev/kvm opens read/write, else why not."""
    try:
        fd = os.open(KVM_PATH, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"cannot open {KVM_PATH}: {error.strerror}"
    os.close(fd)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = REPO / "tests" / "integration"
    problem = kvm_problem()
    required = os.environ.get("PYVMM_REQUIRE_KVM") == "1"
    for item in items:
        if integration in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kvm)
        if problem and item.get_closest_marker("kvm"):
            if required:
                item.add_marker(pytest.mark.usefixtures("_kvm_required_but_missing"))
            else:
                item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture
def _kvm_required_but_missing() -> None:
    pytest.fail(f"PYVMM_REQUIRE_KVM=1 but {kvm_problem()}")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that another socket holds for the test's duration."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]
