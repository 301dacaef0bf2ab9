"""The split irqchip's wiring, without KVM: GSIs to the PIC and IOAPIC, MSIs, ExtINT injection."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest

from pyvmm.arch.x86_64.gsi_routes import ioapic_pin, pic_input
from pyvmm.devices.ioapic import IOREGSEL, IOWIN
from pyvmm.machine.split_irqchip import SplitIrqchip

LEVEL = 1 << 15


class FakeVm:
    def __init__(self) -> None:
        self.msis: list[tuple[int, int]] = []
        self.routings: list[list[tuple[int, int]]] = []

    def signal_msi(self, address: int, data: int) -> None:
        self.msis.append((address, data))

    def set_msi_routing(self, messages: list[tuple[int, int]]) -> None:
        self.routings.append(list(messages))


class FakeVcpu:
    def __init__(self) -> None:
        self.run_struct = SimpleNamespace(
            ready_for_interrupt_injection=0, if_flag=0, request_interrupt_window=0
        )
        self.vectors: list[int] = []

    def interrupt(self, vector: int) -> None:
        self.vectors.append(vector)


def chip() -> tuple[SplitIrqchip, FakeVm, FakeVcpu, list[object]]:
    vm, vcpu, posted = FakeVm(), FakeVcpu(), []
    split = SplitIrqchip(vm)  # type: ignore[arg-type]
    split.connect(SimpleNamespace(vcpu=vcpu), posted.append)  # type: ignore[arg-type]
    return split, vm, vcpu, posted


def program(split: SplitIrqchip, pin: int, low: int, destination: int = 0) -> None:
    for register, value in ((0x10 + 2 * pin, low), (0x11 + 2 * pin, destination << 24)):
        split.ioapic.write(IOREGSEL, 4, register)
        split.ioapic.write(IOWIN, 4, value)


def test_the_pc_wiring_of_gsis() -> None:
    assert [ioapic_pin(gsi) for gsi in (0, 1, 2, 3, 8, 16, 23)] == [2, 1, None, 3, 8, 16, 23]
    assert [pic_input(gsi) for gsi in (0, 1, 2, 3, 8, 15, 16)] == [0, 1, None, 3, 8, 15, None]


def test_the_pit_s_gsi_0_reaches_ioapic_pin_2_as_an_msi() -> None:
    split, vm, _, _ = chip()
    program(split, 2, 0x30, destination=1)
    split.set_level(0, True)
    assert vm.msis == [(0xFEE0_1000, 0x30)]
    assert split.pic.master.irr & 1  # and the PIC's input 0


def test_routes_follow_the_redirection_table_once_per_change() -> None:
    split, vm, _, _ = chip()
    program(split, 9, 0x41 | LEVEL)
    assert len(vm.routings) == 1  # the high dword's write changed nothing more
    routes = vm.routings[0]
    assert len(routes) == 24 and routes[9] == split.ioapic.msi_message(9)
    assert routes[9][1] & LEVEL  # KVM learns the vector is level-triggered
    program(split, 9, 0x41 | LEVEL)  # the same entry again: no new routing
    assert len(vm.routings) == 1


def test_a_level_interrupt_comes_back_after_eoi_while_asserted() -> None:
    split, vm, _, _ = chip()
    program(split, 9, 0x41 | LEVEL)
    split.set_level(9, True)
    split.set_level(9, True)
    assert len(vm.msis) == 1  # remote IRR holds it until the EOI
    split.eoi(0x41)
    assert len(vm.msis) == 2
    split.set_level(9, False)
    split.eoi(0x41)
    assert len(vm.msis) == 2


def test_a_pic_interrupt_is_injected_only_when_the_vcpu_can_take_it() -> None:
    split, _, vcpu, posted = chip()
    split.initialize_pic()  # vector base 0x08, as a BIOS leaves it
    split.pic.master.write(1, 1, 0xFA)  # OCW1: the guest unmasks IRQ 0
    run = vcpu.run_struct
    split.set_level(0, True)
    assert posted == [split.inject]  # the boot CPU is asked, from whatever thread
    assert run.request_interrupt_window == 1
    split.inject()  # interrupts disabled: keep asking for a window
    assert (vcpu.vectors, run.request_interrupt_window) == ([], 1)
    run.ready_for_interrupt_injection = run.if_flag = 1
    split.inject()  # at the window exit
    assert (vcpu.vectors, run.request_interrupt_window) == ([0x08], 0)
    assert split.pic.master.isr & 1 and split.extints == 1


def test_a_masked_pic_input_asks_for_nothing() -> None:
    split, _, vcpu, posted = chip()
    split.initialize_pic()  # the slave's IRQs are masked
    split.set_level(12, True)
    assert (posted, vcpu.run_struct.request_interrupt_window) == ([], 0)


def test_gsi_2_drives_nothing_and_gsi_16_only_the_ioapic() -> None:
    split, vm, _, posted = chip()
    split.initialize_pic()
    program(split, 2, 0x32)
    program(split, 16, 0x50)
    split.set_level(2, True)
    split.set_level(16, True)
    assert vm.msis == [(0xFEE0_0000, 0x50)] and posted == []


def test_a_message_no_lapic_takes_is_lost_not_fatal() -> None:
    """KVM_SIGNAL_MSI answers EPERM when no LAPIC takes the message (lowest priority to
    a logical broadcast): the guest's mistake, counted, and the run goes on."""
    from pyvmm.errors import KvmError

    split, vm, _, _ = chip()

    def refuse(address: int, data: int) -> None:
        raise KvmError("KVM_SIGNAL_MSI", errno.EPERM)

    vm.signal_msi = refuse  # type: ignore[method-assign]
    program(split, 5, 0x0931 | 1 << 11, destination=0xFF)  # lowest priority, logical, all
    split.set_level(5, True)
    assert (split.msis, split.undelivered) == (0, 1)

    def broken(address: int, data: int) -> None:
        raise KvmError("KVM_SIGNAL_MSI", errno.EINVAL)

    vm.signal_msi = broken  # type: ignore[method-assign]
    split.set_level(5, False)
    with pytest.raises(KvmError):  # anything else is pyvmm's fault: it ends the run
        split.set_level(5, True)


def test_whatever_a_guest_writes_the_chips_stay_in_range() -> None:
    """Random accesses of any size to every register, random lines and EOIs: no exception,
    and what reaches KVM is always a vector and an MSI in the LAPICs' window."""
    import random

    split, vm, vcpu, posted = chip()
    run = vcpu.run_struct
    run.ready_for_interrupt_injection = run.if_flag = 1
    devices = [split.pic.master, split.pic.slave, split.pic.elcr, split.ioapic]
    rng = random.Random(7)
    for _ in range(20_000):
        device = rng.choice(devices)
        size = rng.choice((1, 2, 4, 8))
        offset = rng.randrange(2)
        if device is split.ioapic:  # mostly IOREGSEL and IOWIN, sometimes anywhere
            offset = rng.choice((0x00, 0x10, 0x10, rng.randrange(0x100)))
        if rng.random() < 0.5:
            device.write(offset, size, rng.getrandbits(8 * size))
        else:
            assert 0 <= device.read(offset, size) < 1 << (8 * size)
        split.set_level(rng.randrange(24), rng.random() < 0.5)
        if rng.random() < 0.1:
            split.eoi(rng.randrange(256))
        if posted:
            posted.clear()
            run.ready_for_interrupt_injection = 1  # as KVM's next exit would say
            split.inject()
    assert vcpu.vectors and all(0 <= vector < 256 for vector in vcpu.vectors)
    assert vm.msis and all(
        0xFEE0_0000 <= address < 0xFEF0_0000 and data < 1 << 16 for address, data in vm.msis
    )


def test_one_vector_at_a_time_reaches_kvm_between_two_runs() -> None:
    """A higher-priority IRQ that comes before the vCPU ran again waits for the next
    window: KVM holds one PIC vector at a time (a second KVM_INTERRUPT: EEXIST)."""
    split, _, vcpu, posted = chip()
    split.initialize_pic()
    split.pic.master.write(1, 1, 0xEA)  # OCW1: IRQs 0 and 4 unmasked
    run = vcpu.run_struct
    run.ready_for_interrupt_injection = run.if_flag = 1
    split.set_level(4, True)  # COM1
    split.inject()
    assert vcpu.vectors == [0x0C] and run.ready_for_interrupt_injection == 0
    split.set_level(0, True)  # the timer, higher priority, before KVM_RUN
    for work in posted:
        work()
    assert vcpu.vectors == [0x0C]  # not a second KVM_INTERRUPT
    assert run.request_interrupt_window == 1  # KVM says when it can take IRQ 0
    run.ready_for_interrupt_injection = 1  # the window exit
    split.inject()  # at the window exit
    assert vcpu.vectors == [0x0C, 0x08]
