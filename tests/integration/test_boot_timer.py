"""The boot timer (port 0x3f0): a guest's write of 123 is timed from VM creation by --stats.

guests/tests/boot_timer.s writes 7 (ignored), then 123 twice, prints
"booted" and halts.
"""

from __future__ import annotations

import re

from tests.integration.helpers import guest, run_pyvmm

BOOT_TIME = re.compile(
    r"^boot time: (\d+\.\d{3}) s from VM creation to the guest's boot-timer write "
    r"\(port 0x3f0\); 1 later write of 123$",
    re.MULTILINE,
)


def test_stats_prints_the_time_of_the_guests_boot_timer_write() -> None:
    result = run_pyvmm("boot", "--stats", guest("tests/boot_timer.bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "booted\n"
    found = BOOT_TIME.search(result.stderr)
    assert found is not None, result.stderr
    assert 0 < float(found.group(1)) < 30


def test_without_the_write_or_without_stats_there_is_no_boot_time() -> None:
    result = run_pyvmm("boot", "--stats", guest("hello.bin"))
    assert result.returncode == 0 and "boot time" not in result.stderr
    result = run_pyvmm("boot", guest("tests/boot_timer.bin"))
    assert result.returncode == 0 and "boot time" not in result.stderr
