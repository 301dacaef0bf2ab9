"""Guests that misbehave, and inputs that are wrong: one clear message, right exit status."""

from __future__ import annotations

import time

import pytest

from pyvmm.machine.outcome import EXIT_TRIPLE_FAULT
from tests.integration.helpers import REPO, guest, run_pyvmm


def test_triple_fault_is_reported_with_registers() -> None:
    result = run_pyvmm("boot", guest("tests/triple_fault.bin"))
    assert result.stdout == "about to triple fault\n"
    assert result.returncode == EXIT_TRIPLE_FAULT
    first, *dump = result.stderr.splitlines()
    assert first == (
        "pyvmm: guest triple-faulted (KVM_EXIT_SHUTDOWN) with no IDT (IDTR limit 0), so any "
        "exception ends in a triple fault; at RIP: 'ud2'"
    )
    assert any(line.startswith("RIP=") for line in dump)
    assert "Traceback" not in result.stderr


def test_guest_that_never_halts_is_stopped_by_timeout() -> None:
    started = time.monotonic()
    result = run_pyvmm("boot", "--timeout", "1", guest("tests/spin.bin"))
    elapsed = time.monotonic() - started
    assert result.stdout == "spinning\n"
    assert result.returncode == 124
    assert result.stderr.splitlines()[0] == "pyvmm: guest did not finish within 1.0 s"
    assert any(line.startswith("RIP=") for line in result.stderr.splitlines())
    assert elapsed < 30  # the run ended; a hang would hit the subprocess timeout


def test_missing_image() -> None:
    result = run_pyvmm("boot", "guests/no-such-image.bin")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no-such-image.bin" in result.stderr and "Traceback" not in result.stderr


def test_malformed_elf(tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = tmp_path / "broken.elf"
    image.write_bytes((REPO / "guests" / "elf64.elf").read_bytes()[:80])
    result = run_pyvmm("boot", str(image))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_image_larger_than_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = tmp_path / "big.bin"
    image.write_bytes(b"\xf4" * (3 << 20))
    result = run_pyvmm("boot", "-m", "2M", str(image))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    # Refused before it is read: a flat binary is copied whole, and 3 MiB is more than RAM.
    assert "is 3 MiB, larger than the 2 MiB of guest RAM" in result.stderr


@pytest.mark.parametrize("memory", ["0", "1K", "lots", "-5M", "100T"])
def test_impossible_memory_sizes(memory: str) -> None:
    result = run_pyvmm("boot", "-m", memory, guest("hello.bin"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pyvmm")
    assert result.stdout == ""


def test_missing_kvm_device() -> None:
    result = run_pyvmm("boot", guest("hello.bin"), env={"PYVMM_KVM_PATH": "/nonexistent/kvm"})
    assert result.returncode == 70
    assert result.stderr.startswith("pyvmm: cannot open /nonexistent/kvm: ENOENT")
    assert result.stderr.count("\n") == 1


def test_image_over_the_firmware_tables_is_refused() -> None:
    # pyvmm moves its own GDT, page tables and stack out of an image's way; the
    # firmware's tables stay where a guest looks for them.
    result = run_pyvmm("boot", "--mode", "long", "--load-addr", "0xe0000", guest("long.bin"))
    assert result.returncode == 2
    assert "image at 0xe0000..0x" in result.stderr and "load it elsewhere with --load-addr" in (
        result.stderr
    )


def test_bad_usage() -> None:
    result = run_pyvmm("boot", "--mode", "virtual-8086", guest("hello.bin"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid choice" in result.stderr


def test_long_mode_entry_above_the_identity_map_is_refused() -> None:
    # Found by the image fuzzer: it loaded, then triple-faulted on its first fetch.
    result = run_pyvmm(
        "boot", "-m", "5G", "--mode", "long", "--load-addr", "0x100000000", guest("long.bin")
    )
    assert result.returncode == 2
    assert result.stderr == (
        "pyvmm: entry point 0x100000000 is above 4 GiB: pyvmm's long-mode page tables map "
        "only the low 4 GiB; load it below 4 GiB (--load-addr)\n"
    )
