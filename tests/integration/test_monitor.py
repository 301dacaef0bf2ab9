"""The monitor moves the balloon while the guest runs: `pyvmm boot --monitor unix:PATH`.

guests/virtio/virtio.elf with `touch=64 follow` writes 64 MiB, then keeps its
balloon at the host's target. Through the monitor's socket the test asks
for 64 MiB back (`balloon 64` on a 128 MiB guest), waits until `info balloon`
shows it, checks that pyvmm's resident memory fell by most of it (the
balloon's pages are released with madvise(MADV_DONTNEED)), gives the memory
back (`balloon 128`), sees the guest deflate, and ends the run with `quit`.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.integration.helpers import REPO, guest, run_pyvmm

MIB = 1 << 20
PROMPT = b"(pyvmm) "
DEADLINE = 30.0  # seconds for any one step; each takes well under one here


def resident(pid: int) -> int:
    """The process's resident memory in bytes (/proc/PID/smaps_rollup)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no Rss for {pid}")


class Session:
    """A monitor client: one command, its answer."""

    def __init__(self, path: Path) -> None:
        deadline = time.monotonic() + DEADLINE
        while not path.exists():  # pyvmm binds it before the guest starts
            assert time.monotonic() < deadline, "the monitor's socket never appeared"
            time.sleep(0.02)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(str(path))
        self.pending = b""
        self.banner = self.until_prompt()

    def until_prompt(self) -> str:
        while PROMPT not in self.pending:
            chunk = self.sock.recv(4096)
            assert chunk, f"the monitor closed the connection after {self.pending!r}"
            self.pending += chunk
        said, _, self.pending = self.pending.partition(PROMPT)
        return said.decode()

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.until_prompt()

    def wait_for(self, line: str, answer: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while (said := self.ask(line)) != answer:
            assert time.monotonic() < deadline, f"{line!r} still says {said!r}"
            time.sleep(0.05)


def read_lines(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))


def wait_for_line(lines: queue.Queue[str], wanted: str, seen: list[str]) -> None:
    deadline = time.monotonic() + DEADLINE
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"the guest never printed {wanted!r}: {seen}"
        try:
            seen.append(lines.get(timeout=left))
        except queue.Empty:
            continue


def test_the_monitor_moves_the_balloon_while_the_guest_runs(tmp_path: Path) -> None:
    path = tmp_path / "mon.sock"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pyvmm", "boot", "--balloon", "-m", "128M",
            "-monitor", f"unix:{path},server,nowait",  # QEMU's spelling
            "--timeout", "120", "--append", "touch=64 follow", guest("virtio/virtio.elf"),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        session = Session(path)
        assert session.banner == "pyvmm monitor - type 'help' for more information\n"
        wait_for_line(lines, "touch: wrote 64 MiB from 16 MiB", seen)
        assert session.ask("info balloon") == "balloon: actual=128\n"
        before = resident(process.pid)

        assert session.ask("balloon 64") == ""  # the guest keeps 64 MiB, gives 64 back
        session.wait_for("info balloon", "balloon: actual=64\n")
        after = resident(process.pid)
        assert before - after >= 0.8 * 64 * MIB, (before, after)
        wait_for_line(lines, "balloon: inflated to 16384 pages (64 MiB)", seen)

        assert session.ask("balloon 129") == (
            "Error: balloon 129: more than the guest's 128 MiB of RAM\n"
        )
        assert session.ask("balloon 128") == ""  # all of it back
        session.wait_for("info balloon", "balloon: actual=128\n")
        wait_for_line(lines, "balloon: deflated to 0 pages (0 MiB)", seen)

        session.sock.sendall(b"quit\n")
        assert session.sock.recv(100) == b""  # the run ends; QEMU says nothing either
        status = process.wait(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    assert status == 0, stderr
    assert stderr == "pyvmm: the monitor's quit ended the run (status 0, as QEMU exits on quit)\n"
    assert not path.exists()  # the socket file goes with the run


def test_a_monitor_path_that_is_taken_stops_pyvmm_before_the_guest(tmp_path: Path) -> None:
    taken = tmp_path / "taken.sock"
    taken.write_text("")
    result = run_pyvmm("boot", "--monitor", f"unix:{taken}", guest("hello.bin"))
    assert (result.returncode, result.stdout) == (2, "")  # hello.bin never ran
    assert result.stderr == (
        f"pyvmm boot: --monitor unix:{taken}: {taken} exists: remove it (a socket left by "
        "another run?) or give another path\n"
    )


def test_a_guest_that_ends_by_itself_takes_the_socket_with_it(tmp_path: Path) -> None:
    path = tmp_path / "mon.sock"
    result = run_pyvmm("boot", "--monitor", f"unix:{path}", guest("hello.bin"))
    assert (result.returncode, result.stdout) == (0, "Hello, world!\n"), result.stderr
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def info_pic(tmp_path: Path, *options: str) -> str:
    """`info pic` asked of a guest asleep in `hlt` with every IRQ masked, then `quit`."""
    path = tmp_path / f"pic{len(options)}.sock"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pyvmm", "boot", *options, "--monitor", f"unix:{path}",
            "--timeout", "60", guest("tests/wait_irq.bin"),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "waiting\n"
        session = Session(path)
        text = session.ask("info pic")
        session.sock.sendall(b"quit\n")
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    return text


def test_info_pic_shows_the_same_pics_whoever_runs_them(tmp_path: Path) -> None:
    """pyvmm's own PICs (split, the default) and KVM's (on) read alike; the IOAPIC is shown
    when it is pyvmm's."""
    split = info_pic(tmp_path).splitlines()
    kernel = info_pic(tmp_path, "--kernel-irqchip", "on").splitlines()
    assert (
        split[:2]
        == kernel
        == [
            "pic0: irr=00 imr=fb isr=00 hprio=0 irq_base=08 rr_sel=0 elcr=00 fnm=0",
            "pic1: irr=00 imr=ff isr=00 hprio=0 irq_base=70 rr_sel=0 elcr=00 fnm=0",
        ]
    )
    assert split[2] == "ioapic0: ver=0x11 id=0x00 sel=0x00"
    assert split[3].startswith("  pin 0  0x0000000000010000 dest=0 vec=0   active-hi edge  masked")
    assert split[-2:] == ["  IRR (none)", "  Remote IRR (none)"]
