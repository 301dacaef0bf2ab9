"""syscall_clock's output, read into per-call times (no KVM, no compiler)."""

from __future__ import annotations

import pytest

from benchmarks.syscall_clock import parse_clock
from pyvmm._kvm import lib


def test_ioctls_are_named_by_request_and_other_calls_by_name() -> None:
    text = (
        f"ioctl {lib.KVM_RUN:#x} 15 150000\n"
        f"ioctl {lib.KVM_CREATE_VM:#x} 1 190000\n"
        "ioctl 0x5401 2 2000\n"  # TCGETS: not KVM's, kept by number
        "close 0 3 250000\n"
        "mmap 0 2 5000\n"
        "munmap 0 0 0\n"
    )
    times = parse_clock(text)
    assert times.calls == {
        "KVM_RUN": 15,
        "KVM_CREATE_VM": 1,
        "ioctl 0x5401": 2,
        "close": 3,
        "mmap": 2,
        "munmap": 0,
    }
    assert times.total_ns == 150000 + 190000 + 2000 + 250000 + 5000
    per_cycle = times.per_cycle(5)
    assert list(per_cycle)[:3] == ["close", "KVM_CREATE_VM", "KVM_RUN"]  # the costliest first
    assert per_cycle["KVM_RUN"] == [3.0, 0.03]
    assert per_cycle["close"] == [0.6, 0.05]


def test_a_request_counted_in_two_slots_is_added_up() -> None:
    # Two threads may each claim a slot for the same new request.
    text = f"ioctl {lib.KVM_RUN:#x} 4 400\nioctl {lib.KVM_RUN:#x} 6 600\n"
    times = parse_clock(text)
    assert (times.calls, times.ns) == ({"KVM_RUN": 10}, {"KVM_RUN": 1000})


def test_check_extension_and_capabilities_do_not_collide() -> None:
    # KVM_CAP_* numbers are small integers: none may name an ioctl.
    times = parse_clock(f"ioctl {lib.KVM_CHECK_EXTENSION:#x} 5 1000\n")
    assert times.calls == {"KVM_CHECK_EXTENSION": 5}


def test_a_malformed_line_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_clock("ioctl 0xae80 15\n")
