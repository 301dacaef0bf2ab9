"""The exit loop against a scripted vCPU: dispatch and outcomes, without KVM."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from pyvmm._kvm import ffi, lib
from pyvmm.devices.bus import Bus
from pyvmm.devices.debug_exit import DebugExit
from pyvmm.errors import KvmError
from pyvmm.machine.outcome import EXIT_TRIPLE_FAULT, OutcomeKind, RunOutcome
from pyvmm.machine.vcpu_loop import VcpuLoop

Step = Callable[[Any], bool]  # fills kvm_run; returns False to simulate EINTR


class ScriptedVcpu:
    """Plays a list of exits, like KVM_RUN would report them."""

    def __init__(self, steps: list[Step]) -> None:
        self._storage = ffi.new("char[]", 4096)
        self.run_struct: Any = ffi.cast("struct kvm_run *", self._storage)
        self._steps = list(steps)
        self.entries = 0

    def run(self) -> bool:
        self.entries += 1
        if self.run_struct.immediate_exit:
            return False
        return self._steps.pop(0)(self.run_struct)

    def fast_run_call(self) -> tuple[Callable[..., int], int, Any]:
        """KVM_RUN as `lib.pyvmm_run_fast` does it, around the script: pyvmm's own C
        completes the previous read and decodes the exit."""

        def run_fast(fd: int, run: Any, complete: int, value: int, out: Any) -> int:
            if complete and lib.pyvmm_complete_read(run, value) < 0:
                return int(lib.PYVMM_FAST_BAD_VALUE)
            if not self.run():
                return -errno.EINTR
            return int(lib.pyvmm_decode_fast(run, out))

        return run_fast, -1, self.run_struct

    def get_regs(self) -> Any:
        regs = ffi.new("struct kvm_regs *")
        regs.rip = 0x7C05
        return regs

    def get_sregs(self) -> Any:
        return ffi.new("struct kvm_sregs *")


def io_out(port: int, data: bytes, size: int = 1) -> Step:
    def fill(run: Any) -> bool:
        run.exit_reason = lib.KVM_EXIT_IO
        run.io.direction = lib.KVM_EXIT_IO_OUT
        run.io.port, run.io.size, run.io.count = port, size, len(data) // size
        run.io.data_offset = 1024
        ffi.memmove(ffi.cast("char *", run) + 1024, data, len(data))
        return True

    return fill


def mmio_read(gpa: int, size: int) -> Step:
    def fill(run: Any) -> bool:
        run.exit_reason = lib.KVM_EXIT_MMIO
        run.mmio.phys_addr, run.mmio.len, run.mmio.is_write = gpa, size, 0
        return True

    return fill


def reason(value: int) -> Step:
    def fill(run: Any) -> bool:
        run.exit_reason = value
        return True

    return fill


def interrupted(run: Any) -> bool:
    return False


def make_loop(steps: list[Step]) -> tuple[VcpuLoop, list[int], ScriptedVcpu]:
    written: list[int] = []

    class Port:
        def read(self, offset: int, size: int) -> int:
            return 0x12345678 & ((1 << 8 * size) - 1)

        def write(self, offset: int, size: int, value: int) -> None:
            written.append(value)

    pio, mmio = Bus("pio"), Bus("mmio")
    pio.insert(Port(), 0x3F8, 8)
    mmio.insert(Port(), 0xD0000000, 0x1000)
    vcpu = ScriptedVcpu(steps)
    return VcpuLoop(vcpu, pio, mmio), written, vcpu  # type: ignore[arg-type]


def test_io_then_halt() -> None:
    loop, written, _ = make_loop([io_out(0x3F8, b"hi"), interrupted, reason(lib.KVM_EXIT_HLT)])
    outcome = loop.run()
    assert outcome.kind is OutcomeKind.HALTED and outcome.exit_status == 0
    assert written == [ord("h"), ord("i")]
    assert loop.exit_count == 2  # the EINTR is not an exit


def test_mmio_read_is_answered_in_the_run_struct() -> None:
    loop, _, vcpu = make_loop([mmio_read(0xD0000004, 2), reason(lib.KVM_EXIT_HLT)])
    loop.run()
    assert bytes(vcpu.run_struct.mmio.data[0:2]) == b"\x78\x56"


def test_triple_fault_comes_with_registers() -> None:
    loop, _, _ = make_loop([reason(lib.KVM_EXIT_SHUTDOWN)])
    outcome = loop.run()
    assert outcome.kind is OutcomeKind.TRIPLE_FAULT and outcome.exit_status == EXIT_TRIPLE_FAULT
    assert outcome.registers is not None and "RIP=0000000000007c05" in outcome.registers


@pytest.mark.parametrize(
    ("exit_reason", "kind"),
    [
        (lib.KVM_EXIT_FAIL_ENTRY, OutcomeKind.FAIL_ENTRY),
        (lib.KVM_EXIT_INTERNAL_ERROR, OutcomeKind.INTERNAL_ERROR),
        (lib.KVM_EXIT_SYSTEM_EVENT, OutcomeKind.SYSTEM_EVENT),
    ],
)
def test_guest_ending_exits(exit_reason: int, kind: OutcomeKind) -> None:
    loop, _, _ = make_loop([reason(exit_reason)])
    assert loop.run().kind is kind


def test_unknown_exit_ends_the_run_as_a_vmm_error_with_its_name() -> None:
    loop, _, _ = make_loop([reason(lib.KVM_EXIT_HYPERCALL)])
    outcome = loop.run()
    assert outcome.kind is OutcomeKind.VMM_ERROR
    assert outcome.exit_status == 70
    assert "unhandled exit KVM_EXIT_HYPERCALL" in outcome.message
    assert outcome.registers is not None and "RIP=" in outcome.registers


def test_a_device_can_end_the_run() -> None:
    steps = [io_out(0xF4, b"\x2a"), reason(lib.KVM_EXIT_HLT)]
    loop, _, vcpu = make_loop(steps)
    loop.pio_bus.insert(
        DebugExit(lambda value: loop.request_stop(RunOutcome(OutcomeKind.DEBUG_EXIT, value, ""))),
        0xF4,
        4,
    )
    outcome = loop.run()
    assert (outcome.kind, outcome.exit_status) == (OutcomeKind.DEBUG_EXIT, 0x2A)
    # The HLT was never reached: the next KVM_RUN found immediate_exit set and
    # returned at once, without entering the guest (the fast loop looks at the
    # stop only then, not after every exit).
    assert len(vcpu._steps) == 1 and vcpu.run_struct.immediate_exit == 0


def test_stop_requested_between_exits_prevents_the_next_entry() -> None:
    loop, _, vcpu = make_loop([reason(lib.KVM_EXIT_HLT)])
    loop.request_stop(RunOutcome(OutcomeKind.TIMEOUT, 1, "late"))
    assert loop.run().kind is OutcomeKind.TIMEOUT
    assert vcpu.entries == 0


def test_kvm_error_names_ioctl_and_errno() -> None:
    error = KvmError("KVM_CREATE_VM", errno.EACCES)
    assert str(error) == "KVM_CREATE_VM failed: EACCES (Permission denied)"
    assert isinstance(error, OSError) and error.errno == errno.EACCES
    assert error.ioctl == "KVM_CREATE_VM"


# --- pyvmm_decode_fast, the C decoder of the common exits -------------------------------


def decode_fast(step: Step) -> tuple[int, int]:
    storage = ffi.new("char[]", 4096)
    run = ffi.cast("struct kvm_run *", storage)
    step(run)
    out = ffi.new("uint64_t[1]")
    return int(lib.pyvmm_decode_fast(run, out)), int(out[0])


def mmio_write(gpa: int, data: bytes) -> Step:
    def fill(run: Any) -> bool:
        run.exit_reason = lib.KVM_EXIT_MMIO
        run.mmio.phys_addr, run.mmio.len, run.mmio.is_write = gpa, len(data), 1
        ffi.memmove(run.mmio.data, data, len(data))
        return True

    return fill


def test_decode_fast_packs_a_port_write() -> None:
    answer, _ = decode_fast(io_out(0x3F8, bytes.fromhex("efbeadde"), size=4))
    assert answer & 7 == lib.PYVMM_FAST_IO_OUT
    assert ((answer >> 3) & 15, (answer >> 8) & 0xFFFF, answer >> 24) == (4, 0x3F8, 0xDEADBEEF)


def test_decode_fast_packs_an_mmio_access_of_eight_bytes() -> None:
    answer, written = decode_fast(mmio_write(0xFED0_0008, bytes(range(1, 9))))
    assert answer & 7 == lib.PYVMM_FAST_MMIO_WRITE
    assert ((answer >> 3) & 15, answer >> 8, written) == (8, 0xFED0_0008, 0x0807060504030201)
    answer, _ = decode_fast(mmio_read(0xFF00_0000, 2))
    assert (answer & 7, (answer >> 3) & 15, answer >> 8) == (
        lib.PYVMM_FAST_MMIO_READ,
        2,
        0xFF00_0000,
    )


def test_decode_fast_leaves_the_rest_to_python() -> None:
    assert decode_fast(io_out(0x3F8, b"ab"))[0] == lib.PYVMM_FAST_OTHER  # rep outsb
    assert decode_fast(mmio_read(1 << 55, 4))[0] == lib.PYVMM_FAST_OTHER  # beyond the packing
    assert decode_fast(reason(lib.KVM_EXIT_HLT))[0] == lib.PYVMM_FAST_OTHER


def test_complete_read_refuses_an_answer_wider_than_the_access() -> None:
    storage = ffi.new("char[]", 4096)
    run = ffi.cast("struct kvm_run *", storage)
    mmio_read(0xD000_0000, 2)(run)
    assert lib.pyvmm_complete_read(run, 0x1_0000) < 0
    assert lib.pyvmm_complete_read(run, 0xBEEF) == 0
    assert bytes(ffi.buffer(run.mmio.data, 2)) == b"\xef\xbe"
