"""pyvmm as a library: build a machine, run it with limits, look inside it.

The guest is 30 bytes of 64-bit code built right here, so the script needs
no file and runs from any directory. pyvmm loads it at 1 MiB and enters it
in long mode (ring 0, its own identity-mapping page tables). The guest
prints the NUL-terminated string at guest-physical 0x200000 on COM1,
counts its bytes, stores the count at 0x201000 and halts. The script puts
the string there before the run, then reads the count back, looks at the
registers and follows an address through every translation.

    python examples/library.py
"""

from __future__ import annotations

import io
import sys

import pyvmm

MESSAGE_GPA = 0x20_0000
COUNT_GPA = 0x20_1000
MESSAGE = b"Hello from the host, through guest memory\n"

# The guest (`as --64`, Intel syntax), as bytes and as the assembly they encode.
# fmt: off
GUEST = bytes.fromhex(
    "be 00 00 20 00"        #     mov  esi, 0x200000
    "ba f8 03 00 00"        #     mov  edx, 0x3f8      ; COM1's data register
    "31 c9"                 #     xor  ecx, ecx
    "ac"                    # 1:  lodsb                ; al = byte [rsi], rsi += 1
    "84 c0"                 #     test al, al
    "74 05"                 #     jz   2f
    "ee"                    #     out  dx, al
    "ff c1"                 #     inc  ecx
    "eb f6"                 #     jmp  1b
    "89 0c 25 00 10 20 00"  # 2:  mov  [0x201000], ecx
    "f4"                    #     hlt
)
# fmt: on


def main() -> int:
    console = io.BytesIO()  # or sys.stdout, or any callable taking bytes
    with pyvmm.create_machine(GUEST, ram_size="16M", mode="long", console=console) as machine:
        machine.write_physical(MESSAGE_GPA, MESSAGE + b"\0")
        outcome = machine.run(timeout=30)
        print(
            f"outcome: {outcome.kind.value}, exit status {outcome.exit_status} "
            f"({outcome.message}) after {machine.loop.exit_count} exits"
        )
        print(f"guest console: {console.getvalue().decode()!r}")

        registers = machine.registers()
        print(
            f"registers: RIP=0x{registers.rip:x} RCX={registers.rcx} "
            f"CR0=0x{registers.cr0:x} CR3=0x{registers.cr3:x} CR4=0x{registers.cr4:x} "
            f"EFER=0x{registers.efer:x}"
        )
        print(
            f"  protected mode {registers.protected_mode}, paging {registers.paging}, "
            f"long mode {registers.long_mode}"
        )

        physical = int.from_bytes(machine.read_physical(COUNT_GPA, 4), "little")
        virtual = int.from_bytes(machine.read_virtual(COUNT_GPA, 4), "little")
        print(
            f"count at 0x{COUNT_GPA:x}: {physical} read guest-physically, "
            f"{virtual} through the guest's page tables ({len(MESSAGE)} bytes sent)"
        )

        chain = machine.translate(MESSAGE_GPA + 6)
        print(f"translate(0x{chain.gva:x}): {len(chain.walk.steps)} table entries read")
        for step in chain.walk.steps:
            print(
                f"  {step.level:<5} [{step.index:3}] at GPA 0x{step.entry_gpa:x} "
                f"= 0x{step.entry:016x}"
            )
        assert chain.gpa is not None and chain.hva is not None
        host = f"HPA 0x{chain.hpa:x}" if chain.hpa is not None else f"HPA unknown: {chain.problem}"
        print(
            f"  GVA 0x{chain.gva:x} -> GPA 0x{chain.gpa:x} ({chain.page_size >> 20} MiB page, "
            f"{chain.flags}) -> HVA 0x{chain.hva:x} -> {host}"
        )
        print(
            f"  KVM_TRANSLATE agrees: {chain.agrees_with_kvm}; "
            f"bytes there: {machine.read_virtual(chain.gva, 4)!r}"
        )

        try:
            machine.read_virtual(0x1_0000_0000, 8)  # past the 4 GiB pyvmm's tables map
        except pyvmm.GuestPageFault as error:
            print(f"read_virtual(0x100000000): {type(error).__name__}: {error}")

    # Limits end a run with an outcome of their own, never an exception.
    with pyvmm.create_machine(GUEST, ram_size="16M", mode="long", max_exits=3) as machine:
        machine.write_physical(MESSAGE_GPA, MESSAGE + b"\0")
        limited = machine.run(timeout=30)
    print(f"with max_exits=3: {limited.kind.value}, exit status {limited.exit_status}")

    # Bad input is an exception from the pyvmm.errors tree, with one clear line.
    try:
        pyvmm.create_machine(GUEST, ram_size="1K")
    except pyvmm.PyvmmError as error:
        print(f"ram_size='1K': {type(error).__name__}: {error}")

    ok = (
        outcome.kind is pyvmm.OutcomeKind.HALTED
        and console.getvalue() == MESSAGE
        and physical == virtual == len(MESSAGE)
        and limited.kind is pyvmm.OutcomeKind.EXIT_LIMIT
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
