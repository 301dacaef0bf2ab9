"""The library API (`import pyvmm`) on real machines, in this process.

The examples (test_examples.py) show the main path; these check the edges a
script meets: console input and text consoles, devices that cannot go where
asked, a device that raises, the timeout, vCPUs other than 0.
"""

from __future__ import annotations

import io

import pytest

import pyvmm

# The guests (`as --64`, Intel syntax), as bytes and as the assembly they encode.
# fmt: off
# Long mode, CPL0: echo COM1's input until none is left, then hlt.
ECHO = bytes.fromhex(
    "ba fd 03 00 00"  # 1:  mov  edx, 0x3fd  ; LSR
    "ec"              #     in   al, dx
    "a8 01"           #     test al, 1       ; LSR.DR: a byte is waiting
    "74 09"           #     jz   2f
    "ba f8 03 00 00"  #     mov  edx, 0x3f8  ; RBR/THR
    "ec"              #     in   al, dx
    "ee"              #     out  dx, al
    "eb ed"           #     jmp  1b
    "f4"              # 2:  hlt
)
# User mode (CPL3, runs natively): write 7 to port 0x700, then spin forever.
SPIN = bytes.fromhex(
    "ba 00 07 00 00"  #     mov  edx, 0x700
    "b8 07 00 00 00"  #     mov  eax, 7
    "ef"              #     out  dx, eax
    "eb fe"           # 1:  jmp  1b
)
# fmt: on


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_console_input_reaches_the_guest_and_a_text_console_gets_its_output() -> None:
    console = io.StringIO()
    text = "héllo, guest\n"
    with pyvmm.create_machine(
        ECHO, ram_size="8M", mode="long", console=console, console_input=text.encode()
    ) as machine:
        outcome = machine.run(timeout=30)
    assert outcome.kind is pyvmm.OutcomeKind.HALTED, outcome.message
    assert console.getvalue() == text


def test_the_image_is_readable_at_its_entry_point_before_the_run() -> None:
    with pyvmm.create_machine(ECHO, ram_size="8M", mode="long") as machine:
        entry = machine.entry.entry
        assert machine.read_virtual(entry, len(ECHO)) == ECHO
        assert machine.read_physical(entry, len(ECHO)) == ECHO
        assert machine.registers().rip == entry


def test_devices_where_the_guest_cannot_reach_them_are_refused() -> None:
    with pyvmm.create_machine(ECHO, ram_size="8M", mode="long") as machine:
        with pytest.raises(pyvmm.BusOverlap, match="COM1"):
            machine.attach_pio_device(Recorder(), 0x3F8, 1)
        with pytest.raises(pyvmm.BusError, match="overlaps guest RAM"):
            machine.attach_mmio_device(Recorder(), 0x10_0000, 0x1000)
        with pytest.raises(pyvmm.BusError, match="I/O address space"):
            machine.attach_pio_device(Recorder(), 0x1_0000, 1)


def test_a_device_that_raises_ends_the_run_as_a_vmm_error() -> None:
    class Broken(Recorder):
        def write(self, offset: int, size: int, value: int) -> None:
            raise RuntimeError("device bug")

    with pyvmm.create_machine(SPIN, ram_size="8M", mode="user") as machine:
        machine.attach_pio_device(Broken(), 0x700, 4, "broken")
        outcome = machine.run(timeout=30)
    assert outcome.kind is pyvmm.OutcomeKind.VMM_ERROR
    assert outcome.exit_status == pyvmm.EXIT_VMM_ERROR
    assert "device bug" in outcome.message


def test_timeout_ends_a_guest_that_never_stops() -> None:
    recorder = Recorder()
    with pyvmm.create_machine(SPIN, ram_size="8M", mode="user") as machine:
        machine.attach_pio_device(recorder, 0x700, 4, "recorder")
        outcome = machine.run(timeout=0.5)
        registers = machine.registers()
    assert outcome.kind is pyvmm.OutcomeKind.TIMEOUT
    assert outcome.exit_status == pyvmm.EXIT_TIMEOUT
    assert recorder.writes == [(0, 4, 7)]
    assert registers.rip == 0x10_0000 + 11  # on the `jmp $`
    assert registers.cs & 3 == 3  # ring 3


def test_registers_of_each_vcpu() -> None:
    with pyvmm.create_machine(ECHO, ram_size="8M", mode="long", cpus=2) as machine:
        assert machine.registers(0).long_mode
        # vCPU 1 waits for INIT/SIPI in the reset state (Intel SDM vol. 3A, 10.1.1).
        waiting = machine.registers(1)
        assert (waiting.cs, waiting.rip) == (0xF000, 0xFFF0)
        assert not waiting.protected_mode
        with pytest.raises(ValueError, match="no vCPU 2"):
            machine.registers(2)
