"""exits.decode over hand-filled `struct kvm_run`s (no KVM needed)."""

from __future__ import annotations

from typing import Any

from pyvmm._kvm import ffi, lib
from pyvmm.arch.x86_64.pio import handle_io_in, handle_io_out
from pyvmm.devices.bus import Bus
from pyvmm.kvm import exits

RUN_SIZE = 4096  # like the real mapping: the I/O data lives after the struct


def new_run(reason: int) -> tuple[Any, Any]:
    storage = ffi.new("char[]", RUN_SIZE)
    run = ffi.cast("struct kvm_run *", storage)
    run.exit_reason = reason
    return storage, run


def fill_io(run: Any, direction: int, port: int, size: int, count: int, data: bytes) -> None:
    offset = ffi.sizeof("struct kvm_run")
    run.io.direction = direction
    run.io.port = port
    run.io.size = size
    run.io.count = count
    run.io.data_offset = offset
    ffi.memmove(ffi.cast("char *", run) + offset, data, len(data))


def test_io_out_carries_the_bytes() -> None:
    _storage, run = new_run(lib.KVM_EXIT_IO)
    fill_io(run, lib.KVM_EXIT_IO_OUT, 0x3F8, 1, 1, b"H")
    assert exits.decode(run) == exits.IoOut(port=0x3F8, size=1, count=1, data=b"H")


def test_rep_outsw_is_split_into_units() -> None:
    _storage, run = new_run(lib.KVM_EXIT_IO)
    fill_io(run, lib.KVM_EXIT_IO_OUT, 0x500, 2, 3, b"\x01\x02\x03\x04\x05\x06")
    decoded = exits.decode(run)
    assert isinstance(decoded, exits.IoOut) and decoded.count == 3
    written: list[tuple[int, int, int]] = []

    class Sink:
        def read(self, offset: int, size: int) -> int:
            return 0

        def write(self, offset: int, size: int, value: int) -> None:
            written.append((offset, size, value))

    bus = Bus("pio")
    bus.insert(Sink(), 0x500, 4)
    handle_io_out(decoded, bus)
    assert written == [(0, 2, 0x0201), (0, 2, 0x0403), (0, 2, 0x0605)]


def test_rep_insd_fills_the_run_page() -> None:
    _storage, run = new_run(lib.KVM_EXIT_IO)
    fill_io(run, lib.KVM_EXIT_IO_IN, 0x2F0, 4, 2, b"\0" * 8)
    decoded = exits.decode(run)
    assert isinstance(decoded, exits.IoIn)
    handle_io_in(decoded, Bus("pio"))  # nothing there: all ones
    offset = ffi.sizeof("struct kvm_run")
    assert ffi.unpack(ffi.cast("char *", run) + offset, 8) == b"\xff" * 8


def test_mmio_write_and_read() -> None:
    _storage, run = new_run(lib.KVM_EXIT_MMIO)
    run.mmio.phys_addr = 0xD0000010
    run.mmio.len = 4
    run.mmio.is_write = 1
    run.mmio.data[0:4] = [0x78, 0x56, 0x34, 0x12]
    assert exits.decode(run) == exits.MmioWrite(gpa=0xD0000010, size=4, data=b"\x78\x56\x34\x12")
    run.mmio.is_write = 0
    read = exits.decode(run)
    assert isinstance(read, exits.MmioRead) and (read.gpa, read.size) == (0xD0000010, 4)
    read.buffer[0:4] = b"\xaa\xbb\xcc\xdd"
    assert bytes(run.mmio.data[0:4]) == b"\xaa\xbb\xcc\xdd"


def test_simple_exits() -> None:
    for reason, expected in [
        (lib.KVM_EXIT_HLT, exits.Hlt()),
        (lib.KVM_EXIT_SHUTDOWN, exits.Shutdown()),
    ]:
        _storage, run = new_run(reason)
        assert exits.decode(run) == expected


def test_fail_entry() -> None:
    _storage, run = new_run(lib.KVM_EXIT_FAIL_ENTRY)
    run.fail_entry.hardware_entry_failure_reason = 0x80000021
    run.fail_entry.cpu = 3
    assert exits.decode(run) == exits.FailEntry(0x80000021, 3)


def test_emulation_failure_keeps_the_instruction_bytes() -> None:
    _storage, run = new_run(lib.KVM_EXIT_INTERNAL_ERROR)
    failure = run.emulation_failure
    failure.suberror = lib.KVM_INTERNAL_ERROR_EMULATION
    failure.ndata = 3
    failure.flags = lib.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
    failure.insn_size = 2
    failure.insn_bytes[0:2] = [0x0F, 0x0B]
    decoded = exits.decode(run)
    assert isinstance(decoded, exits.InternalError)
    assert decoded.is_emulation_failure and decoded.insn_bytes == b"\x0f\x0b"
    assert len(decoded.data) == 3


def test_other_internal_error_without_bytes() -> None:
    _storage, run = new_run(lib.KVM_EXIT_INTERNAL_ERROR)
    run.internal.suberror = lib.KVM_INTERNAL_ERROR_DELIVERY_EV
    run.internal.ndata = 1
    run.internal.data[0] = 0x42
    assert exits.decode(run) == exits.InternalError(
        lib.KVM_INTERNAL_ERROR_DELIVERY_EV, (0x42,), b""
    )


def test_system_event() -> None:
    _storage, run = new_run(lib.KVM_EXIT_SYSTEM_EVENT)
    run.system_event.type = lib.KVM_SYSTEM_EVENT_RESET
    decoded = exits.decode(run)
    assert decoded == exits.SystemEvent(lib.KVM_SYSTEM_EVENT_RESET, ())
    assert decoded.name == "reset"


def test_unknown_exit_is_named_from_the_header() -> None:
    _storage, run = new_run(lib.KVM_EXIT_HYPERCALL)
    decoded = exits.decode(run)
    assert decoded == exits.Unknown(lib.KVM_EXIT_HYPERCALL)
    assert decoded.name == "KVM_EXIT_HYPERCALL"
    assert exits.exit_reason_name(9999) == "exit reason 9999"
