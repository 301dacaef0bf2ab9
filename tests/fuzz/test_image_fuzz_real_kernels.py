"""The image fuzzer on real Linux kernels: Debian's stock kernel and the small test kernel.

Mutated bzImages and vmlinux ELFs (header fields, truncation, bit flips) either
load, with every piece where the oracle's own parse says, or are refused in
one line. Marked `linux`: the kernels come from Debian's packages (cached).
"""

from __future__ import annotations

import pytest

from tests.fuzz.image_fuzz import real_kernels, run_campaign
from tests.linux import debian

pytestmark = pytest.mark.linux

CASES = 300


def test_mutated_real_kernels_load_or_are_refused_in_one_line() -> None:
    try:
        corpus = real_kernels()
    except debian.PackageUnavailable as error:
        pytest.skip(f"cannot download the package: {error}")
    assert {seed.name for seed in corpus} == {
        f"linux/real-{name}-{kind}" for name in ("tiny", "stock") for kind in ("bzimage", "vmlinux")
    }
    report = run_campaign(CASES, seed=1, corpus=corpus)
    assert not report.failures, report.summary(10, True)
    # Every kernel both loads (unmutated, in 256 MiB) and is refused (mutated, or in less RAM).
    for name, outcomes in report.by_image.items():
        assert outcomes["loaded"] > 0 and outcomes["rejected"] > 0, (name, outcomes)
