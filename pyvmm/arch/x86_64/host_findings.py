"""What the host probe found about this host's KVM, and what pyvmm derives from it (pure).

`host_probe.py` runs tiny guests under KVM and fills a `HostFindings`; this
module holds the findings' shape, their JSON form (the cache's, and `pyvmm
host --json`'s) and the derivations, each a pure function of the findings,
unit-tested without KVM:

- `features_to_hide`: CPU features the guest sees whose kernel-mode
  instructions this host's KVM cannot run, and KVM's paravirtual features
  whose hypercalls never return here;
- `command_line_additions`: of those, the ones KVM_SET_CPUID2 could not hide,
  as Linux command-line options (`noxsave clearcpuid=...`);
- `needs_syscall_repair`: a CPL3 `syscall` does not reach CPL0;
- `timer_scale`: how much slower than programmed a timer must tick for the
  guest to make progress between ticks.

On a VT-x/AMD-V host every instruction runs, CPUID takes effect and syscall
works: every derived list is empty, no repair, scale 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from pyvmm.errors import PyvmmError

# The version of the findings' JSON: a cache file of another version is ignored.
# 2: the hypercall probes (vmcall, vmmcall) and KVM's paravirtual features.
FORMAT = 2

# CPUID feature bits the probe clears with KVM_SET_CPUID2, by Linux's name for
# them (the name `clearcpuid=` and /proc/cpuinfo use): (leaf, subleaf, register, bit).
# Intel SDM vol. 2A, CPUID: leaf 1 (table 3-10), leaf 7 and leaf 0x80000001.
FEATURE_BITS: dict[str, tuple[int, int, str, int]] = {
    "pclmulqdq": (1, 0, "ecx", 1),
    "ssse3": (1, 0, "ecx", 9),
    "cx16": (1, 0, "ecx", 13),
    "sse4_1": (1, 0, "ecx", 19),
    "sse4_2": (1, 0, "ecx", 20),
    "popcnt": (1, 0, "ecx", 23),
    "aes": (1, 0, "ecx", 25),
    "xsave": (1, 0, "ecx", 26),
    "avx": (1, 0, "ecx", 28),
    "fsgsbase": (7, 0, "ebx", 0),
    "avx2": (7, 0, "ebx", 5),
    "smap": (7, 0, "ebx", 20),
    "sha_ni": (7, 0, "ebx", 29),
    "pku": (7, 0, "ecx", 3),
    "rdtscp": (0x8000_0001, 0, "edx", 27),
    # KVM's paravirtual features whose use is a hypercall, by KVM's names
    # (Documentation/virt/kvm/x86/cpuid.rst, leaf KVM_CPUID_FEATURES): Linux has
    # no option that hides them, only CPUID does.
    "KVM_FEATURE_PV_UNHALT": (0x4000_0001, 0, "eax", 7),  # KVM_HC_KICK_CPU
    "KVM_FEATURE_PV_SEND_IPI": (0x4000_0001, 0, "eax", 11),  # KVM_HC_SEND_IPI
    "KVM_FEATURE_PV_SCHED_YIELD": (0x4000_0001, 0, "eax", 13),  # KVM_HC_SCHED_YIELD
}
KVM_HYPERCALL_FEATURES = (
    "KVM_FEATURE_PV_UNHALT",
    "KVM_FEATURE_PV_SEND_IPI",
    "KVM_FEATURE_PV_SCHED_YIELD",
)

# Features whose instructions the kernel runs at CPL0 only where CPUID shows
# them, by the instruction the probe runs for them. Hiding the feature stops
# the kernel using it (SIMD: its crypto and checksum code falls back to plain C).
# The x87 and SSE2 instructions (`fwait`, `fnclex`, `ldmxcsr`, `pxor`...), `int3` and
# `iret` hide behind no feature bit: x86-64 has them all.
SIMD_FEATURES = ("ssse3", "sse4_1", "sse4_2", "aes", "pclmulqdq", "sha_ni", "avx", "avx2")
HIDDEN_BY_INSTRUCTION: dict[str, tuple[str, ...]] = {
    "movd xmm": SIMD_FEATURES,
    "xrstor": ("xsave", "avx", "avx2"),
    "lock cmpxchg16b": ("cx16",),
    "clac": ("smap",),
    "stac": ("smap",),
    "popcnt": ("popcnt",),
    "rdfsbase": ("fsgsbase",),
    "xsave": ("xsave", "avx", "avx2"),
    "xsaveopt": ("xsave", "avx", "avx2"),
    "xgetbv": ("xsave", "avx", "avx2"),
    "vzeroupper": ("avx", "avx2"),
    "crc32": ("sse4_2",),
    "rdtscp": ("rdtscp",),  # Linux's rdtsc_ordered() is rdtscp where CPUID shows it
    "rdpkru": ("pku",),
    # A hypercall that never returns (kvm_pvm re-runs a CPL0 `vmcall` for ever): a
    # kernel with two CPUs or more makes one from its timer interrupt (a PV IPI).
    "vmcall": KVM_HYPERCALL_FEATURES,
    "vmmcall": KVM_HYPERCALL_FEATURES,
}
# Linux spells "hide XSAVE" noxsave (arch/x86/kernel/fpu/init.c); the rest are clearcpuid= names.
NOXSAVE = "noxsave"

# Outcomes of one instruction run at CPL0.
WORKS = "works"
EMULATION_FAILURE = "emulation-failure"
EXCEPTION = "exception"
TIMEOUT = "timeout"
OTHER = "other"
NOT_RUN = "not-run"

# The timer scale: timer interrupts may take at most TICK_BUDGET of the guest's
# time at GUEST_HZ (Debian's kernels: CONFIG_HZ=250, a tick every 4 ms), with
# EVENTS_PER_TICK interrupts per tick period: a tickless kernel reprograms the
# PIT for its next event, and Debian's 6.1 took 20,689 IRQ 0s in a 429 s boot
# whose PIT ran at 25 Hz (--pit-scale 10), 1,892 in 371 s at 2.5 Hz. A stock
# kernel reached its shell in 429 s at scale 10, 371 s at 30, 347 s at 100.
GUEST_HZ = 250
EVENTS_PER_TICK = 2
# Linux's names: the feature flag (/proc/cpuinfo) and the option that keep a
# kernel's tick on the PIT.
TSC_DEADLINE_TIMER = "tsc_deadline_timer"
NOAPICTIMER = "noapictimer"
TICK_BUDGET = 0.05
MAX_TIMER_SCALE = 100


@dataclass(frozen=True)
class HostKey:
    """What a cached probe is valid for: this kernel (uname -r, uname -v) and KVM backend."""

    release: str
    version: str
    backend: str


@dataclass(frozen=True)
class CpuidFinding:
    """Whether features cleared in leaves 1 and 7 with KVM_SET_CPUID2 vanish from the guest.

    `visible`: the table's features a CPL0 guest sees with pyvmm's usual
    CPUID (everything KVM supports); `hidden`: those that vanished once
    cleared; `ignored`: those the guest still saw. `control`: whether the
    guest saw the signature the probe wrote into leaf 0x40000000 (the leaf
    KVM always takes: if not, the probe itself is in doubt).
    """

    visible: tuple[str, ...]
    hidden: tuple[str, ...]
    ignored: tuple[str, ...]
    control: bool

    @property
    def takes_effect(self) -> bool:
        return self.control and not self.ignored


@dataclass(frozen=True)
class InstructionFinding:
    """One instruction run at CPL0: its outcome (WORKS, EMULATION_FAILURE...) and details."""

    name: str
    outcome: str
    detail: str = ""

    @property
    def fails_to_emulate(self) -> bool:
        return self.outcome == EMULATION_FAILURE


@dataclass(frozen=True)
class SyscallFinding:
    """A CPL3 `syscall`: whether the CPU was at CPL0 at LSTAR (None: the probe could not tell)."""

    reaches_cpl0: bool | None
    detail: str


@dataclass(frozen=True)
class ResumeFlagFinding:
    """Whether RFLAGS.RF lets a vCPU resume over an execute breakpoint (None: unknown)."""

    honoured: bool | None
    detail: str


@dataclass(frozen=True)
class TimerFinding:
    """PIT ticks taken over `window` seconds by a CPL0 handler of `handler_instructions`.

    `tick_seconds` is window / ticks; when the ticks kept up with the PIT's
    own period (`rate_limited`) it is only an upper bound: a tick costs less.
    `instruction_seconds`: one CPL0 instruction, from a counted loop (None:
    not measured).
    """

    ticks: int
    window: float
    period: float
    handler_instructions: int
    instruction_seconds: float | None = None
    detail: str = ""

    @property
    def tick_seconds(self) -> float | None:
        return self.window / self.ticks if self.ticks else None

    @property
    def rate_limited(self) -> bool:
        return self.ticks >= 0.8 * self.window / self.period


@dataclass(frozen=True)
class HostFindings:
    key: HostKey
    cpuid: CpuidFinding
    instructions: tuple[InstructionFinding, ...]
    syscall: SyscallFinding
    resume_flag: ResumeFlagFinding
    timer: TimerFinding
    seconds: float  # how long the probe took
    # Whether KVM_SET_SREGS keeps CR0.PG without EFER.LME (host_support.py); None: unknown.
    keeps_32bit_paging: bool | None = None
    probed_at: str = ""  # ISO 8601, UTC
    format: int = field(default=FORMAT)

    def instruction(self, name: str) -> InstructionFinding | None:
        return next((each for each in self.instructions if each.name == name), None)


# -- derivations --------------------------------------------------------------


def failing_instructions(findings: HostFindings) -> tuple[str, ...]:
    """The instructions KVM's emulator gave up on (KVM_INTERNAL_ERROR_EMULATION)."""
    return tuple(each.name for each in findings.instructions if each.fails_to_emulate)


def unusable_instructions(findings: HostFindings) -> tuple[str, ...]:
    """The instructions KVM's emulator gave up on, and those that never completed."""
    return tuple(
        each.name for each in findings.instructions if each.outcome in (EMULATION_FAILURE, TIMEOUT)
    )


def features_to_hide(findings: HostFindings) -> tuple[str, ...]:
    """Features the guest sees whose instructions KVM cannot run at CPL0, in FEATURE_BITS order."""
    wanted = {
        feature
        for name in unusable_instructions(findings)
        for feature in HIDDEN_BY_INSTRUCTION.get(name, ())
    }
    return tuple(name for name in FEATURE_BITS if name in wanted and name in findings.cpuid.visible)


def cpuid_hideable(findings: HostFindings) -> tuple[str, ...]:
    """Of `features_to_hide`, those KVM_SET_CPUID2 hides (a VMM clears them in CPUID)."""
    if not findings.cpuid.control:
        return ()
    return tuple(name for name in features_to_hide(findings) if name in findings.cpuid.hidden)


def command_line_additions(findings: HostFindings, scale: int | None = None) -> tuple[str, ...]:
    """Linux options for this host: `noxsave`, `clearcpuid=a,b,...`, `noapictimer`.

    They hide what CPUID cannot. With a timer scale above 1 they also keep
    the kernel's tick on the PIT, which pyvmm slows (`--pit-scale`), rather
    than on the LAPIC timer, which ticks at the programmed rate: `noapictimer`,
    and `tsc_deadline_timer` cleared, since a kernel that has the TSC
    deadline timer shuts the PIT down before it looks at `noapictimer`
    (Linux 6.1 arch/x86/kernel/apic/apic.c, apic_needs_pit). `scale`: the
    PIT's scale the kernel will run with (None: timer_scale(findings)).
    """
    hideable = set(cpuid_hideable(findings))
    rest = [
        name
        for name in features_to_hide(findings)
        if name not in hideable and name not in KVM_HYPERCALL_FEATURES  # no option for them
    ]
    slow_timer = (timer_scale(findings) if scale is None else scale) > 1
    if slow_timer:
        rest.append(TSC_DEADLINE_TIMER)
    options = []
    if NOXSAVE[2:] in rest:
        options.append(NOXSAVE)
        rest.remove(NOXSAVE[2:])
    if rest:
        options.append("clearcpuid=" + ",".join(rest))
    if slow_timer:
        options.append(NOAPICTIMER)
    return tuple(options)


def with_additions(command_line: str, additions: tuple[str, ...]) -> str:
    """`command_line` with `additions` (command_line_additions) after what the user wrote.

    The user's text is kept as written. An option given already is not
    repeated, and the user's `clearcpuid=` takes the additions' names into
    its own list: Linux reads one clearcpuid= (arch/x86/lib/cmdline.c, the
    last one given).
    """
    extra: list[str] = []
    for option in additions:
        name, equals, value = option.partition("=")
        if not equals:
            if option not in command_line.split():
                extra.append(option)
            continue
        given = list(re.finditer(rf"(?<!\S){re.escape(name)}=(\S*)", command_line))
        if not given:
            extra.append(option)
            continue
        last = given[-1]
        names = [each for each in last.group(1).split(",") if each]
        names += [each for each in value.split(",") if each not in names]
        merged = f"{name}={','.join(names)}"
        command_line = command_line[: last.start()] + merged + command_line[last.end() :]
    return " ".join(part for part in (command_line, *extra) if part)


def unhideable_failures(findings: HostFindings) -> tuple[str, ...]:
    """Failing instructions no feature bit hides: only an emulation assist gets past them."""
    return tuple(
        name for name in failing_instructions(findings) if name not in HIDDEN_BY_INSTRUCTION
    )


def needs_syscall_repair(findings: HostFindings) -> bool:
    """True only when the probe saw a CPL3 `syscall` arrive at LSTAR still at CPL3."""
    return findings.syscall.reaches_cpl0 is False


def timer_scale(findings: HostFindings, hz: int = GUEST_HZ, budget: float = TICK_BUDGET) -> int:
    """How many times slower than programmed a guest timer must tick (1: as programmed).

    The smallest N for which EVENTS_PER_TICK timer interrupts take at most
    `budget` of N periods at `hz`, up to MAX_TIMER_SCALE. Where the probe's
    ticks kept up with its PIT (5 kHz: `rate_limited`, VT-x and AMD-V), a
    guest's slower tick is no burden: 1.
    """
    tick = findings.timer.tick_seconds
    if tick is None or findings.timer.rate_limited:
        return 1
    scale = math.ceil(tick * hz * EVENTS_PER_TICK / budget - 1e-9)
    return max(1, min(MAX_TIMER_SCALE, scale))


# -- JSON ---------------------------------------------------------------------


def findings_to_json(findings: HostFindings) -> dict[str, object]:
    """The findings as plain JSON values (the cache's form), and what pyvmm derives."""
    data = asdict(findings)
    data["timer"]["tick_seconds"] = findings.timer.tick_seconds
    data["timer"]["rate_limited"] = findings.timer.rate_limited
    data["cpuid"]["takes_effect"] = findings.cpuid.takes_effect
    data["derived"] = {
        "features_to_hide": list(features_to_hide(findings)),
        "cpuid_hideable": list(cpuid_hideable(findings)),
        "command_line_additions": list(command_line_additions(findings)),
        "unhideable_failures": list(unhideable_failures(findings)),
        "syscall_repair": needs_syscall_repair(findings),
        "timer_scale": timer_scale(findings),
    }
    return data


class BadFindings(PyvmmError, ValueError):
    """JSON that is not findings of this FORMAT."""


def findings_from_json(data: object) -> HostFindings:
    """The findings `findings_to_json` wrote; BadFindings for anything else."""
    try:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadFindings(f"not host findings of format {FORMAT}")
        cpuid = data["cpuid"]
        timer = data["timer"]
        return HostFindings(
            key=HostKey(**_strings(data["key"], ("release", "version", "backend"))),
            cpuid=CpuidFinding(
                visible=_names(cpuid["visible"]),
                hidden=_names(cpuid["hidden"]),
                ignored=_names(cpuid["ignored"]),
                control=_bool(cpuid["control"]),
            ),
            instructions=tuple(
                InstructionFinding(**_strings(each, ("name", "outcome", "detail")))
                for each in _list(data["instructions"])
            ),
            syscall=SyscallFinding(
                reaches_cpl0=_optional_bool(data["syscall"]["reaches_cpl0"]),
                detail=_string(data["syscall"]["detail"]),
            ),
            resume_flag=ResumeFlagFinding(
                honoured=_optional_bool(data["resume_flag"]["honoured"]),
                detail=_string(data["resume_flag"]["detail"]),
            ),
            timer=TimerFinding(
                ticks=_int(timer["ticks"]),
                window=_positive(timer["window"]),
                period=_positive(timer["period"]),
                handler_instructions=_int(timer["handler_instructions"]),
                instruction_seconds=_optional_number(timer["instruction_seconds"]),
                detail=_string(timer["detail"]),
            ),
            seconds=_number(data["seconds"]),
            keeps_32bit_paging=_optional_bool(data["keeps_32bit_paging"]),
            probed_at=_string(data["probed_at"]),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise BadFindings(f"malformed host findings: {error!r}") from None


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise BadFindings(f"expected a list, got {value!r}")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise BadFindings(f"expected a string, got {value!r}")
    return value


def _strings(value: object, names: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadFindings(f"expected an object, got {value!r}")
    return {name: _string(value[name]) for name in names}


def _names(value: object) -> tuple[str, ...]:
    return tuple(_string(each) for each in _list(value))


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise BadFindings(f"expected true or false, got {value!r}")
    return value


def _optional_bool(value: object) -> bool | None:
    return None if value is None else _bool(value)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadFindings(f"expected a count, got {value!r}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadFindings(f"expected a number, got {value!r}")
    return float(value)


def _optional_number(value: object) -> float | None:
    return None if value is None else _number(value)


def _positive(value: object) -> float:
    number = _number(value)
    if number <= 0:
        raise BadFindings(f"expected a positive number, got {value!r}")
    return number
