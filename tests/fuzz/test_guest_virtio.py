"""The virtio kind of the guest fuzzer (guest_virtio.py): its cases, its code, its oracles,
and the bugs it found, kept as tests: one balloon kick with megabytes of page numbers, one
console kick of megabytes to a slow terminal.

The CI campaign of the kind is in test_guest_fuzz.py.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from pyvmm.arch.x86_64 import layout
from pyvmm.devices.virtio.device import DRIVER_OK, VIRTIO_F_VERSION_1
from pyvmm.devices.virtio.mmio import VIRTIO_MMIO_QUEUE_NOTIFY
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.machine.outcome import OutcomeKind
from tests.fuzz.guest_cases import GuestCase, generate_case
from tests.fuzz.guest_run import Limits, run_case
from tests.fuzz.guest_virtio import (
    LOAD_GPA,
    PRIVATE_END,
    Mmio,
    Planner,
    Store,
    VirtioSetup,
    compile_script,
)
from tests.fuzz.guest_virtio_watch import DeviceWatch, WatchedMemory, disk_problems, ram_ranges


def test_virtio_cases_depend_on_seed_and_index_alone() -> None:
    first = [generate_case(7, index, (), "virtio") for index in range(12)]
    again = [generate_case(7, index, (CpuMode.REAL,), "virtio") for index in reversed(range(12))]
    assert first == list(reversed(again))
    assert len({case.image for case in first}) == 12
    assert all(case.mode is CpuMode.USER and case.virtio is not None for case in first)


def test_a_script_compiles_to_one_instruction_sequence_per_step() -> None:
    import capstone

    script = (
        Mmio(0xFEB00070, 4, 1),
        Mmio(0xFEB00100, 1),
        Mmio(0xFEB001FC, 8, 0x1_2345_6789),
        Mmio(0xFEB00102, 2, 0xBEEF),
        Store(PRIVATE_END, b"\x01\x02\x03"),
        Store(PRIVATE_END + 0x1000, bytes(64)),
    )
    image = compile_script(script, 0x2A)
    disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    code = list(disassembler.disasm(image, LOAD_GPA))
    expected = [
        *("mov", "mov", "mov"),  # write4: mov eax, gpa; mov ecx, value; mov [rax], ecx
        *("mov", "mov"),  # read1
        *("mov", "movabs", "mov"),  # write8
        *("mov", "mov", "mov"),  # write2
        *("mov", "mov", "mov", "rep movsb"),  # a store: esi, edi, ecx
        *("xor", "mov", "mov", "rep stosb"),  # a store of zeros
        *("mov", "out", "jmp"),  # debug-exit, then wait
    ]
    assert [insn.mnemonic for insn in code[: len(expected)]] == expected
    assert code[4].op_str == "cl, byte ptr [rax]" and code[7].op_str == "qword ptr [rax], rcx"
    source = code[11].op_str  # mov esi, <where the store's bytes are in the image>
    data_gpa = LOAD_GPA + image.index(bytes([1, 2, 3]))
    assert source == f"esi, {hex(data_gpa)}"


def test_disk_oracle_sees_changes_no_write_explains(tmp_path: pytest.TempPathFactory) -> None:
    before = bytes(range(256)) * 8  # 2048 bytes: 4 sectors
    path = str(tmp_path / "disk.img")  # type: ignore[operator]

    def after(data: bytes) -> str:
        with open(path, "wb") as file:
            file.write(data)
        return path

    changed = bytearray(before)
    changed[600] ^= 1
    assert disk_problems(before, after(before), False, []) == []
    assert disk_problems(before, after(bytes(changed)), False, [(512, 512)]) == []
    assert "no write went" in disk_problems(before, after(bytes(changed)), False, [(0, 512)])[0]
    assert "read-only" in disk_problems(before, after(bytes(changed)), True, None)[0]
    assert "past its disk" in disk_problems(before, after(before), False, [(2000, 512)])[0]
    assert "bytes" in disk_problems(before, after(before + b"x"), False, None)[0]


def test_the_watch_computes_guest_ram_as_pyvmm_lays_it_out() -> None:
    for size in (2 << 20, 16 << 20, layout.MMIO_GAP_START, layout.MMIO_GAP_START + (16 << 20)):
        assert ram_ranges(size) == [tuple(piece) for piece in layout.ram_ranges(size)]


def test_ram_oracle_sees_an_access_outside_guest_ram() -> None:
    class Lenient:  # a memory that wrongly serves anything
        def read(self, gpa: int, size: int) -> bytes:
            return bytes(size)

        def write(self, gpa: int, data: bytes) -> None:
            return None

        def contains(self, gpa: int, size: int = 1) -> bool:
            return True

    watch = DeviceWatch([(0, 16 << 20)])
    memory = WatchedMemory(Lenient(), watch)
    memory.read(0x1000, 16)
    memory.write(PRIVATE_END, b"x")
    assert watch.outside == [] and watch.private == 0
    memory.write(0x500, b"x")  # the guest's own memory: allowed, but noted
    assert watch.private == 1
    memory.read(0xFEB00000, 4)
    memory.write((16 << 20) - 1, b"xy")
    assert len(watch.outside) == 2, watch.outside


# --- the bug found ----------------------------------------------------------------

# Bytes of page numbers in the inflate buffer: a quarter of a million per MiB. Each
# costs the balloon a madvise (about 3 us on the host this was found on: 3.4 s in all).
SLOW_INFLATE_BYTES = 4 << 20


def balloon_inflate_case(buffer_bytes: int) -> GuestCase:
    """A guest that brings the balloon up as Linux does, then makes one inflate buffer
    of `buffer_bytes` of page numbers available (RAM the guest never wrote: zeros,
    page 0 each time) and kicks the inflateq once."""
    planner = Planner(random.Random(0), 16 << 20, 4096, False)
    window = planner.window("balloon")
    assert window.driver.probe((1 << 64) - 1 | (1 << VIRTIO_F_VERSION_1))
    ring = window.driver.setup_queue(0)
    window.driver.add_status(DRIVER_OK)
    ring.write_desc(0, PRIVATE_END + (4 << 20), buffer_bytes)  # device-readable, no NEXT
    ring.publish(0)
    planner.script.append(Mmio(window.gpa + VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0))  # no twin
    script = tuple(planner.script)
    setup = VirtioSetup(("balloon",), b"", False, script, 0x21)
    return GuestCase(0, CpuMode.USER, compile_script(script, 0x21), virtio=setup)


@pytest.mark.kvm
def test_one_balloon_kick_does_not_keep_pyvmm_past_its_timeout() -> None:
    # The guest is done in milliseconds, and a whole case (build, run, close) takes
    # some 30 ms; the balloon's work is what the run, or the machine's close when an
    # I/O thread serves the kick, waits for. The run's timeout is 2 s here.
    started = time.perf_counter()
    result = run_case(balloon_inflate_case(SLOW_INFLATE_BYTES), Limits(hang_slack=0.5))
    took = time.perf_counter() - started
    counts: Counter[str] = result.counts
    assert took < 1.0, (
        f"{took:.1f} s for {counts['balloon page numbers']} page numbers: {result.failure}"
    )
    # A million page numbers for a guest of 16 MiB (4,096 pages): the balloon refuses
    # the request and needs a reset, instead of walking it.
    assert result.failure is None
    assert counts["device needs reset"] == 1 and counts["guest reached its end"] == 1


# The console's output, as a terminal takes it: 64 KiB (the device's chunk) per 50 ms.
SLOW_TERMINAL_DELAY = 0.05
CONSOLE_FLOOD_BYTES = 2 << 20  # 32 chunks: 1.6 s at that pace


def console_flood_image(total: int) -> bytes:
    """A guest that brings virtio-console up as Linux does, then makes one chain of
    `total` bytes available on its transmitq (1 MiB descriptors, all over the same RAM)
    and kicks it once."""
    planner = Planner(random.Random(0), 16 << 20, 4096, False)
    window = planner.window("console")
    assert window.driver.probe((1 << 64) - 1 | (1 << VIRTIO_F_VERSION_1))
    window.driver.setup_queue(0)
    ring = window.driver.setup_queue(1)  # port 0's transmitq
    window.driver.add_status(DRIVER_OK)
    pieces = total >> 20
    for index in range(pieces):
        last = index + 1 == pieces
        ring.write_desc(index, PRIVATE_END + (4 << 20), 1 << 20, 0 if last else 1, index + 1)
    ring.publish(0)
    planner.script.append(Mmio(window.gpa + VIRTIO_MMIO_QUEUE_NOTIFY, 4, 1))  # no twin
    return compile_script(tuple(planner.script), 0x21)


@pytest.mark.kvm
@pytest.mark.parametrize("ioeventfd", [True, False])
def test_one_console_kick_does_not_keep_pyvmm_past_its_timeout(ioeventfd: bool) -> None:
    """A transmit chain of 2 MiB to a terminal that takes 64 KiB per 50 ms: the run ends
    at its 0.2 s timeout, and the device stops writing at its next piece (on the plain
    path in the vCPU's exit, with an ioeventfd in the I/O thread the close waits for)."""

    def slow_terminal(data: bytes) -> None:
        time.sleep(SLOW_TERMINAL_DELAY)

    config = MachineConfig(
        image=console_flood_image(CONSOLE_FLOOD_BYTES),
        ram_size=16 << 20,
        console=slow_terminal,
        mode=CpuMode.USER,
        virtio_console=True,
        ioeventfd=ioeventfd,
    )
    started = time.perf_counter()
    with build_machine(config) as machine:
        outcome = machine.run(timeout=0.2)
    took = time.perf_counter() - started
    # The plain path writes inside the guest's exit, so the timeout ends the run; with
    # an ioeventfd the guest goes on to its debug-exit while the I/O thread writes.
    wanted = OutcomeKind.DEBUG_EXIT if ioeventfd else OutcomeKind.TIMEOUT
    assert outcome.kind is wanted, outcome.message
    assert took < 1.0, f"{took:.1f} s with a 0.2 s timeout: {outcome.message}"
