"""The keyboard controller and the three ways a PC guest resets, against QEMU.

guests/tests/i8042_probe.elf probes the 8042 as Linux's drivers do and
prints the answers; reset_kbd.elf (0xfe to port 0x64 after the input-buffer
wait), reset_port92.elf and reset_cf9.elf reset the machine. Under QEMU with
-no-reboot a reset exits 0; pyvmm ends the run as `reset`, status 0, and says
how the guest asked. With --reboot pyvmm starts the machine again, RAM zeroed
(every boot is the guest's boot 1), until --timeout or --max-exits, which
count the whole session; QEMU without -no-reboot keeps RAM across the reset,
so there the guest's counter reaches 3 and it ends itself (status 33).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.integration.helpers import GUESTS, guest, run_pyvmm
from tests.integration.qemu import QEMU_BASE, require_qemu, run_qemu

PROBE_DONE = 67  # debug-exit 0x21
THIRD_BOOT = 33  # debug-exit 0x10: reset.inc's counter reached 3
RESET_GUESTS = {
    "tests/reset_kbd.elf": "command 0xfe (pulse reset) to the keyboard controller, port 0x64",
    "tests/reset_port92.elf": "0x03 to port 0x92, System Control Port A (bit 0: fast reset)",
    "tests/reset_cf9.elf": "0x06 to port 0xcf9, the Reset Control Register (hard reset)",
}


def test_i8042_probe_answers_as_under_qemu() -> None:
    qemu = run_qemu(GUESTS / "tests/i8042_probe.elf")
    pyvmm = run_pyvmm("boot", guest("tests/i8042_probe.elf"))
    assert qemu.returncode == PROBE_DONE, qemu.stderr
    assert pyvmm.returncode == PROBE_DONE, pyvmm.stderr
    assert pyvmm.stdout == qemu.stdout.decode()
    lines = pyvmm.stdout.splitlines()
    assert "i8042: self-test (0xaa): status 1d, answer 55" in lines
    assert "i8042: keyboard reset (0xff): fa aa" in lines
    assert "--" not in pyvmm.stdout  # every command was answered


@pytest.mark.parametrize("image", sorted(RESET_GUESTS))
def test_a_reset_ends_the_run_with_status_0_as_qemu_no_reboot(image: str) -> None:
    qemu = run_qemu(GUESTS / image)
    pyvmm = run_pyvmm("boot", guest(image))
    assert qemu.returncode == 0, qemu.stdout + qemu.stderr
    assert pyvmm.returncode == 0, pyvmm.stdout + pyvmm.stderr
    assert pyvmm.stdout == qemu.stdout.decode()
    name = image.split("/")[1].removesuffix(".elf")
    assert pyvmm.stdout.splitlines()[0] == f"{name}: boot 1"
    assert "still running" not in pyvmm.stdout
    assert pyvmm.stderr.splitlines() == [
        f"pyvmm: guest reset the machine: {RESET_GUESTS[image]}: the run ends, as with "
        "qemu -no-reboot (--reboot restarts the machine)"
    ]


def test_reboot_restarts_a_cold_machine_until_the_session_timeout() -> None:
    result = run_pyvmm("boot", "--reboot", "--timeout", "3", guest("tests/reset_kbd.elf"))
    assert result.returncode == 124, result.stderr
    boots = re.findall(r"^reset_kbd: boot (\d)$", result.stdout, re.MULTILINE)
    assert len(boots) >= 2 and set(boots) == {"1"}  # RAM zeroed at every boot
    # The CMOS, battery-backed, counts every boot (a byte: it wraps after 255).
    cmos = re.findall(r"^reset_kbd: CMOS boot 0x([0-9a-f]{2})$", result.stdout, re.MULTILINE)
    # (The timeout may fall between a boot's two lines.)
    assert len(cmos) in (len(boots) - 1, len(boots))
    assert [int(count, 16) for count in cmos] == [n % 256 for n in range(1, len(cmos) + 1)]
    match = re.search(
        r"^pyvmm: guest did not finish within 3\.0 s \(boot (\d+): --reboot restarted the "
        r"machine (once|\d+ times)\)$",
        result.stderr,
        re.MULTILINE,
    )
    assert match is not None, result.stderr
    assert int(match.group(1)) >= len(boots)


def test_reboot_counts_max_exits_over_the_whole_session() -> None:
    one_boot = run_pyvmm("boot", "-v", guest("tests/reset_port92.elf"))
    counted = re.search(r"reset after (\d+) exits", one_boot.stderr)
    assert counted is not None, one_boot.stderr
    exits = int(counted.group(1))
    limit = 2 * exits + exits // 2  # the third boot reaches it
    result = run_pyvmm(
        "boot", "--reboot", "--max-exits", str(limit), guest("tests/reset_port92.elf")
    )
    assert result.returncode == 126, result.stderr
    assert result.stdout.count("reset_port92: boot 1\n") == 3
    assert (
        f"guest reached the limit of {limit} exits (--max-exits) (boot 3: --reboot restarted "
        "the machine 2 times)" in result.stderr
    )


@pytest.mark.parametrize("image", sorted(RESET_GUESTS))
def test_qemu_keeps_ram_across_its_reboot_where_pyvmm_boots_cold(image: str) -> None:
    """QEMU without -no-reboot: the RAM counter goes up; pyvmm --reboot: always 1; CMOS: both."""
    command = [require_qemu(), *(a for a in QEMU_BASE if a != "-no-reboot")]
    qemu = subprocess.run(
        [*command, "-m", "128M", "-kernel", str(GUESTS / image)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    name = image.split("/")[1].removesuffix(".elf")
    assert qemu.returncode == THIRD_BOOT, qemu.stdout + qemu.stderr
    assert re.findall(rf"^{name}: boot (\d)$", qemu.stdout.decode(), re.MULTILINE) == [
        "1",
        "2",
        "3",
    ]
    pyvmm = run_pyvmm("boot", "--reboot", "--timeout", "2", guest(image))
    assert pyvmm.returncode == 124, pyvmm.stderr
    boots = re.findall(rf"^{name}: boot (\d)$", pyvmm.stdout, re.MULTILINE)
    assert len(boots) >= 3 and set(boots) == {"1"}, pyvmm.stdout[-500:]
    # What the RTC's battery keeps, both keep: the CMOS count goes up in each.
    cmos_pattern = rf"^{name}: CMOS boot 0x([0-9a-f]{{2}})$"
    qemu_cmos = re.findall(cmos_pattern, qemu.stdout.decode(), re.MULTILINE)
    assert qemu_cmos == ["01", "02", "03"]
    pyvmm_cmos = re.findall(cmos_pattern, pyvmm.stdout, re.MULTILINE)
    assert pyvmm_cmos[:3] == qemu_cmos


def test_reboot_changes_nothing_for_a_guest_that_does_not_reset() -> None:
    result = run_pyvmm("boot", "--reboot", guest("tests/i8042_probe.elf"))
    assert result.returncode == PROBE_DONE, result.stderr
    assert result.stdout.count("i8042: command byte (0x20): 61") == 1


def test_reboot_and_gdb_are_refused_together() -> None:
    result = run_pyvmm("boot", "--reboot", "-s", guest("tests/reset_kbd.elf"))
    assert result.returncode == 2
    assert result.stderr.startswith("pyvmm boot: the gdb stub debugs one machine")
