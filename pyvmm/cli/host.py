"""`pyvmm host`: what this host's KVM runs as a CPU would, and what pyvmm derives from it.

The findings come from `pyvmm.arch.x86_64.host_probe` (tiny guests under
KVM, run once per host kernel and cached); `--refresh` probes again,
`--json` prints them as the cache keeps them.
"""

from __future__ import annotations

import json
import sys

from pyvmm.arch.x86_64.host_findings import (
    EMULATION_FAILURE,
    EXCEPTION,
    GUEST_HZ,
    NOT_RUN,
    TICK_BUDGET,
    TIMEOUT,
    WORKS,
    command_line_additions,
    cpuid_hideable,
    findings_to_json,
    needs_syscall_repair,
    timer_scale,
    unhideable_failures,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    import argparse

    from pyvmm.arch.x86_64.host_findings import HostFindings
    from pyvmm.arch.x86_64.host_probe import ProbeReport


def run_host(args: argparse.Namespace) -> int:
    from pyvmm.arch.x86_64.host_probe import probe_host

    report = probe_host(refresh=args.refresh)
    if args.json:
        data = findings_to_json(report.findings)
        data["cached"] = report.cached
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(render_report(report))
    if report.cache_problem:
        print(f"pyvmm host: findings not kept: {report.cache_problem}", file=sys.stderr)
    return 0


OUTCOME_WORDS = {
    WORKS: "works",
    EMULATION_FAILURE: "KVM cannot emulate it (KVM_INTERNAL_ERROR_EMULATION)",
    EXCEPTION: "faults",
    TIMEOUT: "no exit in time",
    NOT_RUN: "not run",
}


def render_report(report: ProbeReport) -> str:
    findings = report.findings
    when = "read from the cache (--refresh probes again)" if report.cached else "probed now"
    lines = [
        f"kernel   {findings.key.release} {findings.key.version}",
        f"backend  {findings.key.backend}",
        f"probe    {findings.seconds:.2f} s at {findings.probed_at}, {when}",
    ]
    if report.cache_path is not None:
        lines.append(f"cache    {report.cache_path}")
    lines += ["", *render_findings(findings), "", *render_derived(findings)]
    return "\n".join(lines) + "\n"


def render_findings(findings: HostFindings) -> list[str]:
    cpuid = findings.cpuid
    if cpuid.takes_effect:
        cpuid_line = "takes effect: every feature cleared in leaves 1 and 7 vanished"
    else:
        cpuid_line = "ignored for " + (", ".join(cpuid.ignored) or "none")
        if cpuid.hidden:
            cpuid_line += "; takes effect for " + ", ".join(cpuid.hidden)
    control = "taken" if cpuid.control else "NOT taken (the probe is in doubt)"
    lines = [
        "findings",
        f"  KVM_SET_CPUID2       {cpuid_line} (leaf 0x40000000, the control: {control})",
        "  CPL0 instructions",
    ]
    width = max(len(each.name) for each in findings.instructions)
    for each in findings.instructions:
        words = OUTCOME_WORDS.get(each.outcome, each.outcome)
        detail = f": {each.detail}" if each.detail and each.outcome != EMULATION_FAILURE else ""
        lines.append(f"    {each.name:<{width}}  {words}{detail}")
    syscall = findings.syscall
    reaches = {True: "reaches CPL0", False: "stays at CPL3", None: "unknown"}[syscall.reaches_cpl0]
    lines.append(f"  CPL3 syscall         {reaches}: {syscall.detail}")
    rf = findings.resume_flag
    honoured = {True: "honoured", False: "ignored", None: "unknown"}[rf.honoured]
    lines.append(f"  RFLAGS.RF            {honoured}: {rf.detail}")
    lines.append(f"  timer tick           {describe_tick(findings)}")
    paging = {
        True: "kept by KVM_SET_SREGS",
        False: "dropped: KVM_SET_SREGS clears CR0.PG without EFER.LME (no --mode paged)",
        None: "unknown",
    }[findings.keeps_32bit_paging]
    lines.append(f"  32-bit paging        {paging}")
    return lines


def describe_tick(findings: HostFindings) -> str:
    timer = findings.timer
    tick = timer.tick_seconds
    count = (
        f"{timer.ticks} PIT ticks in {timer.window:.2f} s, each taken by a CPL0 handler of "
        f"{timer.handler_instructions} instructions"
    )
    if tick is None:
        text = f"no tick taken ({count})"
    elif timer.rate_limited:
        text = f"at most {tick * 1e3:.2f} ms: the ticks kept up with the PIT ({count})"
    else:
        text = f"{tick * 1e3:.2f} ms ({count})"
    if timer.instruction_seconds is not None:
        text += f"; one CPL0 instruction {timer.instruction_seconds * 1e6:.3f} us"
    if timer.detail:
        text += f"; {timer.detail}"
    return text


def assisted(name: str) -> bool:
    """Whether the assist layer performs the probe's instruction `name`: the last
    instruction of its code (after the set-up), decoded as the layer decodes a
    failure, names an entry of the table."""
    from pyvmm.arch.x86_64.assist.operands import decode
    from pyvmm.arch.x86_64.assist.table import TABLE
    from pyvmm.arch.x86_64.host_probe import INSTRUCTIONS
    from pyvmm.loaders.entry import CpuMode

    probe = next((each for each in INSTRUCTIONS if each.name == name), None)
    if probe is None:
        return False
    bits, code, last = 64 if probe.mode is CpuMode.LONG else 32, probe.code, None
    while code:
        last = decode(code, bits)
        if last is None:
            return False
        code = code[last.size :]
    return last is not None and last.mnemonic in TABLE


def render_derived(findings: HostFindings) -> list[str]:
    additions = " ".join(command_line_additions(findings)) or "none"
    hideable = ", ".join(cpuid_hideable(findings)) or "none"
    failures = unhideable_failures(findings)
    assists = ", ".join(name for name in failures if assisted(name)) or "none"
    unassisted = [name for name in failures if not assisted(name)]
    if unassisted:
        assists += f"; none performs {', '.join(unassisted)}: a guest must avoid it"
    repair = "needed" if needs_syscall_repair(findings) else "not needed"
    scale = timer_scale(findings)
    return [
        "pyvmm derives",
        f"  Linux command line   {additions}",
        f"  hidden in CPUID      {hideable}",
        f"  needs an assist      {assists}",
        f"  SYSCALL repair       {repair}",
        f"  timer scale          {scale} (timer interrupts at most {TICK_BUDGET:.0%} of a "
        f"{GUEST_HZ} Hz guest's time)",
    ]
