"""`pyvmm demo containers`: a real OCI runtime beside a real VM, and the evidence it prints.

The demo runs from a directory outside the checkout, as the other demos'
tests run them. It needs root and an OCI runtime that can start a container
on this host (crun, or runc where crun does not support the host's cgroups):
without one the evidence test is skipped, unless PYVMM_REQUIRE_TOOLS=1 (CI)
makes that a failure. A PATH with no runtime at all must end the demo with
status 2 and one line on stderr.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import pytest

from pyvmm.demos import containers
from pyvmm.demos.common import DemoCannotRun
from pyvmm.shipped import shipped_file
from tests.integration.test_demos import run_demo_in as run_demo


def run_demo_in(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m pyvmm demo containers` with `directory` as the current directory."""
    return run_demo(directory, "containers", **env)


def require_oci_runtime(scratch: Path) -> str:
    """The name of the runtime the demo will use, or skip (fail with PYVMM_REQUIRE_TOOLS=1)."""
    problem = None
    if os.geteuid() != 0:
        problem = "the containers demo needs root"
    else:
        try:
            chosen = containers.prepare_containers(
                scratch, shipped_file(containers.WORKLOAD)
            ).runtime.name
        except DemoCannotRun as error:
            problem = str(error)
    if problem is not None:
        if os.environ.get("PYVMM_REQUIRE_TOOLS") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    return chosen


def test_containers_demo_shows_what_each_shares(tmp_path: Path) -> None:
    runtime = require_oci_runtime(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    result = run_demo_in(work)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert result.stderr == ""
    assert re.search(rf"^OCI runtime: {runtime} version ", out, re.M), out
    # The same kernel inside the container as outside, and on the host.
    release = re.search(r"^kernel release \(uname -r\)\s+(\S+)\s+(\S+)$", out, re.M)
    assert release and release.group(1) == release.group(2) == platform.release(), out
    # pid 1 inside; its host pid in the host's /proc, with NSpid "host 1".
    assert re.search(r"^its pid, as it sees it \(getpid\)\s+\d+\s+1$", out, re.M), out
    host_pid = re.search(
        r"^its pid in the host's /proc .*\s(\d+): Name workload, NSpid (\d+) 1$", out, re.M
    )
    assert host_pid and host_pid.group(1) == host_pid.group(2), out
    for kind in ("pid", "mnt", "uts", "ipc", "net"):
        assert re.search(rf"^/proc/PID/ns/{kind} .*\(the host's\)\s+.*\(its own\)$", out, re.M)
    assert "SHARED" not in out
    # Its limits, read back from the host's cgroup files while it ran.
    assert re.search(r"^memory\s+v[12] \S+/memory\.(limit_in_bytes|max)\s+67108864$", out, re.M)
    assert re.search(r"^pids\s+v[12] \S+/pids\.max\s+16$", out, re.M), out
    # The OOM kill.
    assert re.search(r"touched \d+ MiB, then was killed by SIGKILL$", out, re.M), out
    assert re.search(r"cgroup memory\.(oom_control|events)\s+oom_kill [1-9]", out), out
    # Equal results in all four runs.
    assert "All four results are equal" in " ".join(out.split())
    results = re.findall(r"^(?:native|process|container|pyvmm VM).*?(0x[0-9a-f]{16})", out, re.M)
    assert len(results) == 4 and len(set(results)) == 1, out
    assert "DIFFERENT" not in out
    # The VM's own tables, inside its RAM, and its RAM's end held.
    for register in ("GDTR", "IDTR", "CR3"):
        assert re.search(rf"^{register}\s+.*\s+0x10[0-9a-f]+.*inside its 16 MiB of RAM$", out, re.M)
    assert "then 16 past its end: 16 MMIO exits, dropped by pyvmm" in out
    assert "0xffffffffffffffff (all ones: no memory there)" in out
    text = " ".join(out.split())
    assert "a container is a process that is fooled" in text
    assert "a VM is a machine that is fooled" in text
    assert "verdict: the container is a process on the host's kernel" in out


def test_containers_demo_without_a_runtime_cannot_run(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_demo_in(tmp_path, PATH=str(empty))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    if os.geteuid() == 0:
        assert lines[0] == (
            "pyvmm demo containers cannot run: no OCI runtime: none on PATH "
            "(looked for crun and runc): apt-get install crun (or runc)"
        )
    else:
        assert lines[0].startswith("pyvmm demo containers cannot run: it needs root")
    assert "Traceback" not in result.stderr
