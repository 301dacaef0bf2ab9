"""The host probe without KVM: derivations, cache, the guests' machine code, `pyvmm host`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import capstone
import pytest

from pyvmm.arch.x86_64 import host_probe
from pyvmm.arch.x86_64.host_findings import (
    EMULATION_FAILURE,
    EXCEPTION,
    FEATURE_BITS,
    HIDDEN_BY_INSTRUCTION,
    KVM_HYPERCALL_FEATURES,
    MAX_TIMER_SCALE,
    TIMEOUT,
    WORKS,
    BadFindings,
    CpuidFinding,
    HostFindings,
    HostKey,
    InstructionFinding,
    ResumeFlagFinding,
    SyscallFinding,
    TimerFinding,
    command_line_additions,
    cpuid_hideable,
    features_to_hide,
    findings_from_json,
    findings_to_json,
    needs_syscall_repair,
    timer_scale,
    unhideable_failures,
    with_additions,
)
from pyvmm.arch.x86_64.host_probe_cache import (
    cache_directory,
    cache_file,
    load_findings,
    store_findings,
)
from pyvmm.cli import main

KEY = HostKey(release="6.1.0-test", version="#1 SMP Debian", backend="kvm_intel (Intel VT-x)")
ALL_FEATURES = tuple(FEATURE_BITS)
NAMES = tuple(probe.name for probe in host_probe.INSTRUCTIONS)


def vt_x_host() -> HostFindings:
    """A host where everything works (VT-x/AMD-V)."""
    return HostFindings(
        key=KEY,
        cpuid=CpuidFinding(visible=ALL_FEATURES, hidden=ALL_FEATURES, ignored=(), control=True),
        instructions=tuple(InstructionFinding(name, WORKS) for name in NAMES),
        syscall=SyscallFinding(True, "at LSTAR with CS 0x8"),
        resume_flag=ResumeFlagFinding(True, "ran on"),
        timer=TimerFinding(
            ticks=1497, window=0.3, period=239 / 1_193_182, handler_instructions=7006
        ),
        seconds=0.3,
        keeps_32bit_paging=True,
        probed_at="2026-11-30T11:00:00Z",
    )


PVM_FAILURES = (
    "int3", "clac", "stac", "popcnt", "fwait", "ldmxcsr", "movd xmm", "xrstor",
    "lock cmpxchg16b", "iret (protected mode)",
)  # fmt: skip


PVM_HANGS = ("vmcall", "vmmcall")  # a CPL0 hypercall there never returns


def pvm_host(**changes: object) -> HostFindings:
    """A host like issue 15's: CPUID leaves 1 and 7 ignored but for cx16 (KVM's own leaf
    0x40000001 is taken), a slow tick, hypercalls that never return."""
    findings = dataclasses.replace(
        vt_x_host(),
        key=dataclasses.replace(KEY, backend="kvm_pvm (software, no VT-x/AMD-V)"),
        cpuid=CpuidFinding(
            visible=ALL_FEATURES,
            hidden=("cx16", *KVM_HYPERCALL_FEATURES),
            ignored=tuple(
                name for name in ALL_FEATURES if name not in ("cx16", *KVM_HYPERCALL_FEATURES)
            ),
            control=True,
        ),
        instructions=tuple(
            InstructionFinding(
                name,
                EMULATION_FAILURE
                if name in PVM_FAILURES
                else TIMEOUT
                if name in PVM_HANGS
                else WORKS,
            )
            for name in NAMES
        ),
        syscall=SyscallFinding(False, "at LSTAR with CS 0x23"),
        resume_flag=ResumeFlagFinding(False, "trapped again"),
        timer=TimerFinding(ticks=50, window=0.3, period=239 / 1_193_182, handler_instructions=7006),
        keeps_32bit_paging=False,
    )
    return dataclasses.replace(findings, **changes)


# -- derivations -------------------------------------------------------------------


def test_a_host_where_everything_works_needs_nothing() -> None:
    findings = vt_x_host()
    assert features_to_hide(findings) == ()
    assert command_line_additions(findings) == ()
    assert cpuid_hideable(findings) == ()
    assert unhideable_failures(findings) == ()
    assert not needs_syscall_repair(findings)
    assert timer_scale(findings) == 1
    assert findings.cpuid.takes_effect
    assert findings.timer.rate_limited


def test_a_pvm_like_host_gets_noxsave_and_clearcpuid_for_what_cpuid_cannot_hide() -> None:
    findings = pvm_host()
    # and, its timer being slow (scale 10), the tick on the PIT: no LAPIC or TSC deadline timer.
    assert command_line_additions(findings) == (
        "noxsave",
        "clearcpuid=pclmulqdq,ssse3,sse4_1,sse4_2,popcnt,aes,avx,avx2,smap,sha_ni,"
        "tsc_deadline_timer",
        "noapictimer",
    )
    assert cpuid_hideable(findings) == ("cx16", *KVM_HYPERCALL_FEATURES)
    assert unhideable_failures(findings) == ("int3", "fwait", "ldmxcsr", "iret (protected mode)")
    assert needs_syscall_repair(findings)
    assert not findings.cpuid.takes_effect


def fast_timer(findings: HostFindings) -> HostFindings:
    """The same host with ticks that kept up with the probe's PIT (scale 1): only feature
    options remain."""
    return dataclasses.replace(
        findings, timer=dataclasses.replace(findings.timer, ticks=1497, window=0.3)
    )


def test_a_fast_timer_keeps_the_lapic_timer() -> None:
    quick = fast_timer(pvm_host())
    assert timer_scale(quick) == 1
    assert not {"noapictimer"} & set(command_line_additions(quick))
    assert "tsc_deadline_timer" not in " ".join(command_line_additions(quick))


def test_only_features_the_guest_sees_are_hidden() -> None:
    cpuid = CpuidFinding(visible=("xsave", "popcnt"), hidden=(), ignored=("xsave",), control=True)
    findings = pvm_host(cpuid=cpuid)
    assert features_to_hide(findings) == ("popcnt", "xsave")
    assert command_line_additions(fast_timer(findings)) == ("noxsave", "clearcpuid=popcnt")


def test_features_cpuid_hides_stay_off_the_command_line() -> None:
    cpuid = CpuidFinding(visible=ALL_FEATURES, hidden=ALL_FEATURES, ignored=(), control=True)
    findings = pvm_host(cpuid=cpuid)
    assert command_line_additions(fast_timer(findings)) == ()
    assert set(cpuid_hideable(findings)) == set(features_to_hide(findings))


def test_without_the_control_leaf_nothing_counts_as_hidden_by_cpuid() -> None:
    cpuid = CpuidFinding(visible=ALL_FEATURES, hidden=ALL_FEATURES, ignored=(), control=False)
    findings = pvm_host(cpuid=cpuid)
    assert cpuid_hideable(findings) == ()
    assert "noxsave" in command_line_additions(findings)
    assert not findings.cpuid.takes_effect


def test_one_failing_instruction_hides_only_its_features() -> None:
    instructions = tuple(
        InstructionFinding(name, EMULATION_FAILURE if name == "popcnt" else WORKS) for name in NAMES
    )
    findings = pvm_host(instructions=instructions)
    assert command_line_additions(fast_timer(findings)) == ("clearcpuid=popcnt",)
    assert unhideable_failures(findings) == ()


@pytest.mark.parametrize("hanging", ["vmcall", "vmmcall"])
def test_a_hypercall_that_never_returns_hides_kvms_hypercall_features_in_cpuid(
    hanging: str,
) -> None:
    """A two-CPU Linux makes PV IPI hypercalls from its timer interrupt: where a hypercall
    never returns, the guest must not see the features that make it use them."""
    instructions = tuple(
        InstructionFinding(name, TIMEOUT if name == hanging else WORKS) for name in NAMES
    )
    findings = dataclasses.replace(vt_x_host(), instructions=instructions)
    assert features_to_hide(findings) == KVM_HYPERCALL_FEATURES
    assert cpuid_hideable(findings) == KVM_HYPERCALL_FEATURES
    assert unhideable_failures(findings) == ()
    # Linux has no option that hides them: never on its command line, even where CPUID
    # could not hide them.
    assert command_line_additions(findings) == ()
    ignored = CpuidFinding(visible=ALL_FEATURES, hidden=(), ignored=ALL_FEATURES, control=True)
    assert command_line_additions(dataclasses.replace(findings, cpuid=ignored)) == ()
    assert {each for name in HIDDEN_BY_INSTRUCTION for each in HIDDEN_BY_INSTRUCTION[name]} >= set(
        KVM_HYPERCALL_FEATURES
    )


def test_a_faulting_instruction_is_no_emulation_failure() -> None:
    # clac without SMAP raises #UD on any CPU: nothing for pyvmm to hide or assist.
    instructions = tuple(
        InstructionFinding(name, EXCEPTION, "#UD (vector 6)") if name == "clac" else each
        for name, each in zip(NAMES, vt_x_host().instructions, strict=True)
    )
    findings = dataclasses.replace(vt_x_host(), instructions=instructions)
    assert command_line_additions(findings) == ()
    assert unhideable_failures(findings) == ()


def test_a_feature_the_guest_does_not_see_is_not_hidden() -> None:
    # rdtscp fails to emulate, but a guest that does not see RDTSCP never runs it.
    failing = {"rdtscp", "rdpkru", "crc32"}
    instructions = tuple(
        InstructionFinding(name, EMULATION_FAILURE if name in failing else WORKS) for name in NAMES
    )
    visible = tuple(name for name in ALL_FEATURES if name not in ("rdtscp", "pku"))
    cpuid = CpuidFinding(visible=visible, hidden=(), ignored=visible, control=True)
    findings = pvm_host(instructions=instructions, cpuid=cpuid)
    assert command_line_additions(fast_timer(findings)) == ("clearcpuid=sse4_2",)
    cpuid = CpuidFinding(visible=ALL_FEATURES, hidden=(), ignored=ALL_FEATURES, control=True)
    findings = pvm_host(instructions=instructions, cpuid=cpuid)
    assert command_line_additions(fast_timer(findings)) == ("clearcpuid=sse4_2,pku,rdtscp",)


def test_every_hidden_feature_has_a_cpuid_bit_and_every_probe_a_name() -> None:
    for features in HIDDEN_BY_INSTRUCTION.values():
        assert set(features) <= set(FEATURE_BITS)
    assert set(HIDDEN_BY_INSTRUCTION) <= set(NAMES)


@pytest.mark.parametrize(
    ("given", "result"),
    [
        ("", "noxsave clearcpuid=popcnt,smap"),
        ("console=ttyS0", "console=ttyS0 noxsave clearcpuid=popcnt,smap"),
        ("noxsave console=ttyS0", "noxsave console=ttyS0 clearcpuid=popcnt,smap"),
        ("clearcpuid=avx  quiet", "clearcpuid=avx,popcnt,smap  quiet noxsave"),
        ('dyndbg="file a.c  +p"', 'dyndbg="file a.c  +p" noxsave clearcpuid=popcnt,smap'),
        ("clearcpuid=smap clearcpuid=avx", "clearcpuid=smap clearcpuid=avx,popcnt,smap noxsave"),
        ("clearcpuid=popcnt,smap noxsave", "clearcpuid=popcnt,smap noxsave"),
    ],
)
def test_additions_join_the_users_command_line(given: str, result: str) -> None:
    assert with_additions(given, ("noxsave", "clearcpuid=popcnt,smap")) == result


def test_no_additions_leave_the_command_line_alone() -> None:
    assert with_additions("console=ttyS0 quiet", ()) == "console=ttyS0 quiet"


@pytest.mark.parametrize(
    ("ticks", "scale"),
    [
        (0, 1),  # no tick measured: nothing to scale
        (1497, 1),  # kept up with a 200 us PIT
        (600, 5),  # 0.5 ms a tick, two a period: 25 % of 4 ms, 5 % of 20 ms
        (400, 8),  # 0.75 ms: 37.5 % of 4 ms, 4.7 % of 32 ms
        (58, 52),  # 5.2 ms, as on issue 15's host
        (1, MAX_TIMER_SCALE),  # 300 ms: capped
    ],
)
def test_timer_scale(ticks: int, scale: int) -> None:
    timer = TimerFinding(ticks=ticks, window=0.3, period=239 / 1_193_182, handler_instructions=7)
    assert timer_scale(pvm_host(timer=timer)) == scale


def test_timer_scale_follows_hz_and_budget() -> None:
    timer = TimerFinding(ticks=300, window=0.3, period=0.0002, handler_instructions=7)  # 1 ms
    assert timer_scale(pvm_host(timer=timer), hz=1000, budget=0.5) == 4
    assert timer_scale(pvm_host(timer=timer), hz=100, budget=0.1) == 2
    assert timer_scale(pvm_host(timer=timer), hz=100, budget=0.2) == 1


# -- JSON --------------------------------------------------------------------------


def test_findings_round_trip_through_json() -> None:
    for findings in (vt_x_host(), pvm_host()):
        text = json.dumps(findings_to_json(findings))
        assert findings_from_json(json.loads(text)) == findings


def test_json_carries_the_derivations() -> None:
    derived = findings_to_json(pvm_host())["derived"]
    assert derived["command_line_additions"][0] == "noxsave"
    assert derived["syscall_repair"] is True
    assert derived["timer_scale"] == timer_scale(pvm_host())


def corruptions() -> list[object]:
    good = findings_to_json(pvm_host())
    cases: list[object] = [None, [], "text", 3, {}, {**good, "format": 999}]
    for path, value in [
        (("key",), "nope"),
        (("key", "release"), 7),
        (("cpuid", "visible"), "xsave"),
        (("cpuid", "control"), "yes"),
        (("instructions",), {"name": "int3"}),
        (("syscall", "reaches_cpl0"), 1),
        (("timer", "ticks"), -1),
        (("timer", "window"), 0),
        (("timer", "period"), float("nan")),
        (("seconds",), True),
        (("keeps_32bit_paging",), "no"),
    ]:
        data = json.loads(json.dumps(good))
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        cases.append(data)
    data = json.loads(json.dumps(good))
    del data["timer"]["handler_instructions"]
    cases.append(data)
    return cases


@pytest.mark.parametrize("data", corruptions())
def test_anything_else_is_bad_findings(data: object) -> None:
    with pytest.raises(BadFindings):
        findings_from_json(data)


# -- the cache ---------------------------------------------------------------------


def test_the_cache_lives_under_xdg_cache_home_or_home(tmp_path: Path) -> None:
    assert cache_directory({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "pyvmm"
    home = {"HOME": str(tmp_path)}
    assert cache_directory(home) == tmp_path / ".cache" / "pyvmm"
    # A relative XDG_CACHE_HOME is invalid (XDG Base Directory Specification): ignored.
    assert cache_directory({**home, "XDG_CACHE_HOME": "relative"}) == tmp_path / ".cache/pyvmm"


def test_one_file_per_kernel_and_backend(tmp_path: Path) -> None:
    other_kernel = dataclasses.replace(KEY, version="#2 SMP Debian")
    other_backend = dataclasses.replace(KEY, backend="kvm_amd (AMD-V)")
    names = {cache_file(key, tmp_path) for key in (KEY, other_kernel, other_backend)}
    assert len(names) == 3
    assert all(path.parent == tmp_path and path.suffix == ".json" for path in names)


def test_stored_findings_load_back(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "pyvmm"
    path = store_findings(pvm_host(), directory)
    assert path == cache_file(pvm_host().key, directory)
    assert load_findings(pvm_host().key, directory) == pvm_host()
    assert [each.name for each in directory.iterdir()] == [path.name]  # no temporary left


def test_no_file_is_no_findings(tmp_path: Path) -> None:
    assert load_findings(KEY, tmp_path / "absent") is None


@pytest.mark.parametrize(
    "content", [b"", b"{", b"\xff\xfe", b"[]", b'{"format": 1}', b"null"], ids=repr
)
def test_a_corrupt_file_is_ignored_and_rewritten(tmp_path: Path, content: bytes) -> None:
    cache_file(KEY, tmp_path).write_bytes(content)
    assert load_findings(KEY, tmp_path) is None
    store_findings(vt_x_host(), tmp_path)
    assert load_findings(KEY, tmp_path) == vt_x_host()


def test_a_foreign_file_is_ignored(tmp_path: Path) -> None:
    # Another host's findings under this host's name (a copied home directory, say).
    foreign = dataclasses.replace(vt_x_host(), key=dataclasses.replace(KEY, release="5.10"))
    cache_file(KEY, tmp_path).write_text(json.dumps(findings_to_json(foreign)))
    assert load_findings(KEY, tmp_path) is None


def test_probe_host_reads_the_cache_without_kvm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    findings = dataclasses.replace(vt_x_host(), key=host_probe.host_key())
    store_findings(findings, tmp_path)
    monkeypatch.setattr(host_probe, "measure_host", _no_probe)
    report = host_probe.probe_host(directory=tmp_path, kvm_path=str(tmp_path / "no-kvm"))
    assert report.cached and report.findings == findings
    assert report.cache_path == cache_file(findings.key, tmp_path)


def _no_probe(kvm: object) -> HostFindings:
    raise AssertionError("probed although the cache held the findings")


def test_refresh_probes_again_and_rewrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = host_probe.host_key()
    store_findings(dataclasses.replace(vt_x_host(), key=key), tmp_path)
    fresh = dataclasses.replace(pvm_host(), key=key)
    monkeypatch.setattr(host_probe, "measure_host", lambda kvm: fresh)
    monkeypatch.setattr("pyvmm.kvm.system.open_kvm", lambda path: _NoKvm())
    report = host_probe.probe_host(refresh=True, directory=tmp_path)
    assert not report.cached and report.findings == fresh
    assert load_findings(key, tmp_path) == fresh


def test_a_cache_that_cannot_be_written_is_said_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    fresh = dataclasses.replace(pvm_host(), key=host_probe.host_key())
    monkeypatch.setattr(host_probe, "measure_host", lambda kvm: fresh)
    monkeypatch.setattr("pyvmm.kvm.system.open_kvm", lambda path: _NoKvm())
    report = host_probe.probe_host(directory=blocker / "pyvmm")
    assert report.findings == fresh and report.cache_path is None
    assert "cannot write" in report.cache_problem


class _NoKvm:
    def __enter__(self) -> _NoKvm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


# -- the guests' machine code ------------------------------------------------------


def disassemble(code: bytes, address: int = host_probe.CODE_GPA, bits: int = 64) -> list[str]:
    mode = capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32
    engine = capstone.Cs(capstone.CS_ARCH_X86, mode)
    engine.syntax = capstone.CS_OPT_SYNTAX_ATT
    found = list(engine.disasm(code, address))
    assert sum(each.size for each in found) == len(code), f"undecodable: {code.hex(' ')}"
    return [f"{each.mnemonic} {each.op_str}".strip() for each in found]


LAST_INSTRUCTION = {
    "int3": "int3",
    "clac": "clac",
    "stac": "stac",
    "popcnt": "popcntq %rax, %rax",
    "fwait": "wait",
    "fninit": "fninit",
    "ldmxcsr": "ldmxcsr (%rdi)",
    "movd xmm": "movd %eax, %xmm0",
    "fxsave": "fxsave64 (%rdi)",
    "xrstor": "xrstor64 (%rdi)",
    "xsetbv": "xsetbv",
    "lock cmpxchg16b": "lock cmpxchg16b (%rdi)",
    "rdfsbase": "rdfsbaseq %rax",
    "xsave": "xsave64 (%rdi)",
    "xsaveopt": "xsaveopt64 (%rdi)",
    "xgetbv": "xgetbv",
    "vzeroupper": "vzeroupper",
    "pxor xmm": "pxor %xmm0, %xmm0",
    "crc32": "crc32q %rax, %rax",
    "fnstsw": "fnstsw %ax",
    "fnclex": "fnclex",
    "rdtscp": "rdtscp",
    "rdpkru": "rdpkru",
    "swapgs": "swapgs",
    "iretq": "iretq",
    "iret (protected mode)": "iretl",
    "vmcall": "vmcall",
    "vmmcall": "vmmcall",
}


@pytest.mark.parametrize("probe", host_probe.INSTRUCTIONS, ids=lambda probe: probe.name)
def test_each_instruction_probe_ends_with_its_instruction(
    probe: host_probe.InstructionProbe,
) -> None:
    bits = 32 if probe.name == "iret (protected mode)" else 64
    assert disassemble(probe.code, bits=bits)[-1] == LAST_INSTRUCTION[probe.name]


def test_the_iret_probes_return_to_the_hlt_after_them() -> None:
    iret = next(each for each in host_probe.INSTRUCTIONS if each.name == "iret (protected mode)")
    assert disassemble(iret.code, bits=32)[2] == f"pushl ${host_probe.CODE_GPA + len(iret.code):#x}"
    iretq = next(each for each in host_probe.INSTRUCTIONS if each.name == "iretq")
    assert disassemble(iretq.code)[5] == "leaq 3(%rip), %rax"  # past `push %rax; iretq`


def test_the_syscall_guest() -> None:
    code, user, lstar = host_probe.syscall_guest()
    text = disassemble(code)
    assert text[text.index("sysretq") - 2] == f"movl ${user:#x}, %ecx"
    assert text[-5:] == [
        "sysretq",
        f"outb %al, ${host_probe.PORT_USER:#x}",
        "syscall",
        f"outb %al, ${host_probe.PORT_ENTRY:#x}",
        "hlt",
    ]
    assert code[user - host_probe.CODE_GPA :].startswith(b"\xe6")
    assert code[lstar - host_probe.CODE_GPA :] == b"\xe6\xe1\xf4"
    # SYSRET's CS and SS are the user-mode GDT's user code and data, SYSCALL's the kernel's.
    assert (host_probe.STAR >> 48) + 16 | 3 == 0x23 and (host_probe.STAR >> 48) + 8 | 3 == 0x1B
    assert host_probe.STAR >> 32 & 0xFFFF == 0x08


def test_the_timer_guest() -> None:
    code, handler = host_probe.timer_guest()
    text = disassemble(code)
    assert text.count("sti") == 1 and text.count("hlt") == 1
    handler_text = disassemble(code[handler - host_probe.CODE_GPA :], handler)
    assert handler_text[0] == f"incq {host_probe.COUNTER_GPA:#x}"
    assert handler_text[1] == f"movl ${host_probe.TICK_WORK // 2:#x}, %ecx"
    assert handler_text[-1] == "jmpq *%rax"


def test_idt_gates_point_at_stubs_or_handlers() -> None:
    idt = host_probe.idt_bytes({0x20: 0x12345})
    assert len(idt) == 256 * 16

    def offset(vector: int) -> int:
        gate = idt[16 * vector : 16 * vector + 16]
        low = int.from_bytes(gate[:8], "little")
        assert low >> 16 & 0xFFFF == 0x08 and low >> 40 & 0xFF == 0x8E
        return (
            (low & 0xFFFF) | (low >> 48 & 0xFFFF) << 16 | int.from_bytes(gate[8:], "little") << 32
        )

    assert offset(0x20) == 0x12345
    for vector in (0, 3, 6, 255):
        assert host_probe.stub_vector(offset(vector) + 1) == vector
    assert host_probe.stub_vector(host_probe.STUBS_GPA + 2) is None
    assert host_probe.stub_vector(host_probe.CODE_GPA) is None


def test_clearing_features_in_a_cpuid_table() -> None:
    from pyvmm._kvm import ffi

    table = ffi.new("struct kvm_cpuid2 *", {"nent": 3, "entries": 3})
    for index, (leaf, value) in enumerate(((1, 0xFFFF_FFFF), (7, 0xFFFF_FFFF), (0x4000_0000, 0))):
        table.entries[index].function = leaf
        table.entries[index].ebx = table.entries[index].ecx = value
    host_probe.clear_features(table, ("xsave", "smap"))
    assert table.entries[0].ecx == 0xFFFF_FFFF & ~(1 << 26)
    assert table.entries[1].ebx == 0xFFFF_FFFF & ~(1 << 20)
    assert table.entries[2].ebx == 0  # KVM's signature is left alone
    host_probe.mark_control_leaf(table)
    answer = (0, table.entries[2].ebx, table.entries[2].ecx, table.entries[2].edx)
    assert host_probe.signature(answer) == host_probe.CONTROL_SIGNATURE


def test_features_seen_reads_each_bit() -> None:
    answers = {
        (1, 0): (0, 0, 1 << 26 | 1 << 13, 0),
        (7, 0): (0, 1 << 20, 1 << 3, 0),
        (0x8000_0001, 0): (0, 0, 0, 1 << 27),
        (0x4000_0001, 0): (1 << 11, 0, 0, 0),
    }
    assert host_probe.features_seen(answers) == (
        "cx16", "xsave", "smap", "pku", "rdtscp", "KVM_FEATURE_PV_SEND_IPI",
    )  # fmt: skip


# -- pyvmm host --------------------------------------------------------------------


def test_pyvmm_host_prints_cached_findings_and_derivations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    findings = pvm_host(key=host_probe.host_key())
    store_findings(findings, tmp_path / "pyvmm")
    monkeypatch.setattr(host_probe, "measure_host", _no_probe)
    assert main(["host"]) == 0
    out = capsys.readouterr().out
    assert "read from the cache" in out
    assert "noxsave clearcpuid=pclmulqdq,ssse3" in out
    assert "SYSCALL repair       needed" in out
    assert "stays at CPL3" in out and "RFLAGS.RF            ignored" in out
    assert "6.00 ms (50 PIT ticks in 0.30 s" in out
    assert "32-bit paging        dropped" in out
    assert main(["host", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cached"] is True
    assert findings_from_json(data) == findings


def test_pyvmm_host_on_a_host_where_everything_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    store_findings(dataclasses.replace(vt_x_host(), key=host_probe.host_key()), tmp_path / "pyvmm")
    monkeypatch.setattr(host_probe, "measure_host", _no_probe)
    assert main(["host"]) == 0
    out = capsys.readouterr().out
    assert "Linux command line   none" in out
    assert "SYSCALL repair       not needed" in out
    assert "timer scale          1 " in out
    assert "at most 0.20 ms: the ticks kept up with the PIT" in out


def test_pyvmm_host_takes_no_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["host", "extra"]) == 2
    assert capsys.readouterr().err == (
        "pyvmm host: unexpected argument extra: pyvmm host takes no arguments\n"
    )


def test_pyvmm_host_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["host", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--refresh" in text and "--json" in text and "exit status: 0" in text
