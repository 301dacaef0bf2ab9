"""What a Linux kernel booted on this host gets from the host probe's findings.

The probe (arch/x86_64/host_probe.py, `pyvmm host`) finds which CPU
features the guest sees whose kernel-mode instructions this host's KVM
cannot run. Before a Linux kernel boots, pyvmm hides them: through CPUID
where KVM_SET_CPUID2 takes effect for them, else with Linux's own options
after the user's command line (`noxsave`, `clearcpuid=...`,
host_findings.command_line_additions). The findings come from the cache,
or from a probe run now (under a second) when this host kernel has none.
On VT-x/AMD-V the probe finds nothing to hide and nothing changes.
`pyvmm boot --no-auto-append` leaves the kernel as the user gave it.

Only a Linux kernel gets this (the CLI asks `loaders.boots_as_linux`
first): other images have no command line of Linux's, and their boot
never imports the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyvmm.arch.x86_64.host_findings import (
    command_line_additions,
    cpuid_hideable,
    timer_scale,
    with_additions,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from pyvmm.arch.x86_64.host_findings import HostFindings


@dataclass(frozen=True)
class HostAdaptation:
    """The kernel's command line for this host, and what pyvmm changed to get it.

    `append`: the command line to boot with (the user's --append, None when
    none and nothing was added); `added`: the options derived from the
    findings (what `with_additions` merged into `append`); `hidden`: the
    features cleared in every vCPU's CPUID; `left_out`: options not added
    because the command line would have passed the kernel's cmdline_size
    (`limit` bytes); `pit_scale`: how many times slower than programmed
    pyvmm's PIT runs (host_findings.timer_scale; 1: as programmed).
    """

    append: str | None
    added: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    limit: int | None = None
    pit_scale: int = 1


def adapt_to_findings(
    findings: HostFindings,
    append: str | None,
    limit: int | None = None,
    pit_scale: int | None = None,
) -> HostAdaptation:
    """The command line and CPUID a Linux kernel gets on the host `findings` describe (pure).

    `limit`: the kernel's cmdline_size; options that would take the command
    line past it are left out (and the kernel's own check judges the user's).
    `pit_scale`: the PIT scale the user chose (--pit-scale; 1 for KVM's PIT),
    None for the findings' own; the tick options come only with a scale above 1.
    """
    scale = timer_scale(findings) if pit_scale is None else pit_scale
    added = command_line_additions(findings, scale)
    hidden = cpuid_hideable(findings)
    if not added:
        return HostAdaptation(append, (), hidden, pit_scale=scale)
    merged = with_additions(append or "", added)
    if limit is not None and len(merged.encode("utf-8", "replace")) > limit:
        return HostAdaptation(append, (), hidden, left_out=added, limit=limit, pit_scale=scale)
    return HostAdaptation(merged, added, hidden, pit_scale=scale)


def describe_adaptation(adaptation: HostAdaptation) -> str | None:
    """The one line `pyvmm boot` prints about it; None when nothing changed."""
    parts = []
    if adaptation.added:
        parts.append(
            "added to the kernel's command line for this host (pyvmm host): "
            + " ".join(adaptation.added)
        )
    if adaptation.left_out:
        parts.append(
            f"not added to the kernel's command line, which would pass its {adaptation.limit}"
            "-byte cmdline_size: " + " ".join(adaptation.left_out)
        )
    if adaptation.hidden:
        parts.append("hidden in the vCPU's CPUID: " + ", ".join(adaptation.hidden))
    if adaptation.pit_scale != 1:
        parts.append(f"the PIT runs {adaptation.pit_scale} times slower (--pit-scale)")
    if not parts:
        return None
    return "pyvmm: " + "; ".join(parts) + " (--no-auto-append: none of it)"


def adapt_to_host(
    image: bytes, append: str | None, kvm_path: str | None = None, pit_scale: int | None = None
) -> HostAdaptation:
    """`adapt_to_findings` for the kernel `image` with this host's findings (the
    cache's, or a probe run now).

    Raises KvmUnavailable when `kvm_path` cannot be opened, ProbeError or
    KvmError when a probe guest misbehaves.
    """
    from pyvmm.arch.x86_64.host_probe import probe_host
    from pyvmm.errors import LoaderError
    from pyvmm.loaders.linux import command_line_limit

    try:
        limit: int | None = command_line_limit(image)
    except LoaderError:
        limit = None  # the loader says why, in one line, when the machine is built
    report = probe_host(kvm_path=kvm_path)
    return adapt_to_findings(report.findings, append, limit, pit_scale)
