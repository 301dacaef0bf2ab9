"""The binary-translation demo's translator (unicorn, no KVM) and its ladder rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyvmm.demos import translation, translator
from pyvmm.demos.common import detect_host
from pyvmm.demos.kernels import KernelRunError
from tests.unit.test_kernel_images import (
    python_int_loop,
    python_mem_checksum,
    python_prime_count,
)


@pytest.mark.parametrize("n", [0, 1, 1000, 4321])
def test_translated_int_loop_matches_its_definition(n: int) -> None:
    assert translator.run_translated("int_loop", n).result == python_int_loop(n)


@pytest.mark.parametrize("n", [0, 7, 9, 4096, 65536 + 5])
def test_translated_mem_checksum_matches_its_definition(n: int) -> None:
    assert translator.run_translated("mem_checksum", n).result == python_mem_checksum(n)


@pytest.mark.parametrize("n", [0, 2, 101, 7919])
def test_translated_sieve_counts_primes(n: int) -> None:
    assert translator.run_translated("sieve", n).result == python_prime_count(n)


def test_translated_run_is_timed_and_unknown_kernels_are_named() -> None:
    assert translator.run_translated("int_loop", 100_000).seconds > 0
    with pytest.raises(KernelRunError, match=r"no kernel 'nope'.*int_loop"):
        translator.run_translated("nope", 1)


def test_missing_unicorn_is_one_line_with_the_install_hint() -> None:
    """With unicorn unimportable the demo exits 2 (cannot run) before printing its page."""
    code = (
        "import sys; sys.modules['unicorn'] = None\n"
        "from pyvmm.cli import console_main\n"
        "sys.argv = ['pyvmm', 'demo', 'binary-translation']\n"
        "console_main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyvmm demo binary-translation cannot run: the unicorn package")
    assert "pip install unicorn" in lines[0]


def ladder(direct: float, translated: float, ring0: float) -> translation.KernelLadder:
    """A ladder whose native run took 1 ns per iteration and each way `ratio` ns."""
    ways = {}
    for way, ratio in zip(translation.WAYS, (1.0, direct, translated, ring0), strict=True):
        ways[way] = translation.Way(1000)
        ways[way].add(42, ratio * 1e-6)
    return translation.KernelLadder("k", ways, {1000: ways[translation.NATIVE]})


def test_ladder_rule() -> None:
    emulated = detect_host().__class__("kvm_pvm", None, True)
    hardware = detect_host().__class__("kvm_intel", "vmx", False)
    holds = [ladder(1.1, 1.0, 4000), ladder(2.0, 6.0, 1500)]
    assert translation.ladder_order_holds(holds, emulated)
    # Translation clearly faster than direct execution somewhere: not the ladder.
    assert not translation.ladder_order_holds([ladder(2.0, 1.0, 4000)], emulated)
    # Translation no dearer than direct execution overall.
    assert not translation.ladder_order_holds([ladder(1.1, 1.0, 4000)], emulated)
    # Emulated CPL0 must be far dearer than the other two ways; on VT-x it is not judged.
    assert not translation.ladder_order_holds([ladder(1.0, 6.0, 30)], emulated)
    assert translation.ladder_order_holds([ladder(1.0, 6.0, 1.0)], hardware)
    assert ladder(1.0, 6.0, 1.0).identical(translation.RING0)


def test_an_interrupted_run_is_raised_again_not_reported() -> None:
    import signal

    from pyvmm.demos.common import stop_if_interrupted
    from pyvmm.machine.outcome import interrupted, timed_out
    from pyvmm.machine.run_signals import StoppedBySignal

    stop_if_interrupted(timed_out(5))  # any other outcome: nothing happens
    with pytest.raises(KeyboardInterrupt):
        stop_if_interrupted(interrupted("SIGINT", signal.SIGINT))
    with pytest.raises(StoppedBySignal, match="SIGTERM"):
        stop_if_interrupted(interrupted("SIGTERM", signal.SIGTERM))
