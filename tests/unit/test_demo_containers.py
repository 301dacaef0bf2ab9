"""The containers demo's pure parts: the bundle, cgroup files, runtime choice, the workload.

No /dev/kvm and no OCI runtime: the runtimes are stand-ins and the cgroup
file systems directories under tmp_path. The workload is a static Linux
executable, so it runs here directly.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.demos import DEMOS, container_guests, containers, oci, run_demo
from pyvmm.demos.common import CANNOT_RUN, DemoCannotRun
from pyvmm.demos.container_runs import RunFailed, results
from pyvmm.demos.kernels import load_kernel_image
from tests.unit.test_demo_text import assemble, needs_binutils

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "guests" / "container" / "workload.elf"
LIMITS = oci.Limits(memory=64 << 20, pids=16, cpu_quota=50_000, cpu_period=100_000)

# What `runc spec` (1.1) writes, cut down to the parts make_config reads or keeps.
RUNC_SPEC = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [
            {"type": "pid"},
            {"type": "network"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "maskedPaths": ["/proc/kcore"],
    },
}

HYBRID_CGROUP = """\
9:name=systemd:/c1
8:pids:/c1
4:memory:/outer/job/c1
1:cpu:/c1
0::/c1
"""
HYBRID_MOUNTINFO = """\
31 23 0:28 / {root} rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED_MOUNTINFO = "30 23 0:27 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


# ----------------------------------------------------------------------------
# The bundle.


def test_config_is_the_spec_set_up_for_the_workload() -> None:
    config = oci.make_config(RUNC_SPEC, ["/workload", "world"], "box", LIMITS)
    assert config["process"]["args"] == ["/workload", "world"]
    assert config["process"]["terminal"] is False
    assert config["process"]["user"] == {"uid": 0, "gid": 0}  # kept from the spec
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["hostname"] == "box"
    kinds = [entry["type"] for entry in config["linux"]["namespaces"]]
    assert sorted(kinds) == sorted(oci.NAMESPACES) and len(kinds) == len(set(kinds))
    resources = config["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20}
    assert resources["pids"] == {"limit": 16}
    assert resources["cpu"] == {"quota": 50_000, "period": 100_000}
    assert resources["devices"] == [{"allow": False, "access": "rwm"}]
    assert config["mounts"] == RUNC_SPEC["mounts"]
    assert RUNC_SPEC["process"]["terminal"] is True  # the spec itself is not changed


def test_config_adds_missing_namespaces_and_drops_a_user_namespace() -> None:
    spec = json.loads(json.dumps(RUNC_SPEC))
    spec["linux"]["namespaces"] = [{"type": "pid"}, {"type": "user"}]
    kinds = [e["type"] for e in oci.make_config(spec, ["/w"], "h", LIMITS)["linux"]["namespaces"]]
    assert sorted(kinds) == sorted(oci.NAMESPACES)


def test_bundle_holds_the_config_and_the_workload_alone(tmp_path: Path) -> None:
    workload = tmp_path / "workload.elf"
    workload.write_bytes(b"\x7fELF...")
    config = oci.make_config(RUNC_SPEC, ["/workload"], "box", LIMITS)
    bundle = oci.write_bundle(tmp_path / "bundle", workload, config)
    assert json.loads((bundle / "config.json").read_text()) == config
    assert [path.name for path in (bundle / "rootfs").iterdir()] == ["workload"]
    mode = (bundle / "rootfs" / "workload").stat().st_mode
    assert mode & stat.S_IXUSR and (bundle / "rootfs" / "workload").read_bytes() == b"\x7fELF..."


def test_run_command_names_the_bundle_state_and_pid_file(tmp_path: Path) -> None:
    runtime = oci.Runtime("runc", "/usr/sbin/runc")
    argv = oci.run_command(runtime, tmp_path / "s", tmp_path / "b", "c1", tmp_path / "p", True)
    assert argv == [
        "/usr/sbin/runc", "--root", str(tmp_path / "s"), "run", "--detach",
        "--pid-file", str(tmp_path / "p"), "--bundle", str(tmp_path / "b"), "c1",
    ]  # fmt: skip
    assert oci.container_id("x") != oci.container_id("x")


# ----------------------------------------------------------------------------
# cgroups.


def test_proc_cgroup_lines() -> None:
    lines = oci.parse_proc_cgroup(HYBRID_CGROUP + "garbage\n")
    assert lines[0] == oci.CgroupLine(9, ("name=systemd",), "/c1")
    assert lines[2] == oci.CgroupLine(4, ("memory",), "/outer/job/c1")
    assert lines[-1] == oci.CgroupLine(0, (), "/c1")
    assert oci.parse_proc_cgroup("5:cpu,cpuacct:/a:b\n") == [
        oci.CgroupLine(5, ("cpu", "cpuacct"), "/a:b")
    ]


def test_mountinfo_cgroup_mounts_and_mode() -> None:
    mounts = oci.parse_mountinfo(HYBRID_MOUNTINFO.format(root="/sys/fs/cgroup"))
    assert [mount.mount_point for mount in mounts] == [
        f"/sys/fs/cgroup/{name}" for name in ("cpu", "memory", "pids", "systemd", "unified")
    ]
    assert mounts[1] == oci.CgroupMount("/sys/fs/cgroup/memory", "/", 1, ("memory",))
    assert mounts[3].controllers == ("name=systemd",)
    assert mounts[4].version == 2
    assert oci.cgroup_mode(mounts) == "hybrid"
    assert oci.cgroup_mode(mounts[:4]) == "legacy"
    unified = oci.parse_mountinfo(UNIFIED_MOUNTINFO.format(root="/sys/fs/cgroup"))
    assert oci.cgroup_mode(unified) == "unified"
    escaped = oci.parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup2 cgroup2 rw\n")
    assert escaped[0].mount_point == "/a b"


def test_cgroup_directory_v1_v2_and_a_mount_of_a_subtree() -> None:
    mounts = oci.parse_mountinfo(HYBRID_MOUNTINFO.format(root="/cg"))
    lines = oci.parse_proc_cgroup(HYBRID_CGROUP)
    assert oci.cgroup_directory(lines, mounts, "memory") == (1, Path("/cg/memory/outer/job/c1"))
    assert oci.cgroup_directory(lines, mounts, "pids") == (1, Path("/cg/pids/c1"))
    # No v1 hierarchy has io: the v2 cgroup holds it.
    assert oci.cgroup_directory(lines, mounts, "io") == (2, Path("/cg/unified/c1"))
    # A mount that shows only /outer (as inside a cgroup namespace's parent).
    sub = [oci.CgroupMount("/m", "/outer", 1, ("memory",))]
    assert oci.cgroup_directory(lines, sub, "memory") == (1, Path("/m/job/c1"))
    elsewhere = [oci.CgroupMount("/m", "/other", 1, ("memory",))]
    assert oci.cgroup_directory(lines, elsewhere, "memory") is None


def fake_host(tmp_path: Path, version: int) -> tuple[Path, Path]:
    """A /proc with process 42 and a cgroup tree under tmp_path: (proc, its memory cgroup)."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "42").mkdir(parents=True)
    (proc / "self").mkdir()
    if version == 1:
        (proc / "self" / "mountinfo").write_text(HYBRID_MOUNTINFO.format(root=root))
        (proc / "42" / "cgroup").write_text(HYBRID_CGROUP)
        files = {
            root / "memory/outer/job/c1": {
                "memory.limit_in_bytes": "67108864\n",
                "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
                "memory.failcnt": "36\n",
                "memory.max_usage_in_bytes": "33554432\n",
            },
            root / "pids/c1": {"pids.max": "16\n"},
            root / "cpu/c1": {"cpu.cfs_quota_us": "50000\n", "cpu.cfs_period_us": "100000\n"},
        }
        memory = root / "memory/outer/job/c1"
    else:
        (proc / "self" / "mountinfo").write_text(UNIFIED_MOUNTINFO.format(root=root))
        (proc / "42" / "cgroup").write_text("0::/c1\n")
        memory = root / "c1"
        files = {
            memory: {
                "memory.max": "67108864\n",
                "pids.max": "16\n",
                "cpu.max": "50000 100000\n",
                "memory.events": "low 0\nhigh 0\nmax 40\noom 1\noom_kill 1\noom_group_kill 0\n",
                "memory.peak": "33554432\n",
            }
        }
    for directory, contents in files.items():
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in contents.items():
            (directory / name).write_text(text)
    return proc, memory


def test_limits_read_back_from_a_v1_hierarchy(tmp_path: Path) -> None:
    proc, memory = fake_host(tmp_path, 1)
    view = oci.CgroupView.of(42, proc)
    assert view.memory_version == 1
    readings = {reading.what: reading for reading in view.limits()}
    assert {what: r.value for what, r in readings.items()} == {
        "memory": "67108864",
        "pids": "16",
        "cpu": "50000",
        "cpu period": "100000",
    }
    assert readings["memory"].path == memory / "memory.limit_in_bytes"
    root = tmp_path / "cgroup"
    assert readings["memory"].short_path == f"{root}/memory/.../c1/memory.limit_in_bytes"
    assert readings["pids"].short_path == f"{root}/pids/c1/pids.max"
    evidence = oci.read_oom_evidence(view)
    assert evidence.oom_kills == 1
    assert evidence.details == (
        ("memory.oom_control", "oom_kill 1"),
        ("memory.failcnt", "36"),
        ("memory.max_usage_in_bytes", "33554432"),
    )


def test_limits_read_back_from_cgroup_v2(tmp_path: Path) -> None:
    proc, memory = fake_host(tmp_path, 2)
    view = oci.CgroupView.of(42, proc)
    assert view.memory_version == 2
    assert [(r.what, r.path.name, r.value) for r in view.limits()] == [
        ("memory", "memory.max", "67108864"),
        ("pids", "pids.max", "16"),
        ("cpu", "cpu.max", "50000 100000"),
    ]
    evidence = oci.read_oom_evidence(view)
    assert evidence.oom_kills == 1
    assert evidence.details == (("memory.events", "oom_kill 1"), ("memory.peak", "33554432"))
    (memory / "memory.peak").unlink()  # older kernels have none
    assert oci.read_oom_evidence(view).details == (("memory.events", "oom_kill 1"),)


def test_keyed_files() -> None:
    assert oci.parse_keyed("oom_kill_disable 0\nunder_oom 1\noom_kill 3\nbad line here\n") == {
        "oom_kill_disable": 0,
        "under_oom": 1,
        "oom_kill": 3,
    }


# ----------------------------------------------------------------------------
# Finding and choosing a runtime.


def fake_runtime(directory: Path, name: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_runtimes_are_found_in_order(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    runc = fake_runtime(bin_dir, "runc")
    assert oci.find_runtimes(str(bin_dir)) == [oci.Runtime("runc", str(runc))]
    crun = fake_runtime(bin_dir, "crun")
    assert [r.name for r in oci.find_runtimes(str(bin_dir))] == ["crun", "runc"]
    assert oci.find_runtimes(str(bin_dir))[0].path == str(crun)
    assert oci.find_runtimes(str(tmp_path / "empty")) == []


def test_the_next_runtime_is_used_when_the_first_fails() -> None:
    crun, runc = oci.Runtime("crun", "/x/crun"), oci.Runtime("runc", "/x/runc")
    tried = []

    def probe(runtime: oci.Runtime) -> None:
        tried.append(runtime.name)
        if runtime.name == "crun":
            raise RunFailed(
                "crun run (a trivial container) failed: cgroups in hybrid mode not "
                "supported, drop all controllers from cgroupv2 (exit status 1)"
            )

    chosen, rejected = containers.choose_runtime([crun, runc], probe)
    assert chosen == runc and tried == ["crun", "runc"]
    assert rejected == [
        "crun: crun run (a trivial container) failed: cgroups in hybrid mode not supported, "
        "drop all controllers from cgroupv2 (exit status 1)"
    ]


def test_every_runtime_failing_is_one_line_with_a_hint() -> None:
    crun = oci.Runtime("crun", "/x/crun")

    def probe(runtime: oci.Runtime) -> None:
        raise oci.OciError(f"{runtime.name} spec failed: boom")

    with pytest.raises(oci.OciError) as raised:
        containers.choose_runtime([crun], probe)
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        "no OCI runtime could start a container here (crun: crun spec failed: boom): "
        "try the other runtime: apt-get install runc"
    )
    both = oci.failing_runtimes_message(["crun: a", "runc: b"], [crun, oci.Runtime("runc", "r")])
    assert both.startswith("no OCI runtime could start a container here (crun: a; runc: b): ")


def test_no_runtime_on_path_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(DemoCannotRun) as raised:
        containers.prepare_containers(tmp_path, WORKLOAD)
    assert str(raised.value) == (
        "no OCI runtime: none on PATH (looked for crun and runc): apt-get install crun (or runc)"
    )
    monkeypatch.setenv("PATH", "")
    with pytest.raises(DemoCannotRun, match="PATH is empty"):
        containers.prepare_containers(tmp_path, WORKLOAD)


def test_run_demo_without_a_runtime_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(containers.os, "geteuid", lambda: 0)
    out = io.StringIO()
    assert "containers" in DEMOS
    assert run_demo("containers", out) == CANNOT_RUN == 2
    assert out.getvalue() == ""
    assert capsys.readouterr().err == (
        "pyvmm demo containers cannot run: no OCI runtime: none on PATH (looked for crun "
        "and runc): apt-get install crun (or runc)\n"
    )


def test_not_root_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers.os, "geteuid", lambda: 1000)
    with pytest.raises(DemoCannotRun, match="needs root"):
        containers.run(io.StringIO())


def test_runtime_errors_keep_their_last_line_and_message() -> None:
    assert oci.last_line("") == "nothing on stderr"
    assert oci.last_line("a\n\nfirst\nlast one\n\n") == "last one"
    runc = 'time="2026-11-30T10:00:00Z" level=error msg="container \\"x\\" does not exist"\n'
    assert oci.last_line(runc) == 'container "x" does not exist'
    assert len(oci.last_line("x" * 1000)) == oci.MESSAGE_LIMIT


# ----------------------------------------------------------------------------
# The workload and its build.


def makefile_variable(path: Path, name: str) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:=(.*)$", text, re.M)
    assert match, f"{name} not in {path}"
    return match.group(1).split()


def test_workload_compiles_int_loop_with_the_kernels_flags() -> None:
    ours = makefile_variable(REPO / "guests" / "Makefile", "CONTAINER_KERNEL_CFLAGS")
    theirs = makefile_variable(REPO / "benchmarks" / "kernels" / "Makefile", "KERNEL_CFLAGS")
    assert ours == theirs


def test_workload_carries_the_machine_code_of_kernels_bin() -> None:
    image = load_kernel_image()
    start = image.offsets["int_loop"]
    end = min(offset for offset in image.offsets.values() if offset > start)
    assert image.data[start:end] in WORKLOAD.read_bytes()


def int_loop(n: int) -> int:
    """benchmarks/kernels/kernels.c's int_loop, in Python."""
    mask = (1 << 64) - 1
    x = 0x9E3779B97F4A7C15 ^ n
    for i in range(n):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        x = (x + i) & mask
    return x


def run_workload(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(WORKLOAD), *args], input=data, capture_output=True, timeout=30, check=False
    )


linux_x86_64 = pytest.mark.skipif(
    not (sys.platform == "linux" and os.uname().machine == "x86_64"),
    reason="the workload is an x86-64 Linux executable",
)


@linux_x86_64
def test_workload_bench_mode() -> None:
    done = run_workload("bench", "1000", "2", "10")
    assert done.returncode == 0 and done.stdout.startswith(b"+int_loop_n 1000\n")
    found = results(done.stdout)
    assert int(found["int_loop_result"], 16) == int_loop(1000)
    assert int(found["getpid_count"]) == 10
    assert int(found["int_loop_ns"]) > 0 and int(found["getpid_ns"]) > 0


@linux_x86_64
def test_workload_world_mode_waits_for_eof() -> None:
    done = run_workload("world")
    found = results(done.stdout)
    assert done.returncode == 0
    assert found["release"] == os.uname().release
    assert found["nodename"] == os.uname().nodename
    assert int(found["pid"]) > 1 and int(found["ppid"]) == os.getpid()
    assert found["waiting"] == "stdin"


@linux_x86_64
def test_workload_touch_mode_touches_until_its_limit() -> None:
    done = run_workload("touch", "3", data=b"g")
    assert done.returncode == 3
    assert done.stdout == (
        b"+waiting stdin\ntouched_kib 1024\ntouched_kib 2048\ntouched_kib 3072\nlimit not reached\n"
    )


@linux_x86_64
def test_workload_spawn_mode_reports_status_and_peak() -> None:
    true = shutil.which("true")
    assert true is not None
    found = results(run_workload("spawn", true).stdout)
    assert found["spawn_status"] == "0" and int(found["spawn_maxrss_kib"]) >= 0
    found = results(run_workload("spawn", "/nonexistent/program").stdout)
    assert os.waitstatus_to_exitcode(int(found["spawn_status"])) == 127


@linux_x86_64
def test_workload_usage() -> None:
    done = run_workload("dance")
    assert done.returncode == 2 and b"usage: workload" in done.stdout


# ----------------------------------------------------------------------------
# The VM side's guests.


@needs_binutils
def test_exit_loop_image_is_its_assembly(tmp_path: Path) -> None:
    source = f"""
        mov ecx, 1234
        mov edx, {container_guests.EXIT_PORT}
    1:  out dx, al
        loop 1b
        mov al, 0x2a
        out 0xf4, al
    """
    assert assemble(source, tmp_path) == container_guests.exit_loop_image(1234)


@needs_binutils
def test_walk_code_is_its_assembly(tmp_path: Path) -> None:
    g = container_guests
    load = g.LOAD_GPA
    source = f"""
        lgdt [{load + g.GDTR_OFFSET}]
        lidt [{load + g.IDTR_OFFSET}]
        mov eax, 0x10
        mov ds, eax
        mov es, eax
        mov ss, eax
        mov eax, {load + g.PML4_OFFSET}
        mov cr3, rax
        mov edi, {g.WALK_START}
        mov ecx, {g.WALK_END}
    1:  mov [rdi], rdi
        add rdi, 4096
        cmp rdi, rcx
        jb 1b
        mov rax, [rdi - 4096]
        mov edx, {g.RESULT_PORT}
        out dx, eax
        shr rax, 32
        add edx, 4
        out dx, eax
        mov al, 0x2a
        out 0xf4, al
    """
    assert assemble(source, tmp_path) == g.walk_code()
    assert assemble("mov al, 0x55\nout 0xf4, al\nhlt", tmp_path) == g.WALK_HANDLER


def test_walk_image_tables() -> None:
    g = container_guests
    image = g.walk_image()
    assert len(image) == g.WALK_IMAGE_SIZE
    limit, base = (
        int.from_bytes(image[g.GDTR_OFFSET : g.GDTR_OFFSET + 2], "little"),
        int.from_bytes(image[g.GDTR_OFFSET + 2 : g.GDTR_OFFSET + 10], "little"),
    )
    assert (limit, base) == (23, g.LOAD_GPA + g.GDT_OFFSET)
    gate = image[g.IDT_OFFSET : g.IDT_OFFSET + 16]
    handler = g.LOAD_GPA + g.HANDLER_OFFSET
    assert gate[0:2] == (handler & 0xFFFF).to_bytes(2, "little")
    assert gate[2:4] == b"\x08\x00" and gate[5] == 0x8E
    pd = image[g.PD_OFFSET : g.PD_OFFSET + 16]
    assert pd == (0x83).to_bytes(8, "little") + (0x200083).to_bytes(8, "little")
    # The walk ends past RAM, inside what the guest's page tables map (1 GiB).
    assert g.WALK_RAM_SIZE < g.WALK_END <= 1 << 30
    with pytest.raises(ValueError):
        g.exit_loop_image(0)


def test_thread_names_and_rss_of_this_process() -> None:
    names = container_guests.thread_names()
    assert len(names) >= 1 and all(names)
    rss = container_guests.vm_rss()
    assert rss is not None and rss > 0
