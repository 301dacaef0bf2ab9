"""Watch a booting kernel's console: time each milestone, type at the shell, end the VM.

Used by the stock kernel's test (tests/integration/test_linux_shell.py) and
the linux benchmark suite (benchmarks/suite_linux.py), for pyvmm and QEMU
alike: whatever prints the guest's COM1 on its stdout and feeds its stdin to it.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

SHELL_COMMAND = b"echo shell-$((6*7))\n"  # typed at the prompt; the shell computes it
SHELL_ANSWER = "shell-42"


class BootFailed(Exception):
    """A boot did not reach a milestone in time; the message says which."""


@dataclass
class Boot:
    """One boot: seconds from spawn to each milestone, and the console and stderr."""

    milestones: dict[str, float] = field(default_factory=dict)
    output: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class Milestone:
    name: str
    pattern: re.Pattern[bytes]
    then_type: bytes = b""  # typed on the console once it is seen


def watch(command: Sequence[str], milestones: Sequence[Milestone], limit: float, what: str) -> Boot:
    """Run `command`, timing each milestone on its stdout in order; end it after the last.

    The process is killed at `limit` seconds or when its output stops matching
    (it ended first): BootFailed names the milestone it did not reach.
    """
    boot = Boot()
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None and process.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    timer = threading.Timer(limit, process.kill)
    timer.start()
    seen = bytearray()
    pending = list(milestones)
    position = 0  # a milestone's text must come after the one before's
    try:
        while pending:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk.replace(b"\r", b"")
            while pending and (found := pending[0].pattern.search(seen, position)):
                step = pending.pop(0)
                boot.milestones[step.name] = time.monotonic() - started
                position = found.end()
                if step.then_type:
                    process.stdin.write(step.then_type)
                    process.stdin.flush()
        if not pending:
            # What is left (a command, the power-off) is not timed: give it a while.
            try:
                process.wait(timeout=min(120.0, limit))
            except subprocess.TimeoutExpired:
                process.kill()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
        seen += process.stdout.read().replace(b"\r", b"")
        process.wait()
        reader.join(10)
    boot.output = bytes(seen).decode(errors="replace")
    boot.stderr = b"".join(errors).decode(errors="replace")
    if pending:
        tail = "\n".join(boot.output.splitlines()[-5:])
        raise BootFailed(
            f"{what}: no {pending[0].name!r} within {limit:.0f} s (status "
            f"{process.returncode}); last lines:\n{tail}\n{boot.stderr[-800:]}"
        )
    return boot


def milestones(shell: bool) -> list[Milestone]:
    from tests.linux.initramfs import SHELL_LINE, UP_LINE

    steps = [
        Milestone("banner", re.compile(rb"Linux version ")),
        Milestone("Run /init", re.compile(rb"Run /init as init process")),
        Milestone("marker", re.compile(re.escape(UP_LINE.encode()))),
    ]
    if shell:
        steps += [
            Milestone("shell prompt", re.compile(re.escape(SHELL_LINE.encode()) + rb"\n.*?[/~] # ",
                                                 re.S), SHELL_COMMAND),
            Milestone("command output", re.compile(SHELL_ANSWER.encode() + rb"\n"),
                      b"poweroff -f\n"),
        ]  # fmt: skip
    return steps
