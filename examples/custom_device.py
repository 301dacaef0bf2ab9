"""Two devices written in Python, and a guest that talks to them.

A device is any object with `read(offset, size) -> int` and
`write(offset, size, value)`. This script puts an adder on the port I/O bus
(port 0x700) and a mailbox register on the MMIO bus (guest-physical
0xd0000000, in the hole below 4 GiB where there is no RAM), then runs a
32-byte guest that uses both:

- it writes 1, 2, 3, 4, 5 to the adder with `out` and reads the sum back
  with `in`;
- it posts the sum to the mailbox with a `mov` to memory, and reads it back;
- it ends the run by writing what it read to QEMU's debug-exit port 0xf4,
  so the outcome's exit status is (sum << 1) | 1.

The guest runs in pyvmm's user mode: 64-bit code at CPL3, allowed every
port. Run it with the Python pyvmm is installed in, from any directory:

    python examples/custom_device.py
"""

from __future__ import annotations

import sys

import pyvmm

ADDER_PORT = 0x700
MAILBOX_GPA = 0xD000_0000

# The guest, loaded and entered at 1 MiB (`as --64`, Intel syntax), as bytes and as
# the assembly they encode.
# fmt: off
GUEST = bytes.fromhex(
    "ba 00 07 00 00"  #     mov  edx, 0x700
    "b8 01 00 00 00"  #     mov  eax, 1
    "ef"              # 1:  out  dx, eax     ; adder += eax
    "ff c0"           #     inc  eax
    "83 f8 06"        #     cmp  eax, 6
    "75 f8"           #     jne  1b
    "ed"              #     in   eax, dx     ; eax = the adder's total
    "bb 00 00 00 d0"  #     mov  ebx, 0xd0000000
    "89 03"           #     mov  [rbx], eax  ; MMIO write: post it to the mailbox
    "8b 03"           #     mov  eax, [rbx]  ; MMIO read: read it back
    "e7 f4"           #     out  0xf4, eax   ; debug-exit: end the run
    "eb fe"           # 2:  jmp  2b          ; (never reached)
)
# fmt: on


class Adder:
    """A 32-bit port that adds what is written to it and reads as the total."""

    def __init__(self) -> None:
        self.total = 0
        self.log: list[str] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(f"in  {size} bytes at +{offset}: {self.total}")
        return self.total & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.total += value
        self.log.append(f"out {size} bytes at +{offset}: {value}")


class Mailbox:
    """One read/write register, seen by the guest as memory."""

    def __init__(self) -> None:
        self.value = 0
        self.log: list[str] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(f"read  {size} bytes at +{offset}: {self.value}")
        return self.value & ((1 << (8 * size)) - 1)  # a read returns `size` bytes

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value
        self.log.append(f"write {size} bytes at +{offset}: {value}")


def main() -> int:
    adder, mailbox = Adder(), Mailbox()
    with pyvmm.create_machine(GUEST, ram_size="16M", mode="user") as machine:
        machine.attach_pio_device(adder, ADDER_PORT, 4, "adder")
        machine.attach_mmio_device(mailbox, MAILBOX_GPA, 4, "mailbox")
        outcome = machine.run(timeout=30)
        exits = machine.loop.exit_count

    print(f"adder on port 0x{ADDER_PORT:x}:")
    for line in adder.log:
        print(f"  {line}")
    print(f"mailbox at guest-physical 0x{MAILBOX_GPA:x}:")
    for line in mailbox.log:
        print(f"  {line}")
    print(f"outcome: {outcome.kind.value}, exit status {outcome.exit_status}, after {exits} exits")
    expected = pyvmm.debug_exit_status(adder.total)
    if outcome.kind is not pyvmm.OutcomeKind.DEBUG_EXIT or outcome.exit_status != expected:
        print(f"expected debug-exit with status {expected}: {outcome.message}", file=sys.stderr)
        return 1
    value = mailbox.value
    print(f"the guest ended with the mailbox's value {value}: status ({value} << 1) | 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
