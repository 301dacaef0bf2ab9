"""`pyvmm host` under real KVM: its findings agree with guests run here another way.

Nothing here expects a given host: each finding of `pyvmm host --json
--refresh` is checked against a direct run made differently from the probe's
(pyvmm's usual long-mode state without an IDT, the public library API, one
feature cleared at a time, a breakpoint instead of a port write), whatever
the host answers: VT-x, AMD-V or kvm_pvm.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import pyvmm
from pyvmm.arch.x86_64 import host_probe
from pyvmm.arch.x86_64.cpu import setup_cpuid, setup_vcpu
from pyvmm.arch.x86_64.host_findings import (
    EMULATION_FAILURE,
    EXCEPTION,
    FEATURE_BITS,
    NOT_RUN,
    TIMEOUT,
    WORKS,
    findings_from_json,
)
from pyvmm.errors import KvmError
from pyvmm.kvm import exits
from pyvmm.kvm.system import open_kvm
from pyvmm.loaders.entry import CpuMode, EntryPoint
from pyvmm.memory.addr import GuestPhysAddr
from pyvmm.memory.guest_memory import GuestMemory
from tests.integration.helpers import run_pyvmm

PROBE_LIMIT = 10.0  # seconds for the whole `pyvmm host --refresh` (a few here)


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], float, Path]:
    cache = tmp_path_factory.mktemp("cache")
    started = time.monotonic()
    result = run_pyvmm(
        "host", "--json", "--refresh", env={"XDG_CACHE_HOME": str(cache)}, timeout=60
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), elapsed, cache


def test_the_probe_is_quick_and_kept_in_the_cache(
    probed: tuple[dict[str, Any], float, Path],
) -> None:
    data, elapsed, cache = probed
    assert elapsed < PROBE_LIMIT and data["seconds"] < elapsed
    assert data["cached"] is False
    files = list((cache / "pyvmm").iterdir())
    assert [each.name[:11] for each in files] == ["host-probe-"]
    again = run_pyvmm("host", "--json", env={"XDG_CACHE_HOME": str(cache)}, timeout=60)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["cached"] is True
    assert findings_from_json(second) == findings_from_json(data)
    text = run_pyvmm("host", env={"XDG_CACHE_HOME": str(cache)}, timeout=60)
    assert text.returncode == 0, text.stderr
    additions = " ".join(data["derived"]["command_line_additions"]) or "none"
    assert f"Linux command line   {additions}\n" in text.stdout
    assert f"timer scale          {data['derived']['timer_scale']} " in text.stdout


# -- a direct run: pyvmm's usual long-mode state (no IDT), `out` after the instruction ---

LOAD_GPA = 0x10_0000
PORT_DONE = 0xE0


def run_direct(code: bytes, mode: CpuMode, cr4: int = 0, cpuid_edit: Any = None) -> Any:
    """Run `code` then `out %al, $PORT_DONE`: (exit or None, regs, sregs), or KvmError."""
    with (
        open_kvm() as kvm,
        kvm.create_vm() as vm,
        GuestMemory.from_ranges([(0, 4 << 20)]) as memory,
        host_probe.Deadlines() as deadlines,
    ):
        vm.set_user_memory_region(0, 0, 0, 4 << 20, memory.mapping.hva)
        with vm.create_vcpu(0) as vcpu:
            if cpuid_edit is None:
                setup_cpuid(kvm, vcpu)
            else:
                table = kvm.get_supported_cpuid()
                cpuid_edit(table)
                vcpu.set_cpuid2(table)
            entry = EntryPoint(
                GuestPhysAddr(LOAD_GPA), mode, "flat", GuestPhysAddr(LOAD_GPA),
                GuestPhysAddr(LOAD_GPA + len(code) + 2),
            )  # fmt: skip
            memory.write(LOAD_GPA, code + bytes([0xE6, PORT_DONE]))
            setup_vcpu(vcpu, entry, memory)
            if cr4:
                sregs = vcpu.get_sregs()
                sregs.cr4 |= cr4
                vcpu.set_sregs(sregs)
            exit = deadlines.run(vcpu, 2.0)
            return exit, vcpu.get_regs(), vcpu.get_sregs()


def direct_outcome(probe: host_probe.InstructionProbe) -> str:
    try:
        exit, _regs, _sregs = run_direct(probe.code, probe.mode, probe.cr4)
    except KvmError:
        return "refused"
    if exit is None:  # the deadline: the instruction never completed (a hypercall here)
        return "no exit"
    if isinstance(exit, exits.IoOut) and exit.port == PORT_DONE:
        return "ran on"
    if isinstance(exit, exits.InternalError) and exit.is_emulation_failure:
        return "emulation failure"
    if isinstance(exit, exits.Shutdown):
        return "faulted"  # no IDT: an exception is a triple fault
    return f"other: {exit!r}"


EXPECTED_DIRECT = {
    EMULATION_FAILURE: "emulation failure",
    EXCEPTION: "faulted",
    TIMEOUT: "no exit",
    NOT_RUN: "refused",
}


@pytest.mark.parametrize("probe", host_probe.INSTRUCTIONS, ids=lambda probe: probe.name)
def test_each_instruction_finding_matches_a_direct_run(
    probed: tuple[dict[str, Any], float, Path], probe: host_probe.InstructionProbe
) -> None:
    finding = findings_from_json(probed[0]).instruction(probe.name)
    assert finding is not None
    if finding.outcome == WORKS:
        # An instruction that works by raising an exception (int3) faults without an IDT.
        expected = "faulted" if probe.vector is not None else "ran on"
    else:
        expected = EXPECTED_DIRECT[finding.outcome]
    assert direct_outcome(probe) == expected, finding


# -- CPUID ---------------------------------------------------------------------------


def library_cpuid(leaf: int) -> tuple[int, int, int, int]:
    """CPUID `leaf` (subleaf 0) in a guest built by pyvmm's library, as `pyvmm boot` builds it."""
    code = (
        host_probe.mov_r32(host_probe.EAX, leaf)
        + host_probe.mov_r32(host_probe.ECX, 0)
        + host_probe.CPUID_CODE
    )
    with pyvmm.create_machine(code, ram_size="16M", mode="long", irqchip=False) as machine:
        outcome = machine.run(timeout=10)
        assert outcome.kind.value == "halted", outcome.message
        registers = machine.registers()
        return registers.rax, registers.rbx, registers.rcx, registers.rdx


def test_the_features_a_guest_sees_match(probed: tuple[dict[str, Any], float, Path]) -> None:
    leaves = {bits[:2] for bits in FEATURE_BITS.values()}
    assert {subleaf for _leaf, subleaf in leaves} == {0}
    answers = {(leaf, 0): library_cpuid(leaf) for leaf, _subleaf in leaves}
    assert host_probe.features_seen(answers) == tuple(probed[0]["cpuid"]["visible"])


@pytest.mark.parametrize("feature", list(FEATURE_BITS))
def test_clearing_one_feature_alone_agrees(
    probed: tuple[dict[str, Any], float, Path], feature: str
) -> None:
    cpuid = probed[0]["cpuid"]
    if feature not in cpuid["visible"]:
        pytest.skip(f"this host's guests never see {feature}")
    leaf, subleaf, register, bit = FEATURE_BITS[feature]
    code = host_probe.mov_r32(host_probe.EAX, leaf) + host_probe.mov_r32(host_probe.ECX, subleaf)
    exit, regs, _sregs = run_direct(
        code + b"\x0f\xa2",  # cpuid
        CpuMode.LONG,
        cpuid_edit=lambda table: host_probe.clear_features(table, (feature,)),
    )
    assert isinstance(exit, exits.IoOut), exit
    seen = bool(getattr(regs, "r" + register[1:]) >> bit & 1)
    assert seen == (feature in cpuid["ignored"])
    assert seen != (feature in cpuid["hidden"])


# -- syscall, RF, the timer ----------------------------------------------------------


def test_the_syscall_finding_matches_a_breakpoint_at_lstar(
    probed: tuple[dict[str, Any], float, Path],
) -> None:
    from pyvmm._kvm import lib
    from pyvmm.arch.x86_64.registers import EFER_SCE

    reaches = probed[0]["syscall"]["reaches_cpl0"]
    code, _user, lstar = host_probe.syscall_guest()
    with (
        open_kvm() as kvm,
        host_probe.ScratchGuest(kvm) as guest,
        host_probe.Deadlines() as deadlines,
    ):
        vcpu = guest.vcpu
        assert vcpu is not None
        sregs = vcpu.get_sregs()
        sregs.efer |= EFER_SCE
        vcpu.set_sregs(sregs)
        guest.load(code)
        control = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
        vcpu.set_guest_debug(control, (lstar, 0, 0, 0, 0, 0, 0, host_probe.DR7_L0))
        first = deadlines.run(vcpu, 2.0)
        if reaches is None:
            pytest.skip(f"the probe could not tell: {probed[0]['syscall']['detail']}")
        assert isinstance(first, exits.IoOut) and first.port == host_probe.PORT_USER
        second = deadlines.run(vcpu, 2.0)
        assert isinstance(second, exits.Debug) and second.pc == lstar, second
        assert (vcpu.get_sregs().cs.selector & 3 == 0) == reaches


def test_the_resume_flag_finding_matches_a_run_that_counts(
    probed: tuple[dict[str, Any], float, Path],
) -> None:
    from pyvmm._kvm import lib

    honoured = probed[0]["resume_flag"]["honoured"]
    if honoured is None:
        pytest.skip(f"the probe could not tell: {probed[0]['resume_flag']['detail']}")
    code = b"\xff\xc0" * 3 + host_probe.HLT  # inc %eax, three times; hlt
    breakpoint = host_probe.CODE_GPA + 4  # the third inc
    with (
        open_kvm() as kvm,
        host_probe.ScratchGuest(kvm) as guest,
        host_probe.Deadlines() as deadlines,
    ):
        vcpu = guest.vcpu
        assert vcpu is not None
        guest.load(code)
        control = lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_USE_HW_BP
        vcpu.set_guest_debug(control, (breakpoint, 0, 0, 0, 0, 0, 0, host_probe.DR7_L0))
        exit = deadlines.run(vcpu, 2.0)
        assert isinstance(exit, exits.Debug) and exit.pc == breakpoint
        regs = vcpu.get_regs()
        assert regs.rax == 2
        regs.rflags |= host_probe.RFLAGS_RF
        vcpu.set_regs(regs)
        exit = deadlines.run(vcpu, 2.0)
        if honoured:
            assert isinstance(exit, exits.Hlt) and vcpu.get_regs().rax == 3
        else:
            assert isinstance(exit, exits.Debug) and exit.pc == breakpoint
            assert vcpu.get_regs().rax == 2


def test_the_timer_finding_is_of_the_same_order_as_a_second_measurement(
    probed: tuple[dict[str, Any], float, Path],
) -> None:
    first = findings_from_json(probed[0]).timer
    with open_kvm() as kvm, host_probe.Deadlines() as deadlines:
        second = host_probe.probe_timer(kvm, deadlines)
    assert first.ticks > 0 and second.ticks > 0, (first, second)
    if first.rate_limited and second.rate_limited:
        return  # both only bound the tick by the PIT's period
    ratio = first.tick_seconds / second.tick_seconds  # type: ignore[operator]
    # The host is shared (other processes, CPU frequency): the same order, not the same value.
    assert 0.25 < ratio < 4, (first, second)


def test_the_32bit_paging_finding_is_host_supports(
    probed: tuple[dict[str, Any], float, Path],
) -> None:
    from pyvmm.arch.x86_64.host_support import keeps_32bit_paging

    with open_kvm() as kvm:
        assert probed[0]["keeps_32bit_paging"] is keeps_32bit_paging(kvm)


# -- deadlines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "irqchip"),
    [
        (b"\xeb\xfe", False),  # jmp .
        (b"\xfa\xf4", True),  # cli; hlt: KVM waits in the kernel for an interrupt
    ],
    ids=["loop", "halted-with-irqchip"],
)
def test_a_guest_that_never_exits_ends_at_its_deadline(code: bytes, irqchip: bool) -> None:
    with (
        open_kvm() as kvm,
        host_probe.ScratchGuest(kvm, irqchip=irqchip) as guest,
        host_probe.Deadlines() as deadlines,
    ):
        assert guest.vcpu is not None
        guest.load(code)
        started = time.monotonic()
        assert deadlines.run(guest.vcpu, 0.2) is None
        assert 0.2 <= time.monotonic() - started < 1.0


def test_deadlines_give_back_a_running_timer() -> None:
    import signal

    previous = signal.signal(signal.SIGALRM, lambda *args: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        with (
            open_kvm() as kvm,
            host_probe.Deadlines() as deadlines,
            host_probe.ScratchGuest(kvm) as guest,
        ):
            assert guest.vcpu is not None
            guest.load(b"\xeb\xfe")
            deadlines.run(guest.vcpu, 0.05)
        remaining, _interval = signal.getitimer(signal.ITIMER_REAL)
        assert 28.0 < remaining < 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
