"""The exit path without a Python object per exit: devices see what they saw before.

`guests/tests/rep_io.bin` reads port 0x2f0 with `rep insb/insw/insl` (string
I/O: decoded in Python) and with single `in` of 1, 2 and 4 bytes (decoded in
C): both reach the device with the same offsets and sizes, and a device
whose answer does not fit the access ends the run with one line.
"""

from __future__ import annotations

import pytest

from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import EXIT_VMM_ERROR, OutcomeKind
from tests.integration.helpers import REPO

REP_IO = REPO / "guests" / "tests" / "rep_io.bin"
PORT = 0x2F0


class Port:
    """Answers all ones (as the floating bus does), or `answer` from read number `bad_from` on."""

    def __init__(self, answer: int = 0, bad_from: int | None = None) -> None:
        self.answer = answer
        self.bad_from = bad_from
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        if self.bad_from is not None and len(self.reads) > self.bad_from:
            return self.answer
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        raise AssertionError("rep_io never writes port 0x2f0")


def run_rep_io(device: Port) -> tuple[OutcomeKind, int, str, bytes]:
    console: list[bytes] = []
    machine = build_machine(
        MachineConfig(image=REP_IO.read_bytes(), ram_size=16 << 20, console=console.append)
    )
    with machine:
        machine.pio_bus.insert(device, PORT, 1, "test port")
        outcome = machine.run(timeout=30)
    return outcome.kind, outcome.exit_status, outcome.message, b"".join(console)


def test_string_and_single_reads_reach_the_device_alike() -> None:
    device = Port()
    kind, status, _, output = run_rep_io(device)
    assert (kind, status) == (OutcomeKind.HALTED, 0)
    assert output == b"outsb\noutsw\noutsd\nins ok\n"
    rep = [(0, 1)] * 4 + [(0, 2)] * 4 + [(0, 4)] * 4
    assert device.reads == [*rep, (0, 1), (0, 2), (0, 4)]


STRING_READS = 12  # rep insb, insw, insl of 4 units each, before the single reads


@pytest.mark.parametrize(
    ("answer", "bad_from"),
    [(0x1FF, 0), (0x1FF, STRING_READS), (-1, 0), (-1, STRING_READS)],
    ids=["too-wide-string", "too-wide-single", "negative-string", "negative-single"],
)
def test_an_answer_that_does_not_fit_ends_the_run_with_one_line(answer: int, bad_from: int) -> None:
    kind, status, message, _ = run_rep_io(Port(answer, bad_from))
    assert (kind, status) == (OutcomeKind.VMM_ERROR, EXIT_VMM_ERROR)
    assert message == (
        f"port I/O bus: test port answered {hex(answer)} to a 1-byte read at 0x2f0: "
        "more than 8 bits"
    )
