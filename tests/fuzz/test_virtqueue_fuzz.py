"""CI's short virtqueue-fuzz run, and checks that the fuzzer reaches what it must.

The long campaign is `python -m tests.fuzz.virtqueue_fuzz --count 20000 --seed 1`.
No /dev/kvm needed: the devices run over guest memory with a hole.
"""

from __future__ import annotations

import logging

from tests.fuzz.virtqueue_fuzz import DEVICES, run_campaign, run_case

CI_SEED = 1
CI_COUNT = 600


def test_no_hostile_ring_escapes_the_transport_or_hangs_it() -> None:
    logging.getLogger("pyvmm").setLevel(logging.ERROR)  # each reset logs a warning
    report = run_campaign(CI_COUNT, CI_SEED)
    assert report.failures == [], report.summary()
    # The campaign is not vacuous: every device, refusals of several kinds, and
    # requests that were served.
    assert set(report.kinds) == set(DEVICES)
    assert {"AvailIndexJump", "BadDescriptor"} <= set(report.refusals), report.summary()
    assert len(report.refusals) >= 3, report.summary()
    assert report.needs_reset > 0 and report.used > 0


def test_a_case_depends_on_seed_and_number_alone() -> None:
    first, again = run_case(CI_SEED, 17), run_case(CI_SEED, 17)
    assert (first.kind, first.refusals, first.used, first.needs_reset) == (
        again.kind, again.refusals, again.used, again.needs_reset
    )  # fmt: skip
