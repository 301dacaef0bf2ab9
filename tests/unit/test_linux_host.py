"""A Linux kernel gets the host probe's command-line additions and CPUID bits (no KVM).

The findings are invented (tests/unit/test_host_probe.py's hosts): one like
issue 15's kvm_pvm, one where everything works (VT-x/AMD-V). The CLI's
part is checked up to the VM's creation, which is stubbed out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from pyvmm.arch.x86_64 import host_probe
from pyvmm.arch.x86_64.host_findings import KVM_HYPERCALL_FEATURES
from pyvmm.arch.x86_64.host_probe import ProbeReport
from pyvmm.cli import boot
from pyvmm.cli.parser import build_parser
from pyvmm.errors import LoaderError
from pyvmm.loaders import boots_as_linux
from pyvmm.machine import early_vm
from pyvmm.machine.linux_host import HostAdaptation, adapt_to_findings, describe_adaptation
from tests.fuzz.image_linux import build_bzimage
from tests.unit.test_host_probe import pvm_host, vt_x_host

GUESTS = Path(__file__).resolve().parents[2] / "guests"
PVM_HIDDEN = ("cx16", *KVM_HYPERCALL_FEATURES)
HIDDEN_TEXT = ", ".join(PVM_HIDDEN)
PVM_ADDITIONS = (
    "noxsave clearcpuid=pclmulqdq,ssse3,sse4_1,sse4_2,popcnt,aes,avx,avx2,smap,sha_ni,"
    "tsc_deadline_timer noapictimer"
)


def test_a_pvm_like_host_adds_its_options_after_the_users_and_hides_what_cpuid_can() -> None:
    adaptation = adapt_to_findings(pvm_host(), "console=ttyS0")
    assert adaptation.append == f"console=ttyS0 {PVM_ADDITIONS}"
    assert adaptation.added == tuple(PVM_ADDITIONS.split())
    assert adaptation.hidden == PVM_HIDDEN
    assert describe_adaptation(adaptation) == (
        f"pyvmm: added to the kernel's command line for this host (pyvmm host): {PVM_ADDITIONS}"
        f"; hidden in the vCPU's CPUID: {HIDDEN_TEXT}; the PIT runs 60 times slower (--pit-scale) "
        "(--no-auto-append: none of it)"
    )
    assert adaptation.pit_scale == 60


def test_without_append_the_additions_are_the_whole_command_line() -> None:
    assert adapt_to_findings(pvm_host(), None).append == PVM_ADDITIONS


def test_the_users_clearcpuid_takes_the_additions_names() -> None:
    adaptation = adapt_to_findings(pvm_host(), "clearcpuid=pku console=ttyS0")
    clearcpuid = PVM_ADDITIONS.split("=")[1].split()[0]
    assert adaptation.append == f"clearcpuid=pku,{clearcpuid} console=ttyS0 noxsave noapictimer"


@pytest.mark.parametrize("append", [None, "", "console=ttyS0"])
def test_a_host_where_the_probe_found_nothing_adds_nothing(append: str | None) -> None:
    adaptation = adapt_to_findings(vt_x_host(), append)
    assert adaptation == HostAdaptation(append, (), (), pit_scale=1)
    assert describe_adaptation(adaptation) is None


def test_only_a_linux_kernel_boots_as_linux() -> None:
    bzimage = build_bzimage()
    hello = (GUESTS / "hello.bin").read_bytes()
    assert boots_as_linux(bzimage)
    assert boots_as_linux(bzimage, "linux")
    assert not boots_as_linux(bzimage, "flat")
    assert not boots_as_linux(bzimage, force_multiboot=True)
    assert not boots_as_linux(hello)
    assert boots_as_linux(hello, "linux")  # --format linux insists
    assert not boots_as_linux((GUESTS / "multiboot.elf").read_bytes())
    assert not boots_as_linux((GUESTS / "elf64.elf").read_bytes())


class Built(Exception):
    """Raised by the stubbed builder with what it was given."""


def cli_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, image: bytes, *options: str
) -> tuple[str | None, tuple[str, ...], list[str]]:
    """`pyvmm boot IMAGE OPTIONS` up to the build: the --append and CPUID it gets, and
    which findings were asked for (the probe is stubbed with issue 15's host).
    The PIT and its scale it gets are left in `cli_build.pit`."""
    path = tmp_path / "image"
    path.write_bytes(image)
    asked: list[str] = []

    def probe_host(**kwargs: object) -> ProbeReport:
        asked.append("probe")
        return ProbeReport(pvm_host(), cached=True, cache_path=None)

    class Early:
        def close(self) -> None:
            pass

    def build(*args: object) -> None:
        raise Built(*args[-4:])  # append, hide_cpuid, pit, pit_scale

    monkeypatch.setattr(host_probe, "probe_host", probe_host)
    monkeypatch.setattr(early_vm, "start_vm", lambda *args: Early())
    monkeypatch.setattr(boot, "_build", build)
    args = build_parser().parse_args(["boot", str(path), *options])
    assert isinstance(args, argparse.Namespace)
    with pytest.raises(Built) as built:
        boot.build_from_args(args, None)
    append, hidden, pit, scale = built.value.args
    cli_build.pit = (pit, scale)  # type: ignore[attr-defined]
    return append, hidden, asked


def test_the_cli_adds_the_options_for_a_linux_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append, hidden, asked = cli_build(
        monkeypatch, tmp_path, build_bzimage(), "--append", "console=ttyS0"
    )
    assert (append, hidden, asked) == (f"console=ttyS0 {PVM_ADDITIONS}", PVM_HIDDEN, ["probe"])


def test_the_cli_says_what_it_added_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        host_probe, "probe_host", lambda **kwargs: ProbeReport(pvm_host(), True, None)
    )
    append, hidden, line, scale = boot.adapt_linux_to_host(build_bzimage(), "quiet", "/dev/kvm")
    assert (append, hidden, scale) == (f"quiet {PVM_ADDITIONS}", PVM_HIDDEN, 60)
    assert line is not None and "\n" not in line
    assert line.startswith(
        f"pyvmm: added to the kernel's command line for this host (pyvmm host): {PVM_ADDITIONS}"
    )


def test_the_cli_says_a_failed_probe_and_boots_the_kernel_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(**kwargs: object) -> ProbeReport:
        raise host_probe.ProbeError("the CPUID guest did not halt")

    monkeypatch.setattr(host_probe, "probe_host", fails)
    assert boot.adapt_linux_to_host(build_bzimage(), "quiet", "/dev/kvm") == (
        "quiet",
        (),
        "pyvmm: the host probe failed (the CPUID guest did not halt): nothing added",
        1,
    )


def test_options_that_would_pass_cmdline_size_are_left_out_and_said() -> None:
    limit = len("console=ttyS0 noxsave")
    adaptation = adapt_to_findings(pvm_host(), "console=ttyS0", limit)
    assert adaptation.append == "console=ttyS0" and adaptation.added == ()
    assert adaptation.left_out == tuple(PVM_ADDITIONS.split())
    assert describe_adaptation(adaptation) == (
        f"pyvmm: not added to the kernel's command line, which would pass its {limit}-byte "
        f"cmdline_size: {PVM_ADDITIONS}; hidden in the vCPU's CPUID: {HIDDEN_TEXT}; "
        "the PIT runs 60 times slower (--pit-scale) (--no-auto-append: none of it)"
    )
    fits = adapt_to_findings(pvm_host(), "console=ttyS0", len(f"console=ttyS0 {PVM_ADDITIONS}"))
    assert fits.append == f"console=ttyS0 {PVM_ADDITIONS}"


def test_the_limit_is_the_kernels_cmdline_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        host_probe, "probe_host", lambda **kwargs: ProbeReport(pvm_host(), True, None)
    )
    append, _, line, _ = boot.adapt_linux_to_host(build_bzimage(cmdline_size=64), "quiet", "kvm")
    assert append == "quiet"
    assert line is not None and "its 64-byte cmdline_size" in line


def test_no_auto_append_leaves_a_linux_kernel_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    append, hidden, asked = cli_build(
        monkeypatch, tmp_path, build_bzimage(), "--append", "console=ttyS0", "--no-auto-append"
    )
    assert (append, hidden, asked) == ("console=ttyS0", (), [])
    assert cli_build.pit == ("user", 1)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "pit"),
    [
        ((), ("user", 60)),  # the probe's timer scale (a 6 ms tick)
        (("--pit-scale", "3"), ("user", 3)),  # the user's wins
        (("--pit-scale", "1"), ("user", 1)),
        (("--pit", "kernel"), ("kernel", 1)),  # KVM's PIT cannot be slowed
    ],
)
def test_a_linux_kernel_gets_the_probes_pit_scale_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, options: tuple[str, ...], pit: object
) -> None:
    append, _, _ = cli_build(monkeypatch, tmp_path, build_bzimage(), *options)
    assert cli_build.pit == pit  # type: ignore[attr-defined]
    # The tick goes to the PIT only when the PIT is slowed.
    slowed = pit[1] > 1  # type: ignore[index]
    assert ("noapictimer" in (append or "").split()) == slowed
    assert ("tsc_deadline_timer" in (append or "")) == slowed


def test_the_line_about_the_host_gives_the_scale_the_kernel_gets() -> None:
    assert "the PIT runs 7 times slower" in str(
        describe_adaptation(adapt_to_findings(pvm_host(), "x", pit_scale=7))
    )
    plain = adapt_to_findings(pvm_host(), "x", pit_scale=1)
    assert "PIT" not in str(describe_adaptation(plain)) and "noapictimer" not in str(plain.append)


def test_other_images_get_nothing_and_no_probe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hello = (GUESTS / "hello.bin").read_bytes()
    assert cli_build(monkeypatch, tmp_path, hello) == (None, (), [])
    multiboot = (GUESTS / "multiboot.elf").read_bytes()
    assert cli_build(monkeypatch, tmp_path, multiboot, "--append", "x") == ("x", (), [])


def test_the_line_comes_once_the_kernel_is_built_and_not_when_it_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bzImage"
    path.write_bytes(build_bzimage())
    monkeypatch.setattr(
        host_probe, "probe_host", lambda **kwargs: ProbeReport(pvm_host(), True, None)
    )
    monkeypatch.setattr(early_vm, "start_vm", lambda *args: None)
    args = build_parser().parse_args(["boot", str(path)])
    built = object()
    monkeypatch.setattr(boot, "_build", lambda *args: built)
    assert boot.build_from_args(args, sys.stdout) is built
    assert capsys.readouterr().err.startswith("pyvmm: added to the kernel's command line")

    def refuse(*args: object) -> None:
        raise LoaderError("bzImage speaks boot protocol 2.10")

    class Early:
        def close(self) -> None:
            pass

    monkeypatch.setattr(early_vm, "start_vm", lambda *args: Early())
    monkeypatch.setattr(boot, "_build", refuse)
    with pytest.raises(LoaderError):
        boot.build_from_args(args, sys.stdout)
    assert capsys.readouterr().err == ""
