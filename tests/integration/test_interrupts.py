"""Interrupt lines end to end: COM1's interrupts through the 8259 PIC, host input that
wakes a guest waiting in hlt, the PICs as a BIOS leaves them; compared with QEMU."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from pyvmm._kvm import lib
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from tests.integration.helpers import GUESTS, REPO, guest, run_pyvmm
from tests.integration.qemu import QEMU_BASE, require_qemu

SERIAL_IRQ = GUESTS / "tests" / "serial_irq.elf"
BIOS_PIC = GUESTS / "tests" / "bios_pic.bin"
# One line of host input after each "ready:" line of serial_irq.
LINES = [b"abc\n", b"xy\n"]
# How long the guest gets to fall asleep in `sti; hlt` before its input comes.
SETTLE = 0.3


def converse(command: list[str], timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Run `command`; answer each "ready:" line on its stdout with the next of LINES.

    The input is written only once the guest sleeps in `hlt` waiting for it:
    only an interrupt can then tell it the input is there (and bytes that came
    earlier would meet the guest's FIFO reset, under QEMU as under pyvmm).
    """
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    timer = threading.Timer(timeout, process.kill)  # a guest that never ends fails
    timer.start()
    output = b""
    try:
        lines = list(LINES)
        for line in process.stdout:
            output += line
            if line.startswith(b"ready:") and lines:
                time.sleep(SETTLE)
                process.stdin.write(lines.pop(0))
                process.stdin.flush()
        process.stdin.close()
        process.wait()
        assert process.stderr is not None
        return process.returncode, output, process.stderr.read()
    finally:
        timer.cancel()
        process.kill()
        process.wait()


def pyvmm(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyvmm", "boot", "--timeout", "30", *args]


def expected_serial_irq_output() -> bytes:
    checks = [
        "thre interrupts on enable=1 ok",
        "sent by THRE interrupts",
        f"thre interrupts for the line={len('sent by THRE interrupts') + 2} ok",
        "ready: a line, FIFO trigger level 1",
        "received: abc",
        "any data-available interrupts=1 ok",
        "timeout interrupts=0 ok",
        "ready: a shorter line, FIFO trigger level 14",
        "received: xy",
        "any timeout interrupts=1 ok",
        "data-available interrupts=0 ok",
        "other interrupts=0 ok",
    ]
    return "".join(f"{line}\n" for line in checks).encode()


def test_serial_interrupts_and_host_input_as_under_qemu() -> None:
    # Before: no irqchip with one vCPU, so the guest's first `sti; hlt` ended the
    # run (status 0, no output); with --kernel-irqchip on, input that came while
    # the guest slept in hlt never reached the UART (only a COM1 access fetched
    # it), and the FIFO's trigger level was ignored (no timeout indication).
    status, out, err = converse(pyvmm(guest("tests/serial_irq.elf")))
    assert (status, out) == (1, expected_serial_irq_output()), err
    qemu_status, qemu_out, qemu_err = converse(
        [require_qemu(), *QEMU_BASE, "-m", "128M", "-kernel", str(SERIAL_IRQ)]
    )
    assert (qemu_status, qemu_out) == (status, out), qemu_err
    # Without the irqchip no interrupt reaches the guest: its first hlt ends the run,
    # and one line says why.
    off = converse(pyvmm("--kernel-irqchip", "off", guest("tests/serial_irq.elf")))
    assert off[:2] == (0, b"")
    assert off[2].count(b"\n") == 1 and b"nothing can wake it" in off[2]


def run_boot_sector(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        pyvmm(*args, guest("tests/bios_pic.bin")), cwd=REPO, capture_output=True, timeout=60
    )


def test_a_real_mode_guest_finds_the_pics_as_a_bios_leaves_them() -> None:
    # Before: KVM's reset state, vector base 0 and nothing masked: IRQ 4 came
    # as vector 4 (#OF's), which pyvmm's no-BIOS stub took for an exception.
    result = run_boot_sector()
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 1, result.stderr
    # SeaBIOS's pic_setup masks all but the cascade (src/hw/pic.h, PIC_IRQMASK_DEFAULT).
    assert lines == ["pic masks: master=fb slave=ff", "irq 4 at vector 0c"]
    qemu = subprocess.run(
        [
            require_qemu(),
            *QEMU_BASE,
            "-drive",
            f"file={BIOS_PIC},format=raw,if=floppy",
        ],
        capture_output=True,
        timeout=60,
    )
    qemu_lines = qemu.stdout.decode().splitlines()
    assert qemu.returncode == 1, qemu.stderr
    # SeaBIOS's drivers have unmasked their own IRQs by then: only the vector is compared.
    assert qemu_lines[0].startswith("pic masks: ") and qemu_lines[1:] == lines[1:]


def test_the_bios_pic_state_is_read_back_from_kvm() -> None:
    def pics(mode: CpuMode | None, image: bytes) -> list[tuple[int, int, int]]:
        config = MachineConfig(
            image=image, ram_size=16 << 20, console=lambda data: None, mode=mode, irqchip="on"
        )
        with build_machine(config) as machine:
            chips = [
                machine.vm.get_irqchip(chip)  # owns the memory `.chip.pic` points into
                for chip in (lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE)
            ]
            return [(c.chip.pic.irq_base, c.chip.pic.imr, c.chip.pic.init4) for c in chips]

    assert pics(None, b"\xf4") == [(0x08, 0xFB, 1), (0x70, 0xFF, 1)]  # real mode
    # Other entry modes: KVM's reset state, for the operating system to program.
    assert pics(CpuMode.PROTECTED, b"\xf4") == [(0, 0, 0), (0, 0, 0)]


def test_the_split_irqchip_pics_start_as_kvms_do() -> None:
    """The default machine's own PICs (split irqchip) start in the same two states."""

    def pics(mode: CpuMode | None) -> list[tuple[int, int, int]]:
        config = MachineConfig(
            image=b"\xf4", ram_size=16 << 20, console=lambda data: None, mode=mode
        )
        with build_machine(config) as machine:
            assert machine.split_irqchip is not None
            state = machine.split_irqchip.state()["pic"]
            return [
                (state[c]["irq_base"], state[c]["imr"], state[c]["init4"])
                for c in ("master", "slave")
            ]

    assert pics(None) == [(0x08, 0xFB, 1), (0x70, 0xFF, 1)]
    assert pics(CpuMode.PROTECTED) == [(0, 0, 0), (0, 0, 0)]


def test_hlt_with_interrupts_enabled_and_no_irqchip_says_nothing_can_wake_it() -> None:
    """--kernel-irqchip off: a guest that enabled interrupts and halts waits in vain; say so."""
    result = run_pyvmm("boot", "--kernel-irqchip", "off", guest("tests/wait_irq.bin"))
    assert (result.returncode, result.stdout) == (0, "waiting\n")
    assert result.stderr == (
        "pyvmm: guest halted with interrupts enabled (IF=1), waiting for one, but this machine "
        "has no interrupt controllers (--kernel-irqchip off): nothing can wake it\n"
    )


def test_an_ioapic_message_no_lapic_takes_is_counted_by_the_real_kvm() -> None:
    """Lowest priority to a logical broadcast: KVM_SIGNAL_MSI says EPERM (no LAPIC took
    it); pyvmm's IOAPIC counts it as lost, as a real bus loses it, and nothing fails."""
    from pyvmm.devices.ioapic import IOREGSEL, IOWIN

    config = MachineConfig(image=b"\xf4", ram_size=16 << 20, console=lambda data: None)
    with build_machine(config) as machine:
        split = machine.split_irqchip
        assert split is not None
        for register, value in ((0x1A, 0x0000_0931 | 1 << 11), (0x1B, 0xFF00_0000)):
            split.ioapic.write(IOREGSEL, 4, register)
            split.ioapic.write(IOWIN, 4, value)
        split.set_level(5, True)
        assert (split.msis, split.undelivered) == (0, 1)
        split.set_level(5, False)
        split.ioapic.write(IOREGSEL, 4, 0x1A)
        split.ioapic.write(IOWIN, 4, 0x0000_0031)  # fixed, physical, to APIC 0
        split.ioapic.write(IOREGSEL, 4, 0x1B)
        split.ioapic.write(IOWIN, 4, 0)
        split.set_level(5, True)
        assert (split.msis, split.undelivered) == (1, 1)  # vCPU 0's LAPIC took this one


def test_every_vcpu_serves_the_split_irqchip_s_exits() -> None:
    """A level-triggered IOAPIC vector may be ended by any vCPU's LAPIC: each loop
    serves KVM_EXIT_IOAPIC_EOI, not only the boot CPU's."""
    from pyvmm.kvm.exits import IoapicEoi
    from pyvmm.machine.exit_dispatch import dispatch

    config = MachineConfig(image=b"\xf4", ram_size=16 << 20, console=lambda data: None, cpus=2)
    with build_machine(config) as machine:
        assert machine.split_irqchip is not None
        assert all(loop.split_irqchip is machine.split_irqchip for loop in machine.group.loops)
        assert dispatch(machine.group.loops[1], IoapicEoi(0x41)) is None  # served, run goes on
