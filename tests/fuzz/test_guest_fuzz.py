"""The CI run of the guest fuzzer: a few hundred random guests over every entry mode,
and a few hundred guests that drive the virtio devices with hostile virtqueues.

The long runs are `python -m tests.fuzz.guest_fuzz --count 5000 --seed 1` and
the same with `--kind virtio` (see that module); a failure here prints the
command that replays the failing case.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pyvmm.arch.x86_64.cpu import default_load_gpa
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.outcome import OutcomeKind
from tests.fuzz.guest_cases import generate_case
from tests.fuzz.guest_code import (
    SNIPPETS,
    Asm,
    Context,
    snippet_out,
    snippet_random,
    snippet_start_cpu,
)
from tests.fuzz.guest_fuzz import available_modes, describe_case, run_campaign, warm_up
from tests.fuzz.guest_run import Limits, run_case
from tests.fuzz.host_state import host_differences, settled_state
from tests.integration.vcpu_limits import most_vcpus

pytestmark = pytest.mark.kvm

CI_SEED = 20240601
CI_GUESTS = 300
CI_VIRTIO_GUESTS = 400  # about 8 s here
# Short limits: ring-0 code is emulated on software KVM backends, and a guest
# that spins costs the whole timeout.
CI_LIMITS = Limits(timeout=0.1, max_exits=2000)


def test_random_guests_end_in_named_outcomes() -> None:
    report = run_campaign(CI_GUESTS, CI_SEED, CI_LIMITS)
    summary = report.summary()
    print(summary)
    assert report.failures == [], summary
    assert report.guests == CI_GUESTS
    modes = {CpuMode.REAL.value, CpuMode.PROTECTED.value, CpuMode.LONG.value, CpuMode.USER.value}
    assert modes <= set(report.per_mode), summary
    assert report.smp > 0, summary
    # The run must exercise the different ways a guest ends, or it proves little.
    kinds = report.outcomes
    assert kinds[OutcomeKind.TRIPLE_FAULT.value] > 0, summary
    assert kinds[OutcomeKind.TIMEOUT.value] + kinds[OutcomeKind.EXIT_LIMIT.value] > 0, summary
    assert kinds[OutcomeKind.HALTED.value] + kinds[OutcomeKind.DEBUG_EXIT.value] > 0, summary
    assert len(kinds) >= 5, summary
    # A guest's memory is unmapped when its machine closes: no growth per guest.
    assert report.address_space_growth < 512 << 20, summary


def test_guests_with_hostile_virtqueues_end_as_their_script_says() -> None:
    report = run_campaign(CI_VIRTIO_GUESTS, CI_SEED, CI_LIMITS, kind="virtio")
    summary = report.summary()
    print(summary)
    assert report.failures == [], summary
    assert report.guests == CI_VIRTIO_GUESTS
    assert report.cli, summary  # some through `pyvmm boot --console virtio --drive ...`
    # Not vacuous: guests that ran to their end, requests served, the disk written,
    # pages given back, and the devices refusing rings for many different reasons.
    counts = report.counts
    assert counts["guest reached its end"] > CI_VIRTIO_GUESTS // 2, summary
    for what in ("buffers used", "disk writes", "balloon pages released", "entropy bytes"):
        assert counts[what] > 0, f"{what}: {summary}"
    for rule in (
        "AvailIndexJump",
        "BadDescriptor",
        "BadIndirect",
        "BadQueueLayout",
        "DescriptorLoop",
        "MalformedRequest",
        "WritableBeforeReadable",
    ):
        assert counts[f"refused {rule}"] > 0, f"{rule}: {summary}"
    assert counts["bad register access"] > 0 and counts["ignored write"] > 0, summary


def test_a_virtio_case_on_the_plain_path_gives_the_same_result_twice() -> None:
    # With an I/O thread, the devices' work races with the guest's next stores; on the
    # plain path (an MMIO exit per notification) a case's whole result is its own.
    cases = (generate_case(CI_SEED, index, (), "virtio") for index in range(100))
    plain = [
        case
        for case in cases
        if case.virtio is not None
        and not case.virtio.eventfds
        and "entropy" not in case.virtio.devices  # its bytes are the host's, new each time
        and not case.via_cli
    ][:3]
    assert len(plain) == 3
    for case in plain:
        first, again = run_case(case, CI_LIMITS), run_case(case, CI_LIMITS)
        assert first.failure is None and again.failure is None, describe_case(case, first)
        assert first.outcome is not None and again.outcome is not None
        assert (first.outcome.kind, first.outcome.exit_status, first.counts) == (
            again.outcome.kind, again.outcome.exit_status, again.counts
        ), describe_case(case, again)  # fmt: skip


def test_guests_with_the_most_vcpus_end_and_leave_no_thread_behind() -> None:
    # The campaign draws a count near the ceiling about once in a hundred guests:
    # here, always. Half of the guests start every AP (INIT/SIPI) first.
    most = most_vcpus()
    modes, _ = available_modes()
    warm_up(modes, CI_LIMITS)
    baseline = settled_state()
    for index in range(4):
        case = generate_case(CI_SEED, index, modes)
        case = replace(case, cpus=most, irqchip=None, via_cli=False)
        if index % 2:
            ctx = Context(case.mode, default_load_gpa(case.mode), case.ram_size)
            start = snippet_start_cpu(random.Random(index), Asm(ctx.bits), ctx)
            case = replace(case, image=start + case.image, regs=())
        result = run_case(case, CI_LIMITS)
        assert result.failure is None, describe_case(case, result)
        assert host_differences(baseline) == [], describe_case(case, result)


def test_cases_are_reproducible_one_by_one() -> None:
    modes = (CpuMode.REAL, CpuMode.LONG)
    first = [generate_case(5, index, modes) for index in range(20)]
    again = [generate_case(5, index, modes) for index in reversed(range(20))]
    assert first == list(reversed(again))
    assert len({case.image for case in first}) == 20


# Snippets that are sometimes invalid on purpose: a far jmp/call direct or `into`
# in 64-bit code (#UD), and plain random bytes.
INVALID_SOMETIMES = {"snippet_far_transfer": (64,), "snippet_interrupt": (64,)}


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_snippets_are_whole_instructions_in_their_code_size(bits: int) -> None:
    # The encoder's bugs would otherwise pass unseen: a wrong prefix or immediate
    # width turns the rest of a snippet into other instructions.
    import capstone

    mode = {16: CpuMode.REAL, 32: CpuMode.PROTECTED, 64: CpuMode.LONG}[bits]
    cs_mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, cs_mode)
    ctx = Context(mode, 0x7C00 if bits == 16 else 0x10_0000, 16 << 20)
    for snippet, _ in SNIPPETS:
        if snippet is snippet_random or bits in INVALID_SOMETIMES.get(snippet.__name__, ()):
            continue
        for seed in range(50):
            code = snippet(random.Random(seed), Asm(bits), ctx)
            decoded = sum(insn.size for insn in disassembler.disasm(code, 0))
            assert decoded == len(code), f"{snippet.__name__} seed {seed}: {code.hex()}"


def test_out_snippet_ends_in_an_out() -> None:
    import capstone

    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_16)
    ctx = Context(CpuMode.REAL, 0x7C00, 16 << 20)
    code = snippet_out(random.Random(1), Asm(16), ctx)
    assert list(disassembler.disasm(code, 0))[-1].mnemonic == "out"
