"""`check_vcpu_count` against made-up KVM capabilities: which -smp counts pass, and why not."""

from __future__ import annotations

import logging

import pytest

from pyvmm._kvm import lib
from pyvmm.errors import UsageError
from pyvmm.machine.builder import MAX_CPUS, check_vcpu_count


class FakeKvm:
    """Answers KVM_CHECK_EXTENSION for the two vCPU capabilities (0: not there)."""

    def __init__(self, recommended: int, maximum: int) -> None:
        self.answers = {lib.KVM_CAP_NR_VCPUS: recommended, lib.KVM_CAP_MAX_VCPUS: maximum}

    def check_extension(self, capability: int) -> int:
        return self.answers[capability]


def check(cpus: int, recommended: int = 2, maximum: int = 1024) -> None:
    check_vcpu_count(FakeKvm(recommended, maximum), cpus)  # type: ignore[arg-type]


def test_the_ceiling_is_255_xapic_ids() -> None:
    assert MAX_CPUS == 255
    check(255)
    with pytest.raises(UsageError) as refused:
        check(256)
    assert str(refused.value) == (
        "-smp 256: more than the 255 vCPUs pyvmm supports (xAPIC IDs are 8 bits, "
        "0xff is the broadcast ID, and pyvmm has no x2APIC)"
    )


def test_a_host_that_allows_fewer_says_so() -> None:
    check(8, maximum=8)
    with pytest.raises(UsageError) as refused:
        check(9, maximum=8)
    assert str(refused.value) == (
        "-smp 9: more than the 8 vCPUs this host's KVM allows (KVM_CAP_MAX_VCPUS)"
    )


def test_without_the_capabilities_the_api_docs_defaults_hold() -> None:
    # KVM API doc 4.7: no KVM_CAP_NR_VCPUS means 4; no KVM_CAP_MAX_VCPUS, the same.
    check(4, recommended=0, maximum=0)
    with pytest.raises(UsageError, match="more than the 4 vCPUs this host's KVM allows"):
        check(5, recommended=0, maximum=0)


def test_zero_vcpus_is_refused() -> None:
    with pytest.raises(UsageError, match="at least one vCPU"):
        check(0)


def test_more_than_recommended_is_logged_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pyvmm"):
        check(2, recommended=2)
        assert caplog.messages == []
        check(3, recommended=2)
    assert caplog.messages == [
        "-smp 3: more vCPUs than this host's KVM recommends (KVM_CAP_NR_VCPUS = 2): "
        "they share its CPUs"
    ]
