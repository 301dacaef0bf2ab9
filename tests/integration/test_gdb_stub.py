"""A real gdb (batch mode) drives a guest through pyvmm's stub."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyvmm.arch.x86_64.instruction import disassemble_one
from tests.integration.helpers import GUESTS, REPO

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def instruction_addresses(image: bytes, base: int, count: int) -> list[int]:
    addresses, offset = [], 0
    for _ in range(count):
        found = disassemble_one(image[offset : offset + 15], 64, base + offset)
        assert found is not None
        addresses.append(base + offset)
        offset += found.size
    return addresses


def run_with_gdb(pyvmm_args: list[str], gdb_commands: list[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    vmm = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "boot", "--gdb", f"tcp::{port}", *pyvmm_args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert vmm.stderr is not None
    assert "waiting for gdb" in vmm.stderr.readline()
    script = tmp_path / "commands.gdb"
    script.write_text("\n".join(["set confirm off", f"target remote :{port}", *gdb_commands]))
    gdb = subprocess.run(
        ["gdb", "-q", "-batch", "-nx", "-x", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out, err = vmm.communicate(timeout=60)
    return gdb.stdout + gdb.stderr, vmm.returncode, out, err


def test_break_step_registers_memory_watch_and_continue(tmp_path: Path) -> None:
    image = (GUESTS / "vmem64.bin").read_bytes()
    third, fourth = instruction_addresses(image, 0x100000, 4)[2:]
    transcript, status, out, _ = run_with_gdb(
        ["-S", "--mode", "long", "guests/vmem64.bin"],
        [
            "info registers rip",
            f"break *{third:#x}",
            "continue",
            "info registers rip cs cr3",
            "stepi",
            "info registers rip",
            "x/4xb 0x100000",
            "delete",
            "watch *(long *)0x200000",
            "continue",
            "x/gx 0x200000",
            "delete",
            "continue",
        ],
        tmp_path,
    )
    assert "rip            0x100000" in transcript  # -S: stopped before the first instruction
    assert f"Breakpoint 1, {third:#018x}" in transcript
    assert f"rip            {fourth:#x}" in transcript  # one stepi later
    assert "cr3            0x1000" in transcript  # the VMM's tables are still live here
    assert "0x100000:\t" + "\t".join(f"0x{byte:02x}" for byte in image[:4]) in transcript
    assert "Hardware watchpoint 2: *(long *)0x200000" in transcript
    assert "New value = " in transcript  # the guest wrote its PML4
    assert "[Inferior 1 (Remote target) exited normally]" in transcript
    assert status == 0  # the guest's own end: it halted
    assert "vmem64: identity view of 0x300010: ok" in out


def test_gdb_disconnect_lets_the_guest_finish(tmp_path: Path) -> None:
    transcript, status, out, _ = run_with_gdb(
        ["-S", "guests/elf64.elf"], ["info registers rip", "disconnect"], tmp_path
    )
    assert "rip            0x100000" in transcript
    assert status == 85 and out == "ELF64 guest: long mode, EFER.LMA=1\n"


def test_garbage_and_huge_packets_do_not_crash_the_stub() -> None:
    port = free_port()
    vmm = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "boot", "-S", "--gdb", f"tcp::{port}", "guests/hello.bin"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert vmm.stderr is not None and "waiting for gdb" in vmm.stderr.readline()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"\x00\xffgarbage$zz#00" + b"$" + b"A" * 200_000 + b"#00")
    out, _ = vmm.communicate(timeout=60)
    assert (vmm.returncode, out) == (0, "Hello, world!\n")


def test_ctrl_c_interrupts_a_running_guest_and_k_kills_it() -> None:
    port = free_port()
    vmm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyvmm",
            "boot",
            "--gdb",
            f"tcp::{port}",
            "-S",
            "guests/tests/spin.bin",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert vmm.stderr is not None and "waiting for gdb" in vmm.stderr.readline()
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(30)

        def exchange(data: bytes, expect: bytes) -> bytes:
            client.sendall(data)
            received = b""
            while expect not in received:
                chunk = client.recv(4096)
                assert chunk, received
                received += chunk
            return received

        exchange(b"$?#3f", b"#")  # stopped at the start (-S)
        client.sendall(b"+$c#63")  # continue: the guest spins forever
        assert vmm.stdout is not None
        assert vmm.stdout.readline() == "spinning\n"  # it runs
        assert vmm.poll() is None
        assert b"$S02#" in exchange(b"\x03", b"$S02#")  # Ctrl-C: SIGINT stop reply
        client.sendall(b"+$k#6b")
    out, err = vmm.communicate(timeout=30)
    assert out == ""  # nothing more after the line read above
    assert vmm.returncode == -signal.SIGKILL and "killed from gdb" in err, err


def test_without_dash_S_the_guest_runs_at_once_and_gdb_may_never_come() -> None:
    # As QEMU's -s: before, pyvmm waited for gdb even without -S.
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "pyvmm", "boot", "--gdb", f"tcp::{port}", "guests/hello.bin"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "Hello, world!\n"), result.stderr
    assert f"gdb can attach on tcp:127.0.0.1:{port}" in result.stderr


def test_gdb_attaching_to_a_running_guest_stops_it_where_it_is() -> None:
    port = free_port()
    vmm = subprocess.Popen(
        [sys.executable, "-m", "pyvmm", "boot", "--gdb", f"tcp::{port}", "guests/tests/spin.bin"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert vmm.stdout is not None and vmm.stdout.readline() == "spinning\n"  # runs unattached
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(30)
        client.sendall(b"$?#3f")
        received = b""
        while b"#" not in received.lstrip(b"+"):
            chunk = client.recv(4096)
            assert chunk, received
            received += chunk
        assert b"$S02#" in received  # stopped by the attach, as by a Ctrl-C
        client.sendall(b"+$k#6b")
    _, err = vmm.communicate(timeout=30)
    assert vmm.returncode == -signal.SIGKILL and "killed from gdb" in err, err
